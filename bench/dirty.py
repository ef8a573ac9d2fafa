"""Collect cost of the dirty-page trackers on wasmtime memories.

For 64 MiB and 1 GiB memories with 0 %, 1 % (scattered) and 100 % of pages written between
collects: the time of one collect for the uffd-WP tracker and the hashing one, next to the time
to read all of memory once (memcpy) measured in the same run, which bounds any tracker that has
to look at every byte.

    /work/venv/bin/python -m bench.dirty [--sizes-mib 64,1024] [--repeat 5]
"""
from __future__ import annotations

import argparse
import ctypes
import random
import statistics
import time

import wasmtime

from bench.common import print_table, write_result  # noqa: E402
from roost.daemon.checkpoint import dirty  # noqa: E402
from roost.daemon.checkpoint.dirty import PAGE_BYTES  # noqa: E402

WASM_PAGE = 65536
FRACTIONS = (0.0, 0.01, 1.0)


def wasm_memory(size: int) -> tuple[wasmtime.Store, wasmtime.Memory, int]:
    store = wasmtime.Store(wasmtime.Engine())
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(size // WASM_PAGE, None)))
    base = ctypes.cast(memory.data_ptr(store), ctypes.c_void_p).value
    return store, memory, base


def dirty_pages(base: int, pages: int, fraction: float, value: int, rng: random.Random) -> None:
    """Writes one byte into `fraction` of the pages (all of them with one memset at 100 %)."""
    if fraction >= 1.0:
        ctypes.memset(base, value, pages * PAGE_BYTES)
        return
    for page in rng.sample(range(pages), int(pages * fraction)):
        ctypes.memset(base + page * PAGE_BYTES + 17, value, 1)


def time_collects(tracker, base: int, pages: int, fraction: float, repeat: int) -> float:
    rng, samples = random.Random(1), []
    for round_ in range(repeat):
        dirty_pages(base, pages, fraction, round_ + 1, rng)
        began = time.perf_counter()
        found = tracker.collect()
        samples.append(time.perf_counter() - began)
        assert len(found) >= int(pages * fraction), (tracker.name, len(found))
    return statistics.median(samples)


def memcpy_seconds(base: int, size: int) -> float:
    buffer = ctypes.create_string_buffer(size)
    began = time.perf_counter()
    ctypes.memmove(buffer, base, size)
    return time.perf_counter() - began


def bench_size(size: int, repeat: int) -> list[dict]:
    store, memory, base = wasm_memory(size)
    ctypes.memset(base, 0, size)                     # populate, as a running guest would
    pages, rows = size // PAGE_BYTES, []
    copy = memcpy_seconds(base, size)
    kinds = [dirty.HashTracker] + ([dirty.UffdWpTracker] if dirty.probe() is None else [])
    for kind in kinds:
        tracker = kind()
        tracker.start(base, size)
        tracker.collect()
        for fraction in FRACTIONS:
            seconds = time_collects(tracker, base, pages, fraction, repeat if size < 1 << 30 or
                                    kind is dirty.UffdWpTracker else max(2, repeat // 2))
            rows.append({"size_mib": size >> 20, "tracker": kind.name, "dirty_fraction": fraction,
                         "collect_seconds": seconds, "memcpy_all_seconds": copy})
        tracker.close()
    del memory, store
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", default="64,1024")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for mib in (int(x) for x in args.sizes_mib.split(",")):
        rows += bench_size(mib << 20, args.repeat)
    print_table(f"dirty-page collect (probe: {dirty.probe() or 'uffd-wp-async available'})",
                ["memory", "tracker", "dirty", "collect ms", "memcpy-all ms", "collect/memcpy"],
                [[f"{r['size_mib']} MiB", r["tracker"], f"{r['dirty_fraction']:.0%}",
                  f"{r['collect_seconds'] * 1e3:.3f}", f"{r['memcpy_all_seconds'] * 1e3:.1f}",
                  f"{r['collect_seconds'] / r['memcpy_all_seconds']:.3f}"] for r in rows])
    print(f"\nwrote {write_result('dirty', {'rows': rows})}")


if __name__ == "__main__":
    main()
