"""One guest instance in the worker: a module instantiated with roost's WASI in its own wasmtime
store, restored from a checkpoint if START names one; as a standby (a live migration's target),
following the checkpoints pushed to its daemon until GO; throttled on request; run to its end.

Its checkpoints are taken by `runtime.checkpointer.Checkpointer` (a guest of a prepared module
only: one with a gate at its safepoints).
"""
from __future__ import annotations

import ctypes
import threading
import time
from typing import cast

import numpy as np
import wasmtime

from roost.daemon import faults
from roost.daemon.checkpoint import frames as codec
from roost.daemon.checkpoint import hoststate, pagemap, staging
from roost.daemon.checkpoint.journal import Replay, ReplayDiverged
from roost.daemon.errors import LimitExceeded
from roost.daemon.http.settings import HttpSettings
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import Link
from roost.daemon.runtime import capture
from roost.daemon.runtime.checkpointer import Checkpointer, FaultGate
from roost.daemon.runtime.sinks import JournalSink, Output
from roost.daemon.runtime.vfs import Vfs, VfsLimits
from roost.daemon.runtime.wasi import GuestExit, GuestTrap, WasiHost, initial_state

PAGE_BYTES = codec.PAGE_BYTES


class Guest:
    """A module instantiated with roost's WASI, restored from a checkpoint if given."""

    def __init__(self, eng: wasmtime.Engine, start: msg.Start, link: Link) -> None:
        spec = start.spec
        ckpt = spec.checkpoint
        self.spec, self.link = spec, link
        self.store = wasmtime.Store(eng)
        if spec.memory_limit_bytes:
            self.store.set_limits(memory_size=spec.memory_limit_bytes)
        module = wasmtime.Module.deserialize_file(eng, spec.artifact)
        state = (hoststate.decode(start.host, start.stdin) if ckpt else
                 initial_state(list(spec.argv), list(spec.env), start.stdin, Vfs.from_bytes(start.vfs)))
        self.journal = JournalSink(link, self._replay(start))
        self.output = Output(link, spec.stdout_offset, spec.stderr_offset, self.journal,
                             durable=(spec.durable_stdout, spec.durable_stderr))
        self.host = WasiHost(state, self.output, self.journal, self.journal.replay,
                             limits=VfsLimits(**spec.vfs_limits),
                             http_settings=HttpSettings.from_meta(spec.http))
        self.host.http.flush = self.journal.flush
        self.host.http.hooks.sync = self.journal.sync
        self.host.http.hooks.event = lambda event: link.send_message(msg.HttpEvent(event))
        linker = wasmtime.Linker(eng)
        self.host.define(linker)
        self.gate: capture.Gate | FaultGate | None = capture.Gate() if spec.module else None
        if self.gate is not None:
            capture.define_safepoint(linker, self.gate)
        self.instance = linker.instantiate(self.store, module)
        exports = self.instance.exports(self.store)
        self.memory = cast(wasmtime.Memory, exports["memory"])     # (a WASI command: both are there)
        self.host.bind(self.store, self.memory)
        self.entry = cast(wasmtime.Func, exports["_start"])
        self.runner = capture.Runner(self.store, self.instance, dict(spec.module), self.host, self.gate) \
            if spec.module else None
        restore_began = time.monotonic()
        if ckpt:
            self._restore(start)
        self._stdin = start.stdin
        self._throttle = 0.0
        # A standby (a live migration's target) holds the memory of the checkpoints pushed to
        # its daemon, applying each (`apply`), and runs only when told to (`go`).
        self.standby = spec.standby
        self._applied = pagemap.decode(start.page_map, None).versions if ckpt and self.standby else None
        # Numbered on after any checkpoint the supervisor dropped as corrupt (`numbered_after`):
        # a number is never reused, so no replica holding the dropped one mistakes the new one.
        number = max(ckpt.number if ckpt else 0, spec.numbered_after or 0)
        # A standby arms now, not at GO: registering and protecting a GiB of memory takes tens
        # of milliseconds, which must not fall in a migration's downtime. The pages it applies
        # later are then reported dirty at its first checkpoint after GO: saved again, never
        # missed.
        self.checkpointer = self._arm(number, restored=ckpt is not None)
        self.restore_seconds = time.monotonic() - restore_began if ckpt else 0.0

    def _replay(self, start: msg.Start) -> Replay:
        """The journal to replay: START's records, or (`replay_streamed`) the REPLAY frames the
        control thread feeds as they come; each one the guest takes asks for the next."""
        spec = start.spec
        if not spec.replay_streamed:
            replay = Replay((), spec.journal_first_seq)
            replay.feed(start.replay, end=True)
            return replay
        link = self.link
        replay = Replay((), spec.journal_first_seq, streamed=True,
                        taken=lambda: link.send_message(msg.ReplayMore()))
        replay.feed(start.replay)
        return replay

    def _arm(self, number: int, restored: bool) -> Checkpointer | None:
        """Checkpointing from here on: the dirty-page tracker takes the memory as it is now as
        its baseline; the gate's hooks for fault points and durable sleep."""
        gate, runner = self.gate, self.runner
        if runner is None or not isinstance(gate, capture.Gate):
            return None
        checkpointer = Checkpointer(self, gate, runner, number, restored)
        if faults.ARMED:
            self.gate = FaultGate(checkpointer, gate, self.host)
        if self.spec.durable_sleep_seconds:
            self.host.suspend_sleep = checkpointer.suspend_sleep
            self.host.durable_sleep_ns = int(self.spec.durable_sleep_seconds * 1e9)
        return checkpointer

    def _restore(self, start: msg.Start) -> None:
        """Write the checkpoint's pages straight into the guest's memory: no full-size image
        in between, and pages never written stay unpopulated. Pages the instantiation's data
        segments wrote that the checkpoint holds as zeros are zeroed first."""
        ckpt = start.spec.checkpoint
        assert ckpt is not None and self.runner is not None
        initial = self.memory.data_len(self.store)
        self.runner.restore(capture.GuestImage(b"", ckpt.globals, start.stack), memory_bytes=ckpt.memory_bytes)
        versions = pagemap.decode(start.page_map, None).versions
        memory = staging.guest_pages(*self.memory_span())
        preset = min(initial // PAGE_BYTES, len(versions))
        memory[:preset][versions[:preset] == 0] = 0
        codec.restore_pages(memory, zip(start.frame_versions, start.frames), versions)

    # ---- standby (live migration target) ----
    def apply(self, m: msg.Apply) -> None:
        """A newer checkpoint of the execution this standby follows: the delta from the map it
        holds to the new one, and the frames of every version newer than the last one applied.
        Only the pages the delta names are written (or zeroed); memory grows to the new size."""
        checkpointer, _ = self._following()
        held = self._applied
        if held is None:
            raise ValueError("a standby that restored no checkpoint")
        have = self.memory.data_len(self.store)
        if m.memory_bytes > have:
            self.memory.grow(self.store, (m.memory_bytes - have) // 65536)
        applied = pagemap.PageMap(held.copy())
        pages, entries = pagemap.delta_entries(m.delta)
        versions = pagemap.with_delta(applied, pages, entries).versions
        changed = np.zeros(len(versions), bool)
        delta = entries[:, 0].astype(np.int64)
        changed[delta] = True
        memory = staging.guest_pages(*self.memory_span())
        memory[delta[versions[delta] == 0]] = 0
        codec.restore_pages(memory, zip(m.frame_versions, m.frames),
                            np.where(changed, versions, 0).astype(np.uint32))
        self._applied = versions
        checkpointer.number = m.number

    def go(self, m: msg.Go) -> None:
        """Become the execution: its final checkpoint's (already applied) memory, plus its
        globals, stack, host state, journal position and output offsets."""
        began = time.monotonic()
        checkpointer, runner = self._following()
        ckpt = m.manifest
        self.host.load(hoststate.decode(m.host, self._stdin))
        replay = Replay((), ckpt.journal_seq)
        replay.feed(m.replay, end=True)
        self.journal.replay = self.host.replay = replay
        self.output.offsets = {1: ckpt.stdout_offset, 2: ckpt.stderr_offset}
        runner.restore(capture.GuestImage(b"", ckpt.globals, m.stack), memory_bytes=ckpt.memory_bytes)
        checkpointer.number = ckpt.number
        self.standby = False
        self.restore_seconds = time.monotonic() - began

    def _following(self) -> tuple[Checkpointer, capture.Runner]:
        """A standby's checkpointer and runner (it has both: it restored a checkpoint)."""
        if self.checkpointer is None or self.runner is None:
            raise ValueError("a standby of a module that cannot be checkpointed")
        return self.checkpointer, self.runner

    # ---- requests (control thread) ----
    def ask(self, action: str, request_id: int) -> bool:
        """Ask for a checkpoint at the next safepoint; False if this guest cannot be captured."""
        return self.checkpointer.ask(action, request_id) if self.checkpointer is not None else False

    def decide(self, decision: str) -> None:
        if self.checkpointer is not None:
            self.checkpointer.decide(decision)

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

    # ---- running ----
    def run(self) -> msg.End:
        """Run to completion (or to a pause); the outcome (END without counters or files)."""
        try:
            checkpointer = self.checkpointer
            if self.runner is not None and checkpointer is not None:
                self.runner.run(checkpointer.on_unwound)
                if checkpointer.paused:
                    return msg.End("SLEEPING" if checkpointer.sleeping else "PAUSED", 0)
            else:
                self.entry(self.store)
            return msg.End("EXITED", 0)
        except GuestExit as e:
            return msg.End("EXITED", e.code)
        except (ReplayDiverged, GuestTrap, LimitExceeded) as e:
            return msg.End("FAILED", -1, error=str(e))
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            return msg.End("FAILED", -1, error=self._limit_note(describe_trap(e)))
        except Exception as e:   # a bug in a roost host function: fail this execution only
            return msg.End("FAILED", -1,
                           error=f"internal error in roost's host interface: {type(e).__name__}: {e}")

    def wait_background(self) -> float:
        """Seconds spent waiting for the last checkpoint's background write (a pause's
        checkpoint goes before END)."""
        return self.checkpointer.wait() if self.checkpointer is not None else 0.0

    def memory_span(self) -> tuple[int, int]:
        size = self.memory.data_len(self.store)
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        return base, size

    def memory_bytes(self) -> int:
        return self.memory.data_len(self.store)

    def _limit_note(self, error: str) -> str:
        """wasmtime's limiter makes memory.grow fail quietly (the guest sees ENOMEM), so a guest
        that then crashes does not say why: add it when memory ended near the limit."""
        limit = self.spec.memory_limit_bytes
        used = self.memory_bytes()
        if limit and used > limit - max(limit // 8, 1 << 20):
            summary, _, rest = error.partition("\n")
            note = f"(memory was {used} bytes, near its memory limit of {limit} bytes: a grow was likely refused)"
            return f"{summary} {note}\n{rest}".rstrip()
        return error


def describe_trap(e: Exception) -> str:
    """One summary line (wasmtime's 'Caused by' text), then the wasm backtrace."""
    lines = [ln.rstrip() for ln in str(e).splitlines()]
    if "Caused by:" in lines:
        at = lines.index("Caused by:")
        cause = "; ".join(ln.strip() for ln in lines[at + 1:] if ln.strip())
        trace = [ln for ln in lines[:at] if ln.strip() and "WASMTIME_BACKTRACE_DETAILS" not in ln]
        return "\n".join([cause, *trace])
    return "\n".join(ln for ln in lines if ln.strip()) or type(e).__name__
