"""A migration, the source's side: stop the guest for its final checkpoint, then give the
execution up to its new owner (`give_up`, `release`) or keep it (`take_back`).

Between the stop and the decision the execution is undecided (`record.migration`): its worker
holds the stopped guest, so that a migration that does not happen resumes in it at once, and a
daemon restart in between takes it back from its final checkpoint.
"""
from __future__ import annotations

import time

from roost.daemon.errors import StateConflict, TimedOut
from roost.daemon.executions import requests
from roost.daemon.executions.ending import Relaunch
from roost.daemon.executions.lives import Lives
from roost.daemon.executions.running import Live
from roost.daemon.executions.timers import Timers
from roost.daemon.link import messages as msg
from roost.daemon.store.checkpoints import PageStore, Uncommitted
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, Owner, State


class Source:
    """The source side of the migrations of this daemon's executions."""

    def __init__(self, store: Store, pages: PageStore, lives: Lives, timers: Timers,
                 launch: Relaunch) -> None:
        self.store, self.pages, self.lives, self.timers = store, pages, lives, timers
        self.launch = launch         # (record, restore=True, requested=): a worker again

    def stop(self, live: Live, target: str, address: str, epoch: int,
             timeout: float = 60.0) -> Uncommitted:
        """Take the final checkpoint and stop the guest (a live migration's stop-and-copy, or
        a cold migration); the execution stays this daemon's until `give_up`, and a restart
        in between takes it back (`take_back`). The final checkpoint, as soon as it is being
        committed (it can be pushed meanwhile; its `committed` says when it is stored)."""
        exec_id = live.record.id
        live.record.migration = str(Owner(epoch, target, address))
        n = requests.ask(live, "migrate")
        # Answered as soon as the checkpoint is being committed, its worker holding the
        # stopped guest until `release` or `take_back`.
        result = requests.await_answer(live, n, lambda: exec_id not in self.lives, timeout)
        if result is not None and "uncommitted" in result:
            return result["uncommitted"]
        live.record.migration = ""
        if result is not None:                   # (a durable sleep came first: it stops too)
            raise StateConflict(f"execution {exec_id} stopped for a {result.get('reason')} "
                                "checkpoint instead of its migration: migrate it again")
        if exec_id in self.lives:
            self._decide(exec_id, "resume")      # for the stop it may still reach
            raise TimedOut(f"execution {exec_id} did not reach a safepoint in {timeout:g} s")
        raise StateConflict(f"execution {exec_id} ended ({live.record.state.value}) instead of "
                            "stopping for its migration")

    def give_up(self, exec_id: str, owner: str, address: str, epoch: int) -> None:
        """The decision of a migration: the execution is `owner`'s at `epoch` from now on;
        this daemon will never run it again unless it is handed back."""
        live = self.lives.get(exec_id)         # its worker may still be exiting: its end is
        record = live.record if live is not None else self.store.get_execution(exec_id)  # recorded
        record.owner, record.owner_address, record.epoch = owner, address, epoch   # on this too
        record.migration, record.handing_over = "", epoch
        if record.state == State.PAUSED and record.error == "":
            record.state = State.RUNNING          # as its new owner runs it
        self.timers.cancel(exec_id)
        self.store.put_execution(record, clear_timer=True)
        self.lives.notify_ended()

    def release(self, exec_id: str) -> None:
        """The execution runs elsewhere now: the worker that held its stopped guest exits."""
        self._decide(exec_id, "release")

    def _decide(self, exec_id: str, decision: str) -> bool:
        return requests.control(self.lives.get(exec_id), msg.Control.decide(decision))

    def take_back(self, exec_id: str) -> None:
        """A migration that did not happen: the execution stays here and, if it was running
        (stopped for its migration), runs on — in the worker that held it when there is one,
        else again from its final checkpoint."""
        live = self.lives.get(exec_id)
        if live is not None and live.record.migration:
            live.record.migration = ""
            if self._decide(exec_id, "resume"):
                self.store.put_execution(live.record)
                return
        if live is not None:                     # its worker exiting after the stop
            with live.changed:
                live.changed.wait_for(lambda: exec_id not in self.lives, timeout=30)
        record = self.store.get_execution(exec_id)
        record.migration = ""
        latest = self.pages.latest(exec_id)
        if (record.state in (State.PAUSED, State.RUNNING)
                and latest is not None and latest.reason == "migrate"
                and exec_id not in self.lives):
            self.launch(record, restore=True, requested=time.monotonic())
            return
        self.store.put_execution(record)
        if record.state == State.SLEEPING and exec_id in self.store.timers():
            self.timers.add(exec_id, self.store.timers()[exec_id])

    def mark_migrating(self, exec_id: str, target: str, address: str, epoch: int) -> None:
        """A migration of an execution with no worker (paused, sleeping): undecided from now.
        StateConflict if it is neither any more — one that ended between the migration's
        rounds and its stop has nothing to move: its latest checkpoint is older than its end,
        and the target would run its tail again."""
        def mark(record: ExecutionRecord) -> bool:
            if record.state not in (State.PAUSED, State.SLEEPING):
                raise StateConflict(f"execution {exec_id} is {record.state.value}, not paused or "
                                    "sleeping, at its migration's stop: nothing to move")
            record.migration = str(Owner(epoch, target, address))
            return True
        self.store.update_execution(exec_id, mark)

    def throttle(self, exec_id: str, fraction: float) -> None:
        """Slow a running guest to (1 - fraction) of its speed (0: full speed again)."""
        requests.control(self.lives.get(exec_id), msg.Control.throttle(fraction))
