"""A real etcd for tests: one single-member `etcd` process on free loopback ports.

As with `Roostd`, nothing is mocked: the tests talk to the etcd binary on PATH (Debian's
etcd-server, installed by tests/env.sh) over its JSON gateway, the way roostd does (etcd3gw).
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

import etcd3gw

from tests.framework.harness import free_port, wait_until

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: etcd gets SIGKILL when the test process dies, so a test
    run killed from outside (a CI timeout, ^C twice) leaves no etcd behind holding its ports."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Etcd:
    """One etcd member: `start()` returns once it has elected itself leader and serves requests;
    `stop()`, `kill9()` and `restart()` keep the ports and the data dir, as a node restart would."""

    # Every etcd a test session started, so a failing test's report can carry their logs.
    started: ClassVar[list[Etcd]] = []

    def __init__(self, data_dir: Path, name: str = "test-etcd") -> None:
        self.data_dir = data_dir
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()          # clients
        self.peer_port = free_port()     # raft (nobody else joins; etcd needs it all the same)
        self.log_path = data_dir.parent / f"etcd-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        """The client URL, http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("no etcd on PATH (tests/env.sh installs Debian's etcd-server)")
        return [etcd, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", f"{self.name}={self.peer_url}"]

    def start(self, timeout: float = 30.0) -> Etcd:
        """Start the process (fresh data dir or the one a previous run left) and wait until it
        is the leader: before that, writes would only queue up behind the election."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # etcd reads its flags from ETCD_* as well: an operator's environment must not reach it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self.started_at = time.time()
        if self not in Etcd.started:
            Etcd.started.append(self)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        wait_until(self.answering, timeout, interval=0.05, what=f"etcd on {self.url} to serve (log: {self.log_path})")
        return self

    def answering(self) -> bool:
        """Whether the member answers a status request and knows a leader (itself)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"etcd exited with {self.proc.returncode}: {self.log()}")
        request = urllib.request.Request(f"{self.url}/v3/maintenance/status", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=1) as resp:
                status = json.loads(resp.read())
        except (OSError, ValueError):      # refused, reset, timed out, HTTP error, half a body
            return False
        return str(status.get("leader", "0")) != "0"

    def client(self, timeout: float = 10.0) -> etcd3gw.Etcd3Client:
        """An etcd3gw client for this member (a new HTTP session each call)."""
        return etcd3gw.client(host=self.host, port=self.port, timeout=timeout, api_path="/v3/")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: etcd syncs its WAL and exits; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        """SIGKILL and reap: a crash, with whatever the WAL held at that instant."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self, timeout: float = 30.0) -> Etcd:
        """Start again on the same ports and data (after stop or kill9; stops it first if running)."""
        self.stop()
        return self.start(timeout)

    def log(self) -> str:
        """The tail of etcd's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
