"""bench/waiting: time to safepoint of a guest blocked in a wait (poll_oneoff on a clock).

    .venv/bin/python -m bench.waiting [--requests 20] [--sizes 64,1024]

Cases, each on a real roostd:
- naps: a guest (tests/guests/naps.c) holding M MiB, touching a few pages, then sleeping
  200 ms, again and again: `--requests` Checkpoint RPCs at random moments, then a pause; the
  first checkpoint (its pre-copy of all memory is not time to safepoint) is shown apart;
- a 10 s sleep below the durable-sleep threshold (in its worker): checkpoints, then a pause;
- a 10 s sleep above it (SLEEPING, no worker): checkpoints and a pause answer from its sleep's
  checkpoint;
- live migration of the naps guest between two roostds, back and forth: the stop's time to
  safepoint (from the final checkpoint's stats) and the downtime.
Target (issue 14): median time to safepoint <= 1 ms for checkpoint, pause and migration. For
scale, the same run measures a thread wake-up through threading.Event (the floor of any
request that crosses threads).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import daemon_env, print_table, write_result
from roost.client import times
from roost.client.api import Client
from roost.v1 import control_pb2 as pb
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd


def event_wake_ms(n: int = 200) -> float:
    """Median ms from Event.set() in one thread to the waiter running in another."""
    got: list[float] = []
    ev, done = threading.Event(), threading.Event()
    stamp = [0.0]

    def waiter() -> None:
        while not done.is_set():
            if ev.wait(1):
                got.append(time.perf_counter() - stamp[0])
                ev.clear()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    for _ in range(n):
        time.sleep(0.002)
        stamp[0] = time.perf_counter()
        ev.set()
    time.sleep(0.01)
    done.set()
    return statistics.median(got) * 1e3


def _manifest_stats(client: Client, exec_id: str) -> dict:
    return json.loads(client.debug_checkpoint(exec_id).manifest_json)


def _state(client: Client, exec_id: str) -> str:
    return pb.ExecutionState.Name(client.get(exec_id).state)


def _wait_output(client: Client, exec_id: str) -> None:
    deadline = time.monotonic() + 60
    while (ex := client.get(exec_id)).stdout_bytes == 0:
        if time.monotonic() > deadline or ex.error:
            raise TimeoutError(f"no output from {exec_id}: {pb.ExecutionState.Name(ex.state)} {ex.error}")
        time.sleep(0.02)


def checkpoints(client: Client, exec_id: str, n: int, rng: random.Random, gap: float) -> list:
    out = []
    for _ in range(n):
        time.sleep(rng.uniform(0, gap))
        r = client.checkpoint(exec_id)
        out.append((times.seconds_of(r.time_to_safepoint) * 1e3, times.seconds_of(r.pause_duration) * 1e3,
                    r.dirty_pages, times.seconds_of(r.total_duration) * 1e3))
    return out


def pause_once(client: Client, exec_id: str) -> tuple[float, float]:
    """(RPC ms, time to safepoint ms of the pause's checkpoint)."""
    began = time.perf_counter()
    client.pause(exec_id)
    rpc = (time.perf_counter() - began) * 1e3
    stats = _manifest_stats(client, exec_id)
    return rpc, (stats.get("time_to_safepoint_seconds") or 0.0) * 1e3


def row(name: str, samples: list, pause: tuple[float, float] | None) -> list:
    tts = [s[0] for s in samples]
    return [name, len(samples), f"{statistics.median(tts):.3f}", f"{max(tts):.3f}",
            f"{statistics.median(s[1] for s in samples):.2f}",
            f"{statistics.median(s[2] for s in samples):.0f}",
            f"{statistics.median(s[3] for s in samples):.1f}",
            f"{pause[1]:.3f} / {pause[0]:.0f}" if pause else "-",
            "✓" if statistics.median(tts) <= 1.0 else "✗"]


def naps_case(client: Client, sha: str, mib: int, n: int, rng: random.Random) -> tuple[list, dict]:
    ex = client.start(sha, argv0="naps", args=["100000", "200", str(mib)],
                      memory_limit_bytes=3 << 30, checkpoint_every_seconds=3600)
    _wait_output(client, ex.id)
    first = client.checkpoint(ex.id)
    samples = checkpoints(client, ex.id, n, rng, 0.2)
    pause = pause_once(client, ex.id)
    client.kill(ex.id)
    return row(f"naps 200 ms, {mib} MiB", samples, pause), {
        "first_ms": {"time_to_safepoint": times.seconds_of(first.time_to_safepoint) * 1e3,
                     "precopy": times.seconds_of(first.precopy_duration) * 1e3,
                     "pause": times.seconds_of(first.pause_duration) * 1e3,
                     "dirty_pages": first.dirty_pages},
        "samples": samples, "pause": pause}


def sleep_case(client: Client, sha: str, n: int, rng: random.Random, durable: bool) -> tuple[list, dict]:
    ex = client.start(sha, argv0="sleeper", args=["10"], checkpoint_every_seconds=3600)
    _wait_output(client, ex.id)
    if durable:
        deadline = time.monotonic() + 10
        while _state(client, ex.id) != "SLEEPING" and time.monotonic() < deadline:
            time.sleep(0.02)
    samples = []
    for _ in range(n):
        time.sleep(rng.uniform(0, 0.1))
        began = time.perf_counter()
        r = client.checkpoint(ex.id)
        rpc = (time.perf_counter() - began) * 1e3
        samples.append((times.seconds_of(r.time_to_safepoint) * 1e3, times.seconds_of(r.pause_duration) * 1e3,
                        r.dirty_pages, rpc))
    pause = pause_once(client, ex.id)
    client.kill(ex.id)
    name = "sleep 10 s, " + ("durable (no worker)" if durable else "in its worker")
    return row(name, samples, pause), {"samples": samples, "pause": pause}


def migration_case(a: Roostd, b: Roostd, sha: str, n: int) -> tuple[list, dict]:
    ca, cb = Client(a.addr), Client(b.addr)
    ex = ca.start(sha, argv0="naps", args=["100000", "200", "64"], memory_limit_bytes=256 << 20,
                  checkpoint_every_seconds=3600)
    _wait_output(ca, ex.id)
    samples = []
    clients = [(ca, b.addr, cb), (cb, a.addr, ca)]
    for i in range(n):
        src, target, dst = clients[i % 2]
        report = None
        for p in src.migrate(ex.id, target):
            if p.HasField("report"):
                report = p.report
        assert report is not None
        stats = _manifest_stats(dst, ex.id)
        samples.append(((stats.get("time_to_safepoint_seconds") or 0.0) * 1e3,
                        times.seconds_of(report.downtime) * 1e3, stats.get("dirty_pages") or 0,
                        times.seconds_of(report.total_duration) * 1e3))
    clients[n % 2][0].kill(ex.id)
    return row("live migration, naps 64 MiB (pause = downtime)", samples, None), {"samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--sizes", default="64,1024")
    ap.add_argument("--migrations", type=int, default=10)
    args = ap.parse_args()
    rng = random.Random(14)
    naps, sleeper = compile_guest("naps"), compile_guest("sleeper")
    wake = event_wake_ms()
    print(f"threading.Event wake-up: {wake:.3f} ms (median)", flush=True)
    rows: list[list] = []
    result: dict[str, object] = {"event_wake_ms": wake}
    with tempfile.TemporaryDirectory(prefix="roost-bench-waiting-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = "[replication]\nfactor = 0\n[checkpoints]\ndurable_sleep_seconds = 30\n"
        a = Roostd(tmp / "a" / "data", config_text=cfg, env=daemon_env())
        b = Roostd(tmp / "b" / "data", config_text=cfg, env=daemon_env())
        c = Roostd(tmp / "c" / "data", config_text="[replication]\nfactor = 0\n", env=daemon_env())
        a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr]
        for d in (a, b, c):
            d.start()
        try:
            ca = Client(a.addr)
            sha_naps, sha_sleeper = ca.upload_module(naps).sha256, ca.upload_module(sleeper).sha256
            Client(b.addr).upload_module(naps)
            Client(c.addr).upload_module(sleeper)
            for client, sha in ((ca, sha_naps), (ca, sha_sleeper), (Client(b.addr), sha_naps),
                                (Client(c.addr), sha_sleeper)):
                client.prepare_module(sha)            # checkpoints need the prepared module
            for mib in [int(s) for s in args.sizes.split(",")]:
                r, detail = naps_case(ca, sha_naps, mib, args.requests, rng)
                rows.append(r)
                result[f"naps_{mib}"] = detail
                print(r, detail["first_ms"], flush=True)
            r, result["sleep_worker"] = sleep_case(ca, sha_sleeper, args.requests, rng, durable=False)
            rows.append(r)
            r, result["sleep_durable"] = sleep_case(Client(c.addr), sha_sleeper, args.requests, rng, durable=True)
            rows.append(r)
            r, result["migration"] = migration_case(a, b, sha_naps, args.migrations)
            rows.append(r)
        finally:
            for d in (a, b, c):
                d.stop()
    print_table(f"time to safepoint of waiting guests (ms; threading.Event wake-up {wake:.3f} ms)",
                ["case", "n", "median", "max", "pause", "dirty pages", "total/RPC",
                 "pause: tts / RPC", "≤1 ms"], rows)
    print(f"\nwritten to {write_result('waiting', result)}")


if __name__ == "__main__":
    main()
