"""Incremental checkpoints in a real LMDB store: random write patterns, memory growth and
checkpoints (Hypothesis); restoring any retained checkpoint reproduces the memory exactly as it
was; garbage collection keeps every page a retained checkpoint needs and nothing it doesn't; a
corrupted page is reported, never restored."""
from __future__ import annotations

import dataclasses
import json
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.daemon.checkpoint import frames as snapshot
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.frames import PAGE_BYTES, CorruptPage
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.errors import StoreError, StoreFull
from roost.daemon.store import keys
from roost.daemon.store.checkpoints import PageStore, Uncommitted
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord

RETAIN = 2
write = st.tuples(st.just("write"), st.integers(0, 63), st.integers(0, 4), st.integers(0, 255))
grow = st.tuples(st.just("grow"), st.integers(1, 16), st.just(0), st.just(0))
checkpoint = st.tuples(st.just("checkpoint"), st.just(0), st.just(0), st.just(0))
hurried = st.tuples(st.just("hurried"), st.just(0), st.just(0), st.just(0))   # (a migration's final)
ops = st.lists(st.one_of(write, write, write, grow, checkpoint, hurried), min_size=1, max_size=60)


class Guest:
    """A memory, the pages written since the last checkpoint, and the store's view of it."""

    def __init__(self, store: Store) -> None:
        self.memory = bytearray(4 * PAGE_BYTES)
        self.dirty: set[int] = set(range(4))
        self.pages = PageStore(store)
        self.record = ExecutionRecord(id="e1", module_sha256="m", module_name="m", argv=["m"],
                                      env=[], mounts=[])
        self.page_map = PageMap()
        self.number = 0
        self.images: dict[int, bytes] = {}
        self.stored_any: dict[int, bool] = {}

    def write(self, page: int, run: int, value: int) -> None:
        pages = len(self.memory) // PAGE_BYTES
        for p in range(page % pages, min(pages, page % pages + run + 1)):
            self.memory[p * PAGE_BYTES + value % 7] = value       # value 0 may zero a page
            self.dirty.add(p)

    def grow(self, pages: int) -> None:
        start = len(self.memory) // PAGE_BYTES
        self.memory.extend(bytes(pages * PAGE_BYTES))
        self.dirty |= set(range(start, start + pages))

    def hurried(self) -> None:
        """A migration's final checkpoint: committed without compaction or collection."""
        self.checkpoint(hurry=True)

    def checkpoint(self, hurry: bool = False) -> None:
        """What the worker and the supervisor do, minus the processes."""
        self.number += 1
        staged = [(p, bytes(self.memory[p * PAGE_BYTES:(p + 1) * PAGE_BYTES])) for p in sorted(self.dirty)]
        frames, stored, zeroed = snapshot.encode_pages(staged)
        self.page_map, delta = pagemap.successor(self.page_map, self.number,
                                                 len(self.memory) // PAGE_BYTES, stored, zeroed)
        manifest = Manifest(number=self.number, journal_seq=0, memory_bytes=len(self.memory))
        self.pages.put(self.record, manifest, frames, b"host", b"stack", self.page_map, delta, RETAIN,
                       hurry=hurry)
        self.images[self.number] = bytes(self.memory)
        self.stored_any[self.number] = bool(stored)
        self.dirty = set()

    def restore(self, number: int) -> bytes:
        saved = self.pages.load("e1", number)
        return bytes(snapshot.image_from_versions(saved.frames, saved.page_map.versions,
                                                  saved.manifest.memory_bytes))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_retained_checkpoint_restores_exactly(sequence):
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), 1 << 30)
        guest = Guest(store)
        for op, a, b, c in sequence + [("checkpoint", 0, 0, 0)]:
            getattr(guest, op)(*(x for x in (a, b, c)[: {"write": 3, "grow": 1}.get(op, 0)]))
        latest = guest.pages.latest("e1")
        assert latest is not None and latest.number == guest.number
        for number in range(max(1, guest.number - RETAIN + 1), guest.number + 1):
            assert guest.restore(number) == guest.images[number], number
        _assert_only_needed_versions_kept(store, guest)
        store.close()


