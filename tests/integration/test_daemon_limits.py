"""The daemon stays responsive and bounded (issue 10, finding 7): 70 concurrent long-polls
leave `ps`, `inspect` and a peer's handover answering within a second; the executions one
daemon carries are bounded (count and memory); a module preparation dies with roostd."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import grpc
import pytest

from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc, peer_pb2, peer_pb2_grpc
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, cluster, wait_until
from tests.framework.shared_guests import guests_dir


def _follow(daemon: Roostd, exec_id: str, kind: str, outcomes: list, stop: threading.Event) -> None:
    """One long-poll (logs -f or wait) on its own channel until `stop`; its outcome."""
    with daemon.channel() as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        try:
            if kind == "logs":
                call = stub.StreamLogs(pb.StreamLogsRequest(id=exec_id, follow=True), timeout=60)
                outcomes.append("held")
                for _ in call:
                    if stop.is_set():
                        call.cancel()
                        break
            else:
                future = stub.WaitExecution.future(pb.WaitExecutionRequest(id=exec_id), timeout=60)
                outcomes.append("held")
                while not stop.is_set() and not future.done():
                    time.sleep(0.05)
                future.cancel()
                future.result()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                outcomes.append("refused")
            elif e.code() != grpc.StatusCode.CANCELLED:
                outcomes.append(f"failed {e.code()}")


def _timed(call) -> float:
    began = time.monotonic()
    call()
    return time.monotonic() - began


@pytest.mark.serial
def test_seventy_long_polls_leave_every_other_call_answering(tmp_path):
    a, b = cluster(tmp_path / "polls", n=2)
    try:
        wasm = compile_guest("spin_print")
        exec_id = a.roost("run", "--detach", str(wasm), "--", "100000", "300000",
                          check=True).stdout.decode().strip()
        outcomes: list[str] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_follow, args=(a, exec_id, ("logs", "wait")[i % 2],
                                                          outcomes, stop), daemon=True)
                   for i in range(70)]
        for t in threads:
            t.start()
        wait_until(lambda: len(outcomes) >= 70, timeout=60, what="70 long-polls to start")
        time.sleep(1.0)                            # every one of them holds or was refused
        with a.channel() as ch:
            control = control_pb2_grpc.ControlStub(ch)
            peer = peer_pb2_grpc.PeerStub(ch)
            seconds = [
                _timed(lambda: control.ListExecutions(pb.ListExecutionsRequest(all=True), timeout=5)),
                _timed(lambda: control.GetExecution(pb.GetExecutionRequest(id=exec_id), timeout=5)),
                _timed(lambda: peer.Decision(peer_pb2.DecisionRequest(id=exec_id, epoch=1), timeout=5)),
            ]
            handover = peer_pb2.HandoverRequest(id=exec_id, phase=peer_pb2.HandoverRequest.ABORT,
                                                source=b.node_id, epoch=2)
            try:                                   # (refused: a does not migrate it; but answered)
                seconds.append(_timed(lambda: peer.Handover(handover, timeout=5)))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
        assert max(seconds) < 1.0, seconds
        assert sum(o == "refused" for o in outcomes) == 70 - 64     # one client: 64 at most
        assert not [o for o in outcomes if o.startswith("failed")], outcomes
        stop.set()
        a.roost("kill", exec_id)
    finally:
        for d in (a, b):
            d.stop()


def test_the_execution_one_too_many_is_refused(tmp_path):
    daemon = Roostd(tmp_path / "data", config_text="[limits]\nexecutions = 2\n"
                                                  "memory_total_bytes = 536870912\n").start()
    try:
        wasm = compile_guest("spin_print")
        run = lambda *opts: daemon.roost("run", "--detach", *opts, str(wasm), "--", "100000", "300000")
        first = run("--memory-limit", "256M")
        assert first.returncode == 0, first.stderr
        over = run("--memory-limit", "300M")
        assert over.returncode != 0 and b"limits.memory_total_bytes" in over.stderr
        second = run("--memory-limit", "128M")
        assert second.returncode == 0, second.stderr
        third = run("--memory-limit", "64M")
        assert third.returncode != 0 and b"limits.executions" in third.stderr
        assert b"Traceback" not in third.stderr
        daemon.roost("kill", first.stdout.decode().strip(), check=True)
        wait_until(lambda: run("--memory-limit", "64M").returncode == 0, timeout=30,
                   what="room again after a kill")
    finally:
        daemon.stop()


def _children(pid: int, pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if _parent(int(p)) == pid]


def _parent(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(guests_dir() is None, reason="third-party guests not fetched")
def test_a_preparation_dies_with_roostd(tmp_path):
    """kill -9 of roostd while it prepares a module (flite: seconds of Binaryen) leaves no
    preparation child running. The child is stopped (SIGSTOP) first, once it is busy inside
    Binaryen: a child that merely wrote its next progress line to a dead pipe would die of
    that, and prove nothing."""
    daemon = Roostd(tmp_path / "data")
    daemon.cache_dir = tmp_path / "cache"          # nothing prepared yet
    daemon.start()
    wasm = guests_dir() / "wasm" / "flite.wasm"
    preparing = subprocess.Popen([*daemon.roost_command(), "modules", "prepare", str(wasm)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = -1
    try:
        child = wait_until(lambda: _children(daemon.proc.pid, "roost.daemon.modules.prepare"), timeout=60,
                           what="a preparation child")[0]
        wait_until(lambda: _cpu_seconds(child) >= 1.0, timeout=60, what="the child inside Binaryen")
        os.kill(child, signal.SIGSTOP)
        daemon.kill9()
        wait_until(lambda: _parent(child) == -1, timeout=5, what="the preparation to die")
    finally:
        preparing.kill()
        preparing.wait()
        if _parent(child) != -1:
            os.kill(child, signal.SIGKILL)
