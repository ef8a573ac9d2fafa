"""bench/hostcall: the cost of one WASI host call under roost, against wasmtime's built-in
(Rust) WASI running the same guest in the same run — the machine's own floor for a host call.

    python -m bench.hostcall [--batches N]

The guest times batches of 100 calls with the monotonic clock; median and p99 are over batches.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.common import build, daemon, print_table, summary, write_result
from tests.framework.native import run_native


def per_call_ns(stdout: bytes) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for line in stdout.decode().splitlines():
        name, ns = line.split()
        out[name].append(float(ns))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=2000)
    args = ap.parse_args()
    wasm = build("hostcall")
    native = per_call_ns(run_native(wasm, ["hostcall", str(args.batches)]).stdout)
    with tempfile.TemporaryDirectory() as tmp:
        d = daemon(Path(tmp))
        try:
            run = d.roost("run", str(wasm), "--", str(args.batches), timeout=600)
            assert run.returncode == 0, run.stderr
            roost = per_call_ns(run.stdout)
        finally:
            d.stop()
    rows, result = [], {}
    for fn in sorted(roost):
        r, n = summary(roost[fn]), summary(native[fn])
        result[fn] = {"roost_ns": r, "wasmtime_builtin_ns": n}
        rows.append([fn, f"{r['median']/1000:.2f}", f"{r['p99']/1000:.2f}",
                     f"{n['median']/1000:.3f}", f"{r['median']/max(n['median'], 1):.0f}x"])
    print_table("one WASI host call (µs per call, over batches of 100)",
                ["function", "roost median", "roost p99", "wasmtime-wasi median", "ratio"], rows)
    print(f"\nwrote {write_result('hostcall', result)}")


if __name__ == "__main__":
    main()
