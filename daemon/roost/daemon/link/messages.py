"""The messages between roostd and a worker, one frozen record per frame kind of `transport`.

Each record owns its frame: `encode()` gives `(kind, meta, blobs)` exactly as the code before
these records sent them (the same JSON keys, the same blob order), and `Kind.decode(frame)`
reads one back. The bytes on the wire did not change, so either side may send raw frames
(`Link.send(kind, meta, blobs)`) and the other read records, or the reverse.

Usage (either side):

    from roost.daemon.link import messages as msg
    link.send_message(msg.Control.ask("checkpoint", request_id))
    for frame in link.read_batch():
        m = msg.decode(frame)                  # a record of the frame's kind
        if isinstance(m, msg.Checkpoint):
            m.manifest.number, m.stats.pause_seconds, m.frames ...

    supervisor -> worker   Start(spec: Spec, stdin, vfs, replay[, host, stack, page_map, frames])
                           Control (ask / throttle / decide), Apply, Go, ReplayChunk (the
                           journal to replay, when `spec.replay_streamed`: after START)
    worker -> supervisor   Ready, Pages, Checkpoint(manifest, stats, host, stack, stored,
                           zeroed, frames), Applied, Stats, End, ReplayMore (a chunk was
                           taken: send another); Output and Journal (decode
                           only: they keep their binary hot paths, `Link.send_output` and
                           `Link.send_journal`)

Blob order, pinned by tests/unit/test_link.py:

    START       [stdin, vfs, replay, host, stack, page_map, *frames]  (the last ones only
                when restoring: `spec.checkpoint` set; `frame_versions` go in its JSON)
    CHECKPOINT  [host, stack, stored, zeroed, *frames]   (stored, zeroed: "<u4" page arrays)
    APPLY       [page map delta, *frames]
    GO          [host, stack, replay]
    REPLAY      [records]   (journal.pack_many of a range; JSON {"end": true} on the last)
    PAGES       [*frames]
    END         [vfs]

Blobs of CHECKPOINT, PAGES and APPLY are `bytes` or `memoryview` (`Blob`): a large frame of
those kinds is received into one buffer, its blobs are views of it (`transport.BIG_FRAME`), and
the records keep them as they are, never copying. The other kinds' blobs are always `bytes`. A checkpoint's
manifest travels as `checkpoint.manifest.Manifest` (+ `CheckpointStats` in CHECKPOINT).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, Union

from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.link.transport import (
    APPLIED,
    APPLY,
    CHECKPOINT,
    CONTROL,
    END,
    GO,
    HTTP,
    JOURNAL,
    OUTPUT,
    PAGES,
    READY,
    REPLAY,
    REPLAY_MORE,
    START,
    STATS,
    SYNC,
    SYNCED,
    Blob,
    Frame,
)

Meta: TypeAlias = dict[str, Any]
Encoded: TypeAlias = tuple[bytes, Meta, list[Blob]]

# CONTROL actions
CHECKPOINT_ACTIONS = ("checkpoint", "pause", "suspend", "sleep", "migrate")
THROTTLE = "throttle"
DECISIONS = ("resume", "release")     # for a guest held after a migration's final checkpoint


def _blobs(frame: Frame, at: int) -> Blob:
    if at >= len(frame.blobs):
        raise ValueError(f"frame {frame.kind!r}: blob {at} missing (it has {len(frame.blobs)})")
    return frame.blobs[at]


def _bytes(frame: Frame, at: int) -> bytes:
    """A blob of a kind the transport never receives as views (START, GO, END): bytes already,
    and `bytes()` of bytes is the same object, not a copy."""
    return bytes(_blobs(frame, at))


# ---- supervisor -> worker ----
@dataclass(frozen=True)
class Spec:
    """What the worker is to run: START's JSON. `module` is the prepared module's manifest
    (`modules.prepare`; None: not checkpointable), `checkpoint` the one to restore."""
    id: str
    artifact: str                             # the compiled module's path
    module: Mapping[str, Any] | None          # JSON key "manifest"
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    memory_limit_bytes: int = 0
    checkpoint_every_seconds: float = 0.0
    durable_sleep_seconds: float = 0.0
    vfs_limits: Mapping[str, int] = field(default_factory=dict)   # `VfsLimits` as a dict
    journal_first_seq: int = 0                # the first record of the replay blob
    checkpoint: Manifest | None = None
    stdout_offset: int = 0
    stderr_offset: int = 0
    numbered_after: int | None = None         # checkpoints dropped as corrupt: numbers not reused
    standby: bool = False                     # a live migration's target: wait for GO
    http: Mapping[str, Any] | None = None     # `HttpSettings.to_meta()`: None, no requests
    # The journal follows START in REPLAY frames (START's replay blob is then empty), so the
    # worker is ready before the supervisor has read it all.
    replay_streamed: bool = False
    # Bytes of stdout and stderr already stored: a replaying guest's output below them is
    # dropped in the worker and never crosses the link again.
    durable_stdout: int = 0
    durable_stderr: int = 0

    def to_meta(self, frame_versions: Sequence[int] = ()) -> Meta:
        ckpt = None if self.checkpoint is None else \
            {**self.checkpoint.to_dict(), "frame_versions": list(frame_versions)}
        meta: Meta = {"id": self.id, "artifact": self.artifact, "manifest": self.module,
                      "argv": list(self.argv), "env": [list(kv) for kv in self.env],
                      "memory_limit_bytes": self.memory_limit_bytes,
                      "checkpoint_every_seconds": self.checkpoint_every_seconds,
                      "durable_sleep_seconds": self.durable_sleep_seconds,
                      "vfs_limits": dict(self.vfs_limits), "journal_first_seq": self.journal_first_seq,
                      "checkpoint": ckpt, "stdout_offset": self.stdout_offset,
                      "stderr_offset": self.stderr_offset}
        if self.numbered_after is not None:
            meta["numbered_after"] = self.numbered_after
        if self.standby:
            meta["standby"] = True
        if self.http:
            meta["http"] = dict(self.http)
        if self.replay_streamed:
            meta["replay_streamed"] = True
        if self.durable_stdout or self.durable_stderr:
            meta["durable"] = [self.durable_stdout, self.durable_stderr]
        return meta

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> tuple[Spec, tuple[int, ...]]:
        """The spec and the restored checkpoint's frame versions."""
        ckpt = meta.get("checkpoint")
        manifest, versions = None, tuple[int, ...]()
        if ckpt:
            versions = tuple(int(v) for v in ckpt.get("frame_versions", ()))
            manifest = Manifest.from_dict({k: v for k, v in ckpt.items() if k != "frame_versions"})
        spec = cls(id=str(meta.get("id", "")), artifact=str(meta["artifact"]), module=meta.get("manifest"),
                   argv=tuple(meta.get("argv", ())), env=tuple((str(k), str(v)) for k, v in meta.get("env", ())),
                   memory_limit_bytes=int(meta.get("memory_limit_bytes") or 0),
                   checkpoint_every_seconds=float(meta.get("checkpoint_every_seconds") or 0),
                   durable_sleep_seconds=float(meta.get("durable_sleep_seconds") or 0),
                   vfs_limits=dict(meta.get("vfs_limits") or {}),
                   journal_first_seq=int(meta.get("journal_first_seq", 0)), checkpoint=manifest,
                   stdout_offset=int(meta.get("stdout_offset", 0)),
                   stderr_offset=int(meta.get("stderr_offset", 0)),
                   numbered_after=None if meta.get("numbered_after") is None else int(meta["numbered_after"]),
                   standby=bool(meta.get("standby")), http=meta.get("http"),
                   replay_streamed=bool(meta.get("replay_streamed")),
                   durable_stdout=int((meta.get("durable") or (0, 0))[0]),
                   durable_stderr=int((meta.get("durable") or (0, 0))[1]))
        return spec, versions


