"""`roost debug checkpoint` without a daemon: the summaries the service makes of page maps and
frames, the CLI's parsing and rendering, and how a failed call reads (see
tests/integration/test_debug.py for a real daemon)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zstandard

from roost.client import cli, debug
from roost.client.errors import RoostClientError
from roost.daemon.checkpoint.frames import PAGE_BYTES, CorruptPage, encode_pages
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.service import debug as service
from roost.v1 import control_pb2 as pb


def test_page_map_summary_counts_pages_per_version():
    m = service.page_map_pb(PageMap(np.array([0, 1, 1, 3, 0, 0, 3, 3], np.uint32)))
    assert (m.pages, m.zero_pages) == (8, 3)
    assert [(v.version, v.pages) for v in m.versions] == [(1, 2), (3, 3)]
    assert service.page_map_pb(PageMap()).pages == 0


def test_frame_summary_is_the_header_and_the_stored_checksums():
    pages = [(i, bytes([i + 1]) * PAGE_BYTES) for i in range(3)] + [(7, bytes(PAGE_BYTES))]
    frames, stored, zeroed = encode_pages(pages)
    assert (stored, zeroed) == ([0, 1, 2], [7])
    f = service.frame_pb(4, 0, frames[0])
    assert (f.version, f.index, f.format, f.pages, f.bytes) == (4, 0, "2.0", 3, len(frames[0]))
    zstd = frames[0][16 + 4 * 3:]
    assert zstandard.get_frame_parameters(zstd).has_checksum
    assert f.content_checksum == zstd[-4:][::-1].hex()
    assert f.index_crc32 != 0


@pytest.mark.parametrize("frame", [b"", b"RPGF", b"XXXX" + bytes(12), b"RPGF\x09\x00" + bytes(10)])
def test_a_frame_without_a_header_is_corrupt(frame):
    with pytest.raises(CorruptPage, match="frame 2 of version 5"):
        service.frame_pb(5, 2, frame)


def test_debug_checkpoint_parses():
    ns = cli.parse_args(["debug", "checkpoint", "abc", "3"])
    assert (ns.command, ns.debug_command, ns.id, ns.number) == ("debug", "checkpoint", "abc", 3)
    assert cli.parse_args(["debug", "checkpoint", "--json", "abc"]).number == 0
    assert cli.parse_args(["--json", "debug", "checkpoint", "abc"]).json is True


@pytest.mark.parametrize("argv", [["debug"], ["debug", "checkpoint"], ["debug", "bogus", "x"],
                                  ["debug", "checkpoint", "x", "0"], ["debug", "checkpoint", "x", "-1"]])
def test_debug_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def _response() -> pb.DebugCheckpointResponse:
    return pb.DebugCheckpointResponse(
        id="e1", number=2, restorable=[2, 1],
        manifest_json=json.dumps({"number": 2, "memory_bytes": 65536, "globals": [[0, 1]] * 50}),
        page_map=pb.DebugPageMap(pages=16, zero_pages=13, versions=[pb.DebugVersion(version=1, pages=3)]),
        frames=[pb.DebugFrame(version=1, index=0, format="2.0", pages=3, bytes=900,
                              index_crc32=0xABC, content_checksum="0011aabb")],
        host_state=pb.DebugHostState(present=True, format="1.1", bytes=300, argv=["p", "a"],
                                     env_vars=1, open_fds=4, inodes=2, file_bytes=5))


def test_text_shows_every_section_and_shortens_long_manifest_values():
    text = "\n".join(debug.checkpoint_lines(_response()))
    assert text.startswith("checkpoint 2 of e1 (restorable: 2, 1)")
    assert "memory_bytes: 65536" in text and "--json shows all" in text
    assert "page map: 16 pages" in text and "13 zero, 3 stored in 1 version(s)" in text
    assert "00000abc" in text and "0011aabb" in text
    assert "format 1.1" in text and "argv:           p a" in text


def test_json_holds_the_manifest_as_an_object():
    out = debug.checkpoint_dict(_response())
    assert out["manifest"]["number"] == 2 and len(out["manifest"]["globals"]) == 50
    assert "manifest_json" not in out
    assert out["frames"][0]["content_checksum"] == "0011aabb"
    json.dumps(out)


def test_unavailable_from_roostd_itself_is_not_an_unreachable_daemon():
    peer = RoostClientError("UNAVAILABLE", "peer 10.0.0.2:7000: down", error="PeerUnavailable",
                            retriable=True)
    assert cli.describe(peer, "unix:/s") == "peer 10.0.0.2:7000: down"
    assert cli.describe(RoostClientError("UNAVAILABLE", "refused"), "unix:/s").startswith(
        "cannot reach roostd at unix:/s")
