"""Watching an execution from a client's call: waiting for its end, following its output.

Both follow it through every worker it has — restores, pauses, durable sleeps — and stop when
it is not this daemon's any more (the caller follows it to its new owner). They wake on the
running worker's `changed` condition — until that worker is no longer the execution's (it
ended, or a restore gave the execution another one: the waiter then watches the new one at
once, never the old one until its timeout) — or on `Lives.ended` while it has none.

Output counts — reaches a client — only once it is released (`Release`: with
`replication.ack = one | all`, once the replicas hold it; `cluster.shipping`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

from roost.daemon.executions.lives import Lives
from roost.daemon.store.db import Store
from roost.daemon.store.logrecord import LogEntry
from roost.daemon.store.records import ExecutionRecord


class Release(Protocol):
    """Which output records count: [0, limit) of an execution (None: all that is stored)."""

    def limit(self, exec_id: str) -> int | None: ...

    def wait(self, exec_id: str, seq: int, timeout: float) -> None: ...


class Stored:
    """Output counts once it is stored here (no replicas, or `replication.ack = async`)."""

    def limit(self, exec_id: str) -> int | None:
        return None

    def wait(self, exec_id: str, seq: int, timeout: float) -> None:
        time.sleep(timeout)


STORED = Stored()


def unreleased(store: Store, release: Release, exec_id: str) -> int | None:
    """The first output record stored but not released yet (None: none is)."""
    limit = release.limit(exec_id)
    if limit is None or store.next_seq("logs", exec_id) <= limit:
        return None
    return limit


def _limit(store: Store, lives: Lives, release: Release, exec_id: str, live) -> int | None:
    """The release limit of an execution this daemon owns; none for another's (what it holds
    of one it handed over was released before; a replica's was released by its owner)."""
    limit = release.limit(exec_id)
    if limit is None:
        return None
    record = live.record if live is not None else store.get_execution(exec_id)
    return limit if lives.owns(record) else None


def wait(store: Store, lives: Lives, exec_id: str, timeout: float | None = None,
         is_active: Callable[[], bool] = lambda: True, release: Release = STORED) -> ExecutionRecord:
    """Block until the execution has ended — through restores, pauses and durable sleeps —
    and its output is released; returns its record (the current one if `timeout` passes
    first)."""
    deadline = None if not timeout else time.monotonic() + timeout
    while True:
        live = lives.get(exec_id)
        record = live.record if live is not None else store.get_execution(exec_id)
        remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if remaining <= 0 or not is_active() or not lives.owns(record):
            return record                # (not ours any more: the caller follows it)
        if record.state.ended:
            held = unreleased(store, release, exec_id)
            if held is None:
                return record
            release.wait(exec_id, held, remaining)
            continue
        if live is None:                # paused or sleeping: any end wakes us
            lives.wait_ended(remaining)
            continue
        with live.changed:     # (a restore replaces `live`: that ends this wait too)
            live.changed.wait_for(lambda: lives.get(exec_id) is not live, timeout=remaining)


def logs(store: Store, lives: Lives, exec_id: str, from_seq: int, follow: bool, stream: int = 0,
         is_active: Callable[[], bool] = lambda: True, release: Release = STORED,
         tail: int | None = None, since_ns: int | None = None) -> Iterator[LogEntry]:
    """Durable, released output records (seq, stream, data, time_ns) from `from_seq` — and
    from where `tail` lines / `since_ns` start (`Store.log_start`; the first record may be
    cut to its last lines) —; with `follow`, until the execution has ended and every record
    has been sent."""
    seq, skip = from_seq, 0
    if tail is not None or since_ns is not None:
        limit = _limit(store, lives, release, exec_id, lives.get(exec_id))
        seq, skip = max((from_seq, 0), store.log_start(exec_id, stream, tail, since_ns, limit))
    while is_active():
        live = lives.get(exec_id)       # read before the store: no lost tail
        limit = _limit(store, lives, release, exec_id, live)
        batch = store.read_output(exec_id, seq)
        if limit is not None:
            batch = [r for r in batch if r.seq < limit]
        for entry in batch:
            seq = entry.seq + 1
            if skip:
                entry, skip = entry._replace(data=entry.data[skip:]), 0
            if (not stream or entry.stream == stream) and entry.data:
                yield entry
        if batch:
            continue
        if not follow:
            return
        if limit is not None and store.next_seq("logs", exec_id) > seq:
            release.wait(exec_id, seq, 1.0)     # stored, not released yet
            continue
        if live is None:      # ended, not ours any more (the caller follows it), or between
            record = store.get_execution(exec_id)       # workers: paused, sleeping
            if record.state.ended or not lives.owns(record):
                return
            lives.wait_ended(0.5)
            continue
        with live.changed:
            live.changed.wait_for(lambda: live.next_seq > seq or lives.get(exec_id) is not live,
                                  timeout=1.0)
