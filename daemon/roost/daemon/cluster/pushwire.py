"""The PushCheckpoint stream as both ends see it: how a push cuts values into messages and
joins them again, and the bounds every message a peer pushes is held to.

    CheckpointChunk(header) -> BlobPart(host, stack[, stdin, initial vfs]) pieces
        -> PageFrame(version, index, data)... -> LogRecord pieces... -> JournalRecord pieces...

No message carries more than PIECE of a value; a value of the header announces its size, and
the receiver takes that many bytes and no more (`read_blobs`). Everything a peer sends is
bounded before anything is allocated for it (`Bounds`): a hostile or broken peer costs a
refused push, never memory or a damaged store.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from roost.daemon.checkpoint import manifest as manifests
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.checkpoint.pagemap import MAX_PAGES
from roost.daemon.checkpoint.transfer import Records
from roost.daemon.errors import FormatError, InvalidRequest
from roost.daemon.service.fields import short
from roost.daemon.store import logrecord
from roost.v1 import peer_pb2 as pb

Blob = pb.BlobPart.Kind
BLOB_SIZE = {Blob.HOST: "host_bytes", Blob.STACK: "stack_bytes", Blob.STDIN: "stdin_bytes",
             Blob.INITIAL_VFS: "initial_vfs_bytes"}
BLOB_INLINE = {Blob.HOST: "host", Blob.STACK: "stack", Blob.STDIN: "stdin",
               Blob.INITIAL_VFS: "initial_vfs"}
PIECE = 1 << 20                # no message of a push carries more than this of a value


MAX_BLOB = 1 << 30          # a header's value sent in pieces (host state: the files, at most)
MAX_JOINED = 1 << 30        # an output or journal record joined from pieces


def read_blobs(header: pb.CheckpointHeader, chunks: Iterator[pb.CheckpointChunk]) -> dict[Blob, bytes]:
    """The header's large values: inline in the header (an older sender), or the BlobParts
    that follow it, as many bytes of each as the header announces and no more."""
    out: dict[Blob, bytes] = {kind: getattr(header, name) for kind, name in BLOB_INLINE.items()}
    wanted = {kind: getattr(header, size) for kind, size in BLOB_SIZE.items() if getattr(header, size)}
    if any(size > MAX_BLOB for size in wanted.values()):
        raise InvalidRequest(f"push of {header.id}: a value of more than {MAX_BLOB} bytes")
    parts: dict[Blob, list[bytes]] = {kind: [] for kind in wanted}
    left = dict(wanted)
    while any(left.values()):
        chunk = next(chunks, None)
        part = chunk.blob if chunk is not None and chunk.WhichOneof("part") == "blob" else None
        if part is None or left.get(part.kind, 0) < len(part.data) or not part.data:
            raise InvalidRequest(f"push of {header.id}: its values end before the sizes its "
                                 "header announces, or overrun them")
        parts[part.kind].append(part.data)
        left[part.kind] -= len(part.data)
    out.update({kind: b"".join(pieces) for kind, pieces in parts.items()})
    return out


class Joined:
    """A push's output and journal records, joined from their pieces (a record of `continues`
    messages), until they are taken to be stored."""

    def __init__(self, exec_id: str) -> None:
        self.exec_id = exec_id
        self.logs: list[tuple[int, bytes]] = []
        self.journal: list[tuple[int, bytes]] = []
        self.size = 0
        self._open: dict[str, tuple[int, list[bytes], int]] = {}   # kind -> (seq, pieces, bytes)

    def add(self, chunk: pb.CheckpointChunk) -> None:
        kind = chunk.WhichOneof("part")
        message = getattr(chunk, kind)
        seq, pieces, size = self._open.pop(kind, (message.seq, [], 0))
        if seq != message.seq or size + len(message.data) > MAX_JOINED:
            raise InvalidRequest(f"push of {self.exec_id}: a {kind} record's pieces are of two "
                                 f"records, or more than {MAX_JOINED} bytes")
        pieces.append(message.data)
        if message.continues:
            self._open[kind] = (seq, pieces, size + len(message.data))
            return
        data = b"".join(pieces)
        if kind == "log":
            self.logs.append((seq, stored_log(message, data)))
        else:
            self.journal.append((seq, data))
        self.size += len(data)

    def any(self) -> bool:
        return bool(self.logs or self.journal)

    def take(self) -> Records:
        """The records joined so far, at their owner's seqs; then forgotten here."""
        out = Records(self.logs, self.journal)
        self.logs, self.journal, self.size = [], [], 0
        return out


def wire_log(seq: int, raw: bytes) -> pb.LogRecord:
    """A stored output record (`logrecord`) as a LogRecord, its time included."""
    record = logrecord.decode(raw)
    return pb.LogRecord(seq=seq, stream=record.stream, data=record.data, time_ns=record.time_ns or 0)


def stored_log(message: pb.LogRecord, data: bytes) -> bytes:
    """A LogRecord's `data` (joined from its pieces) as the store keeps it; time_ns 0 is
    unknown (a pre-2.2 record, or a peer that sends no time)."""
    return logrecord.encode(message.stream, data, message.time_ns or None)


