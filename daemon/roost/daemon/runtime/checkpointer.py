"""Taking a guest's checkpoints, stage by stage, in the order they happen:

    1. request     a CONTROL request, the periodic timer, a durable sleep or a fault point asks
                   for one (`Checkpointer.ask`); requests while one is pending join it
    2. pre-copy    while the guest still runs, copy what is dirty (`staging.Stager.precopy`),
                   then ask the gate to unwind the guest at its next safepoint
    3. pause       the guest stands still (`Checkpointer.on_unwound`): copy the pages written
                   since, freeze the host state, write the manifest; a migration's final one
                   holds the guest stopped until the supervisor decides
    4. write       in the background while the guest runs again (`Checkpointer.write`):
                   compress the staged pages, stream them in PAGES parts, then the CHECKPOINT

The guest instance (`runtime.guest.Guest`) owns the memory, the host and the gate; this module
owns what happens to them between a request and the CHECKPOINT frame.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from roost.daemon import faults
from roost.daemon.checkpoint import dirty, hoststate, staging
from roost.daemon.checkpoint import frames as codec
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.faults import Fault
from roost.daemon.link import messages as msg
from roost.daemon.runtime import capture

if TYPE_CHECKING:
    from roost.daemon.runtime.guest import Guest

PART_PAGES = 2048            # 8 MiB of a checkpoint's pages per streamed part
# A longer time to safepoint names the function that held it (`CheckpointStats.held_by`);
# `[modules] safepoint_budget_seconds` overrides it through the module's manifest (registry).
SAFEPOINT_BUDGET_SECONDS = 0.010
STOPPING = ("pause", "suspend", "sleep", "migrate")   # checkpoints after which the worker exits


class Request:
    """A pending checkpoint request: why, who asked (the supervisor's ids: requests that come
    while one is pending are served by the same checkpoint), and when."""

    def __init__(self, action: str, request_id: int) -> None:
        self.action = action             # checkpoint | pause | suspend (daemon stopping) | sleep | migrate
        self.request_ids = [request_id] if request_id else []
        self.at = time.monotonic()
        self.wake_at_ns = 0              # sleep: unix ns when the guest's sleep ends

    def join(self, action: str, request_id: int) -> None:
        """Another request before this one was served: a stopping one wins."""
        if action in STOPPING:
            self.action = action
        if request_id:
            self.request_ids.append(request_id)


class PageTracking:
    """The dirty-page tracker over the guest's memory (it follows the memory's growth through
    `span`), and the pause's copy of what it finds (`staging.Stager`)."""

    def __init__(self, span: Callable[[], tuple[int, int]], restored: bool, max_bytes: int) -> None:
        base, size = span()
        self.tracker = dirty.make_tracker(span)
        self.tracker.start(base, size)
        if restored:                 # the restored image is the baseline, not a change
            self.tracker.collect()
        self.stager = staging.Stager(self.tracker, max_bytes)


class Background:
    """The one thread that writes checkpoints after their pause, one at a time. Kept, not
    started per checkpoint: starting a thread waits for it to run, inside the pause."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        threading.Thread(target=self._run, name="roost-checkpoint", daemon=True).start()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def submit(self, job: Callable, *args: Any) -> None:
        self._idle.clear()
        self._jobs.put((job, args))

    def wait(self) -> float:
        """Seconds spent waiting for the job in progress (0 when idle)."""
        if self._idle.is_set():
            return 0.0
        began = time.monotonic()
        self._idle.wait()
        return time.monotonic() - began

    def _run(self) -> None:
        while True:
            job, args = self._jobs.get()
            try:
                job(*args)
            except Exception:          # the link is gone: the worker is ending anyway
                traceback.print_exc()
            finally:
                self._idle.set()


class Kicked:
    """A thread that runs `job` once after each `kick` (kicks while it runs coalesce)."""

    def __init__(self, job: Callable[[], None], name: str) -> None:
        self._job = job
        self._kicked = threading.Event()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def kick(self) -> None:
        self._kicked.set()

    def _run(self) -> None:
        while True:
            self._kicked.wait()
            self._kicked.clear()
            try:
                self._job()
            except Exception:
                traceback.print_exc()


@dataclasses.dataclass(frozen=True)
class Paused:
    """What the pause hands the background write: the checkpoint's manifest and the stats
    measured so far, the frozen host state, the asyncify stack and the staged pages."""
    manifest: Manifest
    stats: CheckpointStats
    state: Any                       # hoststate's frozen WasiState
    stack: bytes
    staged: staging.Staged
    stopped: float                   # monotonic: when the guest stopped
    continuing: bool                 # the guest runs on after it (not a stopping checkpoint)


@dataclasses.dataclass(frozen=True)
class Streamed:
    """What the background write's compression and PAGES parts leave for the CHECKPOINT."""
    last_frames: list[bytes]         # the last part's frames
    stored: list[np.ndarray]         # page numbers each part stores ...
    zeroed: list[np.ndarray]         # ... and zeroes
    stored_bytes: int                # of all frames
    compress_wait_seconds: float     # waiting for compression
    send_wait_seconds: float         # sending PAGES parts
    parts: int