def _assert_only_needed_versions_kept(store: Store, guest: Guest) -> None:
    """Frames exist for exactly the versions some retained checkpoint's map refers to."""
    needed: set[int] = set()
    for number in range(max(1, guest.number - RETAIN + 1), guest.number + 1):
        needed |= guest.pages.load("e1", number).page_map.referenced()
    have = {n for n in range(1, guest.number + 1) if any(guest.pages.iter_frames("e1", n))}
    assert have == {n for n in needed if guest.stored_any[n]}


def test_little_change_costs_little_metadata(tmp_path):
    """A 1 GiB-sized map changing one page: the checkpoint stores a delta, not a full map."""
    store = Store(tmp_path, 1 << 30)
    guest = Guest(store)
    guest.grow(2000)
    guest.checkpoint()
    guest.write(5, 0, 9)
    guest.checkpoint()
    first, second = guest.pages.manifest("e1", 1), guest.pages.manifest("e1", 2)
    assert first is not None and second is not None
    assert first.map_base == 1 and second.map_base == 1        # full, then a delta from it
    assert second.map_bytes is not None and second.map_bytes < 64
    for _ in range(pagemap.COMPACT_EVERY):
        guest.write(7, 0, 3)
        guest.checkpoint()
    assert guest.restore(guest.number) == guest.images[guest.number]


@pytest.mark.parametrize("where", ["index", "compressed pages", "content checksum"])
def test_corrupt_page_is_reported_not_restored(tmp_path, where):
    store = Store(tmp_path, 1 << 30)
    guest = Guest(store)
    guest.write(1, 2, 77)
    guest.checkpoint()
    key = keys.frame("e1", 1, 0)
    frame = bytearray(dict(guest.pages.iter_frames("e1", 1))[0])
    with store.txn("corrupting", write=True) as txn:
        body = 16 + 4 * 3                       # header, then 3 page indexes (pages 1..3)
        at = {"index": 16, "compressed pages": body + (len(frame) - body) // 2,
              "content checksum": len(frame) - 1}[where]
        frame[at] ^= 0xFF
        txn.put(key, bytes(frame), db=store.dbs["pages"])
    with pytest.raises(CorruptPage):
        guest.restore(1)


def _frame_1_0(indexes: list[int], pages: list[bytes]) -> bytes:
    """A page frame as format 1.0 wrote it (a crc32 per page, no zstd checksum)."""
    arrays = struct.pack(f"<{len(indexes)}I", *indexes) + \
        struct.pack(f"<{len(pages)}I", *(zlib.crc32(p) for p in pages))
    return struct.pack("<4sHHII", b"RPGF", 1, 0, len(indexes), zlib.crc32(arrays)) + arrays + \
        zstandard.ZstdCompressor(level=1).compress(b"".join(pages))


def test_frames_of_format_1_0_still_restore():
    pages = [bytes([7]) * PAGE_BYTES, bytes([9]) * PAGE_BYTES]
    frame = _frame_1_0([0, 2], pages)
    image = snapshot.image_from_versions([(1, frame)], [1, 0, 1], 3 * PAGE_BYTES)
    assert bytes(image) == pages[0] + bytes(PAGE_BYTES) + pages[1]
    bad = bytearray(frame)
    bad[16 + 8 + 2] ^= 1                        # a page crc
    with pytest.raises(CorruptPage):
        snapshot.image_from_versions([(1, bytes(bad))], [1, 0, 1], 3 * PAGE_BYTES)


