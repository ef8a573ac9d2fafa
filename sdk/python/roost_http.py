"""Durable HTTP requests from a Python script running in roost (CPython for WASI), in one call.

    from roost_http import request, RoostHttpError
    r = request("POST", "https://api.example/orders", [("Content-Type", "application/json")], b"{}")
    r.status, r.headers, r.body

Through roost's device folder /dev/http (the execution must run with --allow-http): the request
is written to a new file there and the response read back from it. roost makes the request
durably — journaled before it is sent, sent with an Idempotency-Key, answered from the journal
when the execution is restored — so a script killed and resumed makes each request once. Only
file I/O of the standard library: no rebuild of the interpreter, no native module.

A request that fails (not allowed, timed out, interrupted and not safe to repeat, malformed)
raises RoostHttpError, an OSError with the WASI errno and roost's message.
"""
from __future__ import annotations

import errno as errnos
import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEVICE = "/dev/http"
_names = itertools.count(1)


class RoostHttpError(OSError):
    """A request that failed: `errno` (EACCES, ECANCELED, ETIMEDOUT, EINVAL, ...) and
    `message`, roost's reason (the contents of /dev/http/error)."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(errno, message)
        self.message = message


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called `name` (any case)."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), default)


def request(method: str, url: str,
            headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
            body: bytes | str = b"") -> Response:
    """Make one request (an absolute http(s) URL) and return its response."""
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    head = f"{method} {url} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    data = head.encode() + (body.encode() if isinstance(body, str) else bytes(body))
    fd, path = _new_file()
    try:
        _write_all(fd, data)
        try:
            raw = _read_all(fd)             # the first read makes the request
        except OSError as e:
            raise RoostHttpError(e.errno or 0, last_error() or os.strerror(e.errno or 0)) from None
    finally:
        os.close(fd)
        os.unlink(path)
    return _parse(raw)


def last_error() -> str:
    """roost's message about the latest request that failed ("" if none)."""
    with open(f"{DEVICE}/error", "rb") as f:
        return f.read().decode("utf-8", "replace")


def _new_file() -> tuple[int, str]:
    """A new device file (numbered on: each request its own file, created exclusively)."""
    while True:
        path = f"{DEVICE}/py-{next(_names)}"
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise RoostHttpError(errnos.ENOENT, f"{DEVICE} is missing: run the execution with --allow-http") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> Response:
    """`HTTP/1.1 <status> <reason>\\r\\n<headers>\\r\\n<body>` as roost writes it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return Response(status, headers, body)
