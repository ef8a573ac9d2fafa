"""Unit tests of the worker link's typed messages (`roost.daemon.link.messages`): every kind
through real transport bytes on a socketpair, and the frames pinned to what roostd and its
workers sent before the records existed (the two sides may be converted one at a time)."""
from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.link import messages as msg
from roost.daemon.link import transport
from roost.daemon.link.transport import Link

MANIFEST = Manifest(number=3, journal_seq=17, memory_bytes=2 * 65536, reason="pause", requests=(4, 5),
                    stdout_offset=11, stderr_offset=2, globals=(("__stack_pointer", 65536), ("g", 1.5)),
                    created_at=1.7e9, stopped_at=1.7e9 - 0.25, wake_at_ns=0, prepare_version=3)
STATS = CheckpointStats(time_to_safepoint_seconds=0.001, dirty_runs=2, waited_seconds=0.0,
                        precopy_seconds=0.0, precopied_pages=0, pause_pages=9, stage_seconds=0.0002,
                        tracker="uffd-wp-async", pause_seconds=0.003, dirty_pages=9, stored_bytes=4321,
                        compress_seconds=0.01, compress_wait_seconds=0.002, send_wait_seconds=0.0, parts=1)
SPEC = msg.Spec(id="e1", artifact="/var/lib/roost/a.cwasm", module={"prepare_version": 3, "globals": []},
                argv=("prog", "-x"), env=(("A", "1"),), memory_limit_bytes=1 << 26,
                checkpoint_every_seconds=0.5, durable_sleep_seconds=2.0,
                vfs_limits={"bytes": 1 << 30, "inodes": 1000, "links": 8}, journal_first_seq=17,
                checkpoint=MANIFEST, stdout_offset=11, stderr_offset=2, numbered_after=3)

EXAMPLES: list[msg.Message] = [
    msg.Start(SPEC, b"in", b"vfs", b"replay", b"host", b"stack", b"map", (1, 3), (b"f1", b"f3")),
    msg.Start(msg.Spec(id="e2", artifact="a", module=None, argv=("p",), env=()), b"", b"v", b""),
    msg.Control.ask("checkpoint", 7), msg.Control.ask("migrate", 0), msg.Control.throttle(0.25),
    msg.Control.decide("resume"),
    msg.Apply(4, 3 * 65536, b"delta", (4,), (b"frame",)),
    msg.Go(MANIFEST, b"host", b"stack", b"replay"),
    msg.Ready(123, 0.02, True, False, 0.0, "hash"),
    msg.Pages(3, 2048, (b"a", b"b")),
    msg.Checkpoint(MANIFEST, STATS, b"host", b"stack", b"\x01\x00\x00\x00", b"", (b"frame",)),
    msg.Applied(4), msg.Stats({"clock_time_get": 12}),
    msg.End("EXITED", 0, calls={"fd_write": 1}, memory_bytes=65536, vfs=b"fs"),
    msg.End("FAILED", -1, error="restoring checkpoint 3: bad", corrupt_checkpoint=3, vfs=b"v"),
]


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    left, right = Link(a), Link(b)
    yield left, right
    left.close()
    right.close()


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_the_socket(pair, message) -> None:
    left, right = pair
    left.send_message(message)
    assert msg.decode(right.read_one()) == message


def test_a_big_frame_arrives_as_views_and_decodes_equal(pair) -> None:
    """A frame over BIG_FRAME is received into its own buffer; its blobs stay views of it."""
    left, right = pair
    big = msg.Checkpoint(MANIFEST, STATS, b"h" * 100, b"s", b"\x00" * 8, b"", (b"x" * (2 << 20), b"y" * 10))
    sender = threading.Thread(target=left.send_message, args=(big,))
    sender.start()
    frame = right.read_one()
    sender.join()
    assert isinstance(frame.blobs[4], memoryview)
    got = msg.decode(frame)
    assert isinstance(got, msg.Checkpoint) and got == big
    assert isinstance(got.frames[0], memoryview)        # not copied on the way in