def test_uncommitted_checkpoint_reads_as_it_will_be_stored(tmp_path):
    """A migration pushes its final checkpoint while the daemon commits it: read through
    `Uncommitted`, its frames are the ones the store gives once committed, in the same order,
    whether read before or after the commit (parts streamed earlier come from the store)."""
    store = Store(tmp_path, 1 << 30)
    guest = Guest(store)
    guest.grow(3 * snapshot.FRAME_PAGES)
    guest.checkpoint()
    for p in range(0, len(guest.memory) // PAGE_BYTES, 2):
        guest.write(p, 0, p % 250 + 1)
    number = guest.number + 1
    staged = [(p, bytes(guest.memory[p * PAGE_BYTES:(p + 1) * PAGE_BYTES])) for p in sorted(guest.dirty)]
    frames, stored, zeroed = snapshot.encode_pages(staged)
    assert len(frames) >= 2
    streamed = 1
    guest.pages.put_frames("e1", number, 0, frames[:streamed])
    page_map, delta = pagemap.successor(guest.page_map, number, len(guest.memory) // PAGE_BYTES,
                                        stored, zeroed)
    manifest = Manifest(number=number, journal_seq=0, memory_bytes=len(guest.memory))
    pending = Uncommitted("e1", number, manifest, page_map, b"host", b"stack",
                          [memoryview(f) for f in frames[streamed:]], streamed,  # (as a big
                          guest.record.to_json(), frozenset(page_map.referenced()))  # frame gives them)
    pending.reading(guest.pages)
    before = list(pending.iter_frames(number))
    assert all(type(frame) is bytes for _, frame in before)      # what protobuf takes
    guest.pages.put(guest.record, manifest, frames[streamed:], b"host", b"stack", page_map, delta,
                    RETAIN, streamed=streamed)
    after = list(pending.iter_frames(number))
    stored_frames = list(guest.pages.iter_frames("e1", number))
    assert before == after == stored_frames == list(enumerate(frames))
    assert list(pending.iter_frames(1)) == list(guest.pages.iter_frames("e1", 1))
    assert pending.referenced == guest.pages.referenced("e1", number)


def test_a_write_bigger_than_the_reserve_is_store_full_with_the_advice(tmp_path):
    """check_room keeps 5 % of the map for recording outcomes, but one append can be bigger than
    that: LMDB's MAP_FULL must reach the user as StoreFull with the same advice (what roostd
    pauses on), and the store must take small writes afterwards."""
    store = Store(tmp_path, 8 << 20)
    record = ExecutionRecord(id="e1", module_sha256="m", module_name="m", argv=["m"], env=[],
                             mounts=[])
    chunk = bytes(range(256)) * 4096                      # 1 MiB, incompressible to LMDB
    with pytest.raises(StoreFull) as full:
        for seq in range(16):
            store.append(record, seq, [(1, chunk)], 0, [])
    assert "the store is full: raise store.map_size_bytes" in str(full.value), full.value
    assert "MDB_MAP_FULL" in str(full.value)              # a bigger append than the reserve
    store.put_execution(record)
    assert store.get_execution("e1").id == "e1"


def test_a_read_only_view_reads_through_the_store(tmp_path):
    """Tools (bench, tests) read a daemon's store through `Store(readonly=True)`, never raw
    LMDB: values are checked as the daemon's are, and nothing is written."""
    store = Store(tmp_path, 1 << 30)
    guest = Guest(store)
    guest.write(1, 2, 77)
    guest.checkpoint()
    store.close()
    view = Store(tmp_path, 1 << 30, readonly=True)
    pages = PageStore(view)
    stored = pages.manifest("e1", 1)
    assert stored is not None and stored.number == 1
    assert pages.restorable("e1") == [1]
    with pytest.raises(StoreError):
        view.put_execution(guest.record)
    view.close()
    with pytest.raises(StoreError):
        Store(tmp_path / "nothing", 1 << 30, readonly=True)


def test_the_commit_returns_the_manifest_it_stores(tmp_path):
    """The sink completes the manifest (how its map is chained) and returns it, the one it
    stored: `to_json` of it and the stats, byte for byte; the given one is left as it was."""
    guest = Guest(Store(tmp_path, 1 << 30))
    guest.checkpoint()
    manifest = Manifest(number=2, journal_seq=3, memory_bytes=len(guest.memory), reason="pause",
                        extra={"from_a_newer_roostd": [1]})
    stats = CheckpointStats(pause_seconds=0.5, stored_bytes=7)
    stored = guest.pages.put(guest.record, manifest, [], b"host", b"stack", guest.page_map, None,
                             RETAIN, stats=stats)
    assert manifest.map_base is None
    assert (stored.map_base, stored.chain_entries) == (1, 0) and stored.map_bytes
    assert stored == dataclasses.replace(manifest, map_base=1, chain_entries=0, map_bytes=stored.map_bytes)
    with guest.pages.store.txn("test") as txn:
        raw = txn.get(keys.seq("e1", 2), db=guest.pages.dbs["checkpoints"])
    assert raw == stored.to_json(stats)
    assert guest.pages.checkpoint("e1", 2) == (stored, stats) and guest.pages.latest("e1") == stored
    assert json.loads(raw)["from_a_newer_roostd"] == [1]
