"""Output records with their time (store format 2.2) beside the old ones, where `logs --tail
N --since T` starts, and the client's `--since` and `--timestamps`."""
from __future__ import annotations

import io

import lmdb
import pytest

from roost.client.errors import LocalError
from roost.client.logtimes import UNKNOWN, Stamped, duration_ns, lines, parse_since, rfc3339
from roost.daemon.errors import Corrupt, FormatError
from roost.daemon.store import keys, logrecord
from roost.daemon.store.db import DATABASES, FORMAT_VERSION, Store, seal
from roost.daemon.store.records import ExecutionRecord
from roost.v1 import control_pb2 as pb


def _record(exec_id: str = "a") -> ExecutionRecord:
    return ExecutionRecord(id=exec_id, module_sha256="m", module_name="m", argv=["m"], env=[], mounts=[])


# ---- the record's bytes ----
def test_a_timed_record_is_the_stream_with_its_high_bit_then_the_time_then_the_data():
    raw = logrecord.encode(2, b"oops\n", 0x0102030405060708)
    assert raw == b"\x82\x01\x02\x03\x04\x05\x06\x07\x08oops\n"
    assert logrecord.decode(raw) == (2, b"oops\n", 0x0102030405060708)
    assert logrecord.data_size(raw) == 5 and logrecord.stream_of(raw) == 2


def test_an_old_record_reads_as_it_always_did_with_no_time():
    raw = b"\x01hello\n"                        # as a 2.0/2.1 roostd stored it
    assert logrecord.encode(1, b"hello\n", None) == raw
    assert logrecord.decode(raw) == (1, b"hello\n", None)
    assert logrecord.data_size(raw) == 6 and logrecord.stream_of(raw) == 1


def test_empty_data_and_truncated_times():
    assert logrecord.decode(logrecord.encode(1, b"", 5)) == (1, b"", 5)
    with pytest.raises(Corrupt):
        logrecord.decode(b"\x81\x00\x00")
    with pytest.raises(Corrupt):
        logrecord.decode(b"")


# ---- the store: old and new records side by side ----
def _put_old(store: Store, exec_id: str, seq: int, stream: int, data: bytes) -> None:
    """A record as a 2.1 roostd wrote it (no time), written under the store's seal."""
    key = keys.seq(exec_id, seq)
    with store.env.begin(write=True) as txn:
        txn.put(key, seal(key, bytes((stream,)) + data), db=store.dbs["logs"])


def test_the_store_reads_counts_and_ships_old_and_new_records(tmp_path):
    store = Store(tmp_path / "store", 1 << 26)
    store.create_execution(_record(), b"", b"")
    _put_old(store, "a", 0, 1, b"old out\n")
    _put_old(store, "a", 1, 2, b"old err\n")
    store.append(_record(), 2, [(1, b"new out\n"), (2, b"e")], 0, [], time_ns=1_000)
    assert store.read_output("a", 0) == [(0, 1, b"old out\n", None), (1, 2, b"old err\n", None),
                                         (2, 1, b"new out\n", 1_000), (3, 2, b"e", 1_000)]
    assert store.read_logs("a", 1) == [(1, 2, b"old err\n"), (2, 1, b"new out\n"), (3, 2, b"e")]
    assert store.log_totals("a") == (16, 9)            # the guest's bytes, never the headers
    logs, _ = store.read_tail("a", 0, 0, 1 << 20)
    assert [logrecord.decode(raw).time_ns for _, raw in logs] == [None, None, 1_000, 1_000]


def test_append_stamps_the_time_it_makes_the_output_durable(tmp_path):
    import time
    store = Store(tmp_path / "store", 1 << 26)
    before = time.time_ns()
    store.append(_record(), 0, [(1, b"x")], 0, [])
    (entry,) = store.read_output("a", 0)
    assert before <= (entry.time_ns or 0) <= time.time_ns()


def test_an_older_store_is_stamped_with_this_format_and_an_older_roostd_is_refused(tmp_path):
    store = Store(tmp_path / "store", 1 << 26)
    with store.env.begin(write=True) as txn:           # as a 2.1 roostd left it
        txn.put(keys.FORMAT, seal(keys.FORMAT, b"2.1"), db=store.dbs["meta"])
    store.close()
    store = Store(tmp_path / "store", 1 << 26)
    with store.txn("test") as txn:
        assert txn.get(keys.FORMAT, db=store.dbs["meta"]) == b"%d.%d" % FORMAT_VERSION
    store.close()
    env = lmdb.open(str(tmp_path / "store"), max_dbs=len(DATABASES) + 4, map_size=1 << 26)
    with env.begin(write=True) as txn:                 # a store of a newer minor than ours
        meta = env.open_db(b"meta", txn=txn)
        txn.put(keys.FORMAT, seal(keys.FORMAT, b"2.%d" % (FORMAT_VERSION[1] + 1)), db=meta)
    env.close()
    with pytest.raises(FormatError, match="not supported by this roostd"):
        Store(tmp_path / "store", 1 << 26)


# ---- where --tail and --since start ----
def _store_with(tmp_path, records: list[tuple[int, bytes, int | None]]) -> Store:
    store = Store(tmp_path / "store", 1 << 26)
    for seq, (stream, data, time_ns) in enumerate(records):
        if time_ns is None:
            _put_old(store, "a", seq, stream, data)
        else:
            store.append(_record(), seq, [(stream, data)], 0, [], time_ns=time_ns)
    return store


