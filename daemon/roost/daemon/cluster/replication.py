"""Checkpoint replication between roostds: push what a peer lacks, store what a peer pushes.

After every checkpoint it commits of an execution it owns, a daemon pushes that checkpoint to
the execution's replica peers (`replication.factor` of its configured peers), one background
thread per peer (`Replicator`):

    ReplicaStatus -> [PushModule] -> PushCheckpoint(header, frames of the page versions the
                                                     peer lacks, output and journal records
                                                     after those it holds)

so a peer that holds the previous checkpoint receives only the new version's frames, and one
that was away catches up from whatever it holds. A peer's stream that breaks is retried with
backoff from what the peer then says it holds. Per peer, only the newest committed checkpoint
of each execution waits to be pushed (a newer one replaces an older one still waiting), and a
push reads frames from the store as it sends them (gRPC's flow control holds the rest back): a
slow peer costs lag, never memory. Lag per peer is a metric (seconds since the oldest checkpoint
it has not acknowledged, and the bytes of those checkpoints).

The receiving side (`Replicas`) stores a push like a local checkpoint — frames in parts as
they arrive, then map, manifest, host state, record, output and journal records in one
transaction — and refuses one whose epoch is older than what it knows of the execution.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

from roost.v1 import peer_pb2 as pb

from roost.daemon import faults
from roost.daemon.node import metrics
from roost.daemon.checkpoint import pagemap
from roost.daemon.cluster.authority import MAX_NODE, Ownership, check_id, known
from roost.daemon.errors import InvalidRequest, NotFound, StateConflict, StoreError
from roost.daemon.faults import Fault
from roost.daemon.checkpoint.pagemap import MAX_PAGES
from roost.daemon.service.fields import short
from roost.daemon.cluster.peerauth import Caller
from roost.daemon.store.checkpoints import COMMITTED, PageStore, Uncommitted
from roost.daemon.cluster.peers import PeerClient, PeerError
from roost.daemon.store.records import ExecutionRecord
from roost.daemon.store.db import Store
from roost.daemon.executions.supervisor import Supervisor

log = logging.getLogger(__name__)
Blob = pb.BlobPart.Kind
_BLOB_SIZE = {Blob.HOST: "host_bytes", Blob.STACK: "stack_bytes", Blob.STDIN: "stdin_bytes",
              Blob.INITIAL_VFS: "initial_vfs_bytes"}
_BLOB_INLINE = {Blob.HOST: "host", Blob.STACK: "stack", Blob.STDIN: "stdin",
                Blob.INITIAL_VFS: "initial_vfs"}
PIECE = 1 << 20                # no message of a push carries more than this of a value
MODULE_CHUNK = 1 << 20
LOG_BATCH_BYTES = 4 << 20
PART_BYTES = 8 << 20           # frames stored in transactions of about this much on receipt


class Superseded(StateConflict):
    """The peer knows the execution at a newer epoch: someone else owns it now."""

    def __init__(self, owner: str, address: str, epoch: int) -> None:
        super().__init__(f"execution is owned by {owner} at epoch {epoch}")
        self.owner, self.address, self.epoch = owner, address, epoch


# ---------------------------------------------------------------- sending

class Pusher:
    """Pushes checkpoints of this daemon's executions; one push per (peer, execution) at once."""

    KNOWN_SECONDS = 10.0     # how long what a push left a peer holding is trusted without asking

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.store: Store = supervisor.store
        self.pages: PageStore = supervisor.pages
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        # What each peer holds of each execution after our last push to it (a subset of the
        # truth: the versions the pushed map names, which its retention keeps): the next push
        # (a migration's next round) skips asking.
        self._known: dict[tuple[str, str], tuple[float, pb.ReplicaStatusResponse]] = {}

    def push(self, client: PeerClient, exec_id: str, number: int | None = None,
             migration: str = "", prepare_epoch: int = 0, uncommitted: Uncommitted | None = None) -> int:
        """Push checkpoint `number` (the latest if None) and what the peer lacks with it; the
        bytes sent (0 when the peer holds it already and no migration follows it). With
        `prepare_epoch`, the peer also prepares to take the execution at that epoch. With
        `uncommitted` (checkpoint `number` being committed here), its parts are read from
        memory and the push ends only once it is committed: the peer stores it then, never
        before this daemon does."""
        with self._lock(client.address, exec_id):
            try:
                sent = self._push(client, exec_id, number, migration, prepare_epoch, uncommitted)
            except BaseException:
                self._known.pop((client.address, exec_id), None)
                raise
        metrics.REPLICATION_BYTES.labels(peer=client.address).inc(sent)
        return sent

    def _lock(self, address: str, exec_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((address, exec_id), threading.Lock())

    def _push(self, client: PeerClient, exec_id: str, number: int | None, migration: str,
              prepare_epoch: int, uncommitted: Uncommitted | None) -> int:
        record = self.store.get_execution(exec_id)
        if not migration and not self.supervisor.owns(record):
            return 0       # handed over since it was committed: its new owner replicates it
        status = self._status(client, record)
        if status.found and status.epoch > record.epoch:
            raise Superseded(status.owner, status.owner_address, status.epoch)
        if number is None:
            latest = self.pages.latest(exec_id)
            if latest is None:
                return 0
            number = latest["number"]
        if status.latest_checkpoint >= number and not migration and not prepare_epoch:
            return 0
        sent = 0
        if not status.has_module:
            sent += self._push_module(client, record.module_sha256)
        counter = [0]
        after = pb.ReplicaStatusResponse(found=True, owner=record.owner, epoch=record.epoch,
                                         latest_checkpoint=number, has_module=True,
                                         module_sha256=record.module_sha256)
        # Read before the stream starts: a checkpoint gone meanwhile is NotFound here, not an
        # error inside gRPC's request iterator.
        source = uncommitted if uncommitted is not None and uncommitted.number == number else \
            self._stored(record, number)
        response = client.push_checkpoint(self._chunks(record, number, status, migration, counter,
                                                       prepare_epoch, after, source))
        if response.number == number:
            self._known[(client.address, exec_id)] = (time.monotonic(), after)
        return sent + counter[0] if response.number == number else sent

    def _status(self, client: PeerClient, record: ExecutionRecord) -> pb.ReplicaStatusResponse:
        known = self._known.get((client.address, record.id))
        if known is not None and time.monotonic() - known[0] < self.KNOWN_SECONDS:
            return known[1]
        return client.status(record.id, record.module_sha256)

    def _push_module(self, client: PeerClient, sha256: str) -> int:
        module = self.store.get_module(sha256)
        data = self.store.module_bytes(sha256)

        def chunks() -> Iterator[pb.ModuleChunk]:
            yield pb.ModuleChunk(header=pb.ModuleHeaderPeer(sha256=sha256, name=module.name,
                                                             size_bytes=len(data)))
            for off in range(0, len(data), MODULE_CHUNK):
                yield pb.ModuleChunk(chunk=data[off:off + MODULE_CHUNK])
        client.push_module(chunks())
        return len(data)

    def _chunks(self, record: ExecutionRecord, number: int, status: pb.ReplicaStatusResponse,
                migration: str, counter: list[int], prepare_epoch: int,
                after: pb.ReplicaStatusResponse, source: Uncommitted
                ) -> Iterator[pb.CheckpointChunk]:
        """The push's messages, read from the store (or from `source`, being committed) as
        gRPC asks for them; `after` learns what the peer will hold once it has them."""
        exec_id = record.id
        base, raw_map = self._map_for(exec_id, source.page_map, status)
        header = pb.CheckpointHeader(
            id=exec_id, owner=record.owner, epoch=record.epoch, number=number,
            record=source.record_json, manifest=json.dumps(source.manifest).encode(),
            page_map=raw_map, page_map_base=base, migration=migration, prepare_epoch=prepare_epoch,
            source_address=self.supervisor.address, referenced=sorted(source.referenced))
        referenced = source.referenced
        after.versions.extend(header.referenced)
        blobs = {Blob.HOST: source.host, Blob.STACK: source.stack}
        if not status.found:
            blobs[Blob.STDIN] = self.store.stdin(exec_id)
            blobs[Blob.INITIAL_VFS] = self.store.initial_vfs(exec_id)
            header.has_inputs = True
        for kind, blob in blobs.items():
            setattr(header, _BLOB_SIZE[kind], len(blob))
        counter[0] += header.ByteSize()
        yield pb.CheckpointChunk(header=header)
        for kind, blob in blobs.items():
            for piece in _pieces(blob):
                counter[0] += len(piece)
                yield pb.CheckpointChunk(blob=pb.BlobPart(kind=kind, data=piece))
        held = set(status.versions)
        for version in sorted(referenced - held):
            for index, frame in source.iter_frames(self.pages, version):
                counter[0] += len(frame)
                yield pb.CheckpointChunk(frame=pb.PageFrame(version=version, index=index, data=frame))
        after.log_records = status.log_records
        for seq, stream, data in self._logs(exec_id, status.log_records):
            counter[0] += len(data)
            after.log_records = seq + 1
            for piece, more in _split(data):
                yield pb.CheckpointChunk(log=pb.LogRecord(seq=seq, stream=stream, data=piece,
                                                          continues=more))
        first = max(status.journal_records, source.manifest["journal_seq"])
        after.journal_records = first
        for i, raw in enumerate(self.store.read_journal(exec_id, first)):
            counter[0] += len(raw)
            after.journal_records = first + i + 1
            for piece, more in _split(raw):
                yield pb.CheckpointChunk(journal=pb.JournalRecord(seq=first + i, data=piece,
                                                                  continues=more))
        source.committed.result()                # uncommitted: a failure breaks the push off

    def _stored(self, record: ExecutionRecord, number: int) -> Uncommitted:
        """Checkpoint `number` as the store holds it, in the shape of one being committed
        (committed already: every frame comes from the store)."""
        exec_id = record.id
        manifest = self.pages.manifest(exec_id, number)
        if manifest is None:
            raise NotFound(f"checkpoint {number} of {exec_id} is gone")
        stored = Uncommitted(exec_id, number, manifest, self.pages.page_map(exec_id, number),
                             self.pages.host_state(exec_id, number), self.pages.stack(exec_id, number),
                             [], COMMITTED, record.to_json(), self.pages.referenced(exec_id, number))
        stored.committed.set_result(None)
        return stored

    def _map_for(self, exec_id: str, page_map, status: pb.ReplicaStatusResponse) -> tuple[int, bytes]:
        """The map to send: a delta from the peer's latest checkpoint when this daemon still
        holds that one's map (a migration's rounds: a few entries instead of all of them),
        else the full map."""
        base = status.latest_checkpoint if status.found else 0
        if base:
            try:
                previous = self.pages.page_map(exec_id, base)
            except NotFound:
                base = 0
        if not base:
            return 0, pagemap.encode_full(page_map)
        return base, pagemap.encode_delta(page_map.pages, pagemap.difference(previous, page_map))

    def _logs(self, exec_id: str, first: int) -> Iterator[tuple[int, int, bytes]]:
        seq = first
        while True:
            batch = self.store.read_logs(exec_id, seq, LOG_BATCH_BYTES)
            if not batch:
                return
            yield from batch
            seq = batch[-1][0] + 1


class Replicator:
    """Keeps this daemon's replica peers up to date with the checkpoints it commits."""

    def __init__(self, supervisor: Supervisor, pusher: Pusher, clients: list[PeerClient],
                 factor: int, ack: str) -> None:
        self.supervisor, self.pusher = supervisor, pusher
        self.targets = clients if factor < 0 else clients[:factor]
        self.ack = ack
        self._pending: dict[str, dict[str, tuple[int, float, int]]] = {c.address: {} for c in self.targets}
        self._acked: dict[tuple[str, str], int] = {}
        self._changed = threading.Condition()
        self._stopped = False
        for client in self.targets:
            threading.Thread(target=self._run, args=(client,), name=f"replicate-{client.address}",
                             daemon=True).start()

    def committed(self, record: ExecutionRecord, number: int) -> None:
        """A checkpoint of an execution this daemon owns was committed (supervisor hook)."""
        if not self.targets or not self.supervisor.owns(record):
            return
        manifest = self.supervisor.pages.manifest(record.id, number) or {}
        with self._changed:
            for address, pending in self._pending.items():
                since = pending.get(record.id, (0, time.monotonic(), 0))[1]
                pending[record.id] = (number, since, int(manifest.get("stored_bytes", 0)))
            self._changed.notify_all()

    def wait_acked(self, exec_id: str, number: int, timeout: float = 60.0) -> list[str]:
        """Per `replication.ack`: wait until one (`one`) or every (`all`) replica peer holds
        checkpoint `number`; the addresses that do."""
        need = {"async": 0, "one": 1, "all": len(self.targets)}[self.ack]
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                have = [c.address for c in self.targets
                        if self._acked.get((c.address, exec_id), 0) >= number]
                left = deadline - time.monotonic()
                if len(have) >= need or left <= 0:
                    return have
                self._changed.wait(left)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _run(self, client: PeerClient) -> None:
        backoff = 0.2
        while True:
            with self._changed:
                while not self._pending[client.address] and not self._stopped:
                    self._changed.wait(1.0)
                    self._lag(client.address)
                if self._stopped:
                    return
                exec_id, (number, since, size) = min(self._pending[client.address].items(),
                                                     key=lambda kv: kv[1][1])
            try:
                self.pusher.push(client, exec_id, number)
            except Superseded as e:
                # Only this daemon's own handover gives an execution away: a peer's word that
                # someone else owns it stops nothing here (a hostile or confused peer could
                # otherwise kill any run). It is not replicated there until that changes.
                log.warning("replicating %s to %s: the peer says %s owns it at epoch %d; this "
                            "daemon owns it: not replicating it there", exec_id, client.address,
                            short(e.owner), e.epoch)
                self._done(client.address, exec_id, number)
                continue
            except (PeerError, StateConflict, NotFound, InvalidRequest, OSError) as e:
                log.warning("replicating %s checkpoint %d to %s: %s", exec_id, number, client.address, e)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._done(client.address, exec_id, number)
            self._note(client, exec_id)

    def _note(self, client: PeerClient, exec_id: str) -> None:
        """Record the peer's node id as a replica holder; a peer that will not say who it is
        (refused, gone) is left out, and this thread goes on replicating."""
        try:
            self.supervisor.note_replica(exec_id, client.hello())
        except (PeerError, StateConflict, NotFound) as e:
            log.warning("replica of %s on %s: %s", exec_id, client.address, e)

    def _done(self, address: str, exec_id: str, number: int) -> None:
        with self._changed:
            self._acked[(address, exec_id)] = max(number, self._acked.get((address, exec_id), 0))
            pending = self._pending[address]
            if exec_id in pending and pending[exec_id][0] <= number:
                del pending[exec_id]
            self._lag(address)
            self._changed.notify_all()

    def _lag(self, address: str) -> None:
        pending = self._pending[address].values()
        oldest = min((since for _, since, _ in pending), default=None)
        metrics.REPLICATION_LAG_SECONDS.labels(peer=address).set(
            time.monotonic() - oldest if oldest is not None else 0.0)
        metrics.REPLICATION_LAG_BYTES.labels(peer=address).set(sum(size for _, _, size in pending))


# ---------------------------------------------------------------- receiving

class Replicas:
    """The receiving side: what this daemon holds of other daemons' executions."""

    def __init__(self, supervisor: Supervisor, retain: int, handovers, ownership: Ownership) -> None:
        self.supervisor = supervisor
        self.ownership = ownership
        self.store: Store = supervisor.store
        self.pages: PageStore = supervisor.pages
        self.retain = retain
        self.handovers = handovers

    def status(self, exec_id: str, module_sha256: str) -> pb.ReplicaStatusResponse:
        out = pb.ReplicaStatusResponse(has_module=bool(module_sha256) and self.store.has_module(module_sha256))
        try:
            record = self.store.get_execution(exec_id)
        except NotFound:
            return out
        latest = self.pages.latest(exec_id)
        out.found, out.owner, out.epoch = True, record.owner, record.epoch
        out.owner_address = record.owner_address
        out.latest_checkpoint = latest["number"] if latest else 0
        out.versions.extend(self.pages.held_versions(exec_id))
        out.log_records = self.store.next_seq("logs", exec_id)
        out.journal_records = self.store.next_seq("journal", exec_id)
        out.module_sha256 = record.module_sha256
        out.has_module = self.store.has_module(record.module_sha256)
        out.prepared = record.prepared
        return out

    def receive(self, chunks: Iterator[pb.CheckpointChunk], caller: Caller) -> pb.PushCheckpointResponse:
        """Store a push from `caller` once its header passes the ownership rules and every
        size in it is bounded (`authority`, `_bounds`)."""
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
            record.prepared = f"{header.prepare_epoch} {header.owner} {header.source_address}"
        if self.pages.manifest(header.id, number) is not None:
            received += self._store_records(header, record, chunks)
        else:
            received += self._store(header, record, chunks, bounds, blobs)
        if header.migration:
            self.supervisor.follow(header.id, number)
        if header.prepare_epoch:
            self.handovers.watch(header.id, header.prepare_epoch)
        return pb.PushCheckpointResponse(number=number, bytes=received)

    def _store_records(self, header: pb.CheckpointHeader, record: ExecutionRecord,
                       chunks: Iterator[pb.CheckpointChunk]) -> int:
        """A push of a checkpoint held already (an ack that was lost, or a migration's round
        that a replica push of the same checkpoint beat): its frames are here, but the output
        and journal records it carries may not be — they were read when it was sent, after
        those of the earlier push, and the pusher counts them as held from now on."""
        records = _Records(header.id)
        received = 0
        for chunk in chunks:
            received += chunk.ByteSize()
            if chunk.WhichOneof("part") in ("log", "journal"):
                self._take(records, chunk)
        if not (records.any() or header.prepare_epoch):
            return received
        self.store.check_room(f"storing output pushed for {header.id}")
        with self.store.txn(f"storing records pushed for {header.id}", write=True) as txn:
            records.put(self.store, txn)
            if header.prepare_epoch:
                self.store.put_execution_in(txn, record)
        return received

    def _take(self, records: "_Records", chunk: pb.CheckpointChunk) -> None:
        """One message of output or journal: joined; a batch of about PART_BYTES is stored
        at once in its own transaction (a push's records never pile up in memory; stored
        early, they are what the pusher finds held when a broken push is retried)."""
        records.add(chunk)
        if records.size >= PART_BYTES:
            self.store.check_room(f"storing output pushed for {records.exec_id}")
            with self.store.txn(f"storing records pushed for {records.exec_id}", write=True) as txn:
                records.put(self.store, txn)

    def _accept(self, header: pb.CheckpointHeader, caller: Caller, chunks: Iterator[pb.CheckpointChunk]
                ) -> tuple[ExecutionRecord, "_Bounds", dict[int, bytes]]:
        """The record this push updates, the bounds its messages are held to and its large
        values (read from the BlobParts after the header); refuses a push that does not follow
        from what this daemon knows (`authority.Ownership`)."""
        check_id(header.id, "push")
        local = known(self.store, header.id)
        self.ownership.check_push(caller, header, local)
        try:
            pushed = ExecutionRecord.from_json(header.record)
        except (ValueError, TypeError, KeyError) as e:
            raise InvalidRequest(f"push of {header.id}: its record does not parse: {e}") from None
        self.ownership.check_record(header, pushed, local)
        bounds = _Bounds.of(header)
        blobs = _read_blobs(header, chunks)
        pushed.owner, pushed.epoch, pushed.owner_address = header.owner, header.epoch, header.source_address
        pushed.node_id = pushed.node_id[:MAX_NODE]
        if local is None:
            if not header.has_inputs:
                raise StateConflict(f"push of {header.id}: its inputs are needed first")
            if not self.store.has_module(pushed.module_sha256):
                raise StateConflict(f"push of {header.id}: module {pushed.module_sha256} is missing")
            pushed.prepared = pushed.migration = ""
            pushed.handing_over = 0
            pushed.replicas = []
            self.store.create_execution(pushed, blobs[Blob.STDIN], blobs[Blob.INITIAL_VFS])
            return pushed, bounds, blobs
        pushed.prepared, pushed.replicas = local.prepared, local.replicas
        pushed.migration, pushed.handing_over = "", 0
        return pushed, bounds, blobs

    def _page_map(self, header: pb.CheckpointHeader, max_pages: int
                  ) -> tuple[pagemap.PageMap, pagemap.Delta | None]:
        """The pushed checkpoint's full map: as sent, or this store's map of the base checkpoint
        with the sent delta applied; and that delta."""
        try:
            if not header.page_map_base:
                full = pagemap.decode(header.page_map, None, max_pages)
                _no_later(header, full.versions)
                return full, None
            pages, delta = pagemap.delta_entries(header.page_map, max_pages)
        except StoreError as e:
            raise InvalidRequest(f"push of {header.id}: {e}") from None
        _no_later(header, delta[:, 1])
        try:
            base = self.pages.page_map(header.id, header.page_map_base).copy()
        except NotFound:
            raise StateConflict(f"push of {header.id}: its map is a delta from checkpoint "
                                f"{header.page_map_base}, which this daemon no longer holds") from None
        return pagemap.with_delta(base, pages, delta), delta

    def _store(self, header: pb.CheckpointHeader, record: ExecutionRecord,
               chunks: Iterator[pb.CheckpointChunk], bounds: "_Bounds", blobs: dict[int, bytes]) -> int:
        """Frames are written as they come, in transactions of about PART_BYTES (the disk
        writes while more arrives); the last ones of the checkpoint's own version ride with
        the commit of the rest (a small push is one transaction). A migration's standby gets
        the new pages before that commit, from what arrived (it need not wait for the disk)."""
        exec_id, number = header.id, header.number
        following = bool(header.migration) and self.supervisor.has_standby(exec_id)
        arrived: dict[int, list[bytes]] = {}
        received, streamed = 0, 0
        batch: list[bytes] = []
        batch_version, batch_first, batch_bytes = -1, 0, 0
        records = _Records(exec_id)

        def flush() -> None:
            nonlocal batch, batch_bytes, streamed
            if following:
                self.supervisor.touch_standby(exec_id)
            if batch:
                self.pages.put_frames(exec_id, batch_version, batch_first, batch)
                if batch_version == number:
                    streamed = batch_first + len(batch)
            batch, batch_bytes = [], 0

        for chunk in chunks:
            kind = chunk.WhichOneof("part")
            received += chunk.ByteSize()
            if kind == "frame":
                frame = chunk.frame
                if frame.version != batch_version or batch_bytes >= PART_BYTES:
                    flush()
                    batch_version, batch_first = frame.version, frame.index
                batch.append(frame.data)
                batch_bytes += len(frame.data)
                if following:
                    arrived.setdefault(frame.version, []).append(frame.data)
            elif kind in ("log", "journal"):
                self._take(records, chunk)
        if batch_version != number:
            flush()
        manifest = bounds.manifest
        manifest.update(owner=header.owner, epoch=header.epoch)
        page_map, sent_delta = self._page_map(header, bounds.pages)
        if following:
            self.supervisor.apply_arrived(exec_id, number, manifest["memory_bytes"], page_map, arrived)

        def also(txn) -> None:
            records.put(self.store, txn)
        # What the owner worked out already need not be again here (a migration's downtime).
        delta = sent_delta if header.page_map_base == number - 1 else None
        self.pages.put(record, manifest, batch, blobs[Blob.HOST], blobs[Blob.STACK], page_map, delta,
                       self.retain, streamed=streamed, also=also,
                       referenced=frozenset(header.referenced) if header.referenced else None,
                       hurry=bool(header.prepare_epoch))
        return received


MAX_BLOB = 1 << 30          # a header's value sent in pieces (host state: the files, at most)
MAX_JOINED = 1 << 30        # an output or journal record joined from pieces


def _read_blobs(header: pb.CheckpointHeader, chunks: Iterator[pb.CheckpointChunk]) -> dict[int, bytes]:
    """The header's large values: inline in the header (an older sender), or the BlobParts
    that follow it, as many bytes of each as the header announces and no more."""
    out = {kind: getattr(header, name) for kind, name in _BLOB_INLINE.items()}
    wanted = {kind: getattr(header, size) for kind, size in _BLOB_SIZE.items() if getattr(header, size)}
    if any(size > MAX_BLOB for size in wanted.values()):
        raise InvalidRequest(f"push of {header.id}: a value of more than {MAX_BLOB} bytes")
    parts: dict[int, list[bytes]] = {kind: [] for kind in wanted}
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


class _Records:
    """A push's output and journal records, joined from their pieces (a record of `continues`
    messages), until they are put into a transaction."""

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
            self.logs.append((seq, bytes((message.stream,)) + data))
        else:
            self.journal.append((seq, data))
        self.size += len(data)

    def any(self) -> bool:
        return bool(self.logs or self.journal)

    def put(self, store: Store, txn) -> None:
        """Into `txn`, at their owner's seqs; then forgotten here."""
        if self.any():
            store.put_records(txn, self.exec_id, self.logs, self.journal)
        self.logs, self.journal, self.size = [], [], 0


def _pieces(blob: bytes) -> Iterator[bytes]:
    view = memoryview(blob)
    for at in range(0, len(blob), PIECE):
        yield bytes(view[at:at + PIECE])


def _split(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """A record's pieces, each with whether more of it follows (one piece when it is small)."""
    view = memoryview(data)
    for at in range(0, max(len(data), 1), PIECE):
        yield bytes(view[at:at + PIECE]), at + PIECE < len(data)


def _no_later(header: pb.CheckpointHeader, versions) -> None:
    """A pushed map names no checkpoint after the one it is the map of."""
    if len(versions) and int(versions.max()) > header.number:
        raise InvalidRequest(f"push of {header.id}: its map names checkpoints after {header.number}")


class _Bounds:
    """What one push may contain, worked out from its header before anything is allocated:
    pages by the manifest's memory, frames only of the versions the map references, output of
    the two streams, records of bounded size."""

    MAX_MANIFEST = 1 << 20
    MAX_FRAME = 64 << 20
    MAX_RECORD = 64 << 20
    MAX_NUMBER = 1 << 31

    def __init__(self, header: pb.CheckpointHeader, manifest: dict, pages: int) -> None:
        self.header, self.manifest, self.pages = header, manifest, pages
        self.versions = frozenset(header.referenced) | {header.number}

    @classmethod
    def of(cls, header: pb.CheckpointHeader) -> "_Bounds":
        what = f"push of {short(header.id)}"
        if not 1 <= header.number < cls.MAX_NUMBER:
            raise InvalidRequest(f"{what}: checkpoint number {header.number} is out of range")
        if header.page_map_base >= cls.MAX_NUMBER or len(header.referenced) > header.number \
                or any(not 1 <= v <= header.number for v in header.referenced):
            raise InvalidRequest(f"{what}: it references checkpoints after {header.number}")
        manifest = cls._manifest(header, what)
        return cls(header, manifest, -(-manifest["memory_bytes"] // 4096))

    @classmethod
    def _manifest(cls, header: pb.CheckpointHeader, what: str) -> dict:
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
        return manifest

    def checked(self, chunks: Iterator[pb.CheckpointChunk]) -> Iterator[pb.CheckpointChunk]:
        """The push's remaining messages, each refused as it arrives if out of bounds."""
        what = f"push of {short(self.header.id)}"
        for chunk in chunks:
            kind = chunk.WhichOneof("part")
            if kind == "frame":
                if chunk.frame.version not in self.versions or len(chunk.frame.data) > self.MAX_FRAME:
                    raise InvalidRequest(f"{what}: a frame of checkpoint {chunk.frame.version} "
                                         f"({len(chunk.frame.data)} bytes) it does not reference")
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
