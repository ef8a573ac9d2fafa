"""zstd decompression of bytes that may be hostile: never more memory than the caller allows.

python-zstandard sizes its output by the content size a frame *declares* and ignores
`max_output_size` when there is one, so a 33 KB page map declaring 2^28 pages made the daemon
allocate gigabytes. Every decompression of data from a peer, a client or the store goes
through `inflate`, which checks the declared size first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zstandard
else:                               # (imported on first use: roostd serves before)
    from roost.daemon.lazy import zstandard

from roost.daemon.errors import Inflated  # (re-exported: callers catch it from here)


def inflate(data: bytes | memoryview, limit: int, what: str) -> bytes:
    """`data` decompressed, at most `limit` bytes; Inflated naming `what` otherwise."""
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise Inflated(f"{what}: not zstd data ({e})") from None
    if declared > limit:
        raise Inflated(f"{what}: declares {declared} bytes, more than the {limit} it can hold")
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=max(limit, 1))
    except zstandard.ZstdError as e:
        raise Inflated(f"{what}: {e}") from None
