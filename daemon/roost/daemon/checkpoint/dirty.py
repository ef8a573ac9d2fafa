"""Which 4 KiB pages of a guest's linear memory were written since the last collect.

A checkpoint stores only the pages written since the previous one, so the pause is as short as
finding those pages and copying them. Two trackers answer the same question:

    DirtyTracker (protocol)
    ├── UffdWpTracker  "uffd-wp-async"  Linux >= 6.7: userfaultfd write-protection in async mode;
    │                                    the kernel clears WP on a write and PAGEMAP_SCAN reads and
    │                                    re-arms the written bits in one ioctl. Cost: the scan.
    └── HashTracker    "hash"           everywhere else: a SHA-256 digest of every page, compared
                                         with the previous collect. Cost: hashing all of memory.

`make_tracker` picks the first when `probe()` says the kernel supports it. Both report every page
at the first collect after `start` (the first checkpoint is a full one) and every page added by
`grow`. The kernel's interface (userfaultfd, PAGEMAP_SCAN) is in `uffd`.

wasmtime: linear memory 0 is an anonymous mmap reservation (4 GiB + guard for wasm32) whose
accessible prefix grows by mprotect, at a stable base. The tracker registers only the accessible
range and registers each grown range in `grow` (PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC refuses a
range that is not registered, which is how a missed `grow` would show up: as an error, never as
lost pages). Pages written between wasmtime's mprotect and `grow` are not lost: grown pages count
as dirty anyway.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import mmap
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from roost.daemon.checkpoint import uffd

PAGE_BYTES = 4096
_PAGE_SHIFT = PAGE_BYTES.bit_length() - 1
_FEW_REGIONS = 256        # scan results up to this many runs stay Python lists (see PageRuns)

MemoryReader = Callable[[], tuple[int, int]]
"""Returns the memory's current (base address, accessible size in bytes)."""


