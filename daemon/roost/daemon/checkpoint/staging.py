"""The pause's copy: find a checkpoint's dirty pages and copy them out of the stopped guest.

While the guest stands still at a safepoint the worker asks the dirty-page tracker which pages
were written since the last checkpoint and copies them out of linear memory into the staging
buffer; then the guest resumes, and compression and the send read the copy. This is the only
part of a checkpoint whose cost can grow inside the pause, so:

- a **pre-copy** does most of it before the pause, while the guest still runs: collect and copy
  the dirty pages, then ask the guest to stop; the pause collects again and copies only the
  pages written since the pre-copy, and those copies supersede the pre-copy's (the pre-copy's
  collect re-armed them before copying, so a page written during its copy is always collected
  again). The pause then costs the scan of memory plus what the guest wrote in the last few
  milliseconds, whatever the size of the dirty set (only with a tracker whose collect is cheap
  and exact while the guest runs: userfaultfd's);
- the staging buffer is reused from checkpoint to checkpoint (one checkpoint at a time owns
  it), and pre-faulted (MAP_POPULATE) and sized ahead for the next checkpoint after each one:
  a fresh page costs a fault and a zeroing, which would double the copy's cost (and ~10 us on
  a VM whose host reclaims free memory). It is sized for the smaller of the last two
  checkpoints, so one large checkpoint (the first, full one) does not keep a copy of all memory
  resident, while a guest that dirties much every time keeps its buffer;
- a few runs are copied with one memmove each, many long runs with a slice copy each,
  scattered pages with one gather (numpy `take`: a C loop of 4 KiB copies, no Python per page).

The pause runs on the guest's thread alone: with a helper thread taking part of the scan, the
helper's wake-up and the GIL cost more than the split saves (measured on 2 vCPUs).
"""
from __future__ import annotations

import ctypes
import mmap
import threading
import time

import numpy as np

from roost.daemon.checkpoint.dirty import DirtyTracker, PageRuns, accessible_bytes

PAGE_BYTES = 4096
_SHRINK_FLOOR_BYTES = 16 << 20   # buffers below this are never shrunk: not worth a remap
_SLACK = 1.25                    # room for the dirty set to grow a little between checkpoints
_RUNS_GATHER_RATIO = 8           # runs averaging fewer pages than this: gather page by page

Piece = tuple[np.ndarray, np.ndarray]
"""Page indexes (u32) and a (n, 4096) uint8 view of those pages' bytes."""


