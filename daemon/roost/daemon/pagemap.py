"""Page maps: for every 4 KiB page of a checkpoint's memory, which checkpoint stored its
latest version (0 = the page is all zeros and stored nowhere).

A checkpoint stores only the pages written since the previous one, so its map is the previous
map with those pages pointed at itself. Maps are stored incrementally — a *delta* (the changed
entries) per checkpoint, and a *full* map every COMPACT_EVERY checkpoints or when the deltas
since the last full map grow past half a full map — so a checkpoint's metadata does not grow
with memory size when little changed, and a restore applies a short chain.

    full map:   magic "RPMF", u16 major, u16 minor, u32 pages, zstd(u32 version per page)
    delta map:  magic "RPMD", u16 major, u16 minor, u32 pages (memory size), u32 n,
                zstd(n x (u32 page, u32 version))
"""
from __future__ import annotations

import array
import struct
from collections.abc import Iterable

import zstandard

from .errors import StoreError

FORMAT_VERSION = (1, 0)
COMPACT_EVERY = 8
_HEAD = struct.Struct("<4sHHI")


class PageMap:
    """page index -> version (checkpoint number; 0 = zero page), as a compact u32 array."""

    def __init__(self, versions: array.array | None = None) -> None:
        self.versions = versions if versions is not None else array.array("I")

    @property
    def pages(self) -> int:
        return len(self.versions)

    def copy(self) -> "PageMap":
        return PageMap(array.array("I", self.versions))

    def resize(self, pages: int) -> None:
        """Memory only grows; new pages are zero until written."""
        if pages > len(self.versions):
            self.versions.frombytes(bytes(4 * (pages - len(self.versions))))

    def apply(self, number: int, stored: Iterable[int], zeroed: Iterable[int]) -> list[tuple[int, int]]:
        """Point `stored` pages at checkpoint `number` and `zeroed` ones at 0; the delta."""
        delta = []
        for page in stored:
            self.versions[page] = number
            delta.append((page, number))
        for page in zeroed:
            self.versions[page] = 0
            delta.append((page, 0))
        return delta

    def referenced(self) -> set[int]:
        """Checkpoint numbers this map needs pages from."""
        return set(self.versions) - {0}


def successor(previous: PageMap, number: int, pages: int, stored: Iterable[int],
              zeroed: Iterable[int]) -> tuple[PageMap, list[tuple[int, int]]]:
    """The map of checkpoint `number` (memory of `pages` pages) from the previous checkpoint's
    map and the pages written since: stored ones now live in `number`, zeroed ones nowhere."""
    page_map = previous.copy()
    page_map.resize(pages)
    return page_map, page_map.apply(number, stored, zeroed)


def encode_full(m: PageMap) -> bytes:
    return _HEAD.pack(b"RPMF", *FORMAT_VERSION, m.pages) + \
        zstandard.ZstdCompressor(level=1).compress(m.versions.tobytes())


def encode_delta(pages: int, delta: list[tuple[int, int]]) -> bytes:
    flat = array.array("I", [x for pair in sorted(delta) for x in pair])
    return _HEAD.pack(b"RPMD", *FORMAT_VERSION, pages) + struct.pack("<I", len(delta)) + \
        zstandard.ZstdCompressor(level=1).compress(flat.tobytes())


def is_full(raw: bytes) -> bool:
    return raw[:4] == b"RPMF"


def decode(raw: bytes, base: PageMap | None) -> PageMap:
    """A full map, or `base` with a delta applied (base is modified and returned)."""
    magic, major, minor, pages = _HEAD.unpack_from(raw)
    if major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1] or magic not in (b"RPMF", b"RPMD"):
        raise StoreError(f"page map: bad magic {magic!r} or unsupported version {major}.{minor}")
    if magic == b"RPMF":
        versions = array.array("I")
        versions.frombytes(zstandard.ZstdDecompressor().decompress(raw[_HEAD.size:],
                                                                  max_output_size=4 * pages))
        return PageMap(versions)
    if base is None:
        raise StoreError("page map: a delta without the map it applies to")
    (n,) = struct.unpack_from("<I", raw, _HEAD.size)
    flat = array.array("I")
    flat.frombytes(zstandard.ZstdDecompressor().decompress(raw[_HEAD.size + 4:],
                                                          max_output_size=8 * n))
    base.resize(pages)
    for i in range(0, len(flat), 2):
        base.versions[flat[i]] = flat[i + 1]
    return base
