"""Prepared modules vs the original under plain wasmtime; preparation time; time-to-safepoint.

    python -m bench.prepare [--runs N] [--guests a,b,...] [--optimize N]

For each guest: runtime (min of N runs of `_start`, compile excluded) of the original module,
the cooperative and the preemptive prepared module, under wasmtime's own WASI; the ratios are
against the original measured in the same run (targets: compiled C <= 1.1x cooperative, <= 1.3x
preemptive; QuickJS aim <= 1.5x). Preparation seconds per MB of input. Then time from
`Gate.request_unwind()` (another thread) to the guest being unwound, on a pure compute loop.
Prepared modules come from the test cache (tests/.cache/prepared), so a second run is quick.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

import wasmtime

from bench.common import percentile, print_table, write_result  # noqa: I001
from roost.daemon.modules.prepare import prepare
from roost.daemon.runtime.capture import Gate, Runner, define_safepoint, function_name
from roost.daemon.runtime.vfs import Vfs
from roost.daemon.runtime.wasi import WasiHost, initial_state
from tests.framework.guestbuild import compile_guest
from tests.runtime import test_prepare as tp

ENGINE = wasmtime.Engine()
C_GUESTS = {"cp_bench_cpu": ["cp_bench_cpu", "3"], "compute_loop": ["compute_loop", "300000000"]}
SHARED = ("boolector", "quickjs", "flite")


def time_start(module: wasmtime.Module, argv: list[str], env: dict, stdin: bytes,
               preopens: list[tuple[Path, str]]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        t = Path(tmp)
        cfg = wasmtime.WasiConfig()
        cfg.argv = argv
        cfg.env = [[k, v] for k, v in env.items()]
        (t / "in").write_bytes(stdin)
        cfg.stdin_file, cfg.stdout_file, cfg.stderr_file = str(t / "in"), str(t / "out"), str(t / "err")
        for host, guest in preopens:
            cfg.preopen_dir(str(host), guest)
        store = wasmtime.Store(ENGINE)
        store.set_wasi(cfg)
        linker = wasmtime.Linker(ENGINE)
        linker.define_wasi()
        linker.define_func("roost", "safepoint", wasmtime.FuncType([], []), lambda: None)
        start = cast(wasmtime.Func, linker.instantiate(store, module).exports(store)["_start"])
        began = time.perf_counter()
        try:
            start(store)
        except wasmtime.ExitTrap:
            pass
        return time.perf_counter() - began


def guest_inputs(name: str, work: Path) -> tuple[Path, list[str], dict, bytes, list]:
    if name in C_GUESTS:
        return compile_guest(name), C_GUESTS[name], {}, b"", []
    case = tp.shared_case(name)
    argv, env, stdin, preopens = tp.case_layout(case, work)
    return case.wasm, argv, env, stdin, preopens


def bench_guest(name: str, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        src, argv, env, stdin, preopens = guest_inputs(name, Path(tmp) / "work")
        row: dict = {"guest": name, "wasm_bytes": src.stat().st_size}
        variants = {"plain": src}
        for mode, pre in (("coop", False), ("pre", True)):
            began = time.perf_counter()
            variants[mode], manifest = tp.prepared(src, pre)
            row[f"{mode}_prepare_seconds_if_uncached"] = time.perf_counter() - began
            row[f"{mode}_wasm_bytes"] = variants[mode].stat().st_size
            row[f"{mode}_loops_real"] = manifest["loops_polled"] - manifest.get("loops_noted", 0)
            row[f"{mode}_loops_noted"] = manifest.get("loops_noted", 0)
        for label, path in variants.items():
            module = wasmtime.Module.from_file(ENGINE, str(path))
            row[f"{label}_seconds"] = min(time_start(module, argv, env, stdin, preopens)
                                          for _ in range(runs))
        return row


def prepare_seconds_per_mb(names: list[str]) -> list[dict]:
    """Uncached preparation (both modes) of each guest, seconds per MB of input wasm."""
    from roost.daemon.modules.prepare import prepare
    out = []
    for name in names:
        src = guest_inputs(name, Path(tempfile.mkdtemp()) / "w")[0]
        data = src.read_bytes()
        for pre in (False, True):
            began = time.perf_counter()
            prepare(data, pre)
            took = time.perf_counter() - began
            out.append({"guest": name, "preemptive": pre, "seconds": took,
                        "seconds_per_mb": took / (len(data) / 1e6)})
    return out


BUDGET_SECONDS = 0.010        # a request that waited longer names a function to instrument


def time_to_safepoint(samples: int, wasm: Path, manifest: dict, argv: list[str]) -> dict:
    """Request an unwind from another thread while the guest runs; from the request to the
    safepoint call, to the guest stopped (unwind completed: `_start` returned), and to the image
    built (`on_unwound` called: linear memory, globals and asyncify stack copied out). Also the
    functions whose note-only polls held a request longer than BUDGET_SECONDS (`slow_functions`:
    what roost would instrument at the next preparation)."""
    module = wasmtime.Module.from_file(ENGINE, str(wasm))
    host = WasiHost(initial_state(argv, [], b"", Vfs()), lambda fd, d: None)
    store = wasmtime.Store(ENGINE)
    linker = wasmtime.Linker(ENGINE)
    host.define(linker)
    gate = Gate()
    entered: list[float] = []
    stopped: list[float] = []
    plain_safepoint = gate.safepoint

    def safepoint() -> None:
        entered.append(time.perf_counter())
        plain_safepoint()
    gate.safepoint = safepoint  # type: ignore[method-assign]
    define_safepoint(linker, gate)
    instance = linker.instantiate(store, module)
    host.bind(store, cast(wasmtime.Memory, instance.exports(store)["memory"]))
    runner = Runner(store, instance, manifest, host, gate)
    plain_enter = runner._enter         # what `Runner.run` calls: `_start` (a `_DirectCall`)

    def enter() -> None:
        try:
            plain_enter()
        finally:
            stopped.append(time.perf_counter())
    runner._enter = enter  # type: ignore[assignment,method-assign]
    asked: list[float] = []
    to_call: list[float] = []
    to_stopped: list[float] = []
    to_unwound: list[float] = []
    slow: dict[str, int] = {}

    def on_unwound(image) -> bool:  # noqa: ANN001
        to_unwound.append(time.perf_counter() - asked[-1])
        to_stopped.append(stopped[-1] - asked[-1])
        note = runner.control.take_note()
        if note is not None and to_stopped[-1] > BUDGET_SECONDS:
            name = function_name(manifest, note)
            slow[name] = slow.get(name, 0) + 1
        # A host call can be the safepoint too (no `roost.safepoint` call after the request).
        reached = entered[-1] if entered and entered[-1] >= asked[-1] else stopped[-1]
        to_call.append(reached - asked[-1])
        return len(to_unwound) < samples

    def ask() -> None:
        while len(to_unwound) < samples:
            n = len(to_unwound)
            time.sleep(0.005)
            asked.append(time.perf_counter())
            gate.request_unwind()
            deadline = time.time() + 5
            while len(to_unwound) == n and time.time() < deadline:
                time.sleep(0.0005)
    threading.Thread(target=ask, daemon=True).start()
    runner.run(on_unwound)
    out: dict = {"samples": len(to_call), "memory_bytes": runner.memory.data_len(store),
                 "slow_functions": slow}
    for key, values in (("to_safepoint_call", to_call), ("to_stopped", to_stopped),
                        ("to_unwound", to_unwound)):
        out[f"{key}_ms_median"] = statistics.median(values) * 1e3
        out[f"{key}_ms_p99"] = percentile(values, 99) * 1e3
    return out


def safepoint_cases(samples: int) -> dict:
    """Time to safepoint on compute_loop (polls in `main`), and on leaf_loop (a call-free leaf of
    ~40 ms, so its polls only note) before and after one adaptation: preparing it again with the
    functions that held a request past the budget instrumented."""
    out = {}
    loop, loop_manifest = tp.prepared(compile_guest("compute_loop"), True)
    out["compute_loop"] = time_to_safepoint(samples, loop, loop_manifest,
                                            ["compute_loop", "4000000000"])
    leaf_src = compile_guest("leaf_loop")
    leaf, leaf_manifest = tp.prepared(leaf_src, True)
    argv = ["leaf_loop", "100000", "15000000"]
    out["leaf_loop"] = time_to_safepoint(samples, leaf, leaf_manifest, argv)
    slow = set(out["leaf_loop"]["slow_functions"])
    with tempfile.TemporaryDirectory(prefix="bench-adapted-") as tmp:
        pm = prepare(leaf_src.read_bytes(), True, instrument=slow)
        adapted = Path(tmp) / "leaf_loop.wasm"
        adapted.write_bytes(pm.wasm)
        out["leaf_loop adapted"] = time_to_safepoint(samples, adapted, pm.manifest(), argv)
    out["leaf_loop adapted"]["instrumented"] = sorted(slow)
    print_table("time to safepoint (request from another thread; ms)",
                ["guest", "samples", "call median", "call p99", "stopped median", "stopped p99",
                 "image built median", "image built p99", "held > budget by"],
                [[name, t["samples"],
                  *(f"{t[f'{k}_ms_{q}']:.3f}" for k in ("to_safepoint_call", "to_stopped",
                                                         "to_unwound") for q in ("median", "p99")),
                  ",".join(f"{f}:{n}" for f, n in t["slow_functions"].items()) or "-"]
                 for name, t in out.items()])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--guests", default=",".join([*C_GUESTS, *SHARED]))
    ap.add_argument("--samples", type=int, default=200, help="time-to-safepoint requests per case")
    ap.add_argument("--prepare-timing", action="store_true",
                    help="also time uncached preparation (minutes)")
    args = ap.parse_args()
    names = [g for g in args.guests.split(",") if g]
    rows = [bench_guest(n, args.runs) for n in names]
    table = [[r["guest"], f"{r['wasm_bytes'] / 1e6:.2f}", f"{r['plain_seconds']:.3f}",
              f"{r['coop_seconds'] / r['plain_seconds']:.2f}x",
              f"{r['pre_seconds'] / r['plain_seconds']:.2f}x",
              f"{r['coop_wasm_bytes'] / r['wasm_bytes']:.2f}x",
              f"{r['pre_loops_real']}/{r['pre_loops_noted']}",
              f"{r['coop_prepare_seconds_if_uncached']:.1f}/"
              f"{r['pre_prepare_seconds_if_uncached']:.1f}"] for r in rows]
    print_table("prepared vs original under plain wasmtime (min of runs)",
                ["guest", "MB", "plain s", "cooperative", "preemptive", "size coop",
                 "polls real/noted", "prepare s coop/pre (0 = cached)"], table)
    result: dict = {"runtime": rows, "time_to_safepoint": safepoint_cases(args.samples)}
    if args.prepare_timing:
        prep = prepare_seconds_per_mb(names)
        print_table("preparation (uncached, subprocess)", ["guest", "preemptive", "s", "s/MB"],
                    [[p["guest"], p["preemptive"], f"{p['seconds']:.1f}", f"{p['seconds_per_mb']:.1f}"]
                     for p in prep])
        result["prepare"] = prep
    print("wrote", write_result("prepare", result))


if __name__ == "__main__":
    main()
