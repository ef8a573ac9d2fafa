"""The operator's cluster commands, through the real CLI against real roostds: `ps --all-nodes`
(each execution once, where it runs; a member that is down named on stderr), `run --place auto`
and `--place NODE`, node ids wherever an address goes (`migrate --to NODE`), and `drain NODE`.
Membership comes from a real etcd where it matters (executions and load per member); the
listing fix (a daemon lists and counts only what it owns) is checked on static peers. Output is
compared with a plain wasmtime run."""
from __future__ import annotations

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from roost.client.conventions import EXIT_ERROR
from tests.cluster.test_cluster import held, inspect
from tests.cluster.test_failover import etcd_cluster
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, cluster, wait_until
from tests.framework.native import run_native

SPIN = ["400", "2500000"]             # spin_print: ~5 s of lines
LONG_SPIN = ["3000", "2500000"]       # ~30 s under load: time for a drain to move it
FILLER = ["0", "0", "100000"]         # big_records: a line every ~20 ms, nearly idle: load only


def _stop(daemons: list[Roostd]) -> None:
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


@pytest.fixture
def three(tmp_path, etcd):
    daemons = etcd_cluster(tmp_path / "c", etcd)
    yield daemons
    _stop(daemons)


def start(daemon: Roostd, guest: str, args: list[str], *opts: str) -> str:
    out = daemon.roost("run", "--detach", *opts, str(compile_guest(guest)), "--", *args, check=True)
    return out.stdout.decode().strip()


def everywhere(daemon: Roostd, *opts: str) -> list[dict]:
    done = daemon.roost("ps", "--all-nodes", "--json", *opts)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def counts(daemon: Roostd) -> dict[str, int]:
    """Executions per member, as the daemon's ListNodes says (etcd: published per renewal)."""
    return {n["node_id"]: int(n["executions"])
            for n in json.loads(daemon.roost("nodes", "--json", check=True).stdout)}


def running_metric(daemon: Roostd) -> float:
    found = re.search(r'^roost_executions\{state="RUNNING"\} (\S+)$', daemon.metrics(), re.M)
    return float(found.group(1)) if found else -1.0


def test_after_a_migration_only_the_target_lists_and_counts_it(tmp_path):
    """Static peers: `migrate --to NODE_ID` (resolved by the daemon asked); then the source
    neither lists it (ps) nor counts it in roost_executions, though it still answers for it
    (where it went); `ps --all-nodes` shows it once, on the target; with the target down, the
    listing goes on without it and says so in one line."""
    a, b = cluster(tmp_path / "static", n=2)
    try:
        with ThreadPoolExecutor(1) as pool:                   # the plain run, meanwhile
            plain = pool.submit(run_native, compile_guest("spin_print"), ["spin_print", *LONG_SPIN])
            moved_once(a, b, start(a, "spin_print", LONG_SPIN), plain.result)
    finally:
        _stop([a, b])


def moved_once(a: Roostd, b: Roostd, exec_id: str, plain) -> None:
    """The body of the test above, while the plain run goes on in the background."""
    wait_until(lambda: running_metric(a) == 1, timeout=30, what="it running on a")
    done = a.roost("migrate", exec_id, "--to", b.node_id, "--json", timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["target"] == b.node_id
    assert exec_id not in a.roost("--json", "ps", "-a", check=True).stdout.decode()
    assert running_metric(a) == 0 and running_metric(b) == 1
    assert (held(a, exec_id) or {}).get("owner") == b.node_id
    listed = everywhere(a, "-a")
    assert [(e["id"], e["owner"]) for e in listed] == [(exec_id, b.node_id)]
    table = a.roost("ps", "--all-nodes", "-a", check=True).stdout.decode().splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "NODE", "STATE"]
    assert table[1].split()[:3] == [exec_id, "-", b.node_id]
    native = plain()
    assert a.roost("wait", exec_id, timeout=180).returncode == native.exit_code
    assert a.roost("logs", exec_id).stdout == native.stdout
    b.kill9()
    down = a.roost("ps", "--all-nodes", "-a")
    assert down.returncode == 0
    warning = down.stderr.decode().splitlines()
    assert len(warning) == 1 and b.node_id in warning[0] and "Traceback" not in warning[0]
    assert exec_id not in down.stdout.decode()


