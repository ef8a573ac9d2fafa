"""The journal: results of host calls that read the world, in the order the guest saw them.

A record holds what the call did to the guest — its return value and the bytes it wrote into
guest memory — plus the guest's monotonic time when it returned. On recovery the guest
re-executes from its latest checkpoint and the journal answers those calls instead of the
world, so it computes exactly what it computed before; once the journal is exhausted the world
answers again, and the guest's clock continues from the last journaled time (never backwards).

Stdin and mounted files are not journaled: they are copied into the execution's durable state
when it starts, so reading them is deterministic on replay.

Durability follows the output-commit rule: records travel to the daemon on the same ordered
link as guest output and are committed in the same LMDB transaction as (or before) any output
that follows them, so nothing the outside world has seen can depend on an unrecorded result.

Record layout (little endian):

    u8  name length, name (ascii)
    i32 result (errno; 0 for functions without a result)
    u64 guest monotonic ns at return
    u16 number of writes, then per write: u32 guest address, u32 length, bytes

One record is not a host call: `fs_time` (see `wasi.clocks.fs_now`) journals a filesystem
timestamp; its result is the stamp's tag and its one "write" (address 0, never applied to
memory) holds the u64 unix ns.
"""
from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from roost.daemon.errors import ReplayDiverged  # (defined in the tree; raised here)

_HEAD = struct.Struct("<iQH")
_WRITE = struct.Struct("<II")
_U32 = struct.Struct("<I")
_ONE_WRITE = struct.Struct("<iQHII")            # the head of a record with one write
_NAMES: dict[str, bytes] = {}                   # name -> its u8 length + ascii (the record's start)


def name_prefix(name: str) -> bytes:
    """The bytes a record of `name` starts with (cached: the live path runs per clock read)."""
    prefix = _NAMES.get(name)
    if prefix is None:
        raw = name.encode()
        prefix = _NAMES[name] = bytes((len(raw),)) + raw
    return prefix


@dataclass(frozen=True)
class Record:
    name: str
    result: int
    monotonic_ns: int
    writes: tuple[tuple[int, bytes], ...]


def encode(record: Record) -> bytes:
    return encode_fields(record.name, record.result, record.monotonic_ns, record.writes)


def encode_fields(name: str, result: int, monotonic_ns: int,
                  writes: list[tuple[int, bytes]] | tuple[tuple[int, bytes], ...]) -> bytes:
    """`encode` without building a Record: the live path runs once per clock read."""
    if len(writes) == 1:
        addr, data = writes[0]
        return b"".join((name_prefix(name), _ONE_WRITE.pack(result, monotonic_ns, 1, addr, len(data)), data))
    parts = [name_prefix(name), _HEAD.pack(result, monotonic_ns, len(writes))]
    for addr, data in writes:
        parts += [_WRITE.pack(addr, len(data)), data]
    return b"".join(parts)


def decode(raw: bytes | memoryview, at: int = 0) -> Record:
    """The record that starts at `at` of `raw`."""
    n = raw[at]
    name = bytes(raw[at + 1:at + 1 + n]).decode()
    off = at + 1 + n
    result, mono, count = _HEAD.unpack_from(raw, off)
    off += _HEAD.size
    writes = []
    for _ in range(count):
        addr, size = _WRITE.unpack_from(raw, off)
        off += _WRITE.size
        writes.append((addr, bytes(raw[off:off + size])))
        off += size
    return Record(name, result, mono, tuple(writes))


def pack_many(records: Iterable[bytes]) -> bytes:
    """Concatenate encoded records with u32 length prefixes (a REPLAY chunk, GO)."""
    return b"".join(_U32.pack(len(r)) + r for r in records)


def unpack_many(blob: bytes) -> list[Record]:
    out, off = [], 0
    while off < len(blob):
        (n,) = _U32.unpack_from(blob, off)
        out.append(decode(blob, off + 4))
        off += 4 + n
    return out


