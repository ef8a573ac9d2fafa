"""The gRPC Peer service: protobuf in, replication and handover calls, protobuf out (see
proto/roost/v1/peer.proto). Errors map to status codes as the Control service's do."""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from roost.v1 import peer_pb2 as pb
from roost.v1 import peer_pb2_grpc

from .api import _check, _translated, receive_module, service_handlers
from .errors import InvalidRequest
from .handover import Handovers
from .modules import ModuleRegistry
from .replication import Replicas
from .supervisor import Supervisor

FORMAT = "1.0"


class PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, supervisor: Supervisor, modules: ModuleRegistry, replicas: Replicas,
                 handovers: Handovers) -> None:
        self.supervisor, self.modules = supervisor, modules
        self.replicas, self.handovers = replicas, handovers

    @_translated
    def Hello(self, request, context) -> pb.HelloResponse:
        _check(request)
        return pb.HelloResponse(node_id=self.supervisor.node_id, format=FORMAT)

    @_translated
    def ReplicaStatus(self, request, context) -> pb.ReplicaStatusResponse:
        _check(request)
        return self.replicas.status(request.id, request.module_sha256)

    @_translated
    def PushModule(self, request_iterator: Iterator, context) -> pb.PushModuleResponse:
        _, dedup = receive_module(self.modules, request_iterator, "push of a module")
        return pb.PushModuleResponse(deduplicated=dedup)

    @_translated
    def PushCheckpoint(self, request_iterator: Iterator, context) -> pb.PushCheckpointResponse:
        def checked() -> Iterator:
            for chunk in request_iterator:
                _check(chunk)
                yield chunk
        return self.replicas.receive(checked())

    @_translated
    def Handover(self, request, context) -> pb.HandoverResponse:
        _check(request)
        phase = request.phase
        if phase == pb.HandoverRequest.PREPARE:
            return self.handovers.prepare(request)
        if phase == pb.HandoverRequest.COMMIT:
            return self.handovers.commit(request)
        if phase == pb.HandoverRequest.ABORT:
            return self.handovers.forget(request)
        raise InvalidRequest("handover: phase is required")

    @_translated
    def Decision(self, request, context) -> pb.DecisionResponse:
        _check(request)
        return pb.DecisionResponse(outcome=self.handovers.decision(request.id, request.epoch))


def handlers(service: PeerService) -> grpc.GenericRpcHandler:
    return service_handlers(pb, "Peer", service)
