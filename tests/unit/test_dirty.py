"""Dirty-page tracking on real wasmtime memories: the uffd-WP tracker against a model of the
writes and against the hashing tracker (the slow oracle), including writes that race collect."""
from __future__ import annotations

import ctypes
import os
import random
import threading
import time

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.daemon.checkpoint import dirty
from roost.daemon.checkpoint.dirty import PAGE_BYTES

WASM_PAGE = 65536
HOST_PER_WASM = WASM_PAGE // PAGE_BYTES
MAX_WASM_PAGES = 16

GUEST_WAT = f"""
(module
  (memory (export "memory") 1 {MAX_WASM_PAGES * 64})
  (data (i32.const 100) "a data segment, so wasmtime maps a copy-on-write image")
  (func (export "store") (param i32 i32) local.get 0 local.get 1 i32.store)
  (func (export "fill") (param i32 i32 i32) local.get 0 local.get 1 local.get 2 memory.fill)
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))
"""

FAST_REASON = dirty.probe()
needs_fast = pytest.mark.skipif(FAST_REASON is not None, reason=f"uffd-wp-async: {FAST_REASON}")


class Guest:
    """One instance of the test module: its memory, its exports, and a (base, size) reader."""

    _engine = wasmtime.Engine()
    _module = wasmtime.Module(_engine, GUEST_WAT)

    def __init__(self, wasm_pages: int = 1) -> None:
        self.store = wasmtime.Store(self._engine)
        exports = wasmtime.Instance(self.store, self._module, []).exports(self.store)
        self.memory = exports["memory"]
        self.wasm_store, self.fill = exports["store"], exports["fill"]
        self.wasm_grow = exports["grow"]
        if wasm_pages > 1:
            self.memory.grow(self.store, wasm_pages - 1)
        self.base = ctypes.cast(self.memory.data_ptr(self.store), ctypes.c_void_p).value

    def span(self) -> tuple[int, int]:
        return self.base, self.memory.data_len(self.store)

    @property
    def size(self) -> int:
        return self.memory.data_len(self.store)

    def snapshot(self) -> bytes:
        return ctypes.string_at(self.base, self.size)


