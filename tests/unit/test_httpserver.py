"""The test HTTP server (tests/framework/httpserver.py) keeps its contract: a repeated
Idempotency-Key is answered, not applied; faults fire after the effect and look, to a real client
(urllib3), like the network failures they stand for; TLS verifies against the test CA only."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError, SSLError

from tests.framework.httpserver import HttpServer, TestCA

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client() -> urllib3.PoolManager:
    """A keep-alive client that never retries: every failure reaches the test as it happened."""
    return urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5))


def post(client: urllib3.PoolManager, server: HttpServer, path: str, key: str = "", **kw) -> urllib3.BaseHTTPResponse:
    headers = {"Idempotency-Key": key} if key else {}
    return client.request("POST", server.url + path, headers=headers, **kw)


def test_a_key_is_applied_once_and_answered_again(http_server, client):
    first = post(client, http_server, "counter/a", key="k1")
    again = post(client, http_server, "counter/a", key="k1")
    assert (first.status, first.data, again.status, again.data) == (200, b"1", 200, b"1")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert http_server.counter("a") == 1
    assert (http_server.duplicates, http_server.requests) == (1, 2)
    assert http_server.applied_by_key() == {"k1": 1}
    assert http_server.applied_count("POST", "/counter/a") == 1
    assert http_server.ledger.key_mismatches == 0


def test_without_keys_honoured_every_request_is_applied(client):
    with HttpServer(honour_keys=False) as server:
        assert [post(client, server, "counter/a", key="k1").data for _ in range(2)] == [b"1", b"2"]
        assert (server.duplicates, server.applied_by_key()) == (0, {"k1": 2})


def test_concurrent_requests_of_one_key_apply_once(http_server, client):
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(post(client, http_server, "counter/c", key="k").data))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [b"1"] * 8 and http_server.duplicates == 7


def test_a_reused_key_for_another_request_is_counted(http_server, client):
    post(client, http_server, "counter/a", key="k")
    assert post(client, http_server, "counter/b", key="k").data == b"1"
    assert http_server.counter("b") == 0 and http_server.ledger.key_mismatches == 1


def test_counter_get_and_kv_routes(http_server, client):
    post(client, http_server, "counter/a")
    assert client.request("GET", http_server.url + "counter/a").data == b"1"
    assert client.request("GET", http_server.url + "kv/x").status == 404
    assert client.request("PUT", http_server.url + "kv/x", body=b"v").data == b"ok"
    assert client.request("GET", http_server.url + "kv/x").data == b"v"
    assert client.request("DELETE", http_server.url + "kv/x").data == b"ok"
    assert http_server.kv("x") is None and http_server.counter("a") == 1


def test_echo_shows_method_path_headers_and_body(http_server, client):
    r = client.request("PATCH", http_server.url + "echo?q=1", body=b"\xffhi", headers={"X-Thing": "A b"})
    echo = json.loads(r.data)
    assert (echo["method"], echo["path"], echo["body"]) == ("PATCH", "/echo?q=1", "\xffhi")
    assert echo["headers"]["x-thing"] == "A b" and echo["headers"]["content-length"] == "3"


def raw_exchange(server: HttpServer, data: bytes) -> bytes:
    """Send `data` as is and read until the server closes (every case below makes it close)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_chunked_bodies_expect_continue_and_http10_are_understood(http_server):
    out = raw_exchange(http_server, b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                    b"Expect: 100-continue\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
                                    b"GET /kv/a HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nabcde")
    assert b"Connection: close" in out and http_server.kv("a") == b"abcde"


