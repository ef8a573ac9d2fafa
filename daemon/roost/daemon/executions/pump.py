"""The frame pump: one thread per worker reads its frames and hands each to whom it concerns.

Each frame is read as its typed message (`link.messages`) and dispatched by its class, but for
OUTPUT and JOURNAL, the hot kinds, taken as the transport parsed them. Those of one read gather
into a burst for the output writer; PAGES and CHECKPOINT go to
the checkpoint committer — the burst received before a CHECKPOINT is stored first, so a
checkpoint never covers output or journal records the store does not hold; READY, APPLIED and
STATS change the `Live` itself; END ends the read. Whatever way the pump stops (the
END, the worker gone, the store full, the output quota, a bug) the worker's end is handed to
the `finish` it was started with, so no execution is ever left without an outcome.
"""
from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from roost.daemon.errors import OutputQuotaExceeded, StoreError
from roost.daemon.executions import outbound
from roost.daemon.executions.committer import Committer
from roost.daemon.executions.output import Burst, OutputWriter
from roost.daemon.executions.running import OUTPUT_QUOTA, STORE_FAILED, Live, count_calls, send_signal
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import JOURNAL, OUTPUT, Frame
from roost.daemon.node import metrics

log = logging.getLogger(__name__)


class ReplayStream(Protocol):
    """The journal a worker replays, streamed to it (`launcher.JournalStream`)."""

    def start(self) -> None: ...

    def more(self, chunks: int) -> None: ...

    def stop(self) -> None: ...


class Pump:
    """Reads the frames of every worker of this daemon (a thread each)."""

    def __init__(self, output: OutputWriter, committer: Committer) -> None:
        self.output = output
        self.committer = committer
        self.streams: dict[int, ReplayStream] = {}     # id(live) -> its journal being replayed

    def start(self, live: Live, name: str, finish: Callable[[Live, msg.End | None], None],
              stream: ReplayStream | None = None) -> None:
        """A thread that pumps `live`'s frames until its worker ends, then `finish`es it (its
        END frame, None if it sent none). `stream`: the journal it replays, sent as the
        worker asks for it (REPLAY_MORE), stopped when the worker ends."""
        if stream is not None:
            self.streams[id(live)] = stream
            stream.start()

        def pump() -> None:
            try:
                end = self.run(live)
            finally:
                gone = self.streams.pop(id(live), None)
                if gone is not None:
                    gone.stop()
            finish(live, end)
        threading.Thread(target=pump, name=name, daemon=True).start()

    def run(self, live: Live) -> msg.End | None:
        """Absorb frames until END (returned); None when the worker went without one or the
        pump stopped it (its `end_reason` says why)."""
        end: msg.End | None = None
        try:
            while end is None:
                frames = live.worker.link.read_batch()
                if frames is None:
                    break
                end = self.absorb(live, frames)
        except StoreError as e:  # disk or map full: stop the guest, lose nothing, pause
            log.error("%s: %s: pausing the execution", live.record.id, e)
            live.end_reason = f"{STORE_FAILED}: {e}"
            send_signal(live.worker, signal.SIGKILL)
            end = None
        except OutputQuotaExceeded as e:   # its output quota: the same pause, another reason
            log.warning("%s: %s", live.record.id, e)
            live.end_reason = f"{OUTPUT_QUOTA}: {e}"
            send_signal(live.worker, signal.SIGKILL)
            end = None
        except Exception:       # never leave an execution without an outcome
            log.exception("pump of %s failed", live.record.id)
            live.end_reason = live.end_reason or "internal error in the supervisor (see roostd log)"
            send_signal(live.worker, signal.SIGKILL)
        return end

    def absorb(self, live: Live, frames: list[Frame]) -> msg.End | None:
        """One read's frames, in order; the END among them, if any."""
        burst = Burst()
        end: msg.End | None = None
        for frame in frames:
            # The hot kinds, one frame per guest write or journaled call, are taken as the
            # transport parsed them: a record for each would cost more than its store write.
            if frame.kind == JOURNAL:
                burst.records.append(frame.data)
                continue
            if frame.kind == OUTPUT:
                self.output.output(live, frame, burst)
                continue
            match msg.decode(frame):
                case msg.Pages() as part:
                    self.committer.store_pages(live, part)
                case msg.Checkpoint() as ckpt:
                    burst = self.output.flush(live, burst)    # what preceded it is durable first
                    self.committer.commit(live, ckpt)
                case msg.Ready() as ready:
                    _ready(live, ready)
                case msg.Stats(calls=calls):
                    count_calls(live, calls)
                case msg.Sync(n=n):                         # a guest's request is about to leave
                    burst = self.output.flush(live, burst)
                    self.output.when_durable(live, functools.partial(_synced, live, n))
                case msg.HttpEvent(event=event):
                    outbound.observe(live, event)
                case msg.ReplayMore(chunks=chunks):          # its replay took a chunk
                    stream = self.streams.get(id(live))
                    if stream is not None:
                        stream.more(chunks)
                case msg.Applied(number=number):            # a standby applied a checkpoint
                    with live.changed:
                        live.holds = number
                        live.changed.notify_all()
                case msg.End() as end:
                    pass
        self.output.flush(live, burst)
        return end


def _synced(live: Live, n: int) -> None:
    """SYNCED: the journal up to SYNC `n` is durable (any thread: the link's send is locked)."""
    try:
        live.worker.link.send_message(msg.Synced(n))
    except OSError:
        pass             # the worker is gone: its next one replays the request


def _ready(live: Live, ready: msg.Ready) -> None:
    """The worker restored its checkpoint (a standby: its first one) or started the guest."""
    if live.standby:
        with live.changed:
            live.holds = live.applied if not live.holds else live.holds
            live.changed.notify_all()
        return
    with live.changed:                   # (a request waiting for the worker sees both)
        live.checkpointable = ready.checkpointable
        live.running = True
        live.changed.notify_all()
    metrics.START_SECONDS.observe(time.monotonic() - live.requested_at)
    live.record.dirty_tracker = ready.tracker
    if ready.restore_seconds:
        live.record.restore_seconds = ready.restore_seconds
        metrics.RESTORE_SECONDS.observe(ready.restore_seconds)
