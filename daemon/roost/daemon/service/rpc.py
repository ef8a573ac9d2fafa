"""What every roostd gRPC servicer shares: RoostErrors become status codes, requests that do
not parse become INVALID_ARGUMENT, and handler tables are built from the protobuf descriptors.

The status of an error is its class's (`errors.RoostError.status`): this module holds no table
of its own. Handlers are registered with a tolerant request deserializer, so a request that is
not valid protobuf gets INVALID_ARGUMENT with a reason instead of the framework's bare INTERNAL.
An error's class name and `retriable` flag also travel as trailing metadata (ERROR_KEY,
RETRIABLE_KEY): a client can tell "roostd says a peer is unreachable" from "roostd is
unreachable", which share UNAVAILABLE.
"""
from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError

from roost.daemon.errors import InvalidRequest, RoostError, StoreError
from roost.daemon.service import fields

log = logging.getLogger(__name__)
MAX_DETAILS = 600          # a status's details: errors never echo unbounded input
ERROR_KEY = "roost-error"
RETRIABLE_KEY = "roost-retriable"


def status_for(error: RoostError) -> grpc.StatusCode:
    """The gRPC status of a roost error: the one its class declares."""
    return grpc.StatusCode[type(error).status]


class Malformed:
    """Stands in for a request whose bytes did not parse (see `check`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(parse: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """A request deserializer that hands a `Malformed` to the handler instead of failing."""
    def deserialize(raw: bytes) -> object:
        try:
            return parse(raw)
        except (DecodeError, ValueError) as e:
            return Malformed(str(e) or "cannot decode message")
    return deserialize


def check(request: object) -> None:
    """InvalidRequest if `request` (or a message of a request stream) did not parse."""
    if isinstance(request, Malformed):
        raise InvalidRequest(f"malformed request: {request.reason}")


def translated(method: Callable) -> Callable:
    """Run an RPC method (unary or streaming), aborting with the mapped status on an error: a
    RoostError's own, INTERNAL (logged with its traceback) for anything else."""
    def abort(context: grpc.ServicerContext, e: Exception) -> None:
        if isinstance(e, RoostError):
            if isinstance(e, StoreError):
                log.error("%s: %s", method.__name__, e)
            context.set_trailing_metadata(((ERROR_KEY, type(e).__name__),
                                           (RETRIABLE_KEY, "1" if e.retriable else "0")))
            context.abort(status_for(e), fields.short(str(e), MAX_DETAILS))
        log.exception("%s failed", method.__name__)
        context.abort(grpc.StatusCode.INTERNAL,
                      fields.short(f"internal error: {type(e).__name__}: {e}", MAX_DETAILS))

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as e:
                abort(context, e)
        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as e:
            abort(context, e)
    return unary


def service_handlers(module, name: str, service: object) -> grpc.GenericRpcHandler:
    """Method handlers for service `name` of the generated protobuf `module`, built from its
    descriptor with tolerant request parsing (see module docstring)."""
    descriptor = module.DESCRIPTOR.services_by_name[name]
    table = {}
    for method in descriptor.methods:
        req = getattr(module, method.input_type.name)
        resp = getattr(module, method.output_type.name)
        fn = getattr(service, method.name)
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[
            (method.client_streaming, method.server_streaming)]
        table[method.name] = make(fn, request_deserializer=tolerant(req.FromString),
                                  response_serializer=resp.SerializeToString)
    return grpc.method_handlers_generic_handler(descriptor.full_name, table)
