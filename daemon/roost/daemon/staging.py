"""The staging buffer: where a checkpoint's dirty pages wait between the pause and the store.

While the guest stands still at a safepoint the worker copies the pages written since the last
checkpoint out of its linear memory into this buffer, and lets the guest go; compression and
the send to the daemon read the copy afterwards. The copy is the only part of a checkpoint that
grows with the dirty set inside the pause, so it is done at memcpy speed:

- one buffer, reused from checkpoint to checkpoint (the next checkpoint waits for the previous
  one's background write anyway, so one is enough);
- pre-faulted (MAP_POPULATE) and sized ahead, after each checkpoint, for the next one: a fresh
  page costs a fault and a zeroing, which would double the copy's cost inside the pause. It is
  sized for the smaller of the last two dirty sets, so one large checkpoint (the first, full
  one) does not keep a copy of all memory resident, while a guest that dirties much every
  time keeps its buffer;
- runs of pages copied with one slice copy each, scattered pages with one vectorised gather
  (numpy `take`: a C loop of 4 KiB memcpys, no Python per page).

"""
from __future__ import annotations

import ctypes
import mmap

import numpy as np

from .dirty import PageRuns

PAGE_BYTES = 4096
_SHRINK_FLOOR_BYTES = 16 << 20   # buffers below this are never shrunk: not worth a remap
_SLACK = 1.25                 # room for the dirty set to grow a little between checkpoints
_RUNS_GATHER_RATIO = 8        # runs averaging fewer pages than this: gather page by page


class Staged:
    """The dirty pages of one checkpoint: their indexes and a (n, 4096) view of their bytes."""

    __slots__ = ("indexes", "pages")

    def __init__(self, indexes: np.ndarray, pages: np.ndarray) -> None:
        self.indexes = indexes
        self.pages = pages

    def __len__(self) -> int:
        return len(self.indexes)


class StagingBuffer:
    def __init__(self) -> None:
        self._pages = np.empty((0, PAGE_BYTES), np.uint8)
        self._recent = [0, 0]          # dirty pages of the last two checkpoints

    @property
    def capacity(self) -> int:
        """Pages the buffer holds without allocating."""
        return len(self._pages)

    def reserve(self, pages: int) -> None:
        """Make room for `pages` pages, pre-faulted (call outside the pause when possible)."""
        if pages <= self.capacity:
            return
        self._allocate(pages)

    def fit(self, dirty_pages: int) -> None:
        """After a checkpoint of `dirty_pages` pages (its staged pages no longer needed): size
        the buffer for the next one."""
        self._recent = [self._recent[1], dirty_pages]
        want = int(min(self._recent) * _SLACK) + 1
        if want > self.capacity:
            self._allocate(want)
        elif self.capacity * PAGE_BYTES > _SHRINK_FLOOR_BYTES and self.capacity > 2 * want:
            self._allocate(want)

    def _allocate(self, pages: int) -> None:
        self.release()
        size = max(1, pages) * PAGE_BYTES
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        self._pages = np.frombuffer(mmap.mmap(-1, size, flags=flags), np.uint8).reshape(-1, PAGE_BYTES)

    def release(self) -> None:
        """Drop the buffer; its memory goes when the last view of it (a Staged) does."""
        self._pages = np.empty((0, PAGE_BYTES), np.uint8)

    def stage(self, base: int, size: int, runs: PageRuns) -> Staged:
        """Copy the pages of `runs` out of the memory at [base, base+size) (the pause)."""
        n = runs.count
        self.reserve(n)
        memory = guest_pages(base, size)
        out = self._pages[:n]
        if n and len(runs) * _RUNS_GATHER_RATIO <= n:
            at = 0
            for first, end in zip(runs.starts.tolist(), runs.ends.tolist()):
                out[at:at + end - first] = memory[first:end]
                at += end - first
            indexes = runs.pages()
        else:
            indexes = runs.pages()
            np.take(memory, indexes, axis=0, out=out)
        return Staged(indexes.astype(np.uint32), out)


def guest_pages(base: int, size: int) -> np.ndarray:
    """A (pages, 4096) uint8 view of memory at `base` (no copy; valid while it is mapped)."""
    if size == 0:
        return np.empty((0, PAGE_BYTES), np.uint8)
    raw = (ctypes.c_uint8 * size).from_address(base)
    return np.ctypeslib.as_array(raw).reshape(-1, PAGE_BYTES)
