"""bench/migrate: live migration between two real roostds on loopback, against the loopback
gRPC bandwidth measured in the same run.

    .venv/bin/python -m bench.migrate [--sizes 256,1024] [--rates 1,10,100] [--repeat 2]

(ROOST_BENCH_LOGS=word,... prints the daemons' log lines holding those words at the end.)

For each size (MiB) and dirty rate (MB/s) a guest (bench/guests/dirtier.c) fills its memory,
then rewrites the same set of pages every 100 ms — rate x 0.1 s of them, spread evenly — and
stays quiet in between. Then:

  first:  migrate it from A (which holds nothing else) to B, which holds nothing of it;
  back:   after 2 s more on B, migrate it back to A, which still holds the execution as it was
          when it left (a recent replica): only what changed since should travel.

Each migration reports rounds, downtime (the guest stopped on the source to running on the
target), total time, bytes sent / memory size (first), and bytes sent / bytes dirtied since A
last held it (back; the guest rewrites one set of pages, so what it dirtied since is that set,
uncompressed). Targets: downtime <= 20 ms for 1 GiB at 10 MB/s; first migration <= 1.3 x memory;
back to a replica <= 2 x the bytes dirtied since.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

from bench.common import build, daemon_env, print_table, write_result
from roost.client import times  # noqa: E402
from roost.client.api import Client  # noqa: E402
from tests.framework.harness import Roostd  # noqa: E402

MiB = 1 << 20
ROUND_MS = 100
RUN_PAGES = 64


# ---------------------------------------------------------------- the link's limit

def loopback_grpc_mbps(total: int = 512 * MiB, message: int = 256 << 10) -> float:
    """A client-streaming RPC of `total` bytes in `message`-byte messages over loopback, to an
    in-process gRPC server: what the Peer service's pushes could get at best."""
    received = []

    def sink(requests, context):
        n = 0
        for chunk in requests:
            n += len(chunk)
        received.append(n)
        return b""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 64 * MiB)])
    handler = grpc.method_handlers_generic_handler("bench.Sink", {
        "Push": grpc.stream_unary_rpc_method_handler(sink, request_deserializer=lambda b: b,
                                                     response_serializer=lambda b: b)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    payload = random.Random(1).randbytes(message)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}",
                                   options=[("grpc.max_send_message_length", 64 * MiB)]) as channel:
            push = channel.stream_unary("/bench.Sink/Push", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                push(iter([payload] * (total // message)))
                best = min(best, time.perf_counter() - t0)
    finally:
        server.stop(0)
    return total / best / 1e6


# ---------------------------------------------------------------- one case

def fraction_for(mib: int, rate_mbps: float) -> float:
    """The share of pages rewritten per round for `rate_mbps` MB/s."""
    return min(1.0, rate_mbps * 1e6 * ROUND_MS / 1000 / (mib * MiB))


def wait_rounds(client: Client, exec_id: str, n: int, timeout: float = 300.0) -> None:
    """Until the guest has printed `n` more "round" lines (it runs and dirties)."""
    deadline = time.monotonic() + timeout
    start = client.get(exec_id).stdout_bytes
    while client.get(exec_id).stdout_bytes < start + n * 8 and time.monotonic() < deadline:
        time.sleep(0.05)


def migrate(client: Client, exec_id: str, target: str) -> dict:
    report = None
    for p in client.migrate(exec_id, target):
        if p.HasField("report"):
            report = p.report
    assert report is not None
    return {"rounds": report.rounds, "bytes_sent": report.bytes_sent,
            "memory_bytes": report.memory_bytes, "total_s": times.seconds_of(report.total_duration),
            "downtime_ms": times.seconds_of(report.downtime) * 1e3, "throttle": report.throttle,
            "stop_ms": times.seconds_of(report.stop_duration) * 1e3,
            "push_ms": times.seconds_of(report.final_push_duration) * 1e3,
            "handover_ms": times.seconds_of(report.handover_duration) * 1e3,
            "resume_ms": times.seconds_of(report.resume_duration) * 1e3,
            "final_bytes": report.final_bytes}


def run_case(a: Roostd, b: Roostd, sha: str, wasm: Path, mib: int, rate: float) -> dict:
    ca, cb = Client(a.addr), Client(b.addr)
    fraction = fraction_for(mib, rate)
    ex = ca.start(sha, argv0=wasm.stem, memory_limit_bytes=3 << 30, checkpoint_every_seconds=3600,
                  args=[str(mib), repr(fraction), "scattered", "0", str(RUN_PAGES), str(ROUND_MS)])
    try:
        wait_rounds(ca, ex.id, 3)
        first = migrate(ca, ex.id, b.addr)
        wait_rounds(cb, ex.id, int(2000 / ROUND_MS))
        back = migrate(cb, ex.id, a.addr)
    finally:
        try:
            ca.kill(ex.id)
        except Exception:
            pass
    dirtied = max(1, int(mib * MiB // 4096 * fraction + 0.5)) * 4096
    return {"size_mib": mib, "rate_mbps": rate, "fraction": fraction, "first": first, "back": back,
            "dirtied_since_bytes": dirtied}


def print_logs(*daemons: Roostd) -> None:
    """With ROOST_BENCH_LOGS=word,word: the daemons' log lines holding any of the words."""
    words = [w for w in os.environ.get("ROOST_BENCH_LOGS", "").split(",") if w]
    for d in daemons if words else ():
        lines = d.log_path.read_text().splitlines()
        print(f"--- {d.addr}\n" + "\n".join(ln for ln in lines if any(w in ln for w in words)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--rates", default="1,10,100")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each case (medians)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    began = time.monotonic()
    wasm = build("dirtier")
    print("measuring loopback gRPC ...", flush=True)
    link = loopback_grpc_mbps()
    print(f"loopback gRPC: {link:.0f} MB/s (256 KiB messages)", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="roost-bench-migrate-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = "[replication]\nfactor = 0\n"           # nothing travels but the migrations
        a, b = (Roostd(tmp / "a" / "data", config_text=cfg, env=daemon_env()),
                Roostd(tmp / "b" / "data", config_text=cfg, env=daemon_env()))
        a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr]
        a.start()
        b.start()
        try:
            client = Client(a.addr)
            sha = client.upload_module(wasm).sha256
            client.prepare_module(sha, False)
            Client(b.addr).upload_module(wasm)
            for mib in sizes:
                for rate in rates:
                    runs = []
                    for _ in range(args.repeat):
                        runs.append(run_case(a, b, sha, wasm, mib, rate))
                        r = runs[-1]
                        print(f"{mib} MiB at {rate:g} MB/s: first {r['first']['downtime_ms']:.1f} ms down, "
                              f"{r['first']['bytes_sent'] / (mib * MiB):.2f}x memory, "
                              f"{r['first']['rounds']} rounds; back {r['back']['downtime_ms']:.1f} ms down, "
                              f"{r['back']['bytes_sent'] / r['dirtied_since_bytes']:.2f}x dirtied",
                              flush=True)
                    results.append({"size_mib": mib, "rate_mbps": rate, "runs": runs})
        finally:
            a.stop()
            b.stop()
            print_logs(a, b)
    rows = []
    for case in results:
        for which in ("first", "back"):
            vals = [r[which] for r in case["runs"]]
            med = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
            mem = case["size_mib"] * MiB
            dirtied = case["runs"][0]["dirtied_since_bytes"]
            ratio = med["bytes_sent"] / (mem if which == "first" else dirtied)
            target = 1.3 if which == "first" else 2.0
            down_ok = "" if (case["size_mib"], case["rate_mbps"]) != (1024, 10.0) else \
                (" ✓" if med["downtime_ms"] <= 20 else " ✗")
            rows.append([f"{case['size_mib']} MiB", f"{case['rate_mbps']:g}", which,
                         f"{med['rounds']:.0f}", f"{med['downtime_ms']:.1f}{down_ok}",
                         f"{med['stop_ms']:.1f}/{med['push_ms']:.1f}/{med['handover_ms']:.1f}/{med['resume_ms']:.1f}",
                         f"{med['total_s']:.2f}", f"{med['bytes_sent'] / MiB:.1f}",
                         f"{ratio:.2f}x {'✓' if ratio <= target else '✗'} (<= {target}x "
                         f"{'memory' if which == 'first' else 'dirtied'})",
                         f"{med['bytes_sent'] / med['total_s'] / 1e6 / link:.0%}",
                         f"{1 - med['throttle']:.0%}"])
    print_table(f"live migration (medians of {args.repeat}; loopback gRPC {link:.0f} MB/s)",
                ["memory", "MB/s dirtied", "migration", "rounds", "downtime ms",
                 "stop/push/handover/resume ms", "total s", "MiB sent", "bytes sent",
                 "of link", "guest speed"], rows)
    result = {"link_mbps": link, "cases": results, "wall_seconds": time.monotonic() - began,
              "args": vars(args)}
    print(f"\nwall {result['wall_seconds']:.0f} s; wrote {write_result('migrate', result)}")


if __name__ == "__main__":
    main()
