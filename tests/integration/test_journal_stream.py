"""Recovery by a long replay: without periodic checkpoints, a worker killed late in a run of
journaled steps is replaced by one that replays the whole journal — streamed to it in many
REPLAY chunks as it goes — and the execution's output is every step exactly once, the sum the
one its steps printed.
"""
from __future__ import annotations

import json
import os
import signal

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until

STEPS = 150_000                  # ~45 bytes a record: a journal of ~25 REPLAY chunks


def _inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def check_steps(stdout: bytes, steps: int) -> None:
    """`step i v` for every i once, in order, then `sum S` with S the sum of the v."""
    lines = stdout.decode().splitlines()
    assert len(lines) == steps + 1, f"{len(lines)} lines for {steps} steps"
    values = []
    for i, line in enumerate(lines[:-1]):
        word, n, v = line.split()
        assert (word, int(n)) == ("step", i), f"line {i}: {line!r}"
        values.append(int(v))
    assert lines[-1] == f"sum {sum(values)}"


def test_long_journal_streams_and_output_is_exactly_once(tmp_path):
    daemon = Roostd(tmp_path / "data", config_text="[checkpoints]\nevery_seconds = 0\n").start()
    try:
        wasm = compile_guest("steps")
        exec_id = daemon.roost("run", "--detach", str(wasm), "--", str(STEPS),
                               check=True).stdout.decode().strip()
        # Late in the run: most of the journal is behind it, nothing checkpointed.
        wait_until(lambda: int(_inspect(daemon, exec_id).get("stdout_bytes", 0)) > STEPS * 8,
                   timeout=120, what="most of the steps")
        record = _inspect(daemon, exec_id)
        assert record["state"] == "RUNNING", "the run ended before the kill: make it longer"
        os.kill(int(record["worker_pid"]), signal.SIGKILL)
        assert daemon.roost("wait", exec_id, timeout=300).returncode == 0
        record = _inspect(daemon, exec_id)
        assert record["restores"] == 1 and record["journal_records"] == STEPS
        check_steps(daemon.roost("logs", "--stdout", exec_id).stdout, STEPS)
    finally:
        daemon.stop()
