"""Taking over the executions of a dead owner, and keeping replicas in step with etcd.

A thread polls the owner keys a few times per lease TTL (`membership`) and compares them with
the executions this daemon holds:

- a replica whose owner key is gone (its owner's lease expired: the host died or was cut
  off) — this daemon bids what it holds; the winner takes it over at the next epoch and runs
  it from its latest replicated checkpoint and the journal after it (`Supervisor.take_over`);
- a replica whose owner key names a newer owner (a migration, another's takeover) follows it,
  so `inspect`, `logs` and `wait` here name the right owner;
- a replica whose owner key says it ended takes the outcome (state, exit code);
- an execution of this daemon's that should run but has no worker (etcd was unreachable when
  roostd started) is started again, once its claim goes through.

Nothing here runs while this daemon is fenced (it cannot vouch for its own lease): a daemon
cut off from etcd must not take anything over.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from roost.daemon.cluster.membership import OWNERS, Membership, OwnerKey, _owner_key
from roost.daemon.errors import RoostError, Superseded
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, State

log = logging.getLogger(__name__)


class Takeovers:
    def __init__(self, membership: Membership, store: Store, supervisor: Supervisor) -> None:
        self.membership, self.store, self.supervisor = membership, store, supervisor
        self.period = min(0.25, membership.ttl / 4)    # a takeover waits a TTL and this
        self._stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="takeovers", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.period):
            if self.membership.fenced():
                continue
            try:
                self.poll()
            except RoostError as e:
                log.warning("watching owners: %s", e)
            except Exception:
                log.exception("watching owners")

    def poll(self) -> None:
        owners = self._owners()
        for record in self.store.list_executions():
            if record.state.ended and not self.supervisor.owns(record):
                continue
            if self.supervisor.owns(record):
                self._mine(record)
                continue
            key = owners.get(record.id)
            if key is None:
                self._bid(record)
            elif key.ended:
                self._ended(record, key)
            elif key.epoch >= record.epoch and (key.node, key.epoch) != (record.owner, record.epoch):
                self._follow(record, key)

    def _owners(self) -> dict[str, OwnerKey]:
        out = {}
        for value, meta in self.membership.etcd.prefix(OWNERS):
            key = meta["key"].decode() if isinstance(meta["key"], bytes) else str(meta["key"])
            owner = _owner_key((value, meta))
            if owner is not None:
                out[key[len(OWNERS):]] = owner
        return out

    def _bid(self, record: ExecutionRecord) -> None:
        """The owner is gone: bid what this daemon holds; run it if this daemon won."""
        holds = (self.store.next_seq("logs", record.id), self.store.next_seq("journal", record.id))
        epoch = self.membership.bid_and_take(record.id, holds, record.epoch)
        if epoch is None:
            return
        began = time.monotonic()
        try:
            self.supervisor.take_over(record.id, epoch)
        except Exception as e:
            log.exception("execution %s: taking it over failed", record.id)
            self.supervisor.fail(record.id, f"taking it over failed: {e}")
            return
        log.info("execution %s: running here %.3f s after winning it", record.id,
                 time.monotonic() - began)

    def _follow(self, record: ExecutionRecord, key: OwnerKey) -> None:
        def moved(r: ExecutionRecord) -> bool:
            r.owner, r.epoch, r.owner_address = key.node, key.epoch, key.address or r.owner_address
            return True
        self.store.update_execution(record.id, moved)

    def _ended(self, record: ExecutionRecord, key: OwnerKey) -> None:
        """It ended on its owner: this replica takes the outcome the owner key keeps."""
        found = self.membership.etcd.get(OWNERS + record.id)
        if found is None:
            return
        try:
            value = json.loads(found[0])
            state, code = State(value.get("state", State.EXITED.value)), int(value.get("exit_code", 0))
        except (ValueError, TypeError):
            return

        def ended(r: ExecutionRecord) -> bool:
            r.state, r.exit_code, r.owner, r.epoch = state, code, key.node, max(r.epoch, key.epoch)
            r.finished_at = r.finished_at or time.time()
            return True
        self.store.update_execution(record.id, ended)

    def _mine(self, record: ExecutionRecord) -> None:
        """An execution of this daemon's that was not resumed at start (etcd did not answer)."""
        if record.id not in self.supervisor.unresumed or self.supervisor.lives.stopping:
            return
        try:
            self.supervisor.launcher.launch(record, restore=True, requested=time.monotonic())
        except Superseded:
            pass
        except RoostError as e:
            log.warning("execution %s: still not resumed: %s", record.id, e)
            return
        self.supervisor.unresumed.discard(record.id)
