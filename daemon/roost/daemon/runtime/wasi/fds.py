"""The fd table and the descriptor-level host calls (close, renumber, fdstat, prestat).

Descriptors are plain records so the table saves with the execution. Numbering follows
wasmtime's preview1 adapter exactly (guests can observe it): 0-2 are stdio, preopens follow
in mount order, a new descriptor takes the highest previously freed number, else one past the
highest in use.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from roost.daemon.runtime.wasi import abi
from roost.daemon.runtime.wasi.abi import Errno, FsError
from roost.daemon.runtime.wasi.durable import Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost

STDIO_KINDS = ('stdin', 'stdout', 'stderr')


@dataclass(slots=True)
class FdEntry:
    """One open descriptor."""
    kind: str                  # 'stdin' | 'stdout' | 'stderr' | 'dir' | 'file'
    ino: int = 0
    preopen: str | None = None
    rights_base: int = 0
    rights_inheriting: int = 0
    read: bool = False
    write: bool = False
    append: bool = False
    nonblock: bool = False
    sync_flags: int = 0        # DSYNC | RSYNC | SYNC as requested at open
    position: int = 0


@dataclass(frozen=True)
class FdRecord:
    """Saved form of an `FdEntry`."""
    fd: int
    kind: str
    ino: int
    preopen: str | None
    rights_base: int
    rights_inheriting: int
    read: bool
    write: bool
    append: bool
    nonblock: bool
    sync_flags: int
    position: int


@dataclass(frozen=True)
class FdTableState:
    """Saved form of an `FdTable`."""
    entries: tuple[FdRecord, ...]
    free: tuple[int, ...]


def file_rights(kind: str, read: bool, write: bool) -> int:
    """The rights wasmtime reports for an opened (non-preopen) file or directory."""
    r = abi.RIGHTS_ALL
    if kind == 'dir':   # wasmtime also clears PATH_FILESTAT_SET_SIZE here (observed)
        r &= ~(abi.R_FD_SEEK | abi.R_FD_FILESTAT_SET_SIZE | abi.R_PATH_FILESTAT_SET_SIZE)
    if not read:
        r &= ~(abi.R_FD_READ | abi.R_FD_READDIR)
    if not write:
        r &= ~abi.R_FD_WRITE
    return r


class FdTable:
    """fd number -> FdEntry, with wasmtime's number allocation."""

    def __init__(self) -> None:
        self.used: dict[int, FdEntry] = {}
        self.free: set[int] = set()

    @classmethod
    def initial(cls, preopens: list[tuple[str, int]]) -> FdTable:
        t = cls()
        t.push(FdEntry('stdin', rights_base=abi.R_FD_READ, rights_inheriting=abi.R_FD_READ))
        for k in ('stdout', 'stderr'):
            t.push(FdEntry(k, rights_base=abi.R_FD_WRITE, rights_inheriting=abi.R_FD_WRITE))
        for name, root in preopens:
            t.push(FdEntry('dir', root, name, abi.PREOPEN_RIGHTS_BASE,
                           abi.PREOPEN_RIGHTS_INHERITING, read=True))
        return t

    def push(self, e: FdEntry) -> int:
        if self.free:
            fd = max(self.free)
            self.free.discard(fd)
        else:
            fd = max(self.used) + 1 if self.used else 0
        self.used[fd] = e
        return fd

    def get(self, fd: int) -> FdEntry:
        e = self.used.get(fd)
        if e is None:
            raise FsError(Errno.BADF)
        return e

    def file(self, fd: int) -> FdEntry:
        e = self.used.get(fd)
        if e is None or e.kind != 'file':
            raise FsError(Errno.BADF)
        return e

    def dir(self, fd: int) -> FdEntry:
        e = self.used.get(fd)
        if e is None or e.kind != 'dir':
            raise FsError(Errno.BADF)
        return e

    def seekable(self, fd: int) -> FdEntry:
        e = self.get(fd)
        if e.kind in STDIO_KINDS:
            raise FsError(Errno.SPIPE)
        if e.kind != 'file':
            raise FsError(Errno.BADF)
        return e

    def node_fd(self, fd: int) -> FdEntry:
        """A file or directory descriptor (the VFS-backed ones)."""
        e = self.get(fd)
        if e.kind in STDIO_KINDS:
            raise FsError(Errno.BADF)
        return e

    def is_open(self, ino: int) -> bool:
        return any(e.ino == ino and e.kind in ('file', 'dir') for e in self.used.values())

    def save(self) -> FdTableState:
        recs = tuple(FdRecord(fd, *(getattr(e, f.name) for f in fields(FdEntry)))
                     for fd, e in sorted(self.used.items()))
        return FdTableState(recs, tuple(sorted(self.free)))

    @classmethod
    def restore(cls, state: FdTableState) -> FdTable:
        t = cls()
        for r in state.entries:
            t.used[r.fd] = FdEntry(*(getattr(r, f.name) for f in fields(FdEntry)))
        t.free = set(state.free)
        return t


