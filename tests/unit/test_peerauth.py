"""Unit tests of who may call the Peer service and what bounds a push (no daemon)."""
from __future__ import annotations

import pytest
import zstandard

from roost.daemon.checkpoint import inflate, pagemap
from roost.daemon.cluster import peerauth, tls
from roost.daemon.errors import LimitExceeded, PermissionDenied, StoreError
from roost.daemon.service.longpolls import LongPolls, caller_of


def test_a_peer_is_named_by_exactly_one_roost_peer_uri():
    assert tls.peer_node_of({"peer_uri": [b"roost://peer/n1"]}) == "n1"
    assert tls.peer_node_of({"peer_uri": [b"roost://client/alice"]}) == ""
    assert tls.peer_node_of({"peer_uri": [b"roost://peer/"]}) == ""
    assert tls.peer_node_of({"peer_uri": [b"roost://peer/a", b"roost://peer/b"]}) == ""
    assert tls.peer_node_of({}) == ""


def test_grpc_peer_strings_become_ips():
    assert peerauth._ip_of("ipv4:127.0.0.1:5123") == "127.0.0.1"
    assert peerauth._ip_of("ipv6:[::1]:5123") == "::1"
    assert peerauth._ip_of("ipv6:[::ffff:10.0.0.1]:5") == "10.0.0.1"
    assert peerauth._ip_of("unix:/run/roost/roostd.sock") == ""
    assert caller_of("unix:") == "unix" and caller_of("ipv4:1.2.3.4:9") == "1.2.3.4"


def test_a_verified_caller_speaks_only_for_itself():
    peerauth.Caller("", "x").must_be("anyone", "push")          # plaintext: unverifiable
    peerauth.Caller("n1", "x").must_be("n1", "push")
    with pytest.raises(PermissionDenied):
        peerauth.Caller("n1", "x").must_be("n2", "push")


def test_inflate_refuses_what_a_frame_declares_past_the_bound():
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(1 << 20))
    assert len(inflate.inflate(frame, 1 << 20, "t")) == 1 << 20
    with pytest.raises(inflate.Inflated):
        inflate.inflate(frame, (1 << 20) - 1, "t")
    with pytest.raises(inflate.Inflated):
        inflate.inflate(b"not zstd", 100, "t")


def test_page_maps_are_bounded_before_decoding():
    full = pagemap.encode_full(pagemap.PageMap(__import__("numpy").zeros(300, "uint32")))
    assert pagemap.decode(full, None, max_pages=300).pages == 300
    with pytest.raises(StoreError):
        pagemap.decode(full, None, max_pages=299)
    with pytest.raises(StoreError):
        pagemap.decode(full[:6], None)


def test_long_polls_are_bounded_per_client_and_in_all():
    polls = LongPolls(total=3, per_client=2)
    with polls.held("ipv4:1.1.1.1:1", "w"), polls.held("ipv4:1.1.1.1:2", "w"):
        with pytest.raises(LimitExceeded, match="this client"):
            with polls.held("ipv4:1.1.1.1:3", "w"):
                pass
        with polls.held("ipv4:2.2.2.2:1", "w"):
            with pytest.raises(LimitExceeded, match="grpc.long_polls"):
                with polls.held("ipv4:3.3.3.3:1", "w"):
                    pass
    assert polls.count() == 0
