"""The third-party guests of ../shared/guests across host failures and early migrations.

- Started on A of three roostds on one etcd, followed with `roost logs -f` through B, A's host
  killed (roostd and workers, kill -9) at a random moment: the guest finishes on B or C with the
  expected stdout, exit code and files, and the follower got every byte exactly once.
- Migrated live 0.2–1 s after it started, to a peer that never ran the module and has a cache of
  its own: the peer received the module already prepared (it compiles, never prepares), and the
  output is the expected one.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from tests.cluster.test_failover import Follower, etcd_cluster
from tests.framework.harness import Roostd, kill_host, wait_until
from tests.framework.shared_guests import Case, cases, guests_dir, sha256
from tests.integration.test_durability import SEED

pytestmark = [pytest.mark.guests,
              pytest.mark.skipif(guests_dir() is None,
                                 reason="third-party guests not fetched (tests/env.sh)")]
CASES = [c for c in cases() if not c.spec.get("wasm_exceptions")]


def _ids(c: Case) -> str:
    return c.name


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    from tests.framework.etcd import Etcd
    root = tmp_path_factory.mktemp("shared-failover")
    etcd = Etcd(root / "etcd").start()
    daemons = etcd_cluster(root / "c", etcd)
    yield daemons, root
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
    etcd.stop()


def _alive(daemons: list[Roostd]) -> list[Roostd]:
    return [d for d in daemons if d.proc is not None and d.proc.poll() is None]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_host_killed_mid_run_guest_finishes_elsewhere(three, case, tmp_path):
    daemons, _ = three
    for d in daemons:                       # (a previous case killed one: back, as a reboot)
        if d.proc is None or d.proc.poll() is not None:
            d.restart()
    rng = random.Random(f"{SEED}-failover-{case.name}")
    a, b, c = daemons
    opts, files = case.prepare(tmp_path)
    exec_id = a.roost("run", "--detach", *opts, timeout=600, check=True).stdout.decode().strip()
    follower = Follower(b, exec_id)
    time.sleep(rng.uniform(0.1, 1.0))
    kill_host(a)
    out = follower.result(timeout=600)
    expected = case.spec["expected"]
    assert sha256(out) == expected["stdout_sha256"], f"{len(out)} bytes followed"
    waited = b.roost("wait", exec_id, timeout=600)
    assert waited.returncode == expected["exit"], waited.stderr[-2000:]
    for name, want in expected["files"].items():
        dest = tmp_path / "out" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        cp = b.roost("cp", f"{exec_id}:{files[name]}", str(dest))
        assert cp.returncode == 0, cp.stderr
        assert sha256(dest.read_bytes()) == want, name
    a.restart()


@pytest.mark.timeout(900)     # (A prepares the module in a cache of its own first)
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("quickjs", "boolector")], ids=_ids)
def test_live_migration_right_after_start_needs_no_preparation(case, tmp_path):
    a = Roostd(tmp_path / "a" / "data")
    b = Roostd(tmp_path / "b" / "data")
    # Caches of their own: A prepares the module (and keeps its prepared form), B never ran it.
    a.cache_dir, b.cache_dir = tmp_path / "a-cache", tmp_path / "b-cache"
    a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr]
    try:
        a.start()
        b.start()
        rng = random.Random(f"{SEED}-early-{case.name}")
        for attempt in range(4):           # (a short guest may end first: again, sooner)
            opts, _ = case.prepare(tmp_path / f"try{attempt}")
            exec_id = a.roost("run", "--detach", *opts, timeout=600,
                              check=True).stdout.decode().strip()
            time.sleep(rng.uniform(0.2, 1.0) / (attempt + 1))
            done = a.roost("migrate", exec_id, "--to", b.addr, "--json", timeout=600)
            if done.returncode == 0 or not (b"is not running" in done.stderr
                                            or b"is EXITED" in done.stderr):
                break
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert json.loads(done.stdout)["target"]
        waited = a.roost("wait", exec_id, timeout=600)
        expected = case.spec["expected"]
        assert waited.returncode == expected["exit"]
        assert sha256(b.roost("logs", "--stdout", exec_id).stdout) == expected["stdout_sha256"]
        assert "prepared module" not in b.log_path.read_text()
        wait_until(lambda: "from a prepared form" in b.log_path.read_text(), timeout=5,
                   what="the module's prepared form on the target")
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