@dataclass(frozen=True)
class Start:
    """Run an execution: its spec, stdin, initial filesystem and journal to replay; when it
    restores (`spec.checkpoint`), that checkpoint's host state, stack, full page map and the
    frames of every version the map names (`frame_versions[i]` is `frames[i]`'s)."""
    spec: Spec
    stdin: bytes
    vfs: bytes
    replay: bytes                             # journal.pack_many of the records to replay
    host: bytes = b""
    stack: bytes = b""
    page_map: bytes = b""                     # pagemap.encode_full
    frame_versions: tuple[int, ...] = ()
    frames: tuple[bytes, ...] = ()

    def encode(self) -> Encoded:
        blobs: list[Blob] = [self.stdin, self.vfs, self.replay]
        if self.spec.checkpoint is not None:
            blobs += [self.host, self.stack, self.page_map, *self.frames]
        return START, self.spec.to_meta(self.frame_versions), blobs

    @classmethod
    def decode(cls, frame: Frame) -> Start:
        spec, versions = Spec.from_meta(frame.meta)
        stdin, vfs, replay = (_bytes(frame, i) for i in range(3))
        if spec.checkpoint is None:
            return cls(spec, stdin, vfs, replay)
        return cls(spec, stdin, vfs, replay, _bytes(frame, 3), _bytes(frame, 4), _bytes(frame, 5),
                   versions, tuple(bytes(f) for f in frame.blobs[6:]))


