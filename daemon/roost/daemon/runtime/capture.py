"""Capture and restore a running guest of a prepared module (see `prepare` for the layout).

A checkpoint is taken with the guest's stack unwound by asyncify:

1. someone calls `Gate.request_unwind()` (any thread): it arms the gate and, in preemptive
   mode, sets the safepoint flag byte in the asyncify memory;
2. the guest reaches a safepoint: its next WASI call (the durable callback asks `gate.enter`)
   or a loop poll (`roost.safepoint`). The gate calls `asyncify_start_unwind(DATA_PTR)` and the
   host call returns at once without running; the guest unwinds into the asyncify stack area;
3. `_start` returns in state "unwinding": `Runner.run` stops the unwind and hands a `GuestImage`
   (memory 0, mutable globals, the used asyncify stack) to `on_unwound`;
4. to continue (same instance or a fresh one after `Runner.restore`), `asyncify_start_rewind`
   and `_start` again: the guest rewinds to the interrupted call, the gate stops the rewind
   there, and that call now runs for real: exactly once.

The interrupted host call is re-executed after the rewind, so host state must be saved at the
unwind (nothing of that call has happened yet).
"""
from __future__ import annotations

import ctypes
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, cast

import wasmtime

from roost.daemon.errors import LimitExceeded

_UNWINDING, _REWINDING = 1, 2
_HEADER = struct.Struct("<II")            # asyncify data: current pointer, end pointer
_NO_NOTE = 0xFFFFFFFF                     # the note's "no function" (see `prepare`'s layout)


@dataclass(frozen=True)
class GuestImage:
    """The guest side of a checkpoint, as plain data."""
    memory: bytes                                 # linear memory 0, all of it
    globals: tuple[tuple[str, int | float], ...]  # (export name, value) of every mutable global
    asyncify: bytes                               # the used asyncify stack, from DATA_PTR + 8

    @property
    def memory_pages(self) -> int:
        return len(self.memory) // 65536


class Gate:
    """Decides, at each host call and safepoint poll, whether the guest unwinds now.

    `armed` is the cheap test the durable callbacks make; it is True only while an unwind is
    requested or a rewind is in progress.
    """

    def __init__(self) -> None:
        self.armed = False
        self.requested = False
        self.rewinding = False
        self.unwinding = False
        self.stopped_at = 0.0
        self.resumed_at = 0.0
        self.resumed = threading.Event()    # set when a rewind has brought the guest back
        self._hold = 0.0                    # throttling: sleep this long at the next safepoint
        self._control: _Control | None = None
        self.unwind_asked_at = 0.0          # when the latest unwind was asked (after any pre-copy)
        # Wakes a guest blocked in a host call (poll_oneoff's wait): it is a safepoint too.
        self.wake: threading.Event = threading.Event()

    def bind(self, control: _Control) -> None:
        self._control = control

    def request_unwind(self) -> None:
        """Ask the guest to stop at its next safepoint (thread-safe)."""
        self.unwind_asked_at = time.monotonic()
        self.requested = True          # before the flag: a poll that sees the flag sees this
        self.armed = True
        if self._control is not None:
            self._control.set_flag(1)
        self.wake.set()                # after `requested`: a waiter that wakes sees it

    def hold(self, seconds: float) -> None:
        """Make the guest sleep `seconds` at its next safepoint (throttling, thread-safe): a
        guest that dirties memory faster than a migration can send it is slowed down."""
        self._hold = seconds
        self.armed = True
        if self._control is not None:
            self._control.set_flag(1)

    def _held(self) -> None:
        seconds, self._hold = self._hold, 0.0
        self.armed = self.requested or self.rewinding
        time.sleep(seconds)

    def unwind_now(self) -> None:
        """From inside a host call on the guest's thread (durable sleep): unwind as the call
        returns; the call runs again after the rewind."""
        self._start_unwind()

    def enter(self, name: str) -> bool:
        """Called by a durable host callback when armed: True = unwind now, skip the call."""
        if self.rewinding:
            self._finish_rewind()
            return False
        if self._hold:
            self._held()
        if self.requested:
            self._start_unwind()
            return True
        return False

    def safepoint(self) -> None:
        """The `roost.safepoint` import: called by a loop poll when the flag byte is set."""
        if self.rewinding:
            self._finish_rewind()
            return
        if self._hold:
            self._held()
        if self.requested:
            self._start_unwind()
        elif self._control is not None:
            self._control.set_flag(0)   # a stale flag from an already served request

    def _start_unwind(self) -> None:
        assert self._control is not None
        self.stopped_at = time.monotonic()      # the guest reached its safepoint
        self.resumed.clear()
        self.requested = False
        self.armed = False
        self._control.set_flag(0)
        self.unwinding = True
        self._control.start_unwind()

    def _finish_rewind(self) -> None:
        assert self._control is not None
        self._control.stop_rewind()
        self.rewinding = False
        self.armed = self.requested or bool(self._hold)
        self.resumed_at = time.monotonic()      # the interrupted call now runs for real
        self.resumed.set()

    def rewind_started(self) -> None:
        self.rewinding = True
        self.armed = True