@hostcall(Kind.LOCAL, 'i')
def fd_close(host: WasiHost, fd: int) -> int:
    e = host.fds.used.pop(fd, None)
    if e is None:
        return Errno.BADF
    host.fds.free.add(fd)
    if e.kind == 'file':
        host.vfs.collect(e.ino, host.fds.is_open(e.ino))
    return 0


@hostcall(Kind.LOCAL, 'ii')
def fd_renumber(host: WasiHost, fd: int, to: int) -> int:
    t = host.fds
    if fd not in t.used:
        return Errno.BADF
    if fd != to:
        old = t.used.get(to)
        t.used[to] = t.used.pop(fd)
        t.free.add(fd)
        t.free.discard(to)
        if old is not None and old.kind == 'file':
            host.vfs.collect(old.ino, t.is_open(old.ino))
    return 0


@hostcall(Kind.LOCAL, 'ii')
def fd_fdstat_get(host: WasiHost, fd: int, out: int) -> int:
    e = host.fds.get(fd)
    if e.kind in STDIO_KINDS:
        ft, flags = abi.FT_UNKNOWN, 0
    else:
        ft = abi.FILETYPE[host.vfs.inodes[e.ino].kind]
        flags = e.sync_flags if e.preopen is None else 0
        flags |= (abi.FDFLAG_APPEND if e.append else 0) | (abi.FDFLAG_NONBLOCK if e.nonblock else 0)
    host.mem().write(out, abi.FDSTAT.pack(ft, flags, e.rights_base, e.rights_inheriting))
    return 0


@hostcall(Kind.LOCAL, 'ii')
def fd_fdstat_set_flags(host: WasiHost, fd: int, flags: int) -> int:
    e = host.fds.file(fd)
    if flags & (abi.FDFLAG_DSYNC | abi.FDFLAG_SYNC | abi.FDFLAG_RSYNC):
        return Errno.INVAL
    e.append = bool(flags & abi.FDFLAG_APPEND)
    e.nonblock = bool(flags & abi.FDFLAG_NONBLOCK)
    return 0


@hostcall(Kind.LOCAL, 'iII')
def fd_fdstat_set_rights(host: WasiHost, fd: int, base: int, inheriting: int) -> int:
    host.fds.node_fd(fd)   # wasmtime 50 answers ENOTSUP for files and directories
    return Errno.NOTSUP


@hostcall(Kind.LOCAL, 'ii')
def fd_prestat_get(host: WasiHost, fd: int, out: int) -> int:
    e = host.fds.get(fd)
    if e.kind != 'dir' or e.preopen is None:
        return Errno.BADF
    host.mem().write(out, b'\0\0\0\0' + len(e.preopen.encode()).to_bytes(4, 'little'))
    return 0


@hostcall(Kind.LOCAL, 'iii')
def fd_prestat_dir_name(host: WasiHost, fd: int, buf: int, buf_len: int) -> int:
    e = host.fds.get(fd)
    if e.kind != 'dir' or e.preopen is None:
        return Errno.NOTDIR
    name = e.preopen.encode()
    if len(name) > buf_len:
        return Errno.NAMETOOLONG
    host.mem().write(buf, name)
    return 0
