"""Page runs, the staging buffer and the pause's copy: it takes exactly the dirty pages, in
order, whether they come as long runs (one slice copy each) or scattered (one gather), with or
without a pre-copy while a guest writes; and the compressed frames made from it restore those
pages byte for byte."""
from __future__ import annotations

import ctypes
import mmap
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.daemon.checkpoint import dirty, staging
from roost.daemon.checkpoint import frames as snapshot
from roost.daemon.checkpoint.dirty import PageRuns
from roost.daemon.checkpoint.staging import PAGE_BYTES, Stager, StagingBuffer

PAGES = 300
page_sets = st.sets(st.integers(0, PAGES - 1), max_size=PAGES)
ranges = st.lists(st.tuples(st.integers(0, PAGES), st.integers(0, 40)), max_size=30)


@given(page_sets)
def test_runs_of_pages_round_trip(pages: set[int]) -> None:
    runs = PageRuns.of_pages(sorted(pages))
    assert runs.tolist() == sorted(pages)
    assert runs.count == len(pages)
    assert all(b > a for a, b in zip(runs.ends[:-1].tolist(), runs.starts[1:].tolist())), \
        "runs are disjoint and not adjacent"


@given(ranges)
def test_union_of_overlapping_ranges(spans: list[tuple[int, int]]) -> None:
    starts = np.array([a for a, _ in spans], np.int64)
    ends = np.array([a + n for a, n in spans], np.int64)
    expected = sorted({p for a, n in spans for p in range(a, a + n)})
    runs = PageRuns.union(starts, ends)
    assert runs.tolist() == expected
    assert runs.tolist() == PageRuns.of_pages(expected).tolist()
    assert len(runs) == len(PageRuns.of_pages(expected))


class Memory:
    size = PAGES * PAGE_BYTES

    def __init__(self) -> None:
        self.map = mmap.mmap(-1, PAGES * PAGE_BYTES)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        rng = np.random.default_rng(5)
        data = rng.integers(0, 256, PAGES * PAGE_BYTES, dtype=np.uint8)
        data[: 10 * PAGE_BYTES] = 0                       # some all-zero pages
        self.map[:] = data.tobytes()

    def page(self, index: int) -> bytes:
        return self.map[index * PAGE_BYTES:(index + 1) * PAGE_BYTES]


TRACKERS = ["hash"] + (["uffd-wp-async"] if dirty.probe() is None else [])


def _tracker(kind: str, base: int, size: int) -> dirty.DirtyTracker:
    tracker = dirty.HashTracker() if kind == "hash" else dirty.UffdWpTracker()
    tracker.start(base, size)
    tracker.collect()                          # the baseline
    return tracker


@pytest.mark.parametrize("kind", TRACKERS)
@settings(max_examples=60, deadline=None)
@given(rounds=st.lists(st.tuples(page_sets, st.booleans()), min_size=1, max_size=4))
def test_stager_copies_exactly_the_written_pages(kind: str, rounds) -> None:
    """Each checkpoint stages every written page once, in page order, with the bytes it had;
    and the frames made of them restore those bytes."""
    memory = Memory()
    tracker = _tracker(kind, memory.base, memory.size)
    stager = Stager(tracker, max_bytes=memory.size)
    try:
        for value, (pages, long_runs) in enumerate(rounds, 1):
            if long_runs:                                  # the slice-per-run path too
                pages = {p for first in pages for p in range(first, min(PAGES, first + 20))}
            for p in pages:
                memory.map[p * PAGE_BYTES + 7] = (memory.map[p * PAGE_BYTES + 7] + value) % 256 or 1
            staged = stager.finish(memory.base, memory.size)[0]
            assert staged.indexes.tolist() == sorted(pages)
            rows = [bytes(row) for _, view in staged.pieces for row in view]
            assert rows == [memory.page(p) for p in sorted(pages)]
            _check_frames(memory, staged, pages)
            stager.done(len(staged))
    finally:
        tracker.close()


def _check_frames(memory: "Memory", staged: staging.Staged, pages: set[int]) -> None:
    frames, stored, zeroed = snapshot.Encoder(2).submit(staged.pieces).result()
    assert sorted([*stored.tolist(), *zeroed.tolist()]) == sorted(pages)
    assert all(memory.page(p) == bytes(PAGE_BYTES) for p in zeroed.tolist())
    versions = np.zeros(PAGES, np.uint32)
    versions[stored] = 1
    image = snapshot.image_from_versions([(1, f) for f in frames], versions, PAGES * PAGE_BYTES)
    for p in stored.tolist():
        assert image[p * PAGE_BYTES:(p + 1) * PAGE_BYTES] == memory.page(p)


