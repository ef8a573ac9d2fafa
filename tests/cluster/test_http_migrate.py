"""Live migration of a guest making durable HTTP requests: a guest stops only between host
calls, so a migration asked while a request is out waits for its answer (journaled on the
source) before the final stop, and the target goes on from there. Each request is applied
once, and the output is that of a run never moved."""
from __future__ import annotations

import json

import pytest

from tests.cluster.test_cluster import inspect
from tests.framework.harness import cluster, stop_all, wait_until
from tests.integration.test_http_durable import SPIN, check_exactly_once, expected_steps, sdk_guest

STEPS = 40


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
    here, there = a, b
    for hop in range(3):
        wait_until(lambda: inspect(here, exec_id)["stdout_bytes"] > 0, timeout=60,
                   what="the guest's first steps")
        http_server.fault("/counter/", "delay:2.5")
        flight = wait_until(lambda: (inspect(here, exec_id).get("http") or {}).get("in_flight"),
                            timeout=30, what="a request in flight")
        moved = here.roost("migrate", exec_id, "--to", there.addr, "--json", timeout=180)
        assert moved.returncode == 0, (flight, moved.stderr.decode())
        report = json.loads(moved.stdout)
        assert report["downtime_seconds"] < 1.0, report      # the wait came before the stop
        record = inspect(there, exec_id)
        assert record["owner"] == there.node_id
        here, there = there, here
    done = here.roost("wait", exec_id, timeout=180)
    assert done.returncode == 0, done.stderr
    assert here.roost("logs", exec_id, check=True).stdout == expected_steps(STEPS)
    check_exactly_once(http_server, exec_id, STEPS)
