"""The worker process: runs one execution's guest in its own wasmtime store.

One process per execution, so a guest that crashes the runtime, or a `kill -9`, takes down only
itself. The supervisor may start a worker before it has work for it (a spare): the worker imports
wasmtime and builds its engine first, then blocks waiting for START, which makes an execution
start cost a module mmap and an instantiation rather than a Python start-up.

    python -m roost.daemon.worker FD        FD: the worker's end of the supervisor socketpair
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import wasmtime

from . import engine, journal, workerlink
from .journal import Replay, ReplayDiverged
from .vfs import Vfs
from .wasi import GuestExit, GuestTrap, WasiHost, initial_state
from .workerlink import END, READY, START, STATS, Link

STATS_INTERVAL_SECONDS = 1.0


class Guest:
    """A module instantiated with roost's WASI, ready to run `_start`."""

    def __init__(self, eng: wasmtime.Engine, spec: dict, blobs: list[bytes], link: Link) -> None:
        stdin, vfs, replay = blobs
        self.spec = spec
        self.store = wasmtime.Store(eng)
        if spec.get("memory_limit_bytes"):
            self.store.set_limits(memory_size=int(spec["memory_limit_bytes"]))
        module = wasmtime.Module.deserialize_file(eng, spec["artifact"])
        state = initial_state(spec["argv"], [tuple(kv) for kv in spec["env"]], stdin, Vfs.from_bytes(vfs))
        self.output = Output(link, spec.get("stdout_offset", 0), spec.get("stderr_offset", 0))
        self.host = WasiHost(state, self.output, lambda r: link.send_journal(journal.encode(r)),
                             Replay(journal.unpack_many(replay), spec.get("journal_first_seq", 0)))
        linker = wasmtime.Linker(eng)
        self.host.define(linker)
        self.instance = linker.instantiate(self.store, module)
        exports = self.instance.exports(self.store)
        self.memory = exports["memory"]
        self.host.bind(self.store, self.memory)
        self.entry = exports["_start"]

    def run(self) -> dict:
        """Run to completion; the outcome as END metadata."""
        try:
            self.entry(self.store)
            return {"state": "EXITED", "exit_code": 0}
        except GuestExit as e:
            return {"state": "EXITED", "exit_code": e.code}
        except (ReplayDiverged, GuestTrap) as e:
            return {"state": "FAILED", "exit_code": -1, "error": str(e)}
        except wasmtime.Trap as e:
            return {"state": "FAILED", "exit_code": -1, "error": self._limit_note(describe_trap(e))}
        except wasmtime.WasmtimeError as e:
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


class Output:
    """Guest stdout/stderr to the supervisor, each write tagged with its offset in its stream
    (a recovering guest writes again what is already durable; the supervisor drops that)."""

    def __init__(self, link: Link, stdout_offset: int, stderr_offset: int) -> None:
        self.link = link
        self.offsets = {1: stdout_offset, 2: stderr_offset}

    def __call__(self, fd: int, data: bytes) -> None:
        offset = self.offsets[fd]
        self.offsets[fd] = offset + len(data)
        self.link.send_output(fd, offset, data)


def describe_trap(e: Exception) -> str:
    """One summary line (wasmtime's 'Caused by' text), then the wasm backtrace."""
    lines = [ln.rstrip() for ln in str(e).splitlines()]
    if "Caused by:" in lines:
        at = lines.index("Caused by:")
        cause = "; ".join(ln.strip() for ln in lines[at + 1:] if ln.strip())
        trace = [ln for ln in lines[:at] if ln.strip() and "WASMTIME_BACKTRACE_DETAILS" not in ln]
        return "\n".join([cause, *trace])
    return "\n".join(ln for ln in lines if ln.strip()) or type(e).__name__


def _stats_loop(link: Link, host: WasiHost, done: threading.Event) -> None:
    while not done.wait(STATS_INTERVAL_SECONDS):
        try:
            link.send(STATS, {"calls": dict(host.calls)})
        except OSError:
            return


def serve(link: Link) -> int:
    """Wait for START, run the guest, report END with the final filesystem."""
    eng = engine.make_engine()
    frame = link.read_one()
    if frame is None or frame.kind != START:
        return 0     # supervisor went away before giving us work (a spare at shutdown)
    began = time.monotonic()
    try:
        guest = Guest(eng, frame.meta, frame.blobs, link)
    except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
        link.send(END, {"state": "FAILED", "exit_code": -1,
                        "error": "instantiation failed: " + describe_trap(e)}, [frame.blobs[1]])
        return 0
    link.send(READY, {"pid": os.getpid(), "setup_seconds": time.monotonic() - began})
    done = threading.Event()
    threading.Thread(target=_stats_loop, args=(link, guest.host, done), daemon=True).start()
    outcome = guest.run()
    done.set()
    outcome.update(calls=dict(guest.host.calls), memory_bytes=guest.memory_bytes())
    link.send(END, outcome, [guest.host.vfs.to_bytes()])
    return 0


def _die_with_parent() -> None:
    """A worker must never outlive its daemon: nobody would record what it does."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:      # the daemon died before prctl took effect
        os._exit(1)


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
