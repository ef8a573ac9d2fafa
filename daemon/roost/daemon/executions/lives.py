"""The executions whose worker runs here now, and which executions are this daemon's.

Every part of the supervision pipeline needs both: the pump's end (`ending`) takes an execution
out, a standby that goes live (`standbys`) puts one in, the migration source asks for one, the
client's queries read them. One small object owns the map, its lock and the condition that
wakes whoever waits for an execution to end, so the parts share it without sharing the
supervisor.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from roost.daemon.errors import LimitExceeded
from roost.daemon.executions.running import Live
from roost.daemon.store.records import ExecutionRecord


class Lives:
    """exec id -> the `Live` of its running worker, for this daemon (`node_id`, reached at
    `address`)."""

    def __init__(self, node_id: str, address: str = "") -> None:
        self.node_id, self.address = node_id, address
        self.lock = threading.Lock()
        self.ended = threading.Condition()      # notified whenever any execution ends
        self.stopping = False                   # the daemon is shutting down
        self._live: dict[str, Live] = {}

    def owns(self, record: ExecutionRecord) -> bool:
        """This daemon runs `record`'s execution (nobody else may)."""
        return record.owner in ("", self.node_id)

    def get(self, exec_id: str) -> Live | None:
        return self._live.get(exec_id)

    def __contains__(self, exec_id: str) -> bool:
        return exec_id in self._live

    def __bool__(self) -> bool:
        return bool(self._live)

    def __len__(self) -> int:
        return len(self._live)

    def all(self) -> list[Live]:
        with self.lock:
            return list(self._live.values())

    def records(self) -> dict[str, ExecutionRecord]:
        with self.lock:
            return {i: live.record for i, live in self._live.items()}

    def add(self, live: Live, leaving: Callable[[], object] | None = None) -> None:
        """`leaving` runs under the same lock: a standby leaves its own map as it goes live,
        so it is never in neither."""
        with self.lock:
            if leaving is not None:
                leaving()
            self._live[live.record.id] = live

    def remove(self, live: Live) -> None:
        """Take `live` out, unless a newer worker of the same execution took its place."""
        with self.lock:
            if self._live.get(live.record.id) is live:
                self._live.pop(live.record.id)

    def admit(self, memory_limit_bytes: int, max_executions: int, max_memory_total_bytes: int) -> None:
        """Refuse a new execution that would run more executions, or commit more guest memory
        (their limits added up), than this daemon is configured to carry."""
        running = self.all()
        if len(running) >= max_executions:
            raise LimitExceeded(f"roostd runs {len(running)} executions, its most "
                                "(limits.executions): start it elsewhere or later")
        committed = sum(live.record.memory_limit_bytes for live in running)
        if committed + memory_limit_bytes > max_memory_total_bytes:
            raise LimitExceeded(f"a memory limit of {memory_limit_bytes} bytes on top of the "
                                f"{committed} its running executions may use is more than "
                                f"{max_memory_total_bytes} (limits.memory_total_bytes)")

    def notify_ended(self) -> None:
        with self.ended:
            self.ended.notify_all()

    def wait_ended(self, timeout: float, until: Callable[[], bool] | None = None) -> None:
        with self.ended:
            if until is None:
                self.ended.wait(timeout=timeout)
            else:
                self.ended.wait_for(until, timeout=timeout)
