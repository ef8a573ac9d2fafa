"""A running execution as the supervisor sees it: its worker, its stream positions, its
waiters, and the small rules about its worker process (signals, exit status, call counts).
Output dedup lives with the output writer (`output`)."""
from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.executions.pool import WorkerProcess
from roost.daemon.node import metrics
from roost.daemon.store.records import ExecutionRecord

# Why the supervisor stopped a worker (`Live.end_reason`), where the ending depends on it.
SHUTDOWN = "roostd is shutting down"
STORE_FAILED = "paused: the store could not take the execution's output"
SUPERSEDED = "another daemon owns the execution now"
OUTPUT_QUOTA = "paused: the execution's output reached its quota"


@dataclass
class Live:
    """A running execution: its worker, its next log sequence number, its waiters."""
    record: ExecutionRecord
    worker: WorkerProcess
    next_seq: int = 0                    # next log record
    journal_seq: int = 0                 # next journal record
    requested_at: float = 0.0
    launched_at: float = 0.0             # monotonic
    launch_mark: tuple = (0, 0, 0)       # (log seq, journal seq, checkpoints) at this worker's start
    barren_deaths: int = 0               # consecutive workers that died without new progress
    end_reason: str = ""                 # why the supervisor stopped the worker, if it did
    calls_seen: Counter = field(default_factory=Counter)
    durable: dict = field(default_factory=dict)   # fd -> bytes of that stream already stored
    checkpointable: bool = False
    wake_at_ns: int = 0                  # the latest checkpoint was taken for a durable sleep
    page_map: PageMap = field(default_factory=PageMap)   # of the latest committed checkpoint
    streamed: tuple[int, int] = (0, 0)   # (checkpoint, frames received) of one being streamed
    writes: list = field(default_factory=list)   # futures of its parts being written
    standby: bool = False                # a live migration's target, not running yet
    applied: int = 0                     # standby: the checkpoint its memory holds
    applied_versions: set = field(default_factory=set)   # standby: versions sent to it
    holds: int = 0                       # standby: the checkpoint its memory holds (acknowledged)
    touched: float = 0.0                 # standby: when its migration last sent it anything (monotonic)
    running: bool = False                # its guest runs (READY after START, or after GO)
    requests: dict = field(default_factory=dict)  # request id -> checkpoint result (None: pending)
    next_request: int = 0
    migrate_request: int = 0             # the request of a migration's final checkpoint
    http_in_flight: str = ""             # the guest's HTTP request being sent ("": none)
    changed: threading.Condition = field(default_factory=threading.Condition)


def worker_pid(live: Live | None) -> int:
    """The pid of the worker running the execution now; 0 when none does (ended, paused,
    sleeping, a standby, or a worker that died before its replacement started): what
    `roost inspect` shows, never a stale pid."""
    if live is None or live.standby or not live.worker.alive():
        return 0
    return live.worker.pid


def count_calls(live: Live, calls: Mapping[str, int]) -> None:
    """The worker's host-call totals (STATS, END): the metrics grow by what is new since the
    last report; the record keeps the sum."""
    for name, total in calls.items():
        delta = total - live.calls_seen[name]
        if delta > 0:
            metrics.HOST_CALLS.labels(function=name).inc(delta)
            live.calls_seen[name] = total
    live.record.host_calls = sum(live.calls_seen.values())


def send_signal(worker: WorkerProcess, sig: int) -> None:
    try:
        worker.proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def reap(worker: WorkerProcess) -> int | None:
    try:
        return worker.proc.wait(timeout=10)
    except Exception:
        send_signal(worker, signal.SIGKILL)
        return worker.proc.wait()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"
