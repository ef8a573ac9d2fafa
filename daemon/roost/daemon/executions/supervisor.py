"""The supervisor: owns the executions of this daemon and the worker running each one.

It composes the parts of the pipeline — per running execution the frame pump (`pump`) reads the
worker's frames and hands them to the output writer (`output`, output durable in LMDB, one
transaction per burst) and the checkpoint committer (`committer`); `ending` records the outcome
when the worker ends, or gives the execution another worker (`launcher`). `standbys` are the
workers of live migrations coming here, `source` the side of those leaving. The supervisor
keeps the lifecycle (start, recover, shutdown) and what a client can ask — state, logs, files —
answered from the store, so an ended execution looks the same before and after a daemon
restart.
"""
from __future__ import annotations

import builtins
import logging
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from roost.daemon.checkpoint import hoststate
from roost.daemon.errors import (
    InvalidRequest,
    LimitExceeded,
    NameInUse,
    NotFound,
    StateConflict,
    Superseded,
    TimedOut,
    Unavailable,
)
from roost.daemon.executions import requests, watch
from roost.daemon.executions.committer import Committer
from roost.daemon.executions.ending import Ending
from roost.daemon.executions.launcher import Launcher
from roost.daemon.executions.lives import Lives
from roost.daemon.executions.output import OutputWriter
from roost.daemon.executions.pool import WorkerPool
from roost.daemon.executions.pump import Pump
from roost.daemon.executions.running import SHUTDOWN, SUPERSEDED, Live, send_signal
from roost.daemon.executions.source import Source
from roost.daemon.executions.standbys import Standbys
from roost.daemon.executions.timers import Timers
from roost.daemon.modules.registry import UNPREPARED_WHY, ModuleRegistry
from roost.daemon.runtime.vfs import Entry, FsError, Vfs, VfsLimits
from roost.daemon.store.checkpoints import PageStore, Uncommitted
from roost.daemon.store.db import Store
from roost.daemon.store.logrecord import LogEntry
from roost.daemon.store.records import ExecutionRecord, State

log = logging.getLogger(__name__)
RETAIN_ENDED_SECONDS = 7 * 86400.0   # [executions] retain_ended_seconds: a week, like a log


@dataclass
class Removed:
    """What `remove` and `prune` took away: the executions and the store bytes that held them
    (pages back on LMDB's free list; on a dry run, the bytes their records hold)."""
    ids: list[str]
    bytes_freed: int


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
    allow_http: list[str] = field(default_factory=list)   # checked: `fields.allow_http`


