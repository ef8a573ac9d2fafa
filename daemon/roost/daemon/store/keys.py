"""Every LMDB key roostd stores, and the one way to scan a run of them.

The layout (named databases; keys are bytes, `id` an execution id):

    meta        b"format", b"node_id"
    modules     sha256 (hex)                    blobs  sha256 (hex)
    executions  id                              vfs    id              timers  id
    inputs      id + b"/stdin", id + b"/vfs"
    logs        id + 0x00 + seq (u64 BE)        journal  the same
    checkpoints id + 0x00 + number (u64 BE)     pagemaps the same
    pages       id + 0x00 + number + b"/f" + u32 BE   one page frame
                id + 0x00 + number + b"/host"         host state
                id + 0x00 + number + b"/stack"        the guest's asyncify stack

An execution's sequenced keys (`seq`) sort by number and end before `end(id)` (id + 0x01), so
one execution's output, journal, checkpoints and pages are each one contiguous run: a replay,
a restore or a garbage collection is a cursor scan (`scan`), never a search. These bytes are
the on-disk format: changing any of them is a store format change.

A `logs` value is an output record: a stream byte (1 stdout, 2 stderr; with 0x80 set, since
store format 2.2, an 8-byte u64 BE unix-ns time follows: when it was made durable), then the
guest's bytes; a record without the time (format 2.0/2.1) reads as time unknown
(`logrecord`, the one reader and writer of it).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

_SEQ = struct.Struct(">Q")
_INDEX = struct.Struct(">I")
FORMAT = b"format"
NODE_ID = b"node_id"
LAST = (1 << 64) - 1                    # the largest seq: a reverse seek starts past it


def module(sha256: str) -> bytes:
    """Of `modules` and `blobs`."""
    return sha256.encode()


def execution(exec_id: str) -> bytes:
    """Of `executions`, `vfs` and `timers`."""
    return exec_id.encode()


def stdin(exec_id: str) -> bytes:
    return exec_id.encode() + b"/stdin"


def initial_vfs(exec_id: str) -> bytes:
    return exec_id.encode() + b"/vfs"


def prefix(exec_id: str) -> bytes:
    """What every sequenced key of `exec_id` starts with."""
    return exec_id.encode() + b"\x00"


def end(exec_id: str) -> bytes:
    """The first key after every sequenced key of `exec_id`."""
    return exec_id.encode() + b"\x01"


def seq(exec_id: str, n: int) -> bytes:
    """A log or journal record; a checkpoint's manifest or map; the base of its pages."""
    return prefix(exec_id) + _SEQ.pack(n)


def seq_of(key: bytes) -> int:
    """The seq (number) a log, journal, checkpoint or page-map key ends with."""
    return _SEQ.unpack(key[-8:])[0]


def number_in(key: bytes, exec_id: str) -> int:
    """The checkpoint number of any `pages` key of `exec_id`."""
    at = len(prefix(exec_id))
    return _SEQ.unpack(key[at:at + 8])[0]


def version(exec_id: str, number: int) -> bytes:
    """What every `pages` key of one checkpoint (frames, host state, stack) starts with."""
    return seq(exec_id, number) + b"/"


def frames(exec_id: str, number: int) -> bytes:
    """What the frame keys of one version start with."""
    return seq(exec_id, number) + b"/f"


def frame(exec_id: str, number: int, index: int) -> bytes:
    return frames(exec_id, number) + _INDEX.pack(index)


def frame_index(key: bytes) -> int:
    return _INDEX.unpack(key[-4:])[0]


def is_frame(key: bytes) -> bool:
    """A `pages` key of a frame (ends in /f + u32), not host state or stack."""
    return key[-6:-4] == b"/f"


def host(exec_id: str, number: int) -> bytes:
    return seq(exec_id, number) + b"/host"


def stack(exec_id: str, number: int) -> bytes:
    return seq(exec_id, number) + b"/stack"


def describe(key: bytes) -> str:
    """A key as a person reads it: `id/seq`, `id/number/f3`, `id/number/host`, `id/stdin`."""
    exec_id, sep, rest = key.partition(b"\x00")
    if not sep or len(rest) < _SEQ.size:
        return key.decode(errors="backslashreplace")
    text = f"{exec_id.decode(errors='backslashreplace')}/{_SEQ.unpack(rest[:8])[0]}"
    suffix = rest[8:]
    if suffix.startswith(b"/f") and len(suffix) == 6:
        return f"{text}/f{_INDEX.unpack(suffix[2:])[0]}"
    return text + suffix.decode(errors="backslashreplace")


def scan(cursor, start: bytes, within: bytes) -> Iterator[bytes]:
    """The keys from `start` on that begin with `within`, in order, on `cursor` (positioned at
    each as it is yielded: `cursor.value()` reads — and checks — only the values a caller
    wants). Stopping early is breaking out of the loop."""
    if not cursor.set_range(start):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(within):
            return
        yield key
