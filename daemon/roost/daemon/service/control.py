"""The gRPC Control service: protobuf in, supervisor calls, protobuf out.

Errors become status codes, and malformed requests INVALID_ARGUMENT, in `rpc` (shared with the
Peer service); `roost debug` reads checkpoints through `debug`.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import cast

import grpc

from roost.daemon.checkpoint.frames import PAGE_BYTES
from roost.daemon.cluster.authority import check_address
from roost.daemon.errors import InvalidRequest, NotFound, StateConflict, TimedOut
from roost.daemon.executions.supervisor import StartSpec, Supervisor
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.runtime.vfs import Entry
from roost.daemon.service import debug, fields
from roost.daemon.service.longpolls import LongPolls
from roost.daemon.service.rpc import check, service_handlers, translated
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.records import ExecutionRecord, ModuleRecord, State
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc

COPY_CHUNK_BYTES = 1 << 20
_KINDS = {pb.FileEntry.FILE: "file", pb.FileEntry.DIRECTORY: "dir", pb.FileEntry.SYMLINK: "symlink"}
_KIND_PB = {v: k for k, v in _KINDS.items()} | {"hardlink": pb.FileEntry.HARDLINK}


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, supervisor: Supervisor, modules: ModuleRegistry, migrations=None,
                 replicator=None, max_memory_bytes: int = 1 << 32,
                 long_polls: LongPolls | None = None, checkpoints: PageStore | None = None) -> None:
        self.supervisor = supervisor
        self.long_polls = long_polls or LongPolls(48, 48)   # logs -f, wait: bounded (`longpolls`)
        self.max_memory_bytes = max_memory_bytes      # the cap a requested memory limit meets
        self.modules = modules
        self.checkpoints = checkpoints or supervisor.pages   # what `roost debug checkpoint` reads
        self.migrations = migrations      # migration.Migrations (None: this daemon cannot)
        self.replicator = replicator      # replication.Replicator: checkpoint acknowledgements
        self.nodes: Callable[[], list[pb.Node]] = lambda: []   # the cluster's members (main)
        # Where the cluster says an execution unknown here runs: (owner, address) or None.
        self.locate: Callable[[str], tuple[str, str] | None] = lambda exec_id: None
        self.automatic = False            # takeover is automatic (etcd): no `recover`
        # Until a new execution's replicas hold it (record, inputs, module): the client gets
        # its id once a host failure cannot lose it (`cluster.shipping`; bounded).
        self.replicated: Callable[[str], object] = lambda exec_id: None

    def _pb(self, record: ExecutionRecord) -> pb.Execution:
        live = self.supervisor.lives.get(record.id)
        return execution_pb(record, self.supervisor.node_id,
                            live.http_in_flight if live is not None else "")

    @translated
    def UploadModule(self, request_iterator: Iterator, context) -> pb.Module:
        return module_pb(*receive_module(self.modules, request_iterator, "upload"))

    @translated
    def GetModule(self, request, context) -> pb.Module:
        check(request)
        return module_pb(self.modules.get(fields.sha256(request.sha256, "sha256")))

    @translated
    def PrepareModule(self, request, context) -> pb.Module:
        check(request)
        record = self.modules.get(fields.sha256(request.sha256, "sha256"))
        self.modules.ensure_artifact(record.sha256, not request.cooperative, wait=True)
        return module_pb(record)

    @translated
    def ListModules(self, request, context) -> pb.ListModulesResponse:
        check(request)
        return pb.ListModulesResponse(modules=[module_pb(m) for m in self.modules.list()])

    @translated
    def StartExecution(self, request, context) -> pb.Execution:
        check(request)
        record = self.supervisor.start(start_spec(request, self.max_memory_bytes))
        self.replicated(record.id)
        return self._pb(record)

    @translated
    def GetExecution(self, request, context) -> pb.Execution:
        check(request)
        try:
            return self._pb(self.supervisor.get(_id(request.id)))
        except NotFound:
            return self._elsewhere(_id(request.id))

    def _elsewhere(self, exec_id: str) -> pb.Execution:
        """An execution this daemon holds nothing of, where the cluster (etcd) says it runs:
        its owner and address, which a client follows. NotFound when the cluster does not
        know it either."""
        owner = self.locate(exec_id)
        if owner is None:
            raise NotFound(f"execution {exec_id} not found")
        return pb.Execution(id=exec_id, owner=owner[0], owner_address=owner[1],
                            served_by=self.supervisor.node_id, state=pb.RUNNING)

    @translated
    def ListExecutions(self, request, context) -> pb.ListExecutionsResponse:
        check(request)
        return pb.ListExecutionsResponse(
            executions=[self._pb(r) for r in self.supervisor.list(request.all)])

    @translated
    def StreamLogs(self, request, context) -> Iterator[pb.LogChunk]:
        check(request)
        if request.stream not in (0, 1, 2):
            raise InvalidRequest(f"stream: {request.stream} is not 0 (both), 1 (stdout) or 2 (stderr)")
        held = self.long_polls.held(context.peer(), "logs --follow") if request.follow \
            else contextlib.nullcontext()
        try:
            self.supervisor.get(_id(request.id))
        except NotFound:
            self._elsewhere(_id(request.id))      # (NotFound unless it runs elsewhere)
            return
        with held:
            for seq, stream, data in self.supervisor.logs(_id(request.id), request.from_seq,
                                                          request.follow, int(request.stream),
                                                          context.is_active):
                yield from log_chunks(seq, stream, data)

    @translated
    def WaitExecution(self, request, context) -> pb.Execution:
        check(request)
        timeout = fields.seconds(request.timeout_seconds, "timeout_seconds")
        try:
            self.supervisor.get(_id(request.id))
        except NotFound:
            return self._elsewhere(_id(request.id))
        with self.long_polls.held(context.peer(), "wait"):
            record = self.supervisor.wait(_id(request.id), timeout or None, context.is_active)
        if not record.state.ended and context.is_active() and self.supervisor.owns(record):
            raise TimedOut(f"execution {record.id} still {record.state.value} after "
                           f"{request.timeout_seconds:g} s")
        return self._pb(record)           # (ended, or moved: owner_address says where)

    @translated
    def KillExecution(self, request, context) -> pb.Execution:
        check(request)
        return self._pb(self.supervisor.kill(_id(request.id)))

    @translated
    def Checkpoint(self, request, context) -> pb.CheckpointResponse:
        check(request)
        timeout = fields.seconds(request.timeout_seconds, "timeout_seconds") or 60.0
        r = self._sleeping_checkpoint(_id(request.id)) or self.supervisor.checkpoint(_id(request.id), timeout)
        if self.replicator is not None:   # replication.ack one/all: the replicas hold it first
            self.replicator.wait_acked(_id(request.id), r["number"], timeout)
        return pb.CheckpointResponse(
            number=r["number"], pause_seconds=r["pause_seconds"],
            time_to_safepoint_seconds=r["time_to_safepoint_seconds"],
            total_seconds=r["total_seconds"], memory_bytes=r["memory_bytes"],
            stored_bytes=r["stored_bytes"], journal_seq=r["journal_seq"],
            dirty_pages=r.get("dirty_pages") or 0,
            dirty_bytes=(r.get("dirty_pages") or 0) * PAGE_BYTES,
            precopy_seconds=r.get("precopy_seconds") or 0.0, held_by=r.get("held_by") or "")

    def _sleeping_checkpoint(self, ref: str) -> dict | None:
        """A guest in a durable sleep stopped at its checkpoint and has not run since: that
        checkpoint is current, so the answer is its numbers, at once (None: not sleeping)."""
        record = self.supervisor.get(ref)
        if record.state != State.SLEEPING or not self.supervisor.owns(record):
            return None
        latest = self.checkpoints.latest(record.id)
        found = self.checkpoints.checkpoint(record.id, latest.number) if latest else None
        if found is None:
            return None
        manifest, stats = found
        return {**manifest.to_dict(stats), "pause_seconds": 0.0, "time_to_safepoint_seconds": 0.0,
                "total_seconds": 0.0, "dirty_pages": 0, "precopy_seconds": 0.0,
                "stored_bytes": 0}

    @translated
    def Pause(self, request, context) -> pb.Execution:
        check(request)
        return self._pb(self.supervisor.pause(_id(request.id)))

    @translated
    def Resume(self, request, context) -> pb.Execution:
        check(request)
        return self._pb(self.supervisor.resume(_id(request.id)))

    @translated
    def Migrate(self, request, context) -> Iterator[pb.MigrateProgress]:
        check(request)
        if self.migrations is None:
            raise StateConflict("this roostd cannot migrate executions")
        check_address(request.target, "migrate: target")
        fields.seconds(request.downtime_budget_seconds, "downtime_budget_seconds", high=60.0)
        if request.max_rounds > 1000:
            raise InvalidRequest(f"max_rounds: {request.max_rounds} is more than 1000")
        events: queue.SimpleQueue = queue.SimpleQueue()
        failure: list[Exception] = []

        def run() -> None:
            try:
                self.migrations.migrate(_id(request.id), request.target, request.cold,
                                        request.downtime_budget_seconds, request.max_rounds,
                                        events.put)
            except Exception as e:        # reported to the caller, if it still listens
                failure.append(e)
            events.put(None)
        threading.Thread(target=run, name=f"migrate-{request.id}", daemon=True).start()
        while True:
            event = events.get()
            if event is None:
                break
            yield migrate_progress_pb(event)
        if failure:
            raise failure[0]

    @translated
    def CopyOut(self, request, context) -> Iterator[pb.FileChunk]:
        check(request)
        if not request.path:
            raise InvalidRequest("copy: a guest path is required")
        for entry in self.supervisor.copy_out(_id(request.id), request.path):
            yield from file_chunks(entry)

    @translated
    def Recover(self, request, context) -> pb.Execution:
        check(request)
        if self.locate is not None and self.automatic:
            raise StateConflict("this cluster runs on etcd: a replica takes over an execution "
                                "whose owner's lease expired by itself (no recover needed)")
        return self._pb(self.supervisor.promote(_id(request.id)))

    @translated
    def ListNodes(self, request, context) -> pb.ListNodesResponse:
        check(request)
        return pb.ListNodesResponse(nodes=self.nodes())

    @translated
    def DebugCheckpoint(self, request, context) -> pb.DebugCheckpointResponse:
        check(request)
        record = self.supervisor.get(_id(request.id))
        return debug.describe(self.checkpoints, record.id, request.number)


def _id(value: str) -> str:
    return fields.ref(value)


def start_spec(request: pb.StartExecutionRequest, max_memory_bytes: int = 1 << 32) -> StartSpec:
    """A start request's fields, each checked (`fields`) before anything is created."""
    fields.sha256(request.module_sha256)
    argv = [request.argv0 or "main", *request.args]
    env = [(e.key, e.value) for e in request.env]
    fields.args_and_env(argv, env)
    for m in request.mounts:
        fields.path(m.guest_path, "mount")
    mounts = [(m.guest_path, [entry_of(e, m.guest_path) for e in m.entries]) for m in request.mounts]
    every = fields.seconds(request.checkpoint_every_seconds, "checkpoint_every_seconds",
                           fields.MIN_CHECKPOINT_EVERY_SECONDS, fields.MAX_CHECKPOINT_EVERY_SECONDS)
    return StartSpec(module_sha256=request.module_sha256, argv=argv, env=env,
                     stdin=request.stdin, mounts=mounts, name=fields.name(request.name),
                     memory_limit_bytes=fields.memory_limit(request.memory_limit_bytes,
                                                            max_memory_bytes),
                     cooperative=request.cooperative, checkpoint_every_seconds=every,
                     allow_http=fields.allow_http(list(request.allow_http)))


