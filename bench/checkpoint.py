"""bench/checkpoint: incremental dirty-page checkpoints through a real roostd, against the
machine's limits measured in the same run.

    .venv/bin/python -m bench.checkpoint [--quick] [--sizes 64,512,2048] [--rounds N]

A guest (bench/guests/dirtier.c) fills M MiB, then each round writes one byte into a set of
pages — a fraction of memory, scattered single pages or runs of 64 — prints "round K" and stays
quiet for 0.3 s + 3 ms per dirty MiB: long enough that its next round does not run during the
checkpoint's background write (each first write to a page after a checkpoint is a write-protect
fault, a few us of the guest's CPU: a guest dirtying 2 GiB takes a core for a second, and then
the compression gets only the other one; that is the guest's load, not the checkpoint's). For
each size (64 MiB, 512 MiB, 2 GiB) × fraction (0.1 %, 1 %, 10 %, 100 %) × pattern the bench takes the
first (full) checkpoint, then for a few rounds waits for a fresh "round K" line and calls the
Checkpoint RPC: pause (guest stopped), end-to-end (request to committed = total_seconds), stored
bytes, MB/s = dirty bytes / end-to-end; medians over the rounds. The worker's manifest of each
checkpoint (read from the daemon's LMDB, read-only) adds where the time went: dirty_pages,
waited_seconds, compress_seconds; what is left of end-to-end after time to safepoint, pause and
compression is the send to the daemon and its LMDB commit.

Each case first takes --warmup incremental checkpoints it does not count: the store's steady
state, in which pages freed by collecting old checkpoints are reused, starts at the third (before
it, every write grows the file, and on this VM a page of fresh memory or file costs ~10 us of
CPU). Machine limits, same run: memcpy GB/s (a buffer the size of the dirty set, and 256 MiB),
zstd level-1 MB/s on pages like the guest's in 64 KiB batches, LMDB write MB/s (one transaction
of 256 KiB values — the size of roost's page frames — committed with sync, into pages a
previous write freed; the rate growing the file is shown too), the kernel's walk of the page tables (one PAGEMAP_SCAN of
a populated, write-protected, clean memory of each size: what any pause must spend to learn
that nothing else was written), and a full-snapshot baseline per size (copy, compress and
write all memory, measured).

Targets per row: pause <= 1 ms + dirty bytes / memcpy bandwidth (+ 0.5 us per page when
scattered); end-to-end throughput >= 70 % of min(zstd, LMDB), judged where the dirty set is at
least 16 MiB (below, end-to-end is the fixed latency of reaching a safepoint and an fsynced
commit, a few ms, and MB/s says nothing about throughput: shown, not judged); at 1 % dirty,
>= 20x faster than the full snapshot of that size (the issue's target is the 1 GiB size: a
1 GiB 1 % row is added to the default grid).
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import random
import re
import statistics
import struct
import tempfile
import threading
import time
from pathlib import Path

import lmdb
import zstandard

from bench.common import build, daemon, print_table, write_result
from roost.client import times
from roost.client.api import Client
from roost.daemon.checkpoint import dirty
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store

PAGE = 4096
MiB = 1 << 20
FRACTIONS = (0.001, 0.01, 0.1, 1.0)
PATTERNS = ("scattered", "runs")
RUN_PAGES = 64
QUIET_MS = 300
ZSTD_BATCH = 64 << 10
LMDB_VALUE = 256 << 10
ROUND_RE = re.compile(rb"^round (\d+)")
BIG = 2048
THROUGHPUT_FLOOR_BYTES = 16 << 20    # below this, end-to-end is latency, not throughput (see evaluate)


# ---------------------------------------------------------------- pages like the guest's

def pattern_bytes(size: int, seed: int = 1) -> bytearray:
    """`size` bytes like the dirtier's pages: the guest masks xorshift words with
    0x00FF00FF00FF00FF (little-endian: bytes 0, 2, 4, 6 random, the others zero). A 64 MiB
    pool of fresh random data is tiled (zstd level 1 never sees across a 64 KiB batch)."""
    pool_size = min(size, 64 * MiB)
    pool = bytearray(pool_size)
    pool[0::2] = random.Random(seed).randbytes(pool_size // 2)
    if pool_size == size:
        return pool
    out = bytearray(size)
    for off in range(0, size, pool_size):
        n = min(pool_size, size - off)
        out[off:off + n] = pool[:n] if n < pool_size else pool
    return out


# ---------------------------------------------------------------- machine limits

def memcpy_gbps(size: int, repeat: int = 5) -> float:
    """Pure memcpy bandwidth (both buffers touched first: no page faults in the timing)."""
    size = max(size, PAGE)
    src = ctypes.create_string_buffer(size)
    dst = ctypes.create_string_buffer(size)
    ctypes.memset(src, 0x5A, size)
    ctypes.memmove(dst, src, size)
    reps = repeat if size >= 64 * MiB else max(repeat, int(64 * MiB / size))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            ctypes.memmove(dst, src, size)
        best = min(best, (time.perf_counter() - t0) / reps)
    return size / best / 1e9


def zstd_mbps(data: bytes | bytearray, repeat: int = 3) -> tuple[float, float]:
    """zstd level 1, one call per 64 KiB batch: (input MB/s, compressed/input ratio)."""
    view = memoryview(data)
    compressor = zstandard.ZstdCompressor(level=1)
    best, out = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = 0
        for off in range(0, len(view), ZSTD_BATCH):
            out += len(compressor.compress(view[off:off + ZSTD_BATCH]))
        best = min(best, time.perf_counter() - t0)
    return len(data) / best / 1e6, out / len(data)


def scan_ms(size: int, repeat: int = 5) -> float:
    """One PAGEMAP_SCAN (the dirty tracker's collect) of a populated, write-protected, clean
    memory of `size` bytes: the page-table walk every pause pays. NaN without uffd-wp."""
    if dirty.probe() is not None:
        return float("nan")
    region = mmap.mmap(-1, size)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    ctypes.memset(base, 1, size)
    tracker = dirty.UffdWpTracker()
    try:
        tracker.start(base, size)
        tracker.collect_runs(size)
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            tracker.collect_runs(size)
            samples.append(time.perf_counter() - t0)
    finally:
        tracker.close()
        del base
        region.close()
    return statistics.median(samples) * 1e3


def lmdb_write(path: Path, values: list[bytes], reuse: bool = False) -> float:
    """Seconds to write `values` (one transaction, committed with sync) into a fresh env; with
    `reuse`, into pages a first write of the same size freed (a daemon's steady state: the
    garbage of old checkpoints is reused, the file does not grow)."""
    total = sum(len(v) for v in values)
    env = lmdb.open(str(path), map_size=max(4 * total, 64 * MiB), sync=True, metasync=True)
    try:
        if reuse:
            _put_all(env, values, b"a")
            with env.begin(write=True) as txn:
                for i in range(len(values)):
                    txn.delete(b"a" + struct.pack(">Q", i))
        t0 = time.perf_counter()
        _put_all(env, values, b"b")
        return time.perf_counter() - t0
    finally:
        env.close()


def _put_all(env, values: list[bytes], prefix: bytes) -> None:
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(prefix + struct.pack(">Q", i), v)


def lmdb_mbps(tmp: Path, reuse: bool, size: int = 256 * MiB, repeat: int = 2) -> float:
    """LMDB write MB/s with values the size of roost's page frames (up to 64 pages,
    compressed: 256 KiB of random bytes is the upper end)."""
    chunk = random.Random(2).randbytes(LMDB_VALUE)
    values = [chunk] * (size // LMDB_VALUE)
    best = float("inf")
    for k in range(repeat):
        best = min(best, lmdb_write(tmp / f"lmdb-limit-{int(reuse)}-{k}", values, reuse))
    return size / best / 1e6


def full_snapshot(tmp: Path, size: int) -> dict:
    """The baseline: copy all memory, compress it (level 1, 64 KiB batches), write it to LMDB."""
    memory = pattern_bytes(size, seed=3)
    copy = bytearray(size)                   # the staging buffer, touched: a pure memcpy
    copy[::PAGE] = bytes(size // PAGE)
    t0 = time.perf_counter()
    ctypes.memmove((ctypes.c_char * size).from_buffer(copy), (ctypes.c_char * size).from_buffer(memory), size)
    t1 = time.perf_counter()
    compressor = zstandard.ZstdCompressor(level=1)
    view = memoryview(copy)
    frames = [compressor.compress(view[off:off + ZSTD_BATCH]) for off in range(0, size, ZSTD_BATCH)]
    t2 = time.perf_counter()
    del view, copy, memory
    write = lmdb_write(tmp / f"full-{size}", frames)
    stored = sum(len(f) for f in frames)
    return {"copy_seconds": t1 - t0, "compress_seconds": t2 - t1, "write_seconds": write,
            "seconds": (t1 - t0) + (t2 - t1) + write, "stored_bytes": stored}


# ---------------------------------------------------------------- the guest through roostd

class Rounds:
    """Follows the execution's stdout: when each "round K" line arrived."""

    def __init__(self, client: Client, exec_id: str) -> None:
        self.seen: list[tuple[int, float]] = []
        self.text = b""
        self.ended = False
        self.cond = threading.Condition()
        self._thread = threading.Thread(target=self._follow, args=(client, exec_id), daemon=True)
        self._thread.start()

    def _follow(self, client: Client, exec_id: str) -> None:
        buf = b""
        try:
            for chunk in client.logs(exec_id, follow=True):
                buf += chunk.data
                *lines, buf = buf.split(b"\n")
                now = time.monotonic()
                with self.cond:
                    for line in lines:
                        self.text = (self.text + line + b"\n")[-4000:]
                        m = ROUND_RE.match(line)
                        if m:
                            self.seen.append((int(m.group(1)), now))
                    self.cond.notify_all()
        except Exception:     # the stream ends with the execution (killed)
            pass
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def wait_fresh(self, after: float, timeout: float) -> int:
        """The number of the first round line that arrived after `after` (monotonic)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                fresh = [k for k, at in self.seen if at > after]
                if fresh:
                    return fresh[0]
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    raise RuntimeError(f"no fresh round line (ended={self.ended}); output:\n"
                                       f"{self.text.decode(errors='replace')}")
                self.cond.wait(left)


class Manifests:
    """The daemon's checkpoint manifests (the worker's own fields), read through a read-only
    view of its store while it runs."""

    def __init__(self, data_dir: Path) -> None:
        self.pages = PageStore(Store(data_dir / "store", 256 << 30, readonly=True))

    def get(self, exec_id: str, number: int) -> dict:
        """The manifest as stored: one flat object, the worker's stats with it."""
        checkpoint = self.pages.checkpoint(exec_id, number)
        return checkpoint[0].to_dict(checkpoint[1]) if checkpoint is not None else {}