def _selected(store: Store, stream: int, tail: int | None, since: int | None) -> bytes:
    seq, skip = store.log_start("a", stream, tail, since)
    out = b""
    for entry in store.read_output("a", seq):
        if not stream or entry.stream == stream:
            out += entry.data[skip:] if entry.seq == seq else entry.data
    return out


TEXT = [(1, b"one\ntwo\nthr", 10), (2, b"E1\n", 20), (1, b"ee\nfour\n", 30), (1, b"five", 40)]
ALL = b"one\ntwo\nthrE1\nee\nfour\nfive"     # the records in order: stdout and stderr interleave


@pytest.mark.parametrize("tail", [0, 1, 2, 3, 4, 5, 6, 60, None])
def test_tail_counts_lines_across_records_and_streams(tmp_path, tail):
    store = _store_with(tmp_path, TEXT)
    lines_ = ALL.splitlines(keepends=True)
    want = b"".join(lines_ if tail is None else lines_[len(lines_) - tail:] if tail else [])
    assert _selected(store, 0, tail, None) == want


def test_tail_of_one_stream_and_a_trailing_newline(tmp_path):
    store = _store_with(tmp_path, [(1, b"a\nb\n", 1), (2, b"x\ny\n", 2), (1, b"c\n", 3)])
    assert _selected(store, 1, 2, None) == b"b\nc\n"
    assert _selected(store, 2, 1, None) == b"y\n"
    assert _selected(store, 0, 3, None) == b"x\ny\nc\n"


def test_since_starts_at_the_first_record_at_or_after_it_and_old_records_have_no_time(tmp_path):
    store = _store_with(tmp_path, [(1, b"old\n", None), (1, b"a\n", 10), (1, b"b\n", 20),
                                   (1, b"c\n", 30)])
    assert _selected(store, 0, None, 20) == b"b\nc\n"
    assert _selected(store, 0, None, 21) == b"c\n"
    assert _selected(store, 0, None, 31) == b""
    assert _selected(store, 0, None, 0) == b"a\nb\nc\n"        # the old one: time unknown
    assert _selected(store, 0, 1, 10) == b"c\n"                 # both: the later start
    assert _selected(store, 0, 5, 20) == b"b\nc\n"


def test_tail_reads_back_only_what_it_returns(tmp_path, monkeypatch):
    store = _store_with(tmp_path, [(1, b"line %d\n" % i, i) for i in range(1000)])
    decoded = []
    real = logrecord.decode
    monkeypatch.setattr(logrecord, "decode", lambda raw, what="": decoded.append(1) or real(raw, what))
    assert store.log_start("a", 0, 3, None) == (997, 0)
    assert len(decoded) <= 4


# ---- the client: --since and --timestamps ----
def test_since_takes_rfc3339_unix_seconds_and_durations_back_from_now():
    assert parse_since("2026-12-07T10:00:00Z").ToJsonString() == "2026-12-07T10:00:00Z"
    assert parse_since("2026-12-07T11:00:00.5+01:00").ToJsonString() == "2026-12-07T10:00:00.500Z"
    assert parse_since("1700000000.25").ToNanoseconds() == 1_700_000_000_250_000_000
    now = 10**18
    assert parse_since("10m", now).ToNanoseconds() == now - 600 * 10**9
    assert parse_since("1d30m", now).ToNanoseconds() == now - (86400 + 1800) * 10**9
    assert parse_since("1.5h", now).ToNanoseconds() == now - 5400 * 10**9
    assert duration_ns("2h") == 7200 * 10**9 and duration_ns("10") is None and duration_ns("m") is None
    for bad in ("yesterday", "10x", "2026-13-01T00:00:00Z", ""):
        with pytest.raises(LocalError, match="--since"):
            parse_since(bad)


def test_timestamps_are_rfc3339_utc_with_nanoseconds():
    stamp = parse_since("2026-12-07T12:00:00.123456789Z")
    assert rfc3339(stamp) == "2026-12-07T12:00:00.123456789Z"
    assert rfc3339(None) == UNKNOWN


def test_every_line_start_is_stamped_once_per_stream():
    outs = {pb.STDOUT: io.BytesIO(), pb.STDERR: io.BytesIO()}
    stamped = Stamped(lambda stream: outs[stream])
    t1, t2 = parse_since("2026-12-07T12:00:00Z"), parse_since("2026-12-07T12:00:01Z")
    stamped.write(pb.LogChunk(seq=0, stream=pb.STDOUT, data=b"a\nb\npart", time=t1))
    stamped.write(pb.LogChunk(seq=1, stream=pb.STDERR, data=b"err\n", time=t2))
    stamped.write(pb.LogChunk(seq=2, stream=pb.STDOUT, data=b"ial\nc\n", time=t2))
    stamped.write(pb.LogChunk(seq=3, stream=pb.STDOUT, data=b"old\n"))
    s1, s2 = "2026-12-07T12:00:00.000000000Z ", "2026-12-07T12:00:01.000000000Z "
    assert outs[pb.STDOUT].getvalue().decode() == (
        f"{s1}a\n{s1}b\n{s1}partial\n{s2}c\n{UNKNOWN} old\n")
    assert outs[pb.STDERR].getvalue().decode() == f"{s2}err\n"
    assert lines(b"x\r\ny") == [b"x\r\n", b"y"]


def test_a_record_crosses_to_a_peer_with_its_time_or_without_one():
    from roost.daemon.cluster.pushwire import stored_log, wire_log
    for raw in (logrecord.encode(2, b"x\n", 123), b"\x01old\n"):
        message = wire_log(7, raw)
        assert message.stream in (1, 2) and message.seq == 7
        assert stored_log(message, message.data) == raw
