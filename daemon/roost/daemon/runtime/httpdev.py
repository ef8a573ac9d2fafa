"""The HTTP device folder `/dev/http`: durable requests through plain file I/O, for guests that
cannot call the `roost` imports (an interpreter that cannot be rebuilt: CPython, QuickJS).

A guest creates a new file in the folder, writes a request to it and reads it back:

    write   "POST https://host/path HTTP/1.1\\r\\nName: value\\r\\n...\\r\\n\\r\\n<body>"
            (the URL absolute; the body is everything after the blank line: no Content-Length)
    read    the first read (fd_read or fd_pread) makes the request, through the same durable
            flow as the imports (`Outbound.perform`: journaled, synced, sent, its reply
            journaled; answered from the journal on replay). The file then holds the response,
            "HTTP/1.1 <status> <reason>\\r\\n<headers>\\r\\n<body>", read from offset 0.

A failed request makes that read and every later one return its errno (EACCES, ECANCELED,
ETIMEDOUT, ...) and its message readable in `/dev/http/error` (the latest failure's, as
`http_error` gives it); a malformed request is EINVAL. Writes append to the request whatever
the offset; once the request is made, a write is EINVAL (Linux's answer for a file unsuitable
for writing; EBADF would say the descriptor was not opened for writing).

The folder is a plain VFS directory and its files plain (empty) VFS files, so opening, listing,
renaming and unlinking need nothing new; what makes a file a device is its inode being in
`HttpDevice.files`, whose request and response live here, outside the VFS and its byte budget
(a guest holding 64 device files at once is the cap: EMFILE, as for held responses), and are
saved with the execution's host state (`HttpDevState`, checkpoint.hoststate).
"""
from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass, field
from http import HTTPStatus

from roost.daemon.http.policy import MAX_BODY_BYTES, RequestError, parse_headers
from roost.daemon.http.records import Request
from roost.daemon.runtime.outbound import MAX_HELD, Outbound
from roost.daemon.runtime.vfs import Errno, FsError, Vfs

MOUNT = "/dev/http"
ERROR_NAME = "error"
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


@dataclass
class DevFile:
    """One device file: the request written so far, then its answer (a response or an errno)."""
    request: bytearray = field(default_factory=bytearray)
    response: bytes | None = None
    errno: int = 0

    @property
    def answered(self) -> bool:
        return self.response is not None or self.errno != 0


@dataclass(frozen=True)
class DevFileState:
    """Saved form of a `DevFile`."""
    ino: int
    request: bytes
    response: bytes | None
    errno: int


@dataclass(frozen=True)
class HttpDevState:
    """Saved form of `HttpDevice`. `root` 0: the execution has no device folder (HTTP not
    allowed); None in a fresh `initial_state`: not decided yet (`WasiHost` decides)."""
    root: int = 0
    error: int = 0                            # the inode of /dev/http/error
    files: tuple[DevFileState, ...] = ()


class HttpDevice:
    """The device folder of one execution (or its absence: root 0)."""

    def __init__(self, state: HttpDevState = HttpDevState()) -> None:
        self.root, self.error = state.root, state.error
        self.files = {f.ino: DevFile(bytearray(f.request), f.response, f.errno) for f in state.files}

    @classmethod
    def mount(cls, vfs: Vfs) -> HttpDevice:
        """Add the folder (with its `error` file) to `vfs` as the preopen /dev/http, stamped
        with the newest time of the mounts: a time fixed by the initial state, so a replay
        builds the same folder, and no clock is read (journaled) before the guest runs."""
        stamp = max((n.mtim_ns for n in vfs.inodes.values()), default=0)
        clock, vfs.clock = vfs.clock, lambda: stamp
        try:
            vfs.add_mount(MOUNT, [])
            root = vfs.preopens[-1][1]
            return cls(HttpDevState(root, vfs.create(root, ERROR_NAME, 'file')))
        finally:
            vfs.clock = clock

    def save(self, live: Container[int]) -> HttpDevState:
        """The saved form, without the files whose inodes the VFS has dropped."""
        return HttpDevState(self.root, self.error, tuple(
            DevFileState(ino, bytes(f.request), f.response, f.errno)
            for ino, f in sorted(self.files.items()) if ino in live))

    # ---- hooks of the WASI file calls ----
    def owns(self, ino: int) -> bool:
        return ino in self.files or (ino == self.error and ino != 0)

    def create(self, vfs: Vfs, parent: int, name: str) -> int:
        """path_open creating `name` in `parent`: a device file when `parent` is the folder."""
        if parent != self.root or self.root == 0:
            return vfs.create(parent, name, 'file')
        self.files = {ino: f for ino, f in self.files.items() if ino in vfs.inodes}
        if len(self.files) >= MAX_HELD:
            raise FsError(Errno.MFILE, f"{MAX_HELD} files in {MOUNT}: unlink one first")
        ino = vfs.create(parent, name, 'file')
        self.files[ino] = DevFile()
        return ino

    def write(self, ino: int, data: bytes) -> None:
        f = self.files.get(ino)
        if f is None or f.answered:
            raise FsError(Errno.INVAL, "the request was made: the file holds its response")
        if len(f.request) + len(data) > MAX_BODY_BYTES:
            raise FsError(Errno.FBIG, f"request over {MAX_BODY_BYTES} bytes")
        f.request += data

    def answer(self, ino: int, http: Outbound) -> bool:
        """Make the request of a file not answered yet (the durable call); whether it did."""
        f = self.files.get(ino)
        if f is None or f.answered:
            return False
        try:
            request = parse_request(bytes(f.request))
        except RequestError as e:
            http.last_error, f.errno = str(e), int(Errno.INVAL)
            return True
        reply = http.perform(request)
        if reply.errno:
            f.errno = reply.errno
        else:
            f.response = status_line(reply.status) + reply.headers + b"\r\n" + reply.body
        f.request = bytearray()               # not kept once answered: it is in the journal
        return True

    def content(self, ino: int, http: Outbound) -> bytes:
        """What a read sees: the response (FsError: the request failed), the latest error's
        message, or (not answered yet, for stat and seek) the request written so far."""
        if ino == self.error:
            return http.last_error.encode()
        f = self.files[ino]
        if f.errno:
            raise FsError(Errno(f.errno))
        return f.response if f.response is not None else bytes(f.request)

    def size(self, ino: int, http: Outbound) -> int:
        try:
            return len(self.content(ino, http))
        except FsError:
            return 0


def parse_request(raw: bytes) -> Request:
    """A request as written to a device file; RequestError (EINVAL) says what is wrong."""
    blank = _BLANK_LINE.search(raw)
    if blank is None:
        raise RequestError("the request has no blank line after its headers")
    try:
        head = raw[:blank.start()].decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the request line and headers are not UTF-8") from None
    line, _, headers = head.replace("\r\n", "\n").partition("\n")
    parts = line.split(" ")
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("HTTP/")):
        raise RequestError(f"request line {line[:80]!r} is not 'METHOD URL HTTP/1.1'")
    return Request(parts[0], parts[1], tuple(parse_headers(headers.replace("\n", "\r\n"))),
                   raw[blank.end():])


def status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()
