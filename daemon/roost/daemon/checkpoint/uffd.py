"""The kernel's userfaultfd write-protection and PAGEMAP_SCAN interface, in ctypes.

The ABI values come from include/uapi/linux/userfaultfd.h and fs.h and
Documentation/admin-guide/mm/pagemap.rst; they are fixed UAPI, spelled out because the libc
headers of the build host may predate them. `dirty.UffdWpTracker` is the one user.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform

NR_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
UFFD_USER_MODE_ONLY = 1
UFFD_API = 0xAA
UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
FEATURES = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_ASYNC
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
PAGE_IS_WRITTEN = 1 << 1


class UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


class UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class UffdioRegister(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class UffdioWriteprotect(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64)]


class PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("categories", ctypes.c_uint64)]


class PmScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


def iowr(kind: int, nr: int, size: int) -> int:
    """The asm-generic _IOWR encoding (x86_64 and arm64 share it)."""
    return (3 << 30) | (size << 16) | (kind << 8) | nr


UFFDIO_API = iowr(0xAA, 0x3F, ctypes.sizeof(UffdioApi))
UFFDIO_REGISTER = iowr(0xAA, 0x00, ctypes.sizeof(UffdioRegister))
UFFDIO_WRITEPROTECT = iowr(0xAA, 0x06, ctypes.sizeof(UffdioWriteprotect))
PAGEMAP_SCAN = iowr(ord("f"), 16, ctypes.sizeof(PmScanArg))

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_int


def ioctl(fd: int, request: int, arg: ctypes.Structure, what: str) -> int:
    result = libc.ioctl(fd, request, ctypes.addressof(arg))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def open_uffd() -> int:
    """A userfaultfd with async WP; user-mode-only first, which needs no privilege."""
    nr = NR_USERFAULTFD.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"userfaultfd: no syscall number for {platform.machine()}")
    base_flags = os.O_CLOEXEC | os.O_NONBLOCK
    fd = libc.syscall(nr, base_flags | UFFD_USER_MODE_ONLY)
    if fd < 0:
        fd = libc.syscall(nr, base_flags)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"userfaultfd: {uffd_errno_text(ctypes.get_errno())}")
    try:
        enable_wp_async(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def uffd_errno_text(err: int) -> str:
    text = errno.errorcode.get(err, str(err))
    if err == errno.EPERM:
        text += " (vm.unprivileged_userfaultfd=0, or seccomp forbids userfaultfd)"
    return text


def enable_wp_async(fd: int) -> None:
    api = UffdioApi(api=UFFD_API, features=FEATURES)
    try:
        ioctl(fd, UFFDIO_API, api, "UFFDIO_API")
    except OSError as e:
        reason = f"UFFDIO_API: WP_ASYNC refused, kernel < 6.7? ({os.strerror(e.errno or 0)})"
        raise OSError(e.errno, reason) from None
    if api.features & FEATURES != FEATURES:
        raise OSError(errno.EOPNOTSUPP, "UFFDIO_API: kernel lacks UFFD_FEATURE_WP_ASYNC")


def register(fd: int, start: int, length: int) -> None:
    reg = UffdioRegister(range=UffdioRange(start, length), mode=UFFDIO_REGISTER_MODE_WP)
    ioctl(fd, UFFDIO_REGISTER, reg, f"UFFDIO_REGISTER {start:#x}+{length:#x}")


def write_protect(fd: int, start: int, length: int) -> None:
    wp = UffdioWriteprotect(range=UffdioRange(start, length), mode=UFFDIO_WRITEPROTECT_MODE_WP)
    ioctl(fd, UFFDIO_WRITEPROTECT, wp, f"UFFDIO_WRITEPROTECT {start:#x}+{length:#x}")
