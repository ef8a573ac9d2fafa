"""The per-execution virtual filesystem: an inode table of plain data.

Files of a durable execution must move with it (checkpoint, migration), so nothing here touches
the host disk: every node lives in `Vfs.inodes` and the whole table saves to a frozen
`VfsState` or to a compact, versioned byte string. Errors are WASI errno values (`FsError`),
because the only caller that interprets them is roost's WASI layer; this module does not import
wasmtime.

Path resolution follows cap-std, which wasmtime's WASI uses: paths are relative to a directory,
`..` may not climb above that directory, absolute paths and absolute symlink targets are refused
with EPERM, and intermediate symlinks are followed (at most 40 per lookup).
"""
from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterable, Iterator

import zstandard

__all__ = ["Entry", "Errno", "FsError", "Inode", "InodeState", "Vfs", "VfsState"]


class Errno(IntEnum):
    """The WASI preview1 errno values that roost's host functions return."""
    SUCCESS = 0
    TOOBIG = 1
    ACCES = 2
    AGAIN = 6
    BADF = 8
    EXIST = 20
    FAULT = 21
    FBIG = 22
    ILSEQ = 25
    INVAL = 28
    IO = 29
    ISDIR = 31
    LOOP = 32
    MLINK = 34
    NAMETOOLONG = 37
    NOENT = 44
    NOSPC = 51
    NOSYS = 52
    NOTDIR = 54
    NOTEMPTY = 55
    NOTSOCK = 57
    NOTSUP = 58
    OVERFLOW = 61
    PERM = 63
    RANGE = 68
    SPIPE = 70
    XDEV = 75
    NOTCAPABLE = 76


class FsError(Exception):
    """A filesystem operation failed with a WASI errno."""

    def __init__(self, errno: Errno, what: str = "") -> None:
        super().__init__(f"{errno.name}: {what}" if what else errno.name)
        self.errno = errno


@dataclass(frozen=True)
class Entry:
    """One node of a tree copied in (`--mount`) or out (`roost cp`)."""
    path: str
    kind: str  # 'file' | 'dir' | 'symlink'
    data: bytes = b''
    target: str = ''


@dataclass(slots=True)
class Inode:
    """A live node: a file (data), a directory (entries) or a symlink (target)."""
    kind: str
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    target: str = ''
    nlink: int = 1
    atim_ns: int = 0
    mtim_ns: int = 0
    ctim_ns: int = 0

    def size(self) -> int:
        """Byte size as stat reports it (directories report a block, as ext4 does)."""
        if self.kind == 'file':
            return len(self.data)
        return len(self.target) if self.kind == 'symlink' else 4096


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


MAGIC = b'RVFS'
FORMAT_VERSION = (1, 0)
_HEADER = struct.Struct('<4sHH32s')
MAX_SYMLINKS = 40


def _now() -> int:
    return time.time_ns()


