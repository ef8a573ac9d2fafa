"""Guest output and journal records, made durable: the output writer of the pump.

The pump gathers the OUTPUT and JOURNAL frames of one read into a `Burst` and the writer
commits the burst in one LMDB transaction — before any checkpoint that followed them in the
stream commits, so a checkpoint never covers output or journal records that are not stored.
Output a restored guest repeats (it reruns from its restore point) is recognised by its stream
offset and not stored twice; the stored total is held to the configured quota.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.daemon.errors import OutputQuotaExceeded, StoreError
from roost.daemon.executions.running import Live
from roost.daemon.link.transport import Frame
from roost.daemon.node import metrics
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord

log = logging.getLogger(__name__)
MAX_LOG_RECORD_BYTES = 1 << 20


def fresh_output(live: Live, frame: Frame) -> bytes:
    """The part of an OUTPUT frame not yet stored: a restored guest repeats what it wrote
    after its restore point, and that must not reach the log twice."""
    stored = live.durable[frame.fd]
    end = frame.offset + len(frame.data)
    if end <= stored:
        return b""
    if frame.offset > stored:
        log.error("%s: output gap on fd %d (%d stored, frame at %d)", live.record.id, frame.fd,
                  stored, frame.offset)
    live.durable[frame.fd] = end
    return frame.data[max(0, stored - frame.offset):]


def merge_output(outputs: list[tuple[int, bytes]], fd: int, data: bytes) -> None:
    """Coalesce consecutive writes to one stream into one log record (bounded size)."""
    if outputs and outputs[-1][0] == fd and len(outputs[-1][1]) + len(data) <= MAX_LOG_RECORD_BYTES:
        outputs[-1] = (fd, outputs[-1][1] + data)
    else:
        outputs.append((fd, data))


@dataclass
class Burst:
    """Output records (fd, data) and journal records received since the last write."""
    outputs: list[tuple[int, bytes]] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outputs or self.records)


class OutputWriter:
    """Appends bursts of an execution's output and journal records to the store."""

    def __init__(self, store: Store, output_limit_bytes: int = 0) -> None:
        self.store = store
        self.output_limit_bytes = output_limit_bytes   # stored stdout + stderr (0: no quota)
        # Called after every stored burst with (record, logs, journal) stored so far: the
        # replicas' shipping (`cluster.shipping`).
        self.on_append: Callable[[ExecutionRecord, int, int], None] = lambda r, logs, journal: None
        # Calls `done` once the first `journal` records of the execution count as durable: stored
        # here, and held by its replicas per replication.ack (`cluster.shipping`). A guest's HTTP
        # request waits for it before it leaves.
        self.on_durable: Callable[[ExecutionRecord, int, Callable[[], None]], None] = \
            lambda record, journal, done: done()

    def output(self, live: Live, frame: Frame, burst: Burst) -> None:
        """An OUTPUT frame: what of it is new joins the burst."""
        data = fresh_output(live, frame)
        if data:
            merge_output(burst.outputs, frame.fd, data)

    def flush(self, live: Live, burst: Burst) -> Burst:
        """Commit the burst, if it holds anything; an empty burst to go on with."""
        if burst:
            self.append(live, burst.outputs, burst.records)
        return Burst()

    def append(self, live: Live, outputs: list[tuple[int, bytes]], records: list[bytes]) -> None:
        """Commit a burst of journal records and output. The record's counters (what dedup
        trusts after a restore) change only if the commit does."""
        record = live.record
        self.check_quota(record, outputs)
        before = (record.stdout_bytes, record.stderr_bytes, record.journal_records)
        record.stdout_bytes += sum(len(d) for fd, d in outputs if fd == 1)
        record.stderr_bytes += sum(len(d) for fd, d in outputs if fd != 1)
        record.journal_records = live.journal_seq + len(records)
        try:
            self.store.append(record, live.next_seq, outputs, live.journal_seq, records)
        except StoreError:
            record.stdout_bytes, record.stderr_bytes, record.journal_records = before
            raise
        for fd, data in outputs:
            metrics.LOG_BYTES.labels(stream="stdout" if fd == 1 else "stderr").inc(len(data))
        metrics.JOURNAL_RECORDS.inc(len(records))
        with live.changed:
            live.journal_seq += len(records)
            live.next_seq += len(outputs)
            live.changed.notify_all()
        self.on_append(record, live.next_seq, live.journal_seq)

    def when_durable(self, live: Live, done: Callable[[], None]) -> None:
        """`done()` once every journal record stored so far is durable (see `on_durable`)."""
        self.on_durable(live.record, live.journal_seq, done)

    def check_quota(self, record: ExecutionRecord, outputs: list[tuple[int, bytes]]) -> None:
        """OutputQuotaExceeded when this burst would take the stored output past the quota: nothing
        of it is stored, and the execution pauses (the pump) until the quota is raised."""
        total = record.stdout_bytes + record.stderr_bytes + sum(len(d) for _, d in outputs)
        if self.output_limit_bytes and total > self.output_limit_bytes:
            raise OutputQuotaExceeded(
                f"execution {record.id} would store {total} bytes of stdout and stderr, over "
                f"its quota of {self.output_limit_bytes} (limits.output_bytes): raise "
                f"[limits] output_bytes in roostd's config, restart roostd, then "
                f"`roost resume {record.id}`")
