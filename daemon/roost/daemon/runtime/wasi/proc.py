"""Process control: exit, raise, yield."""
from __future__ import annotations

from typing import TYPE_CHECKING

from roost.daemon.runtime.wasi.abi import Errno
from roost.daemon.runtime.wasi.durable import Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost


class GuestExit(Exception):
    """The guest called proc_exit; `code` is its exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest exited with code {code}")
        self.code = code


class GuestTrap(Exception):
    """A WASI call that wasmtime turns into a trap (e.g. proc_exit outside [0, 126))."""


@hostcall(Kind.CHANGES_WORLD, 'i', results='')
def proc_exit(host: WasiHost, code: int) -> None:
    if code >= 126:
        raise GuestTrap("exit with invalid exit status outside of [0..126)")
    raise GuestExit(code)


@hostcall(Kind.LOCAL, 'i')
def proc_raise(host: WasiHost, sig: int) -> int:
    return Errno.NOTSUP


@hostcall(Kind.LOCAL, '')
def sched_yield(host: WasiHost) -> int:
    return 0
