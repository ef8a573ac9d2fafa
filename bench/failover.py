"""bench/failover: a host dies and its execution goes on elsewhere (takeover time), and what
replicating output before clients see it costs (`replication.ack`), against limits measured in
the same run.

    .venv/bin/python -m bench.failover [--quick] [--kills N] [--steps N] [--stamps N]

Takeover: three roostds on a real etcd (the default lease TTL, 3 s). Each round starts the steps
guest (`steps 1000000 SPIN`, ~100 lines/s) on the next member, waits until its replica holds
some of its output (the owner released it), then kill -9s the owner's roostd and all its
workers at once. From the kill it polls both survivors (GetExecution, every 20 ms) and times
three events:

  owner:   a survivor answers for the execution as its new owner (owner == served_by != the dead
           node): the lease expired, the bid was won, the owner key names it;
  running: the new owner reports it RUNNING;
  output:  the new owner has stored output beyond what it took over with (the most of: what the
           dead owner had released before the kill, which its replica held; what the new owner
           reported at its first answer as owner) — the guest replayed its journal and computes
           new steps. This is the takeover time judged (up to a poll and a step late).

The execution is killed, the dead daemon restarted on its data dir, and the next round waits
until all three members see each other again. Judged: median and p99 of `output` against the
target TTL + 1 s (the TTL alone is shown: a dead owner cannot be told from a slow one sooner).

Acknowledgement modes: for each of `ack = async | one | all`, a fresh two-member cluster (static
--peer, each the other's replica; the three clusters up at once, their runs interleaved so that
load from outside the bench weighs on every mode alike) runs:

  steps/s: `steps N 0` (N = 200000, --steps; median of --repeat 3) to its end: guest steps/s from
           the execution's started/finished times; visible steps/s from its start to the last
           byte a `logs -f` client on the owner received (output is released once replicated);
  latency: `stamps M 10000` (bench/guests/stamps.c) prints its wall clock every 10 ms; a `logs -f`
           client on the owner subtracts each stamp from its own clock on arrival (end to end:
           guest write -> worker link -> LMDB -> replica's LMDB -> released -> streamed). The
           owner's `roost_output_release_seconds` histogram (stored -> replicas hold it), scraped
           from /metrics before and after, gives the release median (interpolated in buckets;
           async ships nothing before releasing: no observations).

Limits, same run: one LMDB commit (a small put, sync on; the replica's share of a release) and
one loopback gRPC round trip (grpc health Check against a running roostd). Targets: steps/s
one/async >= 80 %; release median <= 5 ms; takeover median <= TTL + 1 s.

--quick: 3 kills, 40000 steps x 2, 150 stamps (about a minute). The JSON goes to bench/results/.
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lmdb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import build, daemon_env, percentile, print_table, summary, write_result
from roost.client import times
from roost.client.api import Client
from roost.client.errors import RoostClientError
from roost.v1 import control_pb2 as pb
from tests.framework.etcd import Etcd
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, kill_host, wait_until

TTL = 3.0                        # roostd's default cluster.lease_seconds (not overridden here)
TAKEOVER_TARGET = TTL + 1.0
RELEASE_TARGET_MS = 5.0
STEPS_RATIO_TARGET = 0.8
TAKEOVER_SPIN = "5000000"        # ~10 ms per step (~2 ns a spin): ~100 lines/s
POLL = 0.02
MODES = ("async", "one", "all")
RUNNING = pb.ExecutionState.Value("RUNNING")


# ---------------------------------------------------------------- limits

def lmdb_commit_ms(tmp: Path, n: int = 200) -> float:
    """Median of one write transaction with a 64-byte put, committed with sync."""
    env = lmdb.open(str(tmp / "lmdb-commit"), map_size=64 << 20, sync=True, metasync=True)
    samples = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), bytes(64))
            samples.append(time.perf_counter() - t0)
    finally:
        env.close()
    return statistics.median(samples) * 1e3


def grpc_rtt_ms(daemon: Roostd, n: int = 500) -> float:
    """Median of one grpc health Check against a running roostd over loopback."""
    with daemon.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


# ---------------------------------------------------------------- takeover

@dataclass
class Round:
    """One kill: seconds from the kill to each event (see the module docstring)."""
    victim: str
    new_owner: str
    owner_s: float
    running_s: float
    output_s: float
    held_bytes: int              # output the replica held at the kill
    restart_s: float             # the dead daemon back and seen by all members


_clients: dict[str, Client] = {}


def client_of(daemon: Roostd) -> Client:
    """One client (channel) per daemon address for the whole run: it reconnects by itself after
    a restart, and polling every 20 ms does not open a connection each time."""
    if daemon.addr not in _clients:
        _clients[daemon.addr] = Client(daemon.addr)
    return _clients[daemon.addr]


def members(daemon: Roostd) -> int:
    try:
        return len(client_of(daemon).nodes())
    except Exception:
        return 0


def etcd_cluster(root: Path, etcd: Etcd, n: int = 3) -> list[Roostd]:
    """`n` roostds on `etcd` with the default lease TTL."""
    daemons = [Roostd(root / f"node{i}" / "data", "--etcd", etcd.url, env=daemon_env())
               for i in range(n)]
    for d in daemons:
        d.start()
    all_see(daemons)
    return daemons


def all_see(daemons: list[Roostd]) -> None:
    wait_until(lambda: all(members(d) == len(daemons) for d in daemons), timeout=60, interval=0.1,
               what="every member to see the others")


def get(daemon: Roostd, exec_id: str) -> pb.Execution | None:
    try:
        return client_of(daemon).get(exec_id)
    except Exception:
        return None


def released(daemon: Roostd, exec_id: str) -> int:
    """Output bytes the owner lets clients read: its replica holds at least these (ack = one)."""
    return sum(len(c.data) for c in client_of(daemon).logs(exec_id))


def takeover_round(daemons: list[Roostd], sha: str, k: int) -> Round:
    victim = daemons[k % len(daemons)]
    survivors = [d for d in daemons if d is not victim]
    ex = client_of(victim).start(sha, argv0="steps", args=["1000000", TAKEOVER_SPIN])
    wait_until(lambda: released(victim, ex.id) >= 200, timeout=30, interval=POLL,
               what="the guest's output to be released (held by a replica)")
    time.sleep(0.3)
    held = released(victim, ex.id)
    kill_host(victim)
    killed = time.monotonic()
    times: dict[str, float] = {}
    new_owner = ""
    while "output" not in times:
        if time.monotonic() - killed > 60:
            raise AssertionError(f"no takeover within 60 s (events so far: {times})")
        for s in survivors:
            r = get(s, ex.id)
            if r is None or r.owner in ("", victim.node_id) or r.served_by != r.owner:
                continue
            now = time.monotonic() - killed
            new_owner = r.owner
            if "owner" not in times:
                times["owner"] = now
                held = max(held, r.stdout_bytes)     # what it took over with (replay adds none)
            if r.state == RUNNING:
                times.setdefault("running", now)
                if r.stdout_bytes > held:
                    times.setdefault("output", now)
        time.sleep(POLL)
    owner = next(d for d in survivors if d.node_id == new_owner)
    client_of(owner).kill(ex.id)
    t0 = time.monotonic()
    victim.restart()
    all_see(daemons)
    return Round(victim.node_id, new_owner, times["owner"], times["running"], times["output"],
                 held, time.monotonic() - t0)


def run_takeovers(tmp: Path, kills: int) -> tuple[list[Round], float]:
    """`kills` rounds on a fresh three-member cluster; also the loopback gRPC round trip."""
    etcd = Etcd(tmp / "etcd" / "data").start()
    daemons: list[Roostd] = []
    try:
        daemons = etcd_cluster(tmp / "takeover", etcd)
        rtt = grpc_rtt_ms(daemons[0])
        steps = compile_guest("steps")
        sha = Client(daemons[0].addr).upload_module(steps).sha256
        for d in daemons[1:]:
            Client(d.addr).upload_module(steps)
        rounds = []
        for k in range(kills):
            try:
                rounds.append(takeover_round(daemons, sha, k))
            except (AssertionError, RoostClientError) as e:
                log_tails(daemons)
                raise SystemExit(f"failover: kill {k + 1}: {e}") from None
            r = rounds[-1]
            print(f"kill {k + 1}/{kills}: {r.victim} -> {r.new_owner}: owner {r.owner_s:.2f} s, "
                  f"running {r.running_s:.2f} s, new output {r.output_s:.2f} s "
                  f"(restart {r.restart_s:.1f} s)", flush=True)
        return rounds, rtt
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        etcd.stop()


def log_tails(daemons: list[Roostd], lines: int = 25) -> None:
    """The end of each daemon's log: why a round failed."""
    for d in daemons:
        tail = d.log_path.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {d.node_id} ({d.log_path})\n" + "\n".join(tail))


