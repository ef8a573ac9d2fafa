"""roostd serves its API soon after it starts (issue 14): from the exec of `roostd` with an
empty data dir to the first answer of ListExecutions.

What keeps it short is that nothing on the way to serving imports numpy, zstandard or
wasmtime (`roost.daemon.lazy`, the registry's engine made at first use): the first test
checks exactly that, on any machine; the second times it (wall and roostd's CPU time).

The timed daemons run with a bytecode cache, as an installed roostd does (pip compiles the
package at install), and without spare workers: a spare starts importing wasmtime as roostd
starts, and on a busy 2-core machine its CPU is what roostd's start then waits for
(`bench/start.py` reports the start with the default spare too).
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from roost.client.api import Client
from roost.client.errors import RoostClientError
from tests.framework.harness import BIN, free_port

HEAVY = ("numpy", "zstandard", "wasmtime", "roost.daemon.runtime.wasi")
START_CPU_BOUND_SECONDS = 0.30   # roostd's CPU time by its first answer (median; before: 0.35-0.38)
START_WALL_BOUND_SECONDS = 1.0   # and the wall time (median): what a busy CI host meets


def test_the_serving_path_imports_no_heavy_module():
    """Importing roostd's entry point and its wiring (all that runs before the API serves)
    leaves numpy, zstandard and wasmtime unimported."""
    code = ("import sys; import roost.daemon.main, roost.daemon.wiring; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert got.stdout.split() == []


class Start(NamedTuple):
    wall: float         # seconds from spawning roostd to its first ListExecutions answer
    cpu: float          # roostd's CPU seconds by then (all its threads; not its workers')


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (/proc: clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_to_first_list(tmp: Path, env: dict[str, str], extra_config: str = "") -> Start:
    """From spawning roostd (fresh data dir) to its first ListExecutions answer."""
    port = free_port()
    config = tmp / f"roostd-{port}.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\ncontrol_socket = ""\n'
                      f'metrics_listen = "127.0.0.1:{free_port()}"\nnode_id = "start-{port}"\n'
                      + extra_config)
    log = (tmp / f"roostd-{port}.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "roostd"), "--config", str(config),
                             "--data-dir", str(tmp / f"data-{port}")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for_port(proc, port, deadline=t0 + 30)
        while True:
            with Client(f"127.0.0.1:{port}") as client:
                try:
                    assert client.list(timeout=10) == []
                    return Start(time.perf_counter() - t0, cpu_seconds(proc.pid))
                except RoostClientError:
                    assert time.perf_counter() < t0 + 30, "roostd did not answer in 30 s"
                    time.sleep(0.002)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()


def _wait_for_port(proc: subprocess.Popen, port: int, deadline: float) -> None:
    """Until roostd's port accepts a connection (cheap polls: the client's own CPU would
    otherwise compete with the daemon it times)."""
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, f"roostd exited with {proc.returncode}"
        assert time.perf_counter() < deadline, f"roostd did not listen on {port}"
        time.sleep(0.002)


def cached_bytecode_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


@pytest.mark.serial            # (timed: alone, not beside three test workers)
def test_roostd_answers_list_executions_soon_after_start(tmp_path):
    """Medians of 5 starts. The CPU bound is the sharp one (a busy machine stretches the wall
    time, not the work): 0.18-0.21 s on the 2-core dev machine, 0.31-0.35 s when numpy and
    wasmtime were imported on the way, at any load. The wall time there: 0.19-0.24 s at a load
    of 2, 0.28-0.66 s at a load of 13 (0.31-0.42 s, and 0.5-1.1 s, before)."""
    env = cached_bytecode_env(tmp_path)
    no_spares = "[workers]\nspares = 0\n"
    start_to_first_list(tmp_path, env, no_spares)            # writes the bytecode cache
    starts = [start_to_first_list(tmp_path, env, no_spares) for _ in range(5)]
    shown = [(round(s.wall * 1000), round(s.cpu * 1000)) for s in starts]
    assert statistics.median(s.cpu for s in starts) < START_CPU_BOUND_SECONDS, \
        f"(wall, cpu) ms from start to the first ListExecutions: {shown}"
    assert statistics.median(s.wall for s in starts) < START_WALL_BOUND_SECONDS, \
        f"(wall, cpu) ms from start to the first ListExecutions: {shown}"
