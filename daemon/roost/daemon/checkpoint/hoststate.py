"""The host side of a checkpoint: a `WasiState` as versioned, checksummed bytes.

    magic "RHST", u16 major, u16 minor, 32-byte sha256 of the rest,
    u32 JSON length, JSON (argv, env, stdin position, clocks, fd table), then the VFS image
    (`Vfs.to_bytes`, itself versioned and checksummed).

Stdin's bytes are not repeated here: they are an input of the execution, stored once when it
starts; a state is decoded together with them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct

from roost.daemon.runtime.vfs import Vfs, state_to_bytes
from roost.daemon.runtime.wasi import WasiState
from roost.daemon.runtime.wasi.clocks import ClockState
from roost.daemon.runtime.wasi.fds import FdRecord, FdTableState
from roost.daemon.runtime.wasi.stdio import StdinState

MAGIC = b"RHST"
FORMAT_VERSION = (1, 1)     # 1.1: clocks carry the filesystem clock (fs_time_ns ...)
_HEADER = struct.Struct("<4sHH32s")


def encode(state: WasiState) -> bytes:
    meta = {"argv": list(state.argv), "env": [list(kv) for kv in state.env],
            "stdin_position": state.stdin.position, "poll_started_ns": state.poll_started_ns,
            "clocks": dataclasses.asdict(state.clocks),
            "fds": {"entries": [dataclasses.asdict(e) for e in state.fds.entries],
                    "free": list(state.fds.free)}}
    raw = json.dumps(meta, sort_keys=True).encode()
    body = struct.pack("<I", len(raw)) + raw + state_to_bytes(state.vfs)
    return _HEADER.pack(MAGIC, *FORMAT_VERSION, hashlib.sha256(body).digest()) + body


def decode(blob: bytes, stdin: bytes) -> WasiState:
    """ValueError on a bad magic, an unsupported version or a checksum mismatch."""
    if len(blob) < _HEADER.size:
        raise ValueError("host state too short")
    magic, major, minor, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC or major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
        raise ValueError(f"host state: bad magic or unsupported version {major}.{minor}")
    body = memoryview(blob)[_HEADER.size:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError("host state: checksum mismatch")
    (n,) = struct.unpack_from("<I", body)
    meta = json.loads(bytes(body[4:4 + n]))
    vfs = Vfs.from_bytes(bytes(body[4 + n:]))
    fds = FdTableState(tuple(FdRecord(**e) for e in meta["fds"]["entries"]), tuple(meta["fds"]["free"]))
    return WasiState(tuple(meta["argv"]), tuple(tuple(kv) for kv in meta["env"]),
                     StdinState(stdin, meta["stdin_position"]), ClockState(**meta["clocks"]),
                     fds, vfs.save(), meta.get("poll_started_ns", 0))
