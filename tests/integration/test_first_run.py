"""A module's first run does not wait for its preparation (issue 14, fast first run).

The daemon's preparation is slowed by a fault point (`slow_prepare_ms`: as slow as a big
module's), so every guest here runs unprepared: its first output comes within seconds of the
upload, a checkpoint (or pause) of it is refused with a clear FAILED_PRECONDITION naming the
preparation, and a worker killed -9 before the preparation ends is replaced by one that replays
the journal from the start: every byte delivered exactly once, as a plain run writes it.
A daemon of its own with a cache of its own: the shared test cache may hold the guests prepared.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, process_alive, wait_until
from tests.framework.native import run_native

FIRST_OUTPUT_SECONDS = 10.0     # the target, upload to first output
CLOCK = ["1000", "3000000"]    # clock_random: lines, each with a journaled random and time
SPIN = ["1500", "2500000"]
UNPREPARED = "[modules]\nrun_unprepared = true\n"    # roostd's default (tests pin it off)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A roostd whose preparations take two minutes more than they do."""
    root = tmp_path_factory.mktemp("first-run")
    daemon = Roostd(root / "data", env={"ROOST_FAULTS": "slow_prepare_ms=120000"}, config_text=UNPREPARED)
    daemon.cache_dir = root / "cache"
    daemon.start()
    yield daemon
    daemon.stop()


def _inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def _first_output(daemon: Roostd, wasm, *args: str) -> tuple[str, float]:
    """Upload and start (`roost run --detach`), then poll its stdout: (id, seconds from the
    upload's start to the first byte stored)."""
    began = time.monotonic()
    exec_id = daemon.roost("run", "--detach", str(wasm), "--", *args, check=True).stdout.decode().strip()
    wait_until(lambda: daemon.roost("logs", "--stdout", exec_id).stdout, timeout=60, interval=0.05,
               what="the first output")
    return exec_id, time.monotonic() - began


def _kill_worker(daemon: Roostd, exec_id: str) -> bool:
    """kill -9 of the execution's worker; False if none is alive."""
    record = _inspect(daemon, exec_id)
    pid = int(record.get("worker_pid") or 0)
    if record["state"] != "RUNNING" or not pid or not process_alive(pid):
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def _check_lines(stdout: bytes, lines: int) -> None:
    """clock_random's lines: each exactly once, in order, times never going backwards."""
    rows = stdout.decode().splitlines()
    assert [int(r.split()[1]) for r in rows] == list(range(lines))
    elapsed = [int(r.split()[5]) for r in rows]
    assert elapsed == sorted(elapsed)


def test_first_output_comes_before_the_preparation_ends(slow):
    wasm = compile_guest("clock_random")
    exec_id, seconds = _first_output(slow, wasm, *CLOCK)
    print(f"first output {seconds:.2f} s after the upload")
    assert seconds <= FIRST_OUTPUT_SECONDS, f"first output {seconds:.1f} s after the upload"
    log = slow.log_path.read_text(errors="replace")
    assert "compiled module" in log and "unprepared" in log
    assert "prepared module" not in log

    for command in ("checkpoint", "pause"):
        refused = slow.roost(command, exec_id)
        assert refused.returncode != 0
        error = refused.stderr.decode()
        assert "still being prepared" in error, error
        assert "Traceback" not in error
    assert slow.roost("wait", exec_id, timeout=120).returncode == 0
    _check_lines(slow.roost("logs", "--stdout", exec_id).stdout, int(CLOCK[0]))
    assert _inspect(slow, exec_id)["checkpoints"] == 0


def test_a_worker_killed_before_the_preparation_replays_from_the_start(slow):
    """kill -9 of an unprepared guest's worker: its replacement (unprepared too) replays the
    journal from the start; a plain guest's output is byte-identical to a native run's, a
    world-reading guest's lines each appear once."""
    spin, clock = compile_guest("spin_print"), compile_guest("clock_random")
    native = run_native(spin, ["spin_print", *SPIN])
    kills = 0
    for wasm, args in ((spin, SPIN), (clock, CLOCK)):
        exec_id, _ = _first_output(slow, wasm, *args)
        kills += _kill_worker(slow, exec_id)
        if wasm == spin:
            a = exec_id
        else:
            b = exec_id
    assert kills == 2, "a guest ended before its kill: make it longer"
    assert slow.roost("wait", a, timeout=120).returncode == native.exit_code
    assert slow.roost("wait", b, timeout=120).returncode == 0
    logs = slow.roost("logs", a)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
    _check_lines(slow.roost("logs", "--stdout", b).stdout, int(CLOCK[0]))
    for exec_id in (a, b):
        record = _inspect(slow, exec_id)
        assert record["restores"] == 1 and record["checkpoints"] == 0
    assert "prepared module" not in slow.log_path.read_text(errors="replace")


