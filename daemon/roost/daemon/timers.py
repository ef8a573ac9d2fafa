"""Durable timers: wake SLEEPING executions at their deadline.

A guest in a long sleep is checkpointed and its worker released; the wake-up time (unix ns) is
stored in LMDB with the checkpoint, in the same transaction. This thread keeps the pending
timers in memory (loaded from the store at start, so a deadline survives daemon restarts) and
calls `wake(id)` when one is due — late deadlines (the daemon was down) fire at once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .store import Store

log = logging.getLogger(__name__)


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
            self._due.update(self.store.timers())
        self._thread.start()

    def add(self, exec_id: str, wake_at_ns: int) -> None:
        with self._cond:
            self._due[exec_id] = wake_at_ns
            self._cond.notify()

    def cancel(self, exec_id: str) -> None:
        with self._cond:
            self._due.pop(exec_id, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.time_ns()
                due = [i for i, t in self._due.items() if t <= now]
                if not due:
                    nearest = min(self._due.values(), default=None)
                    self._cond.wait(None if nearest is None else (nearest - now) / 1e9)
                    continue
                for exec_id in due:
                    del self._due[exec_id]
            for exec_id in due:
                try:
                    self.wake(exec_id)
                except Exception:
                    log.exception("waking execution %s failed", exec_id)
