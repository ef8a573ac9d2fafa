"""Clocks. The guest's monotonic clock continues across restore and migration.

Guest monotonic time = the value saved at the last checkpoint + host time elapsed since this
process restored it, so it never goes backwards even on another host. Realtime is the host's.
wasmtime answers EBADF for the CPU-time clocks; so does roost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import abi
from .abi import Errno
from .durable import Kind, hostcall

if TYPE_CHECKING:
    from .host import WasiHost

RESOLUTION_NS = 1


@dataclass(frozen=True)
class ClockState:
    """Saved form of `Clocks`: the guest's monotonic time at save, and the host's realtime then
    (0 for a fresh execution)."""
    monotonic_ns: int = 0
    realtime_ns: int = 0


class Clocks:
    """Guest clocks over the host's.

    Restored from a checkpoint, the guest's monotonic clock resumes at its saved value plus the
    wall-clock time that passed since the save: like a process that was sleeping, never going
    backwards, and a sleep spanning a suspension ends at its original deadline.
    """

    def __init__(self, state: ClockState) -> None:
        away = max(0, time.time_ns() - state.realtime_ns) if state.realtime_ns else 0
        self._base_ns = state.monotonic_ns + away
        self._host0_ns = time.monotonic_ns()

    def monotonic_ns(self) -> int:
        return self._base_ns + (time.monotonic_ns() - self._host0_ns)

    def advance_to(self, guest_ns: int) -> None:
        """Replay: the guest has seen `guest_ns`, so its clock must never read less from now on."""
        lag = guest_ns - self.monotonic_ns()
        if lag > 0:
            self._base_ns += lag

    @staticmethod
    def realtime_ns() -> int:
        return time.time_ns()

    def now(self, clock_id: int) -> int:
        """Current time of a WASI clock; EBADF for the CPU-time clocks, EINVAL otherwise."""
        if clock_id == abi.CLOCK_MONOTONIC:
            return self.monotonic_ns()
        if clock_id == abi.CLOCK_REALTIME:
            return time.time_ns()
        raise abi.FsError(Errno.BADF if clock_id in (2, 3) else Errno.INVAL)

    def save(self) -> ClockState:
        return ClockState(self.monotonic_ns(), time.time_ns())

    @classmethod
    def restore(cls, state: ClockState) -> Clocks:
        return cls(state)


@hostcall(Kind.READS_WORLD, 'ii')
def clock_res_get(host: WasiHost, clock_id: int, out: int) -> int:
    host.clocks.now(clock_id)
    host.mem().put_u64(out, RESOLUTION_NS)
    return 0


@hostcall(Kind.READS_WORLD, 'iIi')
def clock_time_get(host: WasiHost, clock_id: int, precision: int, out: int) -> int:
    host.mem().put_u64(out, host.clocks.now(clock_id))
    return 0
