"""Durable outbound HTTP against a real server: a guest's requests go out with Idempotency-Keys,
and however its worker or roostd is killed (kill -9, at random moments, or while a request is
out and its answer not yet journaled) the server applies each request exactly once and the
guest's output is byte for byte that of a run never interrupted. A request that is cut off and
not safe to send again (a POST to a destination that does not honour keys) gives the guest
ECANCELED, never a second send. Errors an operator or a server can cause (a destination not
allowed, a response too large, a server that never answers, a bad certificate) reach the guest
as errnos and leave the daemon serving.

The module's daemon allows four destinations: `keyed` (honours keys, idempotency_keys = true),
`plain` (applies every request, idempotency_keys = false), and two HTTPS servers of the test CA
(one with its certificate, one with a self-signed one). Each test resets the servers it reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost.client import times
from roost.client.api import Client
from tests.framework.guestbuild import FLAGS, compile_guest
from tests.framework.harness import Roostd, process_alive, wait_until
from tests.framework.httpserver import HttpServer, TestCA
from tests.integration.test_durability import _kill_worker

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("ROOST_TEST_SEED", time.time_ns() % 100000))
STEPS, SPIN = 60, "25000000"       # some 70 ms of computing per step: 4 to 5 s in all
ECANCELED, EACCES, EMSGSIZE, ETIMEDOUT, EPROTO = 11, 2, 35, 73, 65
TIMEOUT, RETRIES = 2, 1


# ---- guests and expectations

def sdk_guest(name: str) -> Path:
    """A guest that includes sdk/c/roost.h: the header's hash is in the flags, so a change to
    it recompiles (the build cache hashes only the source and the flags). (Not -DROOST_H=...:
    that is the header's include guard, and defining it hides the whole header.)"""
    header = hashlib.sha256((ROOT / "sdk" / "c" / "roost.h").read_bytes()).hexdigest()[:12]
    return compile_guest(name, FLAGS + ("-I", str(ROOT / "sdk" / "c"), f"-DROOST_H_SHA={header}"))


def step_line(i: int) -> str:
    """What http_steps prints for step i against a fresh server (its counter "c" at 0)."""
    kind = i % 4
    if kind == 0:
        return f"step {i} POST 200 {i // 4 + 1}"
    if kind == 1:
        return f"step {i} GET 200 {i // 4 + 1}"
    if kind == 2:
        return f"step {i} PUT 200 ok"
    return f"step {i} GET 200 v{i - 1}"


def expected_steps(n: int) -> bytes:
    """The whole output of `http_steps BASE n` never interrupted, against a fresh server."""
    return "".join(f"{step_line(i)}\n" for i in range(n)).encode() + f"done {n}\n".encode()


def check_exactly_once(server: HttpServer, exec_id: str, requests: int) -> None:
    """Every request of the execution was applied once: its keys are roost-ID-1..requests,
    each applied exactly once, and no key was reused for another request."""
    applied = server.applied_by_key()
    mine = {k: v for k, v in applied.items() if k.startswith(f"roost-{exec_id}-")}
    assert set(mine) == {f"roost-{exec_id}-{n}" for n in range(1, requests + 1)}, sorted(mine)
    assert set(mine.values()) == {1}, {k: v for k, v in mine.items() if v != 1}
    assert server.ledger.key_mismatches == 0


# ---- the daemon and its servers

@dataclass
class Setup:
    """The module's daemon and the servers it may reach."""
    daemon: Roostd
    keyed: HttpServer
    plain: HttpServer
    tls_good: HttpServer
    tls_bad: HttpServer
    config: str

    def allow(self) -> list[str]:
        """--allow-http for every destination."""
        return [a for s in (self.keyed, self.plain, self.tls_good, self.tls_bad)
                for a in ("--allow-http", s.url)]


def http_config(keyed: HttpServer, plain: HttpServer | None = None, ca: TestCA | None = None,
                *tls: HttpServer) -> str:
    text = (f"[http]\ntimeout_seconds = {TIMEOUT}\nretries = {RETRIES}\n"
            "max_response_bytes = 1048576\n")
    if ca is not None:
        text += f'ca_bundle = "{ca.ca_cert}"\n'
    text += f'[[http.allow]]\nprefix = "{keyed.url}"\nidempotency_keys = true\n'
    if plain is not None:
        text += f'[[http.allow]]\nprefix = "{plain.url}"\nidempotency_keys = false\n'
    for server in tls:
        text += f'[[http.allow]]\nprefix = "{server.url}"\n'
    return text


@pytest.fixture(scope="module")
def setup(tmp_path_factory, test_ca) -> Iterator[Setup]:
    with HttpServer() as keyed, HttpServer(honour_keys=False) as plain, \
            HttpServer(tls=test_ca) as good, HttpServer(tls=test_ca, bad_cert=True) as bad:
        config = http_config(keyed, plain, test_ca, good, bad)
        daemon = Roostd(tmp_path_factory.mktemp("roostd-http") / "data", config_text=config).start()
        try:
            yield Setup(daemon, keyed, plain, good, bad, config)
        finally:
            daemon.stop()


@pytest.fixture
def s(setup: Setup) -> Setup:
    for server in (setup.keyed, setup.plain, setup.tls_good, setup.tls_bad):
        server.reset()
    return setup


# ---- roost commands

def inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def start(daemon: Roostd, allow: list[str], guest: str, *args: str, extra: tuple[str, ...] = ()) -> str:
    return daemon.roost("run", "--detach", *extra, *allow, str(sdk_guest(guest)), "--", *args,
                        check=True).stdout.decode().strip()


def finish(daemon: Roostd, exec_id: str, timeout: float = 120) -> bytes:
    """Wait for the execution to exit 0; its stdout."""
    waited = daemon.roost("wait", exec_id, timeout=timeout)
    assert waited.returncode == 0, (waited.stdout, waited.stderr, daemon.log())
    return daemon.roost("logs", "--stdout", exec_id, check=True).stdout


def metric(daemon: Roostd, name: str) -> float:
    """The sum of a metric's samples (all label sets)."""
    total, found = 0.0, False
    for line in daemon.metrics().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"no metric {name}"
    return total


def kill_in_flight(daemon: Roostd, exec_id: str, server: HttpServer) -> str:
    """Wait for a request to be out and applied by `server`, its answer held back by a delay
    fault (so the journal has not got it), then kill -9 the worker at once (the pid of the same
    look: a second `roost inspect` may come too late); the request that was in flight. (Asked
    through the client library, not the CLI: on a loaded host a CLI process can take longer to
    start than the request is out.)"""
    with Client(daemon.addr) as client:
        def look() -> tuple[str, int] | None:
            record = client.get(exec_id)
            request, pid = record.http.in_flight, record.worker_pid
            held = server.ledger.faults["delay"] >= 1       # applied, its answer delayed
            return (request, pid) if request and held and pid and process_alive(pid) else None
        request, pid = wait_until(look, timeout=30, interval=0.02, what="a request in flight")
    os.kill(pid, signal.SIGKILL)
    return request


# ---- uninterrupted

def test_an_uninterrupted_run_applies_each_request_once(s):
    n = 20
    exec_id = start(s.daemon, ["--allow-http", s.keyed.url], "http_steps", s.keyed.url, str(n))
    assert finish(s.daemon, exec_id) == expected_steps(n)
    check_exactly_once(s.keyed, exec_id, n)
    assert s.keyed.duplicates == 0
    http = inspect(s.daemon, exec_id)["http"]
    assert (http["sent"], http["replayed"], http["resent"], http["failed"], http["refused"]) == (n, 0, 0, 0, 0)
    assert not http.get("interrupted") and not http.get("in_flight")
    text = s.daemon.roost("inspect", exec_id, check=True).stdout.decode()
    assert re.search(rf"^http_requests:\s+{n} sent, 0 replayed, 0 sent again, 0 interrupted, "
                     r"0 refused, 0 failed$", text, re.M), text
    assert re.search(r"^http_in_flight:\s+-$", text, re.M)
    assert metric(s.daemon, "roost_http_requests_total") >= n
    assert metric(s.daemon, "roost_http_request_duration_seconds_count") >= n
    for name in ("roost_http_replays_total", "roost_http_resends_total", "roost_http_interrupted_total"):
        metric(s.daemon, name)                       # (present)


def test_an_answer_lost_in_transport_is_sent_again_with_its_key(s):
    """The server applies a request and drops (or resets) the connection before answering:
    the transport's retry carries the same key, so the server answers from the stored
    response and the counter moves once."""
    s.keyed.fault("/counter/", "drop", 1)
    s.keyed.fault("/kv/", "reset", 1)
    exec_id = start(s.daemon, ["--allow-http", s.keyed.url], "http_steps", s.keyed.url, "8")
    assert finish(s.daemon, exec_id) == expected_steps(8)
    check_exactly_once(s.keyed, exec_id, 8)
    assert s.keyed.ledger.faults["drop"] == 1 and s.keyed.ledger.faults["reset"] == 1
    assert s.keyed.duplicates == 2


# ---- kill -9 at random moments

def check_killed_run(server: HttpServer, daemon: Roostd, exec_id: str, out: bytes, seed: int) -> dict:
    assert out == expected_steps(STEPS), f"seed {seed}"
    check_exactly_once(server, exec_id, STEPS)
    return inspect(daemon, exec_id)["http"]


def test_worker_kill9_at_random_moments(s):
    rng = random.Random(SEED)
    exec_id = start(s.daemon, ["--allow-http", s.keyed.url], "http_steps", s.keyed.url,
                    str(STEPS), SPIN, extra=("--checkpoint-every", "1"))
    kills = 0
    for _ in range(4):
        time.sleep(rng.uniform(0.3, 1.2))
        kills += _kill_worker(s.daemon, exec_id)
    assert kills >= 2, "the guest ended before the kills: make it longer"
    http = check_killed_run(s.keyed, s.daemon, exec_id, finish(s.daemon, exec_id), SEED)
    assert http["replayed"] + http["resent"] >= 1, http
    assert http["sent"] <= STEPS <= http["sent"] + http["resent"], http
    assert inspect(s.daemon, exec_id)["restores"] == kills
    assert metric(s.daemon, "roost_http_replays_total") + metric(s.daemon, "roost_http_resends_total") >= 1


def test_roostd_kill9_at_random_moments_then_restart(s, tmp_path):
    rng = random.Random(SEED + 1)
    daemon = Roostd(tmp_path / "data", config_text=s.config).start()
    try:
        exec_id = start(daemon, ["--allow-http", s.keyed.url], "http_steps", s.keyed.url, str(STEPS), SPIN)
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.5))
            daemon.kill9()
            daemon.start()
        http = check_killed_run(s.keyed, daemon, exec_id, finish(daemon, exec_id, timeout=180), SEED + 1)
        assert http["sent"] + http["resent"] >= 1
    finally:
        daemon.stop()


