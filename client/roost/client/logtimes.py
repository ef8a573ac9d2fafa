"""`roost logs --since T --timestamps`: the time a user gives, and the times printed.

`--since` takes what `docker logs --since` does: an RFC 3339 time (2026-12-07T10:00:00Z, or
with an offset), unix seconds, or a duration back from now (10m, 2h, 1d30m, 1.5h). The
timestamps are docker's: RFC 3339 in UTC with nanoseconds at the start of every line, the
time roostd made that output durable.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from google.protobuf.timestamp_pb2 import Timestamp

from roost.client.errors import LocalError
from roost.v1 import control_pb2 as pb

UNKNOWN = "0001-01-01T00:00:00.000000000Z"    # output stored by a roostd without times
_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9, "d": 86400 * 10**9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_UNIX = re.compile(r"\d+(?:\.\d{1,9})?")
SINCE_HELP = ("only output made durable at or after T: an RFC 3339 time "
              "(2026-12-07T10:00:00Z), unix seconds, or a duration back from now (10m, 2h, 1d30m)")


def duration_ns(text: str) -> int | None:
    """A duration like 10m, 2h, 1d30m or 1.5h in ns; None if `text` is not one."""
    if not text or _PART.sub("", text):
        return None
    return sum(round(float(number) * _UNITS[unit]) for number, unit in _PART.findall(text))


def parse_since(text: str, now_ns: int | None = None) -> Timestamp:
    """What `--since` was given as a Timestamp; LocalError (one line) if it is none of the
    forms above."""
    out = Timestamp()
    text = text.strip()
    back = duration_ns(text)
    if back is not None:
        out.FromNanoseconds((time.time_ns() if now_ns is None else now_ns) - back)
        return out
    if _UNIX.fullmatch(text):
        whole, _, frac = text.partition(".")
        out.FromNanoseconds(int(whole) * 10**9 + int(frac.ljust(9, "0") or 0))
        return out
    try:
        out.FromJsonString(text.replace(" ", "T", 1))
    except ValueError:
        raise LocalError(f"--since {text!r}: not an RFC 3339 time (2026-12-07T10:00:00Z), unix "
                         "seconds, or a duration back from now (10m, 2h, 1d30m)") from None
    return out


def rfc3339(stamp: Timestamp | None) -> str:
    """A time as docker prints it: UTC, nanoseconds, a Z (UNKNOWN when unset)."""
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return UNKNOWN
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp.seconds)) + f".{stamp.nanos:09d}Z"


class Stamped:
    """Writes chunks to their std stream with the chunk's time at the start of every line:
    a chunk of several lines stamps each with its time, and a line a chunk leaves open gets
    no second stamp when the next chunk continues it (per stream: stdout and stderr lines
    interleave)."""

    def __init__(self, out: Callable[[int], BinaryIO] | None = None) -> None:
        self._at_start = {pb.STDOUT: True, pb.STDERR: True}
        self._out = out or (lambda stream: sys.stderr.buffer if stream == pb.STDERR
                            else sys.stdout.buffer)

    def write(self, chunk: pb.LogChunk) -> None:
        stream = pb.STDERR if chunk.stream == pb.STDERR else pb.STDOUT
        out = self._out(stream)
        prefix = (rfc3339(chunk.time if chunk.HasField("time") else None) + " ").encode()
        for line in lines(chunk.data):
            if self._at_start[stream]:
                out.write(prefix)
            out.write(line)
            self._at_start[stream] = line.endswith(b"\n")
        out.flush()


def lines(data: bytes) -> list[bytes]:
    """`data` cut after every newline (only b"\\n": a carriage return is no new line)."""
    out = [part + b"\n" for part in data.split(b"\n")]
    out[-1] = out[-1][:-1]
    return out if out[-1] else out[:-1]


def tail_lines(text: str) -> int | None:
    """`--tail`: a number of lines, or "all" (None)."""
    if text == "all":
        return None
    if not text.isdigit():
        raise LocalError(f"--tail {text!r}: a number of lines or 'all'")
    return int(text)