def entry_of(e: pb.FileEntry, mount: str) -> Entry:
    parts = e.path.split("/") if e.path else []
    if e.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequest(f"mount {mount}: invalid entry path {e.path!r}")
    if e.kind not in _KINDS:
        raise InvalidRequest(f"mount {mount}: entry {e.path!r} has no kind")
    return Entry(path=e.path, kind=_KINDS[e.kind], data=e.data, target=e.target)


def file_chunks(entry: Entry) -> Iterator[pb.FileChunk]:
    """The FileChunks of one exported entry; a file in parts of at most COPY_CHUNK_BYTES, each
    copied out of the entry's view only when it is sent, so memory is one part per stream."""
    kind = _KIND_PB[entry.kind]
    size, links = len(entry.data), entry.links if entry.kind == "file" else 0
    if entry.kind != "file" or not size:
        yield pb.FileChunk(path=entry.path, kind=kind, target=entry.target, size_bytes=size,
                           link_count=links)
        return
    view = memoryview(entry.data)
    for off in range(0, size, COPY_CHUNK_BYTES):
        yield pb.FileChunk(path=entry.path, kind=kind, offset=off, size_bytes=size,
                           link_count=links, data=bytes(view[off:off + COPY_CHUNK_BYTES]))


def log_chunks(seq: int, stream_byte: int, data: bytes) -> Iterator[pb.LogChunk]:
    """An output record as LogChunks of at most COPY_CHUNK_BYTES (records are that small since
    the worker splits writes; one stored by an older roostd may be bigger than a message)."""
    stream = cast(pb.LogStream, stream_byte)     # the stored byte is the LogStream's number
    if len(data) <= COPY_CHUNK_BYTES:
        yield pb.LogChunk(seq=seq, stream=stream, data=data)
        return
    view = memoryview(data)
    for at in range(0, len(data), COPY_CHUNK_BYTES):
        yield pb.LogChunk(seq=seq, stream=stream, data=bytes(view[at:at + COPY_CHUNK_BYTES]))