@dataclass(frozen=True)
class Control:
    """A request to a running worker: a checkpoint of some kind (`action` one of
    CHECKPOINT_ACTIONS, `request` the supervisor's id for it, 0: nobody waits), a throttle
    (`fraction` of the guest's speed taken away), or a decision for a guest held after its
    migration's final checkpoint (DECISIONS)."""
    action: str
    request: int | None = None
    fraction: float | None = None

    @classmethod
    def ask(cls, action: str, request: int) -> Control:
        return cls(action, request=request)

    @classmethod
    def throttle(cls, fraction: float) -> Control:
        return cls(THROTTLE, fraction=fraction)

    @classmethod
    def decide(cls, decision: str) -> Control:
        return cls(decision)

    def encode(self) -> Encoded:
        meta: Meta = {"action": self.action}
        if self.request is not None:
            meta["request"] = self.request
        if self.fraction is not None:
            meta["fraction"] = self.fraction
        return CONTROL, meta, []

    @classmethod
    def decode(cls, frame: Frame) -> Control:
        m = frame.meta
        return cls(str(m["action"]), None if m.get("request") is None else int(m["request"]),
                   None if m.get("fraction") is None else float(m["fraction"]))


@dataclass(frozen=True)
class Apply:
    """To a standby: checkpoint `number`, as the delta from the page map it holds
    (`pagemap.encode_delta`) and the frames of the versions it does not have yet."""
    number: int
    memory_bytes: int
    delta: Blob
    frame_versions: tuple[int, ...] = ()
    frames: tuple[Blob, ...] = ()

    def encode(self) -> Encoded:
        meta: Meta = {"number": self.number, "memory_bytes": self.memory_bytes,
                      "frame_versions": list(self.frame_versions)}
        return APPLY, meta, [self.delta, *self.frames]

    @classmethod
    def decode(cls, frame: Frame) -> Apply:
        m = frame.meta
        return cls(int(m["number"]), int(m["memory_bytes"]), _blobs(frame, 0),
                   tuple(int(v) for v in m.get("frame_versions", ())), tuple(frame.blobs[1:]))


@dataclass(frozen=True)
class Go:
    """To a standby: run, from the final checkpoint (whose memory it has applied): its
    manifest, host state, stack and the journal records after it."""
    manifest: Manifest
    host: bytes
    stack: bytes
    replay: bytes

    def encode(self) -> Encoded:
        return GO, self.manifest.to_dict(), [self.host, self.stack, self.replay]

    @classmethod
    def decode(cls, frame: Frame) -> Go:
        return cls(Manifest.from_dict(frame.meta), _bytes(frame, 0), _bytes(frame, 1), _bytes(frame, 2))


