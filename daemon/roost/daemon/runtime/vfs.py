"""The per-execution virtual filesystem: an inode table of plain data.

Files of a durable execution must move with it (checkpoint, migration), so nothing here touches
the host disk: every node lives in `Vfs.inodes` and the whole table saves to a frozen
`VfsState` or to a compact, versioned byte string. Errors are WASI errno values (`FsError`),
because the only caller that interprets them is roost's WASI layer; this module does not import
wasmtime.

Path resolution follows cap-std, which wasmtime's WASI uses: paths are relative to a directory,
`..` may not climb above that directory, absolute paths and absolute symlink targets are refused
with EPERM, and intermediate symlinks are followed (at most 40 per lookup).

A guest must not grow its filesystem without bound (it lives in the worker's memory, beside the
guest's, and is copied whole into every checkpoint), so each `Vfs` enforces `VfsLimits`: file
bytes (file data plus symlink targets; a file may not extend past the whole budget: EFBIG, the
budget exhausted: ENOSPC), inodes and directory entries (ENOSPC), and hard links per inode
(EMLINK). Names longer than NAME_MAX and paths longer than PATH_MAX are ENAMETOOLONG, as on Linux.
Nothing here recurses per directory level (a guest can nest directories as deep as it likes).

Timestamps come from `Vfs.clock`, which the WASI host binds to its journaled filesystem clock,
so a restored execution stamps exactly the times the original run did.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Iterable, Iterator

from roost.daemon.runtime.vfsimage import FORMAT_VERSION, MAGIC, InodeState, VfsState, state_from_bytes, state_to_bytes

__all__ = ["FORMAT_VERSION", "MAGIC", "Entry", "Errno", "FsError", "Inode", "InodeState", "Vfs", "VfsLimits",
           "VfsState", "state_to_bytes"]


class Errno(IntEnum):
    """The WASI preview1 errno values that roost's host functions return."""
    SUCCESS = 0
    TOOBIG = 1
    ACCES = 2
    AGAIN = 6
    BADF = 8
    CANCELED = 11
    CONNREFUSED = 14
    CONNRESET = 15
    EXIST = 20
    FAULT = 21
    FBIG = 22
    HOSTUNREACH = 23
    ILSEQ = 25
    INVAL = 28
    IO = 29
    ISDIR = 31
    LOOP = 32
    MFILE = 33
    MLINK = 34
    MSGSIZE = 35
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
    PROTO = 65
    RANGE = 68
    SPIPE = 70
    TIMEDOUT = 73
    XDEV = 75
    NOTCAPABLE = 76


class FsError(Exception):
    """A filesystem operation failed with a WASI errno."""

    def __init__(self, errno: Errno, what: str = "") -> None:
        super().__init__(f"{errno.name}: {what}" if what else errno.name)
        self.errno = errno


@dataclass(frozen=True)
class Entry:
    """One node of a tree copied in (`--mount`) or out (`roost cp`).

    Exported files carry a memoryview of the live inode's data, not a copy, so copying out a
    tree costs no memory per file; 'hardlink' (export only) names a file already exported,
    whose path is `target`, so an inode's data is sent once however many names it has."""
    path: str
    kind: str  # 'file' | 'dir' | 'symlink' | 'hardlink'
    data: bytes | memoryview = b''
    target: str = ''
    links: int = 1   # a file's link count (names of its inode)


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
class VfsLimits:
    """What one execution's filesystem may hold (config `[limits]`: vfs_bytes, vfs_inodes,
    links); the defaults are unlimited for the VFS alone (the daemon always sets its own)."""
    bytes: int = 1 << 62
    inodes: int = 1 << 62      # inodes, and separately names in directories (hard links)
    links: int = 1 << 31       # links to one file


@dataclass(frozen=True)
class VfsUsage:
    """What a filesystem holds, in the units of `VfsLimits`."""
    bytes: int
    inodes: int
    names: int


MAX_SYMLINKS = 40
NAME_MAX = 255
PATH_MAX = 4096
MAX_OFFSET = (1 << 63) - 1       # off_t: the largest position or size a file can have
MAX_TIME_NS = (1 << 63) - 1      # timestamps are stored as i64