class GuestMemory(Protocol):
    def write(self, ptr: int, data: bytes) -> None: ...


class Replay:
    """Answers world-reading calls from recorded results until they run out.

    The records are kept as they travel — chunks of `pack_many` — and decoded one at a time as
    the guest consumes them: a journal of a million records is never a million objects. A
    streamed replay (`streamed=True`) gets its chunks from the link as the guest goes
    (`feed`, then `feed(b"", end=True)`); `active` waits for the next chunk when the guest is
    ahead of the stream, and `taken` is told each chunk taken, so the supervisor sends the next
    (flow control). `pos` counts the records consumed (the journal position is `first_seq + pos`).
    """

    def __init__(self, records: Iterable[Record] = (), first_seq: int = 0, streamed: bool = False,
                 taken: Callable[[], None] | None = None) -> None:
        self.first_seq = first_seq
        self.pos = 0
        self._blob = pack_many(encode(r) for r in records)
        self._off = 0
        self._chunks: deque[bytes] = deque()
        self._ended = not streamed
        self._gone = False
        self._done = False                        # every record consumed, the journal ended
        self._arrived = threading.Condition()
        self.taken = taken or (lambda: None)
        self.last: Record | None = None           # the latest record `next` returned

    # ---- the stream (the control thread) ----
    def feed(self, chunk: bytes, end: bool = False) -> None:
        """The next chunk of the journal; `end`: there is no more after it."""
        with self._arrived:
            if chunk:
                self._chunks.append(chunk)
            self._ended = self._ended or end
            self._arrived.notify_all()

    def close(self) -> None:
        """The supervisor went away: a replay still waiting for records cannot go on."""
        with self._arrived:
            self._gone = True
            self._arrived.notify_all()

    def _refill(self) -> bool:
        """The current chunk is used up: take the next one, waiting for it if the journal has
        not ended. False once every record is consumed."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._chunks or self._ended or self._gone)
            if not self._chunks:
                if self._ended:
                    self._done = True
                    return False
                raise BrokenPipeError("the supervisor went away during the journal's replay")
            self._blob, self._off = self._chunks.popleft(), 0
        self.taken()
        return True

    # ---- the guest's side ----
    @property
    def active(self) -> bool:
        return self._off < len(self._blob) or (not self._done and self._refill())

    def peek(self) -> Record:
        """The next record, not consumed (`active` must be true)."""
        return decode(self._blob, self._off + 4)

    def next(self, name: str) -> Record:
        record = self.peek()
        if record.name != name:
            self._diverged(name)
        self._off += 4 + _U32.unpack_from(self._blob, self._off)[0]
        self.pos += 1
        self.last = record
        return record

    def apply(self, name: str, mem: Callable[[], GuestMemory]) -> tuple[int, int]:
        """Consume the next record, which must be `name`'s: write what it wrote into guest
        memory (`mem()`, asked only if it wrote anything) and give (result, monotonic ns).
        The hot path of replay: no Record is built (`active` must be true)."""
        blob, off = self._blob, self._off
        prefix = _NAMES.get(name) or name_prefix(name)
        if not blob.startswith(prefix, off + 4):
            self._diverged(name)
        at = off + 4 + len(prefix)
        result, mono, count = _HEAD.unpack_from(blob, at)
        if count:
            view = mem()
            at += _HEAD.size
            for _ in range(count):
                addr, size = _WRITE.unpack_from(blob, at)
                at += _WRITE.size
                view.write(addr, blob[at:at + size])
                at += size
        self._off = off + 4 + _U32.unpack_from(blob, off)[0]
        self.pos += 1
        return result, mono

    def _diverged(self, name: str) -> None:
        recorded = self.peek().name
        raise ReplayDiverged(f"replay diverged at journal record {self.first_seq + self.pos}: "
                             f"recorded {recorded}, the guest called {name}")
