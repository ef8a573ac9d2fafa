"""Output and journal records reach the replicas as they are written, and with
`replication.ack = one` (the default with peers) a client sees output only once a replica
holds it: two roostds on loopback, the steps guest, output compared with a plain run."""
from __future__ import annotations

import json
import re

import pytest

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import cluster, wait_until


@pytest.fixture
def pair(tmp_path):
    daemons = cluster(tmp_path / "pair", n=2)
    yield daemons
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_records_reach_the_replica_before_the_output_counts(pair):
    a, b = pair
    wasm = compile_guest("steps")
    exec_id = a.roost("run", "--detach", str(wasm), "--", "400", "3000000",
                      check=True).stdout.decode().strip()
    # No checkpoint yet (every 60 s): the replica has the records all the same.
    wait_until(lambda: b"step 30 " in b.roost("logs", exec_id).stdout, timeout=60,
               what="records on the replica")
    followed = a.roost("logs", "-f", exec_id, timeout=120)
    check_steps(followed.stdout, 400)
    assert b.roost("logs", exec_id).stdout == followed.stdout
    replica = json.loads(b.roost("inspect", "--json", exec_id, check=True).stdout)
    assert replica["owner"] == a.node_id
    text = a.metrics()
    assert re.search(rf'roost_replication_records_lag{{peer="{b.addr}"}} 0', text)
    assert re.search(r"roost_output_release_seconds_count [1-9]", text)


def check_steps(out: bytes, n: int) -> None:
    """The steps guest's output: steps 0..n-1, each once and in order, then their sum."""
    lines = out.decode().splitlines()
    assert [int(line.split()[1]) for line in lines[:-1]] == list(range(n)), "a step missing or repeated"
    total = sum(int(line.split()[2]) for line in lines[:-1])
    assert lines[-1] == f"sum {total}"


def test_recover_runs_the_replica_and_the_old_owner_drops_its_copy(pair):
    """Without etcd: the owner's host dies; `roost recover ID --on NODE` runs the replica
    there at the next epoch, with every step once; the old owner, back, never runs it."""
    from tests.cluster.test_failover import kill_host

    a, b = pair
    wasm = compile_guest("steps")
    exec_id = a.roost("run", "--detach", str(wasm), "--", "300", "20000000",
                      check=True).stdout.decode().strip()
    wait_until(lambda: b"step 20 " in b.roost("logs", exec_id).stdout, timeout=60,
               what="records on the replica")
    kill_host(a)
    done = b.roost("recover", exec_id, "--on", b.node_id)
    assert done.returncode == 0, done.stderr
    assert f"runs on {b.node_id}" in done.stdout.decode()
    check_steps(b.roost("logs", "-f", exec_id, timeout=180).stdout, 300)
    a.restart()
    wait_until(lambda: "drops its copy" in a.log_path.read_text(), timeout=30,
               what="the old owner to drop its copy")
    record = json.loads(a.roost("inspect", "--json", exec_id, check=True).stdout)
    assert record["owner"] == b.node_id
    again = b.roost("recover", exec_id, "--on", b.node_id)
    assert again.returncode != 0 and b"already" in again.stderr