def test_place_auto_picks_the_least_loaded_member_and_ps_all_nodes_finds_it(three):
    """a runs two executions, b one, c none: `run --place auto` asked of a runs on c (its
    output the plain run's, streamed through the attached CLI); `--place B` runs on b;
    `ps --all-nodes` asked of any member lists each execution once, with its owner."""
    a, b, c = three
    fillers = [start(a, "big_records", FILLER), start(a, "big_records", FILLER),
               start(b, "big_records", FILLER)]
    wait_until(lambda: counts(a) == {a.node_id: 2, b.node_id: 1, c.node_id: 0}, timeout=30,
               what="the members' executions published")
    wasm = compile_guest("spin_print")
    args = ["40", "2500000"]
    native = run_native(wasm, ["spin_print", *args])
    attached = a.roost("run", "--place", "auto", str(wasm), "--", *args, timeout=180)
    assert (attached.stdout, attached.returncode) == (native.stdout, native.exit_code)
    on_c = [e for e in everywhere(a, "-a") if e["owner"] == c.node_id]
    assert len(on_c) == 1 and on_c[0]["state"] == "EXITED"
    placed = start(a, "spin_print", args, "--place", b.node_id)
    assert inspect(b, placed)["owner"] == b.node_id
    assert a.roost("wait", placed, timeout=120).returncode == native.exit_code
    assert a.roost("logs", placed).stdout == native.stdout
    expected = {fillers[0]: a.node_id, fillers[1]: a.node_id, fillers[2]: b.node_id,
                placed: b.node_id, on_c[0]["id"]: c.node_id}
    for asked in (a, c):
        listed = everywhere(asked, "-a")
        assert Counter(e["id"] for e in listed) == Counter(expected.keys())
        assert {e["id"]: e["owner"] for e in listed} == expected
    assert [e["id"] for e in everywhere(b)] == fillers     # -a not given: the ended ones not
    unknown = a.roost("run", "--place", "no-such-node", str(wasm))
    assert unknown.returncode == EXIT_ERROR and b"unknown node 'no-such-node'" in unknown.stderr
    for exec_id in fillers:
        a.roost("kill", exec_id)


@pytest.fixture(params=["static", "etcd"])
def members(request, tmp_path):
    """Three roostds: static peers (ListNodes counts only the asked daemon's own executions:
    the others' are 0 to it) or on etcd (every member's count published)."""
    if request.param == "etcd":
        daemons = etcd_cluster(tmp_path / "c", request.getfixturevalue("etcd"))
    else:
        daemons = cluster(tmp_path / "c")
    yield daemons
    _stop(daemons)


def test_drain_moves_every_execution_to_the_least_loaded_members(members):
    """`roost drain A` (asked of b) moves a's three executions live, each to the least loaded
    other member (c had none, b one: c gets two), reports each move with its downtime; a
    lists nothing after; the moved guests finish with the plain run's output. Draining it
    again has nothing to do; an unknown node is a one-line error."""
    a, b, c = members
    wasm = compile_guest("spin_print")
    for d in (a, b):            # the fillers' module prepared first: the spins must outlast it
        d.roost("modules", "prepare", str(compile_guest("big_records")), check=True, timeout=300)
    with ThreadPoolExecutor(1) as pool:                   # the plain run, meanwhile
        plain = pool.submit(run_native, wasm, ["spin_print", *LONG_SPIN])
        spins = [start(a, "spin_print", LONG_SPIN), start(a, "spin_print", LONG_SPIN)]
        drained(a, b, c, spins, plain.result)


def drained(a: Roostd, b: Roostd, c: Roostd, spins: list[str], plain) -> None:
    """The drain test's body, while the plain run goes on in the background (`plain()`)."""
    fillers = [start(a, "big_records", FILLER), start(b, "big_records", FILLER)]
    published = {b.node_id: 1, c.node_id: 0}      # a's count: 3 on etcd, unknown to b without
    wait_until(lambda: {n: k for n, k in counts(b).items() if n != a.node_id} == published,
               timeout=30, what="the members' executions published")
    done = b.roost("drain", a.node_id, "--json", timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["node"] == a.node_id and (report["migrated"], report["failed"]) == (3, 0)
    moved = {m["id"]: m for m in report["executions"]}
    assert sorted(moved) == sorted([*spins, fillers[0]])
    assert Counter(m["to"] for m in moved.values()) == {c.node_id: 2, b.node_id: 1}
    assert all(m["outcome"] == "migrated" and m["downtime_seconds"] > 0 for m in moved.values())
    assert json.loads(a.roost("--json", "ps", check=True).stdout) == []
    native = plain()
    for exec_id in spins:
        assert inspect(a, exec_id)["owner"] == moved[exec_id]["to"]
        assert a.roost("wait", exec_id, timeout=180).returncode == native.exit_code
        assert a.roost("logs", exec_id).stdout == native.stdout
    again = b.roost("drain", a.node_id)
    assert again.returncode == 0 and b"nothing to drain" in again.stdout
    unknown = b.roost("drain", "no-such-node")
    assert unknown.returncode == EXIT_ERROR and unknown.stderr.count(b"\n") == 1
    for exec_id in fillers:
        a.roost("kill", exec_id)
