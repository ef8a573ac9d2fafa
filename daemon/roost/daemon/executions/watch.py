"""Watching an execution from a client's call: waiting for its end, following its output.

Both follow it through every worker it has — restores, pauses, durable sleeps — and stop when
it is not this daemon's any more (the caller follows it to its new owner). They wake on the
running worker's `changed` condition, or on `Lives.ended` while it has none.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from roost.daemon.executions.lives import Lives
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord


def wait(store: Store, lives: Lives, exec_id: str, timeout: float | None = None,
         is_active: Callable[[], bool] = lambda: True) -> ExecutionRecord:
    """Block until the execution has ended — through restores, pauses and durable sleeps;
    returns its record (the current one if `timeout` passes first)."""
    deadline = None if not timeout else time.monotonic() + timeout
    while True:
        live = lives.get(exec_id)
        record = live.record if live is not None else store.get_execution(exec_id)
        remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if record.state.ended or remaining <= 0 or not is_active() or not lives.owns(record):
            return record                # (not ours any more: the caller follows it)
        if live is None:                # paused or sleeping: any end wakes us
            lives.wait_ended(remaining)
            continue
        with live.changed:
            live.changed.wait_for(lambda: exec_id not in lives, timeout=remaining)


def logs(store: Store, lives: Lives, exec_id: str, from_seq: int, follow: bool, stream: int = 0,
         is_active: Callable[[], bool] = lambda: True) -> Iterator[tuple[int, int, bytes]]:
    """Durable output records (seq, stream, data) from `from_seq`; with `follow`, until the
    execution has ended and every record has been sent."""
    seq = from_seq
    while is_active():
        live = lives.get(exec_id)       # read before the store: no lost tail
        batch = store.read_logs(exec_id, seq)
        for rec_seq, rec_stream, data in batch:
            seq = rec_seq + 1
            if not stream or rec_stream == stream:
                yield rec_seq, rec_stream, data
        if batch:
            continue
        if not follow:
            return
        if live is None:      # ended, not ours any more (the caller follows it), or between
            record = store.get_execution(exec_id)       # workers: paused, sleeping
            if record.state.ended or not lives.owns(record):
                return
            lives.wait_ended(0.5)
            continue
        with live.changed:
            live.changed.wait_for(lambda: live.next_seq > seq or exec_id not in lives,
                                  timeout=1.0)
