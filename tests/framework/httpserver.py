"""A real HTTP/1.1 server on loopback for guests' durable outbound HTTP requests.

roost sends every outbound request with an `Idempotency-Key` header and, after a crash, may send
it again with the same key. This server is the other side of that contract, done for real (a
stdlib ThreadingHTTPServer, keep-alive, optional TLS from a throwaway CA made with the `openssl`
CLI): it applies the first request of a key and answers later ones from the stored response,
and keeps a ledger of what took effect, so that a test can assert "applied exactly once". Faults
fire *after* the effect (the request took effect, its answer was lost), which is exactly the case
the keys exist for.

Routes (any method unless stated; the query string is ignored for routing):
  POST /counter/NAME  +1, answers the new value      GET /counter/NAME  the value
  PUT /kv/NAME  stores the body ("ok")  GET  the body (404 if absent)  DELETE  removes ("ok")
  /echo         JSON {"method", "path", "headers" (lowercased), "body" (latin-1)}
  GET /big/N    N bytes of b"x", streamed            /slow/MS/REST  sleeps MS ms, then /REST
  /never        reads the request, never answers (until the server stops)

Use: the `http_server`, `https_server` and `test_ca` fixtures (registered in tests/conftest.py),
`with HttpServer() as server:`, or `python -m tests.framework.httpserver [--port P] [--tls-dir
DIR] [--no-keys]` (prints the URL, serves until SIGTERM/SIGINT) for benchmarks.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

_BIG_CHUNK = 256 * 1024
_FAULT_MODES = ("drop", "reset", "500")
_MAX_LINE = 65536                        # (the stdlib's limits on a header line and their number)
_MAX_HEADERS = 100


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Effect:
    """One request the server applied (not a duplicate, not an injected 500). `path` is the
    request target as received (with any /slow/MS prefix and query); `key` its Idempotency-Key
    or ""; `time` is time.time() when it was applied."""
    method: str
    path: str
    key: str
    body: bytes
    time: float


@dataclass(frozen=True)
class Response:
    """An answer, kept whole so that a duplicate key can be answered with it again. `size` set
    means the body is `size` bytes of b"x", streamed (GET /big/N is never held in memory)."""
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    size: int | None = None
    replayed: bool = False

    @property
    def length(self) -> int:
        return self.size if self.size is not None else len(self.body)


@dataclass(frozen=True)
class _Request:
    """What routing and the key store need of one request."""
    method: str
    target: str
    route: str
    key: str
    body: bytes
    headers: dict[str, str]

    @property
    def fingerprint(self) -> tuple[str, str, bytes]:
        return (self.method, self.route, self.body)


@dataclass
class _Fault:
    prefix: str
    mode: str
    delay: float
    remaining: int


@dataclass
class _KeySlot:
    """A key's first request, in flight or done; later requests of the key wait on `done`."""
    fingerprint: tuple[str, str, bytes]
    done: threading.Event = field(default_factory=threading.Event)
    response: Response | None = None