class Supervisor:
    """The executions of this daemon: it builds the pipeline's parts, passing each the others it
    needs, starts and recovers executions, and answers the client. What cluster/ asks of the
    standbys and the migration source it hands on to them."""

    def __init__(self, store: Store, modules: ModuleRegistry, pool: WorkerPool,
                 node_id: str, default_memory_limit_bytes: int,
                 durable_sleep_seconds: float = 2.0,
                 checkpoint_every_seconds: float = 0.0, checkpoint_retain: int = 2,
                 address: str = "", standby_timeout_seconds: float = 120.0,
                 vfs_limits: VfsLimits = VfsLimits(), output_limit_bytes: int = 0,
                 pages: PageStore | None = None) -> None:
        self.store = store
        self.modules = modules
        self.pool = pool
        self.node_id = node_id
        self.address = address
        self.default_memory_limit_bytes = default_memory_limit_bytes
        self.vfs_limits = vfs_limits                 # every execution's files (sent in START)
        self.checkpoint_every_seconds = checkpoint_every_seconds   # when a start gives none
        self.lives = Lives(node_id, address)
        self.timers = Timers(store, self._wake)
        self.pages = pages or PageStore(store)        # one per store: its caches are shared
        self.committer = Committer(self.pages, checkpoint_retain)
        self.committer.on_held = modules.note_slow_function   # (adaptive loop polls)
        self.output = OutputWriter(store, output_limit_bytes)
        self.pump = Pump(self.output, self.committer)
        self.ending = Ending(store, self.pages, self.lives, self.timers, self.committer)
        self.launcher = Launcher(store, modules, self.pages, pool, self.lives, self.pump,
                                 self.ending, durable_sleep_seconds, vfs_limits)
        self.standbys = Standbys(store, modules, self.pages, pool, self.lives, self.timers,
                                 self.launcher, self.pump, standby_timeout_seconds)
        self.source = Source(store, self.pages, self.lives, self.timers, self.launcher.launch)
        # What cluster/ asks of the standbys of migrations coming here, and of the source
        # side of those leaving (kept on the supervisor for its callers).
        self.follow, self.touch_standby = self.standbys.follow, self.standbys.touch
        self.apply_arrived, self.adopt = self.standbys.apply_arrived, self.standbys.adopt
        self.drop_standby = self.standbys.drop
        self.give_up, self.release = self.source.give_up, self.source.release
        self.take_back, self.mark_migrating = self.source.take_back, self.source.mark_migrating
        self.throttle = self.source.throttle
        self.released: watch.Release = watch.STORED  # what output counts (cluster.shipping)
        self.unresumed: set[str] = set()     # not resumed at start: etcd did not answer
        self.recovering: set[str] = set()    # left running by the previous daemon, not resumed yet
        # A durable sleep's timer counts only once the replicas hold its checkpoint
        # (replication.ack = one | all; `cluster.push.Replicator.holds`).
        self.sleep_counts: Callable[[ExecutionRecord], bool] = lambda record: True
        # Names are unique, and a module is not removed under a start: both are checked and
        # written under this lock (`_create`, `remove_module`).
        self.naming = threading.Lock()
        self.retain_ended_seconds = RETAIN_ENDED_SECONDS   # 0: keep ended executions forever

    @property
    def on_commit(self) -> Callable[[ExecutionRecord, int], None]:
        """Called after every committed checkpoint (replication)."""
        return self.committer.on_commit

    @on_commit.setter
    def on_commit(self, hook: Callable[[ExecutionRecord, int], None]) -> None:
        self.committer.on_commit = hook

    # ---- lifecycle ----
    def recover(self) -> int:
        """Resume every execution a previous daemon left running, from its latest checkpoint and
        journal. PAUSED ones wait for `resume`; SLEEPING ones for their timer.

        roostd runs this in the background while its API serves: until an execution is
        resumed it is in `recovering`, its record says RUNNING, `wait` and `logs` wait for it
        (woken as it is launched), checkpoint, pause and migrate wait for its worker (within
        their timeout, `_running`), and kill is refused as UNAVAILABLE — retriable, ask again
        in a moment."""
        self.start_collector()                          # retention of ended executions
        previous = self.store.node_id(self.node_id)     # this data dir's node, last time
        todo = []
        for record in self.store.list_executions():
            if record.owner in ("", previous) and (record.owner, record.owner_address) != \
                    (self.node_id, self.address):    # ours (renamed, moved, or from before
                record.owner, record.owner_address = self.node_id, self.address   # ownership)
                self.store.put_execution(record)
            if not self.owns(record) or record.migration:
                continue                         # a replica, or a migration (handover.recover)
            if record.state.ended or record.state in (State.PAUSED, State.SLEEPING):
                continue
            todo.append(record)
        self.recovering.update(r.id for r in todo)
        self.pool.warm(len(todo))               # a warm worker for each, warming up at once
        n = 0
        for record in todo:
            try:
                n += self._resume_left_running(record)
            finally:
                self.recovering.discard(record.id)
                self.lives.notify_ended()        # its waiters look again: it has a worker now
        return n

    def _resume_left_running(self, record: ExecutionRecord) -> int:
        """Launch one execution `recover` found; 1 if it runs now."""
        if self.lives.stopping:
            return 0                              # (stays RUNNING: resumed at the next start)
        try:
            self.launcher.launch(record, restore=True, requested=time.monotonic())
            return 1
        except Superseded as e:
            log.warning("execution %s: not resumed: %s", record.id, e)
        except Unavailable as e:
            log.error("execution %s: not resumed yet: %s", record.id, e)
            self.unresumed.add(record.id)
        except Exception as e:
            log.exception("cannot resume execution %s", record.id)
            self._fail(record, f"could not be resumed: {e}")
        return 0

    def _not_recovering(self, exec_id: str) -> None:
        """Refuse, retriably, a request that needs the worker of an execution `recover` has
        yet to resume."""
        if exec_id in self.recovering and exec_id not in self.lives:
            raise Unavailable(f"execution {exec_id} is being resumed after roostd's restart: "
                              "ask again in a moment")

    # ---- the cluster's word on ownership (cluster.membership, cluster.takeover) ----
    def superseded(self, record: ExecutionRecord, e: Superseded) -> None:
        """Another daemon owns the execution now (or it ended there): this copy is a replica
        from now on, and is never run here again; a running worker of it is stopped."""
        log.warning("execution %s: %s: this daemon drops its copy", record.id, e)
        live = self.lives.get(record.id)
        if not e.ended:
            record.owner, record.epoch, record.owner_address = e.owner, e.epoch, e.address
        else:
            record.owner = e.owner if e.owner != self.node_id else record.owner
        if live is not None and live.record is not record:
            live.record.owner, live.record.epoch = record.owner, record.epoch
            live.record.owner_address = record.owner_address
        if live is not None:
            live.end_reason = SUPERSEDED
            send_signal(live.worker, signal.SIGKILL)
        else:
            self.store.put_execution(record)

    def take_over(self, exec_id: str, epoch: int,
                  why: str = "its etcd lease expired") -> ExecutionRecord:
        """This daemon won the execution of a dead owner (cluster.takeover), at `epoch`: it
        runs it from what it holds — the latest replicated checkpoint and the journal after
        it — in the state its owner left it."""
        record = self.store.get_execution(exec_id)
        previous = record.owner
        record.owner, record.epoch, record.owner_address = self.node_id, epoch, self.address
        record.node_id, record.prepared, record.migration, record.replicas = self.node_id, "", "", []
        record.stdout_bytes, record.stderr_bytes = self.store.log_totals(exec_id)
        record.journal_records = self.store.next_seq("journal", exec_id)
        record.notes.append(f"taken over from {previous} ({why}) at epoch {epoch}")
        log.warning("execution %s: taken over from %s at epoch %d", exec_id, previous, epoch)
        ckpt = self.pages.latest(exec_id)
        # Stopped in a durable sleep or a pause by its latest checkpoint (nothing journaled
        # after it): it stays so here — the sleep's timer wakes it, `resume` resumes it.
        resting = ckpt is not None and record.journal_records <= ckpt.journal_seq
        if resting and ckpt is not None and ckpt.reason == "sleep":
            record.state = State.SLEEPING
            self.store.put_execution(record)
            self.timers.add(exec_id, ckpt.wake_at_ns)
            return record
        if resting and ckpt is not None and ckpt.reason == "pause":
            record.state = State.PAUSED
            self.store.put_execution(record)
            return record
        record.state = State.RUNNING
        self.store.put_execution(record)
        self.launcher.launch(record, restore=True, requested=time.monotonic())
        return record

    def promote(self, ref: str) -> ExecutionRecord:
        """`roost recover`: the operator says the owner is gone; this daemon's replica runs
        the execution at the next epoch."""
        record = self.get(ref)
        if self.owns(record):
            raise StateConflict(f"execution {record.id} is this daemon's already")
        if record.state.ended:
            raise StateConflict(f"execution {record.id} has ended ({record.state.value})")
        if record.migration or record.prepared:
            raise StateConflict(f"execution {record.id} is being migrated here: its source decides")
        return self.take_over(record.id, record.epoch + 1, "recovered by the operator")

    def freeze(self, frozen: bool) -> None:
        """Stop (SIGSTOP) or continue every worker: an owner that cannot vouch for its lease
        lets no guest go on meanwhile."""
        for live in self.lives.all():
            send_signal(live.worker, signal.SIGSTOP if frozen else signal.SIGCONT)

    def owns(self, record: ExecutionRecord) -> bool:
        """This daemon runs `record`'s execution (nobody else may)."""
        return self.lives.owns(record)

    def _wake(self, exec_id: str) -> None:
        """A durable sleep's deadline: restore the guest inside the poll it slept in."""
        record = self.store.get_execution(exec_id)
        if not self.owns(record) or record.migration:
            return          # its new owner wakes it; or `take_back` sets the timer again
        if record.state == State.SLEEPING and not self.sleep_counts(record):
            self.timers.add(exec_id, time.time_ns() + 200_000_000)   # its replicas lag: soon
            return
        if record.state == State.SLEEPING and exec_id not in self.lives and not self.lives.stopping:
            self.launcher.launch(record, restore=True, requested=time.monotonic())
        self.store.clear_timer(exec_id)

    def shutdown(self, grace_seconds: float = 10.0) -> None:
        """Stop every worker; their executions stay RUNNING in the store and resume when the
        daemon starts again."""
        self.timers.stop()
        with self.lives.lock:
            self.lives.stopping = True
        live = self.lives.all()
        deadline = time.monotonic() + grace_seconds
        for ex in live:
            ex.end_reason = SHUTDOWN
            if not (ex.checkpointable and requests.ask(ex, "suspend")):
                send_signal(ex.worker, signal.SIGKILL)
        # a checkpoint each, then the workers exit
        self.lives.wait_ended(max(0.0, deadline - time.monotonic()) / 2, lambda: not self.lives)
        for ex in self.lives.all():
            send_signal(ex.worker, signal.SIGKILL)
        self.lives.wait_ended(max(0.0, deadline - time.monotonic()), lambda: not self.lives)

    def fail(self, exec_id: str, error: str) -> None:
        """The execution cannot go on: FAILED, with `error` as its reason."""
        self._fail(self.store.get_execution(exec_id), error)

    def _fail(self, record: ExecutionRecord, error: str) -> None:
        record.state, record.error, record.exit_code = State.FAILED, error, -1
        record.finished_at = time.time()
        self.store.put_execution(record)

    # ---- start ----
    def start(self, spec: StartSpec) -> ExecutionRecord:
        if self.lives.stopping:
            raise StateConflict("roostd is shutting down; not starting new executions")
        requested = time.monotonic()
        self._admit(spec.memory_limit_bytes or self.default_memory_limit_bytes)
        self.launcher.http.check_prefixes(spec.allow_http)
        module = self.store.get_module(spec.module_sha256)
        self.modules.ensure_artifact(module.sha256, not spec.cooperative)
        vfs = mounted(spec.mounts, self.vfs_limits)
        limit = spec.memory_limit_bytes or self.default_memory_limit_bytes
        record = ExecutionRecord(
            id=secrets.token_hex(6), name=spec.name, module_sha256=module.sha256,
            module_name=module.name, argv=spec.argv, env=spec.env,
            mounts=[m for m, _ in spec.mounts], created_at=time.time(),
            memory_limit_bytes=limit, cooperative=spec.cooperative,
            checkpoint_every_seconds=spec.checkpoint_every_seconds or self.checkpoint_every_seconds,
            node_id=self.node_id, owner=self.node_id, owner_address=self.address,
            allow_http=list(spec.allow_http))
        self._create(record, spec.stdin, vfs.to_bytes())
        try:
            self.launcher.launch(record, restore=False, requested=requested)
        except Exception as e:
            self._fail(record, f"could not start: {e}")
            raise
        log.info("started execution %s (%s)", record.id, module.name)
        return record

    # Admission: what may run here at once (config limits.executions, limits.memory_total_bytes).
    max_executions: int = 1 << 30
    max_memory_total_bytes: int = 1 << 62

    def _admit(self, memory_limit_bytes: int) -> None:
        self.lives.admit(memory_limit_bytes, self.max_executions, self.max_memory_total_bytes)

    def responsive(self, timeout: float = 2.0) -> bool:
        """The supervisor's lock can be had within `timeout` (the watchdog asks)."""
        if not self.lives.lock.acquire(timeout=timeout):
            return False
        self.lives.lock.release()
        return True

    def runs(self, exec_id: str) -> bool:
        """A worker runs the execution here for this daemon, its owner (whatever the epoch)."""
        live = self.lives.get(exec_id)
        return live is not None and self.owns(live.record)

    def has_standby(self, exec_id: str) -> bool:
        return exec_id in self.standbys

    def stop_for_migration(self, exec_id: str, target: str, address: str, epoch: int,
                           timeout: float = 60.0) -> Uncommitted:
        """The source's side of a migration: see `Source.stop`."""
        return self.source.stop(self._running(exec_id, timeout), target, address, epoch, timeout)

    def is_running_here(self, exec_id: str, epoch: int) -> bool:
        """A worker runs the execution here as its owner at `epoch` (not one that a handover
        released and that has yet to exit)."""
        live = self.lives.get(exec_id)
        return live is not None and live.record.epoch == epoch and self.owns(live.record)

    def note_replica(self, exec_id: str, node: str) -> None:
        """`node` holds a replica of the execution (for inspect)."""
        def add(record: ExecutionRecord) -> bool:
            if not node or node in record.replicas:
                return False
            record.replicas = sorted({*record.replicas, node})
            return True
        live = self.lives.get(exec_id)
        if live is not None:
            add(live.record)                     # (written with its next change)
        else:
            self.store.update_execution(exec_id, add)

    # ---- checkpoint, pause, resume ----
    def _owned(self, ref: str) -> ExecutionRecord:
        """The record of an execution this daemon runs; another's is refused, naming it."""
        record = self.get(ref)
        if not self.owns(record):
            raise StateConflict(f"execution {record.id} runs on {record.owner} "
                                f"({record.owner_address}): ask it there")
        return record

    def _running(self, ref: str, timeout: float = 10.0) -> Live:
        """The running worker of an execution, to checkpoint, pause or migrate it. One being
        resumed after a restart (`recovering`), or whose worker is starting, is waited for
        (up to `timeout`): the request then goes to its worker as soon as it runs."""
        record = self._owned(ref)
        deadline = time.monotonic() + timeout
        while record.id in self.recovering and record.id not in self.lives:
            if time.monotonic() >= deadline:
                self._not_recovering(record.id)
            self.lives.wait_ended(min(0.1, max(0.0, deadline - time.monotonic())))
        live = self.lives.get(record.id)
        if live is None:
            state = self.get(record.id).state.value          # (as of now: waited, maybe)
            raise StateConflict(f"execution {record.id} is not running (it is {state})")
        with live.changed:
            live.changed.wait_for(lambda: live.running or self.lives.get(record.id) is not live,
                                  timeout=max(0.0, deadline - time.monotonic()))
        # (the pump sets `checkpointable` just after it wakes us: a moment to see it)
        settle = time.monotonic() + 0.1
        while live.running and not live.checkpointable and time.monotonic() < settle:
            time.sleep(0.002)
        if not live.checkpointable:
            raise StateConflict(f"execution {record.id} cannot be checkpointed yet "
                                f"({UNPREPARED_WHY if live.running else 'its worker is starting'})")
        return live

    def checkpoint(self, ref: str, timeout: float = 60.0) -> dict:
        """Checkpoint a running execution now; the stored checkpoint's numbers."""
        live = self._running(ref, timeout)
        n = requests.ask(live, "checkpoint")
        result = requests.await_answer(live, n, lambda: live.record.id not in self.lives, timeout)
        if result is None:
            if live.record.id not in self.lives:
                raise StateConflict(f"execution {live.record.id} ended before reaching a safepoint")
            raise TimedOut(f"execution {live.record.id} did not reach a safepoint in {timeout:g} s")
        return result

    def pause(self, ref: str, timeout: float = 60.0) -> ExecutionRecord:
        """Checkpoint and stop: the execution keeps no worker until `resume`. One in a durable
        sleep already stopped at its sleep's checkpoint: it only loses its timer (`resume`
        restores it into the same sleep, which ends at its original deadline)."""
        asleep = self._paused_asleep(ref)
        if asleep is not None:
            return asleep
        live = self._running(ref, timeout)
        requests.ask(live, "pause")
        with live.changed:
            live.changed.wait_for(lambda: live.record.id not in self.lives, timeout=timeout)
        if live.record.id in self.lives:
            raise TimedOut(f"execution {live.record.id} did not reach a safepoint in {timeout:g} s")
        return self.store.get_execution(live.record.id)

    def _paused_asleep(self, ref: str) -> ExecutionRecord | None:
        record = self._owned(ref)
        if record.state != State.SLEEPING or record.id in self.lives or record.migration:
            return None
        self.timers.cancel(record.id)
        self.store.clear_timer(record.id)
        record.state = State.PAUSED
        self.store.put_execution(record)
        return record

    def resume(self, ref: str) -> ExecutionRecord:
        record = self._owned(ref)
        if record.state != State.PAUSED or record.id in self.lives:
            raise StateConflict(f"execution {record.id} is not paused (it is {record.state.value})")
        record.error = ""
        self.launcher.launch(record, restore=True, requested=time.monotonic())
        return record

    # ---- queries ----
    def get(self, ref: str) -> ExecutionRecord:
        """The execution `ref` names (see `resolve`): every request taking an id comes here."""
        live = self.lives.get(ref)
        if live is not None:
            return live.record
        try:
            return self.store.get_execution(ref)
        except NotFound:
            exec_id = self.resolve(ref)
        return self.get(exec_id)

    def resolve(self, ref: str) -> str:
        """The id `ref` stands for, as docker resolves one: an id, else a name, else a unique
        prefix of an id. NotFound for none; InvalidRequest naming the candidates for a prefix
        (or a name kept twice by a roostd from before names were unique) matching several."""
        if ref in self.lives:
            return ref
        records = {r.id: r for r in self.store.list_executions()} | self.lives.records()
        if ref in records:
            return ref
        named = sorted(i for i, r in records.items() if r.name and r.name == ref)
        prefixed = sorted(i for i in records if i.startswith(ref))
        for matches, what in ((named, f'name "{ref}"'), (prefixed, f'"{ref}"')):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidRequest(f"{what} matches {len(matches)} executions: "
                                     f"{', '.join(matches)}")
        raise NotFound(f"execution {ref} not found")

    def list(self, include_ended: bool) -> list[ExecutionRecord]:
        """The executions this daemon owns: not the replicas it holds for peers, nor those that
        moved away (GetExecution still answers for both; the owner lists them)."""
        records = {r.id: r for r in self.store.list_executions()}
        records.update(self.lives.records())
        out = [r for r in records.values()
               if self.owns(r) and (include_ended or not r.state.ended)]
        return sorted(out, key=lambda r: r.created_at)

    def state_counts(self) -> dict[str, int]:
        """roost_executions{state}: the executions this daemon owns (as `list`), so a cluster's
        members together count each execution once."""
        counts = Counter({s.value: 0 for s in State})
        counts.update(r.state.value for r in self.list(include_ended=True))
        return dict(counts)

    def kill(self, ref: str) -> ExecutionRecord:
        record = self._owned(ref)
        self._not_recovering(record.id)
        live = self.lives.get(record.id)
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
        """Block until the execution has ended (see `watch.wait`); its record."""
        return watch.wait(self.store, self.lives, self.get(ref).id, timeout, is_active,
                          self.released)

    def logs(self, ref: str, from_seq: int, follow: bool, stream: int = 0,
             is_active: Callable[[], bool] = lambda: True, tail: int | None = None,
             since_ns: int | None = None) -> Iterator[LogEntry]:
        """Durable output records (seq, stream, data, time_ns) from `from_seq`, the last `tail`
        lines, those made durable at or after `since_ns` (see `watch.logs`)."""
        yield from watch.logs(self.store, self.lives, self.get(ref).id, from_seq, follow, stream,
                              is_active, self.released, tail, since_ns)

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
                host = self.pages.host_state(record.id, ckpt.number)
                return Vfs.restore(hoststate.decode(host, b"").vfs)
        return Vfs.from_bytes(self.store.vfs(record.id))

    # ---- removal: rm, prune, retention of ended executions (`roost rm`, `roost prune`) ----
    def _create(self, record: ExecutionRecord, stdin: bytes, vfs: bytes) -> None:
        """Store a new execution unless its name is taken, or its module was removed since the
        start read it: checked and written under `naming`, so two starts cannot both win.
        A name is unique among the executions this daemon holds (its own and its replicas);
        in a cluster, two members may each have one of the same name."""
        with self.naming:
            if record.name:
                taken = [r.id for r in self.store.list_executions() if r.name == record.name]
                if taken:
                    raise NameInUse(f'name "{record.name}" is already used by execution '
                                    f"{taken[0]}: remove it (roost rm {taken[0]}) or choose "
                                    "another name")
            if not self.store.has_module(record.module_sha256):
                raise NotFound(f"module {record.module_sha256} not found (it was removed)")
            self.store.create_execution(record, stdin, vfs)

    def remove(self, ref: str, force: bool = False) -> Removed:
        """Delete an ended execution and everything stored of it; `force` kills it first if it
        has not ended. Only its owner removes it (replicas on peers go with their own
        retention: the Peer API has no call to drop one)."""
        record = self.get(ref)
        if not self.owns(record):
            raise StateConflict(f"execution {record.id} runs on {record.owner} "
                                f"({record.owner_address}): remove it there")
        if record.state.ended:                # its outcome is stored; its worker may still go
            self.lives.wait_ended(5.0, lambda: record.id not in self.lives)
        if not record.state.ended or record.id in self.lives:
            if not force:
                raise StateConflict(f"execution {record.id} is {record.state.value}: kill it "
                                    "first, or remove it with force (roost rm -f)")
            self._kill_for_removal(record)
        before = self.store.used_bytes()
        self._forget(record.id)
        return Removed([record.id], max(0, before - self.store.used_bytes()))

    def _kill_for_removal(self, record: ExecutionRecord) -> None:
        """Kill an execution that `rm -f` removes; one with no worker to kill (left RUNNING by
        a daemon whose restart could not resume it) is removed as it is."""
        if record.migration or record.prepared:
            raise StateConflict(f"execution {record.id} is being migrated: remove it once "
                                "the migration has ended")
        try:
            self.kill(record.id)
        except StateConflict:
            pass                                  # not running: nothing to stop
        if record.id in self.lives:
            raise TimedOut(f"execution {record.id} did not stop in time: try again")

    def _forget(self, exec_id: str) -> None:
        """Everything of an execution that has no worker: its stored records (one
        transaction) and what this daemon keeps of it in memory."""
        self.timers.cancel(exec_id)
        self.recovering.discard(exec_id)
        self.unresumed.discard(exec_id)
        self.standbys.drop(exec_id)
        self.store.delete_execution(exec_id)
        _drop_cached(self.pages, exec_id)
        log.info("removed execution %s", exec_id)

    def prune(self, older_than_seconds: float, states: set[State], dry_run: bool) -> Removed:
        """Remove this daemon's ended executions (of `states`, all ended ones if empty) that
        ended at least `older_than_seconds` ago; a dry run only says which (and the bytes
        their records hold)."""
        wanted = states or {s for s in State if s.ended}
        cutoff = time.time() - older_than_seconds
        chosen = [r.id for r in self.list(include_ended=True)
                  if r.state.ended and r.state in wanted and r.id not in self.lives
                  and (r.finished_at or r.created_at) <= cutoff]
        if dry_run:
            return Removed(chosen, sum(self.store.execution_bytes(i) for i in chosen))
        before = self.store.used_bytes()
        for exec_id in chosen:
            self._forget(exec_id)
        return Removed(chosen, max(0, before - self.store.used_bytes()))

    def collect_ended(self, now: float | None = None) -> builtins.list[str]:
        """Retention: remove every ended execution this store holds (its own, and replicas
        of peers' — nothing else removes those) that ended more than
        `retain_ended_seconds` ago. 0 keeps them forever."""
        if not self.retain_ended_seconds:
            return []
        cutoff = (now or time.time()) - self.retain_ended_seconds
        old = [r.id for r in self.store.list_executions()
               if r.state.ended and r.id not in self.lives and not r.migration
               and (r.finished_at or r.created_at) <= cutoff]
        for exec_id in old:
            self._forget(exec_id)
        if old:
            log.info("retention: removed %d executions that ended more than %g s ago",
                     len(old), self.retain_ended_seconds)
        return old

    def start_collector(self) -> None:
        """The retention thread: `collect_ended` every tenth of the retention period (between
        0.5 s and 5 min), until roostd stops."""
        def run() -> None:
            while not self.lives.stopping:
                period = min(300.0, max(0.5, self.retain_ended_seconds / 10)) \
                    if self.retain_ended_seconds else 60.0
                time.sleep(period)
                try:
                    self.collect_ended()
                except Exception:             # a store error: logged, tried again next period
                    log.exception("retention: collecting ended executions failed")
        threading.Thread(target=run, name="retention", daemon=True).start()

    def module_users(self, sha256: str) -> builtins.list[ExecutionRecord]:
        """The executions held here (any state, replicas too) that run the module."""
        return [r for r in self.store.list_executions() if r.module_sha256 == sha256]

    def remove_module(self, digest: str, force: bool = False) -> tuple[int, int]:
        """Remove a module no execution held here still needs (an ended one's may go with
        `force`: its logs and files stay readable); (store bytes freed, cache files removed).
        Under `naming`, so no start creates an execution of it meanwhile."""
        with self.naming:
            users = self.module_users(digest)
            live = [r for r in users if not r.state.ended]
            if live or (users and not force):
                shown = live or users
                names = ", ".join(f"{r.id} ({r.state.value})" for r in shown[:10])
                more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
                advice = "remove them first (roost rm)" if live else \
                    "remove them first (roost rm), or remove the module with force (-f)"
                raise StateConflict(f"module {digest[:12]} is used by executions {names}{more}: "
                                    f"{advice}")
            before = self.store.used_bytes()
            files = self.modules.remove(digest)
            return max(0, before - self.store.used_bytes()), files


