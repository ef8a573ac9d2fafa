"""bench/first_run: from upload to the first output of a module roostd has never seen.

    .venv/bin/python -m bench.first_run [--guests boolector,flite,quickjs,cpython]

For each shared guest (tests/framework/shared_guests.py; yosys is refused: exceptions) and
CPython 3.12 (tests/.cache/cpython-wasi, fetched by tests/env.sh), a roostd with an empty cache
of its own and its default settings; `roost run` of the module file (upload included), timed to
its first byte of output and to its end. The daemon's log says where the time went: the
original compiled to run unprepared, then the preparation in the background. Target (issue 14):
first output <= 10 s after upload for every guest on this 2-core machine; before, a run waited
for the whole preparation (CPython 202 s, boolector 48 s, QuickJS 36 s, flite 9 s).
"""
from __future__ import annotations

import argparse
import os
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, daemon_env, print_table, write_result
from tests.framework import shared_guests
from tests.framework.harness import Roostd

CPYTHON = ROOT / "tests" / ".cache" / "cpython-wasi" / "python-3.12.0.wasm"


def runs(only: list[str]) -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [(c.name, c) for c in shared_guests.cases() if c.name != "yosys"]
    if CPYTHON.is_file():
        found.append(("cpython", None))
    return [(n, c) for n, c in found if not only or n in only]


def first_output(cmd: list[str], cwd: Path) -> tuple[float | None, float, int]:
    """(seconds to the first stdout byte or None, seconds to the end, exit code)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd)
    assert p.stdout is not None
    first = None
    while True:
        ready, _, _ = select.select([p.stdout], [], [], 900)
        chunk = os.read(p.stdout.fileno(), 65536) if ready else b""
        if chunk and first is None:
            first = time.monotonic() - t0
        if not chunk:
            break
    return first, time.monotonic() - t0, p.wait()


def one(root: Path, name: str, case) -> dict:
    d = Roostd(root / name / "data", env=daemon_env())
    d.cache_dir = root / name / "cache"            # nothing prepared or compiled yet
    d.start()
    try:
        if case is None:
            opts = ["--argv0", "python", str(CPYTHON), "--", "-c", "print('hello from cpython')"]
        else:
            opts, _ = case.prepare(root / name / "run")
        first, end, code = first_output([*d.roost_command(), "run", *opts], root / name)
        log = d.log_path.read_text(errors="replace")
        compiled = re.search(r"compiled module \w+ unprepared in ([\d.]+) s", log)
        prepared = re.search(r"prepared module \w+ \(preempt\) in ([\d.]+) s", log)
        return {"guest": name, "first_output_s": first, "end_s": end, "exit_code": code,
                "plain_compile_s": float(compiled.group(1)) if compiled else None,
                "prepared_in_s": float(prepared.group(1)) if prepared else None}
    finally:
        d.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guests", default="")
    args = ap.parse_args()
    only = [g for g in args.guests.split(",") if g]
    rows, result = [], []
    with tempfile.TemporaryDirectory(prefix="roost-bench-first-") as tmp:
        for name, case in runs(only):
            r = one(Path(tmp), name, case)
            result.append(r)
            first = r["first_output_s"]
            print(r, flush=True)
            rows.append([name, f"{first:.2f}" if first is not None else "- (no stdout)",
                         f"{r['end_s']:.2f}", r["exit_code"],
                         f"{r['plain_compile_s']:.1f}" if r["plain_compile_s"] is not None else "-",
                         f"{r['prepared_in_s']:.1f}" if r["prepared_in_s"] is not None else "not yet",
                         "✓" if (first if first is not None else r["end_s"]) <= 10 else "✗"])
    print_table("upload -> first output, fresh cache, default settings (s)",
                ["guest", "first output", "end", "exit", "compiled unprepared in", "prepared in",
                 "<= 10 s"], rows)
    print(f"\nwritten to {write_result('first_run', {'runs': result})}")


if __name__ == "__main__":
    main()
