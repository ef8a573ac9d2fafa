"""Mutual TLS for roostd's gRPC server and for its calls to peers.

With `tls.ca`, `tls.cert` and `tls.key` set, roostd serves only TLS and demands a client
certificate signed by that CA — from peers and from the `roost` CLI alike — and calls its peers
with its own certificate. Without them it serves plaintext (the embedded default: loopback).

Roles: a daemon's certificate carries the URI subject alternative name `roost://peer/<node-id>`
(PEER_URI); only such certificates may call the Peer service, as that node (`peerauth`). A CLI
user's certificate carries `roost://client/<name>` or no URI: Control only. A daemon's node id
is the one its certificate names (a configured node_id must agree).
"""
from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from roost.daemon.errors import InvalidRequest

PEER_URI = "roost://peer/"


class Credentials:
    """The PEM files of one side of a mutual-TLS connection."""

    def __init__(self, ca: str, cert: str, key: str) -> None:
        self.ca, self.cert, self.key = (_read(p, what) for p, what in
                                        ((ca, "CA certificate"), (cert, "certificate"), (key, "key")))

    def server(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def node_id(self, path: str) -> str:
        """The node id this daemon's certificate (at `path`) names; "" when it names none."""
        try:
            names = ssl._ssl._test_decode_cert(path).get("subjectAltName", ())  # type: ignore[attr-defined]
        except (OSError, ssl.SSLError, AttributeError) as e:
            raise InvalidRequest(f"tls: cannot read the certificate {path}: {e}") from e
        return _peer_node([value for kind, value in names if kind == "URI"])


def peer_node_of(auth_context: Mapping[str, Sequence[bytes]]) -> str:
    """The node id a caller's verified certificate names (gRPC's auth context), "" if none."""
    uris = [u.decode("utf-8", "replace") for u in auth_context.get("peer_uri", ())]
    return _peer_node(uris)


def _peer_node(uris: list[str]) -> str:
    nodes = {u[len(PEER_URI):] for u in uris if u.startswith(PEER_URI) and len(u) > len(PEER_URI)}
    return nodes.pop() if len(nodes) == 1 else ""      # two names: no identity at all


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidRequest(f"tls: cannot read the {what} {path}: {e.strerror}") from e


def from_paths(ca: str, cert: str, key: str) -> Credentials | None:
    """Credentials when all three are set, else None (plaintext)."""
    return Credentials(ca, cert, key) if ca else None


def channel(address: str, credentials: Credentials | None, options: list | None = None) -> grpc.Channel:
    """A channel to a roostd: TLS with `credentials`, else plaintext."""
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials.channel(), options=options)