# ---------------------------------------------------------------- ack modes

class Follow:
    """`logs -f` on a daemon in a background thread: (arrival wall time, bytes) per chunk."""

    def __init__(self, daemon: Roostd, exec_id: str) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(daemon.addr, exec_id), daemon=True)
        self.thread.start()

    def _run(self, addr: str, exec_id: str) -> None:
        try:
            for chunk in Client(addr).logs(exec_id, follow=True):
                self.chunks.append((time.time(), chunk.data))
        except Exception as e:       # reported by result(): the bench says why, no traceback
            self.error = e

    def result(self, timeout: float = 300) -> list[tuple[float, bytes]]:
        self.thread.join(timeout)
        if self.thread.is_alive() or self.error is not None:
            raise AssertionError(f"the follower failed: {self.error or 'timed out'}")
        return self.chunks


def histogram(text: str, name: str) -> dict[float, float]:
    """The cumulative buckets (le -> count) of a histogram in Prometheus text."""
    out = {}
    for le, count in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        out[float(le)] = float(count)
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile `q` of the observations between two scrapes, interpolated in its bucket (NaN:
    none)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 0.0
            return prev_bound + share * (bound - prev_bound)
        prev_bound, prev_count = bound, count
    return prev_bound


def release_count(before: dict[float, float], after: dict[float, float]) -> int:
    inf = float("inf")
    return int(after.get(inf, 0.0) - before.get(inf, 0.0))


