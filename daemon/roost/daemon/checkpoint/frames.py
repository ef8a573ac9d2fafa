"""Memory images of a checkpoint: 4 KiB pages, all-zero pages omitted, runs of pages compressed
together into frames, every frame checksummed (see SNAPSHOT_FORMAT.md).

A frame (format 2.0) holds up to FRAME_PAGES non-zero pages:

    magic "RPGF", u16 major 2, u16 minor 0, u32 page count N, u32 crc32 of the index array,
    N x u32 page index,
    zstd frame of the N pages concatenated, with zstd's content checksum (XXH64)

The content checksum covers the uncompressed pages and is verified by the decoder; checking it
costs nothing measurable, where a crc32 per page (format 1.0, still read) cost as much as the
compression of a run of pages. A restore writes exactly the pages present; every page absent
from every frame is zero. A frame that fails a check is reported (`CorruptPage`), never
written into a guest.
"""
from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import numpy as np
    import zstandard
else:                               # (imported on first use: roostd serves before)
    from roost.daemon.lazy import numpy as np
    from roost.daemon.lazy import zstandard

from roost.daemon.errors import CorruptPage

PAGE_BYTES = 4096
FRAME_PAGES = 64                    # 256 KiB of input per zstd call
MAGIC = b"RPGF"
FORMAT_VERSION = (2, 0)
READS = (1, 2)                      # majors this version decodes
LEVEL = 1
FAST_LEVEL = -1      # a migration's final pages: ~15x faster both ways, larger (their downtime)
_HEAD = struct.Struct("<4sHHII")
_WORDS = PAGE_BYTES // 8


# ---------------------------------------------------------------- encoding

def nonzero_mask(pages: np.ndarray) -> np.ndarray:
    """For (n, 4096) uint8 pages: which hold anything but zeros (vectorised, one read)."""
    if not len(pages):
        return np.zeros(0, bool)
    return cast(np.ndarray, pages.view(np.uint64).reshape(len(pages), _WORDS).any(axis=1))


def frame_bytes(indexes: np.ndarray, data, compressor: zstandard.ZstdCompressor) -> bytes:
    """One frame: `indexes` (u32) and their pages' bytes `data` (len(indexes) * 4096)."""
    index = np.ascontiguousarray(indexes, dtype="<u4").tobytes()
    return b"".join([_HEAD.pack(MAGIC, *FORMAT_VERSION, len(indexes), zlib.crc32(index)), index,
                     compressor.compress(data)])


def _compressor(level: int = LEVEL) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=level, write_checksum=True)


