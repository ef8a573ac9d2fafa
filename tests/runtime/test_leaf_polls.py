"""Preemptive polls in leaf functions: a loop in a function that cannot reach an import only
notes a checkpoint request (no call, so asyncify leaves the function uninstrumented), and the
checkpoint is taken at the first real poll after the leaf returns; `prepare(instrument=...)`
makes such a function's polls real safepoints again (the adaptive part).

The guest (tests/guests/leaf_loop.c) calls a call-free `leaf` (a few hundred ms per call) from
`main`'s loop, which prints and so keeps real polls.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import cast

import pytest
import wasmtime

from roost.daemon.modules.prepare import PreparedModule, prepare
from roost.daemon.runtime.capture import Gate, GuestImage, Runner, define_safepoint, function_name
from roost.daemon.runtime.vfs import Vfs
from roost.daemon.runtime.wasi import GuestExit, WasiHost, initial_state
from tests.framework.guestbuild import compile_guest

ENGINE = wasmtime.Engine()
CALLS, ROUNDS = "4", "150000000"


@pytest.fixture(scope="module")
def leaf_only_notes() -> PreparedModule:
    return prepare(compile_guest("leaf_loop").read_bytes(), True)


@pytest.fixture(scope="module")
def leaf_instrumented() -> PreparedModule:
    return prepare(compile_guest("leaf_loop").read_bytes(), True, instrument={"leaf"})


@dataclass
class Stopped:
    output: bytes = b""
    code: int | None = None
    waits: list[float] = field(default_factory=list)       # request -> guest at its safepoint
    notes: list[str | None] = field(default_factory=list)  # who held each request
    leaf_seconds: float = 0.0                              # one call of `leaf`, measured


def run(pm: PreparedModule, request_after: float | None) -> Stopped:
    """Run leaf_loop; `request_after` s after `_start`, request one unwind from another thread
    and continue in the same instance after it."""
    result = Stopped()
    out = bytearray()
    host = WasiHost(initial_state(["leaf_loop", CALLS, ROUNDS], [], b"", Vfs()),
                    lambda fd, data: out.extend(data) if fd == 1 else None)
    store, linker = wasmtime.Store(ENGINE), wasmtime.Linker(ENGINE)
    host.define(linker)
    gate = Gate()
    define_safepoint(linker, gate)
    instance = linker.instantiate(store, wasmtime.Module(ENGINE, pm.wasm))
    host.bind(store, cast(wasmtime.Memory, instance.exports(store)["memory"]))
    manifest = pm.manifest()
    runner = Runner(store, instance, manifest, host, gate)

    def on_unwound(image: GuestImage) -> bool:
        result.waits.append(gate.stopped_at - gate.unwind_asked_at)
        note = runner.control.take_note()
        result.notes.append(None if note is None else function_name(manifest, note))
        return True

    if request_after is not None:
        timer = threading.Timer(request_after, gate.request_unwind)
        timer.start()
    began = time.monotonic()
    try:
        runner.run(on_unwound)
    except GuestExit as e:
        result.code = e.code
    result.leaf_seconds = (time.monotonic() - began) / int(CALLS)
    result.output = bytes(out)
    return result


def test_a_leaf_loop_stays_uninstrumented_and_its_request_is_served_when_it_returns(
        leaf_only_notes):
    assert "leaf" in {name for _, name in leaf_only_notes.noted_functions}
    assert leaf_only_notes.note_address >= 0 and leaf_only_notes.loops_noted > 0
    plain = run(leaf_only_notes, None)
    # The request comes a quarter into the first call of `leaf`: it waits for the call to end.
    got = run(leaf_only_notes, plain.leaf_seconds / 4)
    assert got.output == plain.output and got.output.startswith(b"start") and b"done" in got.output
    assert got.code == plain.code
    assert got.notes == ["leaf"]
    # (loose: a loaded machine stretches one call of `leaf` unevenly; an instrumented leaf
    # stops within a millisecond, below)
    assert 0.02 < got.waits[0] < plain.leaf_seconds * 3


def test_instrument_makes_the_leaf_polls_real_safepoints(leaf_only_notes, leaf_instrumented):
    assert "leaf" not in {name for _, name in leaf_instrumented.noted_functions}
    assert leaf_instrumented.loops_noted < leaf_only_notes.loops_noted
    plain = run(leaf_instrumented, None)
    got = run(leaf_instrumented, plain.leaf_seconds / 4)
    assert got.output == plain.output and got.code == plain.code
    assert got.notes == [None]                     # stopped inside `leaf`, no note
    assert got.waits[0] < min(0.05, plain.leaf_seconds / 4)


def test_the_note_names_functions_without_a_name_section_by_index():
    assert function_name({"noted_functions": [[7, "leaf"]]}, 7) == "leaf"
    assert function_name({"noted_functions": [[7, "leaf"]]}, 8) == "func[8]"
