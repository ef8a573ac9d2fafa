"""A guest blocked in a wait is at a safepoint: checkpoint, pause and a worker's kill -9 reach a
guest in poll_oneoff at once, and it still wakes at its original deadline."""
from __future__ import annotations

import json
import random
import statistics
import time

import pytest

from roost.client import times
from roost.client.api import Client
from roost.client.display import message_dict
from roost.v1 import control_pb2 as pb
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import wait_until
from tests.framework.native import run_native
from tests.integration.test_durability import SEED, _inspect, _kill_worker, _stdout_len

# A loaded 2-core CI machine: the 1 ms is measured by bench/waiting.py (~0.1 ms). A
# request that waited for the nap (before) took ~75 ms at the median of the naps, and the rest
# of the sleep (seconds) for the long one: far above these.
SAFEPOINT_BUDGET_SECONDS = 0.005        # a median
SAFEPOINT_ONE_SECONDS = 0.050           # one request


def _start(daemon, wasm, *args):
    return daemon.roost("run", "--detach", str(wasm), "--", *args, check=True).stdout.decode().strip()


def _checkpoint(daemon, exec_id) -> dict:
    return json.loads(daemon.roost("checkpoint", "--json", exec_id, check=True).stdout)


def test_checkpoints_reach_a_napping_guest_at_once(roostd):
    wasm = compile_guest("naps")
    args = ["naps", "100", "150"]
    native = run_native(wasm, args)
    exec_id = _start(roostd, wasm, *args[1:])
    wait_until(lambda: _stdout_len(roostd, exec_id) > 0, what="the first nap")
    rng, reports = random.Random(SEED + 41), [_checkpoint(roostd, exec_id)]    # the CLI's JSON
    with Client(roostd.addr) as client:     # (the rest through the API: a loaded host starts
        for _ in range(19):                 # a CLI in 0.5 s, and the guest would end first)
            time.sleep(rng.uniform(0.0, 0.15))
            reports.append(message_dict(client.checkpoint(exec_id)))
    waits = [times.json_seconds(r["time_to_safepoint"]) for r in reports]
    assert statistics.median(waits) <= SAFEPOINT_BUDGET_SECONDS, waits
    for r in reports:                               # the dirty pages are reported beside the pause
        assert r["dirty_bytes"] == r["dirty_pages"] * 4096, r
    assert max(r["dirty_pages"] for r in reports) > 0
    assert roostd.roost("wait", exec_id, timeout=120).returncode == 0
    logs = roostd.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
    assert b"SHORT" not in logs.stdout


def test_a_long_sleep_in_a_worker_is_checkpointed_killed_paused_and_wakes_on_time(fresh_roostd):
    """10 s below the durable-sleep threshold: the guest sleeps in its worker. A checkpoint at
    1 s, a kill -9 of its worker at 2 s (restored into the same sleep), a pause at 3 s and a
    resume at 4 s: it still wakes at 10 s."""
    fresh_roostd.config_text = "[checkpoints]\ndurable_sleep_seconds = 30\n"
    daemon = fresh_roostd.start()
    wasm = compile_guest("sleeper")
    exec_id = _start(daemon, wasm, "10")
    t0 = time.monotonic()
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="the sleep to begin")
    time.sleep(max(0.0, t0 + 1 - time.monotonic()))
    first = _checkpoint(daemon, exec_id)
    assert times.json_seconds(first["time_to_safepoint"]) <= SAFEPOINT_ONE_SECONDS, first
    time.sleep(max(0.0, t0 + 2 - time.monotonic()))
    assert _kill_worker(daemon, exec_id)
    wait_until(lambda: _inspect(daemon, exec_id)["restores"] == 1, what="the restore")
    time.sleep(max(0.0, t0 + 3 - time.monotonic()))
    began = time.monotonic()
    assert daemon.roost("pause", exec_id).returncode == 0
    assert time.monotonic() - began < 2.0              # not the 7 s left of the sleep
    assert _inspect(daemon, exec_id)["state"] == "PAUSED"
    time.sleep(max(0.0, t0 + 4 - time.monotonic()))
    assert daemon.roost("resume", exec_id).returncode == 0
    assert daemon.roost("wait", exec_id, timeout=30).returncode == 0
    woke = time.monotonic() - t0
    assert 10 - 0.5 <= woke <= 10 + 1.0, woke
    assert daemon.roost("logs", "--stdout", exec_id).stdout == (
        b"sleeping 10.0 s\nwoke after at least the requested time: yes\n")    # as under wasmtime


@pytest.mark.parametrize("action", ["checkpoint", "pause"])
def test_a_durably_sleeping_guest_answers_at_once(roostd, action):
    """Above the threshold the guest already stopped at its sleep's checkpoint and holds no
    worker: a checkpoint answers with that one, a pause keeps it, and it wakes on time."""
    wasm = compile_guest("sleeper")
    exec_id = _start(roostd, wasm, "6")
    t0 = time.monotonic()
    wait_until(lambda: _inspect(roostd, exec_id)["state"] == "SLEEPING", timeout=10, what="SLEEPING")
    before = _inspect(roostd, exec_id)["checkpoints"]
    began = time.monotonic()
    if action == "checkpoint":
        report = _checkpoint(roostd, exec_id)
        assert report["number"] == before and report["pause_duration"] == "0s", report
    else:                    # (the client library: a loaded host starts a CLI in up to 1 s)
        with Client(roostd.addr) as client:
            assert client.pause(exec_id).state == pb.PAUSED
            time.sleep(max(0.0, t0 + 3 - time.monotonic()))
            client.resume(exec_id)
    assert time.monotonic() - began < 1.0 + (3 if action == "pause" else 0)
    assert roostd.roost("wait", exec_id, timeout=30).returncode == 0
    woke = time.monotonic() - t0
    assert 6 - 0.5 <= woke <= 6 + 1.5, woke
    assert roostd.roost("logs", "--stdout", exec_id).stdout == (
        b"sleeping 6.0 s\nwoke after at least the requested time: yes\n")
