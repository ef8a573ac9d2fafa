"""Durable outbound HTTP across a host's death: three roostds on a real etcd
(`replication.ack = one`, the default with peers), the owner's host killed (roostd and its
workers, kill -9) while a guest's request is out. A request's intent reaches a replica before
it leaves, so the member that takes the execution over sends it again under the same
Idempotency-Key: the server applies it once, and a client that followed the execution from
the start through another member sees the output of a run never interrupted."""
from __future__ import annotations

import json
import os
import random
import time

import pytest

from tests.cluster.test_failover import TTL, Follower, _owner, etcd_cluster
from tests.framework.harness import Roostd, kill_host, wait_until
from tests.integration.test_http_durable import (
    SEED,
    SPIN,
    STEPS,
    check_exactly_once,
    expected_steps,
    http_config,
    start,
)


def _look(daemon: Roostd, exec_id: str) -> dict:
    out = daemon.roost("inspect", "--json", exec_id)
    return json.loads(out.stdout) if out.returncode == 0 else {}


@pytest.fixture
def three(tmp_path, etcd, http_server):
    daemons = etcd_cluster(tmp_path / "c", etcd, config_text=http_config(http_server))
    yield daemons
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_the_owner_dies_with_a_request_in_flight(three, http_server):
    a, b, c = three
    url = http_server.url
    exec_id = start(a, ["--allow-http", url], "http_steps", url, str(STEPS), SPIN)
    follower = Follower(b, exec_id)
    rng = random.Random(SEED)
    wait_until(lambda: http_server.applied_count("GET") >= rng.randrange(2, 12), timeout=60,
               what="some steps")
    http_server.fault("/counter/", "delay:1.5", 1)       # the next counter request: held out
    request = wait_until(lambda: _look(a, exec_id).get("http", {}).get("in_flight", ""),
                         timeout=30, interval=0.02, what="a request in flight on the owner")
    kill_host(a)
    assert f"(Idempotency-Key roost-{exec_id}-" in request, request
    new_owner = wait_until(lambda: _owner(b, exec_id, a.node_id), timeout=TTL + 20,
                           what="another member to take the execution over")
    out = follower.result()
    assert out == expected_steps(STEPS), f"seed {SEED}"
    check_exactly_once(http_server, exec_id, STEPS)
    assert http_server.duplicates >= 1          # the request cut off, sent again under its key
    owner = b if new_owner == b.node_id else c
    assert owner.roost("logs", "--stdout", exec_id).stdout == out
    record = _look(owner, exec_id)
    assert record["state"] == "EXITED" and int(record["epoch"]) > 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_http_soak_host_kills(tmp_path, etcd, http_server):
    """Soak (`-m slow`): ROOST_HTTP_FAILOVER_ROUNDS (40) runs of http_steps, each with its
    owner's host killed at a random moment and taken over by another member; every run's
    output is the uninterrupted one and each of its requests was applied exactly once."""
    rounds = int(os.environ.get("ROOST_HTTP_FAILOVER_ROUNDS", "40"))
    daemons = etcd_cluster(tmp_path / "soak", etcd, config_text=http_config(http_server))
    rng = random.Random(SEED + 11)
    url = http_server.url
    try:
        for round_ in range(rounds):
            http_server.reset()
            owner, other = daemons[round_ % 3], daemons[(round_ + 1) % 3]
            exec_id = start(owner, ["--allow-http", url], "http_steps", url, str(STEPS), SPIN)
            follower = Follower(other, exec_id)
            time.sleep(rng.uniform(0.05, 3.0))
            kill_host(owner)
            assert follower.result() == expected_steps(STEPS), f"seed {SEED + 11}, round {round_}"
            check_exactly_once(http_server, exec_id, STEPS)
            owner.restart()
            wait_until(lambda: all(len(json.loads(d.roost("nodes", "--json").stdout or b"[]")) == 3
                                   for d in daemons), timeout=30, what="the member back")
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
