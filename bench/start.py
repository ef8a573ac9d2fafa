"""bench/start: the cost of starting an execution — from the StartExecution RPC to the guest's
end — for a guest that prints one line, against the machine's own floors measured in the same
run: a Python interpreter start, and instantiating the same module in-process with wasmtime.
And the daemon's own start: from the exec of `roostd` (empty data dir) to its first
ListExecutions answer, with and without a bytecode cache, with its default spare worker and
without (issue 14: within 0.1 s).

    python -m bench.start [--runs N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

from bench.common import build, daemon, daemon_env, print_table, summary, write_result
from roost.client.api import Client
from tests.integration.test_daemon_start import cached_bytecode_env, start_to_first_list


def time_starts(client: Client, sha: str, runs: int, gap: float = 0.0) -> tuple[list[float], list[float]]:
    """Start, then wait for the end; `gap` seconds between runs lets the spare worker refill."""
    to_running, to_end = [], []
    for _ in range(runs):
        time.sleep(gap)
        t0 = time.perf_counter()
        ex = client.start(sha, argv0="hello")
        t1 = time.perf_counter()
        client.wait(ex.id)
        to_end.append((time.perf_counter() - t0) * 1000)
        to_running.append((t1 - t0) * 1000)
    return to_running, to_end


def floors(wasm: Path, runs: int) -> dict[str, list[float]]:
    py, inst = [], []
    for _ in range(min(runs, 20)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        py.append((time.perf_counter() - t0) * 1000)
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, str(wasm))
    for _ in range(runs):
        t0 = time.perf_counter()
        store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        store.set_wasi(wasmtime.WasiConfig())
        linker.instantiate(store, module)
        inst.append((time.perf_counter() - t0) * 1000)
    return {"python_start_ms": py, "wasmtime_instantiate_ms": inst}


def daemon_starts(runs: int) -> dict[str, list[float]]:
    """roostd's exec -> first ListExecutions answer (ms), per bytecode mode and spare count."""
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cached = {**cached_bytecode_env(Path(tmp)), **daemon_env()}
        uncached = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",     # (and none to read)
                    "PYTHONPYCACHEPREFIX": str(Path(tmp) / "none"), **daemon_env()}
        start_to_first_list(Path(tmp), cached)                   # writes the bytecode cache
        for mode, env in (("bytecode cached", cached), ("no bytecode cache", uncached)):
            for spares in (1, 0):
                extra = f"[workers]\nspares = {spares}\n"
                out[f"roostd_start_to_list_ms ({mode}, {spares} spare)"] = [
                    start_to_first_list(Path(tmp), env, extra).wall * 1000 for _ in range(runs)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    wasm = build("hello")
    with tempfile.TemporaryDirectory() as tmp:
        d = daemon(Path(tmp))
        try:
            client = Client(d.addr)
            sha = client.upload_module(wasm).sha256
            time_starts(client, sha, 3)                      # warm the artifact cache
            running, end = time_starts(client, sha, args.runs, gap=0.5)
            _, burst = time_starts(client, sha, args.runs)      # back to back: spares run out
        finally:
            d.stop()
    base = floors(wasm, args.runs)
    base.update(daemon_starts(min(args.runs, 10)))
    result = {"start_rpc_ms": summary(running), "start_to_end_ms (warm spare)": summary(end),
              "start_to_end_ms (back to back)": summary(burst),
              **{k: summary(v) for k, v in base.items()}}
    rows = [[k, f"{v['median']:.1f}", f"{v['p99']:.1f}"] for k, v in result.items()]
    print_table("starting an execution (ms)", ["measure", "median", "p99"], rows)
    print(f"\nwrote {write_result('start', result)}")


if __name__ == "__main__":
    main()
