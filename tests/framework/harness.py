"""Real roostd processes for integration tests: loopback ports, temp data dirs, real signals.

Nothing here mocks roost: a `Roostd` is the installed `roostd` entry point in a subprocess, and
`roost()` runs the installed `roost` CLI, exactly as a user would.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).resolve().parent.parent / ".cache" / "artifacts"


# Ports come from a block of its own for each pytest-xdist worker (gw0, gw1, ...), below Linux's
# ephemeral range (32768+) so that no outgoing connection holds one: two workers can then never
# hand out the same port, and a port handed out once in a process is not handed out again (a
# daemon restarted on its port keeps it). Within the block the search starts at a random place,
# so runs beside this one (another checkout's tests) seldom meet it either.
_PORT_BLOCK = 1000
_PORT_BASE = 12000
_handed_out: set[int] = set()


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) % 20 if worker.startswith("gw") and worker[2:].isdigit() else 0


def free_port() -> int:
    """A loopback TCP port that is free now and that no other test worker will hand out."""
    base = _PORT_BASE + _worker_index() * _PORT_BLOCK
    start = random.randrange(_PORT_BLOCK)
    for i in range(_PORT_BLOCK):
        port = base + (start + i) % _PORT_BLOCK
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {base}..{base + _PORT_BLOCK - 1}")


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Roostd:
    # Every daemon a test session started, so a failing test's report can carry their logs.
    started: list["Roostd"] = []

    def __init__(self, data_dir: Path, *extra: str, env: dict | None = None,
                 config_text: str = "", tls: tuple[Path, Path, Path] | None = None) -> None:
        self.data_dir = data_dir
        self.tls = tls               # (ca, cert, key): serve mutual TLS; the CLI uses the same
        self.config_text = config_text
        self.port = free_port()
        self.metrics_port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.wrap: list[str] = []    # a command prefix (e.g. `ip netns exec NS`: a host of its own)
        self.extra = list(extra)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"roostd-{self.port}.log"
        self.auto_node_id = False    # True: no --node-id (TLS always: the certificate names it)
        self.control_socket = ""     # test daemons serve Control on TCP only, unless set
        self.cache_dir = ARTIFACTS   # prepared modules: shared by test daemons unless set

    def config(self) -> Path:
        """The daemon's TOML: prepared-module artifacts go to one cache shared by every test
        daemon (they are keyed by content hash and versions, so sharing is safe and spares a
        preparation per daemon)."""
        path = self.data_dir.parent / f"roostd-{self.port}.toml"
        path.write_text(f'cache_dir = "{self.cache_dir}"\n' + _pinned(self.config_text))
        return path

    def start(self, timeout: float = 60.0) -> "Roostd":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.started_at = time.time()
        if self not in Roostd.started:
            Roostd.started.append(self)
        tls = [] if self.tls is None else [
            "--tls-ca", str(self.tls[0]), "--tls-cert", str(self.tls[1]), "--tls-key", str(self.tls[2])]
        node = [] if self.tls is not None or self.auto_node_id else ["--node-id", self.node_id]
        self.proc = subprocess.Popen(
            [*self.wrap, str(BIN / "roostd"), "--config", str(self.config()),
             "--data-dir", str(self.data_dir), "--listen", self.addr,
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *node,
             "--control-socket", self.control_socket,
             *tls, *self.extra], stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        wait_until(self.serving, timeout, what=f"roostd on {self.addr} to serve (log: {self.log_path})")
        return self

    @property
    def node_id(self) -> str:
        """test-PORT, or under TLS the node its certificate names (roost://peer/NODE)."""
        if self.tls is not None:
            import ssl
            names = ssl._ssl._test_decode_cert(str(self.tls[1])).get("subjectAltName", ())
            return next(v[len("roost://peer/"):] for k, v in names
                        if k == "URI" and v.startswith("roost://peer/"))
        return f"test-{self.port}"

    def channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.addr)
        ca, cert, key = (p.read_bytes() for p in self.tls)
        return grpc.secure_channel(self.addr, grpc.ssl_channel_credentials(ca, key, cert))

    def serving(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"roostd exited with {self.proc.returncode}: {self.log()}")
        try:
            with self.channel() as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def restart(self, timeout: float = 60.0) -> "Roostd":
        """Start again on the same port and data (after stop or kill9)."""
        return self.start(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def roost_command(self) -> list[str]:
        """The CLI's argv up to the subcommand, aimed at this daemon."""
        tls = [] if self.tls is None else [
            "--tls-ca", str(self.tls[0]), "--tls-cert", str(self.tls[1]), "--tls-key", str(self.tls[2])]
        return [str(BIN / "roost"), "--addr", self.addr, *tls]

    def roost(self, *args: str, input: bytes | None = None, timeout: float = 120.0,
              check: bool = False) -> subprocess.CompletedProcess:
        """Run the real CLI against this daemon; stdout/stderr are bytes."""
        tls = [] if self.tls is None else [
            "--tls-ca", str(self.tls[0]), "--tls-cert", str(self.tls[1]), "--tls-key", str(self.tls[2])]
        proc = subprocess.run([str(BIN / "roost"), "--addr", self.addr, *tls, *args], input=input,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"roost {' '.join(args)} -> {proc.returncode}: {proc.stderr!r}")
        return proc

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()


def _pinned(text: str) -> str:
    """Under pytest, unless a test says otherwise, test daemons checkpoint every 60 s (many
    tests count checkpoints, which roostd's default period, 1 s, would make depend on timing)
    and start a module's runs only once it is prepared (tests checkpoint and migrate right
    after `run`; a loaded CI machine prepares even a small guest in more than the 3 s a run
    waits: tests/integration/test_first_run.py runs unprepared). Not under bench/ (no
    pytest): benchmarks measure the defaults."""
    if "PYTEST_CURRENT_TEST" not in os.environ:
        return text
    if "every_seconds" not in text:
        text = _setting(text, "checkpoints", "every_seconds = 60")
    if "run_unprepared" not in text:
        text = _setting(text, "modules", "run_unprepared = false")
    return text


def _setting(text: str, table: str, line: str) -> str:
    """`text` (TOML) with `line` in [table]."""
    if f"[{table}]\n" in text:
        return text.replace(f"[{table}]\n", f"[{table}]\n{line}\n", 1)
    return (text + "\n" if text and not text.endswith("\n") else text) + \
        f"[{table}]\n{line}\n"            # (a table last: always valid TOML)


def stop_all(daemons: list["Roostd"]) -> None:
    """Stop every daemon still running (a fixture's teardown)."""
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def process_alive(pid: int) -> bool:
    """Running, not a zombie awaiting its reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def kill_host(daemon: "Roostd") -> None:
    """kill -9 of roostd and every worker of it, at once."""
    assert daemon.proc is not None
    children = subprocess.run(["pgrep", "-P", str(daemon.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    os.kill(daemon.proc.pid, signal.SIGKILL)
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.proc.wait()


def cluster(root: Path, n: int = 3, tls: list | None = None, config_text: str = "",
            env: dict | None = None) -> list[Roostd]:
    """`n` roostds that name each other as peers (started)."""
    daemons = [Roostd(root / f"node{i}" / "data", config_text=config_text,
                      tls=tls[i] if tls else None, env=env) for i in range(n)]
    for d in daemons:
        d.extra = [a for o in daemons if o is not d for a in ("--peer", o.addr)]
    for d in daemons:
        d.start()
    return daemons


def make_ca(where: Path, name: str) -> tuple[Path, Path]:
    """A throwaway CA: (certificate, key)."""
    where.mkdir(parents=True, exist_ok=True)
    cert, key = where / f"{name}-ca.pem", where / f"{name}-ca.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", f"/CN=roost test CA {name}"], check=True, capture_output=True)
    return cert, key


def make_cert(ca: tuple[Path, Path], where: Path, name: str, role: str = "peer"
              ) -> tuple[Path, Path, Path]:
    """A certificate signed by `ca` for 127.0.0.1, for serving and for calling:
    (ca certificate, certificate, key). `role` "peer": a daemon's, naming node `name`
    (URI roost://peer/NAME); "client": a CLI user's (roost://client/NAME)."""
    key, csr, cert = where / f"{name}.key", where / f"{name}.csr", where / f"{name}.pem"
    ext = where / f"{name}.ext"
    ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost,URI:roost://{role}/{name}\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
                   check=True, capture_output=True)
    return ca[0], cert, key
