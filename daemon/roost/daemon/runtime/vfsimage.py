"""The VFS image: a `Vfs`'s saved form (`VfsState`) and its compact, versioned bytes.

    header  magic "RVFS", u16 major, u16 minor, sha256 of the body
    body    zstd of: next inode, preopens, then every inode (kind, links, times, payload)

SNAPSHOT_FORMAT.md has the layout; `runtime.vfs` is the live table it is saved from.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zstandard
else:                               # (imported on first use: roostd serves before)
    from roost.daemon.lazy import zstandard

MAGIC = b'RVFS'
FORMAT_VERSION = (1, 0)
_HEADER = struct.Struct('<4sHH32s')


@dataclass(frozen=True)
class InodeState:
    """Saved form of an `Inode`."""
    kind: str
    data: bytes
    entries: tuple[tuple[str, int], ...]
    target: str
    nlink: int
    atim_ns: int
    mtim_ns: int
    ctim_ns: int


@dataclass(frozen=True)
class VfsState:
    """Saved form of a `Vfs`: the inode table, the preopens and the next inode number."""
    inodes: tuple[tuple[int, InodeState], ...]
    preopens: tuple[tuple[str, int], ...]
    next_ino: int


def state_to_bytes(state: VfsState) -> bytes:
    """`Vfs.to_bytes` of a saved state, without building a live table from it first (a
    checkpoint encodes the state it took: one copy of the files fewer)."""
    body = zstandard.ZstdCompressor(level=3).compress(_encode(state))
    return _HEADER.pack(MAGIC, *FORMAT_VERSION, hashlib.sha256(body).digest()) + body


def state_from_bytes(b: bytes) -> VfsState:
    """Parse `state_to_bytes` output; ValueError on bad magic, version or checksum."""
    if len(b) < _HEADER.size:
        raise ValueError("vfs image too short")
    magic, major, minor, digest = _HEADER.unpack_from(b)
    if magic != MAGIC:
        raise ValueError("vfs image: bad magic")
    if major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
        raise ValueError(f"vfs image: unsupported format version {major}.{minor}")
    body = b[_HEADER.size:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError("vfs image: checksum mismatch")
    return _decode(zstandard.ZstdDecompressor().decompress(body))


_KINDS = ('file', 'dir', 'symlink')
_INODE = struct.Struct('<QBIqqqQ')  # ino, kind, nlink, atim, mtim, ctim, payload length


def _blob(b: bytes) -> bytes:
    return struct.pack('<I', len(b)) + b


def _encode(state: VfsState) -> bytes:
    out = [struct.pack('<QI', state.next_ino, len(state.preopens))]
    for name, root in state.preopens:
        out.append(_blob(name.encode()) + struct.pack('<Q', root))
    out.append(struct.pack('<I', len(state.inodes)))
    for ino, s in state.inodes:
        if s.kind == 'dir':
            payload = struct.pack('<I', len(s.entries)) + b''.join(
                _blob(n.encode()) + struct.pack('<Q', i) for n, i in s.entries)
        else:
            payload = s.data if s.kind == 'file' else s.target.encode()
        out.append(_INODE.pack(ino, _KINDS.index(s.kind), s.nlink, s.atim_ns, s.mtim_ns,
                               s.ctim_ns, len(payload)) + payload)
    return b''.join(out)


class _Reader:
    def __init__(self, b: bytes) -> None:
        self.b, self.pos = b, 0

    def take(self, fmt: struct.Struct | str) -> tuple:
        s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        v = s.unpack_from(self.b, self.pos)
        self.pos += s.size
        return v

    def blob(self, n: int | None = None) -> bytes:
        if n is None:
            (n,) = self.take('<I')
        v = self.b[self.pos:self.pos + n]
        self.pos += n
        return v


def _decode(b: bytes) -> VfsState:
    r = _Reader(b)
    next_ino, npre = r.take('<QI')
    preopens = tuple((r.blob().decode(), r.take('<Q')[0]) for _ in range(npre))
    (ninodes,) = r.take('<I')
    inodes = []
    for _ in range(ninodes):
        ino, kind, nlink, atim, mtim, ctim, plen = r.take(_INODE)
        payload = r.blob(plen)
        data, target = b'', ''
        entries: tuple[tuple[str, int], ...] = ()
        if _KINDS[kind] == 'dir':
            p = _Reader(payload)
            (n,) = p.take('<I')
            entries = tuple((p.blob().decode(), p.take('<Q')[0]) for _ in range(n))
        elif _KINDS[kind] == 'file':
            data = payload
        else:
            target = payload.decode()
        inodes.append((ino, InodeState(_KINDS[kind], data, entries, target, nlink,
                                       atim, mtim, ctim)))
    return VfsState(tuple(inodes), preopens, next_ino)
