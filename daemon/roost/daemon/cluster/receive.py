"""Receiving checkpoints peers push: what this daemon holds of other daemons' executions.

A push (`pushwire`) is stored like a local checkpoint, through the same sink
(`checkpoint.transfer.CheckpointSink`, the store's `PageStore`): frames in parts as they
arrive, then map, manifest, host state, record, output and journal records in one commit —
whose delta, retention and garbage collection are the sink's, as for a local checkpoint. A
push is refused unless its header follows from what this daemon knows (`authority`: the
caller is the owner, its epoch is no older than the one known) and every message stays in the
bounds its header sets (`pushwire.Bounds`), before anything of it is stored.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from roost.daemon import faults
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.transfer import CheckpointStore, Commit, FrameSink, Parts, Records
from roost.daemon.cluster.authority import (
    MAX_EPOCH_STEP,
    MAX_NODE,
    Ownership,
    check_address,
    check_epoch,
    check_id,
    check_node,
    known,
)
from roost.daemon.cluster.peerauth import Caller
from roost.daemon.cluster.pushwire import Blob, Bounds, Joined, no_later, read_blobs, stored_log
from roost.daemon.errors import InvalidRequest, NotFound, StateConflict, StoreError
from roost.daemon.faults import Fault
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.service.fields import short
from roost.daemon.store import logrecord
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, Owner
from roost.v1 import peer_pb2 as pb

PART_BYTES = 8 << 20           # frames stored in transactions of about this much on receipt


class Replicas:
    """The receiving side. `standby` (the supervisor) keeps a migration's standby worker
    following what arrives: has_standby, touch_standby, apply_arrived, follow."""

    def __init__(self, me: NodeIdentity, store: Store, checkpoints: CheckpointStore, standby,
                 retain: int, handovers, ownership: Ownership) -> None:
        self.me, self.store, self.pages = me, store, checkpoints
        self.standby = standby
        self.retain = retain
        self.handovers = handovers
        self.ownership = ownership

    def status(self, exec_id: str, module_sha256: str) -> pb.ReplicaStatusResponse:
        out = pb.ReplicaStatusResponse(has_module=bool(module_sha256) and self.store.has_module(module_sha256))
        try:
            record = self.store.get_execution(exec_id)
        except NotFound:
            return out
        latest = self.pages.latest(exec_id)
        out.found, out.owner, out.epoch = True, record.owner, record.epoch
        out.owner_address = record.owner_address
        out.latest_checkpoint = latest.number if latest else 0
        out.versions.extend(self.pages.held_versions(exec_id))
        out.log_records = self.store.next_seq("logs", exec_id)
        out.journal_records = self.store.next_seq("journal", exec_id)
        out.module_sha256 = record.module_sha256
        out.has_module = self.store.has_module(record.module_sha256)
        out.prepared = record.prepared
        return out

    def receive(self, chunks: Iterator[pb.CheckpointChunk], caller: Caller) -> pb.PushCheckpointResponse:
        """Store a push from `caller` once its header passes the ownership rules and every
        size in it is bounded (`authority`, `pushwire.Bounds`)."""
        first = next(chunks, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidRequest("push: the first message must be the checkpoint's header")
        header = first.header
        record, bounds, blobs = self._accept(header, caller, chunks)
        number, received = header.number, first.ByteSize() + sum(map(len, blobs.values()))
        chunks = bounds.checked(chunks)
        if header.prepare_epoch:
            if faults.value(Fault.REFUSE_PREPARE):
                faults.spend(Fault.REFUSE_PREPARE)
                raise StateConflict(f"handover of {header.id}: refused (fault point)")
            self.handovers.check_prepare(header.id, header.prepare_epoch, record.epoch)
            record.prepared = str(Owner(header.prepare_epoch, header.owner, header.source_address))
        if self.pages.manifest(header.id, number) is not None:
            received += self._store_records(header, record, chunks)
        else:
            received += self._store(header, record, chunks, bounds, blobs)
        if header.migration:
            self.standby.follow(header.id, number)
        if header.prepare_epoch:
            self.handovers.watch(header.id, header.prepare_epoch)
        return pb.PushCheckpointResponse(number=number, bytes=received)

    def append(self, request: pb.AppendRecordsRequest, caller: Caller) -> pb.AppendRecordsResponse:
        """Output and journal records the owner wrote since those held here (`shipping`):
        refused unless the caller owns the execution at the epoch known here (or a newer one:
        a handover or takeover this daemon did not see); output records are taken only in
        order from the first one missing, journal records from the first one missing on (the
        owner may have collected older ones: a checkpoint covers them)."""
        what = f"records of {short(request.id)}"
        check_id(request.id, "append records")
        check_node(request.owner, f"{what}: owner")
        check_address(request.source_address, f"{what}: source address")
        caller.must_be(request.owner, what)
        check_epoch(request.epoch, what)
        if request.owner == self.me.node_id:
            raise StateConflict(f"{what}: names this daemon's own node id {self.me.node_id!r} as "
                                "its owner (two daemons share one node id?)")
        local = known(self.store, request.id)
        if local is None:
            if not request.has_inputs:
                return pb.AppendRecordsResponse(found=False)
            local = self._introduced(request)
        else:
            self._check_append(request, local, what)
        logs_next = self.store.next_seq("logs", request.id)
        journal_next = self.store.next_seq("journal", request.id)
        logs: list[tuple[int, bytes]] = []
        journal: list[tuple[int, bytes]] = []
        for rec in request.logs:
            if rec.seq < logs_next:
                continue
            if rec.seq != logs_next + len(logs) or rec.stream not in (1, 2) or rec.continues:
                break                  # a gap: the owner starts again from what is held
            logs.append((rec.seq, stored_log(rec, rec.data)))
        last = journal_next - 1
        for rec in request.journal:
            if rec.seq <= last or rec.continues:
                continue
            journal.append((rec.seq, rec.data))
            last = rec.seq
        if logs or journal:
            out = sum(logrecord.data_size(raw) for _, raw in logs if logrecord.stream_of(raw) == 1)
            err = sum(logrecord.data_size(raw) for _, raw in logs if logrecord.stream_of(raw) != 1)
            held = max(journal_next, last + 1)

            def counted(record: ExecutionRecord) -> None:
                """The record's counters follow what is held (inspect here; a takeover)."""
                record.stdout_bytes += out
                record.stderr_bytes += err
                record.journal_records = held
            self.pages.put_records(request.id, Records(logs, journal), change=counted)
        return pb.AppendRecordsResponse(found=True, log_records=logs_next + len(logs),
                                        journal_records=max(journal_next, last + 1))

    def _introduced(self, request: pb.AppendRecordsRequest) -> ExecutionRecord:
        """An execution first heard of through its records: its record and inputs, stored
        as a push's would be."""
        header = pb.CheckpointHeader(id=request.id, owner=request.owner, epoch=request.epoch,
                                     source_address=request.source_address,
                                     record=request.record, has_inputs=True)
        pushed = self._pushed(header, None)
        self._create(pushed, request.stdin, request.initial_vfs)
        return pushed

    def _check_append(self, request: pb.AppendRecordsRequest, local: ExecutionRecord,
                      what: str) -> None:
        """The ownership rules of a push, for records (`authority.Ownership.check_push`)."""
        if request.epoch < local.epoch:
            raise StateConflict(f"{what} at epoch {request.epoch}: stale, this daemon knows "
                                f"epoch {local.epoch} (owner {local.owner})")
        self.ownership.not_mine(what, local)
        if request.epoch == local.epoch and request.owner != local.owner:
            raise StateConflict(f"{what}: {short(request.owner)} claims epoch {request.epoch}, "
                                f"which is {local.owner}'s")
        if request.epoch > local.epoch:
            if request.epoch > local.epoch + MAX_EPOCH_STEP:
                raise StateConflict(f"{what}: epoch {request.epoch} does not follow from "
                                    f"{local.epoch}")
            def moved(record: ExecutionRecord) -> bool:
                record.owner, record.epoch = request.owner, request.epoch
                record.owner_address = request.source_address
                return True
            self.store.update_execution(local.id, moved)

    def _store_records(self, header: pb.CheckpointHeader, record: ExecutionRecord,
                       chunks: Iterator[pb.CheckpointChunk]) -> int:
        """A push of a checkpoint held already (an ack that was lost, or a migration's round
        that a replica push of the same checkpoint beat): its frames are here, but the output
        and journal records it carries may not be — they were read when it was sent, after
        those of the earlier push, and the pusher counts them as held from now on."""
        records = Joined(header.id)
        received = 0
        for chunk in chunks:
            received += chunk.ByteSize()
            if chunk.WhichOneof("part") in ("log", "journal"):
                self._take(records, chunk)
        if not (records.any() or header.prepare_epoch):
            return received
        self.pages.put_records(header.id, records.take(), record if header.prepare_epoch else None)
        return received

    def _take(self, records: Joined, chunk: pb.CheckpointChunk) -> None:
        """One message of output or journal: joined; a batch of about PART_BYTES is stored
        at once in its own transaction (a push's records never pile up in memory; stored
        early, they are what the pusher finds held when a broken push is retried)."""
        records.add(chunk)
        if records.size >= PART_BYTES:
            self.pages.put_records(records.exec_id, records.take())

    def _accept(self, header: pb.CheckpointHeader, caller: Caller, chunks: Iterator[pb.CheckpointChunk]
                ) -> tuple[ExecutionRecord, Bounds, dict[Blob, bytes]]:
        """The record this push updates, the bounds its messages are held to and its large
        values (read from the BlobParts after the header); refuses a push that does not follow
        from what this daemon knows (`authority.Ownership`)."""
        check_id(header.id, "push")
        local = known(self.store, header.id)
        self.ownership.check_push(caller, header, local)
        pushed = self._pushed(header, local)
        bounds = Bounds.of(header)
        blobs = read_blobs(header, chunks)
        if local is None:
            if not header.has_inputs:
                raise StateConflict(f"push of {header.id}: its inputs are needed first")
            self._create(pushed, blobs[Blob.STDIN], blobs[Blob.INITIAL_VFS])
            return pushed, bounds, blobs
        pushed.prepared, pushed.replicas = local.prepared, local.replicas
        pushed.migration, pushed.handing_over = "", 0
        return pushed, bounds, blobs

    def _pushed(self, header: pb.CheckpointHeader, local: ExecutionRecord | None) -> ExecutionRecord:
        """The record a push (or a first AppendRecords) carries, checked against its header,
        with the owner, epoch and address the header gives."""
        try:
            pushed = ExecutionRecord.from_json(header.record)
        except (ValueError, TypeError, KeyError) as e:
            raise InvalidRequest(f"push of {header.id}: its record does not parse: {e}") from None
        self.ownership.check_record(header, pushed, local)
        pushed.owner, pushed.epoch, pushed.owner_address = header.owner, header.epoch, header.source_address
        pushed.node_id = pushed.node_id[:MAX_NODE]
        return pushed

    def _create(self, pushed: ExecutionRecord, stdin: bytes, initial_vfs: bytes) -> None:
        """A replica of an execution this daemon did not know: its record and inputs."""
        if not self.store.has_module(pushed.module_sha256):
            raise StateConflict(f"push of {pushed.id}: module {pushed.module_sha256} is missing")
        pushed.prepared = pushed.migration = ""
        pushed.handing_over = 0
        pushed.replicas = []
        self.store.create_execution(pushed, stdin, initial_vfs)

    def _page_map(self, header: pb.CheckpointHeader, max_pages: int
                  ) -> tuple[pagemap.PageMap, pagemap.Delta | None]:
        """The pushed checkpoint's full map: as sent, or this store's map of the base checkpoint
        with the sent delta applied; and that delta."""
        try:
            if not header.page_map_base:
                full = pagemap.decode(header.page_map, None, max_pages)
                no_later(header, full.versions)
                return full, None
            pages, delta = pagemap.delta_entries(header.page_map, max_pages)
        except StoreError as e:
            raise InvalidRequest(f"push of {header.id}: {e}") from None
        no_later(header, delta[:, 1])
        try:
            base = self.pages.page_map(header.id, header.page_map_base).copy()
        except NotFound:
            raise StateConflict(f"push of {header.id}: its map is a delta from checkpoint "
                                f"{header.page_map_base}, which this daemon no longer holds") from None
        return pagemap.with_delta(base, pages, delta), delta

    def _store(self, header: pb.CheckpointHeader, record: ExecutionRecord,
               chunks: Iterator[pb.CheckpointChunk], bounds: Bounds, blobs: dict[Blob, bytes]) -> int:
        """Frames are written as they come, in parts of about PART_BYTES (the disk writes
        while more arrives); the last ones of the checkpoint's own version ride with the
        commit of the rest (a small push is one transaction). A migration's standby gets the
        new pages before that commit, from what arrived (it need not wait for the disk)."""
        exec_id, number = header.id, header.number
        following = bool(header.migration) and self.standby.has_standby(exec_id)
        arrived: dict[int, list[bytes]] = {}
        sink: FrameSink = _Touching(self.pages, self.standby, exec_id) if following else self.pages
        parts = Parts(sink, exec_id, number, PART_BYTES)
        records = Joined(exec_id)
        received = 0
        for chunk in chunks:
            kind = chunk.WhichOneof("part")
            received += chunk.ByteSize()
            if kind == "frame":
                frame = chunk.frame
                parts.add(frame.version, frame.index, frame.data)
                if following:
                    arrived.setdefault(frame.version, []).append(frame.data)
            elif kind in ("log", "journal"):
                self._take(records, chunk)
        tail = parts.tail()
        manifest = dataclasses.replace(bounds.manifest, owner=header.owner, epoch=header.epoch)
        page_map, sent_delta = self._page_map(header, bounds.pages)
        if following:
            self.standby.apply_arrived(exec_id, number, manifest.memory_bytes, page_map, arrived)
        # What the owner worked out already need not be again here (a migration's downtime).
        delta = sent_delta if header.page_map_base == number - 1 else None
        self.pages.commit(Commit(
            record, manifest, blobs[Blob.HOST], blobs[Blob.STACK], page_map, delta, tail,
            parts.streamed, self.retain, records=records.take(),
            referenced=frozenset(header.referenced) if header.referenced else None,
            hurry=bool(header.prepare_epoch), stats=bounds.stats))
        return received


class _Touching:
    """A sink that keeps a migration's standby from expiring while its parts are stored."""

    def __init__(self, sink: FrameSink, standby, exec_id: str) -> None:
        self.sink, self.standby, self.exec_id = sink, standby, exec_id

    def put_frames(self, exec_id: str, number: int, first: int,
                   frames: Sequence[bytes | memoryview]) -> None:
        self.standby.touch_standby(self.exec_id)
        self.sink.put_frames(exec_id, number, first, frames)
