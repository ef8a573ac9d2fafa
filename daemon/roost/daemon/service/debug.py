"""`roost debug checkpoint`: one stored checkpoint read back and summarised, as CRIU's `crit`
shows an image — the manifest as stored, what its page map refers to, the header of every
frame it needs and what its host state holds.

Everything is read through `PageStore`'s public reads and changes nothing. Frames are not
decompressed (a debug call must stay cheap on a GiB guest): their headers are parsed, and a
header that does not parse is reported as the corruption it is (DATA_LOSS); so is a host state
that does not decode.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import zstandard
else:                               # (imported on first use: roostd serves before)
    from roost.daemon.lazy import numpy as np
    from roost.daemon.lazy import zstandard

from roost.daemon.checkpoint import hoststate
from roost.daemon.checkpoint.frames import frame_header
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.errors import NotFound
from roost.daemon.runtime.vfs import Vfs
from roost.daemon.store.checkpoints import PageStore
from roost.v1 import control_pb2 as pb


def describe(pages: PageStore, exec_id: str, number: int = 0) -> pb.DebugCheckpointResponse:
    """Checkpoint `number` of an execution (0: its newest restorable one), summarised."""
    restorable = pages.restorable(exec_id)
    number = number or _newest(restorable, exec_id)
    checkpoint = pages.checkpoint(exec_id, number)
    if checkpoint is None:
        held = ", ".join(map(str, restorable)) or "none"
        raise NotFound(f"execution {exec_id} has no checkpoint {number} (restorable: {held})")
    page_map = pages.page_map(exec_id, number)
    return pb.DebugCheckpointResponse(
        id=exec_id, number=number, manifest_json=checkpoint[0].to_json(checkpoint[1]).decode(),
        restorable=restorable, page_map=page_map_pb(page_map),
        frames=[frame_pb(version, index, frame)
                for version in sorted(page_map.referenced())
                for index, frame in pages.iter_frames(exec_id, version)],
        host_state=_host_state(pages, exec_id, number))


def _newest(restorable: list[int], exec_id: str) -> int:
    if not restorable:
        raise NotFound(f"execution {exec_id} has no checkpoint")
    return restorable[0]


def page_map_pb(page_map: PageMap) -> pb.DebugPageMap:
    """Pages, zero pages and, per version the map refers to, how many pages it gives."""
    counts = np.bincount(page_map.versions) if page_map.pages else np.zeros(1, np.int64)
    return pb.DebugPageMap(
        pages=page_map.pages, zero_pages=int(counts[0]),
        versions=[pb.DebugVersion(version=int(v), pages=int(counts[v]))
                  for v in np.flatnonzero(counts) if v])


def frame_pb(version: int, index: int, frame: bytes) -> pb.DebugFrame:
    """A frame's header fields and checksums as stored (CorruptPage if it has no header)."""
    head = frame_header(frame, f"frame {index} of version {version}")
    return pb.DebugFrame(version=version, index=index, format=f"{head.major}.{head.minor}",
                         pages=head.pages, bytes=len(frame), index_crc32=head.index_crc32,
                         content_checksum=_content_checksum(frame[head.body_at:]))


def _content_checksum(data: bytes) -> str:
    """zstd's content checksum (the frame's last 4 bytes, when its header says it has one)."""
    try:
        has = zstandard.get_frame_parameters(data).has_checksum
    except zstandard.ZstdError:
        return ""
    return f"{int.from_bytes(data[-4:], 'little'):08x}" if has and len(data) >= 4 else ""


def _host_state(pages: PageStore, exec_id: str, number: int) -> pb.DebugHostState:
    """The host state's summary; `present` false once it was collected (an older checkpoint
    whose pages live on for newer ones)."""
    try:
        blob = pages.host_state(exec_id, number)
    except NotFound:
        return pb.DebugHostState(present=False)
    major, minor = hoststate.version(blob)
    state = hoststate.decode(blob, b"")
    usage = Vfs.restore(state.vfs).usage()
    return pb.DebugHostState(
        present=True, format=f"{major}.{minor}", bytes=len(blob), argv=list(state.argv),
        env_vars=len(state.env), stdin_position=state.stdin.position,
        open_fds=len(state.fds.entries), inodes=usage.inodes, file_bytes=usage.bytes)
