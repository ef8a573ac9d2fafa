"""The gRPC server metrics interceptor on an in-process server: each RPC type, the final code of
unary calls and of streams (a stream's end, an abort, an exception, a client going away)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from roost.daemon.service import grpcmetrics

SERVICE = "test.metrics.Echo"
IDENTITY = (lambda b: b, lambda b: b)


def _handled(method: str, code: str) -> float:
    return grpcmetrics.HANDLED.labels(SERVICE, method, _kind(method), code)._value.get()


def _kind(method: str) -> str:
    return {"Unary": "unary", "Fail": "unary", "Crash": "unary", "Sum": "client_stream",
            "Count": "server_stream", "Forever": "server_stream", "Chat": "bidi_stream"}[method]


class Echo:
    def __init__(self) -> None:
        self.forever_ended = threading.Event()

    def Unary(self, request: bytes, context) -> bytes:
        return request

    def Fail(self, request: bytes, context) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def Crash(self, request: bytes, context) -> bytes:
        raise RuntimeError("bug")

    def Sum(self, requests: Iterator[bytes], context) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    def Count(self, request: bytes, context) -> Iterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    def Forever(self, request: bytes, context) -> Iterator[bytes]:
        try:
            while True:
                yield b"x"
        finally:
            self.forever_ended.set()

    def Chat(self, requests: Iterator[bytes], context) -> Iterator[bytes]:
        yield from requests


@pytest.fixture(scope="module")
def served():
    echo = Echo()
    makers = {"Unary": grpc.unary_unary_rpc_method_handler, "Fail": grpc.unary_unary_rpc_method_handler,
              "Crash": grpc.unary_unary_rpc_method_handler, "Sum": grpc.stream_unary_rpc_method_handler,
              "Count": grpc.unary_stream_rpc_method_handler,
              "Forever": grpc.unary_stream_rpc_method_handler,
              "Chat": grpc.stream_stream_rpc_method_handler}
    table = {name: make(getattr(echo, name)) for name, make in makers.items()}
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=(grpcmetrics.ServerMetrics(),))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, table),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, echo
    channel.close()
    server.stop(None)


def _call(channel: grpc.Channel, kind: str, method: str):
    make = {"unary": channel.unary_unary, "client_stream": channel.stream_unary,
            "server_stream": channel.unary_stream, "bidi_stream": channel.stream_stream}[kind]
    return make(f"/{SERVICE}/{method}", *IDENTITY)


def test_unary_codes(served) -> None:
    channel, _ = served
    before = {m: _handled(m, c) for m, c in (("Unary", "OK"), ("Fail", "NotFound"), ("Crash", "Unknown"))}
    assert _call(channel, "unary", "Unary")(b"hi", timeout=5) == b"hi"
    for method, code in (("Fail", grpc.StatusCode.NOT_FOUND), ("Crash", grpc.StatusCode.UNKNOWN)):
        with pytest.raises(grpc.RpcError) as e:
            _call(channel, "unary", method)(b"", timeout=5)
        assert e.value.code() == code
    assert _handled("Unary", "OK") == before["Unary"] + 1
    assert _handled("Fail", "NotFound") == before["Fail"] + 1
    assert _handled("Crash", "Unknown") == before["Crash"] + 1
    started = grpcmetrics.STARTED.labels(SERVICE, "Unary", "unary")._value.get()
    assert started >= 1


def test_streams_are_counted_at_their_end(served) -> None:
    channel, _ = served
    assert _call(channel, "client_stream", "Sum")(iter([b"ab", b"c"]), timeout=5) == b"3"
    assert list(_call(channel, "server_stream", "Count")(b"3", timeout=5)) == [b"0", b"1", b"2"]
    assert list(_call(channel, "bidi_stream", "Chat")(iter([b"a", b"b"]), timeout=5)) == [b"a", b"b"]
    assert _handled("Sum", "OK") >= 1 and _handled("Count", "OK") >= 1 and _handled("Chat", "OK") >= 1
    histogram = grpcmetrics.HANDLING.labels(SERVICE, "Count", "server_stream")
    assert histogram._sum.get() > 0


def test_a_stream_the_client_leaves_is_canceled(served) -> None:
    channel, echo = served
    before = _handled("Forever", "Canceled")
    stream = _call(channel, "server_stream", "Forever")(b"", timeout=30)
    assert next(stream) == b"x"
    stream.cancel()
    assert echo.forever_ended.wait(10)
    deadline = threading.Event()
    for _ in range(100):                      # the server notices a moment after the client
        if _handled("Forever", "Canceled") > before:
            break
        deadline.wait(0.05)
    assert _handled("Forever", "Canceled") == before + 1
