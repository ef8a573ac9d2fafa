"""The supervisor: owns the executions of this daemon and the worker running each one.

Per running execution a pump thread reads the worker's frames, makes guest output durable in
LMDB (one transaction per burst), and records the outcome. Everything a client can ask —
state, logs, files — is answered from the store, so an ended execution looks the same before
and after a daemon restart.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from roost.daemon import faults
from roost.daemon.checkpoint import hoststate
from roost.daemon.checkpoint import journal
from roost.daemon.node import metrics
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.frames import PAGE_BYTES
from roost.daemon.errors import (Corrupt, InvalidRequest, LimitExceeded, NotFound, OutputQuotaExceeded,
                     StateConflict, StoreError, TimedOut)
from roost.daemon.faults import Fault
from roost.daemon.executions.running import Live, describe_exit, fresh_output, merge_output, reap, send_signal
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.store.checkpoints import PageStore, Restore, Uncommitted
from roost.daemon.store.records import ExecutionRecord, State
from roost.daemon.store.db import Store
from roost.daemon.executions.timers import Timers
from roost.daemon.runtime.vfs import Entry, FsError, Vfs, VfsLimits
from roost.daemon.link.transport import (APPLIED, APPLY, CHECKPOINT, CONTROL, END, GO, JOURNAL, OUTPUT, PAGES, READY,
                         START, STATS, Frame)
from roost.daemon.executions.pool import WorkerPool

log = logging.getLogger(__name__)
STREAM_DEPTH = 2       # checkpoint parts received but not yet written, per execution
SHUTDOWN = "roostd is shutting down"
STORE_FAILED = "paused: the store could not take the execution's output"
OUTPUT_QUOTA = "paused: the execution's output reached its quota"
MAX_BARREN_DEATHS = 5   # workers in a row that die without making new progress: a crash loop


@dataclass
class StartSpec:
    """What a client asks to run (validated by the API layer's conversion)."""
    module_sha256: str
    argv: list[str]
    env: list[tuple[str, str]]
    stdin: bytes
    mounts: list[tuple[str, list[Entry]]]
    name: str = ""
    memory_limit_bytes: int = 0
    cooperative: bool = False
    checkpoint_every_seconds: float = 0.0


class Supervisor:
    def __init__(self, store: Store, modules: ModuleRegistry, pool: WorkerPool,
                 node_id: str, default_memory_limit_bytes: int,
                 durable_sleep_seconds: float = 2.0,
                 checkpoint_every_seconds: float = 0.0, checkpoint_retain: int = 2,
                 address: str = "", standby_timeout_seconds: float = 120.0,
                 vfs_limits: VfsLimits = VfsLimits(), output_limit_bytes: int = 0) -> None:
        self.store = store
        self.modules = modules
        self.pool = pool
        self.node_id = node_id
        self.address = address
        # Called after every committed checkpoint (replication), and when an execution stops
        # being this daemon's (waiters follow it to its new owner).
        self.on_commit: Callable[[ExecutionRecord, int], None] = lambda record, number: None
        self._standby: dict[str, Live] = {}
        self.standby_timeout_seconds = standby_timeout_seconds
        metrics.STANDBY_WORKERS.set_function(lambda: len(self._standby))
        self.default_memory_limit_bytes = default_memory_limit_bytes
        self.vfs_limits = vfs_limits                 # every execution's files (sent in START)
        self.output_limit_bytes = output_limit_bytes  # stored stdout + stderr (0: no quota)
        self._live: dict[str, Live] = {}
        self._lock = threading.Lock()
        self._ended = threading.Condition()   # notified whenever any execution ends
        self._stopping = False
        self.durable_sleep_seconds = durable_sleep_seconds
        self.checkpoint_every_seconds = checkpoint_every_seconds   # when a start gives none
        self.checkpoint_retain = max(1, checkpoint_retain)
        self._committed = 0                  # checkpoints committed by this daemon (fault points)
        self.timers = Timers(store, self._wake)
        self.pages = PageStore(store)
        # Streamed checkpoint parts are written here while the pump goes on receiving the next
        # part (the worker compresses a third meanwhile): receive, compress and the disk overlap.
        self._page_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roost-pages")

    # ---- lifecycle ----
    def recover(self) -> int:
        """Resume every execution a previous daemon left running, from its latest checkpoint and
        journal. PAUSED ones wait for `resume`; SLEEPING ones for their timer."""
        n = 0
        previous = self.store.node_id(self.node_id)     # this data dir's node, last time
        for record in self.store.list_executions():
            if record.owner in ("", previous) and (record.owner, record.owner_address) != \
                    (self.node_id, self.address):    # ours (renamed, moved, or from before
                record.owner, record.owner_address = self.node_id, self.address   # ownership)
                self.store.put_execution(record)
            if not self.owns(record) or record.migration:
                continue                         # a replica, or a migration (handover.recover)
            if record.state.ended or record.state in (State.PAUSED, State.SLEEPING):
                continue
            try:
                self._launch(record, restore=True, requested=time.monotonic())
                n += 1
            except Exception as e:
                log.exception("cannot resume execution %s", record.id)
                self._fail(record, f"could not be resumed: {e}")
        return n

    def owns(self, record: ExecutionRecord) -> bool:
        """This daemon runs `record`'s execution (nobody else may)."""
        return record.owner in ("", self.node_id)

    def _wake(self, exec_id: str) -> None:
        """A durable sleep's deadline: restore the guest inside the poll it slept in."""
        record = self.store.get_execution(exec_id)
        if not self.owns(record) or record.migration:
            return          # its new owner wakes it; or `take_back` sets the timer again
        if record.state == State.SLEEPING and exec_id not in self._live and not self._stopping:
            self._launch(record, restore=True, requested=time.monotonic())
        self.store.clear_timer(exec_id)

    def shutdown(self, grace_seconds: float = 10.0) -> None:
        """Stop every worker; their executions stay RUNNING in the store and resume when the
        daemon starts again."""
        self.timers.stop()
        with self._lock:
            self._stopping = True
            live = list(self._live.values())
        deadline = time.monotonic() + grace_seconds
        for ex in live:
            ex.end_reason = SHUTDOWN
            if not (ex.checkpointable and self._ask(ex, "suspend")):
                send_signal(ex.worker, signal.SIGKILL)
        with self._ended:     # a checkpoint each, then the workers exit
            self._ended.wait_for(lambda: not self._live, timeout=max(0.0, deadline - time.monotonic()) / 2)
        for ex in list(self._live.values()):
            send_signal(ex.worker, signal.SIGKILL)
        with self._ended:
            self._ended.wait_for(lambda: not self._live, timeout=max(0.0, deadline - time.monotonic()))

    def _fail(self, record: ExecutionRecord, error: str) -> None:
        record.state, record.error, record.exit_code = State.FAILED, error, -1
        record.finished_at = time.time()
        self.store.put_execution(record)

    # ---- start ----
    def start(self, spec: StartSpec) -> ExecutionRecord:
        if self._stopping:
            raise StateConflict("roostd is shutting down; not starting new executions")
        requested = time.monotonic()
        self._admit(spec.memory_limit_bytes or self.default_memory_limit_bytes)
        module = self.store.get_module(spec.module_sha256)
        self.modules.ensure_artifact(module.sha256, not spec.cooperative)
        vfs = self._mounted(spec.mounts)
        limit = spec.memory_limit_bytes or self.default_memory_limit_bytes
        record = ExecutionRecord(
            id=secrets.token_hex(6), name=spec.name, module_sha256=module.sha256,
            module_name=module.name, argv=spec.argv, env=spec.env,
            mounts=[m for m, _ in spec.mounts], created_at=time.time(),
            memory_limit_bytes=limit, cooperative=spec.cooperative,
            checkpoint_every_seconds=spec.checkpoint_every_seconds or self.checkpoint_every_seconds,
            node_id=self.node_id, owner=self.node_id, owner_address=self.address)
        self.store.create_execution(record, spec.stdin, vfs.to_bytes())
        try:
            self._launch(record, restore=False, requested=requested)
        except Exception as e:
            self._fail(record, f"could not start: {e}")
            raise
        log.info("started execution %s (%s)", record.id, module.name)
        return record

    def _mounted(self, mounts: list[tuple[str, list[Entry]]]) -> Vfs:
        """The initial filesystem: the mounts copied in. Refused (RESOURCE_EXHAUSTED, naming
        the limit) when they alone hold more than an execution's files may."""
        vfs = Vfs()
        try:
            for guest_path, entries in mounts:
                vfs.add_mount(guest_path, entries)
        except (FsError, ValueError) as e:
            raise InvalidRequest(f"mount: {str(e)[:200]}") from e
        used, lim = vfs.usage(), self.vfs_limits
        for what, have, cap, key in (("bytes of files", used.bytes, lim.bytes, "vfs_bytes"),
                                     ("inodes", used.inodes, lim.inodes, "vfs_inodes"),
                                     ("directory entries", used.names, lim.inodes, "vfs_inodes")):
            if have > cap:
                raise LimitExceeded(f"mounts hold {have} {what}; an execution may hold at most "
                                    f"{cap} (limits.{key} in roostd's config)")
        return vfs

    def _launch(self, record: ExecutionRecord, restore: bool, requested: float,
                barren_deaths: int = 0) -> None:
        """Give the execution a worker: fresh, or (restore) replaying its journal from the
        start so it recomputes exactly what it computed before."""
        artifact, manifest = self.modules.ensure_artifact(record.module_sha256, not record.cooperative)
        saved = self._restore_point(record) if restore else None
        ckpt = saved.manifest if saved else None
        if ckpt and ckpt.get("prepare_version") != manifest.get("prepare_version"):
            raise StateConflict(f"execution {record.id}: its checkpoint was taken from a module "
                                f"prepared by version {ckpt.get('prepare_version')}; this roostd "
                                f"prepares version {manifest.get('prepare_version')}")
        first = ckpt["journal_seq"] if ckpt else 0
        replay = self.store.read_journal(record.id, first) if restore else []
        if restore:                        # pages of a checkpoint a dead worker never finished
            self.pages.discard_after(record.id, ckpt["number"] if ckpt else 0)
        worker = self.pool.take()
        next_seq = self.store.next_seq("logs", record.id) if restore else 0
        # Never below the checkpoint's position: the commit that collected the journal before it
        # may have left none, and records stored below it would not be replayed after a crash.
        journal_seq = max(self.store.next_seq("journal", record.id), first) if restore else 0
        live = Live(record, worker, requested_at=requested, launched_at=time.monotonic(),
                    barren_deaths=barren_deaths, next_seq=next_seq, journal_seq=journal_seq,
                    launch_mark=(next_seq, journal_seq, record.checkpoints),
                    durable={1: record.stdout_bytes, 2: record.stderr_bytes})
        with self._lock:
            self._live[record.id] = live
        record.state, record.worker_pid = State.RUNNING, worker.pid
        if restore:
            record.restores += 1
            metrics.RESTORES.inc()
        else:
            record.started_at = time.time()
        self.store.put_execution(record)
        start, blobs = self._start_message(record, artifact, manifest, saved, replay, live)
        start["numbered_after"] = record.checkpoints      # past checkpoints dropped as corrupt
        worker.link.send(START, start, blobs)
        threading.Thread(target=self._pump, args=(live,), name=f"pump-{record.id}", daemon=True).start()

    def _restore_point(self, record: ExecutionRecord) -> Restore | None:
        """The newest retained checkpoint that reads back intact (None: there is none, replay
        the journal from the start). One found corrupt is dropped and the next older one
        restored instead: the journal is kept from the oldest retained checkpoint on, so replay
        recomputes the rest, and output already stored is not sent twice (`Live.durable`)."""
        dropped = None
        for number in self.pages.restorable(record.id):
            try:
                return self.pages.load(record.id, number)
            except Corrupt as e:
                dropped = e
                self.pages.drop_newest(record.id, number)
                note = f"checkpoint {number} is corrupt, restoring from an older one: {e}"
                log.warning("execution %s: %s", record.id, note)
                record.notes.append(note)
        if dropped is not None:
            raise Corrupt(f"execution {record.id}: no intact checkpoint is left ({dropped})")
        return None

    def _start_message(self, record: ExecutionRecord, artifact, manifest: dict,
                       saved: Restore | None, replay: list[bytes], live: Live) -> tuple[dict, list]:
        ckpt = saved.manifest if saved else None
        first = ckpt["journal_seq"] if ckpt else 0
        start = {"id": record.id, "artifact": str(artifact), "manifest": manifest,
                 "argv": record.argv, "env": record.env,
                 "memory_limit_bytes": record.memory_limit_bytes,
                 "checkpoint_every_seconds": record.checkpoint_every_seconds,
                 "durable_sleep_seconds": self.durable_sleep_seconds,
                 "vfs_limits": dataclasses.asdict(self.vfs_limits),
                 "journal_first_seq": first, "checkpoint": ckpt,
                 "stdout_offset": ckpt["stdout_offset"] if ckpt else 0,
                 "stderr_offset": ckpt["stderr_offset"] if ckpt else 0}
        blobs = [self.store.stdin(record.id), self.store.initial_vfs(record.id),
                 journal.pack_many(replay)]
        if saved:
            start["checkpoint"] = {**ckpt, "frame_versions": [v for v, _ in saved.frames]}
            blobs += [saved.host, saved.stack, pagemap.encode_full(saved.page_map),
                      *(f for _, f in saved.frames)]
            live.page_map = saved.page_map
            live.applied_versions = {v for v, _ in saved.frames}
        return start, blobs

    # ---- standbys: a live migration's target follows the checkpoints pushed to it ----
    def follow(self, exec_id: str, number: int, timeout: float = 120.0) -> None:
        """A checkpoint of an execution being migrated here has been stored: hand it to the
        standby worker that holds its memory (started now, from it, if there is none), and
        wait until it holds it — so a migration's next round starts from a standby that is
        ready, and its stop-and-copy only waits for the last pages."""
        live = self._standby.get(exec_id)
        if live is None:
            live = self._launch_standby(exec_id, number)
        elif number > live.applied:
            self._apply(live, exec_id, number)
        with live.changed:
            live.changed.wait_for(lambda: live.holds >= number or not live.worker.alive(),
                                  timeout=timeout)
        live.touched = time.monotonic()

    def touch_standby(self, exec_id: str) -> None:
        """Its migration is sending it something: the standby is not idle."""
        live = self._standby.get(exec_id)
        if live is not None:
            live.touched = time.monotonic()

    def is_running_here(self, exec_id: str, epoch: int) -> bool:
        """A worker runs the execution here as its owner at `epoch` (not one that a handover
        released and that has yet to exit)."""
        live = self._live.get(exec_id)
        return live is not None and live.record.epoch == epoch and self.owns(live.record)

    # Admission: what may run here at once (config limits.executions, limits.memory_total_bytes).
    max_executions: int = 1 << 30
    max_memory_total_bytes: int = 1 << 62

    def _admit(self, memory_limit_bytes: int) -> None:
        """Refuse a new execution that would run more executions, or commit more guest memory
        (their limits added up), than this daemon is configured to carry."""
        with self._lock:
            running = list(self._live.values())
        if len(running) >= self.max_executions:
            raise LimitExceeded(f"roostd runs {len(running)} executions, its most "
                                "(limits.executions): start it elsewhere or later")
        committed = sum(live.record.memory_limit_bytes for live in running)
        if committed + memory_limit_bytes > self.max_memory_total_bytes:
            raise LimitExceeded(f"a memory limit of {memory_limit_bytes} bytes on top of the "
                                f"{committed} its running executions may use is more than "
                                f"{self.max_memory_total_bytes} (limits.memory_total_bytes)")

    def responsive(self, timeout: float = 2.0) -> bool:
        """The supervisor's lock can be had within `timeout` (the watchdog asks)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True

    def runs(self, exec_id: str) -> bool:
        """A worker runs the execution here for this daemon, its owner (whatever the epoch)."""
        live = self._live.get(exec_id)
        return live is not None and self.owns(live.record)

    def has_standby(self, exec_id: str) -> bool:
        return exec_id in self._standby

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
        delta = pagemap.difference(live.page_map, page_map)
        new = _unsent_versions(live, delta)
        frames = [(v, f) for v in new for _, f in self.pages.iter_frames(exec_id, v)]
        self._send_apply(live, number, manifest["memory_bytes"], page_map, delta, frames, new)

    def _send_apply(self, live: Live, number: int, memory_bytes: int, page_map: pagemap.PageMap,
                    delta: pagemap.Delta, frames: list[tuple[int, bytes]], new: list[int]) -> None:
        """The pages whose version changed since the standby's map, as a delta."""
        meta = {"number": number, "memory_bytes": memory_bytes, "frame_versions": [v for v, _ in frames]}
        try:
            live.worker.link.send(APPLY, meta, [pagemap.encode_delta(page_map.pages, delta),
                                                *(f for _, f in frames)])
        except OSError:
            return                               # it died: its END frame cleans it up
        live.applied, live.page_map = number, page_map
        live.applied_versions |= set(new)

    def _launch_standby(self, exec_id: str, number: int) -> Live:
        record = self.store.get_execution(exec_id)
        artifact, manifest = self.modules.ensure_artifact(record.module_sha256, not record.cooperative)
        saved = self.pages.load(exec_id, number)
        worker = self.pool.take()
        live = Live(record, worker, requested_at=time.monotonic(), launched_at=time.monotonic(),
                    standby=True, applied=number, touched=time.monotonic())
        start, blobs = self._start_message(record, artifact, manifest, saved, [], live)
        start["standby"] = True
        with self._lock:
            self._standby[exec_id] = live
        threading.Thread(target=self._pump, args=(live,), name=f"standby-{exec_id}", daemon=True).start()
        threading.Thread(target=self._expire_standby, args=(live,), name=f"standby-expiry-{exec_id}",
                         daemon=True).start()
        worker.link.send(START, start, blobs)
        return live

    def _expire_standby(self, live: Live) -> None:
        """A standby whose migration sent nothing for `standby_timeout_seconds` goes: its source
        died or gave up and its ABORT never came, and it holds as much memory as the guest. A
        COMMIT that still comes restores the execution from the store instead (`adopt`)."""
        exec_id = live.record.id
        while self._standby.get(exec_id) is live:
            idle = time.monotonic() - live.touched
            if idle >= self.standby_timeout_seconds:
                log.warning("%s: standby idle for %.0f s (no migration round): dropped", exec_id, idle)
                self.drop_standby(exec_id, only=live)
                return
            time.sleep(min(1.0, self.standby_timeout_seconds - idle))

    def drop_standby(self, exec_id: str, only: Live | None = None) -> None:
        """A migration here was aborted (or went quiet): its standby worker goes."""
        with self._lock:
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
        record.owner, record.epoch, record.owner_address = self.node_id, epoch, self.address
        record.prepared, record.node_id, record.error = "", self.node_id, ""
        ckpt = self.pages.latest(exec_id)
        if ckpt is None or ckpt["number"] != number:
            raise StateConflict(f"execution {exec_id}: checkpoint {number} is not the latest here")
        if ckpt.get("reason") == "sleep":        # a durable sleep: its timer wakes it here
            self._drop_and_store(exec_id, record, State.SLEEPING)
            self.timers.add(exec_id, ckpt.get("wake_at_ns", 0))
            return time.monotonic() - began
        if ckpt.get("reason") == "pause" and record.state == State.PAUSED:
            self._drop_and_store(exec_id, record, State.PAUSED)
            return time.monotonic() - began
        live = self._standby.get(exec_id)
        if live is not None:
            self.follow(exec_id, number)
        if live is not None and live.applied == number and live.worker.alive():
            self._go(live, record, ckpt)
        else:
            self._drop_and_store(exec_id, record, record.state)
            self._launch(record, restore=True, requested=began)
        return time.monotonic() - began

    def _drop_and_store(self, exec_id: str, record: ExecutionRecord, state: State) -> None:
        self.drop_standby(exec_id)
        record.state = state
        self.store.put_execution(record)

    def _go(self, live: Live, record: ExecutionRecord, ckpt: dict) -> None:
        """The standby becomes the running execution (the checkpoint it holds is the last)."""
        host, stack = self.pages.host_state(record.id, ckpt["number"]), self.pages.stack(record.id, ckpt["number"])
        replay = self.store.read_journal(record.id, ckpt["journal_seq"])
        next_seq = self.store.next_seq("logs", record.id)
        journal_seq = max(self.store.next_seq("journal", record.id), ckpt["journal_seq"])
        live.record, live.standby = record, False
        live.next_seq, live.journal_seq = next_seq, journal_seq
        live.launch_mark = (next_seq, journal_seq, record.checkpoints)
        live.durable = {1: record.stdout_bytes, 2: record.stderr_bytes}
        record.state, record.worker_pid = State.RUNNING, live.worker.pid
        with self._lock:
            self._standby.pop(record.id, None)
            self._live[record.id] = live
        # Run first, record after (off the handover's path): a crash in between finds the
        # handover prepared, asks the source again and takes it over from the same checkpoint.
        live.worker.link.send(GO, dict(ckpt), [host, stack, journal.pack_many(replay)])
        threading.Thread(target=self.store.put_execution, args=(record,), daemon=True).start()
        with live.changed:                       # the handover ends with the guest running
            live.changed.wait_for(lambda: live.running or not live.worker.alive(), timeout=30)

    # ---- migration, the source's side ----
    def stop_for_migration(self, exec_id: str, target: str, address: str, epoch: int,
                           timeout: float = 60.0) -> Uncommitted:
        """Take the final checkpoint and stop the guest (a live migration's stop-and-copy, or
        a cold migration); the execution stays this daemon's until `give_up`, and a restart
        in between takes it back (`take_back`). The final checkpoint, as soon as it is being
        committed (it can be pushed meanwhile; its `committed` says when it is stored)."""
        live = self._running(exec_id)
        live.record.migration = f"{epoch} {target} {address}"
        n = self._ask(live, "migrate")
        # Answered as soon as the checkpoint is being committed, its worker holding the
        # stopped guest until `release` or `take_back`.
        with live.changed:
            live.changed.wait_for(lambda: live.requests.get(n) is not None
                                  or live.record.id not in self._live, timeout=timeout)
            result = live.requests.pop(n, None)
        if result is not None and "uncommitted" in result:
            return result["uncommitted"]
        live.record.migration = ""
        if result is not None:                   # (a durable sleep came first: it stops too)
            raise StateConflict(f"execution {exec_id} stopped for a {result.get('reason')} "
                                "checkpoint instead of its migration: migrate it again")
        if live.record.id in self._live:
            self._decide(exec_id, "resume")      # for the stop it may still reach
            raise TimedOut(f"execution {exec_id} did not reach a safepoint in {timeout:g} s")
        raise StateConflict(f"execution {exec_id} ended ({live.record.state.value}) instead of "
                            "stopping for its migration")

    def give_up(self, exec_id: str, owner: str, address: str, epoch: int) -> None:
        """The decision of a migration: the execution is `owner`'s at `epoch` from now on;
        this daemon will never run it again unless it is handed back."""
        live = self._live.get(exec_id)         # its worker may still be exiting: its end is
        record = live.record if live is not None else self.store.get_execution(exec_id)  # recorded
        record.owner, record.owner_address, record.epoch = owner, address, epoch   # on this too
        record.migration, record.handing_over = "", epoch
        if record.state == State.PAUSED and record.error == "":
            record.state = State.RUNNING          # as its new owner runs it
        self.timers.cancel(exec_id)
        self.store.put_execution(record, clear_timer=True)
        self._changed(exec_id)

    def release(self, exec_id: str) -> None:
        """The execution runs elsewhere now: the worker that held its stopped guest exits."""
        self._decide(exec_id, "release")

    def _decide(self, exec_id: str, decision: str) -> bool:
        live = self._live.get(exec_id)
        if live is None:
            return False
        try:
            live.worker.link.send(CONTROL, {"action": decision})
        except OSError:
            return False
        return True

    def take_back(self, exec_id: str) -> None:
        """A migration that did not happen: the execution stays here and, if it was running
        (stopped for its migration), runs on — in the worker that held it when there is one,
        else again from its final checkpoint."""
        live = self._live.get(exec_id)
        if live is not None and live.record.migration:
            live.record.migration = ""
            if self._decide(exec_id, "resume"):
                self.store.put_execution(live.record)
                return
        if live is not None:                     # its worker exiting after the stop
            with live.changed:
                live.changed.wait_for(lambda: exec_id not in self._live, timeout=30)
        record = self.store.get_execution(exec_id)
        record.migration = ""
        latest = self.pages.latest(exec_id) or {}
        if (record.state in (State.PAUSED, State.RUNNING) and latest.get("reason") == "migrate"
                and exec_id not in self._live):
            self._launch(record, restore=True, requested=time.monotonic())
            return
        self.store.put_execution(record)
        if record.state == State.SLEEPING and exec_id in self.store.timers():
            self.timers.add(exec_id, self.store.timers()[exec_id])

    def mark_migrating(self, exec_id: str, target: str, address: str, epoch: int) -> None:
        """A migration of an execution with no worker (paused, sleeping): undecided from now."""
        def mark(record: ExecutionRecord) -> bool:
            record.migration = f"{epoch} {target} {address}"
            return True
        self.store.update_execution(exec_id, mark)

    def throttle(self, exec_id: str, fraction: float) -> None:
        """Slow a running guest to (1 - fraction) of its speed (0: full speed again)."""
        live = self._live.get(exec_id)
        if live is not None:
            try:
                live.worker.link.send(CONTROL, {"action": "throttle", "fraction": fraction})
            except OSError:
                pass

    def note_replica(self, exec_id: str, node: str) -> None:
        """`node` holds a replica of the execution (for inspect)."""
        def add(record: ExecutionRecord) -> bool:
            if not node or node in record.replicas:
                return False
            record.replicas = sorted({*record.replicas, node})
            return True
        live = self._live.get(exec_id)
        if live is not None:
            add(live.record)                     # (written with its next change)
        else:
            self.store.update_execution(exec_id, add)

    def _changed(self, exec_id: str) -> None:
        with self._ended:
            self._ended.notify_all()

    # ---- the pump: worker frames -> store ----
    def _pump(self, live: Live) -> None:
        end: Frame | None = None
        try:
            while end is None:
                frames = live.worker.link.read_batch()
                if frames is None:
                    break
                end = self._absorb(live, frames)
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
        self._finish(live, end)

    def _absorb(self, live: Live, frames: list[Frame]) -> Frame | None:
        outputs: list[tuple[int, bytes]] = []
        records: list[bytes] = []
        end = None
        for frame in frames:
            if frame.kind == OUTPUT:
                data = fresh_output(live, frame)
                if data:
                    merge_output(outputs, frame.fd, data)
            elif frame.kind == JOURNAL:
                records.append(frame.data)
            elif frame.kind == PAGES:
                self._store_pages(live, frame)
            elif frame.kind == CHECKPOINT:
                if outputs or records:        # what preceded it is durable first
                    self._append(live, outputs, records)
                    outputs, records = [], []
                self._store_checkpoint(live, frame)
            elif frame.kind == READY and live.standby:   # a standby restored its first one
                with live.changed:
                    live.holds = live.applied if not live.holds else live.holds
                    live.changed.notify_all()
            elif frame.kind == READY:
                with live.changed:
                    live.running = True
                    live.changed.notify_all()
                metrics.START_SECONDS.observe(time.monotonic() - live.requested_at)
                live.checkpointable = bool(frame.meta.get("checkpointable"))
                live.record.dirty_tracker = frame.meta.get("tracker", "")
                if frame.meta.get("restore_seconds"):
                    live.record.restore_seconds = frame.meta["restore_seconds"]
                    metrics.RESTORE_SECONDS.observe(frame.meta["restore_seconds"])
            elif frame.kind == STATS:
                self._count_calls(live, frame.meta.get("calls", {}))
            elif frame.kind == APPLIED:                  # a standby applied a checkpoint
                with live.changed:
                    live.holds = int(frame.meta["number"])
                    live.changed.notify_all()
            elif frame.kind == END:
                end = frame
        if outputs or records:
            self._append(live, outputs, records)
        return end

    def _append(self, live: Live, outputs: list[tuple[int, bytes]], records: list[bytes]) -> None:
        """Commit a burst of journal records and output. The record's counters (what dedup
        trusts after a restore) change only if the commit does."""
        record = live.record
        self._check_quota(record, outputs)
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

    def _check_quota(self, record: ExecutionRecord, outputs: list[tuple[int, bytes]]) -> None:
        """OutputQuotaExceeded when this burst would take the stored output past the quota: nothing
        of it is stored, and the execution pauses (`_pump`) until the quota is raised."""
        total = record.stdout_bytes + record.stderr_bytes + sum(len(d) for _, d in outputs)
        if self.output_limit_bytes and total > self.output_limit_bytes:
            raise OutputQuotaExceeded(
                f"execution {record.id} would store {total} bytes of stdout and stderr, over "
                f"its quota of {self.output_limit_bytes} (limits.output_bytes): raise "
                f"[limits] output_bytes in roostd's config, restart roostd, then "
                f"`roost resume {record.id}`")

    def _store_pages(self, live: Live, frame: Frame) -> None:
        """A part of a checkpoint's frames, written now (uncommitted) while the worker
        compresses the next part."""
        number, first = int(frame.meta["number"]), int(frame.meta["first_frame"])
        if first != (live.streamed[1] if live.streamed[0] == number else 0):
            raise StoreError(f"checkpoint {number}: pages from frame {first} arrived out of order")
        while len(live.writes) >= STREAM_DEPTH:       # backpressure: the worker's send waits
            live.writes.pop(0).result()
        live.writes.append(self._page_writer.submit(self.pages.put_frames, live.record.id, number,
                                                    first, frame.blobs))
        live.streamed = (number, first + len(frame.blobs))

    def _drain_writes(self, live: Live) -> None:
        """Wait for the parts being written; the first failure (StoreError) is raised."""
        writes, live.writes = live.writes, []
        for write in writes:
            write.result()

    def _store_checkpoint(self, live: Live, frame: Frame) -> None:
        meta, record = dict(frame.meta), live.record
        drain_began = time.monotonic()
        self._drain_writes(live)
        meta["drain_seconds"] = time.monotonic() - drain_began   # the store behind the worker
        host, stack, frames = frame.blobs[0], frame.blobs[1], frame.blobs[4:]
        stored, zeroed = np.frombuffer(frame.blobs[2], "<u4"), np.frombuffer(frame.blobs[3], "<u4")
        streamed = live.streamed[1] if live.streamed[0] == meta["number"] else 0
        live.streamed = (0, 0)
        meta["frames"] = streamed + len(frames)
        page_map, delta = pagemap.successor(live.page_map, meta["number"],
                                            meta["memory_bytes"] // PAGE_BYTES, stored, zeroed)
        record.checkpoints += 1
        uncommitted = None
        if meta["reason"] == "migrate":          # pushed while it is written: answer now
            # (bytes: from a big frame of the worker's they are views, protobuf wants bytes)
            uncommitted = Uncommitted(record.id, meta["number"], dict(meta), page_map, bytes(host),
                                      bytes(stack), frames, streamed, record.to_json(),
                                      frozenset(page_map.referenced()))
            self._answer(live, {**meta, "uncommitted": uncommitted}, only=live.migrate_request)
        try:
            self.pages.put(record, meta, frames, host, stack, page_map, delta, self.checkpoint_retain,
                           meta.get("wake_at_ns", 0), streamed=streamed,
                           referenced=uncommitted.referenced if uncommitted else None,
                           hurry=uncommitted is not None)
        except Exception as e:            # (any failure: a push waits on `committed`)
            record.checkpoints -= 1
            if uncommitted is not None:
                uncommitted.committed.set_exception(e)
            raise
        if uncommitted is not None:
            uncommitted.committed.set_result(None)
        live.page_map = page_map
        metrics.CHECKPOINT_WAIT.observe(meta.get("waited_seconds", 0.0))
        metrics.CHECKPOINT_BYTES.labels(kind="dirty").inc(meta.get("dirty_pages", 0) * PAGE_BYTES)
        live.wake_at_ns = meta.get("wake_at_ns", 0)
        self._committed += 1
        if self._committed == faults.value(Fault.DAEMON_DIE_AFTER_CHECKPOINTS):
            faults.crash(Fault.DAEMON_DIE_AFTER_CHECKPOINTS)
        metrics.CHECKPOINTS.labels(reason=meta["reason"]).inc()
        metrics.CHECKPOINT_PAUSE.observe(meta["pause_seconds"])
        metrics.TIME_TO_SAFEPOINT.observe(meta["time_to_safepoint_seconds"])
        metrics.CHECKPOINT_BYTES.labels(kind="memory").inc(meta["memory_bytes"])
        metrics.CHECKPOINT_BYTES.labels(kind="stored").inc(meta["stored_bytes"])
        self._answer(live, meta)
        self.on_commit(record, meta["number"])

    def _answer(self, live: Live, result: dict, only: int | None = None) -> None:
        """The checkpoint answers the requests it merged (`only` that one), their waiters wake."""
        answered = [n for n in result.get("requests", []) if live.requests.get(n, False) is None
                    and only in (None, n)]
        asked = [live.requests.pop(("at", n), None) for n in answered]
        requested_at = min((t for t in asked if t is not None), default=None)
        if requested_at is not None:
            metrics.CHECKPOINT_TOTAL.observe(time.monotonic() - requested_at)
        with live.changed:
            for n, at in zip(answered, asked):
                live.requests[n] = {**result, "total_seconds": time.monotonic() - at if at else 0.0}
            live.changed.notify_all()

    def _ask(self, live: Live, action: str) -> int:
        """Send a checkpoint/pause/suspend request to the worker; its id (0 if the worker is gone)."""
        with live.changed:
            live.next_request += 1
            n = live.next_request
            live.requests[n] = None
            live.requests[("at", n)] = time.monotonic()
            if action == "migrate":              # known before the worker can answer it
                live.migrate_request = n
        try:
            live.worker.link.send(CONTROL, {"action": action, "request": n})
        except OSError:
            return 0
        return n

    def _count_calls(self, live: Live, calls: dict[str, int]) -> None:
        for name, total in calls.items():
            delta = total - live.calls_seen[name]
            if delta > 0:
                metrics.HOST_CALLS.labels(function=name).inc(delta)
                live.calls_seen[name] = total
        live.record.host_calls = sum(live.calls_seen.values())

    def _finish(self, live: Live, end: Frame | None) -> None:
        if live.standby:                   # a standby that never ran: the record is a replica's
            with self._lock:
                if self._standby.get(live.record.id) is live:
                    self._standby.pop(live.record.id)
            live.worker.link.close()
            reap(live.worker)
            return
        record = live.record
        for write in live.writes:          # parts of an unfinished checkpoint: written (and
            write.exception()              # discarded at the next start) before it starts
        live.writes = []
        code = None if end is not None else reap(live.worker)   # the status explains a crash
        if end is not None and self._restore_older(live, end):
            return
        vfs = None
        if end is not None:
            vfs = self._apply_end(live, end)
        elif live.end_reason == "killed":
            record.state, record.exit_code, record.error = State.KILLED, -1, "killed by request"
        elif live.end_reason == SHUTDOWN:
            pass                                   # stays RUNNING: replayed at the next start
        elif live.end_reason.startswith((STORE_FAILED, OUTPUT_QUOTA)):
            # What the worker sent after the last commit is lost, and nothing depends on it:
            # resume replays it from the latest checkpoint and the journal.
            record.state, record.error = State.PAUSED, live.end_reason
        elif not live.end_reason and self._recover(live, code):
            return
        else:
            reason = live.end_reason or f"worker process {live.worker.pid} died ({describe_exit(code)})"
            record.state, record.exit_code, record.error = State.FAILED, -1, reason
        if record.state == State.SLEEPING:
            self.timers.add(record.id, live.wake_at_ns)
        if record.state.ended:
            record.finished_at = time.time()
            metrics.EXECUTION_ENDS.labels(state=record.state.value).inc()
        try:
            # A worker released by a handover may exit after the execution came back here at
            # a newer epoch: its record is stale then, and so is its place in `_live`.
            self.store.put_execution(record, vfs, unless_newer=True)
        except StoreError as e:     # still full: the store keeps RUNNING, resumed at next start
            log.error("%s: cannot record %s: %s", record.id, record.state.value, e)
        live.worker.link.close()
        with self._lock:
            if self._live.get(record.id) is live:
                self._live.pop(record.id)
        with live.changed:
            live.changed.notify_all()
        with self._ended:
            self._ended.notify_all()
        if end is not None:
            reap(live.worker)       # after answering waiters: process exit takes a while
        if not self.owns(record):
            log.info("execution %s handed over to %s", record.id, record.owner)
        elif record.migration:
            log.info("execution %s stopped for its migration to %s", record.id, record.migration.split()[1])
        else:
            log.info("execution %s ended: %s %s", record.id, record.state.value,
                     record.exit_code if record.state == State.EXITED else record.error.splitlines()[:1])

    def _apply_end(self, live: Live, end: Frame) -> bytes | None:
        """Take the worker's END: the outcome, its counters, the final filesystem."""
        record = live.record
        self._count_calls(live, end.meta.get("calls", {}))
        if not self.owns(record):                  # handed over while its worker exited
            return end.blobs[0] if end.blobs else None
        record.state = State(end.meta["state"])
        if record.state == State.PAUSED and live.end_reason == SHUTDOWN:
            record.state = State.RUNNING           # suspended by the shutdown: resumed at start
        record.exit_code = int(end.meta.get("exit_code", 0))
        record.error = end.meta.get("error", "")
        record.memory_bytes = int(end.meta.get("memory_bytes", 0))
        return end.blobs[0] if end.blobs else None

    def _restore_older(self, live: Live, end: Frame) -> bool:
        """The worker found the checkpoint it restored corrupt (a frame that passed the store's
        checksum but not its own: damaged before it was stored): drop it and restore the next
        older one, as `_restore_point` does for one the store finds corrupt. False when there
        is none (the execution fails with the worker's reason) or roostd is stopping."""
        record, number = live.record, end.meta.get("corrupt_checkpoint")
        restorable = self.pages.restorable(record.id) if number is not None else []
        if self._stopping or len(restorable) < 2 or restorable[0] != number:
            return False
        note = f"checkpoint {number} is corrupt, restoring from an older one: {end.meta.get('error')}"
        log.warning("execution %s: %s", record.id, note)
        record.notes.append(note)
        self.pages.drop_newest(record.id, number)
        live.worker.link.close()
        try:
            self._launch(record, restore=True, requested=time.monotonic(),
                         barren_deaths=live.barren_deaths)
        except Exception as e:
            live.end_reason = f"checkpoint {number} is corrupt; no older one could be restored: {e}"
            return False
        finally:
            reap(live.worker)
        with live.changed:
            live.changed.notify_all()
        return True

    def _recover(self, live: Live, code: int | None) -> bool:
        """A worker died on its own: start another that replays the journal. False when the
        execution should fail instead: workers keep dying without making new progress (a
        crash loop), or the daemon is stopping."""
        record = live.record
        progressed = (live.next_seq, live.journal_seq, record.checkpoints) > live.launch_mark
        deaths = 0 if progressed else live.barren_deaths + 1
        metrics.WORKER_FAILURES.labels(reason="died").inc()
        if deaths >= MAX_BARREN_DEATHS or self._stopping:
            live.end_reason = (f"worker process {live.worker.pid} died ({describe_exit(code)}); "
                               f"{deaths} workers in a row died without making progress")
            return False
        log.warning("worker %d of %s died (%s): restoring", live.worker.pid, record.id, describe_exit(code))
        live.worker.link.close()
        try:
            self._launch(record, restore=True, requested=time.monotonic(), barren_deaths=deaths)
        except Exception as e:
            live.end_reason = f"worker died and the execution could not be restored: {e}"
            return False
        with live.changed:
            live.changed.notify_all()
        return True

    # ---- checkpoint, pause, resume ----
    def _owned(self, ref: str) -> ExecutionRecord:
        """The record of an execution this daemon runs; another's is refused, naming it."""
        record = self.get(ref)
        if not self.owns(record):
            raise StateConflict(f"execution {record.id} runs on {record.owner} "
                                f"({record.owner_address}): ask it there")
        return record

    def _running(self, ref: str) -> Live:
        record = self._owned(ref)
        live = self._live.get(record.id)
        if live is None:
            raise StateConflict(f"execution {record.id} is not running (it is {record.state.value})")
        if not live.checkpointable:
            raise StateConflict(f"execution {record.id} cannot be checkpointed yet (its worker is starting)")
        return live

    def checkpoint(self, ref: str, timeout: float = 60.0) -> dict:
        """Checkpoint a running execution now; the stored checkpoint's numbers."""
        live = self._running(ref)
        n = self._ask(live, "checkpoint")
        with live.changed:
            live.changed.wait_for(lambda: live.requests.get(n) is not None
                                  or live.record.id not in self._live, timeout=timeout)
            result = live.requests.pop(n, None)
        if result is None:
            if live.record.id not in self._live:
                raise StateConflict(f"execution {live.record.id} ended before reaching a safepoint")
            raise TimedOut(f"execution {live.record.id} did not reach a safepoint in {timeout:g} s")
        return result

    def pause(self, ref: str, timeout: float = 60.0) -> ExecutionRecord:
        """Checkpoint and stop: the execution keeps no worker until `resume`."""
        live = self._running(ref)
        self._ask(live, "pause")
        with live.changed:
            live.changed.wait_for(lambda: live.record.id not in self._live, timeout=timeout)
        if live.record.id in self._live:
            raise TimedOut(f"execution {live.record.id} did not reach a safepoint in {timeout:g} s")
        return self.store.get_execution(live.record.id)

    def resume(self, ref: str) -> ExecutionRecord:
        record = self._owned(ref)
        if record.state != State.PAUSED or record.id in self._live:
            raise StateConflict(f"execution {record.id} is not paused (it is {record.state.value})")
        record.error = ""
        self._launch(record, restore=True, requested=time.monotonic())
        return record

    # ---- queries ----
    def get(self, ref: str) -> ExecutionRecord:
        live = self._live.get(ref)
        if live is not None:
            return live.record
        try:
            return self.store.get_execution(ref)
        except NotFound:
            matches = [r for r in self.store.list_executions() if r.name and r.name == ref]
            if len(matches) == 1:
                return self.get(matches[0].id)
            if len(matches) > 1:
                raise InvalidRequest(f"name {ref!r} is ambiguous: {', '.join(r.id for r in matches)}")
            raise

    def list(self, include_ended: bool) -> list[ExecutionRecord]:
        records = {r.id: r for r in self.store.list_executions()}
        with self._lock:
            records.update({i: l.record for i, l in self._live.items()})
        out = [r for r in records.values() if include_ended or not r.state.ended]
        return sorted(out, key=lambda r: r.created_at)

    def state_counts(self) -> dict[str, int]:
        counts = Counter({s.value: 0 for s in State})
        counts.update(r.state.value for r in self.list(include_ended=True))
        return dict(counts)

    def kill(self, ref: str) -> ExecutionRecord:
        record = self._owned(ref)
        live = self._live.get(record.id)
        if live is None and record.state in (State.PAUSED, State.SLEEPING):
            record.state, record.exit_code, record.error = State.KILLED, -1, "killed by request"
            record.finished_at = time.time()
            self.timers.cancel(record.id)
            self.store.clear_timer(record.id)
            self.store.put_execution(record)
            return record
        if live is None:
            raise StateConflict(f"execution {record.id} is not running (it is {record.state.value})")
        live.end_reason = "killed"
        send_signal(live.worker, signal.SIGKILL)
        return self.wait(record.id, timeout=10.0)

    def wait(self, ref: str, timeout: float | None = None,
             is_active: Callable[[], bool] = lambda: True) -> ExecutionRecord:
        """Block until the execution has ended — through restores, pauses and durable sleeps;
        returns its record (the current one if `timeout` passes first)."""
        exec_id = self.get(ref).id
        deadline = None if not timeout else time.monotonic() + timeout
        while True:
            live = self._live.get(exec_id)
            record = live.record if live is not None else self.store.get_execution(exec_id)
            remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if record.state.ended or remaining <= 0 or not is_active() or not self.owns(record):
                return record                    # (not ours any more: the caller follows it)
            if live is None:                    # paused or sleeping: any end wakes us
                with self._ended:
                    self._ended.wait(timeout=remaining)
                continue
            with live.changed:
                live.changed.wait_for(lambda: exec_id not in self._live, timeout=remaining)

    def logs(self, ref: str, from_seq: int, follow: bool, stream: int = 0,
             is_active: Callable[[], bool] = lambda: True) -> Iterator[tuple[int, int, bytes]]:
        """Durable output records (seq, stream, data) from `from_seq`; with `follow`, until the
        execution has ended and every record has been sent."""
        exec_id = self.get(ref).id
        seq = from_seq
        while is_active():
            live = self._live.get(exec_id)           # read before the store: no lost tail
            batch = self.store.read_logs(exec_id, seq)
            for rec_seq, rec_stream, data in batch:
                seq = rec_seq + 1
                if not stream or rec_stream == stream:
                    yield rec_seq, rec_stream, data
            if batch:
                continue
            if not follow:
                return
            if live is None:      # ended, not ours any more (the caller follows it), or between
                record = self.store.get_execution(exec_id)       # workers: paused, sleeping
                if record.state.ended or not self.owns(record):
                    return
                with self._ended:
                    self._ended.wait(timeout=0.5)
                continue
            with live.changed:
                live.changed.wait_for(lambda: live.next_seq > seq or exec_id not in self._live,
                                      timeout=1.0)

    def copy_out(self, ref: str, guest_path: str) -> Iterator[Entry]:
        """The entries of a guest file or tree, produced as the caller consumes them: file data
        is a view into the restored VFS, so a copy holds no second copy of any file."""
        record = self.get(ref)
        vfs = self._latest_vfs(record)
        try:
            return vfs.export(guest_path)
        except (KeyError, FsError) as e:
            raise NotFound(f"{guest_path}: no such file or directory in execution {record.id}") from e


    def _latest_vfs(self, record: ExecutionRecord) -> Vfs:
        """A running execution's files as of its latest checkpoint (else as it started); an
        ended or paused one's as it stopped."""
        if record.state in (State.RUNNING, State.SLEEPING):
            ckpt = self.pages.latest(record.id)
            if ckpt is not None:
                host = self.pages.host_state(record.id, ckpt["number"])
                return Vfs.restore(hoststate.decode(host, b"").vfs)
        return Vfs.from_bytes(self.store.vfs(record.id))


def _unsent_versions(live: Live, delta: pagemap.Delta) -> list[int]:
    """The versions a standby needs frames of to apply `delta`: a page whose version changed
    since the map it holds now comes from a newer checkpoint (or from none: zeros), so these
    are the delta's versions it was not sent yet — found without counting the whole map."""
    return sorted(set(np.unique(delta[:, 1]).tolist()) - live.applied_versions - {0})
