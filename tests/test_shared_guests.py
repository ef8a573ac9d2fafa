"""Every third-party guest from ../shared/guests runs under `roost run` with exactly the expected
exit code, stdout, stderr and output files of its case.json."""
from __future__ import annotations

import pytest

from shared_guests import Case, cases, guests_dir, sha256

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
    assert got.returncode == 1
    assert b"module rejected" in got.stderr and b"exception" in got.stderr, got.stderr
