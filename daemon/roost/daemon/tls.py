"""Mutual TLS for roostd's gRPC server and for its calls to peers.

With `tls.ca`, `tls.cert` and `tls.key` set, roostd serves only TLS and demands a client
certificate signed by that CA — from peers and from the `roost` CLI alike — and calls its peers
with its own certificate. Without them it serves plaintext (the embedded default: loopback).
"""
from __future__ import annotations

from pathlib import Path

import grpc

from .errors import InvalidRequest


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