def test_blob_order_is_pinned() -> None:
    """The order the daemon side indexes raw frames by (executions/supervisor)."""
    start = msg.Start(SPEC, b"stdin", b"vfs", b"replay", b"host", b"stack", b"map", (1, 2), (b"f1", b"f2"))
    assert start.encode()[2] == [b"stdin", b"vfs", b"replay", b"host", b"stack", b"map", b"f1", b"f2"]
    fresh = msg.Start(msg.Spec(id="e", artifact="a", module=None, argv=(), env=()), b"stdin", b"vfs", b"r")
    assert fresh.encode()[2] == [b"stdin", b"vfs", b"r"]
    ckpt = msg.Checkpoint(MANIFEST, STATS, b"host", b"stack", b"stored", b"zeroed", (b"f1", b"f2"))
    assert ckpt.encode()[2] == [b"host", b"stack", b"stored", b"zeroed", b"f1", b"f2"]
    assert msg.Apply(1, 0, b"delta", (1,), (b"f",)).encode()[2] == [b"delta", b"f"]
    assert msg.Go(MANIFEST, b"host", b"stack", b"replay").encode()[2] == [b"host", b"stack", b"replay"]
    assert msg.End("EXITED", vfs=b"fs").encode()[2] == [b"fs"]


def test_frames_are_the_bytes_sent_before_the_records() -> None:
    """Byte for byte what the worker and supervisor sent as raw dicts (the JSON key order too)."""
    def same(message: msg.Message, kind: bytes, meta: dict, blobs: list) -> None:
        assert transport.encode(*message.encode()) == transport.encode(kind, meta, blobs)

    same(msg.Control.ask("pause", 2), transport.CONTROL, {"action": "pause", "request": 2}, [])
    same(msg.Control.throttle(0.5), transport.CONTROL, {"action": "throttle", "fraction": 0.5}, [])
    same(msg.Control.decide("release"), transport.CONTROL, {"action": "release"}, [])
    same(msg.Applied(4), transport.APPLIED, {"number": 4}, [])
    same(msg.Pages(3, 0, (b"a",)), transport.PAGES, {"number": 3, "first_frame": 0}, [b"a"])
    same(msg.Apply(4, 65536, b"d", (4,), (b"f",)), transport.APPLY,
         {"number": 4, "memory_bytes": 65536, "frame_versions": [4]}, [b"d", b"f"])
    same(msg.Stats({"x": 1}), transport.STATS, {"calls": {"x": 1}}, [])
    same(msg.Ready(9, 0.5, True, False, 0.0, ""), transport.READY,
         {"pid": 9, "setup_seconds": 0.5, "checkpointable": True, "standby": False,
          "restore_seconds": 0.0, "tracker": ""}, [])
    same(msg.End("EXITED", 0, calls={"a": 1}, memory_bytes=5, vfs=b"v"), transport.END,
         {"state": "EXITED", "exit_code": 0, "calls": {"a": 1}, "memory_bytes": 5}, [b"v"])
    same(msg.End("FAILED", -1, error="e", corrupt_checkpoint=3, vfs=b"v"), transport.END,
         {"state": "FAILED", "exit_code": -1, "corrupt_checkpoint": 3, "error": "e"}, [b"v"])
    fresh = msg.Spec(id="e", artifact="a", module={"p": 1}, argv=("p",), env=(("A", "1"),),
                     memory_limit_bytes=0, checkpoint_every_seconds=0.0, durable_sleep_seconds=2.0,
                     vfs_limits={"bytes": 1}, standby=True)
    same(msg.Start(fresh, b"i", b"v", b"r"), transport.START,
         {"id": "e", "artifact": "a", "manifest": {"p": 1}, "argv": ["p"], "env": [["A", "1"]],
          "memory_limit_bytes": 0, "checkpoint_every_seconds": 0.0, "durable_sleep_seconds": 2.0,
          "vfs_limits": {"bytes": 1}, "journal_first_seq": 0, "checkpoint": None, "stdout_offset": 0,
          "stderr_offset": 0, "standby": True}, [b"i", b"v", b"r"])