def define_safepoint(linker: wasmtime.Linker, gate: Gate) -> None:
    """Define `roost.safepoint` (imported by preemptive prepared modules) in `linker`."""
    linker.define_func("roost", "safepoint", wasmtime.FuncType([], []), gate.safepoint)


class _DirectCall:
    """A call of a wasm export with fixed i32 arguments straight through wasmtime's C API.

    wasmtime-py's `Func.__call__` looks up the function type and converts every argument and
    result in Python: ~10 us a call when warm, and ~300 us for the first call after the guest
    has been idle, which is when a checkpoint's unwind and rewind make theirs (measured; the
    direct call is 2-3 us warm, ~80 us cold). Falls back to the public call where the wasmtime
    package lacks the internals this uses.
    """

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, args: tuple[int, ...],
                 results: int) -> None:
        self._public = lambda: func(store, *args)
        self._results_n = results
        self._ffi: Any       # wasmtime's private ctypes module, None where it is missing
        try:
            from wasmtime import _ffi as ffi
            from wasmtime._func import maybe_raise_last_exn
            self._ffi, self._reraise = ffi, maybe_raise_last_exn
            self._context = store._context()
            self._func = ctypes.byref(func._func)
            self._params = (ffi.wasmtime_val_t * max(1, len(args)))()
            for i, value in enumerate(args):
                self._params[i].kind = ffi.WASMTIME_I32.value   # type: ignore[assignment]  # a c_uint8 field
                self._params[i].of.i32 = value
            self._args_n = len(args)
            self._results = (ffi.wasmtime_val_t * max(1, results))()
            self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
            self._trap_ref = ctypes.byref(self._trap)
        except (ImportError, AttributeError):
            self._ffi = None

    def __call__(self) -> int | None:
        if self._ffi is None:
            return self._public()
        error = self._ffi.wasmtime_func_call(self._context, self._func, self._params, self._args_n,
                                             self._results, self._results_n, self._trap_ref)
        if error or self._trap:
            self._raise(error)
        return self._results[0].of.i32 if self._results_n else None

    def _raise(self, error) -> None:
        """As wasmtime-py's own call does: an exception a host function raised (GuestExit,
        say) wins over the trap wasmtime made of it."""
        if error:
            failure: Exception = wasmtime.WasmtimeError._from_ptr(error)
        else:
            trap, self._trap = self._trap, ctypes.POINTER(self._ffi.wasm_trap_t)()
            self._trap_ref = ctypes.byref(self._trap)
            failure = wasmtime.Trap._from_ptr(trap)
        self._reraise()
        raise failure