def test_a_bad_request_line_is_answered_400(http_server):
    assert raw_exchange(http_server, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(http_server, b"GET / HTTP/1.1\r\n bad\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_drop_applies_then_closes_without_an_answer(http_server, client):
    http_server.fault("/counter/", "drop")
    with pytest.raises(ProtocolError):
        post(client, http_server, "counter/a", key="k")
    assert http_server.counter("a") == 1
    assert post(client, http_server, "counter/a", key="k").data == b"1"     # the retry: answered
    assert http_server.duplicates == 1 and http_server.ledger.faults == {"drop": 1}


def test_reset_applies_then_sends_a_tcp_rst(http_server, client):
    http_server.fault("/counter/a", "reset")
    with pytest.raises(ProtocolError) as e:
        post(client, http_server, "counter/a")
    assert isinstance(e.value.args[1], ConnectionResetError)
    assert http_server.counter("a") == 1


def test_500_applies_nothing_and_stores_no_key(http_server, client):
    http_server.fault("/counter/a", "500")
    assert post(client, http_server, "counter/a", key="k").status == 500
    assert http_server.counter("a") == 0 and http_server.applied == []
    assert post(client, http_server, "counter/a", key="k").data == b"1"
    assert http_server.duplicates == 0


def test_delay_answers_late_and_a_fault_fires_count_times(http_server, client):
    http_server.fault("/counter/", "delay:0.3", count=2)
    began = time.monotonic()
    for _ in range(3):
        post(client, http_server, "counter/a")
    assert 0.6 <= time.monotonic() - began < 0.9 and http_server.counter("a") == 3


def test_an_unknown_fault_mode_is_refused(http_server):
    with pytest.raises(ValueError, match="unknown fault mode"):
        http_server.fault("/", "explode")


def test_chaos_drops_answers_but_applies_them(http_server, client):
    http_server.chaos(drop=1.0)
    with pytest.raises(ProtocolError):
        post(client, http_server, "counter/a")
    http_server.chaos()
    assert post(client, http_server, "counter/a").data == b"2"


def test_never_times_out_and_the_server_still_stops_promptly(client):
    server = HttpServer().start()
    with pytest.raises(ReadTimeoutError):
        client.request("GET", server.url + "never", timeout=0.5)
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 1.0


def test_stop_cuts_kept_alive_connections_and_the_port_comes_back(client):
    server = HttpServer().start()
    post(client, server, "counter/a")
    port = server.port
    server.stop()
    with pytest.raises((ProtocolError, urllib3.exceptions.NewConnectionError)):
        client.request("GET", f"http://127.0.0.1:{port}/counter/a")
    with HttpServer(port) as again:
        assert client.request("GET", again.url + "counter/a").data == b"0"


def test_big_streams_exactly_n_bytes(http_server, client):
    r = client.request("GET", http_server.url + "big/3000000", preload_content=False)
    assert r.headers["Content-Length"] == "3000000"
    data = r.read()
    assert len(data) == 3_000_000 and data.count(b"x") == 3_000_000


def test_slow_delays_then_acts_as_the_rest(http_server, client):
    began = time.monotonic()
    assert post(client, http_server, "slow/200/counter/a").data == b"1"
    assert 0.2 <= time.monotonic() - began < 0.5
    assert http_server.counter("a") == 1 and http_server.applied_count(path="/slow/200/counter/a") == 1


def test_tls_verifies_against_the_test_ca(https_server, test_ca: TestCA):
    assert https_server.url.startswith("https://127.0.0.1:")
    client = urllib3.PoolManager(ca_certs=str(test_ca.ca_cert), retries=False)
    assert client.request("POST", https_server.url + "counter/a").data == b"1"
    assert client.request("GET", f"https://localhost:{https_server.port}/counter/a").data == b"1"


def test_tls_refuses_the_bad_certificate(test_ca: TestCA):
    client = urllib3.PoolManager(ca_certs=str(test_ca.ca_cert), retries=False)
    with HttpServer(tls=test_ca, bad_cert=True) as server:
        with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            client.request("GET", server.url + "counter/a")
        assert server.requests == 0


def test_cli_prints_the_url_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tests.framework.httpserver", "--tls-dir", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        client = urllib3.PoolManager(ca_certs=str(tmp_path / "ca.crt"), retries=False)
        assert client.request("POST", url + "counter/a").data == b"1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