# ---- kill -9 after the request left and before its answer was journaled

def test_a_request_cut_off_is_sent_again_under_its_key(s):
    """The POST of step 4 is applied and its answer held back: the worker dies with it out.
    The new worker sends it again under the same key; the server answers from the stored
    response; the output is the uninterrupted one."""
    n = 12
    exec_id = start(s.daemon, ["--allow-http", s.keyed.url], "http_steps", s.keyed.url, str(n), "20000000")
    wait_until(lambda: s.keyed.applied_count("GET") >= 2, what="step 3")
    s.keyed.fault("/counter/", "delay:1.5", 1)
    request = kill_in_flight(s.daemon, exec_id, s.keyed)
    assert re.fullmatch(rf"(POST|GET) {re.escape(s.keyed.url)}counter/c \(Idempotency-Key roost-{exec_id}-\d+\)",
                        request), request
    assert finish(s.daemon, exec_id) == expected_steps(n)
    check_exactly_once(s.keyed, exec_id, n)
    assert s.keyed.duplicates >= 1            # the resend, answered from the stored response
    http = inspect(s.daemon, exec_id)["http"]
    assert http["resent"] >= 1 and not http.get("interrupted"), http


def test_a_post_cut_off_where_keys_are_not_honoured_is_never_sent_twice(s):
    """The same, to a destination with idempotency_keys = false: the POST may have been applied
    (it was), so it is not sent again: the guest gets ECANCELED, `roost inspect` names the
    request, and the execution goes on to its end."""
    n = 8
    s.plain.fault("/counter/", "delay:1.5", 1)        # step 0's POST
    exec_id = start(s.daemon, ["--allow-http", s.plain.url], "http_steps", s.plain.url, str(n))
    request = kill_in_flight(s.daemon, exec_id, s.plain)
    assert request == f"POST {s.plain.url}counter/c (Idempotency-Key roost-{exec_id}-1)"
    lines = finish(s.daemon, exec_id).decode().splitlines()
    assert lines[0].startswith(f"step 0 POST error {ECANCELED} interrupted: POST {s.plain.url}counter/c"), lines[0]
    assert lines[1:] == [step_line(i) for i in range(1, n)] + [f"done {n - 1}"]   # (it was applied)
    assert s.plain.applied_by_key()[f"roost-{exec_id}-1"] == 1
    check_exactly_once(s.plain, exec_id, n)
    assert s.plain.applied_count("POST", "/counter/c") == n // 4
    http = inspect(s.daemon, exec_id)["http"]
    assert len(http["interrupted"]) == 1 and "ECANCELED" in http["interrupted"][0], http
    text = s.daemon.roost("inspect", exec_id, check=True).stdout.decode()
    assert re.search(r"^http_requests:.* 1 interrupted,", text, re.M), text
    assert re.search(rf"^http_interrupted:\s+POST {re.escape(s.plain.url)}counter/c "
                     rf"\(Idempotency-Key roost-{exec_id}-1\): ECANCELED$", text, re.M), text
    assert metric(s.daemon, "roost_http_interrupted_total") >= 1


