"""The durable combinator: the one seam every WASI host call goes through.

Each host function is declared with `@hostcall(kind, params)`, which registers it in
`REGISTRY` with its classification:

- `Kind.READS_WORLD`: the result depends on the outside world (clocks, random, poll). These
  results are journaled before they reach the guest and replayed on recovery, in
  `Durable.reads_world` (see `roost.daemon.checkpoint.journal`).
- `Kind.CHANGES_WORLD`: the call has an effect outside the execution (stdout/stderr).
- `Kind.LOCAL`: the call only reads or changes state that is saved with the execution
  (the VFS, the fd table, argv, env).

A kind may also be a function of the call's arguments (fd_write changes the world on
stdout/stderr and is LOCAL on a file). `Durable.callback` builds the function wasmtime calls: it counts the call in
`host.calls`, masks the arguments to their unsigned wasm types, runs the implementation and
turns a raised `FsError` into the errno the guest sees.
"""
from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, cast

import wasmtime
from wasmtime import _ffi, _func

from roost.daemon.checkpoint import journal
from roost.daemon.runtime.wasi.abi import FsError, Mem

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost

MODULE = 'wasi_snapshot_preview1'
ROOST_MODULE = 'roost'      # roost's own imports (durable HTTP: `wasi.http`)


class Kind(enum.Enum):
    """How a host call relates to the world outside the execution."""
    READS_WORLD = 'reads_world'
    CHANGES_WORLD = 'changes_world'
    LOCAL = 'local'


KindSpec = Kind | Callable[..., Kind]


@dataclass(frozen=True)
class HostCall:
    """One registered WASI function: name, classification, wasm signature, implementation."""
    name: str
    kind: KindSpec
    params: str      # one letter per parameter: 'i' = i32, 'I' = i64
    results: str     # '' (proc_exit) or 'i' (errno)
    impl: Callable[..., Any]
    module: str = MODULE   # the import module: WASI's, or roost's own (`ROOST_MODULE`)


REGISTRY: dict[str, HostCall] = {}

_VALTYPE = {'i': wasmtime.ValType.i32(), 'I': wasmtime.ValType.i64()}
_MASK = {'i': 0xFFFF_FFFF, 'I': 0xFFFF_FFFF_FFFF_FFFF}


def hostcall(kind: KindSpec, params: str, results: str = 'i', module: str = MODULE) -> Callable:
    """Register the decorated `impl(host, *args) -> errno` under its function name (names
    are unique across modules)."""
    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[impl.__name__] = HostCall(impl.__name__, kind, params, results, impl, module)
        return impl
    return register


def functype(call: HostCall) -> wasmtime.FuncType:
    return wasmtime.FuncType([_VALTYPE[p] for p in call.params],
                             [_VALTYPE[r] for r in call.results])


class NoGate:
    """The gate of a host without checkpoints: never armed (see `roost.daemon.runtime.capture`)."""
    armed = False
    unwinding = False

    @staticmethod
    def enter(name: str) -> bool:
        return False


class RecordingMem(Mem):
    """A guest-memory view that also notes every write (for the journal)."""
    __slots__ = ('writes',)

    def __init__(self, view: Mem, writes: list[tuple[int, bytes]]) -> None:
        self.base, self.size, self.writes = view.base, view.size, writes

    def write(self, ptr: int, data: bytes) -> None:
        super().write(ptr, data)
        self.writes.append((ptr, bytes(data)))

    def put_u32(self, ptr: int, v: int) -> None:
        super().put_u32(ptr, v)
        self.writes.append((ptr, struct.pack('<I', v)))

    def put_u64(self, ptr: int, v: int) -> None:
        super().put_u64(ptr, v)
        self.writes.append((ptr, struct.pack('<Q', v)))


class _Recorder:
    """`host.mem` while a world-reading call runs: views that note what the call writes."""
    __slots__ = ('plain', 'writes')

    def __init__(self, plain: Callable[[], Mem], writes: list[tuple[int, bytes]]) -> None:
        self.plain, self.writes = plain, writes

    def __call__(self) -> RecordingMem:
        return RecordingMem(self.plain(), self.writes)


