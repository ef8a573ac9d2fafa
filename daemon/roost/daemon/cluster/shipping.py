"""Shipping output and journal records to the replicas as they are written, and what output
may be released because of it.

Checkpoints reach the replicas after they commit (`push.Replicator`), but what a guest wrote
between two checkpoints — its output and the journal of the calls that output depends on —
exists only on the owner's disk until the next one. A host lost then would take output that
clients had already seen, and a replica taking over would recompute it with other clock and
random values. So every record stored here streams on to the execution's replica peers as it
is written (the pump's `OutputWriter.append` calls `appended`), and with
`replication.ack = one | all` a client sees output (`limit`: logs, wait, an attached run) only
once one or all of those replicas hold it, and the journal before it:

    pump: LMDB commit of a burst -> appended() -> the peer's thread wakes ->
          AppendRecords(every record stored since those the peer holds) -> ack -> limit moves

One thread per replica peer ships, for each execution with news, everything new in one call
(group commit: a round trip carries all that arrived while the previous one was out, never one
per record). A peer that lacks the execution gets it first: its latest checkpoint through the
pusher when there is one (whose journal this daemon may have collected), else its record and
inputs in the first AppendRecords. The guest never waits for any of this: only what clients
see does. `async` releases output as soon as it is stored here (a host failure may then lose
what was written since the last replicated checkpoint).

An owner that cannot vouch for its ownership (`fenced`: its etcd lease may have expired) stops
releasing: `limit` stays where it was, so a client never sees output a new owner will not
produce again.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.daemon.cluster.peers import PeerClient
from roost.daemon.cluster.push import Pusher
from roost.daemon.cluster.pushwire import wire_log
from roost.daemon.errors import InvalidRequest, NotFound, PeerError, PeerUnavailable, StateConflict, StoreError
from roost.daemon.node import metrics
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord
from roost.v1 import peer_pb2 as pb

log = logging.getLogger(__name__)
BATCH_BYTES = 4 << 20          # records per AppendRecords, about (a peer's messages: 64 MiB)
LINGER_SECONDS = 0.0005        # a round trip waits this long for more records to ride along
NEED = {"async": 0, "one": 1}  # replicas that must hold a record before it counts ("all": all)


@dataclass
class _Tracked:
    """An execution this daemon owns whose records are shipped."""
    epoch: int
    targets: list[str]                                   # replica peers' addresses
    written: tuple[int, int] = (0, 0)                    # (logs, journal) stored here
    since: float = 0.0                                   # oldest write not acknowledged by all
    stored_at: dict[int, float] = field(default_factory=dict)   # log seq -> when it was stored
    released: int = 0                                    # output records clients may see
    # (journal records, done): a guest's HTTP request waiting for its intent to be replicated
    waiters: list[tuple[int, Callable[[], None]]] = field(default_factory=list)


class Shipper:
    """Ships every owned execution's records to its replica peers (`targets(exec_id)`)."""

    def __init__(self, me: NodeIdentity, store: Store, pages: PageStore, pusher: Pusher,
                 ack: str, targets: Callable[[str], list[PeerClient]]) -> None:
        self.me, self.store, self.pages, self.pusher = me, store, pages, pusher
        self.ack = ack
        self.targets = targets
        self.fenced: Callable[[], bool] = lambda: False   # membership sets it
        self._cond = threading.Condition()
        self._tracked: dict[str, _Tracked] = {}
        self._dirty: dict[str, set[str]] = {}             # peer address -> exec ids with news
        self._held: dict[tuple[str, str], tuple[int, int]] = {}   # (peer, exec) -> what it holds
        self._clients: dict[str, PeerClient] = {}
        self._threads: set[str] = set()                   # peers with a shipping thread
        self._hurry: set[str] = set()                     # peers a waiting request needs: no linger
        self._stopped = False

    # ---- the owner's pipeline ----
    def track(self, record: ExecutionRecord, logs: int, journal: int) -> None:
        """Ship `record`'s execution from now on (it runs here; `logs`/`journal`: stored)."""
        if self.ack == "async":
            return                 # (today's behaviour: records travel with checkpoints)
        clients = self.targets(record.id)
        with self._cond:
            tracked = self._tracked.get(record.id)
            if tracked is None or tracked.epoch != record.epoch:
                tracked = self._tracked[record.id] = _Tracked(record.epoch,
                                                             [c.address for c in clients])
                for client in clients:
                    self._clients.setdefault(client.address, client)
            tracked.written = (max(logs, tracked.written[0]), max(journal, tracked.written[1]))
            self._mark(record.id, tracked)

    def appended(self, record: ExecutionRecord, logs: int, journal: int) -> None:
        """Records up to (`logs`, `journal`) were stored here (the output writer, per burst)."""
        if self.ack == "async":
            return
        with self._cond:
            tracked = self._tracked.get(record.id)
            if tracked is None or tracked.epoch != record.epoch:
                tracked = None
        if tracked is None:
            self.track(record, logs, journal)
            return
        now = time.monotonic()
        with self._cond:
            if tracked.written[0] < logs:
                tracked.stored_at[logs - 1] = now
            tracked.written = (logs, journal)
            if not tracked.since:
                tracked.since = now
            self._mark(record.id, tracked)

    def durable(self, record: ExecutionRecord, journal: int, done: Callable[[], None]) -> None:
        """`done()` once enough replicas (per `replication.ack`) hold the first `journal`
        journal records of `record`'s execution — at once with `async`, or with no replicas
        (`OutputWriter.on_durable`: a guest's request leaves then). Never while fenced."""
        with self._cond:
            tracked = self._tracked.get(record.id)
            now = (self.ack == "async" or tracked is None or tracked.epoch != record.epoch
                   or not tracked.targets)
            if not now and tracked is not None:
                if self._journal_held(record.id, tracked) >= journal and not self.fenced():
                    now = True
                else:
                    tracked.waiters.append((journal, done))
                    self._hurry.update(tracked.targets)
                    self._mark(record.id, tracked)
        if now:
            done()

    def _journal_held(self, exec_id: str, tracked: _Tracked) -> int:
        """Journal records enough replicas hold (locked)."""
        counts = sorted(self._held.get((a, exec_id), (0, 0))[1] for a in tracked.targets)
        need = min(NEED.get(self.ack, len(counts)), len(counts))
        return counts[-need] if need else tracked.written[1]

    def _durable_now(self, exec_id: str, tracked: _Tracked) -> list[Callable[[], None]]:
        """The waiters whose records are now held (removed; called locked, run unlocked)."""
        if not tracked.waiters or self.fenced():
            return []
        held = self._journal_held(exec_id, tracked) if tracked.targets else 1 << 62
        ready = [done for journal, done in tracked.waiters if journal <= held]
        tracked.waiters = [(j, d) for j, d in tracked.waiters if j > held]
        return ready

    def _unfenced(self, address: str) -> list[Callable[[], None]]:
        """Requests held while this daemon was fenced whose records the replicas hold by now
        (no acknowledgement may come to release them: everything was shipped). Locked."""
        ready: list[Callable[[], None]] = []
        for exec_id, tracked in self._tracked.items():
            if tracked.waiters and address in tracked.targets:
                ready += self._durable_now(exec_id, tracked)
        return ready

    def forget(self, exec_id: str) -> None:
        """Not this daemon's any more (handed over, dropped): nothing more is shipped."""
        with self._cond:
            self._tracked.pop(exec_id, None)
            self._cond.notify_all()

    def _mark(self, exec_id: str, tracked: _Tracked) -> None:
        for address in tracked.targets:
            self._dirty.setdefault(address, set()).add(exec_id)
            if address not in self._threads:
                self._threads.add(address)
                threading.Thread(target=self._run, args=(address,), daemon=True,
                                 name=f"ship-{address}").start()
        self._cond.notify_all()

    # ---- what clients may see ----
    def limit(self, exec_id: str) -> int | None:
        """Output records [0, limit) of the execution count (None: all that is stored does)."""
        with self._cond:
            tracked = self._tracked.get(exec_id)
            if tracked is None or self.ack == "async" or not tracked.targets:
                return None
            return tracked.released

    def wait(self, exec_id: str, seq: int, timeout: float) -> None:
        """Until output record `seq` counts, or `timeout` passes."""
        def counts() -> bool:
            limit = self.limit(exec_id)
            return limit is None or limit > seq or self._stopped
        with self._cond:
            self._cond.wait_for(counts, timeout=timeout)

    def introduced(self, exec_id: str, timeout: float) -> bool:
        """Wait until enough replicas (per `replication.ack`) hold the execution — its record,
        inputs and module — or `timeout` passes; whether they do."""
        def held() -> bool:
            tracked = self._tracked.get(exec_id)
            if self.ack == "async" or tracked is None or not tracked.targets or self._stopped:
                return True
            have = sum((a, exec_id) in self._held for a in tracked.targets)
            return have >= min(NEED.get(self.ack, len(tracked.targets)), len(tracked.targets))
        with self._cond:
            return self._cond.wait_for(held, timeout=timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # ---- a peer's thread ----
    def _run(self, address: str) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                news = self._cond.wait_for(lambda: self._dirty.get(address) or self._stopped,
                                           timeout=1.0)
                if self._stopped:
                    return
                ready = [] if news else self._unfenced(address)    # (a quiet second)
            for done in ready:
                done()
            if not news:
                continue
            with self._cond:                   # what the guest writes meanwhile rides along;
                self._cond.wait_for(lambda: address in self._hurry or self._stopped,
                                    timeout=LINGER_SECONDS)   # a request waiting cuts it short
                self._hurry.discard(address)
                exec_ids = self._dirty.pop(address, set())
            retry = set()
            for exec_id in exec_ids:
                try:
                    if self._ship(self._clients[address], exec_id):
                        retry.add(exec_id)
                    backoff = 0.05
                except (PeerUnavailable, PeerError, OSError) as e:
                    log.warning("shipping records of %s to %s: %s", exec_id, address, e)
                    self._held.pop((address, exec_id), None)
                    if not self._retarget(exec_id):
                        retry.add(exec_id)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                except StateConflict as e:
                    log.warning("shipping records of %s to %s refused: %s", exec_id, address, e)
                    if (address, exec_id) not in self._held:
                        # refused from the first call (it has this daemon's node id, say):
                        # not a replica; another is chosen
                        self._clients[address].failed_at = time.monotonic()
                        self._retarget(exec_id)
                    # else a stale epoch: another daemon owns it now (a takeover this one
                    # has not heard of yet); nothing more is released here
                except (NotFound, InvalidRequest, StoreError) as e:
                    log.warning("shipping records of %s to %s: %s", exec_id, address, e)
            if retry:
                with self._cond:
                    self._dirty.setdefault(address, set()).update(retry)

    def _retarget(self, exec_id: str) -> bool:
        """A replica peer did not answer: the execution's replicas are chosen again (etcd:
        among live members; static: the peers that answer first). True when they changed.
        With none left (etcd knows no other live member), its output is released as stored:
        a cluster down to one host has nowhere to replicate to (the log says so)."""
        clients = self.targets(exec_id)
        with self._cond:
            tracked = self._tracked.get(exec_id)
            if tracked is None or [c.address for c in clients] == tracked.targets:
                return False
            log.warning("execution %s: replicas %s -> %s", exec_id, tracked.targets or "-",
                        [c.address for c in clients] or "none (output released unreplicated)")
            tracked.targets = [c.address for c in clients]
            for client in clients:
                self._clients.setdefault(client.address, client)
            self._mark(exec_id, tracked)
            self._release(exec_id, tracked)
            ready = self._durable_now(exec_id, tracked)
        for done in ready:
            done()
        return True

    def _ship(self, client: PeerClient, exec_id: str) -> bool:
        """One AppendRecords of what the peer lacks; True when more is left to ship."""
        with self._cond:
            tracked = self._tracked.get(exec_id)
            if tracked is None:
                return False
            written = tracked.written
        key = (client.address, exec_id)
        held = self._held.get(key)
        request = pb.AppendRecordsRequest(id=exec_id, owner=self.me.node_id, epoch=tracked.epoch,
                                          source_address=self.me.address)
        if held is None:
            held = self._introduce(client, exec_id, request)
        if held[0] >= written[0] and held[1] >= written[1] and not request.has_inputs:
            self._acked(client.address, exec_id, held)
            return False
        logs, journal = self.store.read_tail(exec_id, held[0], held[1], BATCH_BYTES)
        request.logs.extend(wire_log(seq, raw) for seq, raw in logs)
        request.journal.extend(pb.JournalRecord(seq=seq, data=raw) for seq, raw in journal)
        response = client.append_records(request)
        if not response.found:
            self._held.pop(key, None)
            return True
        held = (response.log_records, response.journal_records)
        self._held[key] = held
        metrics.REPLICATION_BYTES.labels(peer=client.address).inc(request.ByteSize())
        self._acked(client.address, exec_id, held)
        return held[0] < written[0] or held[1] < written[1]

    def _introduce(self, client: PeerClient, exec_id: str, request: pb.AppendRecordsRequest
                   ) -> tuple[int, int]:
        """What the peer holds of the execution; one that lacks it gets it first — its latest
        checkpoint when there is one (the journal before it may be collected here), else its
        record and inputs ride with this request."""
        record = self.store.get_execution(exec_id)
        status = client.status(exec_id, record.module_sha256)
        if not status.found and self.pages.latest(exec_id) is not None:
            self.pusher.push(client, exec_id)
            status = client.status(exec_id, record.module_sha256)
        if status.found:
            return status.log_records, status.journal_records
        if not status.has_module:
            self.pusher.send_module(client, record.module_sha256)
        request.record = record.to_json()
        request.has_inputs = True
        request.stdin = self.store.stdin(exec_id)
        request.initial_vfs = self.store.initial_vfs(exec_id)
        return 0, 0

    def _acked(self, address: str, exec_id: str, held: tuple[int, int]) -> None:
        """The peer holds `held`: the release point moves (unless fenced), followers wake."""
        now = time.monotonic()
        with self._cond:
            tracked = self._tracked.get(exec_id)
            if tracked is None:
                return
            self._release(exec_id, tracked, now)
            ready = self._durable_now(exec_id, tracked)
            if all(self._held.get((a, exec_id), (0, 0)) >= tracked.written for a in tracked.targets):
                tracked.since = 0.0
            self._lag(address)
            self._cond.notify_all()
        for done in ready:
            done()

    def _release(self, exec_id: str, tracked: _Tracked, now: float = 0.0) -> None:
        """Move the release point to what enough replicas hold (locked)."""
        counts = sorted(self._held.get((a, exec_id), (0, 0))[0] for a in tracked.targets)
        need = min(NEED.get(self.ack, len(counts)), len(counts))
        releasable = counts[-need] if need else tracked.written[0]
        if releasable > tracked.released and not self.fenced():
            now = now or time.monotonic()
            for seq in [s for s in tracked.stored_at if s < releasable]:
                metrics.OUTPUT_RELEASE_SECONDS.observe(now - tracked.stored_at.pop(seq))
            tracked.released = releasable
        self._cond.notify_all()

    def _lag(self, address: str) -> None:
        """Records the peer lacks, and how long the oldest has waited (called locked)."""
        records, oldest = 0, 0.0
        for exec_id, tracked in self._tracked.items():
            if address not in tracked.targets:
                continue
            held = self._held.get((address, exec_id), (0, 0))
            lacking = max(0, tracked.written[0] - held[0]) + max(0, tracked.written[1] - held[1])
            records += lacking
            if lacking and tracked.since:
                oldest = max(oldest, time.monotonic() - tracked.since)
        metrics.RECORDS_LAG.labels(peer=address).set(records)
        metrics.RECORDS_LAG_SECONDS.labels(peer=address).set(oldest)