class _Control:
    """The asyncify exports and the asyncify memory of one instance."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, manifest: dict) -> None:
        ex = instance.exports(store)
        self.store = store
        self.funcs = {n: cast(wasmtime.Func, ex[f"asyncify_{n}"]) for n in
                      ("start_unwind", "stop_unwind", "start_rewind", "stop_rewind", "get_state")}
        self.memory = cast(wasmtime.Memory, ex[manifest.get("asyncify_memory_export",
                                                            "roost_asyncify_memory")])
        self.data_ptr = int(manifest["data_ptr"])
        self.data_start = self.data_ptr + _HEADER.size
        self.data_end = self.data_start + int(manifest["asyncify_data_bytes"])
        self.flag_address = int(manifest["flag_address"])
        self.note_address = int(manifest.get("note_address", -1))   # -1: no note-only polls
        # The asyncify memory never grows (min = max), so its base address is stable and the
        # flag byte can be written from another thread without touching the store.
        self.base = ctypes.addressof(self.memory.data_ptr(store).contents)
        self._clear_note()
        f = self.funcs
        self._start_unwind = _DirectCall(store, f["start_unwind"], (self.data_ptr,), 0)
        self._stop_unwind = _DirectCall(store, f["stop_unwind"], (), 0)
        self._start_rewind = _DirectCall(store, f["start_rewind"], (self.data_ptr,), 0)
        self._stop_rewind = _DirectCall(store, f["stop_rewind"], (), 0)
        self._get_state = _DirectCall(store, f["get_state"], (), 1)

    def set_flag(self, value: int) -> None:
        """Arm (1) or disarm (0) the loop polls. Arming clears the note first, so that a note
        read after this request's unwind names a function that held this request."""
        if self.flag_address >= 0:
            if value:
                self._clear_note()
            ctypes.c_uint8.from_address(self.base + self.flag_address).value = value

    def _clear_note(self) -> None:
        if self.note_address >= 0:
            ctypes.c_uint32.from_address(self.base + self.note_address).value = _NO_NOTE

    def take_note(self) -> int | None:
        """The function index an uninstrumented function's loop poll noted since the flag was
        last armed (the last one to see it: the one that held the request), or None; clears it.

        Read it right after an unwind: if the request waited longer than the budget, the
        function it names is one to instrument at the module's next preparation
        (`function_name` gives its name for `prepare(instrument=...)`)."""
        if self.note_address < 0:
            return None
        index = ctypes.c_uint32.from_address(self.base + self.note_address).value
        self._clear_note()
        return None if index == _NO_NOTE else index

    def header(self) -> tuple[int, int]:
        return _HEADER.unpack(ctypes.string_at(self.base + self.data_ptr, _HEADER.size))

    def set_header(self, current: int) -> None:
        ctypes.memmove(self.base + self.data_ptr, _HEADER.pack(current, self.data_end), _HEADER.size)

    def start_unwind(self) -> None:
        self.set_header(self.data_start)
        self._start_unwind()

    def stop_unwind(self) -> None:
        self._stop_unwind()

    def start_rewind(self) -> None:
        self._start_rewind()

    def stop_rewind(self) -> None:
        self._stop_rewind()

    def state(self) -> int:
        return int(cast(int, self._get_state()))      # one result: never None


def function_name(manifest: dict, index: int) -> str:
    """The name of function `index` of a prepared module (as `prepare(instrument=...)` takes
    it): from the manifest's table of uninstrumented functions, which holds every function a
    note can name, else `func[N]`."""
    for noted, name in manifest.get("noted_functions", ()):
        if int(noted) == index:
            return str(name)
    return f"func[{index}]"