def quiet_ms(mib: int, fraction: float) -> int:
    """The guest's quiet time between rounds (see the docstring)."""
    return QUIET_MS + int(3 * mib * fraction)


def dirty_pages_of(mib: int, fraction: float) -> int:
    pages = mib * MiB // PAGE
    return min(pages, max(1, int(pages * fraction + 0.5)))


def one_checkpoint(client: Client, manifests: Manifests, exec_id: str) -> dict:
    r = client.checkpoint(exec_id, timeout=600)
    m = manifests.get(exec_id, r.number)
    return {"number": r.number, "pause_ms": times.seconds_of(r.pause_duration) * 1e3,
            "tts_ms": times.seconds_of(r.time_to_safepoint) * 1e3, "total_ms": times.seconds_of(r.total_duration) * 1e3,
            "memory_bytes": r.memory_bytes, "stored_bytes": r.stored_bytes,
            "dirty_pages": m.get("dirty_pages"), "waited_ms": m.get("waited_seconds", 0) * 1e3,
            "compress_ms": m.get("compress_seconds", 0) * 1e3, "frames": m.get("frames"),
            "stage_ms": m.get("stage_seconds", 0) * 1e3, "precopy_ms": m.get("precopy_seconds", 0) * 1e3,
            "precopied_pages": m.get("precopied_pages"), "pause_pages": m.get("pause_pages"),
            "compress_wait_ms": m.get("compress_wait_seconds", 0) * 1e3,
            "send_wait_ms": m.get("send_wait_seconds", 0) * 1e3, "drain_ms": m.get("drain_seconds", 0) * 1e3,
            "map_bytes": m.get("map_bytes"), "tracker": m.get("tracker")}