class Durable:
    """Runs host calls by kind: journals the world-reading ones (or replays them)."""

    def __init__(self, host: WasiHost) -> None:
        self.host = host

    def callback(self, call: HostCall) -> Callable[..., Any]:
        """The function handed to wasmtime for `call`.

        Generated per signature so the hot path is one plain Python call: count, mask the
        arguments to their unsigned wasm types, classify, run, map FsError to its errno.
        """
        args = ', '.join(f'a{i}' for i in range(len(call.params)))
        masked = ''.join(f', a{i} & {_MASK[p]:#x}' for i, p in enumerate(call.params))
        if isinstance(call.kind, Kind) and call.kind is not Kind.READS_WORLD:
            body = f'return impl(host{masked})'
        elif call.kind is Kind.READS_WORLD:
            body = f'return reads_world(name, impl, (host{masked},))'
        else:
            body = (f'm = (host{masked},)\n'
                    f'        if kind(*m) is READS:\n'
                    f'            return reads_world(name, impl, m)\n'
                    f'        return impl(*m)')
        dummy = 'None' if not call.results else '0'
        src = (f'def run({args}):\n'
               f'    g = host.gate\n'
               f'    if g.armed and g.enter(name):\n'
               f'        return {dummy}\n'
               f'    counts[name] += 1\n'
               f'    try:\n'
               f'        {body}\n'
               f'    except FsError as e:\n'
               f'        return int(e.errno)\n')
        env = {'counts': self.host.calls, 'name': call.name, 'impl': call.impl,
               'host': self.host, 'reads_world': self.reads_world, 'kind': call.kind,
               'READS': Kind.READS_WORLD, 'FsError': FsError}
        exec(compile(src, f'<hostcall {call.name}>', 'exec'), env)
        return cast(Callable[..., Any], env['run'])

    def reads_world(self, name: str, impl: Callable[..., Any], args: tuple) -> Any:
        """Record (or, on recovery, replay) a world-reading call; see `roost.daemon.checkpoint.journal`.

        `args` starts with the host. Live: run the call with a memory view that notes what it
        writes, then hand the encoded record to `host.journal` before the result reaches the
        guest.
        Replay: write the recorded bytes and return the recorded result.
        """
        host = self.host
        replay = host.replay
        if replay is not None and replay.active:
            result, mono = replay.apply(name, host.mem)
            host.clocks.advance_to(mono)
            return result
        plain = host.mem
        writes: list[tuple[int, bytes]] = []
        host.mem = _Recorder(plain, writes)
        try:
            result = impl(*args)
        except FsError as e:          # an error answer is a result too: replay must give it
            result = int(e.errno)
        finally:
            host.mem = plain
        if host.gate.unwinding:      # the call suspended the guest (durable sleep): it runs
            return result            # again after the restore, and is journaled then
        host.journal(journal.encode_fields(name, int(result or 0), host.clocks.monotonic_ns(), writes))
        return result

    def define(self, linker: wasmtime.Linker) -> None:
        """Define every registered function in `linker` under its module."""
        for call in REGISTRY.values():
            _define_raw(linker, call, self.callback(call))


# ---- the boundary with wasmtime ---------------------------------------------------------------
# wasmtime-py's generic trampoline boxes every argument and result in `Val` objects, which costs
# more than the host call itself. roost defines its functions with its own C callback that reads
# the i32/i64 arguments straight out of the `wasmtime_val_t` array and writes the i32 result.
# A Python exception (GuestExit, a bug) is handed to wasmtime-py the way its own trampoline does,
# so `Func.__call__` re-raises it in the caller.
_VAL = struct.Struct('<B7xq16x')                      # wasmtime_val_t: kind, union (i32 | i64)
_RAW_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                 ctypes.c_size_t)
_RESULT_I32 = struct.Struct('<B7xi20x')
assert _VAL.size == ctypes.sizeof(_ffi.wasmtime_val_t) == _RESULT_I32.size
_KEEP: list[Any] = []                                  # C callbacks must outlive every linker


_VIEWS: dict[int, memoryview] = {}                    # address -> a view of wasmtime's val array
_MAX_VIEWS = 256


def _view(addr: int, size: int) -> memoryview:
    """A writable view of `size` bytes at `addr`. wasmtime passes parameters and results in an
    array on its stack, at the same address call after call from the same depth: a view made
    once (a ctypes object, ~1 µs) then serves every call, where `string_at` and `memmove` cost
    a foreign call each (~0.4 µs). Keyed by (address, size); the table is bounded."""
    key = addr * 8 + size // _VAL.size
    view = _VIEWS.get(key)
    if view is None:
        if len(_VIEWS) >= _MAX_VIEWS:
            _VIEWS.clear()
        view = _VIEWS[key] = memoryview((ctypes.c_char * size).from_address(addr)).cast('B')
    return view


def _raw_callback(call: HostCall, run: Callable[..., Any]) -> Any:
    n = len(call.params)
    unpack = struct.Struct('<' + '8xq16x' * n).unpack_from
    size = _VAL.size
    views, view = _VIEWS, _view
    kind_i32 = _ffi.WASMTIME_I32.value
    results_i32 = [_RESULT_I32.pack(kind_i32, r) for r in range(0, 128)]   # errnos: prebuilt
    pack = _RESULT_I32.pack

    def tramp(env, caller, params, nparams, results, nresults):  # type: ignore[no-untyped-def]
        try:
            if n:
                v = views.get(params * 8 + n)
                r = run(*unpack(v if v is not None else view(params, size * n)))
            else:
                r = run()
            if nresults:
                out = views.get(results * 8 + 1)
                if out is None:
                    out = view(results, size)
                out[:size] = results_i32[r] if 0 <= r < 128 else pack(kind_i32, r)
            return 0
        except BaseException as e:  # noqa: BLE001 - handed to wasmtime-py, re-raised there
            _func.LAST_EXCEPTION = e
            return ctypes.cast(wasmtime.Trap("python exception")._consume(),
                               ctypes.c_void_p).value
    return _RAW_CALLBACK(tramp)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _no_finalizer(env: int) -> None:
    pass


def _define_raw(linker: wasmtime.Linker, call: HostCall, run: Callable[..., Any]) -> None:
    cb = _raw_callback(call, run)
    _KEEP.append(cb)
    module, name = call.module.encode(), call.name.encode()
    ty = functype(call)   # must stay alive across the C call
    err = _ffi.wasmtime_linker_define_func(
        linker.ptr(), ctypes.create_string_buffer(module), len(module),
        ctypes.create_string_buffer(name), len(name), ty.ptr(),
        ctypes.cast(cb, _ffi.wasmtime_func_callback_t), None, _no_finalizer)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
