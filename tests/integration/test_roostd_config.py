"""roostd's start-up, configuration and signals as an operator meets them (issue 15).

Every configuration mistake is one line on stderr naming the flag or the TOML key as written,
and exit code 2; an address in use is one line naming it, exit code 1; no traceback. SIGHUP
re-reads the config, applies the log level, peers, limits and TLS certificates, says what it
changed, and keeps executions running; a bad file on reload changes nothing. Under journald
the log lines carry sd-daemon priorities and no timestamp of their own.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from roost.client.api import Client
from roost.daemon.node import config as config_mod
from roost.daemon.node import logsetup
from roost.v1 import control_pb2 as pb
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, free_port, make_ca, make_cert, wait_until
from tests.framework.native import run_native

EXIT_USAGE, EXIT_RUNTIME = 2, 1


def roostd(tmp_path: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess:
    """roostd run to its exit (a mistake: at once), on a data dir of its own and no default
    socket or metrics port, with `config` as its TOML file when given."""
    flags = ["--data-dir", str(tmp_path / "data"), "--control-socket", str(tmp_path / "roostd.sock"),
             "--metrics-listen", ""]
    if config is not None:
        path = tmp_path / "roostd.toml"
        path.write_text(config)
        flags += ["--config", str(path)]
    return subprocess.run([str(BIN / "roostd"), *flags, *args], capture_output=True, text=True,
                          timeout=60)


def one_line(proc: subprocess.CompletedProcess, code: int, *named: str) -> str:
    """The single stderr line of a refused start, after checking the exit code and that it
    names every string of `named`."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("roostd: "), lines[0]
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("args, named", [
    (["--listen", "17073"], ["--listen", "17073", "HOST:PORT"]),
    (["--listen", "127.0.0.1:99999"], ["--listen", "65535"]),
    (["--log-level", "foo"], ["--log-level", "foo", "DEBUG"]),
    (["--peer", "7070"], ["--peer", "7070"]),
    (["--etcd", "localhost:2379"], ["--etcd", "http://HOST:PORT"]),
    (["--tls-ca", "/nonexistent/ca.pem"], ["tls.ca", "--tls-cert"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--config", "/nonexistent/roostd.toml"], ["/nonexistent/roostd.toml", "No such file"]),
])
def test_a_flag_mistake_is_one_line_and_exit_2(tmp_path, args, named):
    one_line(roostd(tmp_path, *args), EXIT_USAGE, *named)


@pytest.mark.parametrize("text, named", [
    ("listen = 17073\n", ["listen:", "HOST:PORT", "an integer"]),
    ('listen = "17073"\n', ["listen:", "no host"]),
    ('peers = "127.0.0.1:7070"\n', ["peers:", "expected a list of HOST:PORT strings, got a string"]),
    ('peers = ["127.0.0.1:7070", 7071]\n', ["peers[1]:", "an integer"]),
    ('[limits]\nmemory_bytes = "lots"\n', ["limits.memory_bytes:", "size", "lots"]),
    ('[limits]\nmemory_bytes = 1.5\n', ["limits.memory_bytes:", "size"]),
    ("[limits]\nmemory_bytes = 1024\n", ["limits.memory_bytes:", "65536"]),
    ('[limits]\nmemory_bytes = "8G"\n', ["limits.memory_bytes:", "4294967296"]),
    ('[limits]\nmemroy_bytes = 5\n', ["unknown key limits.memroy_bytes", "did you mean limits.memory_bytes"]),
    ('[cluster]\npeers = ["127.0.0.1:7070"]\n', ["unknown key cluster.peers", "did you mean peers"]),
    ('[checkpoints]\nevery_seconds = "1s"\n', ["checkpoints.every_seconds:", "seconds"]),
    ("[checkpoints]\nevery_seconds = -1\n", ["checkpoints.every_seconds:", "-1"]),
    ('[modules]\nrun_unprepared = "yes"\n', ["modules.run_unprepared:", "true or false"]),
    ('[replication]\nack = "some"\n', ["replication.ack:", "async, one, all"]),
    ("[grpc]\nthreads = 16\n", ["grpc.long_polls", "grpc.threads"]),
    ("limits = 5\n", ["limits:", "table"]),
    ('log_level = "loud"\n', ["log_level:", "loud"]),
    ("listen = \n", ["not valid TOML", "line 1"]),
    ('[http]\nretries = "3"\n', ["http.retries:", "integer"]),
])
def test_a_config_mistake_is_one_line_naming_the_key_and_exit_2(tmp_path, text, named):
    line = one_line(roostd(tmp_path, config=text), EXIT_USAGE, *named)
    assert str(tmp_path / "roostd.toml") in line or "grpc" in line


def test_sizes_take_units_as_the_cli_does(tmp_path):
    path = tmp_path / "roostd.toml"
    path.write_text('[limits]\nmemory_bytes = "256M"\nmax_memory_bytes = "1GiB"\n'
                    'output_bytes = 4096\n')
    cfg = config_mod.load(path, {"control_socket": "x"})
    assert (cfg.memory_limit_bytes, cfg.max_memory_limit_bytes, cfg.output_limit_bytes) == \
        (256 << 20, 1 << 30, 4096)


def test_an_address_in_use_is_one_line_naming_it_and_exit_1(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = "127.0.0.1:%d" % holder.getsockname()[1]
        one_line(roostd(tmp_path, "--listen", address), EXIT_RUNTIME, address, "already in use",
                 "--listen")
        one_line(roostd(tmp_path / "m", "--metrics-listen", address), EXIT_RUNTIME, address,
                 "already in use", "--metrics-listen")


def test_version():
    got = subprocess.run([str(BIN / "roostd"), "--version"], capture_output=True, text=True, timeout=30)
    assert got.returncode == 0 and got.stderr == ""
    assert got.stdout.startswith("roostd ") and len(got.stdout.split()) == 2


def _log_after(daemon: Roostd, mark: int) -> str:
    return daemon.log_path.read_text(errors="replace")[mark:]


def _hup(daemon: Roostd, expect: str) -> str:
    """SIGHUP the daemon; its log from then on once it has a line with `expect`."""
    assert daemon.proc is not None
    mark = len(daemon.log_path.read_text(errors="replace"))
    daemon.proc.send_signal(signal.SIGHUP)
    return wait_until(lambda: (lambda log: log if expect in log else "")(_log_after(daemon, mark)),
                      timeout=20, what=f"{expect!r} in the log after SIGHUP")


def test_sighup_reloads_log_level_peers_and_limits_while_an_execution_runs(tmp_path):
    wasm = compile_guest("spin_print")
    args = ["spin_print", "500", "8000000"]       # (~5 s: it runs through both reloads)
    daemon = Roostd(tmp_path / "data").start()
    try:
        exec_id = daemon.roost("run", "--detach", str(wasm), "--", *args[1:],
                               check=True).stdout.decode().strip()
        client = Client(daemon.addr)
        wait_until(lambda: client.get(exec_id).state == pb.RUNNING, what="the guest running")
        peer = f"127.0.0.1:{free_port()}"        # (nothing there: replication just skips it)
        daemon.config_text = (f'log_level = "debug"\npeers = ["{peer}"]\n'
                              '[limits]\nmemory_bytes = "256M"\n[grpc]\nthreads = 200\n')
        daemon.config()
        log = _hup(daemon, "needs a restart")
        assert "reloaded: log_level INFO -> DEBUG" in log
        assert f"reloaded: peers [] -> ['{peer}']" in log
        assert "reloaded: limits.memory_bytes 2147483648 -> 268435456" in log
        assert "grpc.threads" in log.split("needs a restart")[1].splitlines()[0]
        assert daemon.serving() and client.get(exec_id).state == pb.RUNNING

        daemon.config_text += "[limits]\nbogus = 1\n"      # (a second [limits]: invalid TOML)
        daemon.config()
        log = _hup(daemon, "reload refused")
        assert "the running config is kept" in log and "Traceback" not in log
        assert daemon.serving()

        assert client.get(exec_id).state == pb.RUNNING
        native = run_native(wasm, args)                  # (meanwhile, the guest goes on)
        done = client.wait(exec_id, timeout=300)
        assert (done.state, done.exit_code) == (pb.EXITED, native.exit_code)
        assert daemon.roost("logs", "--stdout", exec_id, check=True).stdout == native.stdout
        assert daemon.proc is not None and daemon.proc.poll() is None
        # the new default memory limit applies to the next execution
        small = daemon.roost("run", "--detach", str(wasm), "--", "1", "1", check=True)
        record = client.wait(small.stdout.decode().strip(), timeout=120)
        assert record.memory_limit_bytes == 256 << 20
    finally:
        assert daemon.stop() == 0


def _served_certificate(address: str, tls: tuple[Path, Path, Path]) -> bytes:
    """The certificate a new TLS connection to `address` is served (DER)."""
    ca, cert, key = tls
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_sighup_rotates_the_tls_certificates_for_new_connections(tmp_path):
    ca = make_ca(tmp_path / "pki", "rot")
    served = make_cert(ca, tmp_path / "pki", "node1")
    client_tls = make_cert(ca, tmp_path / "pki", "admin", role="client")
    daemon = Roostd(tmp_path / "data", tls=served).start()
    try:
        old = _der(served[1])
        assert _served_certificate(daemon.addr, client_tls) == old
        (tmp_path / "next").mkdir()
        fresh = make_cert(ca, tmp_path / "next", "node1")        # (same node, new key)
        shutil.copyfile(fresh[1], served[1])
        shutil.copyfile(fresh[2], served[2])
        _hup(daemon, "reloaded: tls certificates")
        assert _served_certificate(daemon.addr, client_tls) == _der(fresh[1]) != old
        assert daemon.serving()
        daemon.roost("ps", check=True)
    finally:
        assert daemon.stop() == 0


# ---- journald ------------------------------------------------------------------------------

def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("roostd", level, __file__, 1, message, None, None)


def test_journal_lines_carry_priorities_and_no_timestamp(tmp_path, monkeypatch):
    stream = (tmp_path / "journal").open("w")
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        handler = logsetup.configure("DEBUG", stream)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
            handler.handle(_record(level, "two\nlines"))
        stream.flush()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        stream.close()
    lines = (tmp_path / "journal").read_text().splitlines()
    # (each line of a record under its priority: a traceback's lines too)
    assert lines == [line for p in (7, 6, 4, 3, 3) for line in (f"<{p}>roostd: two", f"<{p}>lines")]


def test_other_streams_keep_the_timestamped_format(tmp_path, monkeypatch):
    other = (tmp_path / "other").open("w")
    st = os.fstat(other.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")   # (another file)
    assert not logsetup.is_journal(other)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logsetup.is_journal(other)
    assert not logsetup.is_journal(io.StringIO())
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not logsetup.is_journal(other)
    other.close()
    formatter = logging.Formatter(logsetup.PLAIN_FORMAT)
    assert " INFO roostd: hello" in formatter.format(_record(logging.INFO, "hello"))