def steps_run(a: Roostd, sha: str, n: int) -> dict:
    """`steps n 0` to its end on `a`, followed from its start."""
    client = Client(a.addr)
    t0 = time.time()
    ex = client.start(sha, argv0="steps", args=[str(n), "0"])
    follow = Follow(a, ex.id)
    record = client.wait(ex.id)
    chunks = follow.result()
    if not chunks or b"sum " not in chunks[-1][1]:
        raise AssertionError(f"steps {n} 0 ended without its sum (state {record.state})")
    started = times.unix_seconds(record.start_time)
    guest = times.unix_seconds(record.finish_time) - started
    return {"guest_steps_per_s": n / guest, "visible_steps_per_s": n / (chunks[-1][0] - started),
            "wall_s": chunks[-1][0] - t0, "guest_s": guest}


def stamps_run(a: Roostd, sha: str, n: int) -> list[float]:
    """End-to-end latency (ms) of each of `n` stamped lines, read by `logs -f` on the owner."""
    ex = Client(a.addr).start(sha, argv0="stamps", args=[str(n), "10000"])
    follow = Follow(a, ex.id)
    Client(a.addr).wait(ex.id)
    latencies, partial = [], b""
    for arrived, data in follow.result():
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        latencies += [(arrived - int(line.split()[1]) / 1e9) * 1e3 for line in lines if line.startswith(b"t ")]
    if len(latencies) != n:
        raise AssertionError(f"stamps: {len(latencies)} of {n} lines arrived")
    return latencies