def receive_module(modules: ModuleRegistry, request_iterator: Iterator,
                   what: str) -> tuple[ModuleRecord, bool]:
    """A module streamed as a header then chunks (a client's upload, a peer's push): the
    registry's record of it, and whether it was held already."""
    first = next(request_iterator, None)
    check(first)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidRequest(f"{what} must start with a header message")
    header = first.header

    def chunks() -> Iterator[bytes]:
        for part in request_iterator:
            check(part)
            if part.WhichOneof("part") != "chunk":
                raise InvalidRequest(f"{what}: a second header after the first")
            yield part.chunk
    return modules.receive(header.name, header.size_bytes, header.sha256, chunks())


def module_pb(record: ModuleRecord, deduplicated: bool = False) -> pb.Module:
    return pb.Module(sha256=record.sha256, name=record.name, size_bytes=record.size_bytes,
                     uploaded_at=record.uploaded_at, imports=record.imports,
                     deduplicated=deduplicated)


def migrate_progress_pb(p) -> pb.MigrateProgress:
    out = pb.MigrateProgress(phase=p.phase, round=p.round, bytes_sent=p.bytes_sent,
                             round_dirty_bytes=p.round_dirty_bytes, seconds=p.seconds)
    if p.report:
        r = p.report
        out.report.CopyFrom(pb.MigrateReport(
            id=r["id"], source=r["source"], target=r["target"], rounds=r["rounds"],
            bytes_sent=r["bytes_sent"], memory_bytes=r["memory_bytes"],
            total_seconds=r["total_seconds"], downtime_seconds=r["downtime_seconds"],
            epoch=r["epoch"], cold=r["cold"], throttle=r["throttle"],
            stop_seconds=r["stop_seconds"], final_push_seconds=r["final_push_seconds"],
            handover_seconds=r["handover_seconds"], resume_seconds=r["resume_seconds"],
            final_bytes=r["final_bytes"]))
    return out


