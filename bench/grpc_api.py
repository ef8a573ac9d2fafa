"""bench/grpc_api: what a Control call costs, and what the gRPC metrics interceptor adds to it
(issue 15), against the floor measured in the same run: a unary call to a bare grpcio server
in another process (one loopback round trip through grpcio, no roost code).

Each case runs rounds of N calls on one channel; the table gives the median and min per call.
"Without interceptor" is the same roostd started with `grpc.server`'s interceptors dropped.

    python -m bench.grpc_api [--calls N] [--rounds R] [--pairs P]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from bench.common import daemon_env, print_table, write_result
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc as pbg
from tests.framework.harness import Roostd, free_port, wait_until

NO_INTERCEPTORS = ("import grpc, sys; _s = grpc.server; "
                   "grpc.server = lambda *a, interceptors=None, **k: _s(*a, **k); "
                   "sys.argv = sys.argv[1:]; from roost.daemon.main import main; sys.exit(main(sys.argv[1:]))")

ECHO_SERVER = """
import sys, grpc
from concurrent import futures
handler = grpc.method_handlers_generic_handler("bench.Echo", {
    "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""


def per_call_us(call: Callable[[], object], calls: int, rounds: int) -> list[float]:
    """Microseconds per call, one value per round (after a warm-up round)."""
    for _ in range(min(calls, 500)):
        call()
    out = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            call()
        out.append((time.perf_counter() - began) / calls * 1e6)
    return out


def floor_us(calls: int, rounds: int) -> list[float]:
    """A unary call to a bare grpcio echo server in another process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/bench.Echo/Echo")
            grpc.channel_ready_future(channel).result(timeout=30)
            return per_call_us(lambda: echo(b"x" * 32), calls, rounds)
    finally:
        proc.kill()
        proc.wait()


def roostd_us(intercepted: bool, calls: int, rounds: int) -> dict[str, list[float]]:
    """GetExecution and ListExecutions against a real roostd holding one ended execution."""
    daemon = Roostd(Path(tempfile.mkdtemp(prefix="bench-grpc-")) / "data", env=daemon_env())
    if not intercepted:
        daemon.wrap = [sys.executable, "-c", NO_INTERCEPTORS]
    daemon.start()
    try:
        from tests.framework.guestbuild import compile_guest
        exec_id = daemon.roost("run", "--detach", str(compile_guest("hello")), check=True).stdout.decode().strip()
        with grpc.insecure_channel(daemon.addr) as channel:
            stub = pbg.ControlStub(channel)
            wait_until(lambda: stub.GetExecution(pb.GetExecutionRequest(id=exec_id)).state == pb.EXITED,
                       timeout=60, what="the guest to end")
            return {
                "GetExecution": per_call_us(lambda: stub.GetExecution(pb.GetExecutionRequest(id=exec_id)),
                                            calls, rounds),
                "ListExecutions": per_call_us(lambda: stub.ListExecutions(pb.ListExecutionsRequest(all=True)),
                                              calls, rounds),
            }
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=2, help="daemons started per variant, interleaved")
    opts = parser.parse_args()
    floor = floor_us(opts.calls, opts.rounds)
    runs: dict[str, dict[str, list[float]]] = {"with": {}, "without": {}}
    for _ in range(opts.pairs):                       # interleaved: drift in load hits both alike
        for variant in ("without", "with"):
            for rpc, values in roostd_us(variant == "with", opts.calls, opts.rounds).items():
                runs[variant].setdefault(rpc, []).extend(values)
    floor_median = statistics.median(floor)
    rows = [["grpcio echo (floor)", f"{floor_median:.0f}", f"{min(floor):.0f}", "1.00"]]
    for rpc in ("GetExecution", "ListExecutions"):
        for variant in ("without", "with"):
            values = runs[variant][rpc]
            median = statistics.median(values)
            rows.append([f"{rpc}, {variant} interceptor", f"{median:.0f}", f"{min(values):.0f}",
                         f"{median / floor_median:.2f}"])
    print_table("Control calls (µs per call)", ["case", "median", "min", "× floor"], rows)
    write_result("grpc_api", {"floor_us": floor, "roostd_us": runs, "calls": opts.calls, "rounds": opts.rounds})


if __name__ == "__main__":
    main()
