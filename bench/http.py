"""bench/http: durable HTTP steps per second — one request at a time, each journaled (and made
durable, per `replication.ack`) before it leaves and its response journaled before the guest
sees it — against a plain keep-alive client on the same loopback server, in the same run.

    .venv/bin/python -m bench.http [--requests N] [--repeat R] [--quick]

The server is the test HTTP server (tests/framework/httpserver.py) in a subprocess of its own.
Steps alternate POST /counter/bench (+1) and GET /counter/bench. Three modes, their runs
interleaved (plain, async, one, plain, ...) so that load from outside weighs on each alike:

  plain  urllib3 PoolManager (keep-alive) in this process, the same N requests: the limit;
  async  one roostd, `[[http.allow]]` = the server's URL, `roost run --allow-http URL`
         bench/guests/http_loop.c: durable = stored in the owner's LMDB (sync);
  one    two roostds, each the other's static peer, `replication.ack = "one"`, factor 1, the
         guest on the first: durable = stored here and held by the replica too.

Steps/s are the guest's own: it times its loop with CLOCK_MONOTONIC (start-up excluded) and
each step (p50/p90/p99 per step). Breakdown per step: `roost_http_request_duration_seconds` (the
owner's histogram: the send alone, sum/count scraped around each run), the rest is the durable flow
(intent journaled -> SYNC -> stored [-> replicated] -> SYNCED; response journaled; the events).
Limits measured in the same run: one LMDB commit with sync, one loopback gRPC round trip.
Target: >= 2,000 durable steps/s with ack = one. Median of R runs (3); the JSON goes to
bench/results/.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import urllib3

from bench.common import ROOT, daemon_env, print_table, write_result
from bench.failover import grpc_rtt_ms, lmdb_commit_ms
from tests.framework.guestbuild import FLAGS, compile_guest
from tests.framework.harness import Roostd

TARGET_STEPS_PER_S = 2000.0
METHODS = ("POST", "GET")
ROUTE = "counter/bench"
MODES = ("plain", "async", "one")


@dataclass(frozen=True)
class Run:
    """One run of N steps in one mode (times in seconds; `send_s`: the owner's mean time in
    the transport per request, 0 for plain)."""
    mode: str
    steps: int
    loop_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    send_s: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.loop_s


# ---------------------------------------------------------------- the server

class Server:
    """`python -m tests.framework.httpserver` in a subprocess; its URL is its first line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.framework.httpserver"],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise SystemExit(f"http: the test server did not start (said {self.url!r})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# ---------------------------------------------------------------- plain client

def plain_run(url: str, n: int) -> Run:
    """N sequential requests from a keep-alive urllib3 pool: the same steps, nothing durable."""
    pool = urllib3.PoolManager()
    pool.request("GET", url)                                   # connected before the clock
    steps = []
    begin = prev = time.perf_counter()
    for i in range(n):
        method = METHODS[i % len(METHODS)]
        r = pool.request(method, url, body=b"1" if method == "POST" else None)
        if not 200 <= r.status < 300:
            raise SystemExit(f"http: plain {method} {url} answered {r.status}")
        now = time.perf_counter()
        steps.append(now - prev)
        prev = now
    pool.clear()
    steps.sort()

    def at(p: float) -> float:
        return steps[int((n - 1) * p + 0.5)]
    return Run("plain", n, prev - begin, at(0.5), at(0.9), at(0.99), steps[-1])


# ---------------------------------------------------------------- roost

def http_config(url: str, ack: str) -> str:
    return f'[replication]\nack = "{ack}"\nfactor = 1\n\n[[http.allow]]\nprefix = "{url}"\n'


def send_seconds(metrics: str) -> tuple[float, float]:
    """(sum, count) of the owner's roost_http_request_duration_seconds histogram."""
    def value(name: str) -> float:
        pattern = rf"^roost_http_request_duration_seconds_{name}(?:{{[^}}]*}})? (\S+)$"
        return sum(float(v) for v in re.findall(pattern, metrics, re.M))
    return value("sum"), value("count")


@dataclass
class Mode:
    """The daemons of one mode; runs go to `owner`."""
    name: str
    owner: Roostd
    others: list[Roostd]
    wasm: Path
    url: str

    @classmethod
    def start(cls, tmp: Path, name: str, wasm: Path, url: str) -> Mode:
        cfg = http_config(url, name)
        a = Roostd(tmp / name / "a" / "data", config_text=cfg, env=daemon_env())
        others = []
        if name == "one":
            b = Roostd(tmp / name / "b" / "data", config_text=cfg, env=daemon_env())
            a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr]
            others.append(b.start())
        mode = cls(name, a.start(), others, wasm, url)
        mode.run(200)                                  # warm: worker, module, peer, transport
        return mode

    def run(self, n: int) -> Run:
        """`roost run` of the loop guest to its end; its own numbers and the owner's send time."""
        before = send_seconds(self.owner.metrics())
        r = self.owner.roost("run", "--allow-http", self.url, str(self.wasm), "--",
                             str(n), self.url + ROUTE, *METHODS, timeout=600)
        after = send_seconds(self.owner.metrics())
        line = r.stdout.decode(errors="replace").strip().splitlines()[-1:] or [""]
        fields = line[0].split()
        if r.returncode != 0 or len(fields) < 8 or fields[0] != "done":
            raise SystemExit(f"http: ack={self.name}: the guest failed (exit {r.returncode}): "
                             f"{line[0] or r.stderr.decode(errors='replace').strip()[-300:]}")
        ok, errors = int(fields[1]), int(fields[2])
        if errors or ok != n:
            raise SystemExit(f"http: ack={self.name}: {errors} of {n} steps failed: "
                             f"{' '.join(fields[8:]) or 'a status other than 2xx'}")
        count = after[1] - before[1]
        send = (after[0] - before[0]) / count if count else 0.0
        loop, p50, p90, p99, top = (int(x) / 1e9 for x in fields[3:8])
        return Run(self.name, n, loop, p50, p90, p99, top, send)

    def stop(self) -> None:
        for d in (self.owner, *self.others):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()


