"""The gRPC Peer service: protobuf in, replication and handover calls, protobuf out (see
proto/roost/v1/peer.proto). Errors map to status codes as the Control service's do (`rpc`).

Every call is admitted by the `PeerGate` first (peers only: `peerauth`), and what a peer says
about an execution is held to the ownership rules of `authority`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import grpc

from roost.daemon.cluster.authority import check_id
from roost.daemon.cluster.handover import Handovers
from roost.daemon.cluster.peerauth import PeerGate
from roost.daemon.cluster.receive import Replicas
from roost.daemon.errors import InvalidRequest, LimitExceeded, StateConflict
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.modules.registry import MAX_MANIFEST_BYTES, MODES, ModuleRegistry, PreparedForm
from roost.daemon.service import fields
from roost.daemon.service.rpc import check, service_handlers, translated
from roost.daemon.store.records import ModuleRecord
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
        pushed = PushedModule(self.modules)
        for part in request_iterator:
            pushed.take(part)
        _, dedup = pushed.store()
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
    def AppendRecords(self, request, context) -> pb.AppendRecordsResponse:
        caller = self.gate.admit(context)
        check(request)
        return self.replicas.append(request, caller)

    @translated
    def Decision(self, request, context) -> pb.DecisionResponse:
        self.gate.admit(context)
        check(request)
        check_id(request.id, "decision")
        return pb.DecisionResponse(outcome=self.handovers.decision(request.id, request.epoch))


class PushedModule:
    """A PushModule stream, assembled: the module's header and bytes (checked by the registry
    as an upload is), then the prepared forms the sender keeps of it, each a PreparedHeader
    and its wasm. Every size is bounded before its bytes are read."""

    WHAT = "push of a module"

    def __init__(self, modules: ModuleRegistry) -> None:
        self.modules = modules
        self.header: pb.ModuleHeaderPeer | None = None
        self.data = bytearray()
        self.forms: list[PreparedForm] = []
        self._form: pb.PreparedHeader | None = None
        self._wasm = bytearray()

    def take(self, part: object) -> None:
        check(part)
        assert isinstance(part, pb.ModuleChunk)
        kind = part.WhichOneof("part")
        if self.header is None and kind != "header":
            raise InvalidRequest(f"{self.WHAT} must start with a header message")
        if kind == "header":
            if self.header is not None:
                raise InvalidRequest(f"{self.WHAT}: a second header after the first")
            self._start(part.header)
        elif kind == "prepared":
            self._finish_form()
            self._start_form(part.prepared)
        elif kind == "chunk":
            self._chunk(part.chunk)

    def store(self) -> tuple[ModuleRecord, bool]:
        """Hand it all to the registry: the module is stored without being prepared in the
        modes whose prepared form came with it."""
        if self.header is None:
            raise InvalidRequest(f"{self.WHAT} must start with a header message")
        self._finish_form()
        h = self.header
        return self.modules.receive(h.name, h.size_bytes, h.sha256, [bytes(self.data)], self.forms,
                                    prepare_now=False)   # (its owner prepares it once for all)

    def _start(self, header: pb.ModuleHeaderPeer) -> None:
        if header.size_bytes > self.modules.max_module_bytes:
            raise LimitExceeded(f"module {fields.short(header.name)!r} is {header.size_bytes} bytes; "
                                f"the limit is {self.modules.max_module_bytes}")
        self.header = header

    def _chunk(self, chunk: bytes) -> None:
        """A piece of the module, or of the prepared form announced last."""
        assert self.header is not None
        if self._form is None:
            into, limit, what = self.data, self.header.size_bytes, "the module"
        else:
            into, limit, what = self._wasm, self._form.size_bytes, f"its {self._form.mode} prepared form"
        if len(into) + len(chunk) > limit:
            raise InvalidRequest(f"{self.WHAT}: more bytes of {what} than the announced {limit}")
        into += chunk

    def _start_form(self, form: pb.PreparedHeader) -> None:
        if form.mode not in MODES:
            raise InvalidRequest(f"{self.WHAT}: unknown preparation mode {fields.short(form.mode)!r}")
        if any(f.mode == form.mode for f in self.forms):
            raise InvalidRequest(f"{self.WHAT}: a second {form.mode} prepared form")
        if form.size_bytes > self.modules.max_prepared_bytes:
            raise LimitExceeded(f"{self.WHAT}: its {form.mode} prepared form is {form.size_bytes} bytes; "
                                f"the limit is {self.modules.max_prepared_bytes}")
        if len(form.manifest_json) > MAX_MANIFEST_BYTES:
            raise LimitExceeded(f"{self.WHAT}: its {form.mode} manifest is over {MAX_MANIFEST_BYTES} bytes")
        self._form, self._wasm = form, bytearray()

    def _finish_form(self) -> None:
        form = self._form
        if form is None:
            return
        if len(self._wasm) != form.size_bytes:
            raise InvalidRequest(f"{self.WHAT}: its {form.mode} prepared form is truncated "
                                 f"({len(self._wasm)} of {form.size_bytes} bytes)")
        try:
            manifest = json.loads(form.manifest_json)
        except (ValueError, RecursionError) as e:
            raise InvalidRequest(f"{self.WHAT}: its {form.mode} manifest is not JSON: "
                                 f"{fields.short(str(e))}") from e
        if not isinstance(manifest, dict):
            raise InvalidRequest(f"{self.WHAT}: its {form.mode} manifest is not a JSON object")
        self.forms.append(PreparedForm(form.mode, bytes(self._wasm), manifest))
        self._form, self._wasm = None, bytearray()


def handlers(service: PeerService) -> grpc.GenericRpcHandler:
    return service_handlers(pb, "Peer", service)
