"""A host dies and its executions go on elsewhere: three roostds and a real etcd on loopback.

Each daemon holds an etcd lease; the owner of an execution keeps its records on a replica
before clients see them (`replication.ack = one`, the default with peers). kill -9 of the
owner's roostd and all its workers leaves the execution running on another member within a
few seconds, and a client that followed it from the start with `roost logs -f` against
another member received every byte exactly once. Output is compared with a plain wasmtime run
(or, for the steps guest, whose values are random, checked step by step)."""
from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.test_records_shipping import check_steps
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, kill_host, wait_until
from tests.framework.native import run_native

TTL = 2


def etcd_cluster(root: Path, etcd, n: int = 3, config_text: str = "") -> list[Roostd]:
    """`n` roostds that find each other on `etcd` (no --peer)."""
    text = f"[cluster]\nlease_seconds = {TTL}\n" + config_text
    daemons = [Roostd(root / f"node{i}" / "data", "--etcd", etcd.url, config_text=text)
               for i in range(n)]
    for d in daemons:
        d.start()
    wait_until(lambda: all(len(members(d)) == n for d in daemons), timeout=30,
               what="every member to see the others")
    return daemons


def members(daemon: Roostd) -> list[str]:
    out = daemon.roost("nodes", "--json")
    if out.returncode != 0:
        return []
    return [m["node_id"] for m in json.loads(out.stdout)]


@pytest.fixture
def three(tmp_path, etcd):
    daemons = etcd_cluster(tmp_path / "c", etcd)
    yield daemons
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


class Follower:
    """`roost logs -f ID` against one daemon, from the start, in the background."""

    def __init__(self, daemon: Roostd, exec_id: str) -> None:
        self.proc = subprocess.Popen([str(BIN / "roost"), "--addr", daemon.addr, "logs", "-f",
                                      exec_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[tuple[bytes, bytes]] = []
        self.thread = threading.Thread(target=lambda: self.out.append(self.proc.communicate()))
        self.thread.start()

    def result(self, timeout: float = 180) -> bytes:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the follower never finished"
        out, err = self.out[0]
        assert self.proc.returncode == 0, f"the follower failed: {err.decode()[-1000:]}"
        return out


def test_a_node_id_held_by_a_live_daemon_is_refused(three, tmp_path, etcd):
    a = three[0]
    proc = subprocess.run([str(BIN / "roostd"), "--data-dir", str(tmp_path / "twin"),
                           "--listen", "127.0.0.1:0", "--node-id", a.node_id, "--etcd", etcd.url,
                           "--metrics-listen", "", "--control-socket", ""],
                          capture_output=True, timeout=60)
    assert proc.returncode == 2             # a configuration mistake (two daemons, one node id)
    assert f"node id {a.node_id!r} is held by a live daemon at {a.addr}" in proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("kill_after", [0.5, 2.5])
def test_the_owner_dies_and_a_replica_finishes_it_exactly_once(three, kill_after):
    a, b, c = three
    wasm = compile_guest("steps")
    exec_id = a.roost("run", "--detach", str(wasm), "--", "300", "20000000",
                      check=True).stdout.decode().strip()
    follower = Follower(b, exec_id)
    time.sleep(kill_after + random.random() * 0.5)
    killed_at = time.monotonic()
    kill_host(a)
    new_owner = wait_until(lambda: _owner(b, exec_id, a.node_id), timeout=TTL + 20,
                           what="another member to take the execution over")
    took = time.monotonic() - killed_at
    assert took < TTL + 8, f"took {took:.1f} s"
    out = follower.result()
    check_steps(out, 300)
    owner = b if new_owner == b.node_id else c
    assert owner.roost("logs", exec_id).stdout == out
    record = inspect(owner, exec_id)
    assert record["state"] == "EXITED" and int(record["epoch"]) > 1


def _owner(daemon: Roostd, exec_id: str, old: str) -> str:
    record = json.loads(daemon.roost("inspect", "--json", exec_id).stdout or b"{}")
    owner = record.get("owner", old)
    return owner if owner != old else ""


def test_a_third_party_like_guest_fails_over_byte_identically(three):
    """The C guest that prints as it computes: killed mid-run, finished elsewhere, with the
    plain run's output exactly."""
    a, b, c = three
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", "40", "2500000"])
    exec_id = a.roost("run", "--detach", str(wasm), "--", "40", "2500000",
                      check=True).stdout.decode().strip()
    follower = Follower(c, exec_id)
    time.sleep(1.0)
    kill_host(a)
    out = follower.result()
    assert out == native.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_soak_fifty_random_host_kills(tmp_path, etcd):
    """The steps guest, its owner's host killed at 50 random moments (one kill per run, each
    on the member that owns it then), every run followed through another member: each
    follower got every step exactly once, and the sum matches."""
    daemons = etcd_cluster(tmp_path / "soak", etcd)
    rng = random.Random(1207)
    wasm = compile_guest("steps")
    try:
        for round_ in range(50):
            owner = daemons[round_ % 3]
            other = daemons[(round_ + 1) % 3]
            exec_id = owner.roost("run", "--detach", str(wasm), "--", "120", "10000000",
                                  check=True).stdout.decode().strip()
            follower = Follower(other, exec_id)
            time.sleep(rng.uniform(0.05, 2.5))
            kill_host(owner)
            check_steps(follower.result(), 120)
            owner.restart()
            wait_until(lambda: all(len(members(d)) == 3 for d in daemons), timeout=30,
                       what="the member back")
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()


def test_a_sleeping_execution_is_taken_over_asleep(three):
    """Its owner dies during a durable sleep: the new owner keeps it SLEEPING (no worker) and
    wakes it at the original deadline, with the plain run's output."""
    a, b, c = three
    wasm = compile_guest("sleeper")
    native = run_native(wasm, ["sleeper", "10"])
    exec_id = a.roost("run", "--detach", str(wasm), "--", "10", check=True).stdout.decode().strip()
    wait_until(lambda: inspect(a, exec_id)["state"] == "SLEEPING", timeout=30, what="its sleep")
    time.sleep(0.5)                       # (its checkpoint reaches the replica)
    kill_host(a)
    new_owner = wait_until(lambda: _owner(b, exec_id, a.node_id), timeout=TTL + 20,
                           what="a member to take the execution over")
    owner = b if new_owner == b.node_id else c
    assert inspect(owner, exec_id)["state"] == "SLEEPING"
    waited = b.roost("wait", exec_id, timeout=60)
    assert waited.returncode == native.exit_code, waited.stderr
    assert owner.roost("logs", exec_id).stdout == native.stdout
