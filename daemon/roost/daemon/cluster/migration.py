"""Moving a running execution to another roostd.

Live (the default), iterative pre-copy while the guest keeps running:

    warm-up: a target holding a replica starts its standby worker from it (`_warm_up`);
    round 1: checkpoint, push it: the target gets all of memory it lacks (nothing, when it
             holds a recent replica, but the versions since) and starts a standby worker that
             holds the guest's memory;
    round k: checkpoint again, push: only the pages written during round k-1; the standby
             applies them;
    ...      until the final stop's pages would be pushed in half the downtime budget, or
             are too few to matter — they are what the guest dirties while the last round
             is pushed, about as many as that round's (more, in proportion, when the round
             took longer than the one before) — or they stop shrinking (then the guest is
             throttled: slowed so that it dirties memory slower than the link sends it), or
             after `max_rounds`;
    stop-and-copy: the final checkpoint stops the guest (its worker holds it until the
             handover is decided), its pages are pushed while this daemon commits them, and
             the handover (`handover`) makes the target the owner at a new epoch; the standby
             applies the last pages and runs.

A round's checkpoint pauses the guest for about a millisecond (its pages are pre-copied while
it runs, see `staging`); the downtime is the final stop to the guest running on the target
(as the COMMIT's answer tells, `handover._running_at`).
Cold (`--cold`): only the stop-and-copy, the target restoring from its store.

Anything that fails before the handover's decision leaves the execution on the source: the
target is told to forget it, and the guest runs on (live rounds) or again from its final
checkpoint (after the stop).
"""
from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.daemon.checkpoint.transfer import Uncommitted
from roost.daemon.cluster.handover import Handovers
from roost.daemon.cluster.peers import PeerError, Peers
from roost.daemon.cluster.push import Pusher
from roost.daemon.errors import InvalidRequest, NotFound, RoostError, StateConflict
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.node import metrics
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import State

log = logging.getLogger(__name__)
SHRINKING = 0.8          # a round whose dirty set is not below this fraction of the last stalls
THROTTLE_STEP = 0.25     # each stalled round slows the guest by this much more
THROTTLE_MAX = 0.9
LONG_ROUND = 0.25        # a first round this long (a standby starting up) is never the last
FEW_BYTES = 64 << 10     # a push this small costs what any push costs: more rounds can't help


@dataclass
class Progress:
    phase: str
    round: int = 0
    bytes_sent: int = 0
    round_dirty_bytes: int = 0
    seconds: float = 0.0
    report: dict = field(default_factory=dict)


class Migrations:
    """Migrations from this daemon. `supervisor` checkpoints, throttles, stops and takes back
    the execution; the store and `checkpoints` are read directly."""

    def __init__(self, me: NodeIdentity, store: Store, checkpoints: PageStore,
                 supervisor: Supervisor, peers: Peers, pusher: Pusher, handovers: Handovers,
                 downtime_seconds: float, max_rounds: int) -> None:
        self.me, self.store, self.checkpoints = me, store, checkpoints
        self.supervisor, self.peers, self.pusher, self.handovers = supervisor, peers, pusher, handovers
        self.downtime_seconds, self.max_rounds = downtime_seconds, max_rounds

    def migrate(self, ref: str, address: str, cold: bool = False, downtime_seconds: float = 0.0,
                max_rounds: int = 0, progress: Callable[[Progress], None] = lambda p: None) -> dict:
        """Move the execution `ref` to the roostd at `address`; the report."""
        record = self.supervisor.get(ref)
        exec_id = record.id
        if not self.me.owns(record):
            raise StateConflict(f"execution {exec_id} runs on {record.owner} ({record.owner_address}): "
                                "migrate it there")
        if record.state.ended or record.migration:
            raise StateConflict(f"execution {exec_id} is {record.state.value}"
                                f"{' and already migrating' if record.migration else ''}")
        client = self.peers.client(address)
        try:
            target = client.hello()
        except PeerError as e:
            raise StateConflict(f"migration of {exec_id}: {e}") from None
        if target == self.me.node_id:
            raise InvalidRequest(f"migration of {exec_id}: {address} is this daemon")
        live = record.state == State.RUNNING and not cold
        run = _Run(self, exec_id, address, target, record.epoch + 1, live,
                   downtime_seconds or self.downtime_seconds, max_rounds or self.max_rounds, progress)
        try:
            report = run.go()
        except Exception:
            metrics.MIGRATIONS.labels(mode="live" if live else "cold", result="failed").inc()
            raise
        metrics.MIGRATIONS.labels(mode="live" if live else "cold", result="done").inc()
        metrics.MIGRATION_DOWNTIME.observe(report["downtime_seconds"])
        metrics.MIGRATION_BYTES.observe(report["bytes_sent"])
        return report