class Encoder:
    """Compresses staged pages into frames on `threads` threads at the lowest CPU priority.

    zstd releases the GIL, so two threads use two cores; at nice 19 they get only what the guest
    (and the daemon) leave idle, which is "the second core when it is free" decided by the
    scheduler at every moment instead of guessed once per checkpoint. The threads are kept: a
    checkpoint is frequent, a thread start is not free.

    A checkpoint after which the guest does not run on (a migration's stop, a pause) is
    `urgent`: nothing is left for low priority to protect, and its compression is downtime, so
    it runs on threads at normal priority (started the first time one is needed). A `fast` one
    (a migration's final pages, compressed, pushed and decompressed while the guest is down)
    trades size for time: zstd's negative level FAST_LEVEL.
    """

    def __init__(self, threads: int = 2) -> None:
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="roost-zstd",
                                        initializer=_lowest_priority)
        self._urgent_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def encode(self, indexes: np.ndarray, pages: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """(frames, stored indexes, all-zero indexes) of staged pages. All-zero pages are not
        stored: the page map points them at version 0."""
        return self.submit([(indexes, pages)]).result()

    def submit(self, pieces: list[tuple[np.ndarray, np.ndarray]], urgent: bool = False,
               fast: bool = False) -> "Encoding":
        """Start encoding pieces of (indexes, (n, 4096) pages); `result()` waits for it. A
        frame never spans two pieces (their pages are not adjacent in the staging buffer)."""
        tasks = [(indexes[k:k + FRAME_PAGES], pages[k:k + FRAME_PAGES])
                 for indexes, pages in pieces for k in range(0, len(indexes), FRAME_PAGES)]
        share = max(1, -(-len(tasks) // self.threads))
        pool = self._pool
        if urgent:
            if self._urgent_pool is None:
                self._urgent_pool = ThreadPoolExecutor(max_workers=self.threads,
                                                       thread_name_prefix="roost-zstd-urgent")
            pool = self._urgent_pool
        level = FAST_LEVEL if fast else LEVEL
        return Encoding([pool.submit(self._frames, tasks[k:k + share], level)
                         for k in range(0, len(tasks), share)])

    def _frames(self, tasks: list[tuple[np.ndarray, np.ndarray]],
                level: int = LEVEL) -> tuple[list[bytes], list, list]:
        """Frames of up to FRAME_PAGES pages each, all-zero pages left out (found here, on the
        pool's threads: it reads every staged byte)."""
        compressors = getattr(self._local, "compressors", None)
        if compressors is None:
            compressors = self._local.compressors = {}
        compressor = compressors.get(level)
        if compressor is None:
            compressor = compressors[level] = _compressor(level)
        frames, stored, zeroed = [], [], []
        for indexes, pages in tasks:
            nonzero = nonzero_mask(pages)
            if nonzero.all():
                kept, data = indexes, pages
            else:
                kept, data = indexes[nonzero], pages[nonzero]
                zeroed.append(indexes[~nonzero])
            if len(kept):
                frames.append(frame_bytes(kept, data, compressor))
                stored.append(kept)
        return frames, stored, zeroed

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        if self._urgent_pool is not None:
            self._urgent_pool.shutdown(wait=False)


class Encoding:
    """Frames being compressed on an `Encoder`'s threads."""

    def __init__(self, parts: list) -> None:
        self._parts = parts

    def result(self) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """(frames, stored indexes, all-zero indexes), in page order."""
        frames, stored, zeroed = [], [], []
        for part in self._parts:
            f, s, z = part.result()
            frames += f
            stored += s
            zeroed += z
        return frames, _joined(stored), _joined(zeroed)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.uint32) if arrays else np.empty(0, np.uint32)


def _lowest_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)    # this thread only
    except OSError:
        pass


def encode_pages(pages: list[tuple[int, bytes]]) -> tuple[list[bytes], list[int], list[int]]:
    """Frames for (index, 4 KiB bytes) pages, in order: (frames, stored, all-zero indexes).
    The simple form, for tests and tools; the worker uses an `Encoder` on a staging buffer."""
    indexes = np.array([i for i, _ in pages], dtype=np.uint32)
    data = np.frombuffer(b"".join(p for _, p in pages), np.uint8).reshape(-1, PAGE_BYTES)
    encoder = Encoder(1)
    try:
        frames, stored, zeroed = encoder.encode(indexes, data)
    finally:
        encoder.close()
    return frames, stored.tolist(), zeroed.tolist()


# ---------------------------------------------------------------- decoding

@dataclass(frozen=True)
class FrameHeader:
    """A frame's header as stored: format, page count, its index's crc32, and where the zstd
    frame of its pages starts (after the index: 1.0 also has a crc32 per page there)."""
    major: int
    minor: int
    pages: int
    index_crc32: int
    body_at: int


def frame_header(frame: bytes | memoryview, what: str = "frame") -> FrameHeader:
    """The header of a frame of a version this roostd reads (CorruptPage otherwise)."""
    if len(frame) < _HEAD.size:
        raise CorruptPage(f"{what}: truncated ({len(frame)} bytes)")
    magic, major, minor, n, index_crc = _HEAD.unpack_from(frame)
    if magic != MAGIC or major not in READS or (major == FORMAT_VERSION[0] and minor > FORMAT_VERSION[1]):
        raise CorruptPage(f"{what}: not a page frame of a supported version")
    return FrameHeader(major, minor, n, index_crc, _HEAD.size + (8 if major == 1 else 4) * n)


def decode_frame(frame: bytes | memoryview, what: str = "frame") -> tuple[np.ndarray, np.ndarray]:
    """(page indexes, (n, 4096) page bytes) of a frame, checksums verified."""
    head = frame_header(frame, what)
    major, n, off, arrays = head.major, head.pages, _HEAD.size, head.body_at - _HEAD.size
    if zlib.crc32(frame[off:off + arrays]) != head.index_crc32:
        raise CorruptPage(f"{what}: its page index fails its checksum")
    indexes = np.frombuffer(frame, dtype="<u4", count=n, offset=off).astype(np.int64)
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame[off + arrays:], max_output_size=n * PAGE_BYTES)
    except zstandard.ZstdError as e:
        raise CorruptPage(f"{what}: compressed pages fail their checksum or do not decode: {e}") from e
    if len(raw) != n * PAGE_BYTES:
        raise CorruptPage(f"{what}: holds {len(raw)} bytes, expected {n * PAGE_BYTES}")
    pages = np.frombuffer(raw, np.uint8).reshape(n, PAGE_BYTES)
    if major == 1:
        _check_page_crcs(frame, off + 4 * n, indexes, pages, what)
    return indexes, pages


def _check_page_crcs(frame: bytes | memoryview, at: int, indexes: np.ndarray, pages: np.ndarray, what: str) -> None:
    crcs = struct.unpack_from(f"<{len(indexes)}I", frame, at)
    for k, crc in enumerate(crcs):
        if zlib.crc32(pages[k]) != crc:
            raise CorruptPage(f"{what}: page {int(indexes[k])} fails its checksum")


def restore_pages(memory: np.ndarray, frames: Iterable[tuple[int, bytes | memoryview]], versions: np.ndarray) -> None:
    """Write a checkpoint's pages into `memory` ((pages, 4096), zero where the map says 0):
    each page from exactly the version its map gives (others in a frame are older copies). A
    page the map needs but no frame holds is reported, never left as zeros."""
    pages = min(len(memory), len(versions))
    versions = np.asarray(versions)[:pages]
    filled = 0
    for n, (version, frame) in enumerate(frames):
        indexes, data = decode_frame(frame, f"frame {n} of version {version}")
        inside = indexes < pages
        take = inside.copy()
        take[inside] = versions[indexes[inside]] == version
        if take.all():
            memory[indexes] = data
        else:
            memory[indexes[take]] = data[take]
        filled += int(take.sum())
    wanted = int(np.count_nonzero(versions))
    if filled != wanted:
        raise CorruptPage(f"checkpoint image: {wanted} pages expected, {filled} found in its frames")


def image_from_versions(frames: Iterable[tuple[int, bytes]], versions, size_bytes: int) -> bytearray:
    """The memory of a checkpoint as bytes (zeros where no page was stored)."""
    out = bytearray(size_bytes)
    view = np.frombuffer(out, np.uint8).reshape(-1, PAGE_BYTES) if size_bytes else \
        np.empty((0, PAGE_BYTES), np.uint8)
    restore_pages(view, frames, np.asarray(versions, dtype=np.uint32))
    return out

