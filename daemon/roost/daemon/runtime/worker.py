"""The worker process: runs one execution's guest in its own wasmtime store.

One process per execution, so a guest that crashes the runtime, or a `kill -9`, takes down only
itself. The supervisor may start a worker before it has work for it (a spare): the worker imports
wasmtime and builds its engine first, then blocks waiting for START, which makes an execution
start cost a module mmap and an instantiation rather than a Python start-up.

A guest of a prepared module (see `prepare`) can be checkpointed: a CONTROL request, or the
periodic timer, asks the gate to unwind the guest at its next safepoint; the stopped guest is
captured (`capture.GuestImage` + the WASI host state + journal position + output offsets) and
sent as one CHECKPOINT frame, then it continues (or, for a pause, the worker exits).

    python -m roost.daemon.runtime.worker FD        FD: the worker's end of the supervisor socketpair
"""
from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable

import numpy as np
import wasmtime

from roost.daemon.runtime import capture
from roost.daemon.checkpoint import dirty
from roost.daemon.runtime import engine
from roost.daemon import faults
from roost.daemon import gctuning
from roost.daemon.checkpoint import hoststate
from roost.daemon.checkpoint import journal
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint import frames as codec
from roost.daemon.checkpoint import staging
from roost.daemon.errors import LimitExceeded
from roost.daemon.faults import Fault
from roost.daemon.checkpoint.frames import CorruptPage
from roost.daemon.checkpoint.journal import Replay, ReplayDiverged
from roost.daemon.lifeline import die_with_parent
from roost.daemon.runtime.vfs import Vfs, VfsLimits
from roost.daemon.runtime.wasi import GuestExit, GuestTrap, WasiHost, initial_state
from roost.daemon.link.transport import APPLIED, APPLY, CHECKPOINT, CONTROL, END, GO, PAGES, READY, START, STATS, Link

STATS_INTERVAL_SECONDS = 1.0
PAGE_BYTES = codec.PAGE_BYTES
PART_PAGES = 2048            # 8 MiB of a checkpoint's pages per streamed part
JOURNAL_BATCH_BYTES = 64 << 10
STOPPING = ("pause", "suspend", "sleep", "migrate")   # checkpoints after which the worker exits


class Output:
    """Guest stdout/stderr to the supervisor, each write tagged with its offset in its stream
    (a recovering guest writes again what is already durable; the supervisor drops that).
    Journal records still buffered go first: output never overtakes what it may depend on."""

    def __init__(self, link: Link, stdout_offset: int, stderr_offset: int,
                 journal: "JournalSink") -> None:
        self.link = link
        self.journal = journal
        self.offsets = {1: stdout_offset, 2: stderr_offset}

    def __call__(self, fd: int, data: bytes) -> None:
        self.journal.flush()
        offset = self.offsets[fd]
        self.offsets[fd] = offset + len(data)
        self.link.send_output(fd, offset, data)


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

    @property
    def position(self) -> int:
        return self.replay.first_seq + self.replay.pos + self.recorded


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

    def submit(self, job: Callable, *args) -> None:
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


