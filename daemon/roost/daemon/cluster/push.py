"""Pushing checkpoints to peers: what a peer lacks of a checkpoint, read from a source.

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
push reads frames from its source (`checkpoint.transfer.CheckpointSource`: the store, or a
migration's final checkpoint while it commits) as it sends them (gRPC's flow control holds the
rest back): a slow peer costs lag, never memory. Lag per peer is a metric (seconds since the
oldest checkpoint it has not acknowledged, and the bytes of those checkpoints).

The peer stores what it receives through its own sink (`receive`); the stream is `pushwire`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.transfer import CheckpointSource, Uncommitted
from roost.daemon.cluster.peers import PeerClient, PeerError
from roost.daemon.cluster.pushwire import BLOB_SIZE, Blob, pieces, split
from roost.daemon.errors import InvalidRequest, NotFound, StateConflict, Superseded
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.node import metrics
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.service.fields import short
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.logrecord import LogEntry
from roost.daemon.store.records import ExecutionRecord
from roost.v1 import peer_pb2 as pb

log = logging.getLogger(__name__)
MODULE_CHUNK = 1 << 20
LOG_BATCH_BYTES = 4 << 20


class Pusher:
    """Pushes checkpoints of this daemon's executions; one push per (peer, execution) at once."""

    KNOWN_SECONDS = 10.0     # how long what a push left a peer holding is trusted without asking

    def __init__(self, me: NodeIdentity, store: Store, checkpoints: PageStore,
                 modules: ModuleRegistry | None = None) -> None:
        self.me, self.store, self.pages = me, store, checkpoints
        self.modules = modules            # the prepared forms of a module go with it
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
        if not migration and not self.me.owns(record):
            return 0       # handed over since it was committed: its new owner replicates it
        status = self._status(client, record)
        if status.found and status.epoch > record.epoch:
            raise Superseded(status.owner, status.owner_address, status.epoch)
        if number is None:
            latest = self.pages.latest(exec_id)
            if latest is None:
                return 0
            number = latest.number
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
        source = uncommitted.reading(self.pages) \
            if uncommitted is not None and uncommitted.number == number \
            else self.pages.source(record, number)
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

    def send_module(self, client: PeerClient, sha256: str) -> int:
        """Push a module the peer lacks (an execution's first records go there next)."""
        sent = self._push_module(client, sha256)
        metrics.REPLICATION_BYTES.labels(peer=client.address).inc(sent)
        return sent

    def _push_module(self, client: PeerClient, sha256: str) -> int:
        """The module, then each prepared form of it this daemon's cache keeps (the peer only
        compiles those: preparing a big module costs minutes). The bytes sent."""
        module = self.store.get_module(sha256)
        data = self.store.module_bytes(sha256)
        forms = self.modules.prepared(sha256) if self.modules is not None else []

        def pieces_of(blob: bytes) -> Iterator[pb.ModuleChunk]:
            for off in range(0, len(blob), MODULE_CHUNK):
                yield pb.ModuleChunk(chunk=blob[off:off + MODULE_CHUNK])

        def chunks() -> Iterator[pb.ModuleChunk]:
            yield pb.ModuleChunk(header=pb.ModuleHeaderPeer(sha256=sha256, name=module.name,
                                                             size_bytes=len(data)))
            yield from pieces_of(data)
            for form in forms:
                yield pb.ModuleChunk(prepared=pb.PreparedHeader(
                    mode=form.mode, size_bytes=len(form.wasm),
                    manifest_json=json.dumps(form.manifest).encode()))
                yield from pieces_of(form.wasm)
        client.push_module(chunks())
        return len(data) + sum(len(form.wasm) for form in forms)

    def _chunks(self, record: ExecutionRecord, number: int, status: pb.ReplicaStatusResponse,
                migration: str, counter: list[int], prepare_epoch: int,
                after: pb.ReplicaStatusResponse, source: CheckpointSource
                ) -> Iterator[pb.CheckpointChunk]:
        """The push's messages, read from the store (or from `source`, being committed) as
        gRPC asks for them; `after` learns what the peer will hold once it has them."""
        exec_id = record.id
        base, raw_map = self._map_for(exec_id, source.page_map, status)
        header = pb.CheckpointHeader(
            id=exec_id, owner=record.owner, epoch=record.epoch, number=number,
            record=source.record_json, manifest=source.manifest.to_json(source.stats),
            page_map=raw_map, page_map_base=base, migration=migration, prepare_epoch=prepare_epoch,
            source_address=self.me.address, referenced=sorted(source.referenced))
        referenced = source.referenced
        after.versions.extend(header.referenced)
        blobs = {Blob.HOST: source.host, Blob.STACK: source.stack}
        if not status.found:
            blobs[Blob.STDIN] = self.store.stdin(exec_id)
            blobs[Blob.INITIAL_VFS] = self.store.initial_vfs(exec_id)
            header.has_inputs = True
        for kind, blob in blobs.items():
            setattr(header, BLOB_SIZE[kind], len(blob))
        counter[0] += header.ByteSize()
        yield pb.CheckpointChunk(header=header)
        for kind, blob in blobs.items():
            for piece in pieces(blob):
                counter[0] += len(piece)
                yield pb.CheckpointChunk(blob=pb.BlobPart(kind=kind, data=piece))
        held = set(status.versions)
        for version in sorted(referenced - held):
            for index, frame in source.iter_frames(version):
                counter[0] += len(frame)
                yield pb.CheckpointChunk(frame=pb.PageFrame(version=version, index=index, data=frame))
        after.log_records = status.log_records
        for seq, stream, data, time_ns in self._logs(exec_id, status.log_records):
            counter[0] += len(data)
            after.log_records = seq + 1
            for piece, more in split(data):
                yield pb.CheckpointChunk(log=pb.LogRecord(seq=seq, stream=stream, data=piece,
                                                          continues=more, time_ns=time_ns or 0))
        first = max(status.journal_records, source.manifest.journal_seq)
        after.journal_records = first
        for i, raw in enumerate(self.store.read_journal(exec_id, first)):
            counter[0] += len(raw)
            after.journal_records = first + i + 1
            for piece, more in split(raw):
                yield pb.CheckpointChunk(journal=pb.JournalRecord(seq=first + i, data=piece,
                                                                  continues=more))
        source.wait_committed()                  # uncommitted: a failure breaks the push off

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

    def _logs(self, exec_id: str, first: int) -> Iterator[LogEntry]:
        seq = first
        while True:
            batch = self.store.read_output(exec_id, seq, LOG_BATCH_BYTES)
            if not batch:
                return
            yield from batch
            seq = batch[-1][0] + 1


