"""The end of a worker, and what becomes of its execution: crash handling.

A worker that sent END ended the execution (exited, trapped, paused, slept, stopped for a
migration) — unless it found the checkpoint it restored corrupt, and an older one is restored
instead. One that died without END is replaced by another that replays the journal, unless
workers keep dying without making progress (a crash loop) or the kernel's OOM killer killed it
(node/oom.py: the execution fails at once). One that roostd stopped ends as it
was stopped for (killed, paused for the store or the quota, left RUNNING at shutdown). Then the
record is stored and every waiter wakes.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from roost.daemon.errors import StoreError, Superseded
from roost.daemon.executions.committer import Committer
from roost.daemon.executions.lives import Lives
from roost.daemon.executions.running import (
    OUTPUT_QUOTA,
    SHUTDOWN,
    STORE_FAILED,
    SUPERSEDED,
    Live,
    count_calls,
    describe_exit,
    reap,
)
from roost.daemon.executions.timers import Timers
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import Blob
from roost.daemon.node import metrics
from roost.daemon.node.oom import OomWatch
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, Owner, State

log = logging.getLogger(__name__)
MAX_BARREN_DEATHS = 5   # workers in a row that die without making new progress: a crash loop

# Give the execution a worker again: (record, restore=True, requested=, barren_deaths=).
Relaunch = Callable[..., None]


def stopped_as(record: ExecutionRecord, live: Live) -> str:
    """What became of an execution whose worker is gone, as its log line says it: only an
    EXITED, FAILED or KILLED one "ended"; one suspended (shutdown, pause, durable sleep) says
    how it goes on."""
    first = record.error.splitlines()[0] if record.error else ""
    if record.state == State.RUNNING:
        if live.end_reason == SUPERSEDED:
            return "stopped: another daemon owns it now (RUNNING there)"
        return "suspended at shutdown (RUNNING, resumes at the next start)"
    if record.state == State.PAUSED:
        return f"paused (PAUSED, `roost resume` continues it){': ' + first if first else ''}"
    if record.state == State.SLEEPING:
        wake = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(live.wake_at_ns / 1e9))
        return f"sleeping (SLEEPING, a durable sleep: wakes at {wake})"
    if record.state == State.EXITED:
        return f"ended: EXITED with code {record.exit_code}"
    return f"ended: {record.state.value}{': ' + first if first else ''}"


class Ending:
    """Records the outcome of each running execution whose worker ended."""

    def __init__(self, store: Store, pages: PageStore, lives: Lives, timers: Timers,
                 committer: Committer) -> None:
        self.store, self.pages, self.lives, self.timers = store, pages, lives, timers
        self.committer = committer
        self.oom = OomWatch()       # a worker the kernel's OOM killer killed fails, not replayed
        # Called when an execution of this daemon's ended (its end outlives this daemon: etcd).
        self.on_end: Callable[[ExecutionRecord], None] = lambda record: None

    def finish(self, live: Live, end: msg.End | None, relaunch: Relaunch) -> None:
        record = live.record
        self.committer.abandon(live)
        code = None if end is not None else reap(live.worker)   # the status explains a crash
        if end is not None and self._restore_older(live, end, relaunch):
            return
        vfs = None
        if end is not None:
            vfs = self._apply_end(live, end)
        elif live.end_reason == "killed":
            record.state, record.exit_code, record.error = State.KILLED, -1, "killed by request"
        elif live.end_reason in (SHUTDOWN, SUPERSEDED):
            pass                                   # stays RUNNING: replayed at the next start
            #                                        (or, superseded, its new owner's now)
        elif live.end_reason.startswith((STORE_FAILED, OUTPUT_QUOTA)):
            # What the worker sent after the last commit is lost, and nothing depends on it:
            # resume replays it from the latest checkpoint and the journal.
            record.state, record.error = State.PAUSED, live.end_reason
        elif not live.end_reason and self._oom_killed(live, code):
            pass                                   # FAILED, with the cgroup in its error
        elif not live.end_reason and self._recover(live, code, relaunch):
            return
        else:
            reason = live.end_reason or f"worker process {live.worker.pid} died ({describe_exit(code)})"
            record.state, record.exit_code, record.error = State.FAILED, -1, reason
        self._record(live, vfs)
        if end is not None:
            reap(live.worker)       # after answering waiters: process exit takes a while
        self._log(record, live)

    def _record(self, live: Live, vfs: Blob | None) -> None:
        """Store the outcome, take the execution out of the running ones, wake its waiters."""
        record = live.record
        record.worker_pid = 0                      # its worker is gone: none runs it now
        if record.state == State.SLEEPING:
            self.timers.add(record.id, live.wake_at_ns)
        if record.state.ended:
            record.finished_at = time.time()
            metrics.EXECUTION_ENDS.labels(state=record.state.value).inc()
        try:
            # A worker released by a handover may exit after the execution came back here at
            # a newer epoch: its record is stale then, and so is its place in `lives`.
            self.store.put_execution(record, vfs, unless_newer=True)
        except StoreError as e:     # still full: the store keeps RUNNING, resumed at next start
            log.error("%s: cannot record %s: %s", record.id, record.state.value, e)
        else:
            if record.state.ended and self.lives.owns(record):
                self.on_end(record)
        live.worker.link.close()
        self.lives.remove(live)
        with live.changed:
            live.changed.notify_all()
        self.lives.notify_ended()

    def _log(self, record, live: Live) -> None:
        if not self.lives.owns(record):
            log.info("execution %s handed over to %s", record.id, record.owner)
        elif record.migration:
            target = Owner.parse(record.migration)          # (not None: `migration` is set)
            log.info("execution %s stopped for its migration to %s", record.id,
                     target.node if target is not None else record.migration)
        else:
            log.info("execution %s %s", record.id, stopped_as(record, live))

    def _apply_end(self, live: Live, end: msg.End) -> Blob | None:
        """Take the worker's END: the outcome, its counters, the final filesystem."""
        record = live.record
        count_calls(live, end.calls or {})
        if not self.lives.owns(record):            # handed over while its worker exited
            return end.vfs or None
        record.state = State(end.state)
        if record.state == State.PAUSED and live.end_reason == SHUTDOWN:
            record.state = State.RUNNING           # suspended by the shutdown: resumed at start
        record.exit_code = end.exit_code
        record.error = end.error or ""
        record.memory_bytes = end.memory_bytes or 0
        return end.vfs or None

    def _restore_older(self, live: Live, end: msg.End, relaunch: Relaunch) -> bool:
        """The worker found the checkpoint it restored corrupt (a frame that passed the store's
        checksum but not its own: damaged before it was stored): drop it and restore the next
        older one, as `Launcher.restore_point` does for one the store finds corrupt. False when
        there is none (the execution fails with the worker's reason) or roostd is stopping."""
        record, number = live.record, end.corrupt_checkpoint
        restorable = self.pages.restorable(record.id) if number is not None else []
        if self.lives.stopping or len(restorable) < 2 or restorable[0] != number:
            return False
        note = f"checkpoint {number} is corrupt, restoring from an older one: {end.error}"
        log.warning("execution %s: %s", record.id, note)
        record.notes.append(note)
        self.pages.drop_newest(record.id, number)
        live.worker.link.close()
        try:
            relaunch(record, restore=True, requested=time.monotonic(),
                     barren_deaths=live.barren_deaths)
        except Exception as e:
            live.end_reason = f"checkpoint {number} is corrupt; no older one could be restored: {e}"
            return False
        finally:
            reap(live.worker)
        with live.changed:
            live.changed.notify_all()
        return True

    def _oom_killed(self, live: Live, code: int | None) -> bool:
        """A worker the kernel's OOM killer killed: its execution fails at once (replaying it
        would grow the same memory again, at the other executions' expense; node/oom.py)."""
        if not self.oom.killed_by_oom(code):
            return False
        record = live.record
        record.state, record.exit_code, record.error = State.FAILED, -1, self.oom.reason(live.worker.pid)
        metrics.WORKER_FAILURES.labels(reason="oom").inc()
        log.warning("execution %s: %s", record.id, record.error)
        return True

    def _recover(self, live: Live, code: int | None, relaunch: Relaunch) -> bool:
        """A worker died on its own: start another that replays the journal. False when the
        execution should fail instead: workers keep dying without making new progress (a
        crash loop), or the daemon is stopping."""
        record = live.record
        progressed = (live.next_seq, live.journal_seq, record.checkpoints) > live.launch_mark
        deaths = 0 if progressed else live.barren_deaths + 1
        metrics.WORKER_FAILURES.labels(reason="died").inc()
        if deaths >= MAX_BARREN_DEATHS or self.lives.stopping:
            live.end_reason = (f"worker process {live.worker.pid} died ({describe_exit(code)}); "
                               f"{deaths} workers in a row died without making progress")
            return False
        log.warning("worker %d of %s died (%s): restoring", live.worker.pid, record.id, describe_exit(code))
        live.worker.link.close()
        try:
            relaunch(record, restore=True, requested=time.monotonic(), barren_deaths=deaths)
        except Superseded:
            live.end_reason = SUPERSEDED
            return False
        except Exception as e:
            live.end_reason = f"worker died and the execution could not be restored: {e}"
            return False
        with live.changed:
            live.changed.notify_all()
        return True