class Ledger:
    """What reached the server and what took effect; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._applied: list[Effect] = []
        self._duplicates = 0
        self._requests = 0
        self._key_mismatches = 0
        self._faults: Counter[str] = Counter()

    @property
    def applied(self) -> list[Effect]:
        """The applied requests in order (a copy)."""
        with self._lock:
            return list(self._applied)

    @property
    def duplicates(self) -> int:
        """Requests answered from a stored response (their key had been applied already)."""
        with self._lock:
            return self._duplicates

    @property
    def requests(self) -> int:
        """Every request received, whatever became of it."""
        with self._lock:
            return self._requests

    @property
    def key_mismatches(self) -> int:
        """Duplicates whose method, route or body differed from the key's first request: a key
        reused for another request (a bug on the sender's side)."""
        with self._lock:
            return self._key_mismatches

    @property
    def faults(self) -> Counter[str]:
        """Injected faults that fired, by mode ("drop", "reset", "500", "delay")."""
        with self._lock:
            return Counter(self._faults)

    def applied_by_key(self) -> Counter[str]:
        """How many times each Idempotency-Key was applied (requests without a key left out):
        with keys honoured every value is 1."""
        with self._lock:
            return Counter(e.key for e in self._applied if e.key)

    def applied_count(self, method: str | None = None, path: str | None = None) -> int:
        """Applied requests with this method and/or exactly this path (target)."""
        with self._lock:
            return sum(1 for e in self._applied
                       if (method is None or e.method == method) and (path is None or e.path == path))

    def reset(self) -> None:
        with self._lock:
            self._applied.clear()
            self._duplicates = self._requests = self._key_mismatches = 0
            self._faults.clear()

    def _record(self, effect: Effect) -> None:
        with self._lock:
            self._applied.append(effect)

    def _count_request(self) -> None:
        with self._lock:
            self._requests += 1

    def _count_duplicate(self, mismatch: bool) -> None:
        with self._lock:
            self._duplicates += 1
            self._key_mismatches += mismatch

    def _count_fault(self, mode: str) -> None:
        with self._lock:
            self._faults[mode] += 1


# ---------------------------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA and the certificates the tests serve with (PEM paths). `server_cert` is
    for 127.0.0.1 and localhost, signed by the CA; `bad_cert` has the same names but is
    self-signed, so a client trusting `ca_cert` must refuse it for its issuer alone."""
    __test__ = False                     # (not a test class, though its name says Test)
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    bad_cert: Path
    bad_key: Path


_SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_LEAF_EXT = (f"{_SAN}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")


def make_test_ca(directory: Path | str) -> TestCA:
    """Generate (or reuse, if all files are there) the CA and certificates in `directory`, with
    EC P-256 keys so that it takes milliseconds."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = TestCA(dir=d, ca_cert=d / "ca.crt", ca_key=d / "ca.key", server_cert=d / "server.crt",
                server_key=d / "server.key", bad_cert=d / "bad.crt", bad_key=d / "bad.key")
    if all(p.exists() for p in (ca.ca_cert, ca.ca_key, ca.server_cert, ca.server_key, ca.bad_cert, ca.bad_key)):
        return ca
    _openssl("req", "-x509", *_EC, "-keyout", ca.ca_key, "-out", ca.ca_cert, "-days", "3650",
             "-subj", "/CN=roost test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    csr, ext = d / "server.csr", d / "server.ext"
    ext.write_text(_LEAF_EXT)
    _openssl("req", *_EC, "-keyout", ca.server_key, "-out", csr, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", csr, "-CA", ca.ca_cert, "-CAkey", ca.ca_key, "-set_serial", "1",
             "-out", ca.server_cert, "-days", "3650", "-extfile", ext)
    _openssl("req", "-x509", *_EC, "-keyout", ca.bad_key, "-out", ca.bad_cert, "-days", "3650",
             "-subj", "/CN=localhost", "-addext", _SAN)
    return ca


def _openssl(*args: str | Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")


# ---------------------------------------------------------------------------------------------
# The server


class HttpServer:
    """The test HTTP(S) server: `HttpServer(...).start()` or `with HttpServer(...) as s:`.

    honour_keys: a repeated Idempotency-Key is answered from the stored response, not applied.
    tls: serve https with `tls.server_cert` (or `tls.bad_cert` with bad_cert=True)."""

    def __init__(self, port: int = 0, *, honour_keys: bool = True, tls: TestCA | None = None,
                 bad_cert: bool = False) -> None:
        self.honour_keys = honour_keys
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self._want_port = port
        self._tls = tls
        self._ssl = _server_context(tls, bad_cert) if tls is not None else None
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._kv: dict[str, bytes] = {}
        self._keys: dict[str, _KeySlot] = {}
        self._faults: list[_Fault] = []
        self._chaos: tuple[float, float, random.Random] | None = None
        self._conns: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> HttpServer:
        if self._httpd is not None:
            return self
        self.stopping.clear()
        self._httpd = _Server(("127.0.0.1", self._want_port), self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"httpserver:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake every held request (/never, /slow, delays) and cut every open
        connection, so that a client sees the server gone at once. The port can be reused
        (`HttpServer(port=old.port)`) to bring it back."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                socket.socket.shutdown(conn, socket.SHUT_RDWR)   # (the raw socket's, TLS or not)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the HTTP server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, with a trailing slash: "http://127.0.0.1:PORT/" (https with tls)."""
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}/"

    # -- the ledger, for short assertions (server.duplicates rather than server.ledger.duplicates)

    @property
    def applied(self) -> list[Effect]:
        return self.ledger.applied

    @property
    def duplicates(self) -> int:
        return self.ledger.duplicates

    @property
    def requests(self) -> int:
        return self.ledger.requests

    def applied_by_key(self) -> Counter[str]:
        return self.ledger.applied_by_key()

    def applied_count(self, method: str | None = None, path: str | None = None) -> int:
        return self.ledger.applied_count(method, path)

    # -- state and faults

    def counter(self, name: str) -> int:
        """A counter's value, read without a request (so without a ledger entry or a fault)."""
        with self._lock:
            return self._counters[name]

    def kv(self, name: str) -> bytes | None:
        with self._lock:
            return self._kv.get(name)

    def reset(self) -> None:
        """Forget everything: counters, kv, stored keys, pending faults, chaos and the ledger."""
        with self._lock:
            self._counters.clear()
            self._kv.clear()
            self._keys.clear()
            self._faults.clear()
            self._chaos = None
        self.ledger.reset()

    def fault(self, path_prefix: str, mode: str, count: int = 1) -> None:
        """The next `count` requests whose target starts with `path_prefix` get `mode`, after
        their effect is applied: "drop" (close, no answer), "reset" (TCP RST), "delay:SECONDS"
        (answer late); "500" answers 500 and applies nothing."""
        delay = _parse_mode(mode)
        with self._lock:
            self._faults.append(_Fault(path_prefix, mode.split(":")[0], delay, count))

    def chaos(self, drop: float = 0.0, reset: float = 0.0, seed: int = 1) -> None:
        """From now on every answer (after its effect) is dropped with probability `drop` or
        reset with probability `reset`, from a seeded random sequence; chaos() turns it off."""
        if drop < 0 or reset < 0 or drop + reset > 1:
            raise ValueError(f"chaos probabilities must be >= 0 and sum to <= 1, not drop={drop} reset={reset}")
        with self._lock:
            self._chaos = (drop, reset, random.Random(seed)) if drop or reset else None

    # -- serving (called from the handler threads)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _take_fault(self, target: str) -> _Fault | None:
        """The fault this request gets, if any: the first pending one that matches, else chaos."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and target.startswith(fault.prefix):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
            if self._chaos is None:
                return None
            drop, reset, rng = self._chaos
            r = rng.random()
        if r < drop:
            return _Fault("", "drop", 0.0, 0)
        if r < drop + reset:
            return _Fault("", "reset", 0.0, 0)
        return None

    def _answer(self, req: _Request) -> Response:
        """Apply `req`, or, if its key was applied already, the stored answer of the first."""
        if not (self.honour_keys and req.key):
            return self._apply(req)
        while True:
            with self._lock:
                slot = self._keys.get(req.key)
                owner = slot is None
                if slot is None:
                    slot = self._keys[req.key] = _KeySlot(req.fingerprint)
            if not owner:
                slot.done.wait()
                if slot.response is None:          # the first one failed: nothing stored, retry
                    continue
                self.ledger._count_duplicate(slot.fingerprint != req.fingerprint)
                return replace(slot.response, replayed=True)
            try:
                slot.response = self._apply(req)
            finally:
                if slot.response is None:
                    with self._lock:
                        self._keys.pop(req.key, None)
                slot.done.set()
            return slot.response

    def _apply(self, req: _Request) -> Response:
        with self._lock:
            response = self._route(req)
        self.ledger._record(Effect(req.method, req.target, req.key, req.body, time.time()))
        return response

    def _route(self, req: _Request) -> Response:
        """The effect and answer of one route (under self._lock)."""
        parts = req.route.strip("/").split("/", 1)
        head, name = parts[0], parts[1] if len(parts) > 1 else ""
        if head == "counter" and name:
            return self._route_counter(req.method, name)
        if head == "kv" and name:
            return self._route_kv(req.method, name, req.body)
        if head == "echo" and not name:
            return Response(200, _echo_body(req), "application/json")
        if head == "big" and req.method in ("GET", "HEAD"):
            return Response(200, size=int(name)) if name.isdigit() else Response(400, b"bad size")
        return Response(404, b"no such route")

    def _route_counter(self, method: str, name: str) -> Response:
        if method == "POST":
            self._counters[name] += 1
        elif method not in ("GET", "HEAD"):
            return Response(405, b"counter: POST or GET")
        return Response(200, str(self._counters[name]).encode())

    def _route_kv(self, method: str, name: str, body: bytes) -> Response:
        if method == "PUT":
            self._kv[name] = body
            return Response(200, b"ok")
        if method == "DELETE":
            self._kv.pop(name, None)
            return Response(200, b"ok")
        if method in ("GET", "HEAD"):
            value = self._kv.get(name)
            return Response(404, b"absent") if value is None else Response(200, value, "application/octet-stream")
        return Response(405, b"kv: PUT, GET or DELETE")


def _parse_mode(mode: str) -> float:
    """The delay of a "delay:SECONDS" mode (0 for the others); ValueError for an unknown mode."""
    if mode in _FAULT_MODES:
        return 0.0
    kind, _, seconds = mode.partition(":")
    try:
        if kind == "delay" and float(seconds) >= 0:
            return float(seconds)
    except ValueError:
        pass
    raise ValueError(f"unknown fault mode {mode!r}: use drop, reset, 500 or delay:SECONDS")


def _echo_body(req: _Request) -> bytes:
    return json.dumps({"method": req.method, "path": req.target, "headers": req.headers,
                       "body": req.body.decode("latin-1")}).encode()


def _server_context(tls: TestCA, bad_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if bad_cert:
        ctx.load_cert_chain(tls.bad_cert, tls.bad_key)
    else:
        ctx.load_cert_chain(tls.server_cert, tls.server_key)
    return ctx


class _Server(ThreadingHTTPServer):
    """The stdlib threading server, tuned: no reverse DNS at bind, a deep accept queue, quiet
    about clients that go away (the tests make them go away on purpose)."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], owner: HttpServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):     # (ssl.SSLError and ConnectionError too)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One connection: reads requests (keep-alive) and hands each to its HttpServer."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    fields: dict[str, str]

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.server.owner._ssl
        if ctx is not None:                 # (the handshake here, in this connection's thread)
            self.request = ctx.wrap_socket(self.request, server_side=True)
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, False)
            if self.server.owner._ssl is not None:
                self.connection.close()     # (the server closes only the raw socket, detached by TLS)

    def parse_request(self) -> bool:
        """The request line and headers, parsed without the stdlib's email parser (half of the
        server's time per request went there). Sets command, path, request_version, `fields`
        (lowercased name -> value, repeats joined by ", ") and close_connection; answers 100
        Continue to `Expect: 100-continue`. False, with the error answered, for a bad request."""
        self.command, self.request_version, self.close_connection = "", "HTTP/1.1", True   # (errors: a status line)
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad request line {self.requestline[:80]!r}")
            return False
        self.command, self.path, self.request_version = words
        fields = self._read_fields()
        if fields is None:
            return False
        self.fields = fields
        connection = fields.get("connection", "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0"
                                                          and connection != "keep-alive")
        if fields.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_fields(self) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                return fields
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if len(line) > _MAX_LINE or not colon or not name or name != name.strip():
                self.send_error(HTTPStatus.BAD_REQUEST, "bad header line")
                return None
            name, value = name.lower(), value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
        return None

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging: it would cost more than serving."""

    def __getattr__(self, name: str) -> Any:
        """Every method (do_GET, do_PATCH, do_FOO) is served by _serve."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        owner = self.server.owner
        try:
            body = self._read_body()
        except ValueError as e:
            self.close_connection = True
            self._send(Response(400, str(e).encode()))
            return
        owner.ledger._count_request()
        route = urlsplit(self.path).path
        while route.startswith("/slow/"):
            ms, _, rest = route[len("/slow/"):].partition("/")
            if not ms.isdigit():
                self._send(Response(400, b"slow: /slow/MS/..."))
                return
            if owner.stopping.wait(int(ms) / 1000):
                return self._abort(rst=False)
            route = "/" + rest
        if route == "/never":
            owner.stopping.wait()
            return self._abort(rst=False)
        self._respond(owner, route, body)

    def _respond(self, owner: HttpServer, route: str, body: bytes) -> None:
        fault = owner._take_fault(self.path)
        if fault is not None and fault.mode == "500":
            owner.ledger._count_fault("500")
            self._send(Response(500, b"injected fault: nothing applied"))
            return
        req = _Request(self.command, self.path, route, self.fields.get("idempotency-key", ""), body, self.fields)
        response = owner._answer(req)
        if fault is not None:
            owner.ledger._count_fault(fault.mode)
            if fault.mode in ("drop", "reset"):
                return self._abort(rst=fault.mode == "reset")
            if owner.stopping.wait(fault.delay):
                return self._abort(rst=False)
        self._send(response)

    def _read_body(self) -> bytes:
        if self.fields.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.fields.get("content-length")
        if length is None:
            return b""
        if not length.isdigit():
            raise ValueError(f"bad Content-Length {length!r}")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise ValueError(f"bad chunk size {line[:20]!r}") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass                        # (trailers)
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send(self, response: Response) -> None:
        """Status line, headers and (small) body in one write: one packet for most answers."""
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        head = [f"HTTP/1.1 {response.status} {phrase}", f"Date: {self.date_time_string()}",
                f"Content-Type: {response.content_type}", f"Content-Length: {response.length}"]
        if response.replayed:
            head.append("Idempotent-Replayed: true")
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode()
        if self.command == "HEAD":
            self.wfile.write(data)
        elif response.size is None:
            self.wfile.write(data + response.body)
        else:
            self.wfile.write(data)
            self._stream(response.size)

    def _stream(self, size: int) -> None:
        chunk = memoryview(b"x" * min(size, _BIG_CHUNK))
        while size > 0:
            n = min(size, len(chunk))
            self.wfile.write(chunk[:n])
            size -= n

    def _abort(self, rst: bool) -> None:
        """Close the connection with no answer: a FIN, or with rst a TCP RST (SO_LINGER 0)."""
        self.close_connection = True
        conn = self.connection
        try:
            if rst:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()              # (it holds the socket open past close())
            conn.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# pytest fixtures (registered by tests/conftest.py)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A fresh HTTP server of the test's own, honouring Idempotency-Keys."""
    with HttpServer() as server:
        yield server


@pytest.fixture(scope="session", name="test_ca")
def session_test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The session's throwaway CA and certificates (made once)."""
    return make_test_ca(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture
def https_server(test_ca: TestCA) -> Iterator[HttpServer]:
    """A fresh HTTPS server of the test's own, with the certificate `test_ca` signed."""
    with HttpServer(tls=test_ca) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the URL is the first line on stdout."""
    p = argparse.ArgumentParser(prog="python -m tests.framework.httpserver", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-dir", type=Path, help="serve https; the CA is made here (or reused): DIR/ca.crt")
    p.add_argument("--bad-cert", action="store_true", help="with --tls-dir: serve the self-signed certificate")
    p.add_argument("--no-keys", action="store_true", help="apply every request, ignoring Idempotency-Key")
    p.add_argument("--chaos-drop", type=float, default=0.0, help="drop this fraction of answers")
    p.add_argument("--chaos-reset", type=float, default=0.0, help="reset this fraction of answers")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    try:
        tls = make_test_ca(args.tls_dir) if args.tls_dir else None
        server = HttpServer(args.port, honour_keys=not args.no_keys, tls=tls, bad_cert=args.bad_cert)
        server.chaos(args.chaos_drop, args.chaos_reset, args.seed)
        signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)   # (before the threads: they inherit it)
        server.start()
    except (OSError, RuntimeError, ValueError) as e:
        print(f"httpserver: {e}", file=sys.stderr)
        return 1
    print(server.url, flush=True)
    signal.sigwait(signals)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
