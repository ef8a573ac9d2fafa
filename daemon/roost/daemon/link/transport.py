"""The framed byte protocol between the supervisor and a worker process (a socketpair).

    frame   = u64 length-of-rest, u8 kind, body
    body    = kind OUTPUT:  u8 fd, u64 stream offset, raw bytes   (hot paths: no JSON)
              kind JOURNAL: one encoded journal record (roost.daemon.checkpoint.journal)
              any other:    u32 meta length, meta JSON, then blobs as (u64 length, bytes)*

Kinds: START (supervisor -> worker: spec, stdin, filesystem, journal to replay, checkpoint to
restore) and CONTROL (checkpoint / pause / throttle requests); for a standby worker (a live
migration's target), APPLY (a newer checkpoint: page map and new frames) and GO (run: the
final checkpoint's host state, stack and journal), answered by APPLIED; READY, OUTPUT,
JOURNAL, PAGES (a part of a checkpoint's page frames, sent while the rest is compressed),
CHECKPOINT (meta, host state, asyncify stack, page lists, the last page frames), STATS and END
(worker -> supervisor); SYNC (worker: make the journal durable up to here, a guest's HTTP
request is about to leave), answered by SYNCED once it is stored and replicated; HTTP
(worker: a request's event, for metrics and `roost inspect`); REPLAY (supervisor: the journal
to replay, a range at a time after START) and REPLAY_MORE (worker: one was taken, send more).
OUTPUT carries the byte offset of the data in its
stream, so output that a recovering guest produces again is recognised and not stored twice.
The reader returns every complete frame it has buffered, so one LMDB transaction can absorb a
burst of guest output.

`messages` has a typed record per kind (`Link.send_message` sends one); this module knows
only kinds, JSON and blobs.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

START, READY, OUTPUT, JOURNAL, STATS, END = b"S", b"R", b"O", b"J", b"T", b"E"
OUTPUT_PIECE = 1 << 20          # the largest output record (see `Link.send_output`)
CONTROL, CHECKPOINT = b"C", b"K"      # supervisor -> worker request; worker -> supervisor checkpoint
PAGES = b"P"                          # worker -> supervisor: a part of a checkpoint's page frames
APPLY, GO = b"A", b"G"                # supervisor -> standby worker: a newer checkpoint; run it
APPLIED = b"D"                        # standby -> supervisor: a checkpoint applied
SYNC, SYNCED = b"Y", b"Z"             # worker -> supervisor: make the journal durable up to
#                                       here (a request is about to leave); the answer
HTTP = b"H"                           # worker -> supervisor: what a guest's request did
REPLAY = b"L"                         # supervisor -> worker: a range of the journal to replay
REPLAY_MORE = b"M"                    # worker -> supervisor: a range was taken, send the next
_HEAD = struct.Struct("<Qc")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_IOV_MAX = 512                 # buffers per sendmsg (Linux allows 1024)
BIG_FRAME = 1 << 20            # frames above this are received into their own buffer

Blob: TypeAlias = bytes | memoryview    # a big frame's blobs are views of its buffer (`_read_big`)


@dataclass
class Frame:
    kind: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    blobs: list[Blob] = field(default_factory=list)
    fd: int = 0          # OUTPUT only
    offset: int = 0      # OUTPUT only
    data: bytes = b""    # OUTPUT and JOURNAL


class Encodable(Protocol):
    """A message record (`link.messages`): it knows its frame."""

    def encode(self) -> tuple[bytes, dict[str, Any], list[Blob]]: ...


def _parts(kind: bytes, meta: dict[str, Any] | None, blobs: Sequence[Blob]) -> list[Blob]:
    raw = json.dumps(meta or {}).encode()
    parts: list[Blob] = [b"", _U32.pack(len(raw)) + raw]
    for blob in blobs:
        parts += [_U64.pack(len(blob)), blob]
    parts[0] = _HEAD.pack(sum(len(p) for p in parts) + 1, kind)
    return parts


def encode(kind: bytes, meta: dict[str, Any] | None = None, blobs: Sequence[Blob] = ()) -> bytes:
    return b"".join(_parts(kind, meta, blobs))


def _send_buffers(sock: socket.socket, buffers: list[Blob]) -> None:
    """sendall for a list of buffers, without joining them."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + _IOV_MAX])
        while sent and i < len(views):
            if sent >= len(views[i]):
                sent -= len(views[i])
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0


