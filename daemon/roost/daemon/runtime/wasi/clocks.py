"""Clocks. The guest's monotonic clock continues across restore and migration.

Guest monotonic time = the value saved at the last checkpoint + host time elapsed since this
process restored it, so it never goes backwards even on another host. Realtime is the host's.
wasmtime answers EBADF for the CPU-time clocks; so does roost.

The filesystem clock (`fs_now`) stamps VFS changes. VFS calls are LOCAL (re-executed on
replay), so a host-time stamp would differ after a restore; instead the time is journaled: a
change takes the realtime and journals it as an `fs_time` record, and changes within
FS_TIME_GRANULARITY_NS of guest time after it reuse that stamp (so a write loop adds at most
one record per granularity). Each record is tagged with the number of stamps asked for so far
(saved with the clocks), so replay hands each stamp to exactly the change that took it, and a
change that reused a stamp reuses it on replay too — as long as the replay lasts. Whether a
change after the journal's end reuses the stamp depends on time, so before output leaves
(`fs_sync`) a reused stamp is confirmed by a record: the replay then lasts past every stamp
anything outside could have seen.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from roost.daemon.checkpoint import journal
from roost.daemon.runtime.wasi import abi
from roost.daemon.runtime.wasi.abi import Errno
from roost.daemon.runtime.wasi.durable import Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost

RESOLUTION_NS = 1
FS_TIME = 'fs_time'                   # journal record name of a filesystem timestamp
FS_TIME_GRANULARITY_NS = 10_000_000   # 10 ms: at most 100 records per second of file changes
_TAG_MASK = 0x7FFF_FFFF               # the record's i32 result holds the stamp's tag


@dataclass(frozen=True)
class ClockState:
    """Saved form of `Clocks`: the guest's monotonic time at save, and the host's realtime then
    (0 for a fresh execution)."""
    monotonic_ns: int = 0
    realtime_ns: int = 0
    fs_time_ns: int = 0        # the filesystem clock's latest journaled stamp (0: none yet)
    fs_taken_at_ns: int = 0    # the guest's monotonic time when it was taken
    fs_ticks: int = 0          # stamps asked for so far (tags the journal records)
    fs_tick_at: int = 0        # the stamp count at the latest fs_time record


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
        self.fs_time_ns, self.fs_taken_at_ns = state.fs_time_ns, state.fs_taken_at_ns
        self.fs_ticks, self.fs_tick_at = state.fs_ticks, state.fs_tick_at

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
        return ClockState(self.monotonic_ns(), time.time_ns(), self.fs_time_ns,
                          self.fs_taken_at_ns, self.fs_ticks, self.fs_tick_at)

    @classmethod
    def restore(cls, state: ClockState) -> Clocks:
        return cls(state)


def fs_now(host: WasiHost) -> int:
    """The timestamp of a VFS change: the journaled stamp (see the module docstring)."""
    c = host.clocks
    c.fs_ticks += 1
    if _replayed(host, c):
        return c.fs_time_ns
    if host.replay is not None and host.replay.active:
        return c.fs_time_ns                  # the original reused its stamp here
    mono = c.monotonic_ns()
    if c.fs_time_ns and 0 <= mono - c.fs_taken_at_ns < FS_TIME_GRANULARITY_NS:
        return c.fs_time_ns
    c.fs_time_ns, c.fs_taken_at_ns = max(time.time_ns(), c.fs_time_ns), mono
    _journal_stamp(host, c)
    return c.fs_time_ns


def fs_sync(host: WasiHost) -> None:
    """Before output leaves the worker: confirm a stamp reused since the latest record (live),
    or take that confirmation from the journal (replay); see the module docstring."""
    c = host.clocks
    if c.fs_ticks == c.fs_tick_at or _replayed(host, c):
        return
    if host.replay is None or not host.replay.active:
        _journal_stamp(host, c)


def _replayed(host: WasiHost, c: Clocks) -> bool:
    """Replay: when the next record is this stamp's, take it. True if one was taken."""
    replay = host.replay
    if replay is None or not replay.active:
        return False
    record = replay.peek()
    if record.name != FS_TIME or record.result != c.fs_ticks & _TAG_MASK:
        return False
    replay.next(FS_TIME)
    c.fs_time_ns = struct.unpack('<Q', record.writes[0][1])[0]
    c.fs_taken_at_ns, c.fs_tick_at = record.monotonic_ns, c.fs_ticks
    c.advance_to(record.monotonic_ns)
    return True


def _journal_stamp(host: WasiHost, c: Clocks) -> None:
    c.fs_tick_at = c.fs_ticks
    host.journal(journal.encode_fields(FS_TIME, c.fs_ticks & _TAG_MASK, c.fs_taken_at_ns,
                                       [(0, struct.pack('<Q', c.fs_time_ns))]))


@hostcall(Kind.READS_WORLD, 'ii')
def clock_res_get(host: WasiHost, clock_id: int, out: int) -> int:
    host.clocks.now(clock_id)
    host.mem().put_u64(out, RESOLUTION_NS)
    return 0


@hostcall(Kind.READS_WORLD, 'iIi')
def clock_time_get(host: WasiHost, clock_id: int, precision: int, out: int) -> int:
    host.mem().put_u64(out, host.clocks.now(clock_id))
    return 0
