"""bench/ab: an A/B of two commits' daemons in the same run, on the same machine and guests.

    .venv/bin/python -m bench.ab REV [--rounds 2] [--skip-checkpoint] [--skip-migrate]

A is the daemon of commit REV (checked out into a temporary git worktree), B the daemon of this
checkout; the client, the guests and the bench code are this checkout's for both, so only the
daemon differs (`ROOST_DAEMON_SRC`, see bench/common.py). The two sides alternate (A B A B ...)
so that a slow minute of the machine falls on both. Runs `bench.checkpoint --quick` and
`bench.migrate --sizes 1024 --rates 10 --repeat 2`, then prints each case's median over the
rounds for A and B and the ratio B/A. Lower is better for every column printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, print_table, write_result

CHECKPOINT = ["-m", "bench.checkpoint", "--quick"]
MIGRATE = ["-m", "bench.migrate", "--sizes", "1024", "--rates", "10", "--repeat", "2"]


def run_bench(args: list[str], daemon_src: Path | None, name: str) -> dict:
    """Run one bench with the daemon from `daemon_src` (None: this checkout); its JSON result."""
    results = ROOT / "bench" / "results"
    before = set(results.glob(f"{name}-*.json")) if results.exists() else set()
    env = {**os.environ}
    env.pop("ROOST_DAEMON_SRC", None)
    if daemon_src is not None:
        env["ROOST_DAEMON_SRC"] = str(daemon_src)
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    new = sorted(set(results.glob(f"{name}-*.json")) - before)
    if not new:
        raise SystemExit(f"bench {name} wrote no result")
    return json.loads(new[-1].read_text())


def checkpoint_metrics(result: dict) -> dict[str, float]:
    """Per case: the median pause and total of its incremental checkpoints; per restore: ms."""
    out: dict[str, float] = {}
    for case in result["cases"]:
        key = f"{case['size_mib']}MiB {case['fraction']:g} {case['pattern']}"
        out[f"{key} pause_ms"] = case["median"]["pause_ms"]
        out[f"{key} total_ms"] = case["median"]["total_ms"]
        out[f"{key} full_ms"] = case["full_checkpoint"]["total_ms"]
    for r in result.get("restores", []):
        out[f"restore {r['size_mib']}MiB fill {r['fill']:g} ms"] = r["restore_ms"]
    return out


def migrate_metrics(result: dict) -> dict[str, float]:
    """Per case: downtime and total time of the first migration and of the one back."""
    out: dict[str, float] = {}
    for case in result["cases"]:
        key = f"migrate {case['size_mib']}MiB@{case['rate_mbps']:g}MB/s"
        for leg in ("first", "back"):
            out[f"{key} {leg} downtime_ms"] = statistics.median(r[leg]["downtime_ms"] for r in case["runs"])
            out[f"{key} {leg} total_s"] = statistics.median(r[leg]["total_s"] for r in case["runs"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the commit whose daemon is A")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-checkpoint", action="store_true")
    ap.add_argument("--skip-migrate", action="store_true")
    args = ap.parse_args()
    benches = [(CHECKPOINT, "checkpoint", checkpoint_metrics)] * (not args.skip_checkpoint)
    benches += [(MIGRATE, "migrate", migrate_metrics)] * (not args.skip_migrate)
    samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    with tempfile.TemporaryDirectory(prefix="roost-ab-") as tmp:
        worktree = Path(tmp) / "a"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), args.rev],
                       cwd=ROOT, check=True)
        try:
            for round_ in range(args.rounds):
                for side, src in (("A", worktree), ("B", None)):
                    for bench_args, name, metrics in benches:
                        print(f"round {round_ + 1}: {name} with daemon {side}", flush=True)
                        for k, v in metrics(run_bench(bench_args, src, name)).items():
                            samples[side].setdefault(k, []).append(v)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT)
    rows, table = [], {}
    for key in samples["B"]:
        a, b = statistics.median(samples["A"].get(key, [float("nan")])), statistics.median(samples["B"][key])
        table[key] = {"A": a, "B": b, "ratio": b / a if a else float("nan")}
        rows.append([key, f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}" if a else "-"])
    print_table(f"A = {args.rev}, B = this checkout (medians of {args.rounds} rounds)",
                ["case", "A", "B", "B/A"], rows)
    print(f"\nresult: {write_result('ab', {'rev': args.rev, 'table': table, 'samples': samples})}")


if __name__ == "__main__":
    main()