@dataclass
class ModeCluster:
    """A fresh two-member cluster (static peers) with one `replication.ack` mode; runs go to `a`,
    whose replica is `b`."""
    mode: str
    a: Roostd
    b: Roostd
    steps_sha: str = ""
    stamps_sha: str = ""

    @classmethod
    def start(cls, tmp: Path, mode: str) -> ModeCluster:
        cfg = f'[replication]\nack = "{mode}"\n'
        a, b = (Roostd(tmp / mode / "a" / "data", config_text=cfg, env=daemon_env()),
                Roostd(tmp / mode / "b" / "data", config_text=cfg, env=daemon_env()))
        a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr]
        cluster = cls(mode, a.start(), b.start())
        for wasm in (compile_guest("steps"), build("stamps")):
            Client(b.addr).upload_module(wasm)
        cluster.steps_sha = Client(a.addr).upload_module(compile_guest("steps")).sha256
        cluster.stamps_sha = Client(a.addr).upload_module(build("stamps")).sha256
        steps_run(a, cluster.steps_sha, 2000)                  # warm: worker, module, peer
        return cluster

    def stop(self) -> None:
        for d in (self.a, self.b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()


def run_modes(tmp: Path, steps: int, stamps: int, repeat: int) -> dict[str, dict]:
    """All three clusters at once, their runs interleaved (async, one, all, async, ...): load
    from outside the bench that comes and goes weighs on every mode alike."""
    clusters: list[ModeCluster] = []
    try:
        for mode in MODES:
            clusters.append(ModeCluster.start(tmp, mode))
        runs: dict[str, list[dict]] = {c.mode: [] for c in clusters}
        for k in range(repeat):
            for c in clusters:
                runs[c.mode].append(steps_run(c.a, c.steps_sha, steps))
                print(f"ack={c.mode} run {k + 1}/{repeat}: "
                      f"{runs[c.mode][-1]['guest_steps_per_s']:.0f} steps/s", flush=True)
        return {c.mode: latency(c, runs[c.mode], stamps) for c in clusters}
    finally:
        for c in clusters:
            c.stop()


def latency(c: ModeCluster, runs: list[dict], stamps: int) -> dict:
    """The stamps run on `c` (release histogram scraped around it) and the mode's summary."""
    before = histogram(c.a.metrics(), "roost_output_release_seconds")
    latencies = stamps_run(c.a, c.stamps_sha, stamps)
    after = histogram(c.a.metrics(), "roost_output_release_seconds")
    result = {"mode": c.mode, "runs": runs,
              "guest_steps_per_s": statistics.median(r["guest_steps_per_s"] for r in runs),
              "visible_steps_per_s": statistics.median(r["visible_steps_per_s"] for r in runs),
              "e2e_ms": summary(latencies),
              "release_count": release_count(before, after),
              "release_p50_ms": bucket_quantile(before, after, 0.5) * 1e3,
              "release_p99_ms": bucket_quantile(before, after, 0.99) * 1e3}
    print(f"ack={c.mode}: e2e median {result['e2e_ms']['median']:.2f} ms, "
          f"release p50 {result['release_p50_ms']:.2f} ms ({result['release_count']} bursts)", flush=True)
    return result


# ---------------------------------------------------------------- report

def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def report(rounds: list[Round], modes: dict[str, dict], lmdb_ms: float, rtt_ms: float) -> dict:
    """Print the tables; return the judged ratios."""
    rows = []
    for event in ("owner", "running", "output"):
        vals = [getattr(r, f"{event}_s") for r in rounds]
        med, p99 = statistics.median(vals), percentile(vals, 99)
        judged = event == "output"
        rows.append([event, f"{med:.2f}", f"{p99:.2f}", f"{max(vals):.2f}", f"{med / TTL:.2f}x",
                     f"{med / TAKEOVER_TARGET:.2f}x {mark(med <= TAKEOVER_TARGET)}" if judged else "",
                     f"{p99 / TAKEOVER_TARGET:.2f}x {mark(p99 <= TAKEOVER_TARGET)}" if judged else ""])
    print_table(f"takeover after kill -9 of the owner ({len(rounds)} kills; lease TTL {TTL:g} s, "
                f"target TTL + 1 s = {TAKEOVER_TARGET:g} s)",
                ["event", "median s", "p99 s", "max s", "median/TTL", "median/target", "p99/target"], rows)
    base = modes["async"]["guest_steps_per_s"]
    rows = []
    for mode, m in modes.items():
        ratio = m["guest_steps_per_s"] / base
        rel = m["release_p50_ms"]
        rows.append([mode, f"{m['guest_steps_per_s']:.0f}",
                     f"{ratio:.0%} {mark(ratio >= STEPS_RATIO_TARGET)}" if mode != "async" else "100%",
                     f"{m['visible_steps_per_s']:.0f}",
                     f"{m['e2e_ms']['median']:.2f}", f"{m['e2e_ms']['p99']:.2f}",
                     "-" if rel != rel else f"{rel:.2f} {mark(rel <= RELEASE_TARGET_MS)}",
                     "-" if rel != rel else f"{m['release_p99_ms']:.2f}",
                     f"{m['release_count']}",
                     "-" if rel != rel else f"{rel / (lmdb_ms + rtt_ms):.1f}x"])
    print_table(f"replication.ack (2 members; LMDB commit {lmdb_ms:.2f} ms, gRPC round trip "
                f"{rtt_ms:.3f} ms; release target <= {RELEASE_TARGET_MS:g} ms, steps/s >= "
                f"{STEPS_RATIO_TARGET:.0%} of async)",
                ["ack", "steps/s", "of async", "visible steps/s", "e2e median ms", "e2e p99 ms",
                 "release p50 ms", "release p99 ms", "bursts", "release/(commit+rtt)"], rows)
    output = [r.output_s for r in rounds]
    return {"steps_one_over_async": modes["one"]["guest_steps_per_s"] / base,
            "steps_all_over_async": modes["all"]["guest_steps_per_s"] / base,
            "release_one_p50_over_target": modes["one"]["release_p50_ms"] / RELEASE_TARGET_MS,
            "takeover_median_over_target": statistics.median(output) / TAKEOVER_TARGET,
            "takeover_p99_over_target": percentile(output, 99) / TAKEOVER_TARGET,
            "takeover_median_over_ttl": statistics.median(output) / TTL}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 kills, fewer steps: under 2 minutes")
    ap.add_argument("--kills", type=int, default=None, help="takeover rounds (default 20; quick 3)")
    ap.add_argument("--steps", type=int, default=None, help="steps per throughput run (default 200000)")
    ap.add_argument("--stamps", type=int, default=None, help="stamped lines, one per 10 ms (default 500)")
    ap.add_argument("--repeat", type=int, default=None, help="throughput runs per mode (default 3)")
    args = ap.parse_args()
    kills = args.kills or (3 if args.quick else 20)
    steps = args.steps or (40000 if args.quick else 200000)
    stamps = args.stamps or (150 if args.quick else 500)
    repeat = args.repeat or (2 if args.quick else 3)
    began = time.monotonic()
    build("stamps")
    compile_guest("steps")
    with tempfile.TemporaryDirectory(prefix="roost-bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        lmdb_ms = lmdb_commit_ms(tmp)
        print(f"LMDB commit (small put, sync): {lmdb_ms:.3f} ms", flush=True)
        rounds, rtt_ms = run_takeovers(tmp, kills)
        print(f"loopback gRPC round trip (health Check): {rtt_ms:.3f} ms", flush=True)
        modes = run_modes(tmp, steps, stamps, repeat)
    ratios = report(rounds, modes, lmdb_ms, rtt_ms)
    result = {"ttl_s": TTL, "takeover_target_s": TAKEOVER_TARGET, "lmdb_commit_ms": lmdb_ms,
              "grpc_rtt_ms": rtt_ms, "rounds": [asdict(r) for r in rounds],
              "takeover": {e: summary([getattr(r, f"{e}_s") for r in rounds])
                           for e in ("owner", "running", "output")},
              "modes": modes, "ratios": ratios, "wall_seconds": time.monotonic() - began,
              "args": {"kills": kills, "steps": steps, "stamps": stamps, "repeat": repeat,
                       "quick": args.quick}}
    print(f"\nwall {result['wall_seconds']:.0f} s; wrote {write_result('failover', result)}")


if __name__ == "__main__":
    main()
