"""Who is calling the Peer service, and whether it may: the Peer service is only for peers.

Under mutual TLS a peer is a certificate of the CA whose subject alternative names include the
URI `roost://peer/<node-id>` (see `tls.PEER_URI`): that node id is the caller's identity, and
whatever a peer says about itself (a push's owner, a handover's source) must name it. Any other
certificate of the CA — a CLI user's, with `roost://client/<name>` or no URI at all — may use
the Control service only.

In plaintext nothing proves who is calling. Peer calls are then accepted only from the IP
addresses of the configured peers (`--peer`), and the caller's claims are checked only for
consistency with what this daemon knows (the ownership rules in `authority`): plaintext is for
daemons on one trusted host or network (README), where any local user could equally well read
the data directory.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from roost.daemon.cluster import tls
from roost.daemon.errors import PermissionDenied
from roost.daemon.service.fields import short

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """A Peer call's caller: its node id when a certificate proves it, else "" (plaintext)."""
    node_id: str
    address: str          # as gRPC saw it, for messages: "ipv4:127.0.0.1:51234"

    @property
    def verified(self) -> bool:
        return bool(self.node_id)

    def must_be(self, node_id: str, what: str) -> None:
        """A peer speaks only for itself: `node_id`, claimed in the call, must be the caller's
        proven identity (nothing can be checked in plaintext)."""
        if self.verified and node_id != self.node_id:
            raise PermissionDenied(f"{what}: names node {short(node_id)!r}, but the caller's "
                                   f"certificate is node {self.node_id!r}")


class PeerGate:
    """Admits Peer calls from peers only (see the module docstring)."""

    def __init__(self, secure: bool, me: str, peers: list[str]) -> None:
        self.secure, self.me = secure, me
        self._allowed = set() if secure else _addresses_of(peers)
        # With etcd, the members' addresses are peers' too (plaintext: their IPs are admitted).
        self.members: Callable[[], list[str]] = lambda: []
        # With etcd under TLS: is this node id a live member (asked again if not: it may have
        # just joined)? A certificate's node must be a member it claims to be.
        self.is_member: Callable[[str], bool] | None = None
        self._member_ips: tuple[tuple[str, ...], set[str]] = ((), set())

    def set_peers(self, peers: list[str]) -> None:
        """A reloaded peer list: in plaintext, the addresses admitted from now on (under TLS
        a peer is its certificate, whatever the list says)."""
        if not self.secure:
            self._allowed = _addresses_of(peers)

    def admit(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this Peer call; PermissionDenied for anyone but a peer."""
        where = context.peer() or "unknown"
        if self.secure:
            node = tls.peer_node_of(context.auth_context())
            if not node:
                raise PermissionDenied("the Peer service is for peers: the caller's certificate "
                                       f"has no {tls.PEER_URI}<node-id> name")
            if node == self.me:
                raise PermissionDenied(f"the caller's certificate names this daemon's own node id "
                                       f"{node!r}: two daemons must not share one")
            if self.is_member is not None and not self.is_member(node):
                raise PermissionDenied(f"the caller's certificate names node {node!r}, which is "
                                       "not a live member of this cluster (etcd)")
            return Caller(node, where)
        if _ip_of(where) not in self._allowed and _ip_of(where) not in self._members_ips():
            raise PermissionDenied(f"the Peer service is for peers: {where} is not the address of "
                                   "a configured peer (--peer)")
        return Caller("", where)


    def _members_ips(self) -> set[str]:
        members = tuple(sorted(self.members()))
        if members != self._member_ips[0]:
            self._member_ips = (members, _addresses_of(list(members)))
        return self._member_ips[1]


def _addresses_of(peers: list[str]) -> set[str]:
    """The IPs the configured peers' host names resolve to now (a name that does not resolve
    admits nobody; it is logged)."""
    out: set[str] = set()
    for peer in peers:
        host = peer.rsplit(":", 1)[0].strip("[]")
        try:
            for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
                out.add(_normal(str(info[4][0])))
        except OSError as e:
            log.warning("peer %s: cannot resolve %s (%s): calls from it will be refused", peer, host, e)
    return out


def _ip_of(grpc_peer: str) -> str:
    """The IP of a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"); "" for anything else
    (a Unix socket is never a peer)."""
    kind, _, rest = grpc_peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rsplit(":", 1)[0].strip("[]")
    return _normal(host)


def _normal(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)
