"""The `roost` imports for durable HTTP (the ABI: sdk/HTTP_ABI.md; C: sdk/c/roost.h).

    http_request(method, method_len, url, url_len, headers, headers_len, body, body_len,
                 result) -> errno
        result: struct { u32 handle; u32 status; u32 headers_len; u32 body_len } (16 bytes)
    http_response_read(handle, headers, headers_cap, body, body_cap) -> errno
        copies the response's headers and body and releases it (EINVAL: a buffer too small,
        nothing copied, the response kept)
    http_response_close(handle) -> errno      release without reading
    http_error(buf, cap, len_out) -> errno    the message of the latest failed request

`http_request` is durable (`runtime.outbound`); the others only read or change state saved
with the execution, so they are LOCAL like the VFS calls.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from roost.daemon.http.policy import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    RequestError,
    parse_headers,
)
from roost.daemon.http.records import Request
from roost.daemon.runtime.outbound import MAX_HELD
from roost.daemon.runtime.vfs import Errno
from roost.daemon.runtime.wasi.durable import ROOST_MODULE, Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost

RESULT = struct.Struct("<IIII")


def _text(host: WasiHost, ptr: int, n: int, limit: int, what: str) -> str:
    """A UTF-8 string from guest memory, its length checked before anything is read."""
    if n > limit:
        raise RequestError(f"{what} longer than {limit} bytes")
    try:
        return host.mem().read(ptr, n).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"{what} is not UTF-8") from None


@hostcall(Kind.LOCAL, "iiiiiiiii", module=ROOST_MODULE)
def http_request(host: WasiHost, method: int, method_len: int, url: int, url_len: int,
                 headers: int, headers_len: int, body: int, body_len: int, result: int) -> int:
    mem = host.mem()
    mem.check(result, RESULT.size)
    if len(host.http.held) >= MAX_HELD:
        host.http.last_error = f"{MAX_HELD} responses are held unread: read or close one first"
        return Errno.MFILE
    if body_len > MAX_BODY_BYTES:
        host.http.last_error = f"request body over {MAX_BODY_BYTES} bytes"
        return Errno.MSGSIZE
    try:
        request = Request(_text(host, method, method_len, 32, "method"),
                          _text(host, url, url_len, MAX_URL_BYTES, "URL"),
                          tuple(parse_headers(_text(host, headers, headers_len, MAX_HEADER_BYTES,
                                                    "headers"))),
                          mem.read(body, body_len))
    except RequestError as e:
        host.http.last_error = str(e)
        return Errno.INVAL
    reply = host.http.perform(request)
    if reply.errno:
        return reply.errno
    handle = host.http.hold(reply)
    host.mem().write(result, RESULT.pack(handle, reply.status, len(reply.headers), len(reply.body)))
    return 0


@hostcall(Kind.LOCAL, "iiiii", module=ROOST_MODULE)
def http_response_read(host: WasiHost, handle: int, headers: int, headers_cap: int, body: int,
                       body_cap: int) -> int:
    held = host.http.held.get(handle)
    if held is None:
        return Errno.BADF
    if headers_cap < len(held.headers) or body_cap < len(held.body):
        return Errno.INVAL
    mem = host.mem()
    mem.check(headers, len(held.headers))
    mem.check(body, len(held.body))
    mem.write(headers, held.headers)
    mem.write(body, held.body)
    del host.http.held[handle]
    return 0


@hostcall(Kind.LOCAL, "i", module=ROOST_MODULE)
def http_response_close(host: WasiHost, handle: int) -> int:
    return 0 if host.http.held.pop(handle, None) is not None else Errno.BADF


@hostcall(Kind.LOCAL, "iii", module=ROOST_MODULE)
def http_error(host: WasiHost, buf: int, cap: int, len_out: int) -> int:
    message = host.http.last_error.encode()[:max(cap, 0)]
    mem = host.mem()
    mem.check(len_out, 4)
    mem.write(buf, message)
    mem.put_u32(len_out, len(message))
    return 0
