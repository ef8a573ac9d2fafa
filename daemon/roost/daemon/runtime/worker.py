"""The worker process: runs one execution's guest in its own wasmtime store.

One process per execution, so a guest that crashes the runtime, or a `kill -9`, takes down only
itself. The supervisor may start a worker before it has work for it (a spare): the worker imports
wasmtime and builds its engine first, then blocks waiting for START, which makes an execution
start cost a module mmap and an instantiation rather than a Python start-up.

A guest of a prepared module (see `prepare`) can be checkpointed: a CONTROL request, or the
periodic timer, asks the gate to unwind the guest at its next safepoint; the stopped guest is
captured (`capture.GuestImage` + the WASI host state + journal position + output offsets) and
sent as one CHECKPOINT frame, then it continues (or, for a pause, the worker exits).

This module is the process: its entry point and the loops around the guest (stats, control
requests, a standby's following); `guest` is the instance, `checkpointer` takes its
checkpoints, `sinks` carries its output and journal records, `link.messages` the frames.

    python -m roost.daemon.runtime.worker FD        FD: the worker's end of the supervisor socketpair
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import threading
import time

import wasmtime

from roost.daemon import gctuning
from roost.daemon.errors import CorruptCheckpoint, CorruptPage, FormatError, LimitExceeded
from roost.daemon.lifeline import die_with_parent
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import APPLY, CONTROL, GO, REPLAY, START, SYNCED, Frame, Link
from roost.daemon.runtime import engine
from roost.daemon.runtime.guest import Guest, describe_trap

STATS_INTERVAL_SECONDS = 1.0
POLICY_TICK_SECONDS = 0.1     # the checkpoint policy looks this often
JOURNAL_BOUND = 20_000        # journal records between periodic checkpoints, at most (~0.1 s of replay)


def _stats_loop(link: Link, guest: Guest, done: threading.Event) -> None:
    while not done.wait(STATS_INTERVAL_SECONDS):
        try:
            guest.journal.flush()
            link.send_message(msg.Stats(dict(guest.host.calls)))
        except OSError:
            return


def _control_loop(link: Link, guest: Guest) -> None:
    """CONTROL frames from the supervisor: checkpoint, pause and throttle requests; SYNCED
    answers (a guest's HTTP request waits for one); REPLAY, the journal a restored guest
    replays, streamed after START."""
    while True:
        frames = link.read_batch()
        if frames is None:
            guest.journal.close()
            guest.journal.replay.close()
            return
        for frame in frames:
            if frame.kind == REPLAY:         # the journal to replay, a range at a time
                chunk = msg.ReplayChunk.decode(frame)
                guest.journal.replay.feed(chunk.records, chunk.end)
                continue
            if frame.kind == SYNCED:
                guest.journal.synced(msg.Synced.decode(frame).n)
                continue
            if frame.kind != CONTROL:
                continue
            control = msg.Control.decode(frame)
            if control.action == msg.THROTTLE:
                guest.throttle(control.fraction or 0.0)
            elif control.action in msg.DECISIONS:
                guest.decide(control.action)
            else:
                guest.ask(control.action, control.request or 0)


def _follow_standby(link: Link, guest: Guest) -> bool:
    """A standby's life before it runs: APPLY every newer checkpoint, until GO (True) or the
    supervisor lets it go (False)."""
    while True:
        frame = link.read_one()
        if frame is None:
            return False
        if frame.kind == APPLY:
            apply = msg.Apply.decode(frame)
            guest.apply(apply)
            link.send_message(msg.Applied(apply.number))
        elif frame.kind == GO:
            guest.go(msg.Go.decode(frame))
            return True


def _periodic(guest: Guest, every: float, done: threading.Event) -> None:
    """The checkpoint policy, which bounds what a recovery re-executes: a checkpoint every
    `every` seconds, or sooner once JOURNAL_BOUND records were journaled since the last one
    (their replay, a few us each, is the rest of a recovery); none while the guest is still
    in the wait the latest one was taken in (nothing changed)."""
    due, mark = time.monotonic() + every, guest.journal.position
    while not done.wait(min(every, POLICY_TICK_SECONDS)):
        now, position = time.monotonic(), guest.journal.position
        if now < due and position - mark < JOURNAL_BOUND:
            continue
        due, mark = now + every, position
        if guest.checkpointer is not None and guest.checkpointer.unchanged():
            continue
        guest.ask("checkpoint", 0)


def _instantiate(eng: wasmtime.Engine, start_frame: Frame, link: Link) -> Guest | None:
    """The guest of START; None when that failed (END is sent: the supervisor's answer)."""
    vfs = bytes(start_frame.blobs[1]) if len(start_frame.blobs) > 1 else b""   # (bytes: no copy)
    start = None
    try:
        start = msg.Start.decode(start_frame)
        return Guest(eng, start, link)
    except (wasmtime.WasmtimeError, wasmtime.Trap, ValueError, LimitExceeded, FormatError,
            CorruptCheckpoint) as e:
        link.send_message(msg.End("FAILED", -1, error="instantiation failed: " + describe_trap(e), vfs=vfs))
    except CorruptPage as e:         # reported, never restored (the supervisor tries an older one)
        number = start.spec.checkpoint.number if start and start.spec.checkpoint else 0
        link.send_message(msg.End("FAILED", -1, corrupt_checkpoint=number,
                                  error=f"restoring checkpoint {number}: {e}", vfs=vfs))
    return None


def serve(link: Link) -> int:
    """Wait for START, run the guest, report END with the final filesystem."""
    eng = engine.make_engine()
    gctuning.freeze_startup_objects()        # a spare does it before it has work
    frame = link.read_one()
    if frame is None or frame.kind != START:
        return 0     # supervisor went away before giving us work (a spare at shutdown)
    began = time.monotonic()
    guest = _instantiate(eng, frame, link)
    if guest is None:
        return 0
    link.send_message(_ready(guest, began))
    if guest.standby:
        try:
            if not _follow_standby(link, guest):
                return 0
        except (CorruptPage, CorruptCheckpoint, ValueError, wasmtime.WasmtimeError) as e:
            link.send_message(msg.End("FAILED", -1, error=f"standby: {e}", vfs=b""))
            return 0
        link.send_message(_ready(guest, began))
    done = threading.Event()
    threading.Thread(target=_stats_loop, args=(link, guest, done), daemon=True).start()
    threading.Thread(target=_control_loop, args=(link, guest), daemon=True).start()
    every = guest.spec.checkpoint_every_seconds
    if every > 0:
        threading.Thread(target=_periodic, args=(guest, every, done), daemon=True).start()
    outcome = guest.run()
    guest.wait_background()          # a pause's checkpoint goes before END
    done.set()
    end = dataclasses.replace(outcome, calls=dict(guest.host.calls), memory_bytes=guest.memory_bytes(),
                              vfs=guest.host.vfs.to_bytes())
    guest.journal.flush()
    link.send_message(end)
    return 0


def _ready(guest: Guest, began: float) -> msg.Ready:
    tracker = guest.checkpointer.tracker_name if guest.checkpointer is not None and not guest.standby else ""
    return msg.Ready(pid=os.getpid(), setup_seconds=time.monotonic() - began,
                     checkpointable=guest.gate is not None, standby=guest.standby,
                     restore_seconds=guest.restore_seconds, tracker=tracker)


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