class Replicator:
    """Keeps this daemon's replica peers up to date with the checkpoints it commits."""

    def __init__(self, me: NodeIdentity, checkpoints: PageStore, supervisor: Supervisor,
                 pusher: Pusher, targets: Callable[[str], list[PeerClient]], ack: str) -> None:
        self.me, self.checkpoints, self.pusher = me, checkpoints, pusher
        self.supervisor = supervisor          # notes which nodes hold replicas
        self.targets = targets                # an execution's replica peers (static or etcd)
        self.ack = ack
        self._pending: dict[str, dict[str, tuple[int, float, int]]] = {}
        self._acked: dict[tuple[str, str], int] = {}
        self._changed = threading.Condition()
        self._stopped = False

    def _thread(self, client: PeerClient) -> None:
        """The peer's pushing thread, started with its first checkpoint to push (locked)."""
        if client.address not in self._pending:
            self._pending[client.address] = {}
            threading.Thread(target=self._run, args=(client,), name=f"replicate-{client.address}",
                             daemon=True).start()

    def committed(self, record: ExecutionRecord, number: int) -> None:
        """A checkpoint of an execution this daemon owns was committed (supervisor hook)."""
        if not self.me.owns(record):
            return
        targets = self.targets(record.id)
        if not targets:
            return
        checkpoint = self.checkpoints.checkpoint(record.id, number)
        stored_bytes = (checkpoint[1].stored_bytes or 0) if checkpoint is not None else 0
        with self._changed:
            for client in targets:
                self._thread(client)
                pending = self._pending[client.address]
                since = pending.get(record.id, (0, time.monotonic(), 0))[1]
                pending[record.id] = (number, since, stored_bytes)
            self._changed.notify_all()

    def wait_acked(self, exec_id: str, number: int, timeout: float = 60.0) -> list[str]:
        """Per `replication.ack`: wait until one (`one`) or every (`all`) replica peer holds
        checkpoint `number`; the addresses that do."""
        targets = self.targets(exec_id)
        # (no replica at all — replication.factor = 0 — is nothing to wait for)
        need = min(len(targets), {"async": 0, "one": 1, "all": len(targets)}[self.ack])
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                have = [c.address for c in targets
                        if self._acked.get((c.address, exec_id), 0) >= number]
                left = deadline - time.monotonic()
                if len(have) >= need or left <= 0:
                    return have
                self._changed.wait(left)

    def holds(self, record: ExecutionRecord) -> bool:
        """Per `replication.ack`, enough replica peers hold the execution's latest checkpoint
        (True when none is needed); if not, it is pushed to them (again: a takeover's new
        owner, say, did not push the checkpoint it took over with)."""
        latest = self.checkpoints.latest(record.id)
        targets = self.targets(record.id)
        need = {"async": 0, "one": 1, "all": len(targets)}[self.ack]
        if latest is None or not targets or not need:
            return True
        with self._changed:
            have = sum(self._acked.get((c.address, record.id), 0) >= latest.number for c in targets)
            pending = any(record.id in self._pending.get(c.address, {}) for c in targets)
        if have >= min(need, len(targets)):
            return True
        if not pending:
            self.committed(record, latest.number)
        return False

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
