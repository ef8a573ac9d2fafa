"""Page runs and the staging buffer: the pause's copy takes exactly the dirty pages, in order,
whether they come as long runs (one slice copy each) or scattered (one gather); and the
compressed frames made from it restore those pages byte for byte."""
from __future__ import annotations

import ctypes
import mmap

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.daemon import snapshot
from roost.daemon.dirty import PageRuns
from roost.daemon.staging import PAGE_BYTES, StagingBuffer

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
    def __init__(self) -> None:
        self.map = mmap.mmap(-1, PAGES * PAGE_BYTES)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        rng = np.random.default_rng(5)
        data = rng.integers(0, 256, PAGES * PAGE_BYTES, dtype=np.uint8)
        data[: 10 * PAGE_BYTES] = 0                       # some all-zero pages
        self.map[:] = data.tobytes()

    def page(self, index: int) -> bytes:
        return self.map[index * PAGE_BYTES:(index + 1) * PAGE_BYTES]


MEMORY = Memory()


@settings(max_examples=60, deadline=None)
@given(page_sets, st.booleans())
def test_staged_pages_are_the_dirty_pages(pages: set[int], long_runs: bool) -> None:
    if long_runs:                                  # take the slice-per-run path too
        pages = {p for first in pages for p in range(first, min(PAGES, first + 20))}
    staging = StagingBuffer()
    staged = staging.stage(MEMORY.base, PAGES * PAGE_BYTES, PageRuns.of_pages(sorted(pages)))
    assert staged.indexes.tolist() == sorted(pages)
    assert [bytes(row) for row in staged.pages] == [MEMORY.page(p) for p in sorted(pages)]
    frames, stored, zeroed = snapshot.Encoder(2).encode(staged.indexes, staged.pages)
    assert sorted([*stored.tolist(), *zeroed.tolist()]) == sorted(pages)
    assert all(MEMORY.page(p) == bytes(PAGE_BYTES) for p in zeroed.tolist())
    versions = np.zeros(PAGES, np.uint32)
    versions[stored] = 1
    image = snapshot.image_from_versions([(1, f) for f in frames], versions, PAGES * PAGE_BYTES)
    for p in stored.tolist():
        assert image[p * PAGE_BYTES:(p + 1) * PAGE_BYTES] == MEMORY.page(p)
    staging.release()


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
    staging.release()