def test_a_long_sleep_of_an_unprepared_guest_sleeps_in_its_worker(slow):
    """Over the durable-sleep threshold (2 s) an unprepared guest cannot be checkpointed: it
    sleeps in its worker, RUNNING, and wakes at its deadline."""
    wasm = compile_guest("sleeper")
    exec_id, _ = _first_output(slow, wasm, "15")    # (long enough for a loaded host's CLI)
    assert _inspect(slow, exec_id)["state"] == "RUNNING"
    time.sleep(1.0)
    assert _inspect(slow, exec_id)["state"] == "RUNNING"
    assert slow.roost("wait", exec_id, timeout=60).returncode == 0
    assert slow.roost("logs", "--stdout", exec_id).stdout.endswith(b"requested time: yes\n")


def test_sigterm_of_roostd_then_restart_replays_an_unprepared_guest(slow):
    """roostd's SIGTERM cannot suspend an unprepared guest: its worker is killed, and the
    restarted daemon replays the journal from the start (each line once)."""
    wasm = compile_guest("clock_random")
    exec_id, _ = _first_output(slow, wasm, *CLOCK)
    assert slow.stop() == 0
    slow.start()
    assert slow.roost("wait", exec_id, timeout=120).returncode == 0
    _check_lines(slow.roost("logs", "--stdout", exec_id).stdout, int(CLOCK[0]))
    record = _inspect(slow, exec_id)
    assert record["restores"] == 1 and record["checkpoints"] == 0


def test_a_worker_killed_after_the_preparation_replays_on_the_prepared_module(tmp_path):
    """The preparation ends while the guest runs unprepared; its worker killed then is
    replaced by one of the prepared module, which replays the journal from the start (the
    same host calls in the same order) and can be checkpointed from then on."""
    daemon = Roostd(tmp_path / "data", env={"ROOST_FAULTS": "slow_prepare_ms=5000"}, config_text=UNPREPARED)
    daemon.cache_dir = tmp_path / "cache"
    daemon.start()
    try:
        lines = 4000
        exec_id, _ = _first_output(daemon, compile_guest("clock_random"), str(lines), CLOCK[1])
        assert "still being prepared" in daemon.roost("checkpoint", exec_id).stderr.decode()
        wait_until(lambda: "prepared module" in daemon.log_path.read_text(errors="replace"),
                   timeout=120, what="the preparation's end")
        assert _kill_worker(daemon, exec_id), "the guest ended before its kill: make it longer"
        wait_until(lambda: daemon.roost("checkpoint", exec_id).returncode == 0, timeout=60,
                   what="a checkpoint of the prepared module's run")
        assert daemon.roost("wait", exec_id, timeout=300).returncode == 0
        _check_lines(daemon.roost("logs", "--stdout", exec_id).stdout, lines)
        record = _inspect(daemon, exec_id)
        assert record["restores"] == 1 and record["checkpoints"] >= 1
    finally:
        daemon.stop()


# ---- the registry in process ------------------------------------------------------------------
def test_registry_answers_at_once_and_prepares_once_in_the_background(tmp_path, monkeypatch):
    """An upload is stored without waiting for its preparation; a launch meanwhile gets the
    original compiled (`UNPREPARED`); a caller that must have the prepared module waits for the
    background's preparation instead of preparing a second time; listeners hear of it."""
    import hashlib
    import threading

    from roost.daemon.modules import prepare, registry
    from roost.daemon.store.db import Store

    real, release, calls = prepare.prepare, threading.Event(), []

    def gated(*args, **kwargs):
        calls.append(kwargs.get("preemptive"))
        release.wait(60)
        return real(*args, **kwargs)
    monkeypatch.setattr(prepare, "prepare", gated)
    modules = registry.ModuleRegistry(Store(tmp_path / "store", 1 << 30), tmp_path / "cache", 64 << 20,
                                      prepared_wait_seconds=0.2)
    heard: list[tuple[str, str]] = []
    modules.on_prepared = lambda digest, mode: heard.append((digest, mode))
    wasm = compile_guest("spin_print").read_bytes()
    digest = hashlib.sha256(wasm).hexdigest()

    began = time.monotonic()
    record, deduplicated = modules.add("spin_print", wasm, digest)
    assert not deduplicated and time.monotonic() - began < 5
    path, manifest = modules.ensure_artifact(digest, True)
    assert manifest == registry.UNPREPARED and path == modules.plain_artifact(digest) and path.exists()
    assert modules.preparing(digest, True)

    waiter: list[tuple] = []
    thread = threading.Thread(target=lambda: waiter.append(modules.ensure_artifact(digest, True, wait=True)))
    thread.start()
    time.sleep(0.3)
    assert not waiter                      # it waits for the background's preparation
    release.set()
    thread.join(120)
    path, manifest = waiter[0]
    assert path == modules.artifact(digest, True) and manifest["preemptive"] is True
    assert calls == [True]                 # prepared once
    wait_until(lambda: heard == [(digest, "preempt")], what="the listener")
    assert modules.ensure_artifact(digest, True)[1] == manifest
    assert modules.add("spin_print", wasm, digest)[1]     # deduplicated; nothing prepared again
    assert calls == [True]
