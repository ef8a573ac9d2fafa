"""Capture and restore of running guests (roost.daemon.runtime.capture), in-process on roost's WASI.

A guest is unwound at many points — at host calls, chosen or random, and through the safepoint
flag set from another thread while it is in a pure compute loop — and after each unwind it either
continues in the same instance or is restored (GuestImage + WasiHost.save()) into a fresh store,
instance and host. Its stdout, stderr, exit code and files must equal a plain run's.
"""
from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wasmtime

from roost.daemon.errors import LimitExceeded
from roost.daemon.modules.prepare import prepare
from roost.daemon.runtime.capture import Gate, GuestImage, Runner, define_safepoint
from roost.daemon.runtime.wasi import GuestExit, WasiHost, WasiState, initial_state
from tests.framework.guestbuild import compile_guest
from tests.framework.wasi_harness import make_vfs, run_roost, vfs_tree
from tests.runtime.test_prepare import case_layout, prepared, shared_case

ENGINE = wasmtime.Engine()
_MODULES: dict[Path, wasmtime.Module] = {}


class CallGate(Gate):
    """A gate that is always consulted and requests an unwind at chosen host-call numbers."""

    def __init__(self, at: set[int] | None = None, every: bool = False) -> None:
        super().__init__()
        self.at, self.every, self.count = at or set(), every, 0

    @property  # type: ignore[override]
    def armed(self) -> bool:
        return True

    @armed.setter
    def armed(self, value: bool) -> None:
        pass

    def enter(self, name: str) -> bool:
        if not self.rewinding:
            self.count += 1
            if self.every or self.count in self.at:
                self.requested = True
        return super().enter(name)


@dataclass
class Outcome:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    exit: int | str = 0
    unwinds: int = 0
    restores: int = 0
    host: WasiHost | None = None


def module(path: Path) -> wasmtime.Module:
    if path not in _MODULES:
        _MODULES[path] = wasmtime.Module.from_file(ENGINE, str(path))
    return _MODULES[path]


def instantiate(wasm: Path, manifest: dict, state: WasiState, out: Outcome, gate: Gate) -> Runner:
    host = WasiHost(state, lambda fd, data: (out.stdout if fd == 1 else out.stderr).extend(data))
    store = wasmtime.Store(ENGINE)
    linker = wasmtime.Linker(ENGINE)
    host.define(linker)
    define_safepoint(linker, gate)
    instance = linker.instantiate(store, module(wasm))
    host.bind(store, instance.exports(store)["memory"])
    out.host = host
    return Runner(store, instance, manifest, host, gate)


def run_with_restores(wasm: Path, manifest: dict, state: WasiState, restore_when,
                      gate_factory=Gate, ticker: float | None = None) -> Outcome:
    """Run to the end; after each unwind, restore into a fresh host, store and instance if
    `restore_when(unwind_number)`, else continue in the same instance. `ticker`: request an
    unwind from another thread every `ticker` seconds."""
    out = Outcome()
    saved: list[tuple[GuestImage, WasiState]] = []
    stop = threading.Event()
    current: list[Runner] = []

    def on_unwound(image: GuestImage) -> bool:
        out.unwinds += 1
        if restore_when(out.unwinds):
            saved.append((image, out.host.save()))
            return False
        return True

    def tick() -> None:
        while not stop.wait(ticker):
            current[-1].gate.request_unwind()

    runner = instantiate(wasm, manifest, state, out, gate_factory())
    current.append(runner)
    if ticker:
        threading.Thread(target=tick, daemon=True).start()
    try:
        while True:
            try:
                runner.run(on_unwound)
            except GuestExit as e:
                out.exit = e.code
                return out
            except wasmtime.Trap:
                out.exit = "trap"
                return out
            if not saved:
                return out
            image, host_state = saved.pop()
            gate = runner.gate if isinstance(runner.gate, CallGate) else gate_factory()
            runner = instantiate(wasm, manifest, host_state, out, gate)
            runner.restore(image)
            current.append(runner)
            out.restores += 1
    finally:
        stop.set()


def plain(src: Path, argv: list[str], stdin: bytes = b"", mounts=()) -> tuple:
    r = run_roost(src, argv, stdin=stdin, mounts=list(mounts))
    return r.exit, r.stdout, r.stderr, r.trees


def result(out: Outcome) -> tuple:
    names = [n for n, _ in out.host.vfs.preopens]
    return out.exit, bytes(out.stdout), bytes(out.stderr), {n: vfs_tree(out.host.vfs, n) for n in names}


SMALL = [("hello", []), ("args_env", ["x", "y z"]), ("stdin_echo", []), ("files", []),
         ("spin_print", ["30", "3000"]), ("exitcode", [])]
MOUNTS = [("/work", {"in.txt": b"hello\n", "sub": None})]


@pytest.mark.parametrize("preemptive", [False, True], ids=["cooperative", "preemptive"])
@pytest.mark.parametrize("name,args", SMALL, ids=[n for n, _ in SMALL])
def test_unwind_at_every_host_call_alternating_continue_and_restore(name, args, preemptive):
    src = compile_guest(name)
    wasm, manifest = prepared(src, preemptive)
    argv, stdin = [name, *args], b"line one\nline two\n"
    want = plain(src, argv, stdin, MOUNTS)
    state = initial_state(argv, [], stdin, make_vfs(MOUNTS))
    out = run_with_restores(wasm, manifest, state, lambda n: n % 4 == 2,
                            gate_factory=lambda: CallGate(every=True))
    assert result(out) == want
    assert out.unwinds >= 2 and out.restores >= 1


