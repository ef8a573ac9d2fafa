"""Live migration of a guest blocked in a wait: the stop reaches it at once (no waiting for its
nap to end), and every nap still lasts what it asked for, on whichever host it ends."""
from __future__ import annotations

import json

from roost.client.api import Client
from tests.cluster.test_cluster import inspect, migrate, nodes, same_output, started  # noqa: F401
from tests.framework.harness import wait_until

BUDGET_SECONDS = 0.005      # a loaded CI machine; bench/waiting.py measures ~0.05 ms


def test_live_migration_stops_a_napping_guest_at_once(nodes):  # noqa: F811
    a, b, _ = nodes
    native, exec_id = started(a, "naps", "120", "150")   # 18 s: still napping after 3 migrations
    wait_until(lambda: int(inspect(a, exec_id)["stdout_bytes"]) > 0, timeout=60, what="the first nap")
    here, there = a, b
    waits = []
    for _ in range(3):
        report = migrate(here, exec_id, there)
        assert not report.get("cold"), report
        with Client(there.addr) as client:        # the final checkpoint, as the target holds it
            stats = json.loads(client.debug_checkpoint(exec_id).manifest_json)
        assert stats["reason"] == "migrate", stats
        waits.append(stats["time_to_safepoint_seconds"])
        here, there = there, here
    assert sorted(waits)[1] <= BUDGET_SECONDS, waits
    assert a.roost("wait", exec_id, timeout=120).returncode == 0
    same_output(a, exec_id, native)
    assert b"SHORT" not in native.stdout