# ---- errors reach the guest as errnos; the daemon keeps serving

def one(s: Setup, *args: str, allow: list[str] | None = None) -> tuple[str, dict]:
    """Run http_one to its end; its stdout and its record."""
    exec_id = start(s.daemon, s.allow() if allow is None else allow, "http_one", *args)
    return finish(s.daemon, exec_id).decode(), inspect(s.daemon, exec_id)


def still_serving(s: Setup) -> None:
    out, _ = one(s, "PUT", s.keyed.url + "kv/alive", "yes")
    assert out == "status 200\nok\n"


def test_a_destination_not_allowed_is_eacces_and_nothing_is_sent(s):
    out, record = one(s, "GET", s.keyed.url + "counter/c", allow=["--allow-http", s.keyed.url + "kv/"])
    assert out.startswith(f"error {EACCES} {s.keyed.url}counter/c is not under the execution's --allow-http"), out
    assert s.keyed.requests == 0
    assert record["http"]["refused"] == 1
    still_serving(s)


def test_a_response_over_the_cap_is_emsgsize(s):
    out, record = one(s, "GET", s.keyed.url + "big/2000000")
    assert out == f"error {EMSGSIZE} response larger than http.max_response_bytes (1048576 bytes)\n"
    assert record["http"]["failed"] == 1
    out, _ = one(s, "GET", s.keyed.url + "big/1000")
    assert out == "status 200\n" + "x" * 1000 + "\n"
    still_serving(s)


