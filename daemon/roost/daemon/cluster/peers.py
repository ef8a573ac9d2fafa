"""Calls to peer roostds: one channel per peer address, over mutual TLS when configured.

A peer is named by its address (`--peer HOST:PORT`, or a migration's `--to`); its node id is
learnt from its Hello answer. Errors become roost errors: UNAVAILABLE and DEADLINE_EXCEEDED a
`PeerUnavailable` (the caller retries, or aborts a migration), FAILED_PRECONDITION a
`StateConflict` (a stale epoch, a handover refused), anything else a `PeerError`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc

from roost.daemon.cluster import tls
from roost.daemon.errors import PeerError, PeerUnavailable, StateConflict  # (re-exported)
from roost.v1 import peer_pb2 as pb
from roost.v1 import peer_pb2_grpc

MESSAGE_BYTES = 64 << 20


class PeerClient:
    def __init__(self, address: str, credentials: tls.Credentials | None, me: str = "",
                 my_address: str = "") -> None:
        self.address = address
        self._me, self._my_address = me, my_address
        self._credentials = credentials
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self.node_id = ""
        self.failed_at = 0.0          # monotonic: its last call found it unreachable
        self.ok_at = 0.0              # monotonic: its last call that it answered

    def down(self, for_seconds: float = 10.0) -> bool:
        """Its last call found it unreachable, less than `for_seconds` ago (then it is worth
        trying again: a static cluster's replicas go to the peers that answer)."""
        return self.failed_at > self.ok_at and time.monotonic() - self.failed_at < for_seconds

    @property
    def stub(self) -> peer_pb2_grpc.PeerStub:
        with self._lock:
            if self._channel is None:
                self._channel = tls.channel(self.address, self._credentials, [
                    ("grpc.max_receive_message_length", MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MESSAGE_BYTES),
                    # a peer whose host died or was cut off is found gone within seconds
                    ("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 2000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.max_pings_without_data", 0)])
            return peer_pb2_grpc.PeerStub(self._channel)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def hello(self, timeout: float = 5.0) -> str:
        """The peer's node id (asked once per channel)."""
        if not self.node_id:
            r = self._call(self.stub.Hello, pb.HelloRequest(node_id=self._me, address=self._my_address),
                           timeout)
            self.node_id = r.node_id
        return self.node_id

    def status(self, exec_id: str, module_sha256: str = "", timeout: float = 10.0) -> pb.ReplicaStatusResponse:
        return self._call(self.stub.ReplicaStatus,
                          pb.ReplicaStatusRequest(id=exec_id, module_sha256=module_sha256), timeout)

    def push_module(self, chunks: Iterator[pb.ModuleChunk], timeout: float = 600.0) -> pb.PushModuleResponse:
        return self._call(self.stub.PushModule, chunks, timeout)

    def push_checkpoint(self, chunks: Iterator[pb.CheckpointChunk], timeout: float = 3600.0
                        ) -> pb.PushCheckpointResponse:
        return self._call(self.stub.PushCheckpoint, chunks, timeout)

    def append_records(self, request: pb.AppendRecordsRequest, timeout: float = 30.0
                       ) -> pb.AppendRecordsResponse:
        return self._call(self.stub.AppendRecords, request, timeout)

    def handover(self, request: pb.HandoverRequest, timeout: float = 60.0) -> pb.HandoverResponse:
        return self._call(self.stub.Handover, request, timeout)

    def decision(self, exec_id: str, epoch: int, timeout: float = 10.0) -> pb.DecisionResponse:
        return self._call(self.stub.Decision, pb.DecisionRequest(id=exec_id, epoch=epoch), timeout)

    def _call(self, method, request, timeout: float):
        try:
            out = method(request, timeout=timeout)
            self.ok_at = time.monotonic()
            return out
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            detail = f"peer {self.address}: {e.details() if hasattr(e, 'details') else e}"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED):
                self.failed_at = time.monotonic()
                raise PeerUnavailable(detail) from None
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                self.failed_at = time.monotonic()     # it will not be our replica
            else:
                self.ok_at = time.monotonic()
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise StateConflict(detail) from None
            raise PeerError(detail) from None


class Peers:
    """The clients of this daemon's peers, by address (the configured ones and any a
    migration names)."""

    def __init__(self, credentials: tls.Credentials | None, me: str, my_address: str) -> None:
        self._credentials, self._me, self._my_address = credentials, me, my_address
        self._clients: dict[str, PeerClient] = {}
        self._lock = threading.Lock()

    def client(self, address: str) -> PeerClient:
        with self._lock:
            if address not in self._clients:
                self._clients[address] = PeerClient(address, self._credentials, self._me, self._my_address)
            return self._clients[address]

    def use_credentials(self, credentials: tls.Credentials) -> None:
        """Reloaded certificates for calls to peers: every channel opened from now on uses
        them; one open now keeps its connection until it reconnects."""
        with self._lock:
            self._credentials = credentials
            for client in self._clients.values():
                client._credentials = credentials

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