@dataclass(frozen=True)
class ReplayChunk:
    """The next range of the journal to replay (`journal.pack_many`), sent as the worker takes
    them (`ReplayMore`); `end`: the journal has no more (its records may be empty)."""
    records: bytes
    end: bool = False

    def encode(self) -> Encoded:
        return REPLAY, ({"end": True} if self.end else {}), [self.records]

    @classmethod
    def decode(cls, frame: Frame) -> ReplayChunk:
        return cls(_bytes(frame, 0), bool(frame.meta.get("end")))


# ---- worker -> supervisor ----
@dataclass(frozen=True)
class ReplayMore:
    """Worker: `chunks` more REPLAY frames were taken by the guest's replay: send as many more
    (flow control: the journal is never all in flight)."""
    chunks: int = 1

    def encode(self) -> Encoded:
        return REPLAY_MORE, {"n": self.chunks}, []

    @classmethod
    def decode(cls, frame: Frame) -> ReplayMore:
        return cls(int(frame.meta.get("n", 1)))


@dataclass(frozen=True)
class Ready:
    """The guest is instantiated (and restored): it runs, or (a standby) waits for GO."""
    pid: int
    setup_seconds: float
    checkpointable: bool
    standby: bool
    restore_seconds: float
    tracker: str                              # the dirty-page tracker ("" if none)

    def encode(self) -> Encoded:
        return READY, {"pid": self.pid, "setup_seconds": self.setup_seconds,
                       "checkpointable": self.checkpointable, "standby": self.standby,
                       "restore_seconds": self.restore_seconds, "tracker": self.tracker}, []

    @classmethod
    def decode(cls, frame: Frame) -> Ready:
        m = frame.meta
        return cls(int(m.get("pid", 0)), float(m.get("setup_seconds", 0.0)), bool(m.get("checkpointable")),
                   bool(m.get("standby")), float(m.get("restore_seconds") or 0.0), str(m.get("tracker", "")))


