"""One checkpoint, read from where it is and written to where it goes: sources and sinks.

After CRIU's `page_xfer`: whoever moves a checkpoint — the committer storing what a worker
sent, replication pushing one to a peer and the peer storing it, a migration's final
checkpoint pushed while it commits — reads a `CheckpointSource` and writes a `CheckpointSink`,
and none of them knows which backend it has:

    source                                      sink
    LMDB   (`store.checkpoints.PageStore.source`)  LMDB  (`PageStore`: put_frames, commit)
    uncommitted (`Uncommitted`: being committed)  peer stream (`cluster.receive`, into a sink)
    in memory (`MemoryCheckpoints`, tests)        in memory (`MemoryCheckpoints`, tests)

A sink takes a checkpoint's frames in parts (`put_frames`, each part its own transaction, so
the disk writes while more arrives; `Parts` cuts a stream of frames into them, in order), then
`commit`s the rest in one go (`Commit`): manifest (`checkpoint.manifest`), map, host state, stack, record, durable-sleep
timer and — a replica's — output and journal records at their owner's seqs. What a commit
decides (a delta or a compacted full map, what is retained, what is garbage) is the sink's,
in one place, whoever fed it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.errors import NotFound, StoreError
from roost.daemon.store.records import ExecutionRecord

COMMITTED = 1 << 32                       # `Uncommitted.streamed` of a checkpoint stored whole


@dataclass(frozen=True)
class Records:
    """Output and journal records at the seqs their owner gave them (a replica's)."""
    logs: Sequence[tuple[int, bytes]] = ()        # (seq, stream byte + data)
    journal: Sequence[tuple[int, bytes]] = ()     # (seq, encoded journal record)

    def __bool__(self) -> bool:
        return bool(self.logs or self.journal)


@dataclass(frozen=True)
class Commit:
    """What commits one checkpoint, after its parts (`CheckpointSink.put_frames`).

    `frames` follow the `streamed` ones of its own version stored in parts already. `delta`:
    from the previous checkpoint's map to `page_map`, if known (None: the sink works it out).
    `referenced`: the versions the map needs, if known. `hurry` (a migration's final
    checkpoint, committed in the downtime): no compaction and no garbage collection now; the
    next commit does both. The sink completes `manifest` (map_base, chain_entries, map_bytes)
    and returns the completed one; `stats` are stored with it."""
    record: ExecutionRecord
    manifest: Manifest
    host: bytes | memoryview
    stack: bytes | memoryview
    page_map: PageMap
    delta: pagemap.Delta | None = None
    frames: Sequence[bytes | memoryview] = ()
    streamed: int = 0
    retain: int = 2
    wake_at_ns: int = 0
    referenced: frozenset[int] | None = None
    hurry: bool = False
    records: Records = Records()
    stats: CheckpointStats = CheckpointStats()

    @property
    def exec_id(self) -> str:
        return self.record.id

    @property
    def number(self) -> int:
        return self.manifest.number


class FrameReader(Protocol):
    def iter_frames(self, exec_id: str, version: int) -> Iterator[tuple[int, bytes]]:
        """(index, frame) of a committed version, in order."""


class CheckpointSource(Protocol):
    """One checkpoint to send: its header parts, its map and the frames of any version."""
    exec_id: str
    number: int
    manifest: Manifest
    stats: CheckpointStats
    page_map: PageMap
    host: bytes
    stack: bytes
    record_json: bytes
    referenced: frozenset[int]

    def iter_frames(self, version: int) -> Iterator[tuple[int, bytes]]:
        """(index, frame) of `version`, as the store gives them once committed."""

    def wait_committed(self) -> None:
        """Return once the checkpoint is stored at its source (raise if it failed to be)."""


class FrameSink(Protocol):
    """Where a checkpoint's frames are written in parts (what `Parts` needs of a sink)."""

    def put_frames(self, exec_id: str, number: int, first: int,
                   frames: Sequence[bytes | memoryview]) -> None:
        """Frames `first`, `first+1`, ... of version `number`, not yet committed (a first
        part, `first` 0, replaces what a torn earlier attempt left)."""


class CheckpointSink(FrameSink, Protocol):
    """Where checkpoints are written: frames in parts, then one commit."""

    def commit(self, commit: Commit) -> Manifest:
        """Commit one checkpoint, with its garbage collection, in one transaction; the
        manifest as stored (completed by the sink)."""

    def put_records(self, exec_id: str, records: Records,
                    record: ExecutionRecord | None = None,
                    change: Callable[[ExecutionRecord], None] | None = None) -> None:
        """Output and journal records (and the execution's record, or a change to it as
        stored), without a checkpoint."""


class CheckpointStore(CheckpointSink, Protocol):
    """A sink that is read back too: what the receiving side of replication asks of it."""

    def manifest(self, exec_id: str, number: int) -> Manifest | None: ...

    def page_map(self, exec_id: str, number: int) -> PageMap: ...

    def latest(self, exec_id: str) -> Manifest | None: ...

    def held_versions(self, exec_id: str) -> list[int]: ...

    def referenced(self, exec_id: str, number: int) -> frozenset[int]: ...

    def iter_frames(self, exec_id: str, version: int) -> Iterator[tuple[int, bytes]]: ...

    def source(self, record: ExecutionRecord, number: int) -> CheckpointSource: ...


@dataclass
class Uncommitted:
    """A checkpoint on its way into the store, readable before it commits: a migration's final
    checkpoint is pushed to the target while this daemon still writes it (the push ends only
    once `committed` is done, so no peer holds a checkpoint its source could lose). A stored
    checkpoint is one too (`streamed` COMMITTED, `committed` done: every frame from `reader`)."""
    exec_id: str
    number: int
    manifest: Manifest
    page_map: PageMap
    host: bytes
    stack: bytes
    frames: Sequence[bytes | memoryview]  # frames `streamed`, `streamed + 1`, ... (the rest are
    streamed: int                         # stored already, by `put_frames`; all: COMMITTED)
    record_json: bytes
    referenced: frozenset[int]
    committed: Future[None] = field(default_factory=Future)
    reader: FrameReader | None = field(default=None, repr=False)   # where stored frames are
    stats: CheckpointStats = CheckpointStats()    # (sent with the manifest in a push)

    def reading(self, reader: FrameReader) -> "Uncommitted":
        """This source, its stored frames read from `reader` (unless it has one already)."""
        if self.reader is None:
            self.reader = reader
        return self

    def iter_frames(self, version: int) -> Iterator[tuple[int, bytes]]:
        """(index, frame) of `version` as the store gives them once committed."""
        if self.reader is None:
            raise StoreError(f"checkpoint {self.number} of {self.exec_id}: read with no store "
                             "to read its stored frames from")
        if version != self.number:
            yield from self.reader.iter_frames(self.exec_id, version)
            return
        for index, frame in self.reader.iter_frames(self.exec_id, version):
            if index >= self.streamed:           # committed meanwhile: those are below
                break
            yield index, frame
        for index, part in enumerate(self.frames, self.streamed):
            yield index, bytes(part)             # (a view into a big frame from the worker)

    def wait_committed(self) -> None:
        self.committed.result()


class Parts:
    """A checkpoint's frames as they arrive, into a sink in parts of about `part_bytes`: each
    version's from its frame 0 on, in order, one version after another. The last part of the
    checkpoint's own version is held back to ride with its commit (`tail`: a small checkpoint
    is one transaction)."""

    def __init__(self, sink: FrameSink, exec_id: str, number: int, part_bytes: int) -> None:
        self.sink, self.exec_id, self.number, self.part_bytes = sink, exec_id, number, part_bytes
        self.streamed = 0                 # frames of `number` stored already
        self._batch: list[bytes | memoryview] = []
        self._version, self._first, self._bytes = -1, 0, 0
        self._next: dict[int, int] = {}   # version -> the index its next frame must have
        self._done: set[int] = set()      # versions whose frames ended

    def add(self, version: int, index: int, data: bytes | memoryview) -> None:
        """One frame; StoreError if it does not follow the one before it."""
        if version in self._done or index != self._next.get(version, 0):
            raise StoreError(f"checkpoint {self.number} of {self.exec_id}: frame {index} of "
                             f"version {version} arrived out of order")
        if version != self._version or self._bytes >= self.part_bytes:
            if version != self._version and self._version >= 0:
                self._done.add(self._version)
            self.flush()
            self._version, self._first = version, index
        self._next[version] = index + 1
        self._batch.append(data)
        self._bytes += len(data)

    def flush(self) -> None:
        """Store the part gathered so far."""
        if self._batch:
            self.sink.put_frames(self.exec_id, self._version, self._first, self._batch)
            if self._version == self.number:
                self.streamed = self._first + len(self._batch)
        self._batch, self._bytes = [], 0

    def tail(self) -> list[bytes | memoryview]:
        """After the last frame: the frames of the checkpoint's own version that go with its
        commit (stored now, and none returned, when the last part was of another version)."""
        if self._version != self.number:
            self.flush()
            return []
        batch, self._batch, self._bytes = self._batch, [], 0
        return batch


class MemoryCheckpoints:
    """Source and sink in memory (unit tests): what was put and committed, as it was given.
    No compaction and no garbage collection: the LMDB sink's are tested on it."""

    def __init__(self) -> None:
        self.frames: dict[tuple[str, int], dict[int, bytes]] = {}
        self.commits: dict[tuple[str, int], Commit] = {}
        self.records: list[tuple[str, Records, ExecutionRecord | None]] = []

    def put_frames(self, exec_id: str, number: int, first: int,
                   frames: Sequence[bytes | memoryview]) -> None:
        stored = self.frames.setdefault((exec_id, number), {})
        if first == 0:
            stored.clear()
        stored.update((i, bytes(f)) for i, f in enumerate(frames, first))

    def commit(self, commit: Commit) -> Manifest:
        key = (commit.exec_id, commit.number)
        stored = self.frames.setdefault(key, {})
        if commit.streamed and commit.streamed - 1 not in stored:
            raise StoreError(f"checkpoint {commit.number} of {commit.exec_id}: its streamed "
                             "pages are missing")
        if not commit.streamed:
            stored.clear()
        stored.update((i, bytes(f)) for i, f in enumerate(commit.frames, commit.streamed))
        self.commits[key] = commit
        return commit.manifest

    def put_records(self, exec_id: str, records: Records,
                    record: ExecutionRecord | None = None,
                    change: Callable[[ExecutionRecord], None] | None = None) -> None:
        self.records.append((exec_id, records, record))

    def manifest(self, exec_id: str, number: int) -> Manifest | None:
        commit = self.commits.get((exec_id, number))
        return commit.manifest if commit is not None else None

    def page_map(self, exec_id: str, number: int) -> PageMap:
        commit = self.commits.get((exec_id, number))
        if commit is None:
            raise NotFound(f"checkpoint {number} of {exec_id} is gone")
        return commit.page_map

    def latest(self, exec_id: str) -> Manifest | None:
        numbers = [n for e, n in self.commits if e == exec_id]
        return self.manifest(exec_id, max(numbers)) if numbers else None

    def referenced(self, exec_id: str, number: int) -> frozenset[int]:
        return frozenset(self.page_map(exec_id, number).referenced())

    def held_versions(self, exec_id: str) -> list[int]:
        held: set[int] = set()
        for e, n in self.commits:
            if e == exec_id:
                held |= self.referenced(e, n)
        return sorted(v for v in held if (exec_id, v) in self.frames)

    def iter_frames(self, exec_id: str, version: int) -> Iterator[tuple[int, bytes]]:
        yield from sorted(self.frames.get((exec_id, version), {}).items())

    def source(self, record: ExecutionRecord, number: int) -> CheckpointSource:
        commit = self.commits.get((record.id, number))
        if commit is None:
            raise NotFound(f"checkpoint {number} of {record.id} is gone")
        source = Uncommitted(record.id, number, commit.manifest, commit.page_map,
                             bytes(commit.host), bytes(commit.stack), [], COMMITTED,
                             record.to_json(), self.referenced(record.id, number), reader=self,
                             stats=commit.stats)
        source.committed.set_result(None)
        return source