class Vfs:
    """An inode table with preopened roots; see the module docstring for path rules."""

    def __init__(self) -> None:
        self.inodes: dict[int, Inode] = {}
        self._preopens: list[tuple[str, int]] = []
        self.next_ino = 1

    # ---- building -------------------------------------------------------------------------
    def new_inode(self, kind: str, **fields: object) -> int:
        """Allocate an inode with all three timestamps set to now."""
        now = _now()
        ino = self.next_ino
        self.next_ino += 1
        self.inodes[ino] = Inode(kind, atim_ns=now, mtim_ns=now, ctim_ns=now, **fields)
        if kind == 'dir':
            self.inodes[ino].nlink = 2
        return ino

    def add_mount(self, guest_name: str, entries: Iterable[Entry]) -> None:
        """Add a preopened directory `guest_name` whose contents are `entries`."""
        root = self.new_inode('dir')
        self._preopens.append((guest_name, root))
        for e in sorted(entries, key=lambda e: e.path.count('/')):
            self._add_entry(root, e)

    def _add_entry(self, root: int, e: Entry) -> None:
        parts = [p for p in e.path.split('/') if p not in ('', '.')]
        if not parts:
            return
        parent = root
        for p in parts[:-1]:
            child = self.inodes[parent].entries.get(p)
            if child is None:
                child = self.new_inode('dir')
                self.link(parent, p, child)
            elif self.inodes[child].kind != 'dir':
                raise ValueError(f"mount entry {e.path!r}: {p!r} is not a directory")
            parent = child
        name = parts[-1]
        if name in self.inodes[parent].entries:
            return
        if e.kind == 'dir':
            self.link(parent, name, self.new_inode('dir'))
        elif e.kind == 'symlink':
            self.link(parent, name, self.new_inode('symlink', target=e.target), new=True)
        else:
            self.link(parent, name, self.new_inode('file', data=bytearray(e.data)), new=True)

    @property
    def preopens(self) -> list[tuple[str, int]]:
        """(guest name, root inode) in mount order."""
        return list(self._preopens)

    # ---- directory entries ------------------------------------------------------------------
    def link(self, parent: int, name: str, ino: int, new: bool = False) -> None:
        """Enter `ino` as `name` in directory `parent`, keeping link counts right."""
        d = self.inodes[parent]
        d.entries[name] = ino
        node = self.inodes[ino]
        if node.kind == 'dir':
            d.nlink += 1
        elif not new:
            node.nlink += 1
        d.mtim_ns = d.ctim_ns = _now()

    def unlink(self, parent: int, name: str) -> int:
        """Remove entry `name` of `parent`; a node left with no links is kept until `collect`."""
        d = self.inodes[parent]
        ino = d.entries.pop(name)
        node = self.inodes[ino]
        if node.kind == 'dir':
            d.nlink -= 1
            node.nlink = 0
        else:
            node.nlink -= 1
        d.mtim_ns = d.ctim_ns = node.ctim_ns = _now()
        return ino

    def move(self, src_dir: int, src_name: str, dst_dir: int, dst_name: str) -> None:
        """Rename an entry, replacing (and unlinking) whatever `dst_name` named."""
        if dst_name in self.inodes[dst_dir].entries:
            self.unlink(dst_dir, dst_name)
        s, d = self.inodes[src_dir], self.inodes[dst_dir]
        ino = s.entries.pop(src_name)
        d.entries[dst_name] = ino
        if self.inodes[ino].kind == 'dir':
            s.nlink -= 1
            d.nlink += 1
        now = _now()
        s.mtim_ns = s.ctim_ns = d.mtim_ns = d.ctim_ns = self.inodes[ino].ctim_ns = now

    def is_ancestor(self, ino: int, of: int) -> bool:
        """Whether directory `ino` is `of` or contains it (renaming a dir into itself)."""
        if ino == of:
            return True
        return any(self.is_ancestor(child, of) for child in self.inodes[ino].entries.values()
                   if self.inodes[child].kind == 'dir')

    def collect(self, ino: int, still_open: bool) -> None:
        """Drop an unlinked inode once no descriptor refers to it."""
        node = self.inodes.get(ino)
        if node is not None and node.nlink <= 0 and not still_open:
            del self.inodes[ino]

    # ---- path resolution ---------------------------------------------------------------
    def resolve(self, base: int, path: str, follow: bool) -> tuple[int, str, int | None]:
        """Resolve `path` under directory `base` to (parent dir, last name, inode or None).

        The last name is '.' or '..' when the path ends in one; then the inode is the
        directory itself. A trailing '/' forces the last component to be followed.
        """
        if path == '':
            raise FsError(Errno.NOENT, path)
        if path.startswith('/'):
            raise FsError(Errno.PERM, path)
        pending = self._components(path)
        stack, links = [base], 0
        while True:
            c, must_dir = pending.pop()
            last = not pending
            cur = stack[-1]
            if c in ('.', '..'):
                if c == '..':
                    if len(stack) == 1:
                        raise FsError(Errno.PERM, path)
                    stack.pop()
                if last:
                    return stack[-1], c, stack[-1]
                continue
            node = self.inodes[cur]
            if node.kind != 'dir':
                raise FsError(Errno.NOTDIR, path)
            ino = node.entries.get(c)
            if ino is None:
                if last:
                    return cur, c, None
                raise FsError(Errno.NOENT, path)
            child = self.inodes[ino]
            if child.kind == 'symlink' and (not last or follow or must_dir):
                links += 1
                if links > MAX_SYMLINKS:
                    raise FsError(Errno.LOOP, path)
                if child.target.startswith('/'):
                    raise FsError(Errno.PERM, path)
                target = self._components(child.target)
                if must_dir:
                    target[0] = (target[0][0], True)
                pending.extend(target)
                continue
            if last:
                if must_dir and child.kind != 'dir':
                    raise FsError(Errno.NOTDIR, path)
                return cur, c, ino
            if child.kind != 'dir':
                raise FsError(Errno.NOTDIR, path)
            stack.append(ino)

    @staticmethod
    def _components(path: str) -> list[tuple[str, bool]]:
        """Components in reverse order (a stack); the flag marks a trailing '/'."""
        parts = path.split('/')
        trailing = len(parts) > 1 and parts[-1] == ''
        comps = [p for p in parts if p != '']
        if not comps:
            raise FsError(Errno.PERM, path)
        out = [(c, False) for c in comps]
        out[-1] = (comps[-1], trailing)
        out.reverse()
        return out

    def lookup(self, base: int, path: str, follow: bool = True) -> int:
        """The inode at `path`, or FsError(NOENT)."""
        _, _, ino = self.resolve(base, path, follow)
        if ino is None:
            raise FsError(Errno.NOENT, path)
        return ino

    # ---- export (roost cp) -------------------------------------------------------------
    def export(self, guest_path: str) -> Iterator[Entry]:
        """Entries of the file at `guest_path` or of the whole tree under it (roost cp)."""
        root, rest = self._preopen_for(guest_path)
        ino = self.lookup(root, rest, follow=True) if rest else root
        return self._walk(ino, '')

    def _preopen_for(self, guest_path: str) -> tuple[int, str]:
        best: tuple[int, int, str] | None = None
        for name, root in self._preopens:
            rest = _strip_prefix(guest_path, name)
            if rest is not None and (best is None or len(name) > best[0]):
                best = (len(name), root, rest)
        if best is None:
            raise KeyError(guest_path)
        return best[1], best[2]

    def _walk(self, ino: int, rel: str) -> Iterator[Entry]:
        node = self.inodes[ino]
        if node.kind == 'file':
            yield Entry(rel, 'file', bytes(node.data))
        elif node.kind == 'symlink':
            yield Entry(rel, 'symlink', target=node.target)
        else:
            yield Entry(rel, 'dir')
            for name in sorted(node.entries):
                yield from self._walk(node.entries[name], f"{rel}/{name}" if rel else name)

    # ---- persistence -------------------------------------------------------------------
    def save(self) -> VfsState:
        """A frozen copy of the whole table."""
        return VfsState(
            inodes=tuple((ino, _save_inode(n)) for ino, n in sorted(self.inodes.items())),
            preopens=tuple(self._preopens), next_ino=self.next_ino)

    @classmethod
    def restore(cls, state: VfsState) -> Vfs:
        """A live table equal to the one that produced `state`."""
        v = cls()
        v.inodes = {ino: _restore_inode(s) for ino, s in state.inodes}
        v._preopens = list(state.preopens)
        v.next_ino = state.next_ino
        return v

    def to_bytes(self) -> bytes:
        """Deterministic bytes: header (magic, version, sha256 of body) + zstd body."""
        body = zstandard.ZstdCompressor(level=3).compress(_encode(self.save()))
        return _HEADER.pack(MAGIC, *FORMAT_VERSION, hashlib.sha256(body).digest()) + body

    @classmethod
    def from_bytes(cls, b: bytes) -> Vfs:
        """Parse `to_bytes` output; ValueError on bad magic, version or checksum."""
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
        return cls.restore(_decode(zstandard.ZstdDecompressor().decompress(body)))


def _strip_prefix(guest_path: str, name: str) -> str | None:
    """The rest of `guest_path` below preopen `name`, or None if it is not under it."""
    if not guest_path.startswith('/'):
        if name not in ('.', './', ''):
            return None
        rest = guest_path[2:] if guest_path.startswith('./') else guest_path
        return '' if rest in ('.', '') else rest.strip('/')
    norm = name.rstrip('/') if name != '/' else ''
    if not name.startswith('/'):
        return None
    if guest_path == norm or guest_path == norm + '/':
        return ''
    if guest_path.startswith(norm + '/'):
        return guest_path[len(norm) + 1:].strip('/')
    return None


def _save_inode(n: Inode) -> InodeState:
    return InodeState(n.kind, bytes(n.data), tuple(sorted(n.entries.items())), n.target,
                      n.nlink, n.atim_ns, n.mtim_ns, n.ctim_ns)


def _restore_inode(s: InodeState) -> Inode:
    return Inode(s.kind, bytearray(s.data), dict(s.entries), s.target, s.nlink,
                 s.atim_ns, s.mtim_ns, s.ctim_ns)


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
        data, entries, target = b'', (), ''
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
