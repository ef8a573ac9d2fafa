"""Where a guest's output and journal records go: to the supervisor, over the link.

`JournalSink` batches journal records and knows the journal position; `Output` tags each write
with its offset in its stream and never overtakes the journal records before it.
"""
from __future__ import annotations

import threading

from roost.daemon.checkpoint.journal import Replay
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import Link

JOURNAL_BATCH_BYTES = 64 << 10


class JournalSink:
    """Batches journal records and knows the journal position (replayed + recorded).

    A record only has to reach the store before anything that may depend on it leaves the
    worker — output, a checkpoint, the end — so records wait here until one of those (or
    JOURNAL_BATCH_BYTES, or the stats tick) flushes them: one write for many clock reads.
    A crash loses only records nothing outside has seen; replay asks the world again."""

    def __init__(self, link: Link, replay: Replay) -> None:
        self.link = link
        self.replay = replay
        self.recorded = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._syncs = 0                        # SYNCs sent
        self._synced = 0                       # ... and answered
        self._answered = threading.Condition()
        self.closed = False                    # the supervisor is gone: nobody will answer

    def __call__(self, raw: bytes) -> None:
        with self._lock:
            self._pending.append(raw)
            self._pending_bytes += len(raw)
            self.recorded += 1
            full = self._pending_bytes >= JOURNAL_BATCH_BYTES
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            self.link.send_journal(batch)     # under the lock: batches stay in order

    def sync(self) -> None:
        """Flush, and wait until the supervisor has stored every record so far — and its
        replicas hold them, per `replication.ack`: the guest's HTTP request leaves only then.
        Raises BrokenPipeError when the supervisor went away (the worker is ending)."""
        with self._lock:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            if batch:
                self.link.send_journal(batch)
            self._syncs += 1
            n = self._syncs
            self.link.send_message(msg.Sync(n))
        with self._answered:
            self._answered.wait_for(lambda: self._synced >= n or self.closed)
            if self._synced < n:
                raise BrokenPipeError("the supervisor went away before the journal was durable")

    def synced(self, n: int) -> None:
        """SYNCED `n` arrived (the control thread)."""
        with self._answered:
            self._synced = max(self._synced, n)
            self._answered.notify_all()

    def close(self) -> None:
        with self._answered:
            self.closed = True
            self._answered.notify_all()

    @property
    def position(self) -> int:
        return self.replay.first_seq + self.replay.pos + self.recorded


class Output:
    """Guest stdout/stderr to the supervisor, each write tagged with its offset in its stream.
    A recovering guest writes again what is already stored: below the `durable` offsets (START
    gives them) that output is dropped here and never crosses the link again (`repeated` counts
    the writes dropped). Journal records still buffered go first: output never overtakes what
    it may depend on."""

    def __init__(self, link: Link, stdout_offset: int, stderr_offset: int,
                 journal: JournalSink, durable: tuple[int, int] = (0, 0)) -> None:
        self.link = link
        self.journal = journal
        self.offsets = {1: stdout_offset, 2: stderr_offset}
        self.durable = {1: durable[0], 2: durable[1]}
        self.repeated = 0

    def __call__(self, fd: int, data: bytes) -> None:
        offset = self.offsets[fd]
        end = self.offsets[fd] = offset + len(data)
        stored = self.durable[fd]
        if offset < stored:
            if end <= stored:
                self.repeated += 1
                return
            data, offset = data[stored - offset:], stored
        self.journal.flush()
        self.link.send_output(fd, offset, data)
