"""Host calls on an open descriptor's data: read, write, seek, stat, size, times, readdir.

Like wasmtime's preview1 adapter, one read or write call transfers only the first non-empty
iovec (wasi-libc loops), pwrite on an O_APPEND descriptor appends (Linux semantics), and a
stdio descriptor answers ESPIPE where a seekable file is required.

Every size change goes through `Vfs.write`/`Vfs.truncate`, which enforce the execution's VFS
limits (EFBIG, ENOSPC); times come from the VFS's journaled clock (`Vfs.now`), never the host's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from roost.daemon.runtime.vfs import MAX_OFFSET, clamp_time
from roost.daemon.runtime.wasi import abi
from roost.daemon.runtime.wasi.abi import Errno, FsError
from roost.daemon.runtime.wasi.clocks import fs_sync
from roost.daemon.runtime.wasi.durable import Kind, hostcall
from roost.daemon.runtime.wasi.fds import FdEntry

if TYPE_CHECKING:
    from roost.daemon.runtime.vfs import Inode
    from roost.daemon.runtime.wasi.host import WasiHost

_I64 = 1 << 63


def _read_kind(host: WasiHost, fd: int, *_: int) -> Kind:
    """Stdin is a durable input (copied into the execution's state at start, with its read
    position saved in `StdinState`), so reading it replays deterministically: LOCAL. A live
    stdin stream would make this READS_WORLD."""
    return Kind.LOCAL


def _write_kind(host: WasiHost, fd: int, *_: int) -> Kind:
    e = host.fds.used.get(fd)
    return Kind.CHANGES_WORLD if e is not None and e.kind in ('stdout', 'stderr') else Kind.LOCAL


def _node(host: WasiHost, e: FdEntry) -> Inode:
    return host.vfs.inodes[e.ino]


def _readable(host: WasiHost, e: FdEntry) -> bytes | bytearray:
    """A file's bytes for a read. A /dev/http file's first read makes its request (the durable
    call, `runtime.httpdev`) and reads the response from its start."""
    dev = host.httpdev
    if not dev.owns(e.ino):
        return _node(host, e).data
    if dev.answer(e.ino, host.http):
        e.position = 0
    return dev.content(e.ino, host.http)


def _size(host: WasiHost, ino: int) -> int:
    dev = host.httpdev
    return dev.size(ino, host.http) if dev.owns(ino) else host.vfs.inodes[ino].size()


@hostcall(_read_kind, 'iiii')
def fd_read(host: WasiHost, fd: int, iovs: int, n: int, nread: int) -> int:
    e = host.fds.get(fd)
    mem = host.mem()
    buf, size = mem.first_iovec(iovs, n)
    mem.check(buf, size)
    if e.kind == 'stdin':
        data = host.stdin.read(size)
    elif e.kind == 'file':
        if not e.read and e.write:
            return Errno.BADF
        content = _readable(host, e)
        data = bytes(content[e.position:e.position + size])
        e.position += len(data)
    else:
        return Errno.BADF
    mem.write(buf, data)
    mem.put_u32(nread, len(data))
    return 0


@hostcall(Kind.LOCAL, 'iiiIi')
def fd_pread(host: WasiHost, fd: int, iovs: int, n: int, offset: int, nread: int) -> int:
    e = host.fds.get(fd)
    if e.kind == 'stdin':
        return Errno.SPIPE
    if e.kind != 'file':
        return Errno.BADF
    if not e.read and e.write:
        return Errno.BADF
    mem = host.mem()
    buf, size = mem.first_iovec(iovs, n)
    data = bytes(_readable(host, e)[offset:offset + size])
    mem.write(buf, data)
    mem.put_u32(nread, len(data))
    return 0


def _write(host: WasiHost, fd: int, iovs: int, n: int, offset: int | None, nw: int) -> int:
    e = host.fds.get(fd)
    mem = host.mem()
    if e.kind in ('stdout', 'stderr'):
        if offset is not None:
            return Errno.SPIPE
        buf, size = mem.first_iovec(iovs, n)
        data = mem.read(buf, size)
        fs_sync(host)         # a file time the output may show is journaled before it leaves
        host.output(1 if e.kind == 'stdout' else 2, data)
    elif e.kind == 'file':
        if not e.write:
            return Errno.BADF
        buf, size = mem.first_iovec(iovs, n)
        data = mem.read(buf, size)
        if host.httpdev.owns(e.ino):        # a request: appended, whatever the offset
            host.httpdev.write(e.ino, data)
            e.position += len(data) if offset is None else 0
            mem.put_u32(nw, len(data))
            return 0
        node = _node(host, e)
        at = len(node.data) if e.append else (e.position if offset is None else offset)
        host.vfs.write(e.ino, at, data)
        if offset is None:
            e.position = len(node.data) if e.append else at + len(data)
    else:
        return Errno.BADF
    mem.put_u32(nw, len(data))
    return 0


@hostcall(_write_kind, 'iiii')
def fd_write(host: WasiHost, fd: int, iovs: int, n: int, nwritten: int) -> int:
    return _write(host, fd, iovs, n, None, nwritten)


@hostcall(Kind.LOCAL, 'iiiIi')
def fd_pwrite(host: WasiHost, fd: int, iovs: int, n: int, offset: int, nwritten: int) -> int:
    return _write(host, fd, iovs, n, offset, nwritten)


@hostcall(Kind.LOCAL, 'iIii')
def fd_seek(host: WasiHost, fd: int, offset: int, whence: int, out: int) -> int:
    e = host.fds.seekable(fd)
    if offset >= _I64:
        offset -= 1 << 64
    if whence == abi.WHENCE_SET:
        pos = offset
    elif whence == abi.WHENCE_CUR:
        pos = e.position + offset
    elif whence == abi.WHENCE_END:
        pos = _size(host, e.ino) + offset
    else:
        return Errno.INVAL
    if pos < 0 or pos > MAX_OFFSET:
        return Errno.INVAL
    e.position = pos
    host.mem().put_u64(out, pos)
    return 0


@hostcall(Kind.LOCAL, 'ii')
def fd_tell(host: WasiHost, fd: int, out: int) -> int:
    host.mem().put_u64(out, host.fds.seekable(fd).position)
    return 0


@hostcall(Kind.LOCAL, 'iIIi')
def fd_advise(host: WasiHost, fd: int, offset: int, length: int, advice: int) -> int:
    host.fds.file(fd)
    return 0 if advice <= 5 else Errno.INVAL


@hostcall(Kind.LOCAL, 'iII')
def fd_allocate(host: WasiHost, fd: int, offset: int, length: int) -> int:
    host.fds.file(fd)
    return Errno.NOTSUP


@hostcall(Kind.LOCAL, 'i')
def fd_datasync(host: WasiHost, fd: int) -> int:
    host.fds.file(fd)
    return 0


@hostcall(Kind.LOCAL, 'i')
def fd_sync(host: WasiHost, fd: int) -> int:
    host.fds.file(fd)
    return 0


def filestat(host: WasiHost, ino: int) -> bytes:
    """The 64-byte filestat of an inode (dev 1, like wasmtime)."""
    n = host.vfs.inodes[ino]
    return abi.FILESTAT.pack(1, ino, abi.FILETYPE[n.kind], n.nlink, _size(host, ino),
                             n.atim_ns, n.mtim_ns, n.ctim_ns)


@hostcall(Kind.LOCAL, 'ii')
def fd_filestat_get(host: WasiHost, fd: int, out: int) -> int:
    e = host.fds.get(fd)
    if e.kind in ('stdin', 'stdout', 'stderr'):
        data = abi.FILESTAT.pack(0, 0, abi.FT_UNKNOWN, 0, 0, 0, 0, 0)
    else:
        data = filestat(host, e.ino)
    host.mem().write(out, data)
    return 0


@hostcall(Kind.LOCAL, 'iI')
def fd_filestat_set_size(host: WasiHost, fd: int, size: int) -> int:
    e = host.fds.file(fd)
    if not e.write or size > MAX_OFFSET or host.httpdev.owns(e.ino):
        return Errno.INVAL   # Linux ftruncate on a read-only descriptor, or a negative length
    host.vfs.truncate(e.ino, size)
    return 0


def new_times(host: WasiHost, atim: int, mtim: int, flags: int) -> tuple[int | None, int | None]:
    """(atime, mtime) to set, None = unchanged; EINVAL when both a time and NOW are asked.
    A given time is clamped to what the saved form holds (i64 ns)."""
    def one(set_flag: int, now_flag: int, ts: int) -> int | None:
        if flags & set_flag and flags & now_flag:
            raise FsError(Errno.INVAL)
        if flags & set_flag:
            return clamp_time(ts)
        return host.vfs.now() if flags & now_flag else None
    return (one(abi.FST_ATIM, abi.FST_ATIM_NOW, atim),
            one(abi.FST_MTIM, abi.FST_MTIM_NOW, mtim))


def set_times(host: WasiHost, node: Inode, times: tuple[int | None, int | None]) -> None:
    if times[0] is not None:
        node.atim_ns = times[0]
    if times[1] is not None:
        node.mtim_ns = times[1]
    node.ctim_ns = host.vfs.now()


@hostcall(Kind.LOCAL, 'iIIi')
def fd_filestat_set_times(host: WasiHost, fd: int, atim: int, mtim: int, flags: int) -> int:
    times = new_times(host, atim, mtim, flags)
    e = host.fds.node_fd(fd)
    set_times(host, _node(host, e), times)
    return 0


def _dirents(host: WasiHost, e: FdEntry) -> list[tuple[int, int, bytes]]:
    """(d_ino, d_type, name) for '.', '..' and the sorted entries, as wasmtime lists them."""
    node = _node(host, e)
    out = [(e.ino, abi.FT_DIR, b'.'), (e.ino, abi.FT_DIR, b'..')]
    for name in sorted(node.entries):
        ino = node.entries[name]
        out.append((ino, abi.FILETYPE[host.vfs.inodes[ino].kind], name.encode()))
    return out


@hostcall(Kind.LOCAL, 'iiiIi')
def fd_readdir(host: WasiHost, fd: int, buf: int, buf_len: int, cookie: int, out: int) -> int:
    e = host.fds.dir(fd)
    mem = host.mem()
    mem.check(buf, buf_len)
    chunks, cap = [], buf_len
    for i, (ino, ftype, name) in enumerate(_dirents(host, e)[cookie:], start=cookie + 1):
        head = abi.DIRENT.pack(i, ino, len(name), ftype)[:cap]
        chunks.append(head)
        cap -= len(head)
        if cap == 0:
            break
        name = name[:cap]
        chunks.append(name)
        cap -= len(name)
        if cap == 0:
            break
    mem.write(buf, b''.join(chunks))
    mem.put_u32(out, buf_len - cap)
    return 0
