"""bench/hostcall: the cost of one WASI host call under roost, against wasmtime's built-in
(Rust) WASI running the same guest in the same run — the machine's own floor for a host call.

    python -m bench.hostcall [--batches N] [--calls N]

The guest times batches of 100 calls with the monotonic clock; median and p99 are over batches.

A second table is measured in this process, without a daemon: a loop of N `random_get` (a
journaled call) in a tiny module, through roost's host functions live (recording into a
JournalSink over a socketpair), replaying the records that run made (streamed chunks of
`journal.pack_many`, as a restored worker gets them), and a plain call (`sched_yield`), against
wasmtime's own WASI running the same loop (best of 7 runs each, in the thread's CPU time).
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
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


LOOPS_WAT = """(module
 (import "wasi_snapshot_preview1" "random_get" (func $rg (param i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "sched_yield" (func $sy (result i32)))
 (memory (export "memory") 1)
 (func (export "rand") (param $n i32) (loop $l (drop (call $rg (i32.const 64) (i32.const 4)))
   (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n))))
 (func (export "yield") (param $n i32) (loop $l (drop (call $sy))
   (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n))))
 (func (export "_start")))"""


def in_process(calls: int, repeat: int = 7) -> dict[str, float]:
    """µs per call: journaled live, replayed, plain, and wasmtime's WASI (see the docstring)."""
    import wasmtime

    from roost.daemon.checkpoint import journal
    from roost.daemon.link.transport import Link
    from roost.daemon.runtime.sinks import JournalSink, Output
    from roost.daemon.runtime.vfs import Vfs
    from roost.daemon.runtime.wasi import WasiHost, initial_state

    eng = wasmtime.Engine()
    module = wasmtime.Module(eng, bytes(wasmtime.wat2wasm(LOOPS_WAT)))

    def instance(replay: journal.Replay, record=None):
        ours, theirs = socket.socketpair()
        threading.Thread(target=lambda: [None for _ in iter(lambda: theirs.recv(1 << 20), b"")],
                         daemon=True).start()
        link = Link(ours)
        sink = JournalSink(link, replay)
        host = WasiHost(initial_state([], [], b"", Vfs()), Output(link, 0, 0, sink), record or sink, replay)
        store, linker = wasmtime.Store(eng), wasmtime.Linker(eng)
        host.define(linker)
        inst = linker.instantiate(store, module)
        memory = inst.exports(store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        host.bind(store, memory)
        return store, inst

    def timed(store, inst, fn: str) -> float:
        f = inst.exports(store)[fn]
        began = time.thread_time()          # this thread's CPU: the machine's other load aside
        f(store, calls)
        return (time.thread_time() - began) / calls * 1e6

    store, inst = instance(journal.Replay())
    live = min(timed(store, inst, "rand") for _ in range(repeat))
    plain = min(timed(store, inst, "yield") for _ in range(repeat))
    records: list[bytes] = []
    store, inst = instance(journal.Replay(), records.append)
    timed(store, inst, "rand")
    replays = []
    for _ in range(repeat):
        replay = journal.Replay(streamed=True)
        for at in range(0, len(records), 6000):
            replay.feed(journal.pack_many(records[at:at + 6000]))
        replay.feed(b"", end=True)
        store, inst = instance(replay)
        replays.append(timed(store, inst, "rand"))
        assert not replay.active
    wasi_store = wasmtime.Store(eng)
    wasi_store.set_wasi(wasmtime.WasiConfig())
    linker = wasmtime.Linker(eng)
    linker.define_wasi()
    wasi = linker.instantiate(wasi_store, module)
    native = min(timed(wasi_store, wasi, "rand") for _ in range(repeat))
    return {"journaled_live_us": live, "journaled_replay_us": min(replays), "plain_us": plain,
            "wasmtime_wasi_random_get_us": native}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=100_000, help="calls per in-process loop")
    args = ap.parse_args()
    inproc = in_process(args.calls)
    native_us = inproc["wasmtime_wasi_random_get_us"]
    print_table("in process: µs per call (best of 7 loops)", ["path", "µs", "vs wasmtime-wasi random_get"],
                [[k[:-3], f"{v:.2f}", f"{v / native_us:.0f}x"] for k, v in inproc.items()])
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
    rows: list[list] = []
    result: dict[str, dict] = {"in_process": inproc}
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
