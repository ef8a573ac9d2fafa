"""Standby workers: a live migration's target follows the checkpoints pushed to it.

The first checkpoint of an execution migrating here starts a worker that restores it and waits
(`launch`); each newer one is applied to it as the pages that changed (`apply`), so that at the
stop-and-copy only the last pages remain to be sent. The handover's COMMIT makes the standby the
running execution (`adopt`, `go`); an ABORT, or a migration that goes quiet, drops it.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:                               # (imported on first use: roostd serves before)
    from roost.daemon.lazy import numpy as np

from roost.daemon.checkpoint import journal, pagemap
from roost.daemon.checkpoint.manifest import Manifest
from roost.daemon.errors import NotFound, StateConflict
from roost.daemon.executions.launcher import Launcher
from roost.daemon.executions.lives import Lives
from roost.daemon.executions.pool import WorkerPool
from roost.daemon.executions.pump import Pump
from roost.daemon.executions.running import Live, reap, send_signal
from roost.daemon.executions.timers import Timers
from roost.daemon.link import messages as msg
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.node import metrics
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, State

log = logging.getLogger(__name__)


class Standbys:
    """exec id -> the standby worker holding a migrating execution's memory."""

    def __init__(self, store: Store, modules: ModuleRegistry, pages: PageStore, pool: WorkerPool,
                 lives: Lives, timers: Timers, launcher: Launcher, pump: Pump,
                 timeout_seconds: float = 120.0) -> None:
        self.store, self.modules, self.pages, self.pool = store, modules, pages, pool
        self.lives, self.timers, self.launcher, self.pump = lives, timers, launcher, pump
        self.timeout_seconds = timeout_seconds
        self._standby: dict[str, Live] = {}
        metrics.STANDBY_WORKERS.set_function(lambda: len(self._standby))

    def __contains__(self, exec_id: str) -> bool:
        return exec_id in self._standby

    def follow(self, exec_id: str, number: int, timeout: float = 120.0) -> None:
        """A checkpoint of an execution being migrated here has been stored: hand it to the
        standby worker that holds its memory (started now, from it, if there is none), and
        wait until it holds it — so a migration's next round starts from a standby that is
        ready, and its stop-and-copy only waits for the last pages."""
        live = self._standby.get(exec_id)
        if live is None:
            live = self._launch(exec_id, number)
        elif number > live.applied:
            self._apply(live, exec_id, number)
        with live.changed:
            live.changed.wait_for(lambda: live.holds >= number or not live.worker.alive(),
                                  timeout=timeout)
        live.touched = time.monotonic()

    def touch(self, exec_id: str) -> None:
        """Its migration is sending it something: the standby is not idle."""
        live = self._standby.get(exec_id)
        if live is not None:
            live.touched = time.monotonic()

    def apply_arrived(self, exec_id: str, number: int, memory_bytes: int,
                      page_map: pagemap.PageMap, arrived: dict[int, list[bytes]]) -> None:
        """A pushed checkpoint's pages, handed to the standby before they are stored, when
        they are all it lacks (else `follow` reads them from the store after)."""
        live = self._standby.get(exec_id)
        if live is None or number <= live.applied:
            return
        delta = pagemap.difference(live.page_map, page_map)
        new = _unsent_versions(live, delta)
        if not set(new) <= set(arrived):
            return
        frames = [(v, f) for v in new for f in arrived[v]]
        self._send_apply(live, number, memory_bytes, page_map, delta, frames, new)

    def _apply(self, live: Live, exec_id: str, number: int) -> None:
        page_map = self.pages.page_map(exec_id, number)
        manifest = self.pages.manifest(exec_id, number)
        if manifest is None:
            raise NotFound(f"checkpoint {number} of {exec_id} is gone")
        delta = pagemap.difference(live.page_map, page_map)
        new = _unsent_versions(live, delta)
        frames = [(v, f) for v in new for _, f in self.pages.iter_frames(exec_id, v)]
        self._send_apply(live, number, manifest.memory_bytes, page_map, delta, frames, new)

    def _send_apply(self, live: Live, number: int, memory_bytes: int, page_map: pagemap.PageMap,
                    delta: pagemap.Delta, frames: list[tuple[int, bytes]], new: list[int]) -> None:
        """The pages whose version changed since the standby's map, as a delta."""
        apply = msg.Apply(number, memory_bytes, pagemap.encode_delta(page_map.pages, delta),
                          tuple(v for v, _ in frames), tuple(f for _, f in frames))
        try:
            live.worker.link.send_message(apply)
        except OSError:
            return                               # it died: its END frame cleans it up
        live.applied, live.page_map = number, page_map
        live.applied_versions |= set(new)

    def _launch(self, exec_id: str, number: int) -> Live:
        record = self.store.get_execution(exec_id)
        saved = self.pages.load(exec_id, number)      # (restored into the variant it was taken in)
        artifact, manifest = self.modules.ensure_artifact(record.module_sha256, not record.cooperative,
                                                          wait=True, instrument=saved.manifest.instrumented)
        worker = self.pool.take()
        live = Live(record, worker, requested_at=time.monotonic(), launched_at=time.monotonic(),
                    standby=True, applied=number, touched=time.monotonic())
        start = self.launcher.start_message(record, artifact, manifest, saved, [], live, standby=True)
        with self.lives.lock:
            self._standby[exec_id] = live
        self.pump.start(live, f"standby-{exec_id}", self._finish)
        threading.Thread(target=self._expire, args=(live,), name=f"standby-expiry-{exec_id}",
                         daemon=True).start()
        worker.link.send_message(start)
        return live

    def _finish(self, live: Live, end: msg.End | None) -> None:
        """A standby's worker ended; one that went live (`go`) ends as a running execution."""
        if not live.standby:
            self.launcher.finish(live, end)
            return
        with self.lives.lock:                # a standby that never ran: the record is a replica's
            if self._standby.get(live.record.id) is live:
                self._standby.pop(live.record.id)
        live.worker.link.close()
        reap(live.worker)

    def _expire(self, live: Live) -> None:
        """A standby whose migration sent nothing for `timeout_seconds` goes: its source
        died or gave up and its ABORT never came, and it holds as much memory as the guest. A
        COMMIT that still comes restores the execution from the store instead (`adopt`)."""
        exec_id = live.record.id
        while self._standby.get(exec_id) is live:
            idle = time.monotonic() - live.touched
            if idle >= self.timeout_seconds:
                log.warning("%s: standby idle for %.0f s (no migration round): dropped", exec_id, idle)
                self.drop(exec_id, only=live)
                return
            time.sleep(min(1.0, self.timeout_seconds - idle))

    def drop(self, exec_id: str, only: Live | None = None) -> None:
        """A migration here was aborted (or went quiet): its standby worker goes."""
        with self.lives.lock:
            live = self._standby.get(exec_id)
            if live is None or only not in (None, live):
                return
            del self._standby[exec_id]
        live.end_reason = "standby dropped"
        send_signal(live.worker, signal.SIGKILL)

    def adopt(self, exec_id: str, epoch: int, number: int) -> float:
        """This daemon is the execution's owner from now on, at `epoch` (a handover's COMMIT):
        run it from checkpoint `number` — on the standby worker that already holds its memory
        when there is one, else in a fresh worker restored from the store. Seconds until it
        runs again."""
        began = time.monotonic()
        record = self.store.get_execution(exec_id)
        node_id = self.lives.node_id
        record.owner, record.epoch, record.owner_address = node_id, epoch, self.lives.address
        record.prepared, record.node_id, record.error = "", node_id, ""
        self.launcher.claimed(record)
        ckpt = self.pages.latest(exec_id)
        if ckpt is None or ckpt.number != number:
            raise StateConflict(f"execution {exec_id}: checkpoint {number} is not the latest here")
        if ckpt.reason == "sleep":               # a durable sleep: its timer wakes it here
            self._drop_and_store(exec_id, record, State.SLEEPING)
            self.timers.add(exec_id, ckpt.wake_at_ns)
            return time.monotonic() - began
        if ckpt.reason == "pause" and record.state == State.PAUSED:
            self._drop_and_store(exec_id, record, State.PAUSED)
            return time.monotonic() - began
        live = self._standby.get(exec_id)
        if live is not None:
            self.follow(exec_id, number)
        if live is not None and live.applied == number and live.worker.alive():
            self._go(live, record, ckpt)
        else:
            self._drop_and_store(exec_id, record, record.state)
            self.launcher.launch(record, restore=True, requested=began)
        return time.monotonic() - began

    def _drop_and_store(self, exec_id: str, record: ExecutionRecord, state: State) -> None:
        self.drop(exec_id)
        record.state = state
        self.store.put_execution(record)

    def _go(self, live: Live, record: ExecutionRecord, ckpt: Manifest) -> None:
        """The standby becomes the running execution (the checkpoint it holds is the last)."""
        host, stack = self.pages.host_state(record.id, ckpt.number), self.pages.stack(record.id, ckpt.number)
        replay = self.store.read_journal(record.id, ckpt.journal_seq)
        next_seq = self.store.next_seq("logs", record.id)
        journal_seq = max(self.store.next_seq("journal", record.id), ckpt.journal_seq)
        live.record, live.standby = record, False
        live.next_seq, live.journal_seq = next_seq, journal_seq
        live.launch_mark = (next_seq, journal_seq, record.checkpoints)
        live.durable = {1: record.stdout_bytes, 2: record.stderr_bytes}
        record.state, record.worker_pid = State.RUNNING, live.worker.pid
        self.lives.add(live, leaving=lambda: self._standby.pop(record.id, None))
        # Run first, record after (off the handover's path): a crash in between finds the
        # handover prepared, asks the source again and takes it over from the same checkpoint.
        live.worker.link.send_message(msg.Go(ckpt, host, stack, journal.pack_many(replay)))
        self.launcher.on_launch(live)
        threading.Thread(target=self.store.put_execution, args=(record,), daemon=True).start()
        with live.changed:                       # the handover ends with the guest running
            live.changed.wait_for(lambda: live.running or not live.worker.alive(), timeout=30)


def _unsent_versions(live: Live, delta: pagemap.Delta) -> list[int]:
    """The versions a standby needs frames of to apply `delta`: a page whose version changed
    since the map it holds now comes from a newer checkpoint (or from none: zeros), so these
    are the delta's versions it was not sent yet — found without counting the whole map."""
    return sorted(set(np.unique(delta[:, 1]).tolist()) - live.applied_versions - {0})
