"""Memory images of a checkpoint: 4 KiB pages, all-zero pages omitted, runs of pages compressed
together into frames, every page checksummed (see SNAPSHOT_FORMAT.md).

A frame holds up to FRAME_PAGES non-zero pages:

    magic "RPGF", u16 major, u16 minor, u32 page count N, u32 crc32 of the two arrays below,
    N x u32 page index, N x u32 crc32 of the page's uncompressed bytes,
    zstd frame of the N pages concatenated

A restore writes exactly the pages present; every page absent from every frame is zero.
A page whose crc32 does not match is reported (`CorruptPage`), never written into a guest.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

import zstandard

from .errors import StoreError

PAGE_BYTES = 4096
FRAME_PAGES = 64                    # 256 KiB of input per zstd call
MAGIC = b"RPGF"
FORMAT_VERSION = (1, 0)
_HEAD = struct.Struct("<4sHHII")
_ZERO = bytes(PAGE_BYTES)


class CorruptPage(StoreError):
    """A stored page failed its checksum: the checkpoint cannot be restored as it is."""


_BLOCK_PAGES = 64
_ZERO_BLOCK = bytes(PAGE_BYTES * _BLOCK_PAGES)


def nonzero_pages(memory: bytes | bytearray) -> Iterator[int]:
    """Indexes of the pages of `memory` that hold anything but zeros (a whole 256 KiB block is
    tested first: guest memory is mostly untouched). Takes bytes, not a memoryview: slicing
    bytes and comparing is a memcmp, comparing memoryviews is an element-wise loop."""
    pages = len(memory) // PAGE_BYTES
    for block in range(0, pages, _BLOCK_PAGES):
        end = min(block + _BLOCK_PAGES, pages)
        if memory[block * PAGE_BYTES:end * PAGE_BYTES] == _ZERO_BLOCK[:(end - block) * PAGE_BYTES]:
            continue
        for index in range(block, end):
            off = index * PAGE_BYTES
            if memory[off:off + PAGE_BYTES] != _ZERO:
                yield index


def encode_frames(memory: bytes | bytearray | memoryview, pages: Iterable[int], level: int = 1) -> list[bytes]:
    """Frames holding `pages` of `memory` (in the given order, FRAME_PAGES per frame)."""
    frames, batch = [], []
    compressor = zstandard.ZstdCompressor(level=level)
    for index in pages:
        batch.append(index)
        if len(batch) == FRAME_PAGES:
            frames.append(_frame(memory, batch, compressor))
            batch = []
    if batch:
        frames.append(_frame(memory, batch, compressor))
    return frames


def _frame(memory: bytes | bytearray | memoryview, indexes: list[int], compressor: zstandard.ZstdCompressor) -> bytes:
    return frame_bytes(indexes, [memory[i * PAGE_BYTES:(i + 1) * PAGE_BYTES] for i in indexes],
                       compressor)


def frame_bytes(indexes: list[int], pages: list, compressor: zstandard.ZstdCompressor) -> bytes:
    n = len(indexes)
    arrays = struct.pack(f"<{n}I", *indexes) + struct.pack(f"<{n}I", *(zlib.crc32(p) for p in pages))
    return b"".join([_HEAD.pack(MAGIC, *FORMAT_VERSION, n, zlib.crc32(arrays)), arrays,
                     compressor.compress(b"".join(pages))])


def decode_frame(frame: bytes, what: str = "frame") -> Iterator[tuple[int, memoryview]]:
    """(page index, page bytes) for every page of a frame, checksums verified."""
    magic, major, minor, n, arrays_crc = _HEAD.unpack_from(frame)
    if magic != MAGIC or major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
        raise CorruptPage(f"{what}: not a page frame of a supported version")
    off = _HEAD.size
    if zlib.crc32(frame[off:off + 8 * n]) != arrays_crc:
        raise CorruptPage(f"{what}: its page index fails its checksum")
    indexes = struct.unpack_from(f"<{n}I", frame, off)
    crcs = struct.unpack_from(f"<{n}I", frame, off + 4 * n)
    try:
        data = memoryview(zstandard.ZstdDecompressor().decompress(frame[off + 8 * n:],
                                                                 max_output_size=n * PAGE_BYTES))
    except zstandard.ZstdError as e:
        raise CorruptPage(f"{what}: compressed pages do not decode: {e}") from e
    if len(data) != n * PAGE_BYTES:
        raise CorruptPage(f"{what}: holds {len(data)} bytes, expected {n * PAGE_BYTES}")
    for k, (index, crc) in enumerate(zip(indexes, crcs)):
        page = data[k * PAGE_BYTES:(k + 1) * PAGE_BYTES]
        if zlib.crc32(page) != crc:
            raise CorruptPage(f"{what}: page {index} fails its checksum")
        yield index, page


def image(frames: Iterable[bytes], size_bytes: int) -> bytearray:
    """The full memory image (zeros where no page was stored)."""
    out = bytearray(size_bytes)
    for n, frame in enumerate(frames):
        for index, page in decode_frame(frame, f"frame {n}"):
            out[index * PAGE_BYTES:(index + 1) * PAGE_BYTES] = page
    return out


def encode_pages(pages: list[tuple[int, bytes]], level: int = 1) -> tuple[list[bytes], list[int], list[int]]:
    """Frames for staged (index, 4 KiB bytes) pages: (frames, stored indexes, all-zero indexes).
    All-zero pages are not stored: the page map points them at version 0."""
    stored = [(i, p) for i, p in pages if p != _ZERO]
    zeroed = [i for i, p in pages if p == _ZERO]
    compressor = zstandard.ZstdCompressor(level=level)
    frames = []
    for k in range(0, len(stored), FRAME_PAGES):
        batch = stored[k:k + FRAME_PAGES]
        frames.append(frame_bytes([i for i, _ in batch], [p for _, p in batch], compressor))
    return frames, [i for i, _ in stored], zeroed


def image_from_versions(frames: Iterable[tuple[int, bytes]], versions, size_bytes: int) -> bytearray:
    """The memory of a checkpoint from the frames of every version its page map names: each
    page is taken from exactly the version the map gives (others in a frame are older copies);
    a page the map needs but no frame holds is reported, never left as zeros."""
    out = bytearray(size_bytes)
    pages = size_bytes // PAGE_BYTES
    filled = 0
    for n, (version, frame) in enumerate(frames):
        for index, page in decode_frame(frame, f"frame {n} of version {version}"):
            if index < pages and versions[index] == version:
                out[index * PAGE_BYTES:(index + 1) * PAGE_BYTES] = page
                filled += 1
    wanted = sum(1 for i in range(min(pages, len(versions))) if versions[i])
    if filled != wanted:
        raise CorruptPage(f"checkpoint image: {wanted} pages expected, {filled} found in its frames")
    return out
