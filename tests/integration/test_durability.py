"""Durable executions: `kill -9` of a worker or of roostd at random moments, and the execution
still finishes with exactly the output of an uninterrupted run (journal replay, output dedup).
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import time

import pytest

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, process_alive, wait_until
from tests.framework.native import run_native

SEED = int(os.environ.get("ROOST_TEST_SEED", time.time_ns() % 100000))


def _inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def _stdout_len(daemon: Roostd, exec_id: str) -> int:
    return int(_inspect(daemon, exec_id).get("stdout_bytes", 0))


def _kill_worker(daemon: Roostd, exec_id: str) -> bool:
    """kill -9 the execution's current worker; False if there is none alive right now (between
    a death and its replacement the record still names the dead, maybe unreaped, worker)."""
    record = _inspect(daemon, exec_id)
    pid = int(record.get("worker_pid") or 0)
    if record["state"] != "RUNNING" or not pid or not process_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _check_clock_random(stdout: bytes, lines: int) -> None:
    """Each line exactly once, in order, with times that never go backwards."""
    rows = stdout.decode().splitlines()
    assert [int(r.split()[1]) for r in rows] == list(range(lines))
    elapsed = [int(re.search(r"elapsed_us (\d+)", r).group(1)) for r in rows]
    assert elapsed == sorted(elapsed)


SPIN = ["600", "2500000"]          # about 2 s of computing, a line every 3 ms
CLOCK = ["300", "3000000"]


@pytest.mark.parametrize("run", range(4))
def test_worker_kill9_at_random_moments(roostd, run):
    """kill -9 of the worker three times at random points: byte-identical to a plain run."""
    rng = random.Random(SEED * 10 + run)
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", *SPIN])
    exec_id = roostd.roost("run", "--detach", str(wasm), "--", *SPIN, check=True).stdout.decode().strip()
    done = 0
    for _ in range(3):
        time.sleep(rng.uniform(0.05, 0.6))
        done += _kill_worker(roostd, exec_id)
    assert done >= 1, "the guest ended before any kill: make it longer"
    assert roostd.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    logs = roostd.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr), f"seed {SEED}"
    assert _inspect(roostd, exec_id)["restores"] == done


def test_world_reading_guest_replays_its_journal(roostd):
    rng = random.Random(SEED + 1)
    wasm = compile_guest("clock_random")
    exec_id = roostd.roost("run", "--detach", str(wasm), "--", *CLOCK, check=True).stdout.decode().strip()
    kills = 0
    for _ in range(4):
        time.sleep(rng.uniform(0.05, 0.4))
        kills += _kill_worker(roostd, exec_id)
    assert kills >= 1
    assert roostd.roost("wait", exec_id, timeout=300).returncode == 0
    stdout = roostd.roost("logs", "--stdout", exec_id).stdout
    _check_clock_random(stdout, int(CLOCK[0]))
    record = _inspect(roostd, exec_id)
    assert record["restores"] == kills and record["journal_records"] > 0


@pytest.mark.parametrize("run", range(2))
def test_roostd_kill9_at_random_moments_then_restart(fresh_roostd, run):
    rng = random.Random(SEED * 10 + 5 + run)
    daemon = fresh_roostd.start()
    spin, clock = compile_guest("spin_print"), compile_guest("clock_random")
    native = run_native(spin, ["spin_print", *SPIN])
    a = daemon.roost("run", "--detach", str(spin), "--", *SPIN, check=True).stdout.decode().strip()
    b = daemon.roost("run", "--detach", str(clock), "--", *CLOCK, check=True).stdout.decode().strip()
    for _ in range(3):
        time.sleep(rng.uniform(0.1, 0.6))
        daemon.kill9()
        daemon.start()
    assert daemon.roost("wait", a, timeout=300).returncode == native.exit_code
    assert daemon.roost("wait", b, timeout=300).returncode == 0
    logs = daemon.roost("logs", a)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr), f"seed {SEED}"
    _check_clock_random(daemon.roost("logs", "--stdout", b).stdout, int(CLOCK[0]))


def test_sigterm_then_restart_resumes(fresh_roostd):
    daemon = fresh_roostd.start()
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", *SPIN])
    exec_id = daemon.roost("run", "--detach", str(wasm), "--", *SPIN, check=True).stdout.decode().strip()
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
    assert daemon.stop() == 0
    assert daemon.start().roost("wait", exec_id, timeout=300).returncode == native.exit_code
    assert daemon.roost("logs", "--stdout", exec_id).stdout == native.stdout


@pytest.mark.slow
def test_soak_many_random_kills(fresh_roostd):
    """Soak (skipped by default; `bash tests/run.sh -m slow`): a long guest with periodic
    checkpoints through 40 random kill -9s of its worker and 10 of roostd."""
    rng = random.Random(SEED + 99)
    daemon = fresh_roostd.start()
    wasm = compile_guest("spin_print")
    args = ["3000", "2500000"]
    native = run_native(wasm, ["spin_print", *args])
    exec_id = daemon.roost("run", "--detach", "--checkpoint-every", "0.5", str(wasm), "--", *args,
                           check=True).stdout.decode().strip()
    for i in range(50):
        time.sleep(rng.uniform(0.05, 0.5))
        if i % 5 == 4:
            daemon.kill9()
            daemon.start()
        else:
            _kill_worker(daemon, exec_id)
    assert daemon.roost("wait", exec_id, timeout=900).returncode == native.exit_code
    logs = daemon.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr), f"seed {SEED}"
