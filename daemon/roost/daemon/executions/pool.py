"""Worker processes: spawning them, and keeping spares warm.

Every worker is spawned from one long-lived thread, because a worker asks the kernel to kill it
when its parent *thread* exits (PR_SET_PDEATHSIG); a gRPC handler thread would be the wrong
parent. Spare workers have already imported wasmtime and built their engine, so taking one makes
an execution start in milliseconds.

This module imports nothing heavy (metrics are imported when first counted): roostd's entry
point (`main`) spawns the first spares with it before its own imports, so that after a restart
the executions it recovers find warm workers.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from roost.daemon.errors import LimitExceeded
from roost.daemon.link.transport import Link

log = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    link: Link

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


LINK_BUFFER_BYTES = 4 << 20     # the kernel caps it at net.core.wmem_max


def _metrics():
    """The metrics module, imported when first needed (prometheus_client is slow to import)."""
    from roost.daemon.node import metrics
    return metrics


def spawn() -> WorkerProcess:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Room for a checkpoint's last pages (or a standby's APPLY) in the socket itself: the
    # sender goes on at once instead of waiting, part by part, for the reader to drain it.
    for end in (parent, child):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER_BYTES)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "roost.daemon.runtime.worker", str(child.fileno())],
                                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                close_fds=True)
    finally:
        child.close()
    _oom_first(proc.pid)
    return WorkerProcess(proc, Link(parent))


WORKER_OOM_SCORE_ADJ = 500


def _oom_first(pid: int) -> None:
    """Makes a worker the kernel OOM killer's choice before roostd: a guest that outgrows the
    memory limit then takes down its own worker (one execution FAILED, `node.oom`), never the
    daemon with every other execution. Raising a score needs no privilege (DynamicUser too)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(WORKER_OOM_SCORE_ADJ))


class WorkerPool:
    """Hands out worker processes; keeps `spares` idle ones ready."""

    def __init__(self, spares: int, started: list[WorkerProcess] | None = None) -> None:
        """`started`: spares spawned already (by roostd's entry point, at its very start);
        the pool keeps them and spawns the rest of `spares`."""
        self.spares = spares
        self._ready: queue.Queue[WorkerProcess] = queue.Queue()
        self._requests: queue.Queue[queue.Queue | None] = queue.Queue()
        self._thread = threading.Thread(target=self._spawner, name="worker-spawner", daemon=True)
        self._closed = False
        self._surplus = 0                # workers `warm` asked for beyond the spares
        self._lock = threading.Lock()
        self._thread.start()
        for worker in started or ():
            _metrics().WORKER_STARTS.inc()
            self._ready.put(worker)
        for _ in range(spares - len(started or ())):
            self._requests.put(self._ready)

    def warm(self, n: int) -> None:
        """Have `n` workers ready or warming up now (recovery: one per execution to resume,
        so none of them waits for a cold worker); those beyond the configured spares are not
        replaced when taken."""
        extra = max(0, n - self._ready.qsize())
        with self._lock:
            self._surplus += extra
        for _ in range(extra):
            self._requests.put(self._ready)

    def _replace(self) -> None:
        """A spare was taken: spawn its replacement, unless it was one `warm` added."""
        with self._lock:
            if self._surplus > 0:
                self._surplus -= 1
                return
        self._requests.put(self._ready)

    def take(self, timeout: float = 30.0) -> WorkerProcess:
        """A started worker waiting for START; a spare if one is ready."""
        try:
            worker = self._ready.get_nowait()
            if worker.proc.poll() is not None:      # a spare that died idle
                worker.link.close()
                raise queue.Empty
        except queue.Empty:
            reply: queue.Queue[WorkerProcess] = queue.Queue()
            self._requests.put(reply)
            worker = reply.get(timeout=timeout)
            if isinstance(worker, Exception):
                raise LimitExceeded(f"cannot start a worker process: {worker}")
        else:
            self._replace()                          # replace the spare we took
        return worker

    def _spawner(self) -> None:
        while True:
            reply = self._requests.get()
            if reply is None:
                return
            try:
                reply.put(spawn())
                _metrics().WORKER_STARTS.inc()
            except OSError as e:
                log.error("cannot start a worker process: %s", e)
                _metrics().WORKER_FAILURES.labels(reason="spawn").inc()
                if reply is not self._ready:
                    reply.put(e)

    def close(self) -> None:
        """Stop spawning; idle spares see EOF on their socket and exit."""
        self._requests.put(None)
        self._thread.join(timeout=5)
        while True:
            try:
                worker = self._ready.get_nowait()
            except queue.Empty:
                return
            worker.link.close()
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
