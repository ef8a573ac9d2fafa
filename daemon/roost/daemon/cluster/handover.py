"""Handing an execution from one roostd to another: ownership moves with an epoch bump, and the
execution runs on at most one daemon at any time, whatever dies when.

Two phases, the source deciding:

    source                                           target
    final checkpoint committed, worker gone
    record.migration = "<epoch> <target>"  (an `Owner`)
    PushCheckpoint (the final one) ------------->    stored
    PREPARE(epoch, checkpoint) ----------------->    holds that checkpoint? record.prepared =
                                <-----------------   "<epoch> <source> <address>"; ok
    decision: record.owner = target, epoch,
    handing_over = epoch  (from now on the source never runs it)
    COMMIT ------------------------------------->    record.owner = itself at epoch: runs it
                                <-----------------   ok (its guest is running)
    handing_over = 0

- The target dies before answering PREPARE: the source takes the execution back (ABORT, run it
  again from its final checkpoint). A target that comes back prepared asks the source
  (`Decision`): ABORTED, it forgets.
- The target dies after PREPARE: the source has decided; it retries COMMIT until the target is
  back (the target, restarted and prepared, also asks and gets COMMITTED).
- The source dies after deciding: on restart it retries COMMIT. Before deciding: on restart it
  takes the execution back and tells the target ABORT.
- A target left prepared with no word (a source that died and stays away, an ABORT lost) asks
  the source (`Decision`) after DECISION_WAIT_SECONDS, and again with backoff until it gets an
  answer: it never runs the execution unless the source says COMMITTED. Its standby worker goes
  meanwhile (`executions.standbys.Standbys._expire`); a late COMMIT restores from the store.

A daemon refuses pushes and handovers carrying an epoch older than the one it knows, and any
peer's word on an execution it owns or runs: only its own handover gives one away (the rules
every Peer call is held to are in `authority`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from roost.daemon.cluster.authority import Ownership
from roost.daemon.cluster.peerauth import Caller
from roost.daemon.cluster.peers import PeerError, Peers
from roost.daemon.errors import NotFound, StateConflict
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import Owner
from roost.v1 import peer_pb2 as pb

log = logging.getLogger(__name__)
Phase = pb.HandoverRequest.Phase
DECISION_WAIT_SECONDS = 10.0     # prepared with no COMMIT/ABORT this long: ask the source


@dataclass
class Handed:
    """A COMMIT's answer: the target's standby applying the last checkpoint, and when (this
    daemon's clock) the guest ran there."""
    restore_seconds: float
    running_at: float


def _running_at(sent: float, answered: float, response: pb.HandoverResponse) -> float:
    """When the guest ran on the target, on this daemon's clock (the target's is another
    host's): the COMMIT's arrival there, half of the round trip that the target did not spend
    on it after sending, plus the target's own seconds to the guest running. Hearing the
    answer back is not downtime."""
    travel = max(0.0, answered - sent - response.running_after_seconds)
    return min(answered, sent + travel / 2 + response.running_after_seconds)


class Handovers:
    def __init__(self, me: NodeIdentity, store: Store, checkpoints: PageStore,
                 supervisor: Supervisor, peers: Peers, ownership: Ownership) -> None:
        self.me, self.store, self.checkpoints = me, store, checkpoints
        self.supervisor = supervisor      # runs, gives up, adopts and takes back executions
        self.ownership = ownership
        self.peers = peers
        # A target's moves out of `prepared` (COMMIT, ABORT, the source's answer to Decision)
        # one at a time: a COMMIT retried while the first is still being carried out, or
        # arriving as a Decision is answered, must not start the execution twice.
        self._deciding = threading.Lock()

    # ---- the source's side ----
    def hand_over(self, exec_id: str, number: int, epoch: int, target: str, address: str,
                  migration: str, prepared: bool = False, commit_timeout: float = 30.0) -> Handed:
        """PREPARE (unless the final checkpoint's push `prepared` the target already), decide,
        COMMIT: the execution is `target`'s at `epoch` when this returns. A PREPARE that fails
        raises, and nothing was decided; a COMMIT that fails after the decision is retried in
        the background."""
        client = self.peers.client(address)
        request = pb.HandoverRequest(id=exec_id, source=self.me.node_id,
                                     source_address=self.me.address, epoch=epoch,
                                     checkpoint=number, migration=migration)
        request.phase = Phase.PREPARE
        if not prepared and not client.handover(request).ok:
            raise StateConflict(f"handover of {exec_id}: {address} did not prepare")
        self.supervisor.give_up(exec_id, target, address, epoch)
        request.phase = Phase.COMMIT
        deadline = time.monotonic() + commit_timeout
        while True:
            try:
                sent = time.time()
                response = client.handover(request)
                answered = time.time()
                self.supervisor.release(exec_id)
                threading.Thread(target=self._confirmed, args=(exec_id, epoch), daemon=True).start()
                return Handed(response.restore_seconds, _running_at(sent, answered, response))
            except PeerError as e:
                if time.monotonic() > deadline:
                    log.warning("handover of %s to %s: %s; retrying in the background", exec_id, address, e)
                    self.supervisor.release(exec_id)
                    self._retry_commit(exec_id, epoch, address)
                    return Handed(0.0, time.time())
                time.sleep(0.2)

    def abort(self, exec_id: str, address: str, epoch: int) -> None:
        """Tell a target to forget a handover that will not happen (best effort: a target that
        does not hear it asks `Decision` when it comes back)."""
        try:
            self.peers.client(address).handover(pb.HandoverRequest(
                id=exec_id, phase=Phase.ABORT, epoch=epoch, source=self.me.node_id), timeout=5.0)
        except PeerError as e:
            log.info("abort of the handover of %s to %s: %s", exec_id, address, e)

    def decision(self, exec_id: str, epoch: int) -> pb.DecisionResponse.Outcome:
        """Asked by a target left prepared: what this source decided for `epoch`."""
        Outcome = pb.DecisionResponse.Outcome
        try:
            record = self.supervisor.get(exec_id)
        except NotFound:
            return Outcome.ABORTED
        if not self.me.owns(record) and record.epoch >= epoch:
            return Outcome.COMMITTED
        if record.migration and Owner.epoch_of(record.migration) == epoch:
            return Outcome.UNDECIDED
        return Outcome.ABORTED

    def _confirmed(self, exec_id: str, epoch: int) -> None:
        def confirm(record) -> bool:
            if record.handing_over != epoch:
                return False
            record.handing_over = 0
            return True
        self.store.update_execution(exec_id, confirm)

    def _retry_commit(self, exec_id: str, epoch: int, address: str) -> None:
        def run() -> None:
            request = pb.HandoverRequest(id=exec_id, phase=Phase.COMMIT, epoch=epoch,
                                         source=self.me.node_id,
                                         source_address=self.me.address)
            backoff = 0.5
            while True:
                try:
                    self.peers.client(address).handover(request)
                    self._confirmed(exec_id, epoch)
                    return
                except PeerError:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
        threading.Thread(target=run, name=f"commit-{exec_id}", daemon=True).start()

    # ---- the target's side ----
    def check_prepare(self, exec_id: str, epoch: int, known: int) -> None:
        """A handover to this daemon at `epoch` must be newer than the epoch it knows."""
        if epoch <= known:
            raise StateConflict(f"handover of {exec_id} at epoch {epoch}: stale, this daemon "
                                f"knows epoch {known}")

    def prepare(self, request: pb.HandoverRequest, caller: Caller) -> pb.HandoverResponse:
        """PREPARE, from the execution's owner (`authority`): hold the handover at its epoch."""
        record = self.store.get_execution(request.id)
        self.ownership.check_prepare(caller, request, record)
        if not (record.prepared and Owner.epoch_of(record.prepared) == request.epoch):
            self.check_prepare(request.id, request.epoch, record.epoch)
        latest = self.checkpoints.latest(request.id)
        if latest is None or latest.number != request.checkpoint:
            raise StateConflict(f"handover of {request.id}: checkpoint {request.checkpoint} is not "
                                f"the latest here ({latest.number if latest else 'none'})")
        record.prepared = str(Owner(request.epoch, request.source, request.source_address))
        self.store.put_execution(record)
        self.watch(request.id, request.epoch)
        return pb.HandoverResponse(ok=True)

    def commit(self, request: pb.HandoverRequest, caller: Caller | None) -> pb.HandoverResponse:
        """COMMIT, from the source that prepared it (`caller` None: this daemon's own word,
        the source's answer to `Decision`): run the execution here at its epoch."""
        began = time.monotonic()
        with self._deciding:
            record = self.store.get_execution(request.id)
            if (record.owner == self.me.node_id and record.epoch == request.epoch
                    or self.supervisor.is_running_here(request.id, request.epoch)):
                return pb.HandoverResponse(ok=True)      # a retry: it runs here already
            if caller is not None:
                self.ownership.check_decider(caller, request, record)
            if not record.prepared or Owner.epoch_of(record.prepared) != request.epoch:
                raise StateConflict(f"handover of {request.id}: not prepared for epoch {request.epoch}")
            latest = self.checkpoints.latest(request.id)
            if latest is None:                   # (PREPARE found it: only a store wiped since)
                raise StateConflict(f"handover of {request.id}: no checkpoint of it is here")
            seconds = self.supervisor.adopt(request.id, request.epoch, latest.number)
        return pb.HandoverResponse(ok=True, restore_seconds=seconds,
                                   running_after_seconds=time.monotonic() - began)

    def forget(self, request: pb.HandoverRequest, caller: Caller | None) -> pb.HandoverResponse:
        """ABORT, from the source that prepared it or, before PREPARE, the owner migrating it
        (`caller` None: this daemon's own word): forget the handover, drop the standby."""
        with self._deciding:
            try:
                record = self.store.get_execution(request.id)
            except NotFound:
                return pb.HandoverResponse(ok=True)
            if caller is not None:
                self.ownership.check_decider(caller, request, record)
            if record.prepared and Owner.epoch_of(record.prepared) == request.epoch:
                record.prepared = ""
                self.store.put_execution(record)
            self.supervisor.drop_standby(request.id)
        return pb.HandoverResponse(ok=True)

    def watch(self, exec_id: str, epoch: int, wait: float = DECISION_WAIT_SECONDS) -> None:
        """Prepared at `epoch`: if no COMMIT or ABORT comes within `wait`, ask the source."""
        def run() -> None:
            time.sleep(wait)
            record = self.store.get_execution(exec_id)
            if record.prepared and Owner.epoch_of(record.prepared) == epoch:
                log.info("%s: prepared at epoch %d for %.0f s with no decision: asking its source",
                         exec_id, epoch, wait)
                self._ask_source(exec_id)
        threading.Thread(target=run, name=f"decision-watch-{exec_id}", daemon=True).start()

    # ---- after a restart ----
    def recover(self) -> None:
        """Finish what a restart interrupted: a target's prepared handovers (ask the source), a
        source's undecided migrations (take the execution back) and unconfirmed commits."""
        for record in self.store.list_executions():
            if record.prepared:
                threading.Thread(target=self._ask_source, args=(record.id,), daemon=True,
                                 name=f"decision-{record.id}").start()
            elif record.migration and self.me.owns(record):
                target = Owner.parse(record.migration)
                if target is not None and target.address:
                    self.abort(record.id, target.address, target.epoch)
                self.supervisor.take_back(record.id)
            elif record.handing_over:
                self._retry_commit(record.id, record.handing_over, record.owner_address)

    def _ask_source(self, exec_id: str) -> None:
        Outcome = pb.DecisionResponse.Outcome
        backoff = 0.5
        while True:
            record = self.store.get_execution(exec_id)
            source = Owner.parse(record.prepared)
            if source is None:                   # (nothing prepared: "" parses to None)
                return
            epoch = source.epoch
            try:
                outcome = self.peers.client(source.address).decision(exec_id, epoch).outcome
            except PeerError:
                outcome = Outcome.UNDECIDED
            if outcome == Outcome.COMMITTED:
                self.commit(pb.HandoverRequest(id=exec_id, epoch=epoch), None)
                return
            if outcome == Outcome.ABORTED:
                self.forget(pb.HandoverRequest(id=exec_id, epoch=epoch), None)
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
