"""Host calls that name a path relative to a directory descriptor (path_*).

Errors follow what wasmtime (cap-std over Linux) answers: EPERM for a path that is absolute or
climbs out of its directory, EEXIST/ENOENT/ENOTDIR/EISDIR/ENOTEMPTY as Linux would, ELOOP for
opening a symlink without following it, EINVAL for contradictory open flags.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from roost.daemon.runtime.wasi import abi
from roost.daemon.runtime.wasi.abi import Errno, FsError
from roost.daemon.runtime.wasi.durable import Kind, hostcall
from roost.daemon.runtime.wasi.fds import FdEntry, file_rights
from roost.daemon.runtime.wasi.files import filestat, new_times, set_times

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost


def _dir_and_path(host: WasiHost, fd: int, ptr: int, n: int) -> tuple[int, str]:
    base = host.fds.dir(fd).ino
    return base, host.mem().string(ptr, n)


@hostcall(Kind.LOCAL, 'iii')
def path_create_directory(host: WasiHost, fd: int, ptr: int, n: int) -> int:
    base, path = _dir_and_path(host, fd, ptr, n)
    parent, name, ino = host.vfs.resolve(base, path, follow=False)
    if ino is not None:
        return Errno.EXIST
    host.vfs.create(parent, name, 'dir')
    return 0


@hostcall(Kind.LOCAL, 'iiiii')
def path_filestat_get(host: WasiHost, fd: int, flags: int, ptr: int, n: int, out: int) -> int:
    base, path = _dir_and_path(host, fd, ptr, n)
    ino = host.vfs.lookup(base, path, follow=bool(flags & abi.LOOKUP_SYMLINK_FOLLOW))
    host.mem().write(out, filestat(host, ino))
    return 0


@hostcall(Kind.LOCAL, 'iiiiIIi')
def path_filestat_set_times(host: WasiHost, fd: int, flags: int, ptr: int, n: int,
                            atim: int, mtim: int, fst: int) -> int:
    times = new_times(host, atim, mtim, fst)
    base, path = _dir_and_path(host, fd, ptr, n)
    ino = host.vfs.lookup(base, path, follow=bool(flags & abi.LOOKUP_SYMLINK_FOLLOW))
    set_times(host, host.vfs.inodes[ino], times)
    return 0


@hostcall(Kind.LOCAL, 'iiiiiii')
def path_link(host: WasiHost, old_fd: int, old_flags: int, old_ptr: int, old_n: int,
              new_fd: int, new_ptr: int, new_n: int) -> int:
    old_base, old_path = _dir_and_path(host, old_fd, old_ptr, old_n)
    new_base, new_path = _dir_and_path(host, new_fd, new_ptr, new_n)
    if old_flags & abi.LOOKUP_SYMLINK_FOLLOW:
        return Errno.INVAL
    vfs = host.vfs
    src = vfs.lookup(old_base, old_path, follow=False)
    parent, name, dst = vfs.resolve(new_base, new_path, follow=False)
    if dst is not None:
        return Errno.EXIST
    if vfs.inodes[src].kind == 'dir':
        return Errno.PERM
    vfs.link(parent, name, src)
    return 0


def _open_existing(host: WasiHost, ino: int, oflags: int, write: bool) -> None:
    node = host.vfs.inodes[ino]
    if node.kind == 'symlink':
        raise FsError(Errno.LOOP)
    if node.kind == 'dir':
        if write or oflags & (abi.O_TRUNC | abi.O_CREAT):
            raise FsError(Errno.ISDIR)
    elif oflags & abi.O_DIRECTORY:
        raise FsError(Errno.NOTDIR)
    elif oflags & abi.O_TRUNC:
        host.vfs.truncate(ino, 0)


def _open_ino(host: WasiHost, base: int, path: str, lookup: int, oflags: int,
              write: bool) -> int:
    excl = oflags & abi.O_CREAT and oflags & abi.O_EXCL
    follow = bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW) and not excl
    parent, name, ino = host.vfs.resolve(base, path, follow=follow)
    if ino is None:
        if not oflags & abi.O_CREAT:
            raise FsError(Errno.NOENT)
        if path.endswith('/'):
            raise FsError(Errno.ISDIR)
        return host.httpdev.create(host.vfs, parent, name)     # a device file in /dev/http
    if excl:
        raise FsError(Errno.EXIST)
    _open_existing(host, ino, oflags, write)
    return ino


@hostcall(Kind.LOCAL, 'iiiiiIIii')
def path_open(host: WasiHost, fd: int, lookup: int, ptr: int, n: int, oflags: int,
              rights: int, inheriting: int, fdflags: int, out: int) -> int:
    mem = host.mem()
    path = mem.string(ptr, n)
    d = host.fds.get(fd)
    if d.kind == 'file':
        return Errno.NOTDIR
    if d.kind != 'dir':
        return Errno.BADF
    if oflags & abi.O_DIRECTORY and oflags & (abi.O_CREAT | abi.O_EXCL | abi.O_TRUNC):
        return Errno.INVAL
    read, write = bool(rights & abi.R_FD_READ), bool(rights & abi.R_FD_WRITE)
    ino = _open_ino(host, d.ino, path, lookup, oflags, write)
    kind = host.vfs.inodes[ino].kind
    r = file_rights(kind, read, write)
    entry = FdEntry(kind, ino, None, r, r, read, write,
                    append=kind == 'file' and bool(fdflags & abi.FDFLAG_APPEND),
                    nonblock=kind == 'file' and bool(fdflags & abi.FDFLAG_NONBLOCK),
                    sync_flags=fdflags & (abi.FDFLAG_DSYNC | abi.FDFLAG_RSYNC | abi.FDFLAG_SYNC))
    mem.put_u32(out, host.fds.push(entry))
    return 0


@hostcall(Kind.LOCAL, 'iiiiii')
def path_readlink(host: WasiHost, fd: int, ptr: int, n: int, buf: int, buf_len: int,
                  out: int) -> int:
    base, path = _dir_and_path(host, fd, ptr, n)
    node = host.vfs.inodes[host.vfs.lookup(base, path, follow=False)]
    if node.kind != 'symlink':
        return Errno.INVAL
    target = node.target.encode()[:buf_len]
    mem = host.mem()
    mem.write(buf, target)
    mem.put_u32(out, len(target))
    return 0


@hostcall(Kind.LOCAL, 'iii')
def path_remove_directory(host: WasiHost, fd: int, ptr: int, n: int) -> int:
    base, path = _dir_and_path(host, fd, ptr, n)
    parent, name, ino = host.vfs.resolve(base, path, follow=False)
    if ino is None:
        return Errno.NOENT
    if name in ('.', '..'):
        return Errno.INVAL if name == '.' else Errno.NOTEMPTY
    node = host.vfs.inodes[ino]
    if node.kind != 'dir':
        return Errno.NOTDIR
    if node.entries:
        return Errno.NOTEMPTY
    host.vfs.unlink(parent, name)
    host.vfs.collect(ino, host.fds.is_open(ino))
    return 0


@hostcall(Kind.LOCAL, 'iii')
def path_unlink_file(host: WasiHost, fd: int, ptr: int, n: int) -> int:
    base, path = _dir_and_path(host, fd, ptr, n)
    parent, name, ino = host.vfs.resolve(base, path, follow=False)
    if ino is None:
        return Errno.NOENT
    if name in ('.', '..') or host.vfs.inodes[ino].kind == 'dir':
        return Errno.ISDIR
    host.vfs.unlink(parent, name)
    host.vfs.collect(ino, host.fds.is_open(ino))
    return 0


@hostcall(Kind.LOCAL, 'iiiiii')
def path_rename(host: WasiHost, old_fd: int, old_ptr: int, old_n: int, new_fd: int,
                new_ptr: int, new_n: int) -> int:
    old_base, old_path = _dir_and_path(host, old_fd, old_ptr, old_n)
    new_base, new_path = _dir_and_path(host, new_fd, new_ptr, new_n)
    vfs = host.vfs
    sp, sname, src = vfs.resolve(old_base, old_path, follow=False)
    if src is None:
        return Errno.NOENT
    dp, dname, dst = vfs.resolve(new_base, new_path, follow=False)
    if sname in ('.', '..') or dname in ('.', '..'):
        return Errno.INVAL
    if src == dst:
        return 0
    src_dir = vfs.inodes[src].kind == 'dir'
    if dst is not None:
        dnode = vfs.inodes[dst]
        if src_dir and dnode.kind != 'dir':
            return Errno.NOTDIR
        if not src_dir and dnode.kind == 'dir':
            return Errno.ISDIR
        if dnode.kind == 'dir' and dnode.entries:
            return Errno.NOTEMPTY
    elif not src_dir and new_path.endswith('/'):
        return Errno.NOTDIR
    if src_dir and vfs.is_ancestor(src, dp):
        return Errno.INVAL
    vfs.move(sp, sname, dp, dname)
    if dst is not None:
        vfs.collect(dst, host.fds.is_open(dst))
    return 0


@hostcall(Kind.LOCAL, 'iiiii')
def path_symlink(host: WasiHost, old_ptr: int, old_n: int, fd: int, new_ptr: int,
                 new_n: int) -> int:
    target = host.mem().string(old_ptr, old_n)
    base, path = _dir_and_path(host, fd, new_ptr, new_n)
    parent, name, ino = host.vfs.resolve(base, path, follow=False)
    if ino is not None:
        return Errno.EXIST
    if path.endswith('/'):
        return Errno.NOENT
    if target.startswith('/'):
        return Errno.PERM   # cap-std refuses to create absolute symlinks
    host.vfs.create(parent, name, 'symlink', target=target)
    return 0
