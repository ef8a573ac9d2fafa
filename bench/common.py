"""Shared by the benchmarks: build guests, start a real roostd, summarise, write JSON."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from tests.framework.harness import Roostd  # noqa: E402


def build(name: str) -> Path:
    """Compile bench/guests/NAME.c (cached like the test guests)."""
    from tests.framework.guestbuild import compile_guest
    return compile_guest(str(ROOT / "bench" / "guests" / f"{name}.c"))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "p99": percentile(values, 99),
            "min": min(values), "max": max(values)}


def write_result(name: str, result: dict) -> Path:
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def daemon_env() -> dict[str, str]:
    """The environment of the roostds a bench starts. ROOST_DAEMON_SRC=DIR runs the daemon (and
    its workers) from another checkout's `daemon/` tree instead of this one: an A/B of two
    commits in the same run (bench/ab.sh), with the same client, guests and bench code."""
    src = os.environ.get("ROOST_DAEMON_SRC")
    return {"PYTHONPATH": str(Path(src).resolve() / "daemon")} if src else {}


def daemon(tmp: Path) -> Roostd:
    return Roostd(tmp / "data", env=daemon_env()).start()