def execution_pb(r: ExecutionRecord, served_by: str = "", in_flight: str = "") -> pb.Execution:
    return pb.Execution(
        id=r.id, name=r.name, module_sha256=r.module_sha256, module_name=r.module_name,
        state=pb.ExecutionState.Value(r.state.value), exit_code=r.exit_code, error=r.error,
        argv=r.argv, env=[pb.EnvVar(key=k, value=v) for k, v in r.env], mounts=r.mounts,
        created_at=r.created_at, started_at=r.started_at, finished_at=r.finished_at,
        worker_pid=r.worker_pid, stdout_bytes=r.stdout_bytes, stderr_bytes=r.stderr_bytes,
        host_calls=r.host_calls, memory_bytes=r.memory_bytes,
        memory_limit_bytes=r.memory_limit_bytes, cooperative=r.cooperative,
        checkpoint_every_seconds=r.checkpoint_every_seconds, node_id=r.node_id,
        restores=r.restores, journal_records=r.journal_records, checkpoints=r.checkpoints,
        dirty_tracker=r.dirty_tracker, restore_seconds=r.restore_seconds, owner=r.owner,
        epoch=r.epoch, replicas=r.replicas, owner_address=r.owner_address, served_by=served_by,
        notes=r.notes, allow_http=r.allow_http,
        http=pb.HttpActivity(sent=r.http_sent, replayed=r.http_replayed, resent=r.http_resent,
                             refused=r.http_refused, failed=r.http_failed,
                             interrupted=r.http_interrupted, in_flight=in_flight))


def handlers(service: ControlService) -> grpc.GenericRpcHandler:
    """Method handlers for the Control service (see `rpc.service_handlers`)."""
    return service_handlers(pb, "Control", service)
