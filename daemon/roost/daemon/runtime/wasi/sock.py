"""Sockets: preview1 has no way to create one, so like wasmtime every call on an existing
descriptor answers ENOTSOCK and on a missing one EBADF."""
from __future__ import annotations

from typing import TYPE_CHECKING

from roost.daemon.runtime.wasi.abi import Errno
from roost.daemon.runtime.wasi.durable import Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost


def _notsock(host: WasiHost, fd: int) -> int:
    host.fds.get(fd)
    return Errno.NOTSOCK


@hostcall(Kind.LOCAL, 'iii')
def sock_accept(host: WasiHost, fd: int, flags: int, out: int) -> int:
    return _notsock(host, fd)


@hostcall(Kind.LOCAL, 'iiiiii')
def sock_recv(host: WasiHost, fd: int, iovs: int, n: int, flags: int, nread: int,
              roflags: int) -> int:
    return _notsock(host, fd)


@hostcall(Kind.LOCAL, 'iiiii')
def sock_send(host: WasiHost, fd: int, iovs: int, n: int, flags: int, nwritten: int) -> int:
    return _notsock(host, fd)


@hostcall(Kind.LOCAL, 'ii')
def sock_shutdown(host: WasiHost, fd: int, how: int) -> int:
    return _notsock(host, fd)
