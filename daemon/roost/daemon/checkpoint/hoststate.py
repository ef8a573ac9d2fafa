"""The host side of a checkpoint: a `WasiState` as versioned, checksummed bytes.

    magic "RHST", u16 major, u16 minor, 32-byte sha256 of the rest,
    u32 JSON length, JSON (argv, env, stdin position, clocks, fd table, HTTP: requests
    numbered, responses held unread with base64 headers and body; the /dev/http device
    folder: its inodes, each device file's request or response), then the VFS image
    (`Vfs.to_bytes`, itself versioned and checksummed).

Stdin's bytes are not repeated here: they are an input of the execution, stored once when it
starts; a state is decoded together with them.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import struct
from typing import TYPE_CHECKING

from roost.daemon.errors import CorruptCheckpoint
from roost.daemon.lazy import load
from roost.daemon.runtime.httpdev import DevFileState, HttpDevState
from roost.daemon.runtime.outbound import Held, OutboundState
from roost.daemon.runtime.vfs import FsError, Vfs, state_to_bytes

if TYPE_CHECKING:        # (runtime.wasi imports wasmtime: only a decode needs it, not roostd's start)
    import zstandard

    from roost.daemon.runtime.wasi import WasiState
else:
    from roost.daemon.lazy import zstandard

MAGIC = b"RHST"
FORMAT_VERSION = (1, 3)     # 1.1: clocks carry the filesystem clock (fs_time_ns ...); 1.2: http;
                            # 1.3: httpdev (the /dev/http folder)
_HEADER = struct.Struct("<4sHH32s")


def encode(state: WasiState) -> bytes:
    meta = {"argv": list(state.argv), "env": [list(kv) for kv in state.env],
            "stdin_position": state.stdin.position, "poll_started_ns": state.poll_started_ns,
            "clocks": dataclasses.asdict(state.clocks),
            "fds": {"entries": [dataclasses.asdict(e) for e in state.fds.entries],
                    "free": list(state.fds.free)},
            "http": _http_meta(state.http), "httpdev": _httpdev_meta(state.httpdev)}
    raw = json.dumps(meta, sort_keys=True).encode()
    body = struct.pack("<I", len(raw)) + raw + state_to_bytes(state.vfs)
    return _HEADER.pack(MAGIC, *FORMAT_VERSION, hashlib.sha256(body).digest()) + body


# What a blob whose checksum holds but whose contents do not decode raises on the way (JSON,
# the VFS image's zstd and struct fields, dataclass fields): a checkpoint written by a bug, or
# bytes crafted to pass the checksum. Each is reported as the checkpoint being corrupt.
# (A function: zstandard is imported at the first decode, not at roostd's start.)
def _decoding_errors() -> tuple[type[Exception], ...]:
    return (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError,
            RecursionError, struct.error, binascii.Error, zstandard.ZstdError, FsError)


def decode(blob: bytes, stdin: bytes) -> WasiState:
    """CorruptCheckpoint on a bad magic, an unsupported version, a checksum mismatch or
    contents that do not decode: never a bare ValueError, KeyError or struct.error."""
    if len(blob) < _HEADER.size:
        raise CorruptCheckpoint(f"host state: {len(blob)} bytes, too short")
    magic, major, minor, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC or major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
        raise CorruptCheckpoint(f"host state: bad magic or unsupported version {major}.{minor}")
    body = memoryview(blob)[_HEADER.size:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptCheckpoint("host state: checksum mismatch")
    try:
        return _state(body, stdin)
    except _decoding_errors() as e:
        raise CorruptCheckpoint(f"host state: contents do not decode "
                                f"({type(e).__name__}: {str(e)[:200]})") from None


def _state(body: memoryview, stdin: bytes) -> WasiState:
    load("roost.daemon.runtime.wasi")          # (wasmtime: see `lazy.load`)
    from roost.daemon.runtime.wasi import WasiState
    from roost.daemon.runtime.wasi.clocks import ClockState
    from roost.daemon.runtime.wasi.fds import FdRecord, FdTableState
    from roost.daemon.runtime.wasi.stdio import StdinState
    (n,) = struct.unpack_from("<I", body)
    meta = json.loads(bytes(body[4:4 + n]))
    vfs = Vfs.from_bytes(bytes(body[4 + n:]))
    fds = FdTableState(tuple(FdRecord(**e) for e in meta["fds"]["entries"]), tuple(meta["fds"]["free"]))
    return WasiState(tuple(meta["argv"]), tuple(tuple(kv) for kv in meta["env"]),
                     StdinState(stdin, meta["stdin_position"]), ClockState(**meta["clocks"]),
                     fds, vfs.save(), meta.get("poll_started_ns", 0), _http_state(meta.get("http")),
                     _httpdev_state(meta.get("httpdev", {})))


def _http_meta(state: OutboundState) -> dict:
    return {"requests": state.requests, "next_handle": state.next_handle,
            "last_error": state.last_error,
            "held": [[handle, held.status, base64.b64encode(held.headers).decode(),
                      base64.b64encode(held.body).decode()] for handle, held in state.held]}


def _http_state(meta: dict | None) -> OutboundState:
    """(A state before 1.2 has made no requests.)"""
    if meta is None:
        return OutboundState()
    held = tuple((int(h), Held(int(status), base64.b64decode(headers, validate=True),
                               base64.b64decode(body, validate=True)))
                 for h, status, headers, body in meta["held"])
    return OutboundState(int(meta["requests"]), int(meta["next_handle"]), held,
                         str(meta["last_error"]))


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def _httpdev_meta(state: HttpDevState | None) -> dict | None:
    if state is None:
        return None
    return {"root": state.root, "error": state.error,
            "files": [[f.ino, _b64(f.request), _b64(f.response), f.errno] for f in state.files]}


def _httpdev_state(meta: dict | None) -> HttpDevState | None:
    """(A state before 1.3 has no device folder: `{}`, root 0. None: a fresh state, the
    folder not decided yet.)"""
    if meta is None:
        return None
    files = tuple(DevFileState(int(ino), _unb64(request) or b"", _unb64(response), int(errno))
                  for ino, request, response, errno in meta.get("files", ()))
    return HttpDevState(int(meta.get("root", 0)), int(meta.get("error", 0)), files)


def version(blob: bytes) -> tuple[int, int]:
    """The format version a host state blob declares (for `roost debug`; `decode` checks it)."""
    if len(blob) < _HEADER.size:
        raise CorruptCheckpoint(f"host state: {len(blob)} bytes, too short")
    _, major, minor, _ = _HEADER.unpack_from(blob)
    return major, minor