class Runner:
    """Runs a prepared guest's `_start` with checkpoint support.

    The caller builds the store, the linker (with `define_safepoint(linker, gate)`) and the
    instance, binds the WASI host, then: `Runner(store, instance, manifest, host)`, optionally
    `restore(image)` (fresh instance only), then `run(on_unwound)`.
    """

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, manifest: dict,
                 host: object, gate: Gate | None = None) -> None:
        self.store = store
        self.manifest = manifest
        ex = instance.exports(store)
        self.memory = cast(wasmtime.Memory, ex["memory"])
        self.entry = cast(wasmtime.Func, ex["_start"])
        self._enter = _DirectCall(store, self.entry, (), 0)   # the rewind's call is in the pause
        self.globals = {name: cast(wasmtime.Global, ex[name]) for name, _ in manifest["globals"]}
        self.control = _Control(store, instance, manifest)
        self.gate = gate if gate is not None else Gate()
        self.gate.bind(self.control)
        setattr(host, "gate", self.gate)     # the durable callbacks read host.gate per call
        self._rewind_pending = False
        # False: `image()` leaves memory out (the worker copies only the dirty pages itself).
        self.copy_memory = True

    def run(self, on_unwound: Callable[[GuestImage], bool]) -> None:
        """Run `_start` to the end; at every completed unwind, `on_unwound(image)`: True to
        continue in this instance, False to return (the guest stays unwound)."""
        while True:
            if self._rewind_pending:
                self._rewind_pending = False
                self.gate.rewind_started()
                self.control.start_rewind()
            try:
                self._enter()
            except wasmtime.Trap as e:
                self._check_overflow(e)
                raise
            if not self.gate.unwinding:
                return
            image = self._finish_unwind()
            if not on_unwound(image):
                return
            self._rewind_pending = True

    def _finish_unwind(self) -> GuestImage:
        if self.control.state() != _UNWINDING:
            raise RuntimeError("_start returned during an unwind without unwinding")
        current, end = self.control.header()
        if current > end:      # asyncify writes on and checks only here (stop_unwind traps)
            self._check_overflow(None)
        self.control.stop_unwind()
        self.gate.unwinding = False
        return self.image()

    def _check_overflow(self, trap: Exception | None) -> None:
        """An unwind that overran the stack area: past the end of the asyncify memory it traps
        (out of bounds) mid-unwind, within it `current > end` after the unwind. The guest's
        call stack is gone either way; say why instead of storing a corrupt checkpoint."""
        if self.gate.unwinding:
            self.gate.unwinding = False
            size = self.manifest["asyncify_data_bytes"]
            raise LimitExceeded(f"checkpoint: asyncify stack area of {size} bytes overflowed "
                                "while unwinding the guest; raise the limit") from trap

    def image(self) -> GuestImage:
        """The guest's state, valid right after an unwind completed."""
        size = self.memory.data_len(self.store)
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        current, _ = self.control.header()
        stack = ctypes.string_at(self.control.base + self.control.data_start,
                                 current - self.control.data_start)
        values = tuple((name, g.value(self.store)) for name, g in self.globals.items())
        memory = ctypes.string_at(base, size) if self.copy_memory else b""
        return GuestImage(memory, values, stack)

    def restore(self, image: GuestImage, memory_bytes: int | None = None) -> None:
        """Load `image` into this (fresh, not yet run) instance; `run` then rewinds into it.
        With `memory_bytes`, memory is only grown to that size and `image.memory` is ignored:
        the caller writes the pages in itself (an incremental checkpoint's page by page)."""
        pages = image.memory_pages if memory_bytes is None else memory_bytes // 65536
        have = self.memory.data_len(self.store) // 65536
        if pages > have:
            self.memory.grow(self.store, pages - have)
        if memory_bytes is None:
            base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
            ctypes.memmove(base, image.memory, len(image.memory))
        for name, value in image.globals:
            self.globals[name].set_value(self.store, value)
        if len(image.asyncify) > self.control.data_end - self.control.data_start:
            raise LimitExceeded(f"restore: the saved asyncify stack ({len(image.asyncify)} bytes)"
                                " does not fit this module's asyncify stack area")
        ctypes.memmove(self.control.base + self.control.data_start, image.asyncify,
                       len(image.asyncify))
        self.control.set_header(self.control.data_start + len(image.asyncify))
        self._rewind_pending = True
