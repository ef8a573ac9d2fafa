"""argv and environment: fixed at start, saved with the execution (LOCAL calls)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from roost.daemon.runtime.wasi.durable import Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost


def _strings(items: list[bytes], ptrs: int, buf: int, host: WasiHost) -> int:
    """Write NUL-terminated strings to `buf` and their addresses to the `ptrs` array."""
    mem = host.mem()
    blob = b''.join(s + b'\0' for s in items)
    mem.write(buf, blob)
    addrs, at = [], buf
    for s in items:
        addrs.append(at)
        at += len(s) + 1
    mem.write(ptrs, b''.join(a.to_bytes(4, 'little') for a in addrs))
    return 0


def _sizes(items: list[bytes], count_out: int, size_out: int, host: WasiHost) -> int:
    mem = host.mem()
    mem.put_u32(count_out, len(items))
    mem.put_u32(size_out, sum(len(s) + 1 for s in items))
    return 0


def _env(host: WasiHost) -> list[bytes]:
    return [f"{k}={v}".encode() for k, v in host.env]


@hostcall(Kind.LOCAL, 'ii')
def args_get(host: WasiHost, argv: int, buf: int) -> int:
    return _strings([a.encode() for a in host.argv], argv, buf, host)


@hostcall(Kind.LOCAL, 'ii')
def args_sizes_get(host: WasiHost, count_out: int, size_out: int) -> int:
    return _sizes([a.encode() for a in host.argv], count_out, size_out, host)


@hostcall(Kind.LOCAL, 'ii')
def environ_get(host: WasiHost, environ: int, buf: int) -> int:
    return _strings(_env(host), environ, buf, host)


@hostcall(Kind.LOCAL, 'ii')
def environ_sizes_get(host: WasiHost, count_out: int, size_out: int) -> int:
    return _sizes(_env(host), count_out, size_out, host)
