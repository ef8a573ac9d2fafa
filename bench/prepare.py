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

import wasmtime

from bench.common import percentile, print_table, write_result  # noqa: I001
from roost.daemon.runtime.capture import Gate, Runner, define_safepoint
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
        start = linker.instantiate(store, module).exports(store)["_start"]
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


def time_to_safepoint(samples: int) -> dict:
    """Request an unwind from another thread while compute_loop runs; from the request to the
    safepoint call, to the guest stopped (unwind completed: `_start` returned), and to the image
    built (`on_unwound` called: linear memory, globals and asyncify stack copied out)."""
    wasm, manifest = tp.prepared(compile_guest("compute_loop"), True)
    module = wasmtime.Module.from_file(ENGINE, str(wasm))
    host = WasiHost(initial_state(["compute_loop", "4000000000"], [], b"", Vfs()), lambda fd, d: None)
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
    host.bind(store, instance.exports(store)["memory"])
    runner = Runner(store, instance, manifest, host, gate)
    plain_entry = runner.entry

    def entry(s: wasmtime.Store) -> None:
        try:
            plain_entry(s)
        finally:
            stopped.append(time.perf_counter())
    runner.entry = entry  # type: ignore[assignment]
    asked: list[float] = []
    to_call: list[float] = []
    to_stopped: list[float] = []
    to_unwound: list[float] = []

    def on_unwound(image) -> bool:  # noqa: ANN001
        to_unwound.append(time.perf_counter() - asked[-1])
        to_stopped.append(stopped[-1] - asked[-1])
        to_call.append(entered[-1] - asked[-1])
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
    out: dict = {"samples": len(to_call), "memory_bytes": runner.memory.data_len(store)}
    for key, values in (("to_safepoint_call", to_call), ("to_stopped", to_stopped),
                        ("to_unwound", to_unwound)):
        out[f"{key}_ms_median"] = statistics.median(values) * 1e3
        out[f"{key}_ms_p99"] = percentile(values, 99) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--guests", default=",".join([*C_GUESTS, *SHARED]))
    ap.add_argument("--prepare-timing", action="store_true",
                    help="also time uncached preparation (minutes)")
    args = ap.parse_args()
    names = [g for g in args.guests.split(",") if g]
    rows = [bench_guest(n, args.runs) for n in names]
    table = [[r["guest"], f"{r['wasm_bytes'] / 1e6:.2f}", f"{r['plain_seconds']:.3f}",
              f"{r['coop_seconds'] / r['plain_seconds']:.2f}x",
              f"{r['pre_seconds'] / r['plain_seconds']:.2f}x",
              f"{r['coop_wasm_bytes'] / r['wasm_bytes']:.2f}x"] for r in rows]
    print_table("prepared vs original under plain wasmtime (min of runs)",
                ["guest", "MB", "plain s", "cooperative", "preemptive", "size coop"], table)
    result: dict = {"runtime": rows}
    tts = time_to_safepoint(200)
    print_table("time to safepoint (compute_loop, request from another thread; ms)",
                ["samples", "memory MB", "call median", "call p99", "stopped median",
                 "stopped p99", "image built median", "image built p99"],
                [[tts["samples"], f"{tts['memory_bytes'] / 1e6:.1f}",
                  *(f"{tts[f'{k}_ms_{q}']:.3f}" for k in ("to_safepoint_call", "to_stopped",
                                                           "to_unwound") for q in ("median", "p99"))]])
    result["time_to_safepoint"] = tts
    if args.prepare_timing:
        prep = prepare_seconds_per_mb(names)
        print_table("preparation (uncached, subprocess)", ["guest", "preemptive", "s", "s/MB"],
                    [[p["guest"], p["preemptive"], f"{p['seconds']:.1f}", f"{p['seconds_per_mb']:.1f}"]
                     for p in prep])
        result["prepare"] = prep
    print("wrote", write_result("prepare", result))


if __name__ == "__main__":
    main()