class PageRuns:
    """A set of pages as sorted, disjoint, non-adjacent half-open runs [starts[i], ends[i]).

    Runs, not page lists: a checkpoint copies a run with one copy, and the kernel reports runs.
    A few runs (the common checkpoint) are kept as Python lists, many as numpy arrays: a numpy
    call costs 10-30 us on the cold caches a checkpoint's pause runs on, a list step well
    under one, and a pause that makes a dozen numpy calls has spent its budget.
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self, starts: np.ndarray | list[int], ends: np.ndarray | list[int]) -> None:
        # Lists (small) or arrays: each method's `is_small` branch knows which it has.
        self._starts: Any = starts
        self._ends: Any = ends

    @classmethod
    def empty(cls) -> "PageRuns":
        return cls([], [])

    @classmethod
    def of_pages(cls, pages) -> "PageRuns":
        """Runs of a sorted sequence of distinct page indexes."""
        pages = np.asarray(pages, dtype=np.int64)
        if not len(pages):
            return cls.empty()
        breaks = np.flatnonzero(np.diff(pages) != 1) + 1
        return cls(pages[np.r_[0, breaks]], pages[np.r_[breaks - 1, len(pages) - 1]] + 1)

    @classmethod
    def union(cls, starts: np.ndarray, ends: np.ndarray) -> "PageRuns":
        """Runs covering possibly unsorted, overlapping or adjacent [start, end) ranges."""
        starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        if not len(starts):
            return cls.empty()
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], np.maximum.accumulate(ends[order])
        first = np.flatnonzero(np.r_[True, starts[1:] > ends[:-1]])
        last = np.r_[first[1:] - 1, len(starts) - 1]
        return cls(starts[first], ends[last])

    @property
    def is_small(self) -> bool:
        return isinstance(self._starts, list)

    @property
    def starts(self) -> np.ndarray:
        return np.asarray(self._starts, dtype=np.int64)

    @property
    def ends(self) -> np.ndarray:
        return np.asarray(self._ends, dtype=np.int64)

    def spans(self) -> list[tuple[int, int]]:
        """(first, end) of every run, as Python ints."""
        if self.is_small:
            return list(zip(self._starts, self._ends))
        return list(zip(self._starts.tolist(), self._ends.tolist()))

    @property
    def count(self) -> int:
        """Number of pages."""
        if self.is_small:
            return sum(self._ends) - sum(self._starts)
        return int((self._ends - self._starts).sum())

    def __len__(self) -> int:
        return len(self._starts)

    def pages(self) -> np.ndarray:
        """Every page index, ascending (int64)."""
        if self.is_small:
            return np.array(self.tolist(), dtype=np.int64)
        lengths = self._ends - self._starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, np.int64)
        offsets = np.cumsum(lengths) - lengths
        return np.arange(total, dtype=np.int64) + np.repeat(self._starts - offsets, lengths)

    def tolist(self) -> list[int]:
        if self.is_small:
            return [p for first, end in zip(self._starts, self._ends) for p in range(first, end)]
        return self.pages().tolist()


class DirtyTracker(Protocol):
    """Pages of [base, base+size) written since the previous collect."""

    name: str
    concurrent: bool
    """A collect while the guest runs is cheap and exact (the pages it reports are re-armed
    atomically): checkpoints may pre-copy (see staging)."""
    @property
    def base(self) -> int:
        """The range tracked, as of the last start, grow or collect: its start..."""

    @property
    def size(self) -> int:
        """...and its size in bytes."""

    def start(self, base: int, size: int) -> None: ...

    def grow(self, new_size: int) -> None: ...

    def collect_runs(self, size: int | None = None) -> PageRuns:
        """Runs of pages written since the previous collect, over memory of `size` bytes, or
        of the size the memory reader gives (which may only be asked on the guest's thread:
        another thread passes `accessible_bytes(base)`)."""
        ...

    def collect(self) -> list[int]: ...

    def mark(self, first_page: int, count: int) -> None:
        """Report these pages at the next collect whatever happens to them (for pages a
        collect reported that were not saved after all)."""
        ...

    def close(self) -> None: ...


class _Tracker:
    """What both trackers share: the range, the lock, following the memory's growth."""

    def __init__(self, memory_reader: MemoryReader | None) -> None:
        self._reader = memory_reader
        self._lock = threading.Lock()
        self._base = self._size = 0

    @property
    def base(self) -> int:
        return self._base

    @property
    def size(self) -> int:
        return self._size

    def grow(self, new_size: int) -> None:
        """The memory grew (same base): its new pages count as dirty."""
        _check_aligned(self._base, new_size)
        with self._lock:
            self._grow_locked(new_size)

    def collect(self) -> list[int]:
        """Sorted pages written since the previous collect."""
        return self.collect_runs().tolist()

    def collect_runs(self, size: int | None = None) -> PageRuns:
        with self._lock:
            self._follow(size)
            return self._collect_locked()

    def _follow(self, size: int | None) -> None:
        """Grow to `size`, or to what the memory reader says (on the guest's thread)."""
        if size is None and self._reader is not None:
            base, size = self._reader()
            if base != self._base:
                raise ValueError(f"dirty tracking: memory moved from {self._base:#x} to {base:#x}")
        if size is not None:
            self._grow_locked(size)

    def _grow_locked(self, new_size: int) -> None:
        raise NotImplementedError

    def _collect_locked(self) -> PageRuns:
        raise NotImplementedError


# --- the fast tracker -----------------------------------------------------------------------

