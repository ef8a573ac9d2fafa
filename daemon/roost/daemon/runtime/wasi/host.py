"""WasiHost: roost's WASI preview1 for one execution, and its saveable state.

All host-side state lives in plain components that save to frozen dataclasses: argv and env,
stdin (bytes + position), clocks, the fd table and the VFS. `WasiHost.save()` captures them as
one `WasiState`; to restore, build `WasiHost(state, output)` (or `WasiHost.restore`) from a
saved state. The live VFS is `host.vfs` (the worker exports it at exit for `roost cp`).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable

import wasmtime

from roost.daemon.checkpoint.journal import Replay
from roost.daemon.http.settings import HttpSettings
from roost.daemon.runtime.httpdev import HttpDevice, HttpDevState
from roost.daemon.runtime.outbound import Outbound, OutboundState
from roost.daemon.runtime.vfs import Vfs, VfsLimits, VfsState

# Importing the interface modules registers their host calls in durable.REGISTRY.
from roost.daemon.runtime.wasi import (  # noqa: F401
    args,
    clocks,
    fds,
    files,
    http,
    paths,
    poll,
    proc,
    random,
    sock,
)
from roost.daemon.runtime.wasi.abi import PREOPEN_RIGHTS_BASE, PREOPEN_RIGHTS_INHERITING, Mem
from roost.daemon.runtime.wasi.clocks import Clocks, ClockState, fs_now, fs_sync
from roost.daemon.runtime.wasi.durable import MODULE, REGISTRY, ROOST_MODULE, Durable, NoGate
from roost.daemon.runtime.wasi.fds import FdEntry, FdTable, FdTableState
from roost.daemon.runtime.wasi.stdio import Stdin, StdinState

PROVIDED_FUNCTIONS: frozenset[str] = frozenset(n for n, c in REGISTRY.items() if c.module == MODULE)
# Every import module roost provides and its functions (the upload check, `prepare`'s asyncify
# import list); `roost.safepoint` is the prepared modules' own, not a guest's.
PROVIDED: dict[str, frozenset[str]] = {
    module: frozenset(n for n, c in REGISTRY.items() if c.module == module)
    for module in (MODULE, ROOST_MODULE)}


@dataclass(frozen=True)
class WasiState:
    """Everything WASI keeps for an execution, as plain data."""
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    stdin: StdinState
    clocks: ClockState
    fds: FdTableState
    vfs: VfsState
    poll_started_ns: int = 0    # a poll_oneoff suspended by a durable sleep: its start time
    http: OutboundState = OutboundState()   # HTTP requests numbered, responses held unread
    httpdev: HttpDevState | None = None     # the /dev/http folder (None: fresh, not decided)


def initial_state(argv: list[str], env: list[tuple[str, str]], stdin: bytes,
                  vfs: Vfs) -> WasiState:
    """The state of a fresh execution: stdio on 0-2, the VFS preopens from fd 3 on."""
    return WasiState(tuple(argv), tuple((k, v) for k, v in env), StdinState(stdin, 0),
                     ClockState(0), FdTable.initial(vfs.preopens).save(), vfs.save())


class WasiHost:
    """The WASI host functions of one execution, over its saved or initial `WasiState`."""

    def __init__(self, state: WasiState, output: Callable[[int, bytes], None],
                 journal: Callable[[bytes], None] | None = None,
                 replay: Replay | None = None, limits: VfsLimits = VfsLimits(),
                 http_settings: HttpSettings = HttpSettings()) -> None:
        """`journal` receives every world-reading call's encoded record (`journal.encode`) before
        its result reaches the guest; `replay` (on recovery) answers those calls until it runs
        out. `limits` bound the execution's VFS and `http_settings` its requests (they are the
        daemon's, not saved state)."""
        self.limits = limits
        self.journal = journal or (lambda record: None)
        self.replay = replay
        self.http = Outbound(http_settings, lambda: self.clocks, lambda: self.replay,
                             lambda record: self.journal(record))
        self.http.hooks.before_send = lambda: fs_sync(self)
        self.load(state)
        if state.httpdev is None:       # a fresh execution: the folder exists iff HTTP is allowed
            self.httpdev = HttpDevice.mount(self.vfs) if http_settings.enabled else HttpDevice()
            if self.httpdev.root:
                self.fds.push(FdEntry('dir', self.httpdev.root, self.vfs.preopens[-1][0],
                                      PREOPEN_RIGHTS_BASE, PREOPEN_RIGHTS_INHERITING, read=True))
        self.output = output
        self.calls: collections.Counter[str] = collections.Counter()
        self.durable = Durable(self)
        self.gate = NoGate()          # capture.Gate when the module is prepared for checkpoints
        # Durable sleep (set by the worker when the guest can be checkpointed): a poll that would
        # sleep longer than durable_sleep_ns calls suspend_sleep(deadline) instead.
        self.suspend_sleep: Callable[[int], None] | None = None
        self.durable_sleep_ns = 0
        self.waiting_since_ns = 0     # in poll_oneoff's wait: the poll's start (0: not waiting)
        self.mem: Callable[[], Mem] = self._unbound

    def load(self, state: WasiState) -> None:
        """Take `state` as this host's (a standby worker adopting the checkpoint it runs)."""
        self.argv = list(state.argv)
        self.env = list(state.env)
        self.stdin = Stdin.restore(state.stdin)
        self.clocks = Clocks.restore(state.clocks)
        self.fds = FdTable.restore(state.fds)
        self.vfs = Vfs.restore(state.vfs, self.limits)
        self.vfs.clock = lambda: fs_now(self)     # journaled stamps: identical on replay
        self.poll_started_ns = state.poll_started_ns
        self.http.load(state.http)
        self.httpdev = HttpDevice(state.httpdev or HttpDevState())

    @classmethod
    def restore(cls, state: WasiState, output: Callable[[int, bytes], None]) -> WasiHost:
        """Same as the constructor; named for symmetry with `save`."""
        return cls(state, output)

    def define(self, linker: wasmtime.Linker) -> None:
        """Define every function roost provides (WASI's and its own `roost` ones) in `linker`."""
        self.durable.define(linker)

    def bind(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        """Attach the instance's store and memory (after instantiation, before running)."""
        self.mem = Mem.accessor(memory, store)

    @staticmethod
    def _unbound() -> Mem:
        """`mem()` before `bind()`: a host call cannot reach guest memory yet."""
        raise RuntimeError("WasiHost.bind() was not called before the guest ran")

    def save(self) -> WasiState:
        """A frozen snapshot of all WASI state."""
        return WasiState(tuple(self.argv), tuple(self.env), self.stdin.save(),
                         self.clocks.save(), self.fds.save(), self.vfs.save(), self.poll_started_ns,
                         self.http.save(), self.httpdev.save(self.vfs.inodes))
