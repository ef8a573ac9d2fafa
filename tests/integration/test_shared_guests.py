"""Every third-party guest from ../shared/guests runs under `roost run` with exactly the expected
exit code, stdout, stderr and output files of its case.json."""
from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from roost.client.conventions import EXIT_ERROR
from tests.framework.shared_guests import Case, cases, guests_dir, sha256
from tests.integration.test_durability import SEED

pytestmark = pytest.mark.guests
CASES = cases()


def _ids(c: Case) -> str:
    return c.name


@pytest.mark.skipif(guests_dir() is None, reason="third-party guests not fetched (tests/env.sh)")
@pytest.mark.parametrize("case", [c for c in CASES if not c.spec.get("wasm_exceptions")], ids=_ids)
def test_guest_runs_byte_identically(roostd, case, tmp_path):
    opts, files = case.prepare(tmp_path)
    got = roostd.roost("run", "--name", f"guest-{case.name}", *opts, timeout=600)
    expected = case.spec["expected"]
    assert got.returncode == expected["exit"], got.stderr[-2000:]
    assert sha256(got.stdout) == expected["stdout_sha256"]
    assert sha256(got.stderr) == expected["stderr_sha256"]
    for name, want in expected["files"].items():
        out = tmp_path / "out" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        cp = roostd.roost("cp", f"guest-{case.name}:{files[name]}", str(out))
        assert cp.returncode == 0, cp.stderr
        assert sha256(out.read_bytes()) == want, name


@pytest.mark.skipif(guests_dir() is None, reason="third-party guests not fetched (tests/env.sh)")
@pytest.mark.parametrize("case", [c for c in CASES if c.spec.get("wasm_exceptions")], ids=_ids)
def test_exception_handling_guest_is_refused_with_the_reason(roostd, case, tmp_path):
    opts, _ = case.prepare(tmp_path)
    got = roostd.roost("run", *opts, timeout=600)
    assert got.returncode == EXIT_ERROR
    assert b"module rejected" in got.stderr and b"exception" in got.stderr, got.stderr


@pytest.mark.skipif(guests_dir() is None, reason="third-party guests not fetched (tests/env.sh)")
@pytest.mark.parametrize("case", [c for c in CASES if not c.spec.get("wasm_exceptions")], ids=_ids)
def test_guest_checkpointed_killed_and_restored_mid_run(roostd, case, tmp_path):
    """Checkpointed at a random moment mid-run, its worker killed -9, restored in a fresh
    worker from that checkpoint: the expected output all the same."""
    rng = random.Random(f"{SEED}-{case.name}")
    for attempt in range(4):
        run_dir = tmp_path / f"try{attempt}"
        opts, files = case.prepare(run_dir)
        name = f"mid-{case.name}-{attempt}"
        exec_id = roostd.roost("run", "--detach", "--name", name, *opts, check=True).stdout.decode().strip()
        time.sleep(rng.uniform(0.05, 0.5) / (attempt + 1))
        got = roostd.roost("checkpoint", "--json", exec_id)
        if got.returncode == 0:
            break
        roostd.roost("wait", exec_id)       # it ended first: try again, sooner
    else:
        pytest.fail(f"{case.name} always ended before a checkpoint could be taken")
    report = json.loads(got.stdout)
    assert report["number"] >= 1
    record = json.loads(roostd.roost("inspect", "--json", exec_id).stdout)
    if record["state"] == "RUNNING":
        try:
            os.kill(int(record["worker_pid"]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    waited = roostd.roost("wait", exec_id, timeout=600)
    expected = case.spec["expected"]
    assert waited.returncode == expected["exit"], waited.stderr[-2000:]
    logs = roostd.roost("logs", exec_id)
    assert sha256(logs.stdout) == expected["stdout_sha256"]
    assert sha256(logs.stderr) == expected["stderr_sha256"]
    for fname, want in expected["files"].items():
        out = run_dir / "out" / fname
        out.parent.mkdir(parents=True, exist_ok=True)
        assert roostd.roost("cp", f"{exec_id}:{files[fname]}", str(out)).returncode == 0
        assert sha256(out.read_bytes()) == want, fname
