"""poll_oneoff: clock subscriptions really sleep; stdio and regular files are always ready.

Mimics wasmtime's preview1 as embedded by wasmtime-py (no blocking fast path): no
subscriptions is EINVAL; every fd subscription is ready at once (stdin is a byte string, files
are in memory) and reports nbytes=1 as wasmtime does; clocks are ready when their deadline has
passed; only when no fd subscription is present does the worker sleep until the earliest
deadline.

That wait is a safepoint: a checkpoint, pause or migration request wakes it at once (the gate's
`wake` event). The guest then unwinds inside this call, with its start time kept in
`poll_started_ns` (saved with the host state); after the rewind, here or on another host, the
call runs again and waits for what is left of the same deadline. Nothing of it was journaled:
only the call that returns is.

Timeouts are clamped to MAX_TIMEOUT_NS (about a century): a guest may ask for 2^64-1 ns, and
that must behave as a very long sleep (durable, killable), never overflow a wait, a timer or
the store. More than MAX_SUBSCRIPTIONS subscriptions answer EINVAL (Linux refuses a poll of
more descriptors than RLIMIT_NOFILE the same way): their parsed form is ~3x their bytes.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from roost.daemon.runtime.wasi import abi
from roost.daemon.runtime.wasi.abi import Errno, FsError
from roost.daemon.runtime.wasi.durable import Kind, hostcall

if TYPE_CHECKING:
    from roost.daemon.runtime.wasi.host import WasiHost

_U32 = 0xFFFF_FFFF
MAX_TIMEOUT_NS = 100 * 365 * 86400 * 10**9
MAX_SUBSCRIPTIONS = 1 << 16
SLEEP_SLICE_SECONDS = 86400.0       # one host sleep at most (time.sleep overflows far out)


def _deadline(host: WasiHost, clock_id: int, timeout: int, flags: int, now: int) -> int:
    """Absolute guest-monotonic deadline of a clock subscription made at guest time `now`."""
    absolute = flags & 1
    if clock_id == abi.CLOCK_MONOTONIC:
        rel = timeout - now if absolute else timeout
    elif clock_id == abi.CLOCK_REALTIME:
        rel = timeout - time.time_ns() if absolute else timeout
    else:
        raise FsError(Errno.INVAL)
    return now + min(max(rel, 0), MAX_TIMEOUT_NS)


def _fd_event(host: WasiHost, ud: int, tag: int, fd: int) -> bytes:
    e = host.fds.get(fd)
    flags = 0
    if tag == abi.EV_FD_READ:
        if e.kind == 'file':
            node = host.vfs.inodes[e.ino]
            flags = abi.EV_HANGUP if len(node.data) <= e.position else 0
        elif e.kind != 'stdin':
            raise FsError(Errno.BADF)
    elif e.kind not in ('stdout', 'stderr', 'file'):
        raise FsError(Errno.BADF)
    return abi.EVENT.pack(ud, 0, tag, 1, flags)


def _sleep_until(host: WasiHost, deadline: int) -> bool:
    """Wait for the guest-monotonic `deadline`. True when a checkpoint request came first (the
    caller unwinds the guest); a host without checkpoints just sleeps."""
    gate: Any = host.gate           # capture.Gate (or FaultGate); NoGate has no `wake`
    wake = getattr(gate, 'wake', None)
    while (left := deadline - host.clocks.monotonic_ns()) > 0:
        seconds = min(left / 1e9, SLEEP_SLICE_SECONDS)
        if wake is None:
            time.sleep(seconds)
            continue
        wake.clear()
        if gate.requested:           # (set before `wake`: a request after the clear wakes us)
            return True
        wake.wait(seconds)
    return False


def _interrupted(host: WasiHost, now: int, deadline: int) -> bool:
    """Sleep to `deadline`; True when the guest is unwinding instead (a checkpoint request
    woke the wait): this call runs again after the rewind, from the same start `now`.
    `waiting_since_ns` names the wait meanwhile (the periodic checkpoint skips a guest still
    in the wait its latest checkpoint was taken in: nothing changed)."""
    host.waiting_since_ns = now
    try:
        woken = _sleep_until(host, deadline)
    finally:
        host.waiting_since_ns = 0
    if not woken:
        return False
    host.poll_started_ns = now
    cast(Any, host.gate).unwind_now()          # (woken: a gate with requests)
    return True


@hostcall(Kind.READS_WORLD, 'iiii')
def poll_oneoff(host: WasiHost, subs: int, events: int, n: int, nevents: int) -> int:
    if n == 0 or n > MAX_SUBSCRIPTIONS:
        return Errno.INVAL
    mem = host.mem()
    raw = mem.read(subs, abi.SUBSCRIPTION.size * n)
    parsed = [abi.SUBSCRIPTION.unpack_from(raw, i * abi.SUBSCRIPTION.size) for i in range(n)]
    # A poll resumed after a durable sleep counts its timeouts from its original start.
    now, host.poll_started_ns = host.poll_started_ns or host.clocks.monotonic_ns(), 0
    clocks, fd_events = [], []
    for ud, tag, word, timeout, _prec, flags in parsed:
        if tag == abi.EV_CLOCK:
            clocks.append((ud, _deadline(host, word & _U32, timeout, flags, now)))
        elif tag in (abi.EV_FD_READ, abi.EV_FD_WRITE):
            fd_events.append((ud, tag, word & _U32))
        else:
            return Errno.INVAL
    if not fd_events:
        deadline = min(d for _, d in clocks)
        if _durable_sleep(host, now, deadline) or _interrupted(host, now, deadline):
            return 0
    out = _ready(host, parsed, clocks)
    mem.write(events, b''.join(out))
    mem.put_u32(nevents, len(out))
    return 0


def _durable_sleep(host: WasiHost, now: int, deadline: int) -> bool:
    """A long sleep is not spent in a worker: checkpoint the guest in this call and release the
    worker; a stored timer restores it at the deadline, when this same call runs again (and
    finds its original start in `poll_started_ns`). True when the guest is unwinding."""
    if host.suspend_sleep is None or deadline - host.clocks.monotonic_ns() <= host.durable_sleep_ns:
        return False
    host.poll_started_ns = now
    host.suspend_sleep(deadline)
    return True


def _ready(host: WasiHost, parsed: list, clocks: list) -> list[bytes]:
    now = host.clocks.monotonic_ns()
    out, ci = [], 0
    for ud, tag, word, *_ in parsed:
        if tag == abi.EV_CLOCK:
            if clocks[ci][1] <= now:
                out.append(abi.EVENT.pack(ud, 0, abi.EV_CLOCK, 0, 0))
            ci += 1
        else:
            out.append(_fd_event(host, ud, tag, word & _U32))
    return out