@given(st.lists(st.integers(0, 50), max_size=8), st.integers(1, 40))
def test_parts_cut_pieces_in_order(sizes: list[int], max_pages: int) -> None:
    pieces, at = [], 0
    for n in sizes:
        pieces.append((np.arange(at, at + n, dtype=np.uint32), np.zeros((n, PAGE_BYTES), np.uint8)))
        at += n
    parts = staging.Staged(pieces).parts(max_pages)
    flat = [i for part in parts for idx, _ in part for i in idx.tolist()]
    assert flat == list(range(at))
    assert all(sum(len(idx) for idx, _ in part) <= max_pages for part in parts)
    assert all(sum(len(idx) for idx, _ in part) == max_pages for part in parts[:-1])


def test_buffer_is_sized_for_the_smaller_of_the_last_two_checkpoints() -> None:
    staging = StagingBuffer()
    staging.fit(100_000)                  # the first, full checkpoint: nothing kept for it
    assert staging.capacity < 100
    staging.fit(10)
    staging.fit(10)
    assert 10 <= staging.capacity < 100
    staging.fit(8000)
    staging.fit(8000)                     # a guest that dirties much every time keeps its buffer
    assert staging.capacity >= 8000
    staging.fit(10)
    staging.fit(10)
    assert staging.capacity < 8000        # and gives it back when it stops


needs_fast = pytest.mark.skipif(dirty.probe() is not None, reason=f"uffd-wp-async: {dirty.probe()}")


@needs_fast
@settings(max_examples=40, deadline=None)
@given(before=page_sets, during=page_sets)
def test_precopy_then_pause_stages_each_page_once_as_it_was_at_the_pause(before, during) -> None:
    """Pages written before the pre-copy are copied then; pages written between it and the
    pause are copied again in the pause, and that copy wins."""
    memory = Memory()
    tracker = _tracker("uffd-wp-async", memory.base, memory.size)
    stager = Stager(tracker, max_bytes=memory.size)
    try:
        for p in before:
            memory.map[p * PAGE_BYTES + 1] = (memory.map[p * PAGE_BYTES + 1] + 1) % 256
        stager.precopy()
        for p in during:
            memory.map[p * PAGE_BYTES + 2] = (memory.map[p * PAGE_BYTES + 2] + 1) % 256
        staged = stager.finish(memory.base, memory.size)[0]
        assert staged.latest_pages == len(during)
        staged = staged.resolved()
        assert sorted(staged.indexes.tolist()) == sorted(before | during)
        got = {int(i): bytes(row) for indexes, view in staged.pieces for i, row in zip(indexes, view)}
        assert got == {p: memory.page(p) for p in before | during}
        stager.done(len(staged))
    finally:
        tracker.close()


@needs_fast
def test_precopy_beside_a_writing_guest_is_consistent_at_the_pause() -> None:
    """A thread keeps writing while the pre-copy copies; once it stops (the guest's pause),
    what is staged equals memory exactly for every page written since the baseline."""
    memory = Memory()
    tracker = _tracker("uffd-wp-async", memory.base, memory.size)
    stager = Stager(tracker, max_bytes=memory.size)
    stop = threading.Event()
    written: set[int] = set()

    def guest() -> None:
        rng = np.random.default_rng(3)
        while not stop.is_set():
            p = int(rng.integers(0, PAGES))
            memory.map[p * PAGE_BYTES + int(rng.integers(0, PAGE_BYTES))] = int(rng.integers(1, 256))
            written.add(p)

    try:
        for _ in range(5):
            writer = threading.Thread(target=guest)
            writer.start()
            time.sleep(0.01)
            stager.precopy()
            time.sleep(0.01)
            stop.set()
            writer.join()
            staged = stager.finish(memory.base, memory.size)[0].resolved()
            got = {int(i): bytes(row) for indexes, view in staged.pieces for i, row in zip(indexes, view)}
            assert set(got) == written
            assert all(got[p] == memory.page(p) for p in written)
            stager.done(len(staged))
            stop.clear()
            written.clear()
    finally:
        tracker.close()


@given(st.lists(st.booleans(), max_size=40))
def test_true_runs(mask: list[bool]) -> None:
    runs = staging._true_runs(np.array(mask, dtype=bool))
    assert [i for a, b in runs for i in range(a, b)] == [i for i, m in enumerate(mask) if m]
    assert all(b > a for a, b in runs)
