"""Live migration of a guest making durable HTTP requests: a guest stops only between host
calls, so a migration asked while a request is out waits for its answer (journaled on the
source) before the final stop, and the target goes on from there. Each request is applied
once, and the output is that of a run never moved."""
from __future__ import annotations

import json

import pytest

from roost.client import times
from tests.cluster.test_cluster import inspect
from tests.framework.harness import cluster, stop_all, wait_until
from tests.integration.test_http_durable import SPIN, check_exactly_once, expected_steps, sdk_guest

STEPS = 200          # some 14 s of computing, and 2.5 s more per hop: three hops fit


@pytest.fixture
def pair(tmp_path, http_server):
    config = (f'[replication]\nfactor = -1\n[[http.allow]]\nprefix = "{http_server.url}"\n'
              "idempotency_keys = true\n")
    daemons = cluster(tmp_path / "cluster", n=2, config_text=config)
    yield daemons
    stop_all(daemons)


def test_migration_waits_for_the_request_in_flight(pair, http_server):
    a, b = pair
    wasm = sdk_guest("http_steps")
    exec_id = a.roost("run", "--detach", "--allow-http", http_server.url, str(wasm), "--",
                      http_server.url, str(STEPS), SPIN, check=True).stdout.decode().strip()
    here, there, hops = a, b, 0
    for _ in range(3):
        http_server.fault("/counter/", "delay:2.5")
        seen = wait_until(lambda: _in_flight_or_ended(here, exec_id), timeout=60,
                          what="a request in flight")
        if seen == "ended":
            break                                    # (a loaded machine: fewer hops)
        moved = here.roost("migrate", exec_id, "--to", there.addr, "--json", timeout=180)
        assert moved.returncode == 0, (seen, moved.stderr.decode())
        report = json.loads(moved.stdout)
        assert times.json_seconds(report["downtime"]) < 1.0, report      # the wait came before the stop
        assert inspect(there, exec_id)["owner"] == there.node_id
        here, there, hops = there, here, hops + 1
    assert hops >= 1, "the guest ended before any migration"
    done = here.roost("wait", exec_id, timeout=180)
    assert done.returncode == 0, done.stderr
    assert here.roost("logs", exec_id, check=True).stdout == expected_steps(STEPS)
    check_exactly_once(http_server, exec_id, STEPS)


def _in_flight_or_ended(daemon, exec_id: str) -> str:
    """The request in flight ("" while none is), or "ended" once the guest has."""
    record = inspect(daemon, exec_id)
    if record["state"] not in ("RUNNING", "PENDING"):
        return "ended"
    return (record.get("http") or {}).get("in_flight", "")