class Guest:
    """A module instantiated with roost's WASI, restored from a checkpoint if given."""

    def __init__(self, eng: wasmtime.Engine, spec: dict, blobs: list[bytes], link: Link) -> None:
        stdin, vfs, replay = blobs[:3]
        self.spec, self.link = spec, link
        self.store = wasmtime.Store(eng)
        if spec.get("memory_limit_bytes"):
            self.store.set_limits(memory_size=int(spec["memory_limit_bytes"]))
        module = wasmtime.Module.deserialize_file(eng, spec["artifact"])
        ckpt = spec.get("checkpoint")
        state = (hoststate.decode(blobs[3], stdin) if ckpt else
                 initial_state(spec["argv"], [tuple(kv) for kv in spec["env"]], stdin, Vfs.from_bytes(vfs)))
        self.journal = JournalSink(link, Replay(journal.unpack_many(replay), spec.get("journal_first_seq", 0)))
        self.output = Output(link, spec.get("stdout_offset", 0), spec.get("stderr_offset", 0), self.journal)
        self.host = WasiHost(state, self.output, self.journal, self.journal.replay,
                             limits=VfsLimits(**spec.get("vfs_limits", {})))
        linker = wasmtime.Linker(eng)
        self.host.define(linker)
        manifest = spec.get("manifest")
        self.gate = capture.Gate() if manifest else None
        if self.gate is not None:
            capture.define_safepoint(linker, self.gate)
        self.instance = linker.instantiate(self.store, module)
        exports = self.instance.exports(self.store)
        self.memory = exports["memory"]
        self.host.bind(self.store, self.memory)
        self.entry = exports["_start"]
        self.runner = capture.Runner(self.store, self.instance, manifest, self.host, self.gate) if manifest else None
        restore_began = time.monotonic()
        if ckpt:
            self._restore(ckpt, blobs)
        self._stdin = stdin
        self._background = Background()
        self._precopier: Kicked | None = None
        self._precopy_stats = (0.0, 0)
        self.request: Request | None = None
        self.paused = False
        self.sleeping = False
        self._lock = threading.Lock()
        self._throttle = 0.0
        self._decision, self._decided = "release", threading.Event()
        # Numbered on after any checkpoint the supervisor dropped as corrupt (`numbered_after`):
        # a number is never reused, so no replica holding the dropped one mistakes the new one.
        self.checkpoints = max(int(ckpt["number"]) if ckpt else 0, int(spec.get("numbered_after", 0)))
        # A standby (a live migration's target) holds the memory of the checkpoints pushed to
        # its daemon, applying each (`apply`), and runs only when told to (`go`).
        self.standby = bool(spec.get("standby"))
        self._applied = pagemap.decode(blobs[5], None).versions if ckpt and self.standby else None
        # A standby arms now, not at GO: registering and protecting a GiB of memory takes tens
        # of milliseconds, which must not fall in a migration's downtime. The pages it applies
        # later are then reported dirty at its first checkpoint after GO: saved again, never
        # missed.
        self._arm(restored=bool(ckpt))
        self.restore_seconds = time.monotonic() - restore_began if ckpt else 0.0

    def _arm(self, restored: bool) -> None:
        """Checkpointing from here on: the dirty-page tracker takes the memory as it is now as
        its baseline; the gate's hooks for fault points and durable sleep."""
        spec = self.spec
        if self.runner is not None:
            self.runner.copy_memory = False         # only dirty pages are copied (PageTracking)
            self.pages = PageTracking(self._memory_span, restored=restored,
                                      max_bytes=int(spec.get("memory_limit_bytes") or 1 << 32))
            self.encoder = codec.Encoder(threads=min(2, os.cpu_count() or 1))
            if self.pages.stager.precopies:
                self._precopier = Kicked(self._precopy, "roost-precopy")
        if self.gate is not None and faults.ARMED:
            self.gate = FaultGate(self, self.gate)
        if self.gate is not None and spec.get("durable_sleep_seconds"):
            self.host.suspend_sleep = self._suspend_sleep
            self.host.durable_sleep_ns = int(float(spec["durable_sleep_seconds"]) * 1e9)

    # ---- standby (live migration target) ----
    def apply(self, meta: dict, blobs: list[bytes]) -> None:
        """A newer checkpoint of the execution this standby follows: the delta from the map it
        holds to the new one, and the frames of every version newer than the last one applied.
        Only the pages the delta names are written (or zeroed); memory grows to the new size."""
        size = int(meta["memory_bytes"])
        have = self.memory.data_len(self.store)
        if size > have:
            self.memory.grow(self.store, (size - have) // 65536)
        applied = pagemap.PageMap(self._applied.copy())
        pages, entries = pagemap.delta_entries(blobs[0])
        versions = pagemap.with_delta(applied, pages, entries).versions
        changed = np.zeros(len(versions), bool)
        delta = entries[:, 0].astype(np.int64)
        changed[delta] = True
        memory = staging.guest_pages(*self._memory_span())
        memory[delta[versions[delta] == 0]] = 0
        codec.restore_pages(memory, zip(meta["frame_versions"], blobs[1:]),
                               np.where(changed, versions, 0).astype(np.uint32))
        self._applied = versions
        self.checkpoints = int(meta["number"])

    def go(self, ckpt: dict, blobs: list[bytes]) -> None:
        """Become the execution: its final checkpoint's (already applied) memory, plus its
        globals, stack, host state, journal position and output offsets."""
        began = time.monotonic()
        host, stack, replay = blobs[:3]
        self.host.load(hoststate.decode(host, self._stdin))
        self.journal.replay = self.host.replay = Replay(journal.unpack_many(replay), int(ckpt["journal_seq"]))
        self.output.offsets = {1: int(ckpt["stdout_offset"]), 2: int(ckpt["stderr_offset"])}
        image = capture.GuestImage(b"", tuple(tuple(g) for g in ckpt["globals"]), stack)
        self.runner.restore(image, memory_bytes=int(ckpt["memory_bytes"]))
        self.checkpoints = int(ckpt["number"])
        self.standby = False
        self.restore_seconds = time.monotonic() - began

    def throttle(self, fraction: float) -> None:
        """Slow the guest to (1 - fraction) of its speed: a hold at a safepoint every 20 ms."""
        start = self._throttle == 0 and fraction > 0
        self._throttle = min(max(fraction, 0.0), 0.95)
        if start:
            threading.Thread(target=self._throttling, name="roost-throttle", daemon=True).start()

    def _throttling(self, period: float = 0.02) -> None:
        while self._throttle > 0 and self.gate is not None:
            f = self._throttle
            time.sleep(period * (1 - f))
            self.gate.hold(period * f)

    def _restore(self, ckpt: dict, blobs: list[bytes]) -> None:
        """Write the checkpoint's pages straight into the guest's memory: no full-size image
        in between, and pages never written stay unpopulated. Pages the instantiation's data
        segments wrote that the checkpoint holds as zeros are zeroed first."""
        size = int(ckpt["memory_bytes"])
        initial = self.memory.data_len(self.store)
        image = capture.GuestImage(b"", tuple(tuple(g) for g in ckpt["globals"]), blobs[4])
        self.runner.restore(image, memory_bytes=size)
        versions = pagemap.decode(blobs[5], None).versions
        memory = staging.guest_pages(*self._memory_span())
        preset = min(initial // PAGE_BYTES, len(versions))
        memory[:preset][versions[:preset] == 0] = 0
        codec.restore_pages(memory, zip(ckpt["frame_versions"], blobs[6:]), versions)

    # ---- checkpoint requests (any thread) ----
    def ask(self, action: str, request_id: int) -> bool:
        """Ask for a checkpoint at the next safepoint; False if this guest cannot be captured."""
        if self.gate is None:
            return False
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

    def _suspend_sleep(self, deadline_ns: int) -> None:
        """Called inside poll_oneoff (guest thread): unwind right there for a durable sleep."""
        wake_at_ns = time.time_ns() + max(0, deadline_ns - self.host.clocks.monotonic_ns())
        with self._lock:
            if self.request is None:
                self.request = Request("sleep", 0)
            else:                            # pending requests are answered by this one
                self.request.join("sleep", 0)
            self.request.wake_at_ns = wake_at_ns
        self.gate.unwind_now()

    def _on_unwound(self, image: capture.GuestImage) -> bool:
        """The guest is stopped at a safepoint. Only this is done while it stands still: find
        the pages written since the last checkpoint and copy them to the staging buffer, and
        take a frozen copy of the host state. Encoding, compression and the send happen in the
        background after the guest resumes; a checkpoint asked for while the previous one is
        still being written waits for it."""
        stopped = self.gate.stopped_at or time.monotonic()
        with self._lock:
            request, self.request = self.request, None
        request = request or Request("checkpoint", 0)
        self.checkpoints += 1
        base, size = self._memory_span()
        stage_began = time.monotonic()
        precopy_seconds, precopied = self._precopy_stats if self.pages.stager.precopied else (0.0, 0)
        staged, runs, waited = self.pages.stager.finish(base, size)
        state = self.host.save()
        meta = {"number": self.checkpoints, "reason": request.action, "requests": request.request_ids,
                "journal_seq": self.journal.position, "stdout_offset": self.output.offsets[1],
                "stderr_offset": self.output.offsets[2], "memory_bytes": size,
                "globals": [list(g) for g in image.globals], "created_at": time.time(),
                "stopped_at": time.time() - (time.monotonic() - stopped),
                "time_to_safepoint_seconds": stopped - request.at, "wake_at_ns": request.wake_at_ns,
                "prepare_version": self.spec["manifest"].get("prepare_version"),
                "dirty_runs": runs, "waited_seconds": waited, "precopy_seconds": precopy_seconds,
                "precopied_pages": precopied, "pause_pages": staged.latest_pages,
                "stage_seconds": time.monotonic() - stage_began, "tracker": self.pages.tracker.name}
        continuing = request.action not in STOPPING
        if not continuing:
            meta["pause_seconds"] = time.monotonic() - stopped
        self._background.submit(self._send_checkpoint, meta, state, image.asyncify, staged, stopped,
                                continuing)
        if request.action == "migrate":
            continuing = self._held_for_migration()
        self.paused = not continuing
        self.sleeping = request.action == "sleep"
        return continuing

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

    def _send_checkpoint(self, meta: dict, state, stack: bytes, staged: staging.Staged,
                         stopped: float, continuing: bool) -> None:
        try:
            self._write_checkpoint(meta, state, stack, staged, stopped, continuing)
        finally:                             # the staging buffer is free for the next one
            self.pages.stager.done(len(staged))

    def _write_checkpoint(self, meta: dict, state, stack: bytes, staged: staging.Staged,
                          stopped: float, continuing: bool) -> None:
        """Off the guest's critical path: encode the host state, compress the staged pages (at
        low priority, on the cores the guest leaves idle) and stream them to the supervisor in
        parts, so the daemon writes part k while part k+1 is compressed; the last part rides
        with the CHECKPOINT, after the journal records the checkpoint's position covers."""
        if continuing:                       # first let the guest's thread rewind: this
            resumed = self._resumed_after(stopped)   # thread's Python would hold the GIL
            meta["pause_seconds"] = resumed - stopped
        began = time.monotonic()
        host = hoststate.encode(state)
        staged = staged.resolved()
        meta["dirty_pages"] = len(staged)
        parts = staged.parts(PART_PAGES)
        urgent, fast = not continuing, meta["reason"] == "migrate"
        encodings = [self.encoder.submit(part, urgent, fast) for part in parts[:2]]
        stored, zeroed, sent, stored_bytes = [], [], 0, 0
        waits = sends = 0.0                  # where the background's time went (manifest)
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
            self.link.send(PAGES, {"number": meta["number"], "first_frame": sent}, frames)
            sends += time.monotonic() - t
            sent += len(frames)
            if meta["number"] == faults.value(Fault.DIE_MID_CHECKPOINT_SEND):
                self.link.send_torn(PAGES, {"number": meta["number"], "first_frame": sent}, frames)
                faults.crash(Fault.DIE_MID_CHECKPOINT_SEND)
        blobs = [host, stack, np.concatenate(stored).astype("<u4").tobytes(),
                 np.concatenate(zeroed).astype("<u4").tobytes(), *frames]
        meta["stored_bytes"] = stored_bytes + len(host) + len(stack)
        meta["compress_seconds"] = time.monotonic() - began
        meta["compress_wait_seconds"], meta["send_wait_seconds"] = waits, sends
        meta["parts"] = len(parts)
        self.journal.flush()                 # the records before the checkpoint's position
        if meta["number"] == faults.value(Fault.DIE_MID_CHECKPOINT_SEND):
            self.link.send_torn(CHECKPOINT, meta, blobs)
            faults.crash(Fault.DIE_MID_CHECKPOINT_SEND)
        self.link.send(CHECKPOINT, meta, blobs)
        if meta["number"] <= faults.value(Fault.DIE_AFTER_CHECKPOINT):
            faults.crash(Fault.DIE_AFTER_CHECKPOINT)

    def _resumed_after(self, stopped: float, timeout: float = 5.0) -> float:
        """When the guest stopped at `stopped` was running again (its rewind done): the pause
        ends there, not when the pages were copied."""
        gate = self.runner.gate
        deadline = time.monotonic() + timeout
        while gate.resumed_at < stopped and time.monotonic() < deadline:
            gate.resumed.wait(0.01)
        return gate.resumed_at if gate.resumed_at >= stopped else time.monotonic()

    def _wait_background(self) -> float:
        """Seconds spent waiting for the previous checkpoint's background write."""
        return self._background.wait()

    def _memory_span(self) -> tuple[int, int]:
        size = self.memory.data_len(self.store)
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        return base, size

    # ---- running ----
    def run(self) -> dict:
        """Run to completion (or to a pause); the outcome as END metadata."""
        try:
            if self.runner is not None:
                self.runner.run(self._on_unwound)
                if self.paused:
                    return {"state": "SLEEPING" if self.sleeping else "PAUSED", "exit_code": 0}
            else:
                self.entry(self.store)
            return {"state": "EXITED", "exit_code": 0}
        except GuestExit as e:
            return {"state": "EXITED", "exit_code": e.code}
        except (ReplayDiverged, GuestTrap, LimitExceeded) as e:
            return {"state": "FAILED", "exit_code": -1, "error": str(e)}
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            return {"state": "FAILED", "exit_code": -1, "error": self._limit_note(describe_trap(e))}
        except Exception as e:   # a bug in a roost host function: fail this execution only
            return {"state": "FAILED", "exit_code": -1,
                    "error": f"internal error in roost's host interface: {type(e).__name__}: {e}"}

    def memory_bytes(self) -> int:
        return self.memory.data_len(self.store)

    def _limit_note(self, error: str) -> str:
        """wasmtime's limiter makes memory.grow fail quietly (the guest sees ENOMEM), so a guest
        that then crashes does not say why: add it when memory ended near the limit."""
        limit = int(self.spec.get("memory_limit_bytes") or 0)
        used = self.memory_bytes()
        if limit and used > limit - max(limit // 8, 1 << 20):
            summary, _, rest = error.partition("\n")
            note = f"(memory was {used} bytes, near its memory limit of {limit} bytes: a grow was likely refused)"
            return f"{summary} {note}\n{rest}".rstrip()
        return error


class FaultGate:
    """Tests only (ROOST_FAULTS): sees every host call, to checkpoint or die at call N."""

    def __init__(self, guest: Guest, gate: capture.Gate) -> None:
        self.guest, self.gate, self.calls = guest, gate, 0
        self.every = faults.value(Fault.CHECKPOINT_EVERY_CALLS)
        self.die_at = faults.value(Fault.DIE_AT_CALL)
        guest.host.gate = self

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
                self.guest.ask("checkpoint", 0)
        return self.gate.enter(name)

    def __getattr__(self, name: str):
        return getattr(self.gate, name)


def describe_trap(e: Exception) -> str:
    """One summary line (wasmtime's 'Caused by' text), then the wasm backtrace."""
    lines = [ln.rstrip() for ln in str(e).splitlines()]
    if "Caused by:" in lines:
        at = lines.index("Caused by:")
        cause = "; ".join(ln.strip() for ln in lines[at + 1:] if ln.strip())
        trace = [ln for ln in lines[:at] if ln.strip() and "WASMTIME_BACKTRACE_DETAILS" not in ln]
        return "\n".join([cause, *trace])
    return "\n".join(ln for ln in lines if ln.strip()) or type(e).__name__


def _stats_loop(link: Link, guest: Guest, done: threading.Event) -> None:
    while not done.wait(STATS_INTERVAL_SECONDS):
        try:
            guest.journal.flush()
            link.send(STATS, {"calls": dict(guest.host.calls)})
        except OSError:
            return


def _control_loop(link: Link, guest: Guest) -> None:
    """CONTROL frames from the supervisor: checkpoint, pause and throttle requests."""
    while True:
        frames = link.read_batch()
        if frames is None:
            return
        for frame in frames:
            if frame.kind != CONTROL:
                continue
            if frame.meta["action"] == "throttle":
                guest.throttle(float(frame.meta.get("fraction", 0.0)))
            elif frame.meta["action"] in ("resume", "release"):
                guest.decide(frame.meta["action"])
            else:
                guest.ask(frame.meta["action"], int(frame.meta.get("request", 0)))


def _follow_standby(link: Link, guest: Guest) -> bool:
    """A standby's life before it runs: APPLY every newer checkpoint, until GO (True) or the
    supervisor lets it go (False)."""
    while True:
        frame = link.read_one()
        if frame is None:
            return False
        if frame.kind == APPLY:
            guest.apply(frame.meta, frame.blobs)
            link.send(APPLIED, {"number": frame.meta["number"]})
        elif frame.kind == GO:
            guest.go(frame.meta, frame.blobs)
            return True


def _periodic(guest: Guest, every: float, done: threading.Event) -> None:
    while not done.wait(every):
        guest.ask("checkpoint", 0)


def serve(link: Link) -> int:
    """Wait for START, run the guest, report END with the final filesystem."""
    eng = engine.make_engine()
    gctuning.freeze_startup_objects()        # a spare does it before it has work
    frame = link.read_one()
    if frame is None or frame.kind != START:
        return 0     # supervisor went away before giving us work (a spare at shutdown)
    began = time.monotonic()
    try:
        guest = Guest(eng, frame.meta, frame.blobs, link)
    except (wasmtime.WasmtimeError, wasmtime.Trap, ValueError, LimitExceeded) as e:
        link.send(END, {"state": "FAILED", "exit_code": -1,
                        "error": "instantiation failed: " + describe_trap(e)}, [frame.blobs[1]])
        return 0
    except CorruptPage as e:         # reported, never restored (the supervisor tries an older one)
        number = frame.meta["checkpoint"]["number"]
        link.send(END, {"state": "FAILED", "exit_code": -1, "corrupt_checkpoint": number,
                        "error": f"restoring checkpoint {number}: {e}"}, [frame.blobs[1]])
        return 0
    link.send(READY, _ready(guest, began))
    if guest.standby:
        try:
            if not _follow_standby(link, guest):
                return 0
        except (CorruptPage, ValueError, wasmtime.WasmtimeError) as e:
            link.send(END, {"state": "FAILED", "exit_code": -1, "error": f"standby: {e}"}, [b""])
            return 0
        link.send(READY, _ready(guest, began))
    done = threading.Event()
    threading.Thread(target=_stats_loop, args=(link, guest, done), daemon=True).start()
    threading.Thread(target=_control_loop, args=(link, guest), daemon=True).start()
    every = float(frame.meta.get("checkpoint_every_seconds") or 0)
    if every > 0:
        threading.Thread(target=_periodic, args=(guest, every, done), daemon=True).start()
    outcome = guest.run()
    guest._wait_background()          # a pause's checkpoint goes before END
    done.set()
    outcome.update(calls=dict(guest.host.calls), memory_bytes=guest.memory_bytes())
    guest.journal.flush()
    link.send(END, outcome, [guest.host.vfs.to_bytes()])
    return 0


def _ready(guest: Guest, began: float) -> dict:
    return {"pid": os.getpid(), "setup_seconds": time.monotonic() - began,
            "checkpointable": guest.gate is not None, "standby": guest.standby,
            "restore_seconds": guest.restore_seconds,
            "tracker": guest.pages.tracker.name if guest.runner is not None and not guest.standby else ""}


def _die_with_parent() -> None:
    """A worker must never outlive its daemon: nobody would record what it does."""
    die_with_parent()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the supervisor decides when we stop
    link = Link(socket.socket(fileno=int(argv[0])))
    try:
        return serve(link)
    except BrokenPipeError:
        return 1
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main())
