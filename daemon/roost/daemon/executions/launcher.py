"""Giving an execution a worker: the restore point, the START message, the pump that follows.

A fresh execution starts from its stdin and mounts; a restored one from its newest intact
checkpoint and the journal after it, replayed so it recomputes exactly what it computed
before. The worker's end goes to `ending`, which may give the execution another worker
through `launch` again (a crash, a corrupt checkpoint).
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable

from roost.daemon.checkpoint import journal, pagemap
from roost.daemon.errors import Corrupt, StateConflict, Superseded
from roost.daemon.executions.ending import Ending
from roost.daemon.executions.lives import Lives
from roost.daemon.executions.pool import WorkerPool
from roost.daemon.executions.pump import Pump
from roost.daemon.executions.running import Live, send_signal
from roost.daemon.http.settings import HttpSettings
from roost.daemon.link import messages as msg
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.node import metrics
from roost.daemon.runtime.vfs import VfsLimits
from roost.daemon.store.checkpoints import PageStore, Restore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, State

log = logging.getLogger(__name__)


class Launcher:
    """Starts workers for the executions of this daemon and pumps their frames."""

    def __init__(self, store: Store, modules: ModuleRegistry, pages: PageStore, pool: WorkerPool,
                 lives: Lives, pump: Pump, ending: Ending, durable_sleep_seconds: float,
                 vfs_limits: VfsLimits) -> None:
        self.store, self.modules, self.pages, self.pool = store, modules, pages, pool
        self.lives, self.pump, self.ending = lives, pump, ending
        self.durable_sleep_seconds = durable_sleep_seconds
        self.vfs_limits = vfs_limits                 # every execution's files (sent in START)
        self.http = HttpSettings()                   # outbound HTTP ([http]): none allowed
        # Before any worker runs an execution, its ownership is claimed where the cluster
        # keeps it (etcd: `cluster.membership`); Superseded when another daemon owns it now,
        # which `on_superseded` records (this daemon never runs it again).
        self.claim: Callable[[ExecutionRecord], None] = lambda record: None
        self.on_superseded: Callable[[ExecutionRecord, Superseded], None] = lambda r, e: None
        # A worker runs the execution here from now on: its replicas are made ready at once
        # (`cluster.shipping`), before it writes anything — a guest may compute for long
        # before its first output.
        self.on_launch: Callable[[Live], None] = lambda live: None

    def claimed(self, record: ExecutionRecord) -> None:
        """Claim `record` (see `claim`); a Superseded one is recorded as the new owner's."""
        try:
            self.claim(record)
        except Superseded as e:
            self.on_superseded(record, e)
            raise

    def launch(self, record: ExecutionRecord, restore: bool, requested: float,
               barren_deaths: int = 0) -> None:
        """Give the execution a worker: fresh, or (restore) replaying its journal from the
        start so it recomputes exactly what it computed before."""
        self.claimed(record)
        saved = self.restore_point(record) if restore else None
        # A checkpoint restores only into the variant of the module it was taken in (adaptive
        # polls: `ModuleRegistry.ensure_artifact`); a fresh start runs the newest.
        artifact, manifest = self.modules.ensure_artifact(
            record.module_sha256, not record.cooperative, wait=saved is not None,
            instrument=saved.manifest.instrumented if saved else None)
        ckpt = saved.manifest if saved else None
        if ckpt and ckpt.prepare_version != manifest.get("prepare_version"):
            raise StateConflict(f"execution {record.id}: its checkpoint was taken from a module "
                                f"prepared by version {ckpt.prepare_version}; this roostd "
                                f"prepares version {manifest.get('prepare_version')}")
        first = ckpt.journal_seq if ckpt else 0
        if restore:                        # pages of a checkpoint a dead worker never finished
            self.pages.discard_after(record.id, ckpt.number if ckpt else 0)
        worker = self.pool.take()
        next_seq = self.store.next_seq("logs", record.id) if restore else 0
        # Never below the checkpoint's position: the commit that collected the journal before it
        # may have left none, and records stored below it would not be replayed after a crash.
        journal_seq = max(self.store.next_seq("journal", record.id), first) if restore else 0
        live = Live(record, worker, requested_at=requested, launched_at=time.monotonic(),
                    barren_deaths=barren_deaths, next_seq=next_seq, journal_seq=journal_seq,
                    launch_mark=(next_seq, journal_seq, record.checkpoints),
                    durable={1: record.stdout_bytes, 2: record.stderr_bytes})
        self.lives.add(live)
        record.state, record.worker_pid = State.RUNNING, worker.pid
        if restore:
            record.restores += 1
            metrics.RESTORES.inc()
        else:
            record.started_at = time.time()
        self.store.put_execution(record)
        # (numbered after the past checkpoints, dropped as corrupt ones included)
        start = self.start_message(record, artifact, manifest, saved, [], live,
                                   numbered_after=record.checkpoints, streamed=restore)
        worker.link.send_message(start)
        # The journal after the restore point follows START a range at a time, as the worker's
        # replay takes them (its own thread: no lock of the supervisor's is held meanwhile).
        stream = JournalStream(self.store, live, first, journal_seq) if restore else None
        self.pump.start(live, f"pump-{record.id}", self.finish, stream)
        self.on_launch(live)

    def finish(self, live: Live, end: msg.End | None) -> None:
        """The worker of a running execution ended (its END frame, None if it sent none)."""
        self.ending.finish(live, end, relaunch=self.launch)

    def restore_point(self, record: ExecutionRecord) -> Restore | None:
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

    def start_message(self, record: ExecutionRecord, artifact, manifest: dict,
                      saved: Restore | None, replay: list[bytes], live: Live,
                      numbered_after: int | None = None, standby: bool = False,
                      streamed: bool = False) -> msg.Start:
        """START: the spec, stdin, the initial files, the journal to replay (`streamed`: none,
        it follows in REPLAY frames, `JournalStream`) and the checkpoint to restore (whose page
        map `live` holds from now on). The output already stored (`live.durable`) goes with it:
        the worker drops what a replay writes again below it."""
        ckpt = saved.manifest if saved else None
        spec = msg.Spec(
            id=record.id, artifact=str(artifact), module=manifest, argv=tuple(record.argv),
            env=tuple((k, v) for k, v in record.env),
            memory_limit_bytes=record.memory_limit_bytes,
            checkpoint_every_seconds=record.checkpoint_every_seconds,
            durable_sleep_seconds=self.durable_sleep_seconds,
            vfs_limits=dataclasses.asdict(self.vfs_limits),
            journal_first_seq=ckpt.journal_seq if ckpt else 0, checkpoint=ckpt,
            stdout_offset=ckpt.stdout_offset if ckpt else 0,
            stderr_offset=ckpt.stderr_offset if ckpt else 0,
            numbered_after=numbered_after, standby=standby, replay_streamed=streamed,
            durable_stdout=int(live.durable.get(1, 0)), durable_stderr=int(live.durable.get(2, 0)),
            http=self.http.for_execution(record.id, record.allow_http).to_meta()
            if record.allow_http else None)
        stdin, vfs = self.store.stdin(record.id), self.store.initial_vfs(record.id)
        if not saved:
            return msg.Start(spec, stdin, vfs, journal.pack_many(replay))
        live.page_map = saved.page_map
        live.applied_versions = {v for v, _ in saved.frames}
        return msg.Start(spec, stdin, vfs, journal.pack_many(replay), saved.host, saved.stack,
                         pagemap.encode_full(saved.page_map), tuple(v for v, _ in saved.frames),
                         tuple(f for _, f in saved.frames))