class Checkpointer:
    """The checkpoints of one guest: requests, pre-copy, the pause, the background write.
    `number` is the last checkpoint's (the next is numbered after it)."""

    def __init__(self, guest: Guest, gate: capture.Gate, runner: capture.Runner, number: int,
                 restored: bool) -> None:
        self.guest, self.link, self.number = guest, guest.link, number
        self.gate, self.runner = gate, runner     # (the gate itself, not a FaultGate around it)
        self.request: Request | None = None
        self.paused = False              # the guest stopped for good (run ends)
        self.sleeping = False
        self._lock = threading.Lock()
        self._decision, self._decided = "release", threading.Event()
        self._background = Background()
        self._precopier: Kicked | None = None
        self._precopy_stats = (0.0, 0)
        self.runner.copy_memory = False          # only dirty pages are copied (PageTracking)
        # The wait (its poll's start) the latest checkpoint was taken in, 0: none; restored
        # into one, the checkpoint it came from was.
        self.checkpointed_wait = guest.host.poll_started_ns if restored else 0
        self.pages = PageTracking(guest.memory_span, restored=restored,
                                  max_bytes=guest.spec.memory_limit_bytes or 1 << 32)
        self.encoder = codec.Encoder(threads=min(2, os.cpu_count() or 1))
        if self.pages.stager.precopies:
            self._precopier = Kicked(self._precopy, "roost-precopy")

    @property
    def tracker_name(self) -> str:
        return str(self.pages.tracker.name)

    # ---- 1. the request (any thread) ----
    def ask(self, action: str, request_id: int) -> bool:
        """Ask for a checkpoint at the next safepoint."""
        with self._lock:
            if self.request is None:
                self.request = Request(action, request_id)
            else:
                self.request.join(action, request_id)
        if self._precopier is not None:
            self._precopier.kick()            # pre-copy, then request the unwind
        else:
            self.gate.request_unwind()
        return True

    def unchanged(self) -> bool:
        """The guest has been in one wait since the latest checkpoint was taken inside it:
        another checkpoint would store nothing new (the periodic one is skipped)."""
        waiting = self.guest.host.waiting_since_ns
        return bool(waiting) and waiting == self.checkpointed_wait

    def suspend_sleep(self, deadline_ns: int) -> None:
        """Called inside poll_oneoff (guest thread): unwind right there for a durable sleep."""
        wake_at_ns = time.time_ns() + max(0, deadline_ns - self.guest.host.clocks.monotonic_ns())
        with self._lock:
            if self.request is None:
                self.request = Request("sleep", 0)
            else:                            # pending requests are answered by this one
                self.request.join("sleep", 0)
            self.request.wake_at_ns = wake_at_ns
        self.gate.unwind_now()

    # ---- 2. pre-copy (its own thread) ----
    def _precopy(self) -> None:
        """The pre-copy thread: copy what is dirty while the guest still runs (see
        `staging.Stager.precopy`), then ask the guest to stop; the pause copies only what it
        writes meanwhile."""
        began, pages = time.monotonic(), 0
        try:
            pages = self.pages.stager.precopy()
        finally:                              # on a failure the pause collects everything
            self._precopy_stats = (time.monotonic() - began, pages)
            self.gate.request_unwind()

    # ---- 3. the pause (guest thread) ----
    def on_unwound(self, image: capture.GuestImage) -> bool:
        """The guest is stopped at a safepoint. Only this is done while it stands still: find
        the pages written since the last checkpoint and copy them to the staging buffer, and
        take a frozen copy of the host state. Encoding, compression and the send happen in the
        background after the guest resumes; a checkpoint asked for while the previous one is
        still being written waits for it. True: the guest continues."""
        stopped = self.gate.stopped_at or time.monotonic()
        with self._lock:
            request, self.request = self.request, None
        request = request or Request("checkpoint", 0)
        self.number += 1
        self.checkpointed_wait = self.guest.host.poll_started_ns
        base, size = self.guest.memory_span()
        stage_began = time.monotonic()
        precopy_seconds, precopied = self._precopy_stats if self.pages.stager.precopied else (0.0, 0)
        staged, runs, waited = self.pages.stager.finish(base, size)
        state = self.guest.host.save()
        manifest = self._manifest(request, image, size, stopped)
        # (from the unwind's request: a pre-copy before it is not the guest's delay)
        to_safepoint = stopped - max(request.at, self.gate.unwind_asked_at)
        stats = CheckpointStats(
            time_to_safepoint_seconds=to_safepoint, held_by=self._held_by(to_safepoint),
            dirty_runs=runs, waited_seconds=waited,
            precopy_seconds=precopy_seconds, precopied_pages=precopied, pause_pages=staged.latest_pages,
            stage_seconds=time.monotonic() - stage_began, tracker=self.tracker_name)
        continuing = request.action not in STOPPING
        if not continuing:
            stats = dataclasses.replace(stats, pause_seconds=time.monotonic() - stopped)
        self._background.submit(self.write, Paused(manifest, stats, state, image.asyncify, staged, stopped,
                                                   continuing))
        if request.action == "migrate":
            continuing = self._held_for_migration()
        self.paused = not continuing
        self.sleeping = request.action == "sleep"
        return continuing

    def _held_by(self, to_safepoint: float) -> str | None:
        """The uninstrumented function whose loop held the request past the budget (its poll
        noted itself), None if none did or the budget held; the note is cleared either way."""
        note = self.runner.control.take_note()
        module = self.guest.spec.module or {}
        budget = float(module.get("safepoint_budget_seconds", SAFEPOINT_BUDGET_SECONDS))
        if note is None or to_safepoint <= budget:
            return None
        return capture.function_name(dict(module), note)    # (roostd logs it: `Committer.commit`)

    def _manifest(self, request: Request, image: capture.GuestImage, size: int, stopped: float) -> Manifest:
        guest = self.guest
        module = guest.spec.module or {}
        return Manifest(
            number=self.number, reason=request.action, requests=tuple(request.request_ids),
            journal_seq=guest.journal.position, stdout_offset=guest.output.offsets[1],
            stderr_offset=guest.output.offsets[2], memory_bytes=size,
            globals=tuple((name, value) for name, value in image.globals), created_at=time.time(),
            stopped_at=time.time() - (time.monotonic() - stopped), wake_at_ns=request.wake_at_ns,
            prepare_version=module.get("prepare_version"),
            instrumented=tuple(module.get("instrumented", ())))

    def _held_for_migration(self, timeout: float = 600.0) -> bool:
        """After a migration's final checkpoint the guest stays stopped here, its memory
        held, until the supervisor says: `resume` (the migration failed: go on, no restore)
        or `release` (it runs elsewhere now: exit — after the handover, so that this
        process's teardown does not compete with it). True to resume."""
        self._background.wait()
        self._decided.wait(timeout)
        with self._lock:                     # consumed: the next migration waits for its own
            decision, self._decision = self._decision, "release"
            self._decided.clear()
        if decision == "release" and faults.value(Fault.RELEASED_LINGER_MS):
            time.sleep(faults.value(Fault.RELEASED_LINGER_MS) / 1e3)
        return decision == "resume"

    def decide(self, decision: str) -> None:
        """`resume` or `release` a guest held for its migration (control thread); a decision
        that comes before the stop (the migration gave up while the guest ran on to it) waits
        for it."""
        with self._lock:
            self._decision = decision
            self._decided.set()

    # ---- 4. the background write (the Background thread) ----
    def write(self, paused: Paused) -> None:
        try:
            self._write(paused)
        finally:                             # the staging buffer is free for the next one
            self.pages.stager.done(len(paused.staged))

    def _write(self, paused: Paused) -> None:
        """Off the guest's critical path: encode the host state, compress the staged pages (at
        low priority, on the cores the guest leaves idle) and stream them to the supervisor in
        parts, so the daemon writes part k while part k+1 is compressed; the last part rides
        with the CHECKPOINT, after the journal records the checkpoint's position covers."""
        stats = paused.stats
        if paused.continuing:                # first let the guest's thread rewind: this
            resumed = self._resumed_after(paused.stopped)   # thread's Python would hold the GIL
            stats = dataclasses.replace(stats, pause_seconds=resumed - paused.stopped)
        began = time.monotonic()
        host = hoststate.encode(paused.state)
        staged = paused.staged.resolved()
        number, reason = paused.manifest.number, paused.manifest.reason
        out = self._stream(staged, number, urgent=not paused.continuing, fast=reason == "migrate")
        stats = dataclasses.replace(
            stats, dirty_pages=len(staged), stored_bytes=out.stored_bytes + len(host) + len(paused.stack),
            compress_seconds=time.monotonic() - began, compress_wait_seconds=out.compress_wait_seconds,
            send_wait_seconds=out.send_wait_seconds, parts=out.parts)
        message = msg.Checkpoint(paused.manifest, stats, host, paused.stack,
                                 np.concatenate(out.stored).astype("<u4").tobytes(),
                                 np.concatenate(out.zeroed).astype("<u4").tobytes(), tuple(out.last_frames))
        self.guest.journal.flush()           # the records before the checkpoint's position
        if number == faults.value(Fault.DIE_MID_CHECKPOINT_SEND):
            self.link.send_torn(*message.encode())
            faults.crash(Fault.DIE_MID_CHECKPOINT_SEND)
        self.link.send_message(message)
        if number <= faults.value(Fault.DIE_AFTER_CHECKPOINT):
            faults.crash(Fault.DIE_AFTER_CHECKPOINT)

    def _stream(self, staged: staging.Staged, number: int, urgent: bool, fast: bool) -> Streamed:
        """Compress the staged pages part by part, one part compressing ahead of the send, and
        send every part but the last as PAGES (the last rides with the CHECKPOINT)."""
        parts = staged.parts(PART_PAGES)
        encodings = [self.encoder.submit(part, urgent, fast) for part in parts[:2]]
        stored, zeroed, sent, stored_bytes = [], [], 0, 0
        waits = sends = 0.0                  # where the background's time went (manifest)
        frames: list[bytes] = []
        for i in range(len(parts)):
            t = time.monotonic()
            frames, part_stored, part_zeroed = encodings[i].result()
            waits += time.monotonic() - t
            if i + 2 < len(parts):           # keep one part compressing ahead of the send
                encodings.append(self.encoder.submit(parts[i + 2], urgent, fast))
            stored.append(part_stored)
            zeroed.append(part_zeroed)
            stored_bytes += sum(len(f) for f in frames)
            if i == len(parts) - 1:
                break
            t = time.monotonic()
            self.link.send_message(msg.Pages(number, sent, tuple(frames)))
            sends += time.monotonic() - t
            sent += len(frames)
            if number == faults.value(Fault.DIE_MID_CHECKPOINT_SEND):
                self.link.send_torn(*msg.Pages(number, sent, tuple(frames)).encode())
                faults.crash(Fault.DIE_MID_CHECKPOINT_SEND)
        return Streamed(frames, stored, zeroed, stored_bytes, waits, sends, len(parts))

    def _resumed_after(self, stopped: float, timeout: float = 5.0) -> float:
        """When the guest stopped at `stopped` was running again (its rewind done): the pause
        ends there, not when the pages were copied."""
        gate = self.runner.gate
        deadline = time.monotonic() + timeout
        while gate.resumed_at < stopped and time.monotonic() < deadline:
            gate.resumed.wait(0.01)
        return gate.resumed_at if gate.resumed_at >= stopped else time.monotonic()

    def wait(self) -> float:
        """Seconds spent waiting for the previous checkpoint's background write."""
        return self._background.wait()


class FaultGate:
    """Tests only (ROOST_FAULTS): sees every host call, to checkpoint or die at call N."""

    def __init__(self, checkpointer: Checkpointer, gate: capture.Gate, host: Any) -> None:
        self.checkpointer, self.gate, self.calls = checkpointer, gate, 0
        self.every = faults.value(Fault.CHECKPOINT_EVERY_CALLS)
        self.die_at = faults.value(Fault.DIE_AT_CALL)
        host.gate = self

    armed = True

    @property
    def unwinding(self) -> bool:
        return self.gate.unwinding

    def enter(self, name: str) -> bool:
        if not self.gate.rewinding:
            self.calls += 1
            if self.die_at and self.calls == self.die_at:
                faults.crash(Fault.DIE_AT_CALL)
            if self.every and self.calls % self.every == 0:
                self.checkpointer.ask("checkpoint", 0)
        return self.gate.enter(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gate, name)
