"""Adaptive loop polls on a real daemon: a checkpoint request held past the safepoint budget by
an uninstrumented function (leaf_loop's call-free `leaf`) names it (`held_by`), roostd prepares
the module's variant that instruments it in the background, and a new run of the module stops
within the budget. A checkpoint taken before the variant existed is restored into the variant
it was taken in (the plain preparation) — byte-identically, after the variant is ready — and
one taken in the variant into the variant."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from roost.client import times
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.store.db import Store
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until
from tests.framework.native import run_native
from tests.integration.test_durability import _inspect, _kill_worker, _stdout_len

BUDGET = 0.020                        # (not the default 0.010: the config reaches the worker)
CALLS, ROUNDS = "80", "100000000"     # ~0.1 s per call of `leaf`: ~8 s in all


@pytest.fixture
def daemon(tmp_path):
    # A cache of its own: the instrumented list is kept there (the shared test cache would
    # carry it to the next session's first run).
    d = Roostd(tmp_path / "data", config_text=f"[modules]\nsafepoint_budget_seconds = {BUDGET}\n")
    d.cache_dir = tmp_path / "cache"
    d.start()
    yield d
    d.stop()


def _run(daemon: Roostd, wasm: Path) -> str:
    exec_id = daemon.roost("run", "--detach", str(wasm), "--", CALLS, ROUNDS,
                           check=True).stdout.decode().strip()
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
    return exec_id


def _checkpoints(daemon: Roostd, exec_id: str, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        out.append(json.loads(daemon.roost("checkpoint", "--json", exec_id, check=True).stdout))
        time.sleep(0.13)                 # (not in step with the calls of `leaf`)
    return out


def _seconds(report: dict) -> float:
    return times.json_seconds(report.get("time_to_safepoint", "0s"))


def _held_by(report: dict) -> str:
    return str(report.get("heldBy", report.get("held_by", "")))


def _finish_identically(daemon: Roostd, exec_id: str, native) -> None:
    assert daemon.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    logs = daemon.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)


def test_a_slow_leaf_is_instrumented_at_the_next_preparation(daemon):
    wasm = compile_guest("leaf_loop")
    native = run_native(wasm, ["leaf_loop", CALLS, ROUNDS])
    cache = daemon.cache_dir

    first = _run(daemon, wasm)
    reports = _checkpoints(daemon, first, 3)
    slow = [r for r in reports if _seconds(r) > BUDGET]
    assert slow, reports                 # a request in a 0.1 s leaf call waits for its end
    assert all(_held_by(r) == "leaf" for r in slow), reports
    # Paused while the variant is prepared (a loaded machine takes longer than the run).
    assert daemon.roost("pause", first).returncode == 0
    wait_until(lambda: list(cache.glob("*.preempt.i*.cwasm")), timeout=180,
               what="the instrumented variant prepared")
    [names] = cache.glob("*.preempt.instrument.json")
    assert json.loads(names.read_text()) == ["leaf"]

    # The first run's checkpoints were taken in the plain preparation: a restore (resume after
    # the pause, then a kill -9) goes on in it, byte-identically, though the variant is ready.
    assert daemon.roost("resume", first).returncode == 0
    assert _held_by(_checkpoints(daemon, first, 1)[0]) in ("", "leaf")
    wait_until(lambda: _kill_worker(daemon, first), what="a worker to kill")
    _finish_identically(daemon, first, native)
    assert _inspect(daemon, first)["restores"] >= 2

    # A new run gets the variant: `leaf`'s loop is a real safepoint now.
    second = _run(daemon, wasm)
    reports = _checkpoints(daemon, second, 5)
    assert not any(_held_by(r) for r in reports), reports
    assert statistics.median(_seconds(r) for r in reports) < BUDGET, reports
    wait_until(lambda: _kill_worker(daemon, second), what="a worker to kill")
    _finish_identically(daemon, second, native)      # restored into the variant


def test_the_registry_keys_each_variant_and_restores_the_one_asked_for(tmp_path):
    """Without a daemon: the list is persisted and bounded, a variant's files carry its hash,
    a fresh start gets the newest ready variant, a restore the one named (built if missing)."""
    registry = ModuleRegistry(Store(tmp_path / "store", 1 << 30), tmp_path / "cache", 64 << 20,
                              run_unprepared=False, safepoint_budget_seconds=0.02)
    data = compile_guest("leaf_loop").read_bytes()
    record, _ = registry.add("leaf_loop", data, _sha(data), prepare_now=False)
    digest = record.sha256
    plain, manifest = registry.ensure_artifact(digest, True)
    assert "instrumented" not in manifest and manifest["safepoint_budget_seconds"] == 0.02
    registry._preparer.want = lambda *a: None          # (no background build: built below)
    registry.note_slow_function(digest, "preempt", "leaf")
    registry.note_slow_function(digest, "preempt", "leaf")
    assert registry.instrumented(digest, "preempt") == ("leaf",)
    assert registry.ensure_artifact(digest, True)[0] == plain      # not ready: the plain one
    variant, vmanifest = registry.ensure_artifact(digest, True, instrument=("leaf",))
    assert variant != plain and ".preempt.i" in variant.name and vmanifest["instrumented"] == ["leaf"]
    assert "leaf" not in {n for _, n in vmanifest["noted_functions"]}
    assert registry.ensure_artifact(digest, True)[0] == variant    # fresh: the newest
    assert registry.ensure_artifact(digest, True, instrument=())[0] == plain   # an old checkpoint
    registry.note_slow_function(digest, "preempt", "x" * 1000)    # not a name: ignored
    assert registry.instrumented(digest, "preempt") == ("leaf",)


def _sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()
