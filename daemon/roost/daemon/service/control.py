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
from google.protobuf.timestamp_pb2 import Timestamp

from roost.daemon.checkpoint.frames import PAGE_BYTES
from roost.daemon.cluster.authority import check_address
from roost.daemon.errors import InvalidRequest, NotFound, StateConflict, TimedOut
from roost.daemon.executions.running import worker_pid
from roost.daemon.executions.supervisor import StartSpec, Supervisor
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.runtime.vfs import Entry
from roost.daemon.service import debug, fields, paging
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
        out = execution_pb(record, self.supervisor.node_id,
                           live.http_in_flight if live is not None else "")
        out.worker_pid = worker_pid(live)        # the live worker's, never a stale one
        return out

    @translated
    def UploadModule(self, request_iterator: Iterator, context) -> pb.Module:
        return module_pb(*receive_module(self.modules, request_iterator, "upload"))

    @translated
    def GetModule(self, request, context) -> pb.Module:
        check(request)
        return module_pb(self.modules.get(self.modules.resolve(request.sha256)))

    @translated
    def PrepareModule(self, request, context) -> pb.Module:
        check(request)
        record = self.modules.get(self.modules.resolve(request.sha256))
        self.modules.ensure_artifact(record.sha256, not request.cooperative, wait=True)
        return module_pb(record)

    @translated
    def ListModules(self, request, context) -> pb.ListModulesResponse:
        check(request)
        prefix = fields.name(request.name_prefix, "name_prefix")
        found = paging.page((m for m in self.modules.list() if m.name.startswith(prefix)),
                            lambda m: (m.uploaded_at, m.sha256), request.page_size, request.page_token)
        return pb.ListModulesResponse(modules=[module_pb(m) for m in found.items],
                                      next_page_token=found.next_token)

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
        found = paging.page(listed(self.supervisor, request), lambda r: (r.created_at, r.id),
                            request.page_size, request.page_token)
        return pb.ListExecutionsResponse(executions=[self._pb(r) for r in found.items],
                                         next_page_token=found.next_token)

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
        tail, since_ns = log_selection(request)
        with held:
            for entry in self.supervisor.logs(_id(request.id), request.from_seq, request.follow,
                                              int(request.stream), context.is_active, tail,
                                              since_ns):
                yield from log_chunks(entry.seq, entry.stream, entry.data, entry.time_ns)

    @translated
    def WaitExecution(self, request, context) -> pb.Execution:
        check(request)
        timeout = fields.duration(request.timeout, "timeout")
        try:
            self.supervisor.get(_id(request.id))
        except NotFound:
            return self._elsewhere(_id(request.id))
        with self.long_polls.held(context.peer(), "wait"):
            record = self.supervisor.wait(_id(request.id), timeout or None, context.is_active)
        if not record.state.ended and context.is_active() and self.supervisor.owns(record):
            raise TimedOut(f"execution {record.id} still {record.state.value} after "
                           f"{timeout:g} s")
        return self._pb(record)           # (ended, or moved: owner_address says where)

    @translated
    def KillExecution(self, request, context) -> pb.Execution:
        check(request)
        return self._pb(self.supervisor.kill(_id(request.id)))

    @translated
    def Checkpoint(self, request, context) -> pb.CheckpointResponse:
        check(request)
        timeout = fields.duration(request.timeout, "timeout") or 60.0
        r = self._sleeping_checkpoint(_id(request.id)) or self.supervisor.checkpoint(_id(request.id), timeout)
        if self.replicator is not None:   # replication.ack one/all: the replicas hold it first
            self.replicator.wait_acked(self.supervisor.get(_id(request.id)).id, r["number"], timeout)
        return checkpoint_response_pb(r)

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
        budget = fields.duration(request.downtime_budget, "downtime_budget", high=60.0)
        if request.max_rounds > 1000:
            raise InvalidRequest(f"max_rounds: {request.max_rounds} is more than 1000")
        events: queue.SimpleQueue = queue.SimpleQueue()
        failure: list[Exception] = []

        def run() -> None:
            try:
                self.migrations.migrate(_id(request.id), request.target, request.cold,
                                        budget, request.max_rounds,
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
        record = self.supervisor.get(_id(request.id))       # NotFound: no such execution
        try:
            entries = self.supervisor.copy_out(record.id, request.path)
        except NotFound:
            raise NotFound(f"no such file in {record.id}: {fields.short(request.path)}") from None
        for entry in entries:
            yield from file_chunks(entry)

    @translated
    def Recover(self, request, context) -> pb.Execution:
        check(request)
        if self.locate is not None and self.automatic:
            raise StateConflict("this cluster runs on etcd: a replica takes over an execution "
                                "whose owner's lease expired by itself (no recover needed)")
        return self._pb(self.supervisor.promote(_id(request.id)))

    # ---- lifecycle: rm, prune, modules rm (the supervisor's `remove`, `prune`) ----
    @translated
    def RemoveExecution(self, request, context) -> pb.RemoveExecutionResponse:
        check(request)
        removed = self.supervisor.remove(_id(request.id), request.force)
        return pb.RemoveExecutionResponse(id=removed.ids[0], bytes_freed=removed.bytes_freed)

    @translated
    def PruneExecutions(self, request, context) -> pb.PruneExecutionsResponse:
        check(request)
        older_than = fields.duration(request.older_than, "older_than", high=MAX_PRUNE_AGE_SECONDS)
        removed = self.supervisor.prune(older_than, prune_states(request.states), request.dry_run)
        return pb.PruneExecutionsResponse(ids=removed.ids, bytes_freed=removed.bytes_freed)

    @translated
    def RemoveModule(self, request, context) -> pb.RemoveModuleResponse:
        check(request)
        digest = self.modules.resolve(request.sha256)
        freed, files = self.supervisor.remove_module(digest, request.force)
        return pb.RemoveModuleResponse(sha256=digest, bytes_freed=freed, cache_files=files)

    @translated
    def ListNodes(self, request, context) -> pb.ListNodesResponse:
        check(request)
        return pb.ListNodesResponse(nodes=self.nodes())

    @translated
    def DebugCheckpoint(self, request, context) -> pb.DebugCheckpointResponse:
        check(request)
        record = self.supervisor.get(_id(request.id))
        return debug.describe(self.checkpoints, record.id, request.number)

    @translated
    def GetVersion(self, request, context) -> pb.Version:
        check(request)
        return version_pb(self.supervisor.node_id)


def version_pb(node_id: str) -> pb.Version:
    """`roost version`'s daemon half. Versions come from package metadata, so wasmtime is
    named without being imported (roostd loads it lazily, at the first run)."""
    import importlib.metadata
    import platform

    def installed(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return pb.Version(version=installed("roost"), api=pb.DESCRIPTOR.package,
                      python=platform.python_version(), wasmtime=installed("wasmtime"),
                      node_id=node_id)


MAX_PRUNE_AGE_SECONDS = 100 * 365 * 86400.0     # older_than: a century is "every one"


def prune_states(values) -> set[State]:
    """PruneExecutions' states: ended ones only (an execution that runs is removed with
    `rm -f`, one at a time, never by a prune)."""
    out = set()
    for value in values:
        name = pb.ExecutionState.Name(value) if value in pb.ExecutionState.values() else str(value)
        state = State._value2member_map_.get(name)
        if not isinstance(state, State) or not state.ended:
            raise InvalidRequest(f"states: {name} is not an ended state (EXITED, FAILED, KILLED)")
        out.add(state)
    return out


def _id(value: str) -> str:
    """An execution id, name or id prefix, checked (the supervisor's `get` resolves it)."""
    return fields.ref(value)


def listed(supervisor: Supervisor, request: pb.ListExecutionsRequest) -> list[ExecutionRecord]:
    """ListExecutions' filters: `states` if any (else not ended, or with `all` every state),
    and a name prefix."""
    prefix = fields.name(request.name_prefix, "name_prefix")
    states = {fields.execution_state(s, pb.ExecutionState) for s in request.states}
    records = supervisor.list(include_ended=request.all or bool(states))
    return [r for r in records if r.name.startswith(prefix) and (not states or r.state.value in states)]


def start_spec(request: pb.StartExecutionRequest, max_memory_bytes: int = 1 << 32) -> StartSpec:
    """A start request's fields, each checked (`fields`) before anything is created."""
    fields.sha256(request.module_sha256)
    argv = [request.argv0 or "main", *request.args]
    env = [(e.key, e.value) for e in request.env]
    fields.args_and_env(argv, env)
    for m in request.mounts:
        fields.path(m.guest_path, "mount")
    mounts = [(m.guest_path, [entry_of(e, m.guest_path) for e in m.entries]) for m in request.mounts]
    every = fields.duration(request.checkpoint_interval, "checkpoint_interval",
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


def log_selection(request: pb.StreamLogsRequest) -> tuple[int | None, int | None]:
    """(tail lines or None for all, since as unix ns or None) of a StreamLogs request."""
    tail = request.tail if request.HasField("tail") else None
    if not request.HasField("since"):
        return tail, None
    if request.since.nanos < 0 or request.since.nanos > 999_999_999:
        raise InvalidRequest(f"since: nanos {request.since.nanos} is not in 0..999999999")
    return tail, max(0, request.since.ToNanoseconds())


def log_chunks(seq: int, stream_byte: int, data: bytes,
               time_ns: int | None = None) -> Iterator[pb.LogChunk]:
    """An output record as LogChunks of at most COPY_CHUNK_BYTES (records are that small since
    the worker splits writes; one stored by an older roostd may be bigger than a message),
    each with the record's time (unset: stored without one)."""
    stream = cast(pb.LogStream, stream_byte)     # the stored byte is the LogStream's number
    stamp = None
    if time_ns is not None:
        stamp = Timestamp()
        stamp.FromNanoseconds(time_ns)
    if len(data) <= COPY_CHUNK_BYTES:
        yield pb.LogChunk(seq=seq, stream=stream, data=data, time=stamp)
        return
    view = memoryview(data)
    for at in range(0, len(data), COPY_CHUNK_BYTES):
        yield pb.LogChunk(seq=seq, stream=stream, data=bytes(view[at:at + COPY_CHUNK_BYTES]),
                          time=stamp)


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
                     upload_time=fields.to_timestamp(record.uploaded_at), imports=record.imports,
                     deduplicated=deduplicated)


_d = fields.to_duration      # float seconds (a measurement, 0 included) -> Duration, below


def checkpoint_response_pb(r: dict) -> pb.CheckpointResponse:
    """A checkpoint's answer (the supervisor's dict, in seconds) as the API's message."""
    return pb.CheckpointResponse(
        number=r["number"], pause_duration=_d(r["pause_seconds"]),
        time_to_safepoint=_d(r["time_to_safepoint_seconds"]),
        total_duration=_d(r["total_seconds"]), memory_bytes=r["memory_bytes"],
        stored_bytes=r["stored_bytes"], journal_seq=r["journal_seq"],
        dirty_pages=r.get("dirty_pages") or 0,
        dirty_bytes=(r.get("dirty_pages") or 0) * PAGE_BYTES,
        precopy_duration=_d(r.get("precopy_seconds") or 0.0), held_by=r.get("held_by") or "")


def migrate_progress_pb(p) -> pb.MigrateProgress:
    out = pb.MigrateProgress(phase=p.phase, round=p.round, bytes_sent=p.bytes_sent,
                             round_dirty_bytes=p.round_dirty_bytes,
                             elapsed=fields.to_duration(p.seconds))
    if p.report:
        r = p.report
        out.report.CopyFrom(pb.MigrateReport(
            id=r["id"], source=r["source"], target=r["target"], rounds=r["rounds"],
            bytes_sent=r["bytes_sent"], memory_bytes=r["memory_bytes"],
            total_duration=_d(r["total_seconds"]), downtime=_d(r["downtime_seconds"]),
            epoch=r["epoch"], cold=r["cold"], throttle=r["throttle"],
            stop_duration=_d(r["stop_seconds"]), final_push_duration=_d(r["final_push_seconds"]),
            handover_duration=_d(r["handover_seconds"]), resume_duration=_d(r["resume_seconds"]),
            final_bytes=r["final_bytes"]))
    return out


def execution_pb(r: ExecutionRecord, served_by: str = "", in_flight: str = "") -> pb.Execution:
    return pb.Execution(
        id=r.id, name=r.name, module_sha256=r.module_sha256, module_name=r.module_name,
        state=pb.ExecutionState.Value(r.state.value), exit_code=r.exit_code, error=r.error,
        argv=r.argv, env=[pb.EnvVar(key=k, value=v) for k, v in r.env], mounts=r.mounts,
        create_time=fields.to_timestamp(r.created_at), start_time=fields.to_timestamp(r.started_at),
        finish_time=fields.to_timestamp(r.finished_at),
        worker_pid=r.worker_pid, stdout_bytes=r.stdout_bytes, stderr_bytes=r.stderr_bytes,
        host_calls=r.host_calls, memory_bytes=r.memory_bytes,
        memory_limit_bytes=r.memory_limit_bytes, cooperative=r.cooperative,
        checkpoint_interval=fields.optional_duration(r.checkpoint_every_seconds), node_id=r.node_id,
        restores=r.restores, journal_records=r.journal_records, checkpoints=r.checkpoints,
        dirty_tracker=r.dirty_tracker, restore_duration=fields.optional_duration(r.restore_seconds), owner=r.owner,
        epoch=r.epoch, replicas=r.replicas, owner_address=r.owner_address, served_by=served_by,
        notes=r.notes, allow_http=r.allow_http,
        http=pb.HttpActivity(sent=r.http_sent, replayed=r.http_replayed, resent=r.http_resent,
                             refused=r.http_refused, failed=r.http_failed,
                             interrupted=r.http_interrupted, in_flight=in_flight))


def handlers(service: ControlService) -> grpc.GenericRpcHandler:
    """Method handlers for the Control service (see `rpc.service_handlers`)."""
    return service_handlers(pb, "Control", service)