class _Run:
    """One migration, from its first round to its report."""

    def __init__(self, owner: Migrations, exec_id: str, address: str, target: str, epoch: int,
                 live: bool, budget: float, max_rounds: int, progress: Callable[[Progress], None]) -> None:
        self.m, self.exec_id, self.address, self.target, self.epoch = owner, exec_id, address, target, epoch
        self.live, self.budget, self.max_rounds, self.progress = live, budget, max_rounds, progress
        self.client = owner.peers.client(address)
        self.id = secrets.token_hex(6)
        self.began = time.monotonic()
        self.sent, self.rounds, self.throttle = 0, 0, 0.0
        self.stopped = False
        self.uncommitted: Uncommitted | None = None   # the final checkpoint while it commits

    def go(self) -> dict:
        try:
            if self.live:
                self._precopy()
            final = self._stop()
            stopped = time.time()
            final_bytes = self.m.pusher.push(self.client, self.exec_id, final, migration=self.id,
                                             prepare_epoch=self.epoch, uncommitted=self.uncommitted)
            if self.uncommitted is not None:      # stored here before anything is decided
                self.uncommitted.wait_committed()
            self.sent += final_bytes
            pushed = time.time()
            self._say("handover")
            handed = self.m.handovers.hand_over(self.exec_id, final, self.epoch, self.target,
                                                self.address, self.id, prepared=True)
        except Exception as e:
            self._abort(e)
            raise
        done, resume_seconds = handed.running_at, handed.restore_seconds
        downtime = done - self.stopped_at
        report = {"id": self.exec_id, "source": self.m.me.node_id, "target": self.target,
                  "rounds": self.rounds, "bytes_sent": self.sent,
                  "memory_bytes": self.memory_bytes, "total_seconds": time.monotonic() - self.began,
                  "downtime_seconds": downtime, "epoch": self.epoch, "cold": not self.live,
                  "throttle": self.throttle, "stop_seconds": stopped - self.stopped_at,
                  "final_push_seconds": pushed - stopped, "final_bytes": final_bytes,
                  "handover_seconds": done - pushed - resume_seconds, "resume_seconds": resume_seconds}
        log.info("migrated %s to %s (%s): %d rounds, %d bytes, downtime %.1f ms", self.exec_id,
                 self.target, self.address, self.rounds, self.sent, downtime * 1e3)
        self._say("done", report=report)
        return report

    def _precopy(self) -> None:
        """Rounds of checkpoint + push while the guest runs, until the final stop's pages
        would be pushed in half the downtime budget, or would be a push as small as any
        (`_final_push`). Measured by the rounds' own pushes, which cost what the final one
        costs (the target storing and applying them, not only the link), not by the link's
        bulk rate. A round whose dirty set did not shrink throttles the guest a step more."""
        sup, last_dirty, last_at = self.m.supervisor, None, None
        self._warm_up()
        while self.rounds < self.max_rounds:
            at = time.monotonic()
            result = sup.checkpoint(self.exec_id)
            self.rounds += 1
            push_began = time.monotonic()
            sent = self.m.pusher.push(self.client, self.exec_id, result["number"], migration=self.id)
            self.sent += sent
            dirty = int(result.get("dirty_pages", 0)) * 4096
            self._say("precopy", dirty)
            now = time.monotonic()
            seconds, size = _final_push(now - push_began, sent, now - at,
                                        at - last_at if last_at else None)
            if seconds <= self.budget / 2 or size <= FEW_BYTES:
                return
            last_at = at
            if last_dirty is not None and dirty >= SHRINKING * last_dirty:
                if self.throttle >= THROTTLE_MAX:
                    return
                self.throttle = min(THROTTLE_MAX, self.throttle + THROTTLE_STEP)
                sup.throttle(self.exec_id, self.throttle)
            last_dirty = dirty

    def _warm_up(self) -> None:
        """A target that holds a replica starts its standby from it before the first round:
        restoring a GiB takes seconds, in which the guest rewrites its working set, so a first
        round that waited for it would leave that set dirty for the next round, and that one
        would carry it again. Pushing the replica's own latest checkpoint sends no pages
        (only output since): the target's standby starts from it, and round 1 carries what
        changed since, once. Best effort: without it, the first round starts the standby."""
        record = self.m.supervisor.get(self.exec_id)
        try:
            status = self.client.status(self.exec_id, record.module_sha256)
            if status.found and status.latest_checkpoint:
                self.sent += self.m.pusher.push(self.client, self.exec_id, status.latest_checkpoint,
                                                migration=self.id)
        except (NotFound, PeerError) as e:     # (not restorable here any more: collected)
            log.info("migration of %s: no standby started from %s's replica: %s",
                     self.exec_id, self.address, e)

    def _stop(self) -> int:
        """The stop-and-copy's stop: the final checkpoint, the worker gone."""
        sup = self.m.supervisor
        self._say("stop-and-copy")
        record = sup.get(self.exec_id)
        self.memory_bytes = record.memory_bytes
        self.stopped_at = time.time()
        if record.state == State.RUNNING:
            self.uncommitted = sup.stop_for_migration(self.exec_id, self.target, self.address, self.epoch)
            manifest = self.uncommitted.manifest
            final = self.uncommitted.number
            self.stopped_at = float(manifest.stopped_at if manifest.stopped_at is not None
                                    else manifest.created_at or self.stopped_at)
            self.memory_bytes = manifest.memory_bytes
        else:              # paused or sleeping (an end since the rounds: `mark_migrating`)
            latest = self.m.checkpoints.latest(self.exec_id)
            if latest is None:
                raise StateConflict(f"execution {self.exec_id} has no checkpoint to move")
            sup.mark_migrating(self.exec_id, self.target, self.address, self.epoch)
            final = latest.number
            self.memory_bytes = latest.memory_bytes
        self.stopped = True
        return final

    def _abort(self, error: Exception) -> None:
        """Before the decision: the execution stays here and goes on."""
        sup = self.m.supervisor
        log.warning("migration of %s to %s failed: %s; it stays here", self.exec_id, self.address, error)
        sup.throttle(self.exec_id, 0.0)
        record = self.m.store.get_execution(self.exec_id)
        if not self.m.me.owns(record):
            return                               # decided already: the commit is retried
        self.m.handovers.abort(self.exec_id, self.address, self.epoch)
        if self.stopped:
            sup.take_back(self.exec_id)

    def _say(self, phase: str, dirty: int = 0, report: dict | None = None) -> None:
        try:
            self.progress(Progress(phase, self.rounds, self.sent, dirty,
                                   time.monotonic() - self.began, report or {}))
        except RoostError:
            pass


def _final_push(pushed: float, sent: int, took: float, interval: float | None
                ) -> tuple[float, float]:
    """How long the final push after a round would take, and its bytes: the guest dirties
    about as much while the round is pushed (`took`, from its checkpoint) as it did in the
    round's `interval` (from the previous round's checkpoint to its own) when that was no
    shorter, more in proportion when it was — never less: a guest rewriting a working set
    dirties most of it in a short while too. So the round's push (`pushed` seconds, `sent`
    bytes), or more. A first round has no interval: it predicts itself unless it took long
    (waiting for the target's standby to start: the guest rewrote its working set
    meanwhile)."""
    if interval is None:
        scale = 1.0 if took <= LONG_ROUND else float("inf")
    else:
        scale = max(1.0, took / max(interval, 1e-3))
    return pushed * scale, sent * scale
