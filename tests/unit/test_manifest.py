"""Unit tests of a checkpoint's manifest record (`roost.daemon.checkpoint.manifest`): JSON round
trips, manifests as roostd stored them before the record existed, and bad input refused."""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.daemon.checkpoint import manifest as mf
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.errors import FormatError

# A manifest as a roostd without the record stored it (worker + supervisor + store keys).
STORED_BEFORE = {
    "number": 5, "reason": "checkpoint", "requests": [2], "journal_seq": 40, "stdout_offset": 12,
    "stderr_offset": 0, "memory_bytes": 1114112, "globals": [["__stack_pointer", 66528], ["f", 0.5]],
    "created_at": 1765000000.25, "stopped_at": 1765000000.2, "time_to_safepoint_seconds": 0.0004,
    "wake_at_ns": 0, "prepare_version": 3, "dirty_runs": 4, "waited_seconds": 0.0,
    "precopy_seconds": 0.0, "precopied_pages": 0, "pause_pages": 7, "stage_seconds": 0.0001,
    "tracker": "hash", "pause_seconds": 0.002, "dirty_pages": 7, "stored_bytes": 9000,
    "compress_seconds": 0.004, "compress_wait_seconds": 0.001, "send_wait_seconds": 0.0, "parts": 1,
    "drain_seconds": 0.0, "frames": 1, "map_base": 1, "chain_entries": 30, "map_bytes": 240,
}


def test_a_manifest_stored_before_reads_and_writes_back_the_same() -> None:
    raw = json.dumps(STORED_BEFORE, sort_keys=True).encode()
    manifest, stats = mf.read(raw)
    assert manifest.number == 5 and manifest.globals == (("__stack_pointer", 66528), ("f", 0.5))
    assert manifest.requests == (2,) and manifest.map_base == 1 and manifest.extra == {}
    assert stats.pause_seconds == 0.002 and stats.tracker == "hash" and stats.parts == 1
    again = json.loads(manifest.to_json(stats))
    assert again.pop(mf.VERSION_KEY) == mf.FORMAT_VERSION      # the one key added
    assert again == STORED_BEFORE


def test_a_replicas_manifest_keeps_owner_and_epoch() -> None:
    d = {**STORED_BEFORE, "owner": "node-a", "epoch": 3}
    manifest = Manifest.from_dict(d)
    assert (manifest.owner, manifest.epoch) == ("node-a", 3)
    assert manifest.to_dict()["owner"] == "node-a"


def test_the_least_a_push_may_carry() -> None:
    """What replication requires of a pushed manifest (number, memory, journal position)."""
    manifest, stats = mf.read(b'{"number": 1, "memory_bytes": 0, "journal_seq": 0}')
    assert manifest == Manifest(number=1, journal_seq=0, memory_bytes=0)
    assert stats == CheckpointStats()
    assert stats.to_dict() == {}


def test_keys_it_does_not_know_are_kept() -> None:
    """A newer peer's manifest is stored whole."""
    d = {**STORED_BEFORE, "future_key": {"a": 1}}
    manifest = Manifest.from_dict(d)
    assert manifest.extra == {"future_key": {"a": 1}}
    assert manifest.to_dict(CheckpointStats.from_dict(d))["future_key"] == {"a": 1}


def test_to_json_is_what_the_store_writes() -> None:
    manifest, stats = mf.read(STORED_BEFORE)
    assert manifest.to_json(stats) == json.dumps(manifest.to_dict(stats), sort_keys=True).encode()
    assert CheckpointStats.from_json(stats.to_json()) == stats


@pytest.mark.parametrize("bad", [
    b"not json", b"[1, 2]", b'"a string"',
    json.dumps({"memory_bytes": 0, "journal_seq": 0}),                     # no number
    json.dumps({**STORED_BEFORE, "number": "5"}),
    json.dumps({**STORED_BEFORE, "number": True}),
    json.dumps({**STORED_BEFORE, "memory_bytes": 1.5}),
    json.dumps({**STORED_BEFORE, "globals": [["sp"]]}),
    json.dumps({**STORED_BEFORE, "globals": [[1, 2]]}),
    json.dumps({**STORED_BEFORE, "globals": {"sp": 1}}),
    json.dumps({**STORED_BEFORE, "requests": ["a"]}),
    json.dumps({**STORED_BEFORE, "reason": 3}),
    json.dumps({**STORED_BEFORE, "created_at": "now"}),
    json.dumps({**STORED_BEFORE, "owner": 1}),
    json.dumps({**STORED_BEFORE, "prepare_version": "3"}),
    json.dumps({**STORED_BEFORE, mf.VERSION_KEY: mf.FORMAT_VERSION + 1}),
    json.dumps({**STORED_BEFORE, mf.VERSION_KEY: "1"}),
])
def test_bad_manifests_are_refused(bad) -> None:
    with pytest.raises(FormatError):
        Manifest.from_json(bad)


@pytest.mark.parametrize("key,value", [("pause_seconds", "0.1"), ("parts", 1.5), ("tracker", 5),
                                       ("held_by", 1),
                                       ("dirty_pages", False)])
def test_bad_stats_are_refused(key, value) -> None:
    with pytest.raises(FormatError):
        CheckpointStats.from_json(json.dumps({**STORED_BEFORE, key: value}))


def test_the_instrumented_variant_is_read_and_old_manifests_have_none() -> None:
    assert Manifest.from_json(json.dumps(STORED_BEFORE)).instrumented == ()
    manifest = Manifest.from_json(json.dumps({**STORED_BEFORE, "instrumented": ["leaf"]}))
    assert manifest.instrumented == ("leaf",) and manifest.to_dict()["instrumented"] == ["leaf"]
    assert "instrumented" not in Manifest.from_json(json.dumps(STORED_BEFORE)).to_dict()
    for bad in ("leaf", [1]):
        with pytest.raises(FormatError):
            Manifest.from_json(json.dumps({**STORED_BEFORE, "instrumented": bad}))


ints = st.integers(0, 1 << 62)
opt_ints = st.none() | ints
seconds = st.floats(0, 1e9, allow_nan=False)
manifests = st.builds(
    Manifest, number=ints, journal_seq=ints, memory_bytes=ints,
    reason=st.sampled_from(["checkpoint", "pause", "suspend", "sleep", "migrate"]),
    requests=st.lists(ints, max_size=3).map(tuple), stdout_offset=ints, stderr_offset=ints,
    globals=st.lists(st.tuples(st.text(max_size=8), st.integers(-(1 << 63), 1 << 63) | seconds),
                     max_size=4).map(tuple),
    created_at=seconds, stopped_at=st.none() | seconds, wake_at_ns=ints, prepare_version=opt_ints,
    frames=opt_ints, map_base=opt_ints, chain_entries=opt_ints, map_bytes=opt_ints,
    owner=st.none() | st.text(max_size=8), epoch=opt_ints,
    instrumented=st.lists(st.text(max_size=8), max_size=3).map(tuple))
stats_records = st.builds(CheckpointStats, **{
    f.name: (st.none() | st.text(max_size=8) if f.name in mf._STATS_STRS else
             opt_ints if f.name in mf._STATS_INTS else st.none() | seconds)
    for f in dataclasses.fields(CheckpointStats)})


@settings(max_examples=200, deadline=None)
@given(manifest=manifests, stats=stats_records)
def test_json_round_trips(manifest, stats) -> None:
    raw = manifest.to_json(stats)
    assert mf.read(raw) == (manifest, stats)
    assert Manifest.from_json(manifest.to_json()) == manifest