def _decode(kind: bytes, body: memoryview, views: bool = False) -> Frame:
    """`views`: blobs stay views of `body` (a large frame's own buffer) instead of copies."""
    if kind == OUTPUT:
        return Frame(kind, fd=body[0], offset=_U64.unpack_from(body, 1)[0], data=bytes(body[9:]))
    if kind == JOURNAL:
        return Frame(kind, data=bytes(body))
    (n,) = _U32.unpack_from(body, 0)
    meta = json.loads(bytes(body[4:4 + n]))
    blobs: list[Blob] = []
    off = 4 + n
    while off < len(body):
        (size,) = _U64.unpack_from(body, off)
        blob = body[off + 8:off + 8 + size]
        blobs.append(blob if views else bytes(blob))
        off += 8 + size
    return Frame(kind, meta, blobs)


class Link:
    """One end of the socketpair. send* is thread-safe; read_batch is for one reader thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._buf = bytearray()
        self._pending: list[Frame] = []

    def send(self, kind: bytes, meta: dict[str, Any] | None = None, blobs: Sequence[Blob] = ()) -> None:
        parts = _parts(kind, meta, blobs)
        with self._send_lock:
            _send_buffers(self.sock, parts)

    def send_message(self, message: Encodable) -> None:
        """A record of `link.messages`: the same bytes as `send` of its kind, meta and blobs."""
        self.send(*message.encode())

    def send_torn(self, kind: bytes, meta: dict[str, Any] | None = None, blobs: Sequence[Blob] = ()) -> None:
        """Fault point only: the first half of a frame, as a worker killed mid-write leaves it."""
        frame = encode(kind, meta, blobs)
        with self._send_lock:
            self.sock.sendall(frame[:len(frame) // 2])

    def send_output(self, fd: int, offset: int, data: Blob) -> None:
        """One write of the guest's, in frames of at most OUTPUT_PIECE bytes: each becomes one
        output record, so no record is too big to serve, push to a peer or migrate (a guest's
        1 GiB write is 1024 records, each at its own stream offset)."""
        view = memoryview(data)
        with self._send_lock:
            for at in range(0, max(len(data), 1), OUTPUT_PIECE):
                piece = view[at:at + OUTPUT_PIECE]
                head = _HEAD.pack(len(piece) + 10, OUTPUT) + bytes((fd,)) + _U64.pack(offset + at)
                self.sock.sendall(head + piece)

    def send_journal(self, records: list[bytes]) -> None:
        """Several journal records in one write (the worker batches them, see JournalSink)."""
        data = b"".join(_HEAD.pack(len(r) + 1, JOURNAL) + r for r in records)
        with self._send_lock:
            self.sock.sendall(data)

    def read_batch(self) -> list[Frame] | None:
        """Block until at least one frame is complete; None once the peer has gone."""
        if self._pending:
            frames, self._pending = self._pending, []
            return frames
        while True:
            frames = self._parse()
            if frames:
                return frames
            if len(self._buf) >= _HEAD.size and _HEAD.unpack_from(self._buf)[0] > BIG_FRAME:
                big = self._read_big()
                return [big] if big is not None else None
            try:
                chunk = self.sock.recv(1 << 20)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                return None
            self._buf += chunk

    def _read_big(self) -> Frame | None:
        """The rest of the large frame that the buffer starts with, received in place."""
        length, kind = _HEAD.unpack_from(self._buf)
        body = bytearray(length - 1)
        have = len(self._buf) - _HEAD.size
        body[:have] = self._buf[_HEAD.size:]
        del self._buf[:]
        view = memoryview(body)
        while have < len(body):
            try:
                got = self.sock.recv_into(view[have:])
            except (ConnectionResetError, OSError):
                got = 0
            if not got:
                return None
            have += got
        return _decode(kind, view, views=kind in (CHECKPOINT, PAGES, APPLY))

    def read_one(self) -> Frame | None:
        """The next frame; any others already received stay queued for read_batch."""
        frames = self.read_batch()
        if not frames:
            return None
        self._pending = frames[1:]
        return frames[0]

    def _parse(self) -> list[Frame]:
        frames: list[Frame] = []
        off, buf = 0, self._buf
        view = memoryview(buf)
        try:
            while len(buf) - off >= _HEAD.size:
                length, kind = _HEAD.unpack_from(buf, off)
                end = off + 8 + length
                if end > len(buf):
                    break
                frames.append(_decode(kind, view[off + _HEAD.size:end]))
                off = end
        finally:
            view.release()
        if off:
            del buf[:off]
        return frames

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