def test_a_server_that_never_answers_is_etimedout_within_the_budget(s):
    out, record = one(s, "GET", s.keyed.url + "never")
    assert out == f"error {ETIMEDOUT} no response within {TIMEOUT} s\n"
    took = times.json_unix_seconds(record["finish_time"]) - times.json_unix_seconds(record["start_time"])
    budget = TIMEOUT * (1 + RETRIES)
    assert budget <= took < budget + 3, took
    assert s.keyed.requests == 1 + RETRIES
    still_serving(s)


def test_a_bad_certificate_is_eproto_and_a_good_one_works(s):
    out, record = one(s, "POST", s.tls_bad.url + "counter/t")
    assert out.startswith(f"error {EPROTO} TLS: "), out
    assert "certificate verify failed" in out, out
    assert s.tls_bad.requests == 0 and record["http"]["failed"] == 1
    out, _ = one(s, "POST", s.tls_good.url + "counter/t")
    assert out == "status 200\n1\n"
    assert s.tls_good.applied_count("POST", "/counter/t") == 1
    still_serving(s)


# ---- the CLI

def test_allow_http_outside_the_daemons_prefixes_is_a_one_line_error(s):
    wasm = str(sdk_guest("http_one"))
    outside = s.keyed.url.replace("127.0.0.1", "127.0.0.2")
    for prefix in (outside, "http://127.0.0.1:1/", "ftp://127.0.0.1/"):
        r = s.daemon.roost("run", "--allow-http", prefix, wasm, "--", "GET", prefix)
        err = r.stderr.decode()
        assert r.returncode != 0 and b"Traceback" not in r.stderr, err
        assert len(err.strip().splitlines()) == 1 and "allow_http" in err, err
    assert s.keyed.requests == 0


def test_a_daemon_without_http_allow_refuses_any_allow_http(tmp_path, http_server):
    daemon = Roostd(tmp_path / "data").start()
    try:
        r = daemon.roost("run", "--allow-http", http_server.url, str(sdk_guest("http_one")), "--",
                         "GET", http_server.url + "echo")
        err = r.stderr.decode()
        assert r.returncode != 0 and b"Traceback" not in r.stderr, err
        assert len(err.strip().splitlines()) == 1 and "allows no outbound HTTP" in err, err
        assert http_server.requests == 0
    finally:
        daemon.stop()


# ---- soak

@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_http_soak(s, tmp_path):
    """Soak (`-m slow`): ROOST_HTTP_SOAK_KILLS (200) random kill -9s, of the worker (4 in 5) or
    of roostd, over runs of http_steps; each run's output is the uninterrupted one and each of
    its requests was applied exactly once."""
    total = int(os.environ.get("ROOST_HTTP_SOAK_KILLS", "200"))
    rng = random.Random(SEED + 7)
    daemon = Roostd(tmp_path / "data", config_text=s.config).start()
    done, round_ = 0, 0
    try:
        while done < total:
            s.keyed.reset()
            exec_id = start(daemon, ["--allow-http", s.keyed.url], "http_steps", s.keyed.url,
                            str(STEPS), SPIN, extra=("--checkpoint-every", str(rng.choice([1, 60]))))
            for _ in range(5):
                time.sleep(rng.uniform(0.05, 1.2))
                if rng.random() < 0.2:
                    daemon.kill9()
                    daemon.start()
                    done += 1
                else:
                    done += _kill_worker(daemon, exec_id)
            check_killed_run(s.keyed, daemon, exec_id, finish(daemon, exec_id, timeout=300),
                             SEED + 7 + round_)
            round_ += 1
    finally:
        daemon.stop()