def test_start_carries_the_checkpoint_and_its_frame_versions() -> None:
    start = msg.Start(SPEC, b"i", b"v", b"r", b"h", b"s", b"m", (1, 3), (b"f1", b"f3"))
    _, meta, _ = start.encode()
    assert meta["checkpoint"]["frame_versions"] == [1, 3]
    assert meta["checkpoint"]["number"] == 3 and meta["numbered_after"] == 3
    assert "standby" not in meta


def test_checkpoint_meta_is_the_flat_manifest() -> None:
    """The daemon stores the CHECKPOINT frame's meta (plus its own keys) as the manifest."""
    _, meta, _ = msg.Checkpoint(MANIFEST, STATS, b"", b"", b"", b"").encode()
    assert meta["pause_seconds"] == 0.003 and meta["number"] == 3 and meta["globals"][0] == ["__stack_pointer", 65536]
    assert Manifest.from_dict(meta) == MANIFEST and CheckpointStats.from_dict(meta) == STATS


def test_unknown_kind_and_missing_blobs_are_refused() -> None:
    with pytest.raises(ValueError):
        msg.decode(transport.Frame(b"Q"))
    with pytest.raises(ValueError):
        msg.decode(transport.Frame(transport.GO, MANIFEST.to_dict(), [b"host"]))


def test_sync_and_http_events_round_trip(pair) -> None:
    left, right = pair
    for m in (msg.Sync(3), msg.Synced(3), msg.HttpEvent({"event": "start", "url": "http://a/"})):
        left.send_message(m)
        assert msg.decode(right.read_one()) == m


def test_output_and_journal_decode(pair) -> None:
    left, right = pair
    left.send_output(2, 100, b"hello")
    left.send_journal([b"rec1", b"rec2"])
    frames = []
    while len(frames) < 3:
        frames += right.read_batch()
    assert [msg.decode(f) for f in frames] == [msg.Output(2, 100, b"hello"), msg.Journal(b"rec1"),
                                               msg.Journal(b"rec2")]


blob = st.binary(max_size=64)
names = st.text(min_size=1, max_size=8)


@settings(max_examples=50, deadline=None)
@given(number=st.integers(0, 1 << 40), memory=st.integers(0, 1 << 40), versions=st.lists(st.integers(1, 99)),
       frames=st.lists(blob, max_size=4), delta=blob)
def test_apply_round_trips(number, memory, versions, frames, delta) -> None:
    a, b = socket.socketpair()
    left, right = Link(a), Link(b)
    try:
        m = msg.Apply(number, memory, delta, tuple(versions), tuple(frames))
        left.send_message(m)
        assert msg.decode(right.read_one()) == m
    finally:
        left.close()
        right.close()


@settings(max_examples=50, deadline=None)
@given(argv=st.lists(names, max_size=3), env=st.lists(st.tuples(names, names), max_size=3),
       limit=st.integers(0, 1 << 40), every=st.floats(0, 1e6), standby=st.booleans(),
       after=st.none() | st.integers(0, 1000), blobs=st.lists(blob, min_size=3, max_size=3))
def test_fresh_start_round_trips(argv, env, limit, every, standby, after, blobs) -> None:
    spec = msg.Spec(id="x", artifact="/a", module={"k": [1]}, argv=tuple(argv), env=tuple(env),
                    memory_limit_bytes=limit, checkpoint_every_seconds=every, standby=standby,
                    numbered_after=after)
    m = msg.Start(spec, *blobs)
    kind, meta, out = m.encode()
    frame = transport._decode(kind, memoryview(transport.encode(kind, meta, out))[9:])
    assert msg.Start.decode(frame) == m
