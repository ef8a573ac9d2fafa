"""The durable flow of one guest request (`runtime.outbound.Outbound`), against the real test
server: what is journaled and when, what a replay sends (nothing), and what a request cut off
by a crash becomes — sent again under its key when safe, ECANCELED otherwise."""
from __future__ import annotations

from roost.daemon.checkpoint import journal
from roost.daemon.checkpoint.journal import Replay, ReplayDiverged
from roost.daemon.http.records import INTENT, INTERRUPTED, RESENT, RESPONSE, Request
from roost.daemon.http.settings import settings
from roost.daemon.runtime.outbound import Outbound
from roost.daemon.runtime.vfs import Errno
from roost.daemon.runtime.wasi.clocks import Clocks, ClockState


def _outbound(url: str, keys: bool, replay: Replay | None = None) -> tuple[Outbound, list[bytes], list[str]]:
    records: list[bytes] = []
    order: list[str] = []
    s = settings([{"prefix": url, "idempotency_keys": keys}], 2, 1, 1, 1 << 20, "").for_execution("ex", [url])
    clocks = Clocks(ClockState())
    out = Outbound(s, lambda: clocks, lambda: replay, records.append)
    out.hooks.sync = lambda: order.append(f"sync after {len(records)} records")
    return out, records, order


def _post(url: str) -> Request:
    return Request("POST", url + "counter/a", (("Accept", "text/plain"),), b"")


def test_intent_is_durable_before_the_request_leaves(http_server) -> None:
    out, records, order = _outbound(http_server.url, keys=True)
    reply = out.perform(_post(http_server.url))
    assert (reply.errno, reply.status, reply.body) == (0, 200, b"1")
    assert order == ["sync after 1 records"]                 # the intent, then the sync
    names = [journal.decode(r).name for r in records]
    assert names == [INTENT, RESPONSE]
    assert http_server.applied_by_key() == {"roost-ex-1": 1}


def test_replay_sends_nothing(http_server) -> None:
    live, records, _ = _outbound(http_server.url, keys=True)
    first = live.perform(_post(http_server.url))
    replayed, again, order = _outbound(http_server.url, True, Replay([journal.decode(r) for r in records]))
    assert replayed.perform(_post(http_server.url)) == first
    assert again == [] and order == [] and http_server.requests == 1


def test_cut_off_request_is_resent_under_its_key(http_server) -> None:
    live, records, _ = _outbound(http_server.url, keys=True)
    live.perform(_post(http_server.url))
    intent_only = Replay([journal.decode(records[0])])
    again, records2, _ = _outbound(http_server.url, True, intent_only)
    reply = again.perform(_post(http_server.url))
    assert (reply.status, reply.body, reply.outcome) == (200, b"1", RESENT)   # the stored answer
    assert http_server.applied_by_key() == {"roost-ex-1": 1} and http_server.duplicates == 1
    assert [journal.decode(r).name for r in records2] == [RESPONSE]


def test_cut_off_post_without_keys_is_never_sent_twice(http_server) -> None:
    live, records, _ = _outbound(http_server.url, keys=False)
    live.perform(_post(http_server.url))
    again, _, _ = _outbound(http_server.url, False, Replay([journal.decode(records[0])]))
    reply = again.perform(_post(http_server.url))
    assert reply.errno == Errno.CANCELED and reply.outcome == INTERRUPTED
    assert "POST" in reply.error and "roost-ex-1" in reply.error
    assert http_server.requests == 1


def test_cut_off_get_is_resent_without_keys(http_server) -> None:
    live, records, _ = _outbound(http_server.url, keys=False)
    get = Request("GET", http_server.url + "counter/a", (), b"")
    live.perform(get)
    again, _, _ = _outbound(http_server.url, False, Replay([journal.decode(records[0])]))
    assert again.perform(get).outcome == RESENT


def test_replay_of_another_request_diverges(http_server) -> None:
    live, records, _ = _outbound(http_server.url, keys=True)
    live.perform(_post(http_server.url))
    other, _, _ = _outbound(http_server.url, True, Replay([journal.decode(r) for r in records]))
    try:
        other.perform(Request("POST", http_server.url + "counter/b", (), b""))
    except ReplayDiverged as e:
        assert "POST" in str(e)
    else:
        raise AssertionError("a different request replayed")


def test_refused_request_is_journaled_and_replayed(http_server) -> None:
    live, records, order = _outbound(http_server.url, keys=True)
    reply = live.perform(Request("GET", "http://127.0.0.2:1/", (), b""))
    assert reply.errno == Errno.ACCES and order == [] and http_server.requests == 0
    again, _, _ = _outbound(http_server.url, True, Replay([journal.decode(r) for r in records]))
    assert again.perform(Request("GET", "http://127.0.0.2:1/", (), b"")) == reply


def test_guest_key_is_kept(http_server) -> None:
    out, _, _ = _outbound(http_server.url, keys=True)
    out.perform(Request("POST", http_server.url + "counter/a", (("Idempotency-Key", "mine"),), b""))
    assert http_server.applied_by_key() == {"mine": 1}