def run_case(client: Client, manifests: Manifests, sha: str, wasm: Path, mib: int,
             fraction: float, pattern: str, rounds: int, warmup: int) -> dict:
    ex = client.start(sha, argv0=wasm.stem,
                      args=[str(mib), repr(fraction), pattern, "0", str(RUN_PAGES),
                            str(quiet_ms(mib, fraction))],
                      memory_limit_bytes=3 << 30, checkpoint_every_seconds=3600)
    follow = Rounds(client, ex.id)
    try:
        follow.wait_fresh(0.0, timeout=120)                       # round 0: all pages written
        full = one_checkpoint(client, manifests, ex.id)
        samples = []
        for _ in range(warmup + rounds):
            follow.wait_fresh(time.monotonic(), timeout=120)
            samples.append(one_checkpoint(client, manifests, ex.id))
        warm, samples = samples[:warmup], samples[warmup:]
    finally:
        try:
            client.kill(ex.id)
        except Exception:
            pass
    med = {key: statistics.median(s[key] for s in samples)
           for key in ("pause_ms", "tts_ms", "total_ms", "stored_bytes", "waited_ms", "compress_ms",
                       "stage_ms", "precopy_ms")}
    return {"size_mib": mib, "fraction": fraction, "pattern": pattern,
            "expected_dirty_pages": dirty_pages_of(mib, fraction),
            "dirty_pages": [s["dirty_pages"] for s in samples], "median": med,
            "full_checkpoint": full, "warmup": warm, "samples": samples}