class UffdWpTracker(_Tracker):
    """userfaultfd async write-protection read and re-armed by PAGEMAP_SCAN.

    A write to a protected page never stops the writer: the kernel drops WP on that PTE, and the
    scan reports it as written and re-protects it under the page-table lock, so a write racing
    with collect lands either in this collect's set or in the next one.
    """

    name = "uffd-wp-async"
    concurrent = True
    _VEC_LEN = 65536          # 1.5 MiB of regions: one ioctl unless > 64 K scattered runs

    def __init__(self, memory_reader: MemoryReader | None = None) -> None:
        super().__init__(memory_reader)
        self._uffd = uffd.open_uffd()
        try:
            self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self._uffd)
            raise
        self._vec = (uffd.PageRegion * self._VEC_LEN)()
        self._pending: list[tuple[int, int]] = []

    def start(self, base: int, size: int) -> None:
        """Registers and protects [base, base+size); all of it is dirty at the first collect."""
        _check_aligned(base, size)
        with self._lock:
            self._base, self._size = base, size
            if size:
                uffd.register(self._uffd, base, size)
                uffd.write_protect(self._uffd, base, size)
            self._pending = [(0, size // PAGE_BYTES)]

    def _grow_locked(self, new_size: int) -> None:
        """Registers the newly accessible range; its pages count as dirty."""
        if new_size <= self._size:
            return
        uffd.register(self._uffd, self._base + self._size, new_size - self._size)
        self._pending.append((self._size // PAGE_BYTES, new_size // PAGE_BYTES))
        self._size = new_size

    def mark(self, first_page: int, count: int) -> None:
        """Pages the host wrote: the kernel sees those writes too, this is belt and braces."""
        with self._lock:
            self._pending.append((first_page, first_page + count))

    def _collect_locked(self) -> PageRuns:
        """Re-arms the pages it reports in the same ioctl, so a write racing with it lands in
        this collect or the next one, never in neither."""
        pending, self._pending = self._pending, []
        try:
            starts, ends = self._scan()
        except BaseException:
            # A failed scan may have re-armed part of the range already: report all of memory
            # next time rather than lose those pages.
            self._pending = [(0, self._size // PAGE_BYTES)]
            raise
        if not pending:
            return PageRuns(starts, ends)      # the kernel's regions: sorted and coalesced
        extra = np.array(pending, dtype=np.int64).reshape(-1, 2)
        return PageRuns.union(np.r_[starts, extra[:, 0]], np.r_[ends, extra[:, 1]])

    def _scan(self) -> tuple[list | np.ndarray, list | np.ndarray]:
        """First and end pages of the written runs, in address order. The walk costs ~0.55 ms
        per GiB of resident memory whatever was written; it is one thread's: with two
        threads of this process scanning halves, the second's wake-up and the GIL cost more
        than the split saves (measured)."""
        return self._scan_range(self._base, self._base + self._size, self._vec)

    def _scan_range(self, start: int, end: int, vec: ctypes.Array) -> tuple[list | np.ndarray, list | np.ndarray]:
        """PAGEMAP_SCAN over [start, end), repeated from walk_end only when `vec` fills. A few
        regions come back as lists of ints, many as arrays (see PageRuns)."""
        if start >= end:
            return [], []
        count, start = self._scan_once(start, end, vec)
        if start >= end and count <= _FEW_REGIONS:
            words = memoryview(vec).cast("B").cast("Q")[:3 * count].tolist()
            base = self._base
            return ([(w - base) >> _PAGE_SHIFT for w in words[0::3]],
                    [(w - base) >> _PAGE_SHIFT for w in words[1::3]])
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        self._regions(vec, count, starts, ends)
        while start < end:
            count, start = self._scan_once(start, end, vec)
            self._regions(vec, count, starts, ends)
        if len(starts) == 1:
            return starts[0], ends[0]
        return np.concatenate(starts), np.concatenate(ends)

    def _scan_once(self, start: int, end: int, vec: ctypes.Array) -> tuple[int, int]:
        """One PAGEMAP_SCAN from `start`: (regions written into `vec`, where the walk ended)."""
        arg = uffd.PmScanArg(
            size=ctypes.sizeof(uffd.PmScanArg), flags=uffd.PM_SCAN_WP_MATCHING | uffd.PM_SCAN_CHECK_WPASYNC,
            start=start, end=end, vec=ctypes.addressof(vec), vec_len=len(vec),
            category_anyof_mask=uffd.PAGE_IS_WRITTEN, return_mask=uffd.PAGE_IS_WRITTEN)
        count = uffd.ioctl(self._pagemap, uffd.PAGEMAP_SCAN, arg, "PAGEMAP_SCAN")
        if arg.walk_end <= start:
            raise OSError(errno.EIO, f"PAGEMAP_SCAN made no progress at {start:#x}")
        return count, arg.walk_end

    def _regions(self, vec: ctypes.Array, count: int, starts: list, ends: list) -> None:
        regions = np.frombuffer(vec, dtype=np.uint64, count=3 * count).reshape(count, 3)  # type: ignore[call-overload]
        starts.append(((regions[:, 0] - self._base) >> _PAGE_SHIFT).astype(np.int64))
        ends.append(((regions[:, 1] - self._base) >> _PAGE_SHIFT).astype(np.int64))

    def close(self) -> None:
        """Closing the userfaultfd unregisters the range; the guest's memory stays as it is."""
        with self._lock:
            for fd in (self._uffd, self._pagemap):
                if fd >= 0:
                    os.close(fd)
            self._uffd = self._pagemap = -1


def accessible_bytes(base: int, limit: int) -> int:
    """Bytes readable and writable from `base` on, up to `limit` (the most the memory can
    have), as the kernel maps them (/proc/self/maps): a wasm memory's current size, learnt
    without its store, which only the guest's thread may touch. Adjacent mappings count
    together (userfaultfd registration splits one); wasmtime keeps the rest of the memory's
    reservation inaccessible, which ends the run."""
    end = base
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            span, perms = line.split(b" ", 2)[:2]
            first, last = (int(x, 16) for x in span.split(b"-"))
            if first == end and perms.startswith(b"rw"):
                end = last
            elif first > end:
                break
    return min(end - base, limit)


def _check_aligned(base: int, size: int) -> None:
    if base % PAGE_BYTES or size % PAGE_BYTES:
        raise ValueError(f"dirty tracking: {base:#x}+{size:#x} is not 4 KiB aligned")


# --- the reference tracker ------------------------------------------------------------------

class HashTracker(_Tracker):
    """A SHA-256 digest per page (first 8 bytes), compared with the previous collect's.

    Works wherever memory can be read, at the cost of reading all of it at every collect. It
    sees changed bytes, not writes: a page rewritten with the same bytes is not reported, which
    is all a checkpoint needs. Eight bytes a page keep it small (2 MiB for 1 GiB); a missed
    change needs a 64-bit digest collision. SHA-256 because OpenSSL's (SHA-NI) is about twice
    as fast per page here as hashlib's blake2b, and a guest cannot steer it into a collision.
    """

    name = "hash"
    concurrent = False          # a collect hashes all of memory: twice per checkpoint is waste

    def __init__(self, memory_reader: MemoryReader | None = None) -> None:
        super().__init__(memory_reader)
        self._digests: list[bytes | None] = []

    def start(self, base: int, size: int) -> None:
        """Forgets all digests, so every page is dirty at the first collect."""
        _check_aligned(base, size)
        with self._lock:
            self._base, self._size = base, size
            self._digests = [None] * (size // PAGE_BYTES)

    def _grow_locked(self, new_size: int) -> None:
        """Grown pages have no digest yet, so they are reported at the next collect."""
        if new_size > self._size:
            self._digests += [None] * ((new_size - self._size) // PAGE_BYTES)
            self._size = new_size

    def mark(self, first_page: int, count: int) -> None:
        """Forget the pages' digests: the next collect reports them whatever their bytes."""
        with self._lock:
            end = min(first_page + count, len(self._digests))
            self._digests[first_page:end] = [None] * max(0, end - first_page)

    def _collect_locked(self) -> PageRuns:
        """Pages whose digest differs from the previous collect's."""
        return PageRuns.of_pages(self._rehash())

    def _rehash(self) -> list[int]:
        """Pages whose digest changed."""
        if not self._size:
            return []
        view = memoryview((ctypes.c_char * self._size).from_address(self._base)).cast("B")
        digests, sha256, dirty = self._digests, hashlib.sha256, []
        for page in range(len(digests)):
            offset = page * PAGE_BYTES
            digest = sha256(view[offset:offset + PAGE_BYTES]).digest()[:8]
            if digest != digests[page]:
                digests[page] = digest
                dirty.append(page)
        return dirty

    def close(self) -> None:
        with self._lock:
            self._digests = []


# --- choosing -------------------------------------------------------------------------------

@functools.cache
def probe() -> str | None:
    """None when async uffd-WP and PAGEMAP_SCAN work here, else why not (for inspect/metrics).

    Runs the real thing on a scratch mapping: a kernel that accepts the ioctls but reports the
    wrong pages must not be trusted with checkpoints. ROOST_DIRTY_TRACKER=hash (in roostd's
    environment, which its workers inherit) chooses the hashing tracker anyway.
    """
    if os.environ.get("ROOST_DIRTY_TRACKER") == "hash":
        return "chosen by ROOST_DIRTY_TRACKER=hash"
    if mmap.PAGESIZE != PAGE_BYTES:
        return f"host page size is {mmap.PAGESIZE}, not {PAGE_BYTES}"
    try:
        return _trial()
    except OSError as e:
        return e.strerror or str(e)


def _trial() -> str | None:
    scratch = mmap.mmap(-1, 4 * PAGE_BYTES)
    base = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
    tracker = UffdWpTracker()
    try:
        tracker.start(base, 4 * PAGE_BYTES)
        first = tracker.collect()
        scratch[2 * PAGE_BYTES] = 1
        second = tracker.collect()
    finally:
        tracker.close()
    if first != [0, 1, 2, 3] or second != [2]:
        return f"PAGEMAP_SCAN reported {first} then {second}, expected [0..3] then [2]"
    return None


def make_tracker(memory_reader: MemoryReader | None = None) -> DirtyTracker:
    """The uffd-WP tracker when the kernel supports it, else the hashing one."""
    if probe() is None:
        return UffdWpTracker(memory_reader)
    return HashTracker(memory_reader)
