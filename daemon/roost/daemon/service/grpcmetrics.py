"""gRPC server metrics: requests started and handled, by service, method, type and status code,
and their latency, named as go-grpc-prometheus names them so existing dashboards and alerts
apply (`roost_` prefix):

  roost_grpc_server_started_total{grpc_service, grpc_method, grpc_type}
  roost_grpc_server_handled_total{grpc_service, grpc_method, grpc_type, grpc_code}
  roost_grpc_server_handling_seconds{grpc_service, grpc_method, grpc_type}   (histogram)

One interceptor on roostd's one gRPC server covers every port it serves (the Unix control
socket and TCP) and every service on it (Control, Peer, health, reflection). A streaming
response is counted when its stream ends, with its final code (CANCELLED when the client went
away). Cheap on the hot path: a method's wrapped handler and its label children are made once,
at its first call; a call then costs two counter increments and a histogram observation.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from roost.daemon.node.metrics import REGISTRY

LABELS = ["grpc_service", "grpc_method", "grpc_type"]
STARTED = Counter("roost_grpc_server_started", "RPCs started on the server (roostd's API and peer "
                  "ports)", LABELS, registry=REGISTRY)
HANDLED = Counter("roost_grpc_server_handled", "RPCs completed on the server, whatever their "
                  "status code", LABELS + ["grpc_code"], registry=REGISTRY)
HANDLING = Histogram("roost_grpc_server_handling_seconds", "Time from an RPC's start to its "
                     "completion on the server (a stream: to its end)", LABELS, registry=REGISTRY,
                     buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
                              30, 60))

# The Go names of the codes (go-grpc-prometheus labels codes by Go's codes.Code.String()).
GO_NAMES = {code: code.name.title().replace("_", "") for code in grpc.StatusCode}
GO_NAMES[grpc.StatusCode.OK] = "OK"
GO_NAMES[grpc.StatusCode.CANCELLED] = "Canceled"

Handler = Any          # grpc.RpcMethodHandler: a namedtuple at run time, untyped in grpc's stubs


class Recorder:
    """One method's label children, resolved once; `started`/`done` per call."""

    def __init__(self, full_method: str, kind: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        self.labels = (service or "unknown", method, kind)
        self.started = STARTED.labels(*self.labels)
        self.latency = HANDLING.labels(*self.labels)
        self.handled: dict[grpc.StatusCode, Any] = {}

    def done(self, code: grpc.StatusCode, began: float) -> None:
        self.latency.observe(time.perf_counter() - began)
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = HANDLED.labels(*self.labels, GO_NAMES[code])
        child.inc()


def _code(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the handler set (abort sets it before raising), else `default`."""
    code = context.code()  # type: ignore[attr-defined]   # (grpcio >= 1.38; not in the stubs)
    return code if isinstance(code, grpc.StatusCode) else default


def _unary_response(behavior: Callable, rec: Recorder) -> Callable:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        rec.started.inc()
        began = time.perf_counter()
        try:
            response = behavior(request, context)
        except BaseException:
            rec.done(_code(context, grpc.StatusCode.UNKNOWN), began)
            raise
        rec.done(_code(context, grpc.StatusCode.OK), began)
        return response
    return call


def _stream_response(behavior: Callable, rec: Recorder) -> Callable:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        rec.started.inc()
        began = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            yield from behavior(request, context)
            code = _code(context, grpc.StatusCode.OK)
        except GeneratorExit:          # the server dropped the stream: the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = _code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            rec.done(code, began)
    return call


# handler field -> (grpc_type, wrapper)
KINDS = {"unary_unary": ("unary", _unary_response),
         "stream_unary": ("client_stream", _unary_response),
         "unary_stream": ("server_stream", _stream_response),
         "stream_stream": ("bidi_stream", _stream_response)}


def instrument(handler: Handler, full_method: str) -> Handler:
    """`handler` with its behavior counted and timed."""
    for field, (kind, wrap) in KINDS.items():
        behavior = getattr(handler, field)
        if behavior is not None:
            return handler._replace(**{field: wrap(behavior, Recorder(full_method, kind))})
    return handler


class ServerMetrics(grpc.ServerInterceptor):
    """The interceptor: caches each method's instrumented handler (keyed by the handler the
    server resolved, so a replaced handler gets instrumented anew)."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Handler:
        handler = continuation(handler_call_details)
        if handler is None:                    # no such method: UNIMPLEMENTED, not counted
            return None
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = instrument(handler, method)
        self._handlers[method] = (handler, wrapped)
        return wrapped