class Staged:
    """The dirty pages of one checkpoint, as pieces (each in page order); with a pre-copy,
    `earlier` holds its pieces, some of them superseded by a page of `pieces` (see `resolved`)."""

    __slots__ = ("pieces", "earlier")

    def __init__(self, pieces: list[Piece], earlier: list[Piece] | None = None) -> None:
        self.pieces = pieces
        self.earlier = earlier or []

    def resolved(self) -> "Staged":
        """One version of every page: the pause's copy wins over the pre-copy's (the page was
        written after it). Reads every index once: call after the guest resumed."""
        if not self.earlier:
            return self
        later = self.indexes
        kept: list[Piece] = []
        for indexes, pages in self.earlier:
            fresh = ~np.isin(indexes, later, assume_unique=True)
            kept += [(indexes[a:b], pages[a:b]) for a, b in _true_runs(fresh)]
        return Staged(kept + self.pieces)

    @property
    def latest_pages(self) -> int:
        """Pages copied in the pause (not counting a pre-copy's)."""
        return sum(len(indexes) for indexes, _ in self.pieces)

    def __len__(self) -> int:
        """Pages staged (before `resolved`, a page staged twice counts twice)."""
        return sum(len(indexes) for indexes, _ in self.pieces + self.earlier)

    @property
    def indexes(self) -> np.ndarray:
        if not self.pieces:
            return np.empty(0, np.uint32)
        return np.concatenate([indexes for indexes, _ in self.pieces])

    def parts(self, max_pages: int) -> list[list[Piece]]:
        """The pieces cut and grouped into parts of at most `max_pages` pages, in order."""
        parts: list[list[Piece]] = [[]]
        room = max_pages
        for indexes, pages in self.pieces:
            at = 0
            while at < len(indexes):
                if room == 0:
                    parts.append([])
                    room = max_pages
                take = min(room, len(indexes) - at)
                parts[-1].append((indexes[at:at + take], pages[at:at + take]))
                at += take
                room -= take
        return parts


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) spans where `mask` is True: slices of a piece are views, where a boolean index
    would copy all of it (a page of a 512 MiB pre-copy superseded would copy 512 MiB)."""
    if mask.all():
        return [(0, len(mask))] if len(mask) else []
    edges = np.flatnonzero(np.diff(np.r_[False, mask, False].astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


class StagingBuffer:
    """Pre-faulted page slots, handed out in order (a pre-copy's first, then its pause's)."""

    def __init__(self) -> None:
        self._segments: list[np.ndarray] = []
        self._addresses: list[int] = []   # of each segment's first byte
        self._used = 0                 # slots handed out from the last segment
        self._recent = [0, 0]          # dirty pages of the last two checkpoints
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """Pages the buffer holds without allocating."""
        return sum(len(s) for s in self._segments)

    def rewind(self) -> None:
        """Hand slots out from the start again (the previous checkpoint's copy is consumed)."""
        with self._lock:
            del self._segments[1:], self._addresses[1:]
            self._used = 0

    def take(self, pages: int) -> tuple[np.ndarray, int]:
        """`pages` free slots, (pages, 4096), and their address; allocates a segment when the
        buffer is full."""
        with self._lock:
            if not self._segments or len(self._segments[-1]) - self._used < pages:
                self._add(pages)
            out = self._segments[-1][self._used:self._used + pages]
            address = self._addresses[-1] + self._used * PAGE_BYTES
            self._used += pages
            return out, address

    def _add(self, pages: int) -> None:
        segment, address = _allocate(pages)
        self._segments.append(segment)
        self._addresses.append(address)
        self._used = 0

    def _replace(self, pages: int) -> None:
        with self._lock:
            self._segments, self._addresses = [], []
            self._add(pages)

    def fit(self, dirty_pages: int) -> None:
        """After a checkpoint of `dirty_pages` pages (its staged pages no longer needed): size
        the buffer for the next one."""
        self._recent = [self._recent[1], dirty_pages]
        want = int(min(self._recent) * _SLACK) + 1
        have = len(self._segments[0]) if self._segments else 0
        shrink = have * PAGE_BYTES > _SHRINK_FLOOR_BYTES and have > 2 * want
        if want > have or shrink:
            self._replace(want)
        self.rewind()


def _allocate(pages: int) -> tuple[np.ndarray, int]:
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    raw = mmap.mmap(-1, max(1, pages) * PAGE_BYTES, flags=flags)
    address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    return np.frombuffer(raw, np.uint8).reshape(-1, PAGE_BYTES), address


def copy_runs(memory: np.ndarray, base: int, runs: PageRuns, out: np.ndarray, to: int) -> np.ndarray:
    """Copy the pages of `runs` from `memory` ((pages, 4096) at address `base`) into `out`
    (at address `to`); their indexes. A few runs are copied with one memmove each (no numpy
    call: see PageRuns), many long ones with a slice copy each, scattered pages with a gather."""
    if runs.is_small:
        at = to
        for first, end in zip(runs._starts, runs._ends):
            ctypes.memmove(at, base + first * PAGE_BYTES, (end - first) * PAGE_BYTES)
            at += (end - first) * PAGE_BYTES
        return np.array(runs.tolist(), dtype=np.uint32)
    indexes = runs.pages()
    n = len(indexes)
    if n and len(runs) * _RUNS_GATHER_RATIO <= n:
        at = 0
        for first, end in runs.spans():
            out[at:at + end - first] = memory[first:end]
            at += end - first
    elif n:
        np.take(memory, indexes, axis=0, out=out)
    return indexes.astype(np.uint32)


class Stager:
    """Collects and copies the dirty pages of each checkpoint (see the module docstring).

    One checkpoint at a time owns the staging buffer, from its pre-copy or its pause until the
    background write has consumed the staged pages (`done`):

        IDLE -precopy-> PRECOPYING -> PRECOPIED -finish-> WRITING -done-> IDLE
        IDLE ----------------------------------finish-> WRITING

    A pre-copy never runs beside a pause's collect (it would take pages the pause must
    report), and neither starts before the previous checkpoint's pages are consumed.
    """

    IDLE, PRECOPYING, PRECOPIED, WRITING = range(4)

    def __init__(self, tracker: DirtyTracker, max_bytes: int = 1 << 32) -> None:
        self.tracker = tracker
        self.max_bytes = max_bytes           # the most the guest's memory can grow to
        self.buffer = StagingBuffer()
        self.state = self.IDLE
        self._changed = threading.Condition()
        self._precopied: list[Piece] = []
        self._waited = 0.0                   # this checkpoint, for the previous one's write
        self._view: tuple[int, int, np.ndarray] | None = None

    @property
    def precopies(self) -> bool:
        """Whether `precopy` is worth calling with this tracker."""
        return self.tracker.concurrent

    @property
    def precopied(self) -> bool:
        """A pre-copy waits for the pause that completes it."""
        return self.state == self.PRECOPIED

    def precopy(self) -> int:
        """While the guest runs (any thread but the guest's): collect and copy the pages
        written since the last checkpoint; pages staged (0 if a pre-copy already waits)."""
        with self._changed:
            self._waited = self._wait_while(self.WRITING)
            if self.state != self.IDLE:
                return 0
            self.state = self.PRECOPYING
        try:
            runs = self.tracker.collect_runs(accessible_bytes(self.tracker.base, self.max_bytes))
            try:
                self._precopied = self._copy(self.tracker.base, self.tracker.size, runs)
            except BaseException:
                self.tracker.mark(0, self.tracker.size // PAGE_BYTES)
                raise
        except BaseException:
            self._set(self.IDLE)
            raise
        self._set(self.PRECOPIED)
        return runs.count

    def finish(self, base: int, size: int) -> tuple[Staged, int, float]:
        """The guest is stopped (its thread): collect and copy what it wrote since the last
        checkpoint, or since the pre-copy if one was made (whose pages are then the staged
        ones' `earlier`). (staged pages, runs found, seconds this checkpoint waited for the
        previous one's write); call `done` once the pages are consumed."""
        with self._changed:
            waited = self._waited if self.state == self.PRECOPIED else 0.0
            waited += self._wait_while(self.PRECOPYING, self.WRITING)
            earlier, self._precopied = self._precopied, []
        try:
            runs = self.tracker.collect_runs()
            try:
                pieces = self._copy(base, size, runs)
            except BaseException:
                self.tracker.mark(0, size // PAGE_BYTES)
                raise
        except BaseException:
            if earlier:
                self.tracker.mark(0, size // PAGE_BYTES)
            self._set(self.IDLE)
            raise
        self._set(self.WRITING)
        return Staged(pieces, earlier), len(runs), waited

    def done(self, dirty_pages: int) -> None:
        """The staged pages of a checkpoint of `dirty_pages` pages are consumed: size the
        buffer for the next one (pre-faulted, outside any pause) and let it start."""
        try:
            self.buffer.fit(dirty_pages)
        finally:
            self._set(self.IDLE)

    def _copy(self, base: int, size: int, runs: PageRuns) -> list[Piece]:
        n = runs.count
        if not n:
            return []
        out, to = self.buffer.take(n)
        return [(copy_runs(self._memory(base, size), base, runs, out, to), out)]

    def _wait_while(self, *states: int) -> float:
        """Under `_changed`: wait until the state is none of `states`; seconds waited."""
        began = time.monotonic()
        while self.state in states:
            self._changed.wait()
        return time.monotonic() - began

    def _set(self, state: int) -> None:
        with self._changed:
            self.state = state
            self._changed.notify_all()

    def _memory(self, base: int, size: int) -> np.ndarray:
        """A (pages, 4096) view of linear memory (no copy), cached while it neither moves nor
        grows."""
        view = self._view
        if view is None or view[:2] != (base, size):
            view = self._view = (base, size, guest_pages(base, size))
        return view[2]


def guest_pages(base: int, size: int) -> np.ndarray:
    """A (pages, 4096) view of memory at `base` (no copy; valid while it is mapped)."""
    if size == 0:
        return np.empty((0, PAGE_BYTES), np.uint8)
    raw = (ctypes.c_uint8 * size).from_address(base)
    return np.frombuffer(raw, np.uint8).reshape(-1, PAGE_BYTES)   # type: ignore[call-overload]
