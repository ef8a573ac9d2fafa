"""bench/recovery: how long a durable execution takes to recover after roostd dies, by history.

    .venv/bin/python -m bench.recovery [--sizes 100,1000,10000,100000,1000000] [--spin 100000]

The guest (tests/guests/steps.c) does one journaled step per iteration — a random value and an
output line — and holds just before step N - 10 (short journaled naps, see the guest). With
roostd's default settings (checkpoint policy included) the bench waits until the guest holds,
kill -9s roostd (its workers die with it), waits 0.5 s, restarts it on the same data and times
from the restart:

  api:      roostd serves its API;
  running:  the execution is RUNNING again under the new roostd (a worker was given it);
  done:     it ended (`wait`); replay + the last 10 steps = done - running;
  restore:  the worker's own restore time (the execution's `restore_duration`).

Every run's output is checked: every step exactly once, in order, and the printed sum equal to
the sum of the printed values. The first table has plain steps; the second a compute-heavy step
(`--spin` volatile iterations, ~0.5 ns each: ~50 µs of work per step). Target (issue 14):
restart -> done <= 0.3 s at every N. The 1M case takes minutes to run up to its kill: pick
sizes with --sizes. The JSON goes to bench/results/.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import daemon, print_table, write_result
from roost.client import times
from roost.client.api import Client
from roost.v1 import control_pb2 as pb
from tests.framework.guestbuild import compile_guest

RUNNING = pb.ExecutionState.Value("RUNNING")
POLL = 0.005


def check_steps(stdout: bytes, steps: int) -> None:
    """`step i v` for every i once, in order, then `sum S` with S the sum of the v."""
    lines = stdout.decode().splitlines()
    if len(lines) != steps + 1:
        raise AssertionError(f"{len(lines)} lines for {steps} steps")
    values = []
    for i, line in enumerate(lines[:-1]):
        word, n, v = line.split()
        if (word, int(n)) != ("step", i):
            raise AssertionError(f"line {i}: {line!r}: a step missing or repeated")
        values.append(int(v))
    if lines[-1] != f"sum {sum(values)}":
        raise AssertionError(f"the sum line {lines[-1]!r} is not the sum of the steps ({sum(values)})")


def wait_for_hold(client: Client, exec_id: str, steps_before: int, timeout: float) -> None:
    """Until the guest holds before step `steps_before`: its stdout is at least that many lines
    long and has not grown for 0.2 s."""
    least = sum(len(f"step {i} 0\n") for i in range(steps_before))
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        got = client.get(exec_id).stdout_bytes
        if got != last:
            last, since = got, time.monotonic()
        elif got >= least and time.monotonic() - since > 0.2:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{exec_id} did not reach step {steps_before} in {timeout:.0f} s")


def one(tmp: Path, wasm: Path, steps: int, spin: int) -> dict:
    d = daemon(tmp)
    try:
        with Client(d.addr) as prep:       # prepared, as after a module's first run: a run of
            prep.prepare_module(prep.upload_module(wasm).sha256)   # one not yet is replayed from the start
        exec_id = d.roost("run", "--detach", str(wasm), "--", str(steps), str(spin), str(steps - 10),
                          check=True).stdout.decode().strip()
        client = Client(d.addr)
        began = time.monotonic()
        wait_for_hold(client, exec_id, steps - 10, timeout=3600)
        run_seconds = time.monotonic() - began
        before = client.get(exec_id)
        client.close()
        print(f"  N={steps}: held at step {steps - 10} after {run_seconds:.1f} s: kill -9", flush=True)
        d.kill9()
        time.sleep(0.5)
        t0 = time.monotonic()
        d.start()
        api = time.monotonic() - t0
        client = Client(d.addr)
        while True:
            e = client.get(exec_id)
            if e.restores > before.restores and e.state == RUNNING or e.state != RUNNING:
                break
            time.sleep(POLL)
        running = time.monotonic() - t0
        print(f"  N={steps}: api {api:.3f} s, running {running:.3f} s", flush=True)
        while e.state == RUNNING:        # (polled: `wait` after a restore may answer late)
            time.sleep(POLL)
            e = client.get(exec_id)
        done = time.monotonic() - t0
        client.close()
        check_steps(d.roost("logs", "--stdout", exec_id, timeout=600).stdout, steps)
        return {"steps": steps, "spin": spin, "run_to_kill_s": run_seconds, "api_s": api,
                "running_s": running, "done_s": done, "replay_and_rest_s": done - running,
                "restore_s": times.seconds_of(e.restore_duration), "journal_records": e.journal_records,
                "checkpoints": e.checkpoints, "exit_code": e.exit_code}
    finally:
        d.stop()


def table(title: str, rows: list[dict]) -> None:
    print_table(title, ["N", "api s", "running s", "restore s", "replay+rest s", "restart->done s",
                        "journal", "checkpoints", "exactly once"],
                [[r["steps"], f"{r['api_s']:.3f}", f"{r['running_s']:.3f}", f"{r['restore_s']:.3f}",
                  f"{r['replay_and_rest_s']:.3f}", f"{r['done_s']:.3f}", r["journal_records"],
                  r["checkpoints"], "yes"] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000,100000,1000000")
    ap.add_argument("--spin", type=int, default=100_000, help="iterations of the heavy step")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    wasm = compile_guest("steps")
    result: dict = {"plain": [], "heavy": []}
    for kind, spin in (("plain", 0), ("heavy", args.spin)):
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                row = one(Path(tmp), wasm, n, spin)
            result[kind].append(row)
            print(f"{kind} N={n}: restart->done {row['done_s']:.3f} s", flush=True)
    table("recovery after kill -9 of roostd at N-10 steps (plain step: random + output line)", result["plain"])
    table(f"recovery, compute-heavy step ({args.spin} spins, ~{args.spin * 0.5 / 1000:.0f} µs)", result["heavy"])
    print(f"\nwrote {write_result('recovery', result)}")


if __name__ == "__main__":
    main()