class JournalStream:
    """The journal a restored worker replays, sent after START in REPLAY frames of about
    CHUNK_BYTES, read from the store a range at a time: the worker is ready (and `launch`
    returns) before the journal is read, the worker decodes it as its replay goes, and no
    more than WINDOW chunks are ever in flight (the worker's REPLAY_MORE, through the pump,
    gives credit). The journal streamed ends where it ended when the worker was launched
    (`until`): what the worker records later is its own."""
    CHUNK_BYTES = 256 << 10
    WINDOW = 4

    def __init__(self, store: Store, live: Live, first: int, until: int) -> None:
        self.store, self.live = store, live
        self.next, self.until = first, until
        self.credit = self.WINDOW
        self.stopped = False
        self.sent = 0                       # chunks sent (tests, the log)
        self._changed = threading.Condition()

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"replay-{self.live.record.id}", daemon=True).start()

    def more(self, chunks: int) -> None:
        """The worker took `chunks` chunks: as many more may go."""
        with self._changed:
            self.credit += chunks
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self.stopped = True
            self._changed.notify_all()

    def run(self) -> None:
        """Send the journal, chunk by chunk, as credit allows; the last one says `end`. A record
        that reads back corrupt stops the worker (its end decides what follows)."""
        link, exec_id = self.live.worker.link, self.live.record.id
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self.credit > 0 or self.stopped)
                    if self.stopped:
                        return
                    self.credit -= 1
                records = self.store.read_journal_range(exec_id, self.next, self.until,
                                                        self.CHUNK_BYTES) if self.next < self.until else []
                self.next += len(records)
                end = not records or self.next >= self.until
                link.send_message(msg.ReplayChunk(journal.pack_many(records), end))
                self.sent += 1
                if end:
                    return
        except OSError:
            return                           # the worker is gone: its end is the pump's
        except Exception as e:              # a corrupt record, the store: this worker cannot go on
            log.error("execution %s: streaming its journal to replay: %s", exec_id, e)
            self.live.end_reason = self.live.end_reason or f"reading the journal to replay: {e}"
            send_signal(self.live.worker, signal.SIGKILL)
