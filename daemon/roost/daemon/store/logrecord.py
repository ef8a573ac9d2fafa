"""An output record as the `logs` database stores it: the stream, the time, the guest's bytes.

Since store format 2.2 a record carries the time roostd made it durable, so `roost logs
--since` and `--timestamps` have one to go by; a record stored before (format 2.0/2.1, or sent
by a peer that does not send times) has none and reads as "time unknown":

    offset  size  field
    0       1     stream: 1 stdout, 2 stderr; | 0x80 (TIMED) when a time follows
    1       8     (TIMED only) unix ns when the record was made durable, u64 BE
    1 or 9  n     the bytes the guest wrote (n >= 0)

(then the store's seal, as every value: `db.seal`). One byte decides, so an old record is
read as it always was and every reader of the `logs` database goes through `decode`.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from roost.daemon.errors import Corrupt

TIMED = 0x80
_TIME = struct.Struct(">Q")
_HEADER_TIMED = 1 + _TIME.size


class OutputRecord(NamedTuple):
    """One stored output record, decoded (`time_ns` None: stored without a time)."""
    stream: int
    data: bytes
    time_ns: int | None


class LogEntry(NamedTuple):
    """An output record at its seq, as readers of the log hand it on."""
    seq: int
    stream: int
    data: bytes
    time_ns: int | None


def encode(stream: int, data: bytes, time_ns: int | None) -> bytes:
    """The stored value of a record of `stream` (1 or 2) made durable at `time_ns`."""
    if time_ns is None:
        return bytes((stream,)) + data
    return bytes((stream | TIMED,)) + _TIME.pack(time_ns) + data


def decode(raw: bytes, what: str = "an output record") -> OutputRecord:
    """A stored value (old or new layout) as (stream, data, time_ns)."""
    if not raw:
        raise Corrupt(f"{what}: empty")
    head = raw[0]
    if not head & TIMED:
        return OutputRecord(head, raw[1:], None)
    if len(raw) < _HEADER_TIMED:
        raise Corrupt(f"{what}: {len(raw)} bytes, too short for its time")
    return OutputRecord(head & ~TIMED, raw[_HEADER_TIMED:], _TIME.unpack_from(raw, 1)[0])


def data_size(raw: bytes) -> int:
    """The guest's bytes in a stored value (what the stdout/stderr counters count)."""
    return len(raw) - (_HEADER_TIMED if raw and raw[0] & TIMED else 1)


def stream_of(raw: bytes) -> int:
    return raw[0] & ~TIMED


class LogTail:
    """Where `logs --tail N --since T` starts, found walking the selected records from the
    last one back (`back`, until `done`): after the N-th newline from the end (a newline
    that is the very last byte ends the last line, it does not start one), and not before
    the first of the records made durable at or after T that follow every older one."""

    def __init__(self, end_seq: int, tail: int | None, since_ns: int | None) -> None:
        self.lines = tail                       # newlines still to pass (None: no limit)
        self.since_ns = since_ns
        everything = tail is None and since_ns is None
        self.start = (0, 0) if everything else (end_seq, 0)   # (seq, bytes of it to skip)
        self.done = tail == 0 or everything
        self._last = True                       # no non-empty record seen yet

    def back(self, seq: int, record: OutputRecord) -> None:
        """The record before those seen so far."""
        if self.since_ns is not None and (record.time_ns is None or record.time_ns < self.since_ns):
            self.done = True
            return
        data = record.data
        if self.lines is not None:
            stop = len(data) - 1 if self._last and data.endswith(b"\n") else len(data)
            at = data.rfind(b"\n", 0, stop)
            while at >= 0:
                self.lines -= 1
                if self.lines == 0:
                    self.start = (seq, at + 1) if at + 1 < len(data) else (seq + 1, 0)
                    self.done = True
                    return
                at = data.rfind(b"\n", 0, at)
        self._last = self._last and not data
        self.start = (seq, 0)