class Vfs:
    """An inode table with preopened roots; see the module docstring for path rules."""

    def __init__(self, limits: VfsLimits = VfsLimits()) -> None:
        self.inodes: dict[int, Inode] = {}
        self._preopens: list[tuple[str, int]] = []
        self.next_ino = 1
        self.limits = limits
        self.clock: Callable[[], int] = time.time_ns
        self.data_bytes = 0          # file data + symlink targets, counted against limits.bytes
        self.names = 0               # directory entries, counted against limits.inodes

    def now(self) -> int:
        """The time to stamp on a change (the journaled clock inside a guest's host)."""
        return self.clock()

    def usage(self) -> VfsUsage:
        return VfsUsage(self.data_bytes, len(self.inodes), self.names)

    # ---- building -------------------------------------------------------------------------
    def new_inode(self, kind: str, **fields: Any) -> int:
        """Allocate an inode with all three timestamps set to now; ENOSPC past the inode
        limit (and the byte limit, for a symlink's target or a file's data)."""
        if len(self.inodes) >= self.limits.inodes:
            raise FsError(Errno.NOSPC, "inode limit")
        size = len(fields.get('target', '')) + len(fields.get('data', b''))
        self._charge(size)
        now = self.now()
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
                child = self.create(parent, p, 'dir')
            elif self.inodes[child].kind != 'dir':
                raise ValueError(f"mount entry {e.path!r}: {p!r} is not a directory")
            parent = child
        name = parts[-1]
        if name in self.inodes[parent].entries:
            return
        if e.kind == 'dir':
            self.create(parent, name, 'dir')
        elif e.kind == 'symlink':
            self.create(parent, name, 'symlink', target=e.target)
        else:
            self.create(parent, name, 'file', data=bytearray(e.data))

    @property
    def preopens(self) -> list[tuple[str, int]]:
        """(guest name, root inode) in mount order."""
        return list(self._preopens)

    # ---- directory entries ------------------------------------------------------------------
    def link(self, parent: int, name: str, ino: int, new: bool = False) -> None:
        """Enter `ino` as `name` in directory `parent`, keeping link counts right."""
        d = self.inodes[parent]
        node = self.inodes[ino]
        self.check_new_name(name)
        if node.kind != 'dir' and not new and node.nlink >= self.limits.links:
            raise FsError(Errno.MLINK, name)
        d.entries[name] = ino
        self.names += 1
        if node.kind == 'dir':
            d.nlink += 1
        elif not new:
            node.nlink += 1
        d.mtim_ns = d.ctim_ns = self.now()

    def check_new_name(self, name: str) -> None:
        """A new directory entry `name` fits: ENAMETOOLONG, or ENOSPC past the entry limit."""
        _check_name(name)
        if self.names >= self.limits.inodes:
            raise FsError(Errno.NOSPC, "directory entry limit")

    def create(self, parent: int, name: str, kind: str, **fields: object) -> int:
        """A new inode entered as `name` in `parent`; the name is checked first, so a refused
        one leaves no inode behind."""
        self.check_new_name(name)
        ino = self.new_inode(kind, **fields)
        self.link(parent, name, ino, new=True)
        return ino

    def unlink(self, parent: int, name: str) -> int:
        """Remove entry `name` of `parent`; a node left with no links is kept until `collect`."""
        d = self.inodes[parent]
        ino = d.entries.pop(name)
        self.names -= 1
        node = self.inodes[ino]
        if node.kind == 'dir':
            d.nlink -= 1
            node.nlink = 0
        else:
            node.nlink -= 1
        d.mtim_ns = d.ctim_ns = node.ctim_ns = self.now()
        return ino

    def move(self, src_dir: int, src_name: str, dst_dir: int, dst_name: str) -> None:
        """Rename an entry, replacing (and unlinking) whatever `dst_name` named."""
        _check_name(dst_name)
        if dst_name in self.inodes[dst_dir].entries:
            self.unlink(dst_dir, dst_name)
        s, d = self.inodes[src_dir], self.inodes[dst_dir]
        ino = s.entries.pop(src_name)
        d.entries[dst_name] = ino
        if self.inodes[ino].kind == 'dir':
            s.nlink -= 1
            d.nlink += 1
        now = self.now()
        s.mtim_ns = s.ctim_ns = d.mtim_ns = d.ctim_ns = self.inodes[ino].ctim_ns = now

    def is_ancestor(self, ino: int, of: int) -> bool:
        """Whether directory `ino` is `of` or contains it (renaming a dir into itself).
        Iterative: a tree may be deeper than Python's recursion limit."""
        stack = [ino]
        while stack:
            cur = stack.pop()
            if cur == of:
                return True
            stack.extend(c for c in self.inodes[cur].entries.values()
                         if self.inodes[c].kind == 'dir')
        return False

    def collect(self, ino: int, still_open: bool) -> None:
        """Drop an unlinked inode once no descriptor refers to it."""
        node = self.inodes.get(ino)
        if node is not None and node.nlink <= 0 and not still_open:
            self.data_bytes -= len(node.data) + len(node.target)
            del self.inodes[ino]

    # ---- file data (every size change goes through here, for the limits) -------------------
    def _charge(self, growth: int) -> None:
        """Account `growth` more bytes (negative: fewer); ENOSPC past the byte limit."""
        if growth > 0 and self.data_bytes + growth > self.limits.bytes:
            raise FsError(Errno.NOSPC, "file bytes limit")
        self.data_bytes += growth

    def _check_size(self, size: int) -> None:
        """EFBIG for a file that would end past the whole byte budget (or past off_t)."""
        if size > min(self.limits.bytes, MAX_OFFSET):
            raise FsError(Errno.FBIG, f"file size {size}")

    def write(self, ino: int, pos: int, data: bytes) -> None:
        """Write `data` at `pos` of file `ino`, zero-filling any gap past the end."""
        node = self.inodes[ino]
        d = node.data
        end = pos + len(data)
        if not data:                 # POSIX: a zero-byte write changes nothing
            return
        if end > len(d):
            self._check_size(end)
            self._charge(end - len(d))
            if pos > len(d):
                d.extend(bytes(pos - len(d)))
        d[pos:end] = data
        node.mtim_ns = node.ctim_ns = self.now()

    def truncate(self, ino: int, size: int) -> None:
        """Set file `ino`'s size: cut, or extend with zeros."""
        node = self.inodes[ino]
        d = node.data
        if size > len(d):
            self._check_size(size)
            self._charge(size - len(d))
            d.extend(bytes(size - len(d)))
        else:
            self.data_bytes -= len(d) - size
            del d[size:]
        node.mtim_ns = node.ctim_ns = self.now()

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
        for c in comps:
            _check_name(c)
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
        """Entries of the file at `guest_path` or of the whole tree under it (roost cp).

        The path is resolved now (KeyError, FsError), the tree lazily as it is consumed."""
        root, rest = self._preopen_for(guest_path)
        ino = self.lookup(root, rest, follow=True) if rest else root
        return walk(self.inodes, ino)

    def _preopen_for(self, guest_path: str) -> tuple[int, str]:
        best: tuple[int, int, str] | None = None
        for name, root in self._preopens:
            rest = _strip_prefix(guest_path, name)
            if rest is not None and (best is None or len(name) > best[0]):
                best = (len(name), root, rest)
        if best is None:
            raise KeyError(guest_path)
        return best[1], best[2]

    # ---- persistence -------------------------------------------------------------------
    def save(self) -> VfsState:
        """A frozen copy of the whole table."""
        return VfsState(
            inodes=tuple((ino, _save_inode(n)) for ino, n in sorted(self.inodes.items())),
            preopens=tuple(self._preopens), next_ino=self.next_ino)

    @classmethod
    def restore(cls, state: VfsState, limits: VfsLimits = VfsLimits()) -> Vfs:
        """A live table equal to the one that produced `state`."""
        v = cls(limits)
        v.inodes = {ino: _restore_inode(s) for ino, s in state.inodes}
        v._preopens = list(state.preopens)
        v.next_ino = state.next_ino
        v.data_bytes = sum(len(n.data) + len(n.target) for n in v.inodes.values())
        v.names = sum(len(n.entries) for n in v.inodes.values())
        return v

    def to_bytes(self) -> bytes:
        """Deterministic bytes: header (magic, version, sha256 of body) + zstd body."""
        return state_to_bytes(self.save())

    @classmethod
    def from_bytes(cls, b: bytes) -> Vfs:
        """Parse `to_bytes` output; ValueError on bad magic, version or checksum."""
        return cls.restore(state_from_bytes(b))