@pytest.mark.parametrize("seed", range(3))
def test_restore_at_random_host_calls(seed):
    rng = random.Random(seed)
    src = compile_guest("hostcall_loop")
    wasm, manifest = prepared(src, True)
    argv = ["hostcall_loop", "300"]
    want = plain(src, argv)
    at = set(rng.sample(range(1, 300), 8))
    out = run_with_restores(wasm, manifest, initial_state(argv, [], b"", make_vfs([])),
                            lambda n: rng.random() < 0.7, gate_factory=lambda: CallGate(at=at))
    assert result(out) == want
    assert out.unwinds == len(at)


def test_compute_loop_stops_at_safepoints_from_another_thread():
    src = compile_guest("compute_loop")
    wasm, manifest = prepared(src, True)
    argv = ["compute_loop", "150000000"]
    want = plain(src, argv)
    state = initial_state(argv, [], b"", make_vfs([]))
    out = run_with_restores(wasm, manifest, state, lambda n: n % 2 == 1, ticker=0.02)
    assert result(out) == want
    assert out.unwinds >= 5 and out.restores >= 3     # it makes no host call for ~0.5 s


def test_every_loop_shape_stops_at_safepoints_and_restores():
    """Polls sit on the loop's back-edges (see binaryen.insert_loop_polls): a call-free leaf
    loop with `continue`, nested loops, a switch inside a do-while; unwound from another thread
    at whatever iteration it is in, restored into fresh instances, the output is unchanged."""
    src = compile_guest("cp_loops")
    wasm, manifest = prepared(src, True)
    argv = ["cp_loops", "40"]
    want = plain(src, argv)
    state = initial_state(argv, [], b"", make_vfs([]))
    out = run_with_restores(wasm, manifest, state, lambda n: n % 3 != 0, ticker=0.01)
    assert result(out) == want
    assert out.unwinds >= 10 and out.restores >= 6


def test_request_before_a_host_call_unwinds_there_in_cooperative_mode():
    src = compile_guest("hostcall_loop")
    wasm, manifest = prepared(src, False)
    argv = ["hostcall_loop", "40000"]
    want = plain(src, argv)
    out = run_with_restores(wasm, manifest, initial_state(argv, [], b"", make_vfs([])),
                            lambda n: True, ticker=0.05)
    assert result(out) == want
    assert out.unwinds >= 1


def test_asyncify_stack_overflow_is_a_clear_error(tmp_path):
    pm = prepare(compile_guest("compute_loop").read_bytes(), True, asyncify_data_bytes=16)
    wasm = tmp_path / "tiny.wasm"
    wasm.write_bytes(pm.wasm)
    state = initial_state(["compute_loop", "100000000"], [], b"", make_vfs([]))
    with pytest.raises(LimitExceeded, match="asyncify stack area of 16 bytes overflowed"):
        run_with_restores(wasm, pm.manifest(), state, lambda n: False, ticker=0.01)


def test_image_is_plain_data_and_restores_twice():
    """The same image restored into two fresh instances gives the same output twice."""
    src = compile_guest("spin_print")
    wasm, manifest = prepared(src, True)
    argv = ["spin_print", "20", "100"]
    want = plain(src, argv)
    first = Outcome()
    runner = instantiate(wasm, manifest, initial_state(argv, [], b"", make_vfs([])), first,
                         CallGate(at={7}))
    kept: list = []
    runner.run(lambda image: kept.append((image, first.host.save())) or False)
    image, host_state = kept[0]
    assert isinstance(image.memory, bytes) and image.asyncify and image.globals
    for _ in range(2):
        again = Outcome(stdout=bytearray(first.stdout), stderr=bytearray(first.stderr))
        r = instantiate(wasm, manifest, host_state, again, Gate())
        r.restore(image)
        with pytest.raises(GuestExit) as e:
            r.run(lambda image: True)
        again.exit = e.value.code
        assert result(again) == want


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.guests
@pytest.mark.parametrize("name", ["boolector", "quickjs", "flite"])
def test_shared_guest_restored_at_random_host_calls(name, tmp_path):
    case = shared_case(name)
    wasm, manifest = prepared(case.wasm, True)
    argv, env, stdin, preopens = case_layout(case, tmp_path / "work")
    mounts = [(guest, {p.relative_to(host).as_posix(): (None if p.is_dir() else p.read_bytes())
                       for p in sorted(host.rglob("*"))}) for host, guest in preopens]
    state = initial_state(argv, list(env.items()), stdin, make_vfs(mounts))
    counter = CallGate()
    probe = run_with_restores(wasm, manifest, state, lambda n: False, gate_factory=lambda: counter)
    rng = random.Random(name)
    at = set(rng.sample(range(1, counter.count + 1), min(4, counter.count)))
    out = run_with_restores(wasm, manifest, state, lambda n: True,
                            gate_factory=lambda: CallGate(at=at))
    want = case.spec["expected"]
    for o in (probe, out):
        assert (o.exit, _sha(bytes(o.stdout)), _sha(bytes(o.stderr))) == \
            (want["exit"], want["stdout_sha256"], want["stderr_sha256"])
    assert out.restores == len(at)
    work_guest = next((g for h, g in case.spec.get("preopens", []) if h == "work"), None)
    for f, digest in want.get("files", {}).items():
        assert _sha(dict(vfs_tree(out.host.vfs, work_guest))[f][1]) == digest
