"""Durable timers: wake SLEEPING executions at their deadline.

A guest in a long sleep is checkpointed and its worker released; the wake-up time (unix ns) is
stored in LMDB with the checkpoint, in the same transaction. This thread keeps the pending
timers in memory (loaded from the store at start, so a deadline survives daemon restarts) and
calls `wake(id)` when one is due — late deadlines (the daemon was down) fire at once.

The thread is the only one that wakes any sleeper, so nothing may end it: deadlines are clamped
to what the store and `Condition.wait` can hold (a guest asking for a sleep of 2^64 ns sleeps
about a century), the wait never exceeds MAX_WAIT_SECONDS, and a failure in one round is
logged and the loop goes on.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from roost.daemon.store.db import Store

log = logging.getLogger(__name__)
MAX_WAKE_AT_NS = (1 << 63) - 1     # the store keeps a u64; stay clear of signed overflow too
MAX_WAIT_SECONDS = 3600.0          # re-evaluate at least hourly (any wait longer overflows)
RETRY_SECONDS = 1.0                # after an unexpected failure of a round


def clamp_wake_at(wake_at_ns: object) -> int:
    """A wake-up time the loop can always wait for: an int in [0, MAX_WAKE_AT_NS]."""
    try:
        return min(max(int(wake_at_ns), 0), MAX_WAKE_AT_NS)   # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0                                              # unreadable: fire now


class Timers:
    def __init__(self, store: Store, wake: Callable[[str], None]) -> None:
        self.store = store
        self.wake = wake
        self._due: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="timers", daemon=True)

    def start(self) -> None:
        with self._cond:
            self._due.update({i: clamp_wake_at(t) for i, t in self.store.timers().items()})
        self._thread.start()

    def add(self, exec_id: str, wake_at_ns: int) -> None:
        with self._cond:
            self._due[exec_id] = clamp_wake_at(wake_at_ns)
            self._cond.notify()

    def cancel(self, exec_id: str) -> None:
        with self._cond:
            self._due.pop(exec_id, None)

    def alive(self) -> bool:
        """The timer thread runs (the watchdog asks: without it no durable sleep wakes)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        """Wake what is due, wait for the next deadline; survive anything one round raises."""
        while True:
            try:
                due = self._next_due()
            except Exception:
                log.exception("timer loop: a round failed; retrying")
                with self._cond:
                    self._cond.wait(RETRY_SECONDS)
                continue
            if due is None:
                return
            for exec_id in due:
                try:
                    self.wake(exec_id)
                except Exception:
                    log.exception("waking execution %s failed", exec_id)

    def _next_due(self) -> list[str] | None:
        """The executions due now (removed from the table), after waiting for the nearest
        deadline at most MAX_WAIT_SECONDS; None once stopped."""
        with self._cond:
            while not self._stopped:
                now = time.time_ns()
                due = [i for i, t in self._due.items() if t <= now]
                if due:
                    for exec_id in due:
                        del self._due[exec_id]
                    return due
                nearest = min(self._due.values(), default=None)
                wait = MAX_WAIT_SECONDS if nearest is None else (nearest - now) / 1e9
                self._cond.wait(min(max(wait, 0.0), MAX_WAIT_SECONDS))
            return None