def pieces(blob: bytes) -> Iterator[bytes]:
    view = memoryview(blob)
    for at in range(0, len(blob), PIECE):
        yield bytes(view[at:at + PIECE])


def split(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """A record's pieces, each with whether more of it follows (one piece when it is small)."""
    view = memoryview(data)
    for at in range(0, max(len(data), 1), PIECE):
        yield bytes(view[at:at + PIECE]), at + PIECE < len(data)


def no_later(header: pb.CheckpointHeader, versions) -> None:
    """A pushed map names no checkpoint after the one it is the map of."""
    if len(versions) and int(versions.max()) > header.number:
        raise InvalidRequest(f"push of {header.id}: its map names checkpoints after {header.number}")


class Bounds:
    """What one push may contain, worked out from its header before anything is allocated:
    pages by the manifest's memory, frames only of the versions the map references, output of
    the two streams, records of bounded size."""

    MAX_MANIFEST = 1 << 20
    MAX_FRAME = 64 << 20
    MAX_RECORD = 64 << 20
    MAX_NUMBER = 1 << 31

    def __init__(self, header: pb.CheckpointHeader, manifest: Manifest, stats: CheckpointStats,
                 pages: int) -> None:
        self.header, self.manifest, self.stats, self.pages = header, manifest, stats, pages
        self.versions = frozenset(header.referenced) | {header.number}

    @classmethod
    def of(cls, header: pb.CheckpointHeader) -> "Bounds":
        what = f"push of {short(header.id)}"
        if not 1 <= header.number < cls.MAX_NUMBER:
            raise InvalidRequest(f"{what}: checkpoint number {header.number} is out of range")
        if header.page_map_base >= cls.MAX_NUMBER or len(header.referenced) > header.number \
                or any(not 1 <= v <= header.number for v in header.referenced):
            raise InvalidRequest(f"{what}: it references checkpoints after {header.number}")
        manifest, stats = cls._manifest(header, what)
        return cls(header, manifest, stats, -(-manifest.memory_bytes // 4096))

    @classmethod
    def _manifest(cls, header: pb.CheckpointHeader, what: str) -> tuple[Manifest, CheckpointStats]:
        if len(header.manifest) > cls.MAX_MANIFEST:
            raise InvalidRequest(f"{what}: a manifest of {len(header.manifest)} bytes")
        try:
            manifest = json.loads(header.manifest)
        except ValueError:
            raise InvalidRequest(f"{what}: its manifest is not JSON") from None
        if not isinstance(manifest, dict):
            raise InvalidRequest(f"{what}: its manifest is not a JSON object")
        for key, top in (("memory_bytes", MAX_PAGES * 4096), ("journal_seq", 1 << 62)):
            value = manifest.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise InvalidRequest(f"{what}: manifest field {key} must be an integer from 0 to {top}")
        if manifest.get("number") != header.number:
            raise InvalidRequest(f"{what}: its manifest is of checkpoint {manifest.get('number')!r}")
        try:
            return manifests.read(manifest)
        except FormatError as e:
            raise InvalidRequest(f"{what}: {e}") from None

    def checked(self, chunks: Iterator[pb.CheckpointChunk]) -> Iterator[pb.CheckpointChunk]:
        """The push's remaining messages, each refused as it arrives if out of bounds — a
        version's frames too, unless they come from its frame 0 on, in order, one version
        after another (as a sink stores them: `transfer.Parts`)."""
        what = f"push of {short(self.header.id)}"
        order = _FrameOrder(what)
        for chunk in chunks:
            kind = chunk.WhichOneof("part")
            if kind == "frame":
                if chunk.frame.version not in self.versions or len(chunk.frame.data) > self.MAX_FRAME:
                    raise InvalidRequest(f"{what}: a frame of checkpoint {chunk.frame.version} "
                                         f"({len(chunk.frame.data)} bytes) it does not reference")
                order.check(chunk.frame)
            elif kind == "log":
                if chunk.log.stream not in (1, 2) or len(chunk.log.data) > self.MAX_RECORD:
                    raise InvalidRequest(f"{what}: an output record of stream {chunk.log.stream} "
                                         f"({len(chunk.log.data)} bytes)")
            elif kind == "journal":
                if len(chunk.journal.data) > self.MAX_RECORD:
                    raise InvalidRequest(f"{what}: a journal record of {len(chunk.journal.data)} bytes")
            else:
                raise InvalidRequest(f"{what}: a second header, or an empty message")
            yield chunk



class _FrameOrder:
    """Frames come version by version, each version's from its frame 0 on, in order."""

    def __init__(self, what: str) -> None:
        self.what, self.version, self.next = what, -1, 0
        self.ended: set[int] = set()

    def check(self, frame: pb.PageFrame) -> None:
        if frame.version != self.version:
            if frame.version in self.ended:
                raise InvalidRequest(f"{self.what}: frames of checkpoint {frame.version} again, "
                                     "after another's")
            self.ended.add(self.version)
            self.version, self.next = frame.version, 0
        if frame.index != self.next:
            raise InvalidRequest(f"{self.what}: frame {frame.index} of checkpoint {frame.version} "
                                 f"is out of order (frame {self.next} is next)")
        self.next += 1
