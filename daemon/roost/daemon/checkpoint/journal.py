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
from dataclasses import dataclass

from roost.daemon.errors import ReplayDiverged  # (defined in the tree; raised here)

_HEAD = struct.Struct("<iQH")
_WRITE = struct.Struct("<II")


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
    raw = name.encode()
    parts = [bytes((len(raw),)), raw, _HEAD.pack(result, monotonic_ns, len(writes))]
    for addr, data in writes:
        parts += [_WRITE.pack(addr, len(data)), data]
    return b"".join(parts)


def decode(raw: bytes) -> Record:
    n = raw[0]
    name = raw[1:1 + n].decode()
    off = 1 + n
    result, mono, count = _HEAD.unpack_from(raw, off)
    off += _HEAD.size
    writes = []
    for _ in range(count):
        addr, size = _WRITE.unpack_from(raw, off)
        off += _WRITE.size
        writes.append((addr, bytes(raw[off:off + size])))
        off += size
    return Record(name, result, mono, tuple(writes))


def pack_many(records: list[bytes]) -> bytes:
    """Concatenate encoded records with u32 length prefixes (START carries the suffix)."""
    return b"".join(struct.pack("<I", len(r)) + r for r in records)


def unpack_many(blob: bytes) -> list[Record]:
    out, off = [], 0
    while off < len(blob):
        (n,) = struct.unpack_from("<I", blob, off)
        out.append(decode(blob[off + 4:off + 4 + n]))
        off += 4 + n
    return out


class Replay:
    """Answers world-reading calls from recorded results until they run out."""

    def __init__(self, records: list[Record], first_seq: int = 0) -> None:
        self.records = records
        self.pos = 0
        self.first_seq = first_seq

    @property
    def active(self) -> bool:
        return self.pos < len(self.records)

    def peek(self) -> Record:
        """The next record, not consumed (`active` must be true)."""
        return self.records[self.pos]

    def next(self, name: str) -> Record:
        record = self.records[self.pos]
        if record.name != name:
            raise ReplayDiverged(f"replay diverged at journal record {self.first_seq + self.pos}: "
                                 f"recorded {record.name}, the guest called {name}")
        self.pos += 1
        return record