def walk(inodes: dict[int, Inode], top: int) -> Iterator[Entry]:
    """Pre-order, names sorted, with an explicit stack: a guest can nest directories
    deeper than Python's recursion limit. A file with several names in the tree is
    exported once; its later names are 'hardlink' entries naming the first."""
    first_name: dict[int, str] = {}
    stack: list[tuple[str, Iterator[str], dict[str, int]]] = []
    pending: tuple[int, str] | None = (top, '')
    while pending is not None or stack:
        if pending is None:
            rel, names, entries = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            pending = (entries[name], f"{rel}/{name}" if rel else name)
        ino, path = pending
        pending = None
        node = inodes[ino]
        if node.kind == 'dir':
            stack.append((path, iter(sorted(node.entries)), node.entries))
        yield _exported(ino, node, path, first_name)

def _exported(ino: int, node: Inode, path: str, first_name: dict[int, str]) -> Entry:
    """The entry for one node; remembers the first name of a file with several."""
    if node.kind == 'dir':
        return Entry(path, 'dir')
    if node.kind == 'symlink':
        return Entry(path, 'symlink', target=node.target)
    if ino in first_name:
        return Entry(path, 'hardlink', target=first_name[ino])
    if node.nlink > 1:
        first_name[ino] = path
    return Entry(path, 'file', memoryview(node.data), links=node.nlink)


def _check_name(name: str) -> None:
    """ENAMETOOLONG for a path component longer than NAME_MAX bytes (Linux's rule)."""
    if len(name) > NAME_MAX // 4 and len(name.encode()) > NAME_MAX:
        raise FsError(Errno.NAMETOOLONG, name[:32])


def clamp_time(ns: int) -> int:
    """A timestamp a guest set, as the i64 the saved form holds."""
    return min(max(ns, 0), MAX_TIME_NS)


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