def pages_of(offset: int, length: int) -> set[int]:
    if length == 0:
        return set()
    return set(range(offset // PAGE_BYTES, (offset + length - 1) // PAGE_BYTES + 1))


def changed_pages(before: bytes, after: bytes) -> set[int]:
    """What the hash tracker must report: pages whose bytes differ (grown pages always do)."""
    pages = set(range(len(before) // PAGE_BYTES, len(after) // PAGE_BYTES))
    for page in range(len(before) // PAGE_BYTES):
        lo, hi = page * PAGE_BYTES, (page + 1) * PAGE_BYTES
        if before[lo:hi] != after[lo:hi]:
            pages.add(page)
    return pages


# --- operations on a guest, each returning the pages it wrote --------------------------------

def op_host_write(guest: Guest, pos: float, length: int, value: int) -> set[int]:
    offset = int(pos * (guest.size - length))
    ctypes.memset(guest.base + offset, value, length)
    return pages_of(offset, length)


def op_wasm_store(guest: Guest, pos: float, _length: int, value: int) -> set[int]:
    addr = int(pos * (guest.size - 4))
    guest.wasm_store(guest.store, addr, value * 0x01010101 - (1 << 32) * (value >= 128))
    return pages_of(addr, 4)


def op_wasm_fill(guest: Guest, pos: float, length: int, value: int) -> set[int]:
    addr = int(pos * (guest.size - length))
    guest.fill(guest.store, addr, value, length)
    return pages_of(addr, length)


def op_kernel_write(guest: Guest, pos: float, length: int, value: int) -> set[int]:
    """A syscall copying into guest memory (copy_to_user), as a WASI read straight into it."""
    offset = int(pos * (guest.size - length))
    if length == 0:
        return set()
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, bytes([value]) * length)
        target = (ctypes.c_char * length).from_address(guest.base + offset)
        assert os.readv(read_fd, [memoryview(target).cast("B")]) == length
    finally:
        os.close(read_fd)
        os.close(write_fd)
    return pages_of(offset, length)


WRITES = [op_host_write, op_wasm_store, op_wasm_fill, op_kernel_write]
BOUNDARY = [0.0, 1.0] + [k / 16 for k in range(1, 16)]

write_op = st.tuples(
    st.just("write"), st.sampled_from(WRITES),
    st.one_of(st.floats(0, 1), st.sampled_from(BOUNDARY)),
    st.one_of(st.integers(0, 9), st.sampled_from([PAGE_BYTES - 1, PAGE_BYTES, PAGE_BYTES + 1]),
              st.integers(0, 5 * PAGE_BYTES)),
    st.integers(0, 255))
grow_op = st.tuples(st.just("grow"), st.sampled_from(["wasm", "host"]), st.integers(0, 3))
operations = st.lists(st.one_of(write_op, write_op, write_op, grow_op, st.just(("collect",))),
                      max_size=40)


def apply_grow(guest: Guest, how: str, delta: int) -> None:
    if guest.size // WASM_PAGE + delta > MAX_WASM_PAGES:
        return
    if how == "wasm":
        guest.wasm_grow(guest.store, delta)
    else:
        guest.memory.grow(guest.store, delta)


class Checked:
    """Both trackers on one guest, checked at every collect against the model of the writes."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.fast = dirty.UffdWpTracker(guest.span)
        self.hash = dirty.HashTracker(guest.span)
        for tracker in (self.fast, self.hash):
            tracker.start(*guest.span())
        self.written = set(range(guest.size // PAGE_BYTES))   # first collect: everything
        self.image = b""                                        # hash: every page is new

    def apply(self, op: tuple) -> None:
        if op[0] == "write":
            self.written |= op[1](self.guest, *op[2:])
        elif op[0] == "grow":
            before = self.guest.size
            apply_grow(self.guest, op[1], op[2])
            self.written |= set(range(before // PAGE_BYTES, self.guest.size // PAGE_BYTES))
        else:
            self.check()

    def check(self) -> None:
        fast, hashed = self.fast.collect(), self.hash.collect()
        image = self.guest.snapshot()
        assert fast == sorted(self.written), "fast tracker must report exactly the written pages"
        assert hashed == sorted(changed_pages(self.image, image))
        assert set(hashed) <= set(fast), "a changed page the fast tracker missed"
        self.written, self.image = set(), image

    def close(self) -> None:
        self.fast.close()
        self.hash.close()


@needs_fast
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.integers(1, 4), ops=operations)
def test_fast_tracker_reports_exactly_the_written_pages(initial: int, ops: list) -> None:
    checked = Checked(Guest(initial))
    try:
        for op in ops:
            checked.apply(op)
        checked.check()
        checked.check()                    # nothing written since: both report nothing
    finally:
        checked.close()


@needs_fast
def test_reads_do_not_count_as_writes() -> None:
    guest = Guest(4)
    tracker = dirty.UffdWpTracker(guest.span)
    tracker.start(*guest.span())
    tracker.collect()
    guest.snapshot()                       # touches every page, populating zero pages
    assert tracker.collect() == []
    tracker.close()


@needs_fast
def test_grow_without_reader_counts_grown_pages_and_then_tracks_them() -> None:
    guest = Guest(1)
    tracker = dirty.UffdWpTracker()
    tracker.start(*guest.span())
    tracker.collect()
    guest.wasm_grow(guest.store, 2)
    ctypes.memset(guest.base + 20 * PAGE_BYTES, 1, 1)    # before the tracker hears of the growth
    tracker.grow(guest.size)
    assert tracker.collect() == list(range(HOST_PER_WASM, 3 * HOST_PER_WASM))
    ctypes.memset(guest.base + 40 * PAGE_BYTES, 1, 1)
    assert tracker.collect() == [40]
    tracker.close()


@pytest.mark.parametrize("kind", ["fast", "hash"])
def test_marked_pages_are_reported_once(kind: str) -> None:
    if kind == "fast" and FAST_REASON is not None:
        pytest.skip(f"uffd-wp-async: {FAST_REASON}")
    guest = Guest(1)
    tracker = dirty.UffdWpTracker() if kind == "fast" else dirty.HashTracker()
    tracker.start(*guest.span())
    tracker.collect()
    ctypes.memset(guest.base + 3 * PAGE_BYTES, 7, 10)
    tracker.mark(3, 1)
    assert tracker.collect() == [3]
    assert tracker.collect() == []
    tracker.close()


def test_make_tracker_follows_probe() -> None:
    tracker = dirty.make_tracker(Guest(1).span)
    assert tracker.name == ("uffd-wp-async" if FAST_REASON is None else "hash")
    tracker.close()


def test_probe_reason_is_text_or_none() -> None:
    assert FAST_REASON is None or (isinstance(FAST_REASON, str) and FAST_REASON)


def test_misaligned_range_is_refused() -> None:
    with pytest.raises(ValueError):
        dirty.HashTracker().start(PAGE_BYTES + 1, PAGE_BYTES)


# --- a writer racing with collect -------------------------------------------------------------

class RacingWriter(threading.Thread):
    """Writes random pages as fast as it can, logging (page, collects finished before the write)."""

    def __init__(self, guest: Guest, collects_done: list[int]) -> None:
        super().__init__(daemon=True)
        self.guest, self.collects_done = guest, collects_done
        self.stop = threading.Event()
        self.latest: dict[int, int] = {}

    def run(self) -> None:
        rng, pages, value = random.Random(4), self.guest.size // PAGE_BYTES, 0
        while not self.stop.is_set():
            page, done = rng.randrange(pages), self.collects_done[0]
            value = (value + 1) & 0xFF
            ctypes.memset(self.guest.base + page * PAGE_BYTES + rng.randrange(PAGE_BYTES), value, 1)
            self.latest[page] = done


@needs_fast
def test_writes_racing_with_collect_are_never_lost() -> None:
    guest = Guest(MAX_WASM_PAGES)
    tracker = dirty.UffdWpTracker(guest.span)
    tracker.start(*guest.span())
    collects_done, last_seen = [0], {}
    writer = RacingWriter(guest, collects_done)
    writer.start()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline or collects_done[0] < 50:
        for page in tracker.collect():
            last_seen[page] = collects_done[0]
        collects_done[0] += 1
    writer.stop.set()
    writer.join()
    for page in tracker.collect():
        last_seen[page] = collects_done[0]
    tracker.close()
    lost = {p: d for p, d in writer.latest.items() if last_seen.get(p, -1) < d}
    assert not lost, f"pages written after collect k but never reported from k on: {lost}"
    assert len(writer.latest) > 100


@pytest.mark.parametrize("tracked", [False, True])
def test_accessible_bytes_is_the_memory_size_without_the_store(tracked: bool) -> None:
    """What a thread other than the guest's learns of a wasm memory's size (from the kernel's
    mappings) is its size, across grows and the splits userfaultfd registration makes."""
    guest = Guest(2)
    tracker = dirty.UffdWpTracker(guest.span) if tracked and FAST_REASON is None else None
    try:
        if tracker is not None:
            tracker.start(*guest.span())
        for grow in (0, 1, 3):
            guest.memory.grow(guest.store, grow)
            assert dirty.accessible_bytes(guest.base, 1 << 32) == guest.size
            if tracker is not None:
                tracker.collect_runs(dirty.accessible_bytes(guest.base, 1 << 32))
                assert tracker.size == guest.size
    finally:
        if tracker is not None:
            tracker.close()
