"""WASI preview1 ABI: constants and fast, bounds-checked access to guest memory.

Host calls are on the guest's hot path (their cost is measured), so guest memory is reached
through the raw pointer wasmtime exposes and ctypes (`string_at`, `memmove`) rather than
`Memory.read`/`Memory.write` per field. The pointer is fetched again for every call because
`memory.grow` may move the memory. Every guest pointer is bounds-checked; an out-of-bounds
access answers EFAULT instead of touching host memory.

No guest-given length sizes a host allocation before it is checked: ranges are bounds-checked
before they are read, strings (paths) longer than PATH_MAX answer ENAMETOOLONG unread, and an
iovec array is scanned in slices, however long the guest says it is.
"""
from __future__ import annotations

import ctypes
import struct
from typing import Callable

import wasmtime
from wasmtime import _ffi

from roost.daemon.runtime.vfs import PATH_MAX, Errno, FsError

__all__ = ["Errno", "FsError", "Mem"]

# filetype
FT_UNKNOWN, FT_CHAR, FT_DIR, FT_FILE, FT_SYMLINK = 0, 2, 3, 4, 7
FILETYPE = {'file': FT_FILE, 'dir': FT_DIR, 'symlink': FT_SYMLINK}

# clocks
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS, CLOCK_THREAD = 0, 1, 2, 3

# fdflags
FDFLAG_APPEND, FDFLAG_DSYNC, FDFLAG_NONBLOCK, FDFLAG_RSYNC, FDFLAG_SYNC = 1, 2, 4, 8, 16

# oflags
O_CREAT, O_DIRECTORY, O_EXCL, O_TRUNC = 1, 2, 4, 8

# lookupflags
LOOKUP_SYMLINK_FOLLOW = 1

# fstflags
FST_ATIM, FST_ATIM_NOW, FST_MTIM, FST_MTIM_NOW = 1, 2, 4, 8

# whence
WHENCE_SET, WHENCE_CUR, WHENCE_END = 0, 1, 2

# rights (bit numbers as in the witx)
R_FD_DATASYNC = 1 << 0
R_FD_READ = 1 << 1
R_FD_SEEK = 1 << 2
R_FD_FDSTAT_SET_FLAGS = 1 << 3
R_FD_SYNC = 1 << 4
R_FD_TELL = 1 << 5
R_FD_WRITE = 1 << 6
R_FD_ADVISE = 1 << 7
R_FD_ALLOCATE = 1 << 8
R_PATH_CREATE_DIRECTORY = 1 << 9
R_PATH_CREATE_FILE = 1 << 10
R_PATH_LINK_SOURCE = 1 << 11
R_PATH_LINK_TARGET = 1 << 12
R_PATH_OPEN = 1 << 13
R_FD_READDIR = 1 << 14
R_PATH_READLINK = 1 << 15
R_PATH_RENAME_SOURCE = 1 << 16
R_PATH_RENAME_TARGET = 1 << 17
R_PATH_FILESTAT_GET = 1 << 18
R_PATH_FILESTAT_SET_SIZE = 1 << 19
R_PATH_FILESTAT_SET_TIMES = 1 << 20
R_FD_FILESTAT_GET = 1 << 21
R_FD_FILESTAT_SET_SIZE = 1 << 22
R_FD_FILESTAT_SET_TIMES = 1 << 23
R_PATH_SYMLINK = 1 << 24
R_PATH_REMOVE_DIRECTORY = 1 << 25
R_PATH_UNLINK_FILE = 1 << 26
R_POLL_FD_READWRITE = 1 << 27
R_SOCK_SHUTDOWN = 1 << 28
R_SOCK_ACCEPT = 1 << 29
RIGHTS_ALL = (1 << 30) - 1

# The hard-coded rights wasmtime reports for a preopened directory.
PREOPEN_RIGHTS_BASE = (
    R_PATH_CREATE_DIRECTORY | R_PATH_CREATE_FILE | R_PATH_LINK_SOURCE | R_PATH_LINK_TARGET
    | R_PATH_OPEN | R_FD_READDIR | R_PATH_READLINK | R_PATH_RENAME_SOURCE | R_PATH_RENAME_TARGET
    | R_PATH_SYMLINK | R_PATH_REMOVE_DIRECTORY | R_PATH_UNLINK_FILE | R_PATH_FILESTAT_GET
    | R_PATH_FILESTAT_SET_TIMES | R_FD_FILESTAT_GET | R_FD_FILESTAT_SET_TIMES)
