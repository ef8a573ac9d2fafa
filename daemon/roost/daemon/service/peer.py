"""The gRPC Peer service: protobuf in, replication and handover calls, protobuf out (see
proto/roost/v1/peer.proto). Errors map to status codes as the Control service's do (`rpc`).

Every call is admitted by the `PeerGate` first (peers only: `peerauth`), and what a peer says
about an execution is held to the ownership rules of `authority`.
"""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from roost.daemon.cluster.authority import check_id
from roost.daemon.cluster.handover import Handovers
from roost.daemon.cluster.peerauth import PeerGate
from roost.daemon.cluster.receive import Replicas
from roost.daemon.errors import InvalidRequest, StateConflict
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.service import fields
from roost.daemon.service.control import receive_module
from roost.daemon.service.rpc import check, service_handlers, translated
from roost.v1 import peer_pb2 as pb
from roost.v1 import peer_pb2_grpc

FORMAT = "1.0"


class PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, supervisor: Supervisor, modules: ModuleRegistry, replicas: Replicas,
                 handovers: Handovers, gate: PeerGate) -> None:
        self.supervisor, self.modules = supervisor, modules
        self.replicas, self.handovers = replicas, handovers
        self.gate = gate

    @translated
    def Hello(self, request, context) -> pb.HelloResponse:
        caller = self.gate.admit(context)
        check(request)
        if request.node_id == self.supervisor.node_id:
            raise StateConflict(f"a peer ({caller.address}) calls itself {fields.short(request.node_id)!r}, "
                                "this daemon's own node id: two daemons must not share one")
        caller.must_be(request.node_id, "hello")
        return pb.HelloResponse(node_id=self.supervisor.node_id, format=FORMAT)

    @translated
    def ReplicaStatus(self, request, context) -> pb.ReplicaStatusResponse:
        self.gate.admit(context)
        check(request)
        check_id(request.id, "replica status")
        if request.module_sha256:
            fields.sha256(request.module_sha256)
        return self.replicas.status(request.id, request.module_sha256)

    @translated
    def PushModule(self, request_iterator: Iterator, context) -> pb.PushModuleResponse:
        self.gate.admit(context)
        _, dedup = receive_module(self.modules, request_iterator, "push of a module")
        return pb.PushModuleResponse(deduplicated=dedup)

    @translated
    def PushCheckpoint(self, request_iterator: Iterator, context) -> pb.PushCheckpointResponse:
        caller = self.gate.admit(context)

        def checked() -> Iterator:
            for chunk in request_iterator:
                check(chunk)
                yield chunk
        return self.replicas.receive(checked(), caller)

    @translated
    def Handover(self, request, context) -> pb.HandoverResponse:
        caller = self.gate.admit(context)
        check(request)
        check_id(request.id, "handover")
        phase = request.phase
        if phase == pb.HandoverRequest.PREPARE:
            return self.handovers.prepare(request, caller)
        if phase == pb.HandoverRequest.COMMIT:
            return self.handovers.commit(request, caller)
        if phase == pb.HandoverRequest.ABORT:
            return self.handovers.forget(request, caller)
        raise InvalidRequest("handover: phase is required")

    @translated
    def Decision(self, request, context) -> pb.DecisionResponse:
        self.gate.admit(context)
        check(request)
        check_id(request.id, "decision")
        return pb.DecisionResponse(outcome=self.handovers.decision(request.id, request.epoch))


def handlers(service: PeerService) -> grpc.GenericRpcHandler:
    return service_handlers(pb, "Peer", service)