def run_all(tmp: Path, url: str, n: int, repeat: int) -> tuple[dict[str, list[Run]], float, float]:
    """Every mode's runs, interleaved; also the loopback gRPC round trip (against a daemon) and
    the LMDB commit (median of one measure per round: this disk's fsync comes and goes)."""
    wasm = compile_guest(str(ROOT / "bench" / "guests" / "http_loop.c"), FLAGS + ("-I", str(ROOT / "sdk" / "c")))
    modes: list[Mode] = []
    try:
        for name in MODES[1:]:
            modes.append(Mode.start(tmp, name, wasm, url))
        rtt = grpc_rtt_ms(modes[0].owner)
        plain_run(url + ROUTE, 200)                      # warm
        runs: dict[str, list[Run]] = {m: [] for m in MODES}
        commits = []
        for k in range(repeat):
            commits.append(lmdb_commit_ms(tmp, 100))
            runs["plain"].append(plain_run(url + ROUTE, n))
            for m in modes:
                runs[m.name].append(m.run(n))
            print(f"run {k + 1}/{repeat}: " + ", ".join(f"{name} {rs[-1].steps_per_s:.0f}"
                                                         for name, rs in runs.items())
                  + f" steps/s (LMDB commit {commits[-1]:.3f} ms)", flush=True)
        return runs, rtt, statistics.median(commits)
    finally:
        for m in modes:
            m.stop()


# ---------------------------------------------------------------- report

def median_run(runs: list[Run]) -> dict:
    """The median of each number over the runs."""
    return {"steps_per_s": statistics.median(r.steps_per_s for r in runs),
            **{f: statistics.median(getattr(r, f) for r in runs)
               for f in ("loop_s", "p50_s", "p90_s", "p99_s", "max_s", "send_s")}}


def report(runs: dict[str, list[Run]], lmdb_ms: float, rtt_ms: float, n: int) -> dict[str, dict]:
    med = {mode: median_run(rs) for mode, rs in runs.items()}
    plain = med["plain"]["steps_per_s"]
    rows = []
    for mode, m in med.items():
        target = (f"{m['steps_per_s'] / TARGET_STEPS_PER_S:.2f}x "
                  f"{'✓' if m['steps_per_s'] >= TARGET_STEPS_PER_S else '✗'}") if mode == "one" else ""
        rows.append([mode, f"{m['steps_per_s']:.0f}", f"{m['steps_per_s'] / plain:.0%}", target,
                     f"{m['p50_s'] * 1e3:.3f}", f"{m['p90_s'] * 1e3:.3f}", f"{m['p99_s'] * 1e3:.3f}"])
    print_table(f"durable HTTP steps, one at a time ({n} requests, POST/GET alternately; median "
                f"of {len(runs['plain'])}; target >= {TARGET_STEPS_PER_S:.0f} steps/s with ack = one)",
                ["mode", "steps/s", "of plain", "of target", "step p50 ms", "step p90 ms", "step p99 ms"],
                rows)
    rows = []
    for mode in MODES:
        m = med[mode]
        step = m["loop_s"] / n
        send = m["send_s"] if mode != "plain" else step
        rows.append([mode, f"{step * 1e3:.3f}", f"{send * 1e3:.3f}", f"{(step - send) * 1e3:.3f}",
                     f"{(step - med['async']['loop_s'] / n) * 1e3:+.3f}" if mode == "one" else ""])
    print_table(f"per step (ms, mean): the send (roost_http_request_duration_seconds) and the rest: "
                f"journal, SYNC, store [+ replica], events (limits: LMDB commit with sync {lmdb_ms:.3f} ms, "
                f"loopback gRPC round trip {rtt_ms:.3f} ms)",
                ["mode", "step", "send", "rest", "one - async"], rows)
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=None, help="steps per run (default 2000)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per mode (default 3)")
    ap.add_argument("--quick", action="store_true", help="300 steps x 2")
    args = ap.parse_args()
    n = args.requests or (300 if args.quick else 2000)
    repeat = args.repeat or (2 if args.quick else 3)
    began = time.monotonic()
    server = Server()
    try:
        with tempfile.TemporaryDirectory(prefix="roost-bench-http-") as tmp_name:
            tmp = Path(tmp_name)
            runs, rtt_ms, lmdb_ms = run_all(tmp, server.url, n, repeat)
    finally:
        server.stop()
    med = report(runs, lmdb_ms, rtt_ms, n)
    plain = med["plain"]["steps_per_s"]
    result = {"requests": n, "repeat": repeat, "target_steps_per_s": TARGET_STEPS_PER_S,
              "lmdb_commit_ms": lmdb_ms, "grpc_rtt_ms": rtt_ms, "modes": med,
              "runs": {mode: [asdict(r) for r in rs] for mode, rs in runs.items()},
              "ratios": {"async_over_plain": med["async"]["steps_per_s"] / plain,
                         "one_over_plain": med["one"]["steps_per_s"] / plain,
                         "one_over_target": med["one"]["steps_per_s"] / TARGET_STEPS_PER_S},
              "wall_seconds": time.monotonic() - began}
    print(f"\nwall {result['wall_seconds']:.0f} s; wrote {write_result('http', result)}")


if __name__ == "__main__":
    main()
