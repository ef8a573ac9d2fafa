"""bench/safepoint: how fast a running guest can be stopped and captured, through a real roostd.

    python -m bench.safepoint [--checkpoints N]

A pure compute loop (tests/guests/compute_loop.c: no host call for seconds) is checkpointed N
times with `roost checkpoint`'s RPC: time to safepoint (request to guest stopped), pause (guest
stopped while captured), and total (request to checkpoint committed), median and p99; in
preemptive mode (loop polls) and, for contrast, a guest that makes host calls in cooperative mode.
The machine's limit in the same run: memcpy of the guest's memory size.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import daemon, print_table, summary, write_result
from roost.client import times
from roost.client.api import Client
from tests.framework.guestbuild import compile_guest  # noqa: E402


def measure(client: Client, wasm: Path, args: list[str], cooperative: bool, n: int) -> dict:
    sha = client.upload_module(wasm).sha256
    client.prepare_module(sha, cooperative)
    ex = client.start(sha, argv0=wasm.stem, args=args, cooperative=cooperative)
    time.sleep(0.3)
    tts, pause, total, memory = [], [], [], 0
    for _ in range(n):
        r = client.checkpoint(ex.id)
        tts.append(times.seconds_of(r.time_to_safepoint) * 1000)
        pause.append(times.seconds_of(r.pause_duration) * 1000)
        total.append(times.seconds_of(r.total_duration) * 1000)
        memory = r.memory_bytes
        time.sleep(0.02)
    client.kill(ex.id)
    return {"time_to_safepoint_ms": summary(tts), "pause_ms": summary(pause),
            "total_ms": summary(total), "memory_bytes": memory}


def memcpy_ms(size: int) -> float:
    src = bytearray(size)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        bytes(src)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=40)
    args = ap.parse_args()
    loop = compile_guest("compute_loop")
    spin = compile_guest("spin_print")
    with tempfile.TemporaryDirectory() as tmp:
        d = daemon(Path(tmp))
        try:
            client = Client(d.addr)
            result = {
                "compute loop, preemptive": measure(client, loop, ["100000000000"], False, args.checkpoints),
                "host calls, cooperative": measure(client, spin, ["100000000", "200000"], True, args.checkpoints),
            }
        finally:
            d.stop()
    rows = []
    for name, r in result.items():
        r["memcpy_ms"] = memcpy_ms(r["memory_bytes"])
        for key in ("time_to_safepoint_ms", "pause_ms", "total_ms"):
            rows.append([name, key, f"{r[key]['median']:.2f}", f"{r[key]['p99']:.2f}",
                         f"{r['memory_bytes'] >> 20} MiB", f"{r['memcpy_ms']:.2f}"])
    print_table("stopping and capturing a running guest (ms)",
                ["guest", "measure", "median", "p99", "memory", "memcpy of memory"], rows)
    print(f"\nwrote {write_result('safepoint', result)}")


if __name__ == "__main__":
    main()
