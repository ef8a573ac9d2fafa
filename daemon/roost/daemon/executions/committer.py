"""The checkpoint committer: a worker's checkpoint, from its streamed page parts to its commit.

A large checkpoint arrives as PAGES parts, each written (uncommitted) on a writer thread while
the pump goes on receiving the next one and the worker compresses a third — receive, compress
and the disk overlap; at most `STREAM_DEPTH` parts wait, which backs the worker up. The
CHECKPOINT message that ends it carries the rest: once the parts are written (drained), the
checkpoint, its page map and the record that counts it commit in one transaction, the requests
it merged are answered and `on_commit` (replication) hears of it. A migration's final
checkpoint is answered before it commits (`Uncommitted`): it is pushed while it is written.

Checkpoints go to a `CheckpointSink` (LMDB's is `store.checkpoints.PageStore`); every call
into it is in `_put_frames` and `_commit`, one each.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from roost.daemon import faults
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.frames import PAGE_BYTES
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.checkpoint.transfer import CheckpointSink, Commit, Uncommitted
from roost.daemon.errors import StoreError
from roost.daemon.executions import requests
from roost.daemon.executions.running import Live
from roost.daemon.faults import Fault
from roost.daemon.lazy import numpy as np  # (on first use: roostd serves before)
from roost.daemon.link import messages as msg
from roost.daemon.node import metrics
from roost.daemon.store.records import ExecutionRecord

log = logging.getLogger(__name__)
STREAM_DEPTH = 2       # checkpoint parts received but not yet written, per execution


class Committer:
    """Writes the checkpoints of every execution of this daemon into `pages`."""

    def __init__(self, sink: CheckpointSink, retain: int) -> None:
        self.sink = sink
        self.retain = max(1, retain)
        # Called after every committed checkpoint (replication).
        self.on_commit: Callable[[ExecutionRecord, int], None] = lambda record, number: None
        # A checkpoint's request was held past the safepoint budget by an uninstrumented
        # function: (module digest, mode, its name) to the module registry, which instruments
        # it at the module's next preparation (`ModuleRegistry.note_slow_function`).
        self.on_held: Callable[[str, str, str], None] = lambda digest, mode, name: None
        self.committed = 0                  # checkpoints committed by this daemon (fault points)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roost-pages")

    # ---- the sink: one call each ----
    def _put_frames(self, exec_id: str, number: int, first: int,
                    frames: list[bytes | memoryview]) -> None:
        self.sink.put_frames(exec_id, number, first, frames)

    def _commit(self, commit: Commit) -> Manifest:
        return self.sink.commit(commit)

    # ---- streamed parts ----
    def store_pages(self, live: Live, part: msg.Pages) -> None:
        """A part of a checkpoint's frames, written now (uncommitted) while the worker
        compresses the next part."""
        number, first = part.number, part.first_frame
        if first != (live.streamed[1] if live.streamed[0] == number else 0):
            raise StoreError(f"checkpoint {number}: pages from frame {first} arrived out of order")
        while len(live.writes) >= STREAM_DEPTH:       # backpressure: the worker's send waits
            live.writes.pop(0).result()
        live.writes.append(self._writer.submit(self._put_frames, live.record.id, number,
                                               first, list(part.frames)))
        live.streamed = (number, first + len(part.frames))

    def drain(self, live: Live) -> None:
        """Wait for the parts being written; the first failure (StoreError) is raised."""
        writes, live.writes = live.writes, []
        for write in writes:
            write.result()

    def abandon(self, live: Live) -> None:
        """The worker ended: parts of an unfinished checkpoint are written (and discarded at
        the next start) before it starts, whatever became of them."""
        for write in live.writes:
            write.exception()
        live.writes = []

    # ---- the commit ----
    def commit(self, live: Live, ckpt: msg.Checkpoint) -> None:
        """Commit the checkpoint a CHECKPOINT message ends (the output before it is stored)."""
        record, number = live.record, ckpt.manifest.number
        drain_began = time.monotonic()
        self.drain(live)
        stats = dataclasses.replace(ckpt.stats, drain_seconds=time.monotonic() - drain_began)
        streamed = live.streamed[1] if live.streamed[0] == number else 0
        live.streamed = (0, 0)
        frames = list(ckpt.frames)
        manifest = dataclasses.replace(ckpt.manifest, frames=streamed + len(frames))
        stored, zeroed = np.frombuffer(ckpt.stored, "<u4"), np.frombuffer(ckpt.zeroed, "<u4")
        page_map, delta = pagemap.successor(live.page_map, number,
                                            manifest.memory_bytes // PAGE_BYTES, stored, zeroed)
        record.checkpoints += 1
        uncommitted = None
        if manifest.reason == "migrate":          # pushed while it is written: answer now
            # (bytes: from a big frame of the worker's they are views, protobuf wants bytes)
            uncommitted = Uncommitted(record.id, number, manifest, page_map, bytes(ckpt.host),
                                      bytes(ckpt.stack), frames, streamed, record.to_json(),
                                      frozenset(page_map.referenced()), stats=stats)
            requests.answer(live, {**manifest.to_dict(stats), "uncommitted": uncommitted},
                            only=live.migrate_request)
        try:
            as_stored = self._commit(Commit(record, manifest, ckpt.host, ckpt.stack, page_map,
                                         delta, frames, streamed, self.retain,
                                         manifest.wake_at_ns,
                                         uncommitted.referenced if uncommitted else None,
                                         hurry=uncommitted is not None, stats=stats))
        except Exception as e:            # (any failure: a push waits on `committed`)
            record.checkpoints -= 1
            if uncommitted is not None:
                uncommitted.committed.set_exception(e)
            raise
        if uncommitted is not None:
            uncommitted.committed.set_result(None)
        live.page_map = page_map
        live.wake_at_ns = manifest.wake_at_ns
        self._count(manifest.reason, manifest.memory_bytes, stats)
        requests.answer(live, as_stored.to_dict(stats))    # as stored (the sink completed it)
        self.on_commit(record, number)
        if stats.held_by:
            self._held(record, number, stats)

    def _held(self, record: ExecutionRecord, number: int, stats: CheckpointStats) -> None:
        """Log who held the checkpoint's request too long, and tell the module registry (its
        failure is logged: the checkpoint is committed whatever becomes of the note)."""
        log.info("execution %s: checkpoint %d waited %.1f ms for a safepoint, held by %s "
                 "(uninstrumented)", record.id, number,
                 (stats.time_to_safepoint_seconds or 0.0) * 1e3, stats.held_by)
        try:
            self.on_held(record.module_sha256, "coop" if record.cooperative else "preempt",
                         str(stats.held_by))
        except Exception:   # noqa: BLE001 - an optimisation's failure is not the checkpoint's
            log.exception("execution %s: noting the function that held checkpoint %d",
                          record.id, number)

    def _count(self, reason: str, memory_bytes: int, stats: CheckpointStats) -> None:
        """Metrics of a committed checkpoint, and the fault point that counts them."""
        metrics.CHECKPOINT_WAIT.observe(stats.waited_seconds or 0.0)
        metrics.CHECKPOINT_BYTES.labels(kind="dirty").inc((stats.dirty_pages or 0) * PAGE_BYTES)
        self.committed += 1
        if self.committed == faults.value(Fault.DAEMON_DIE_AFTER_CHECKPOINTS):
            faults.crash(Fault.DAEMON_DIE_AFTER_CHECKPOINTS)
        metrics.CHECKPOINTS.labels(reason=reason).inc()
        metrics.CHECKPOINT_PAUSE.observe(stats.pause_seconds or 0.0)
        metrics.TIME_TO_SAFEPOINT.observe(stats.time_to_safepoint_seconds or 0.0)
        metrics.CHECKPOINT_BYTES.labels(kind="memory").inc(memory_bytes)
        metrics.CHECKPOINT_BYTES.labels(kind="stored").inc(stats.stored_bytes or 0)