PREOPEN_RIGHTS_INHERITING = PREOPEN_RIGHTS_BASE | (
    R_FD_DATASYNC | R_FD_READ | R_FD_SEEK | R_FD_FDSTAT_SET_FLAGS | R_FD_SYNC | R_FD_TELL
    | R_FD_WRITE | R_FD_ADVISE | R_FD_ALLOCATE | R_FD_FILESTAT_GET | R_FD_FILESTAT_SET_SIZE
    | R_FD_FILESTAT_SET_TIMES | R_POLL_FD_READWRITE)

# event types
EV_CLOCK, EV_FD_READ, EV_FD_WRITE = 0, 1, 2
EV_HANGUP = 1

FILESTAT = struct.Struct('<QQBxxxxxxxQQQQQ')   # dev ino filetype nlink size atim mtim ctim
FDSTAT = struct.Struct('<BxHxxxxQQ')           # filetype flags rights_base rights_inheriting
DIRENT = struct.Struct('<QQIBxxx')              # d_next d_ino d_namlen d_type
SUBSCRIPTION = struct.Struct('<QB7xQQQH6x')     # userdata tag (clock: id timeout precision flags)
EVENT = struct.Struct('<QHBxxxxxQHxxxxxx')      # userdata errno type nbytes flags
_U32 = struct.Struct('<I')
_U64 = struct.Struct('<Q')
_IOVS = {n: struct.Struct('<%dI' % (2 * n)) for n in range(1, 17)}
IOV_SLICE = 1024                                # iovecs read at a time by first_iovec

# Our own prototypes of wasmtime's C accessors, returning plain integers: this skips building
# a ctypes pointer object and casting it on every host call (wasmtime-py's are left untouched).
_memory_data = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)(
    ('wasmtime_memory_data', _ffi.dll))
_memory_data_size = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)(
    ('wasmtime_memory_data_size', _ffi.dll))

_string_at = ctypes.string_at
_memmove = ctypes.memmove


class Mem:
    """A bounds-checked view of guest memory, valid for one host call."""
    __slots__ = ('base', 'size')

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size

    @staticmethod
    def accessor(memory: wasmtime.Memory, store: wasmtime.Store) -> Callable[[], Mem]:
        """A function returning a fresh view (re-reading base and size: memory may grow)."""
        ctx = ctypes.cast(store._context(), ctypes.c_void_p).value
        ref = ctypes.addressof(memory._memory)

        def view(_keep: tuple = (memory, store)) -> Mem:   # keeps `ref`/`ctx` alive
            return Mem(_memory_data(ctx, ref), _memory_data_size(ctx, ref))
        return view

    def check(self, ptr: int, n: int) -> int:
        """The host address of guest range [ptr, ptr+n), or FsError(FAULT)."""
        if ptr < 0 or n < 0 or ptr + n > self.size:
            raise FsError(Errno.FAULT)
        return self.base + ptr

    def read(self, ptr: int, n: int) -> bytes:
        return _string_at(self.check(ptr, n), n) if n else b''

    def write(self, ptr: int, data: bytes) -> None:
        n = len(data)
        if n:
            _memmove(self.check(ptr, n), data, n)

    def u32(self, ptr: int) -> int:
        return _U32.unpack(_string_at(self.check(ptr, 4), 4))[0]

    def put_u32(self, ptr: int, v: int) -> None:
        _memmove(self.check(ptr, 4), _U32.pack(v), 4)

    def put_u64(self, ptr: int, v: int) -> None:
        _memmove(self.check(ptr, 8), _U64.pack(v), 8)

    def string(self, ptr: int, n: int) -> str:
        """A guest UTF-8 path; invalid UTF-8 answers EILSEQ as wasmtime does, PATH_MAX bytes
        or more ENAMETOOLONG (as Linux does), before anything is read."""
        if n >= PATH_MAX:
            raise FsError(Errno.NAMETOOLONG)
        try:
            return self.read(ptr, n).decode('utf-8')
        except UnicodeDecodeError:
            raise FsError(Errno.ILSEQ) from None

    def iovecs(self, ptr: int, count: int) -> list[tuple[int, int]]:
        """(buf, len) pairs of an iovec array."""
        if count == 0:
            return []
        s = _IOVS.get(count) or struct.Struct('<%dI' % (2 * count))
        flat = s.unpack(self.read(ptr, 8 * count))
        return list(zip(flat[0::2], flat[1::2]))

    def first_iovec(self, ptr: int, count: int) -> tuple[int, int]:
        """The first non-empty buffer: wasmtime's preview1 transfers only that one per call.
        Read IOV_SLICE iovecs at a time: a guest may pass a count of millions."""
        self.check(ptr, 8 * count)
        for at in range(0, count, IOV_SLICE):
            for buf, n in self.iovecs(ptr + 8 * at, min(IOV_SLICE, count - at)):
                if n:
                    return buf, n
        return 0, 0
