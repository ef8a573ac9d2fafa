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

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import zstandard
else:                               # (imported on first use: roostd serves before)
    from roost.daemon.lazy import numpy as np
    from roost.daemon.lazy import zstandard

from roost.daemon.checkpoint.inflate import Inflated, inflate
from roost.daemon.errors import StoreError

FORMAT_VERSION = (1, 0)
COMPACT_EVERY = 8
_HEAD = struct.Struct("<4sHHI")

Delta: TypeAlias = "np.ndarray"
"""The entries a checkpoint changed: an (n, 2) u32 array of (page, version), sorted by page."""


class PageMap:
    """page index -> version (checkpoint number; 0 = zero page), as a u32 array (numpy: a map
    of a 2 GiB guest has 512 K entries, and every checkpoint copies and updates one)."""

    def __init__(self, versions: np.ndarray | None = None) -> None:
        self.versions = versions if versions is not None else np.zeros(0, np.uint32)

    @property
    def pages(self) -> int:
        return len(self.versions)

    def copy(self) -> "PageMap":
        return PageMap(self.versions.copy())

    def resize(self, pages: int) -> None:
        """Memory only grows; new pages are zero until written."""
        if pages > len(self.versions):
            self.versions = np.concatenate([self.versions, np.zeros(pages - len(self.versions), np.uint32)])

    def apply(self, number: int, stored: Iterable[int], zeroed: Iterable[int]) -> Delta:
        """Point `stored` pages at checkpoint `number` and `zeroed` ones at 0; the delta."""
        stored = np.asarray(stored, dtype=np.int64).reshape(-1)
        zeroed = np.asarray(zeroed, dtype=np.int64).reshape(-1)
        self.versions[stored] = number
        self.versions[zeroed] = 0
        pages = np.concatenate([stored, zeroed])
        delta = np.empty((len(pages), 2), np.uint32)
        delta[:, 0] = pages
        delta[:, 1] = self.versions[pages]
        return delta[np.argsort(delta[:, 0], kind="stable")]

    def referenced(self) -> set[int]:
        """Checkpoint numbers this map needs pages from."""
        if not len(self.versions):
            return set()
        used = np.zeros(int(self.versions.max()) + 1, bool)   # half a bincount's time
        used[self.versions] = True
        used[0] = False
        return set(np.flatnonzero(used).tolist())


def successor(previous: PageMap, number: int, pages: int, stored: Iterable[int],
              zeroed: Iterable[int]) -> tuple[PageMap, Delta]:
    """The map of checkpoint `number` (memory of `pages` pages) from the previous checkpoint's
    map and the pages written since: stored ones now live in `number`, zeroed ones nowhere."""
    page_map = previous.copy()
    page_map.resize(pages)
    return page_map, page_map.apply(number, stored, zeroed)


def difference(previous: PageMap, current: PageMap) -> Delta:
    """The delta that turns `previous` into `current` (memory only grows)."""
    old = np.zeros(current.pages, np.uint32)
    old[:previous.pages] = previous.versions[:current.pages]
    pages = np.flatnonzero(old != current.versions)
    delta = np.empty((len(pages), 2), np.uint32)
    delta[:, 0] = pages
    delta[:, 1] = current.versions[pages]
    return delta


def encode_full(m: PageMap) -> bytes:
    return _HEAD.pack(b"RPMF", *FORMAT_VERSION, m.pages) + \
        zstandard.ZstdCompressor(level=1).compress(m.versions.astype("<u4").tobytes())


def encode_delta(pages: int, delta: Delta) -> bytes:
    flat = np.ascontiguousarray(delta, dtype="<u4")
    return _HEAD.pack(b"RPMD", *FORMAT_VERSION, pages) + struct.pack("<I", len(delta)) + \
        zstandard.ZstdCompressor(level=1).compress(flat.tobytes())


def is_full(raw: bytes) -> bool:
    return raw[:4] == b"RPMF"


MAX_PAGES = 1 << 20          # 4 GiB of 4 KiB pages: all a wasm32 memory can have


def _head(raw: bytes | memoryview, max_pages: int) -> tuple[bytes, int]:
    if len(raw) < _HEAD.size:
        raise StoreError(f"page map: {len(raw)} bytes, too short for its header")
    magic, major, minor, pages = _HEAD.unpack_from(raw)
    if major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1] or magic not in (b"RPMF", b"RPMD"):
        raise StoreError(f"page map: bad magic {magic!r} or unsupported version {major}.{minor}")
    if pages > max_pages:
        raise StoreError(f"page map: {pages} pages, more than the {max_pages} its memory has")
    return magic, pages


def _body(raw: bytes | memoryview, offset: int, size: int) -> bytes:
    """The map's compressed entries, which must be exactly `size` bytes."""
    try:
        body = inflate(raw[offset:], size, "page map")
    except Inflated as e:
        raise StoreError(str(e)) from None
    if len(body) != size:
        raise StoreError(f"page map: {len(body)} bytes of entries where {size} were announced")
    return body


def delta_entries(raw: bytes | memoryview, max_pages: int = MAX_PAGES) -> tuple[int, Delta]:
    """A delta (encode_delta) as the memory size in pages it is for and its entries, decoded
    once for callers that need both the entries and the map they make (`with_delta`). Every
    size is checked before memory is allocated for it (a peer sends these)."""
    magic, pages = _head(raw, max_pages)
    if magic != b"RPMD" or len(raw) < _HEAD.size + 4:
        raise StoreError("page map: not a delta")
    (n,) = struct.unpack_from("<I", raw, _HEAD.size)
    if n > pages:
        raise StoreError(f"page map: a delta of {n} entries for {pages} pages")
    delta = np.frombuffer(_body(raw, _HEAD.size + 4, 8 * n), "<u4").reshape(-1, 2)
    if n and int(delta[:, 0].max()) >= pages:
        raise StoreError(f"page map: a delta entry past its {pages} pages")
    return pages, delta


def with_delta(base: PageMap, pages: int, delta: Delta) -> PageMap:
    """`base` (modified and returned) grown to `pages` with `delta` applied."""
    base.resize(pages)
    base.versions[delta[:, 0].astype(np.int64)] = delta[:, 1]
    return base


def decode(raw: bytes, base: PageMap | None, max_pages: int = MAX_PAGES) -> PageMap:
    """A full map, or `base` with a delta applied (base is modified and returned); no map of
    more than `max_pages` pages."""
    magic, pages = _head(raw, max_pages)
    if magic == b"RPMF":
        body = _body(raw, _HEAD.size, 4 * pages)
        return PageMap(np.frombuffer(body, "<u4").astype(np.uint32))
    if base is None:
        raise StoreError("page map: a delta without the map it applies to")
    return with_delta(base, *delta_entries(raw, max_pages))