def _drop_cached(pages: PageStore, exec_id: str) -> None:
    """Drop the page maps PageStore keeps decoded for a removed execution (its caches have no
    call for that yet: a `PageStore.forget` would be the place)."""
    pages._recent_maps.pop(exec_id, None)
    for key in [k for k in pages._referenced if k[0] == exec_id]:
        pages._referenced.pop(key, None)


def mounted(mounts: list[tuple[str, list[Entry]]], limits: VfsLimits) -> Vfs:
    """The initial filesystem: the mounts copied in. Refused (RESOURCE_EXHAUSTED, naming
    the limit) when they alone hold more than an execution's files may."""
    vfs = Vfs()
    try:
        for guest_path, entries in mounts:
            vfs.add_mount(guest_path, entries)
    except (FsError, ValueError) as e:
        raise InvalidRequest(f"mount: {str(e)[:200]}") from e
    used = vfs.usage()
    for what, have, cap, key in (("bytes of files", used.bytes, limits.bytes, "vfs_bytes"),
                                 ("inodes", used.inodes, limits.inodes, "vfs_inodes"),
                                 ("directory entries", used.names, limits.inodes, "vfs_inodes")):
        if have > cap:
            raise LimitExceeded(f"mounts hold {have} {what}; an execution may hold at most "
                                f"{cap} (limits.{key} in roostd's config)")
    return vfs