@dataclass(frozen=True)
class Pages:
    """A part of checkpoint `number`'s frames, from frame `first_frame` on, sent while the
    rest is still compressed."""
    number: int
    first_frame: int
    frames: tuple[Blob, ...]

    def encode(self) -> Encoded:
        return PAGES, {"number": self.number, "first_frame": self.first_frame}, list(self.frames)

    @classmethod
    def decode(cls, frame: Frame) -> Pages:
        return cls(int(frame.meta["number"]), int(frame.meta["first_frame"]), tuple(frame.blobs))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint taken: its manifest and stats (one flat JSON object), the host state, the
    asyncify stack, the pages it stores and those it zeroes ("<u4" arrays of page numbers),
    and the frames after those its PAGES parts carried."""
    manifest: Manifest
    stats: CheckpointStats
    host: Blob
    stack: Blob
    stored: Blob
    zeroed: Blob
    frames: tuple[Blob, ...] = ()

    def encode(self) -> Encoded:
        return (CHECKPOINT, self.manifest.to_dict(self.stats),
                [self.host, self.stack, self.stored, self.zeroed, *self.frames])

    @classmethod
    def decode(cls, frame: Frame) -> Checkpoint:
        return cls(Manifest.from_dict(frame.meta), CheckpointStats.from_dict(frame.meta),
                   _blobs(frame, 0), _blobs(frame, 1), _blobs(frame, 2), _blobs(frame, 3),
                   tuple(frame.blobs[4:]))


@dataclass(frozen=True)
class Applied:
    """A standby holds checkpoint `number` now."""
    number: int

    def encode(self) -> Encoded:
        return APPLIED, {"number": self.number}, []

    @classmethod
    def decode(cls, frame: Frame) -> Applied:
        return cls(int(frame.meta["number"]))


@dataclass(frozen=True)
class Stats:
    """The periodic tick: host calls so far, by function (totals, not deltas)."""
    calls: Mapping[str, int]

    def encode(self) -> Encoded:
        return STATS, {"calls": dict(self.calls)}, []

    @classmethod
    def decode(cls, frame: Frame) -> Stats:
        return cls({str(k): int(v) for k, v in frame.meta.get("calls", {}).items()})


@dataclass(frozen=True)
class End:
    """The worker's last word: the outcome (`state` an execution State's value), and the
    final filesystem. `corrupt_checkpoint`: the restore found that checkpoint corrupt."""
    state: str
    exit_code: int = 0
    error: str | None = None
    corrupt_checkpoint: int | None = None
    calls: Mapping[str, int] | None = None
    memory_bytes: int | None = None
    vfs: bytes = b""

    def encode(self) -> Encoded:
        meta: Meta = {"state": self.state, "exit_code": self.exit_code}
        if self.corrupt_checkpoint is not None:
            meta["corrupt_checkpoint"] = self.corrupt_checkpoint
        if self.error is not None:
            meta["error"] = self.error
        if self.calls is not None:
            meta["calls"] = dict(self.calls)
        if self.memory_bytes is not None:
            meta["memory_bytes"] = self.memory_bytes
        return END, meta, [self.vfs]

    @classmethod
    def decode(cls, frame: Frame) -> End:
        m = frame.meta
        calls = m.get("calls")
        return cls(str(m["state"]), int(m.get("exit_code", 0)),
                   None if m.get("error") is None else str(m["error"]),
                   None if m.get("corrupt_checkpoint") is None else int(m["corrupt_checkpoint"]),
                   None if calls is None else {str(k): int(v) for k, v in calls.items()},
                   None if m.get("memory_bytes") is None else int(m["memory_bytes"]),
                   _bytes(frame, 0) if frame.blobs else b"")


@dataclass(frozen=True)
class Output:
    """Guest output at `offset` of stream `fd` (decode only: sent by `Link.send_output`)."""
    fd: int
    offset: int
    data: bytes

    @classmethod
    def decode(cls, frame: Frame) -> Output:
        return cls(frame.fd, frame.offset, frame.data)


@dataclass(frozen=True)
class Journal:
    """One encoded journal record (decode only: sent by `Link.send_journal`)."""
    data: bytes

    @classmethod
    def decode(cls, frame: Frame) -> Journal:
        return cls(frame.data)


@dataclass(frozen=True)
class Sync:
    """Worker: make the journal durable up to the records sent before this (number `n`)."""
    n: int

    def encode(self) -> Encoded:
        return SYNC, {"n": self.n}, []

    @classmethod
    def decode(cls, frame: Frame) -> Sync:
        return cls(int(frame.meta["n"]))


@dataclass(frozen=True)
class Synced:
    """Supervisor: everything before SYNC `n` is stored (and replicated per the ack)."""
    n: int

    def encode(self) -> Encoded:
        return SYNCED, {"n": self.n}, []

    @classmethod
    def decode(cls, frame: Frame) -> Synced:
        return cls(int(frame.meta["n"]))


@dataclass(frozen=True)
class HttpEvent:
    """Worker: a guest request started, ended, was replayed or refused (`runtime.outbound`)."""
    event: Mapping[str, Any]

    def encode(self) -> Encoded:
        return HTTP, dict(self.event), []

    @classmethod
    def decode(cls, frame: Frame) -> HttpEvent:
        return cls(dict(frame.meta))


Message: TypeAlias = Union[Start, Control, Apply, Go, Ready, Pages, Checkpoint, Applied, Stats, End,
                           Sync, Synced, HttpEvent, ReplayChunk, ReplayMore]
Received: TypeAlias = Union[Message, Output, Journal]

_BY_KIND: dict[bytes, Any] = {
    START: Start, CONTROL: Control, APPLY: Apply, GO: Go, READY: Ready, PAGES: Pages,
    CHECKPOINT: Checkpoint, APPLIED: Applied, STATS: Stats, END: End, OUTPUT: Output, JOURNAL: Journal,
    SYNC: Sync, SYNCED: Synced, HTTP: HttpEvent, REPLAY: ReplayChunk, REPLAY_MORE: ReplayMore}


def decode(frame: Frame) -> Received:
    """The record of a frame, by its kind; ValueError for a kind no record reads."""
    cls = _BY_KIND.get(frame.kind)
    if cls is None:
        raise ValueError(f"no message of kind {frame.kind!r}")
    message: Received = cls.decode(frame)
    return message