def restore_case(client: Client, sha: str, wasm: Path, mib: int, fill: float) -> dict:
    """Checkpoint a guest whose memory has `fill` of its pages non-zero, pause it (its worker
    exits) and resume it: the new worker restores it from the store. The daemon's own
    measurement (inspect's restore_duration: page map, frames, memory, host state)."""
    ex = client.start(sha, argv0=wasm.stem, args=[str(mib), "0.001", "runs", "0", str(RUN_PAGES),
                                                   str(QUIET_MS), repr(fill)],
                      memory_limit_bytes=3 << 30, checkpoint_every_seconds=3600)
    follow = Rounds(client, ex.id)
    try:
        follow.wait_fresh(0.0, timeout=120)
        client.pause(ex.id)
        client.resume(ex.id)
        deadline = time.monotonic() + 120
        while not client.get(ex.id).HasField("restore_duration") and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"size_mib": mib, "fill": fill, "restore_ms": times.seconds_of(client.get(ex.id).restore_duration) * 1e3}
    finally:
        try:
            client.kill(ex.id)
        except Exception:
            pass


# ---------------------------------------------------------------- targets and the table

def evaluate(case: dict, limits: dict) -> dict:
    pages = case["expected_dirty_pages"]
    dirty_bytes = pages * PAGE
    med = case["median"]
    bw = limits["memcpy_gbps_by_bytes"][str(dirty_bytes)]
    pause_target = 1.0 + dirty_bytes / (bw * 1e9) * 1e3
    if case["pattern"] == "scattered":
        pause_target += pages * 0.5e-3
    mbps = dirty_bytes / (med["total_ms"] / 1e3) / 1e6
    floor = 0.7 * min(limits["zstd_mbps"], limits["lmdb_mbps"])
    judged = dirty_bytes >= THROUGHPUT_FLOOR_BYTES
    out = {"dirty_bytes": dirty_bytes, "pause_target_ms": pause_target,
           "pause_ok": med["pause_ms"] <= pause_target, "mbps": mbps, "mbps_target": floor,
           "mbps_judged": judged, "mbps_ok": mbps >= floor if judged else None}
    if abs(case["fraction"] - 0.01) < 1e-9:
        full_ms = limits["full_snapshot"][str(case["size_mib"])]["seconds"] * 1e3
        out["speedup_vs_full"] = full_ms / med["total_ms"]
        # judged at 1 GiB and up, as the issue sets it; smaller memories are shown
        out["speedup_ok"] = out["speedup_vs_full"] >= 20 if case["size_mib"] >= 1024 else None
    return out


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def mark(ok: bool | None) -> str:
    return "-" if ok is None else "✓" if ok else "✗"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB and 512 MiB only")
    ap.add_argument("--sizes", help="comma-separated MiB (default 64,512,2016 + a 1 GiB 1%% row)")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--rounds", type=int, default=5, help="incremental checkpoints per case")
    ap.add_argument("--big-rounds", type=int, default=3, help="... for sizes of 1 GiB and more")
    ap.add_argument("--warmup", type=int, default=2,
                    help="incremental checkpoints before measuring (the store reaches its steady "
                         "state: from the third on, pages old checkpoints freed are reused)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [64, 512] if args.quick else [64, 512, BIG]
    fractions = [float(f) for f in args.fractions.split(",")]
    patterns = args.patterns.split(",")
    cases = [(m, f, p) for m in sizes for f in fractions for p in patterns]
    if not args.sizes and not args.quick and 0.01 in fractions:
        cases += [(1024, 0.01, p) for p in patterns]          # the 1 GiB, 1 % target
    began = time.monotonic()
    wasm = build("dirtier")

    with tempfile.TemporaryDirectory(prefix="roost-bench-ckpt-") as tmp_name:
        tmp = Path(tmp_name)
        # ---- machine limits
        print("measuring the machine's limits ...", flush=True)
        sample = pattern_bytes(64 * MiB, seed=4)
        zstd, ratio = zstd_mbps(sample)
        del sample
        dirty_sizes = sorted({dirty_pages_of(m, f) * PAGE for m, f, _ in cases})
        limits = {"memcpy_gbps_256MiB": memcpy_gbps(256 * MiB),
                  "memcpy_gbps_by_bytes": {str(n): memcpy_gbps(n) for n in dirty_sizes},
                  "zstd_mbps": zstd, "zstd_ratio": ratio, "lmdb_mbps": lmdb_mbps(tmp, reuse=True),
                  "lmdb_grow_mbps": lmdb_mbps(tmp, reuse=False),
                  "scan_ms": {str(m): scan_ms(m * MiB) for m in sorted({m for m, _, _ in cases})},
                  "full_snapshot": {}}
        for mib in sorted({m for m, _, _ in cases}):
            limits["full_snapshot"][str(mib)] = full_snapshot(tmp, mib * MiB)
        print(f"memcpy {limits['memcpy_gbps_256MiB']:.1f} GB/s (256 MiB), zstd-1 {zstd:.0f} MB/s "
              f"(64 KiB batches, ratio {ratio:.2f}), LMDB write {limits['lmdb_mbps']:.0f} MB/s "
              f"(into freed pages; {limits['lmdb_grow_mbps']:.0f} MB/s growing the file)")
        print("page-table walk (PAGEMAP_SCAN, clean): " + ", ".join(
            f"{mib} MiB {ms:.2f} ms" for mib, ms in limits["scan_ms"].items()))
        for mib, fs in limits["full_snapshot"].items():
            print(f"full snapshot of {mib} MiB: {fs['seconds'] * 1e3:.0f} ms (copy {fs['copy_seconds'] * 1e3:.0f}, "
                  f"compress {fs['compress_seconds'] * 1e3:.0f}, write {fs['write_seconds'] * 1e3:.0f}), "
                  f"{fmt_bytes(fs['stored_bytes'])} stored", flush=True)

        # ---- checkpoints through a real daemon
        d = daemon(tmp)
        results, failed, restores = [], [], []
        try:
            client = Client(d.addr)
            sha = client.upload_module(wasm).sha256
            client.prepare_module(sha, False)
            manifests = Manifests(d.data_dir)
            for mib, fraction, pattern in cases:
                rounds = args.big_rounds if mib >= 1024 else args.rounds
                if mib >= 2000 and fraction >= 0.5:
                    rounds = min(rounds, 2)          # ~30 s a checkpoint: keep the run short
                t0 = time.monotonic()
                try:
                    case = run_case(client, manifests, sha, wasm, mib, fraction, pattern, rounds,
                                    args.warmup)
                except Exception as e:               # one broken case does not lose the others
                    print(f"{mib} MiB {fraction * 100:g}% {pattern}: FAILED: {e}", flush=True)
                    failed.append({"size_mib": mib, "fraction": fraction, "pattern": pattern,
                                   "error": str(e)})
                    continue
                case["evaluation"] = evaluate(case, limits)
                results.append(case)
                med, ev = case["median"], case["evaluation"]
                print(f"{mib} MiB {fraction * 100:g}% {pattern}: pause {med['pause_ms']:.2f} ms "
                      f"(target {ev['pause_target_ms']:.2f}), end-to-end {med['total_ms']:.1f} ms, "
                      f"{ev['mbps']:.0f} MB/s, dirty pages {case['dirty_pages']} "
                      f"[{time.monotonic() - t0:.1f} s]", flush=True)
            for mib in sorted({m for m, _, _ in cases}):
                for fill in (0.01, 1.0):
                    try:
                        restores.append(restore_case(client, sha, wasm, mib, fill))
                        print(f"restore {mib} MiB, {fill:.0%} of pages non-zero: "
                              f"{restores[-1]['restore_ms']:.0f} ms", flush=True)
                    except Exception as e:
                        print(f"restore {mib} MiB {fill:.0%}: FAILED: {e}", flush=True)
        finally:
            d.stop()

    rows = []
    for case in results:
        med, ev, full = case["median"], case["evaluation"], case["full_checkpoint"]
        speed = (f"{ev['speedup_vs_full']:.0f}x {mark(ev['speedup_ok'])}" if "speedup_vs_full" in ev else "")
        rest = med["total_ms"] - med["tts_ms"] - med["pause_ms"] - med["compress_ms"]
        walk = limits["scan_ms"].get(str(case["size_mib"]), float("nan"))
        rows.append([f"{case['size_mib']} MiB", f"{case['fraction'] * 100:g}%", case["pattern"],
                     fmt_bytes(ev["dirty_bytes"]),
                     f"{med['pause_ms']:.2f} {mark(ev['pause_ok'])}", f"{ev['pause_target_ms']:.2f}",
                     f"{walk:.2f}", f"{med['total_ms']:.1f}", f"{med['tts_ms']:.1f}",
                     f"{med['precopy_ms']:.1f}", f"{med['compress_ms']:.1f}",
                     f"{rest:.1f}", fmt_bytes(med["stored_bytes"]),
                     f"{ev['mbps']:.0f} {mark(ev['mbps_ok'])}", f"{ev['mbps_target']:.0f}", speed,
                     f"{full['pause_ms']:.0f}/{full['total_ms']:.0f}"])
    print_table("incremental checkpoints (medians; ms unless said)",
                ["size", "dirty", "pattern", "dirty bytes", "pause", "target", "walk", "end-to-end",
                 "to safepoint", "(precopy)", "compress", "send+commit", "stored", "MB/s", "target",
                 "vs full snapshot", "full ckpt pause/total"], rows)
    print_table("restore (a new worker from the latest checkpoint: page map, frames, memory, host state)",
                ["memory", "non-zero pages", "restore ms"],
                [[f"{r['size_mib']} MiB", f"{r['fill']:.0%}", f"{r['restore_ms']:.0f}"] for r in restores])
    result = {"limits": limits, "cases": results, "restores": restores, "failed": failed,
              "wall_seconds": time.monotonic() - began,
              "args": vars(args)}
    print(f"\nwall {result['wall_seconds']:.0f} s; wrote {write_result('checkpoint', result)}")


if __name__ == "__main__":
    main()
