"""The owner cut off the network, and etcd restarted: ownership stays single.

The owner's roostd runs in a network namespace of its own (a veth pair to the host, made by
the test; etcd and the two other roostds listen on the host's end). Cutting the link mid-run:
the owner's guest stops within its lease's TTL (it cannot renew), a replica takes over once
the lease expired, and a client following the execution sees every step exactly once. Healing
the link: the old owner finds that another took over and drops its copy, never running it
again. etcd restarted mid-run: every execution keeps running and keeps its owner."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.test_failover import TTL, Follower, etcd_cluster, members
from tests.cluster.test_records_shipping import check_steps
from tests.framework.etcd import Etcd
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until

HOST_IP, NS_IP = "10.213.7.1", "10.213.7.2"      # the test's own veth pair, nothing else
# Never let the pair's traffic leave the machine: with the link cut, a blackhole route (less
# specific than the pair's own) drops it instead of the default route carrying it away.
FENCE = "10.213.7.0/24"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def namespace():
    """A network namespace joined to the host by a veth pair: (name, the namespace's end of
    the link — cut it with `ip -n NAME link set LINK down`)."""
    ns, host_if, ns_if = f"roost{os.getpid()}", f"rh{os.getpid()}", f"rn{os.getpid()}"
    sh("ip", "route", "add", "blackhole", FENCE)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_IP}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, ns_if
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "route", "del", "blackhole", FENCE], capture_output=True)


def worker_states(daemon: Roostd) -> list[str]:
    """The process states (R, S, T...) of the daemon's workers."""
    assert daemon.proc is not None
    pids = subprocess.run(["pgrep", "-P", str(daemon.proc.pid)], capture_output=True,
                          text=True).stdout.split()
    states = []
    for pid in pids:
        try:
            states.append(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return states


def test_cut_off_owner_stops_its_guest_and_drops_its_copy(tmp_path, namespace):
    ns, link = namespace
    etcd = Etcd(tmp_path / "etcd")
    etcd.host = HOST_IP
    etcd.start()
    try:
        _partition(tmp_path, etcd, ns, link)
    finally:
        etcd.stop()


def _partition(tmp_path: Path, etcd: Etcd, ns: str, link: str) -> None:
    text = f"[cluster]\nlease_seconds = {TTL}\n"
    a = Roostd(tmp_path / "a" / "data", "--etcd", etcd.url, config_text=text)
    a.addr, a.wrap = f"{NS_IP}:{a.port}", ["ip", "netns", "exec", ns]
    others = [Roostd(tmp_path / n / "data", "--etcd", etcd.url, config_text=text) for n in "bc"]
    for d in others:
        d.addr = f"{HOST_IP}:{d.port}"
    daemons = [a, *others]
    try:
        for d in daemons:
            d.start()
        wait_until(lambda: all(len(members(d)) == 3 for d in daemons), timeout=30,
                   what="every member to see the others")
        wasm = compile_guest("steps")
        exec_id = a.roost("run", "--detach", str(wasm), "--", "300", "20000000",
                          check=True).stdout.decode().strip()
        follower = Follower(others[0], exec_id)
        wait_until(lambda: worker_states(a), timeout=30, what="the guest to run")
        time.sleep(1.0)
        sh("ip", "-n", ns, "link", "set", link, "down")
        cut = time.monotonic()
        wait_until(lambda: "T" in worker_states(a), timeout=TTL + 2,
                   what="the cut-off owner to stop its guest")
        stopped = time.monotonic() - cut
        assert stopped < TTL, f"the guest ran {stopped:.2f} s after the cut (TTL {TTL} s)"
        new_owner = wait_until(lambda: _taken(others, exec_id, a.node_id), timeout=TTL + 15,
                               what="a member to take over")
        assert time.monotonic() - cut > stopped
        out = follower.result()
        check_steps(out, 300)
        owner = next(d for d in others if d.node_id == new_owner)
        assert owner.roost("logs", exec_id).stdout == out
        sh("ip", "-n", ns, "link", "set", link, "up")
        wait_until(lambda: "drops its copy" in a.log_path.read_text(), timeout=30,
                   what="the old owner to drop its copy")
        wait_until(lambda: "T" not in worker_states(a), timeout=15, what="its worker to go")
        record = json.loads(a.roost("inspect", "--json", exec_id, check=True).stdout)
        assert record["owner"] == new_owner
        time.sleep(TTL)
        assert exec_id not in a.roost("ps", "-a").stdout.decode(), "the old owner runs it"
        dropped = a.log_path.read_text().split("drops its copy", 1)[1]
        assert exec_id not in dropped.replace(f"execution {exec_id} handed over", ""), dropped
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.kill9()


def _taken(daemons: list[Roostd], exec_id: str, old: str) -> str:
    for d in daemons:
        out = d.roost("inspect", "--json", exec_id)
        if out.returncode == 0:
            owner = json.loads(out.stdout).get("owner", old)
            if owner != old:
                return owner
    return ""


def test_etcd_restarted_mid_run_keeps_every_owner(tmp_path, etcd):
    daemons = etcd_cluster(tmp_path / "c", etcd)
    try:
        a = daemons[0]
        wasm = compile_guest("steps")
        exec_id = a.roost("run", "--detach", str(wasm), "--", "200", "20000000",
                          check=True).stdout.decode().strip()
        time.sleep(1.0)
        etcd.stop()
        time.sleep(0.5)
        etcd.restart()
        out = a.roost("logs", "-f", exec_id, timeout=180)
        check_steps(out.stdout, 200)
        record = json.loads(a.roost("inspect", "--json", exec_id, check=True).stdout)
        assert record["owner"] == a.node_id and record["state"] == "EXITED"
        assert int(record["epoch"]) == 1
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
