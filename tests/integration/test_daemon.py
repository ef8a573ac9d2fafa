"""roostd end to end: real daemon processes, real guests compiled from C, real signals.

Guest output under roost is compared byte for byte with a plain wasmtime run of the same module.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket

import grpc
import pytest

from roost.client.api import Client
from roost.client.conventions import EXIT_ERROR, EXIT_FAILED
from roost.v1 import control_pb2 as pb
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until
from tests.framework.native import run_native


def test_run_matches_plain_wasmtime(roostd):
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", "120"])
    got = roostd.roost("run", str(wasm), "--", "120")
    assert got.stdout == native.stdout
    assert got.stderr == native.stderr
    assert got.returncode == native.exit_code != 0   # the checksum makes it nonzero


def test_upload_is_deduplicated_by_content(roostd):
    wasm = compile_guest("spin_print")
    client = Client(roostd.addr)
    first = client.upload_module(wasm)
    again = client.upload_module(wasm)
    assert first.sha256 == again.sha256
    listed = json.loads(roostd.roost("modules", "--json", check=True).stdout)
    assert [m["sha256"] for m in listed].count(first.sha256) == 1


def test_argv0_env_and_stdin(roostd, tmp_path):
    wasm = compile_guest("spin_print")
    got = roostd.roost("run", "--argv0", "custom", "--name", "named", str(wasm), "--", "3")
    record = json.loads(roostd.roost("inspect", "--json", "named", check=True).stdout)
    assert record["argv"] == ["custom", "3"]
    assert got.returncode == record["exit_code"]


def _bad_upload(addr: str, data: bytes) -> grpc.RpcError:
    path_msgs = [pb.UploadModuleRequest(header=pb.ModuleHeader(name="bad.wasm", size_bytes=len(data)))]
    path_msgs += [pb.UploadModuleRequest(chunk=bytes(data))]
    from roost.v1 import control_pb2_grpc
    with grpc.insecure_channel(addr) as ch:
        with pytest.raises(grpc.RpcError) as err:
            control_pb2_grpc.ControlStub(ch).UploadModule(iter(path_msgs), timeout=30)
    return err.value


def test_bad_modules_are_rejected_while_a_healthy_execution_runs(roostd, tmp_path):
    healthy = compile_guest("spin_print")
    native = run_native(healthy, ["spin_print", "400"])
    exec_id = roostd.roost("run", "--detach", str(healthy), "--", "400", check=True).stdout.decode().strip()

    valid = compile_guest("trap_unreachable").read_bytes()
    cases = {
        "random bytes": (random.Random(1).randbytes(5000), "not a wasm module"),
        "truncated": (valid[: len(valid) // 2], "truncated"),
        "unknown import": (_module_importing("env", "launch_missiles"), "env.launch_missiles"),
        "threads": (_wat_module('(memory (export "memory") 1 1 shared)'), "threads"),
        "memory64": (_wat_module('(memory (export "memory") i64 1)'), "memory64"),
        "two memories": (_wat_module('(memory (export "memory") 1) (memory 1)'), "multiple memories"),
    }
    for what, (data, reason) in cases.items():
        err = _bad_upload(roostd.addr, data)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert reason in err.details(), (what, err.details())
        path = tmp_path / f"{what.replace(' ', '_')}.wasm"
        path.write_bytes(data)
        cli = roostd.roost("run", str(path))
        assert cli.returncode == EXIT_ERROR and b"Traceback" not in cli.stderr
        assert b"module rejected" in cli.stderr and reason.encode() in cli.stderr, cli.stderr

    assert roostd.roost("wait", exec_id).returncode == native.exit_code
    assert roostd.roost("logs", "--stdout", exec_id).stdout == native.stdout


def _module_importing(module: str, name: str) -> bytes:
    import wasmtime
    return wasmtime.wat2wasm(f'(module (import "{module}" "{name}" (func)) (memory (export "memory") 1)'
                             '(func (export "_start")))')


def _wat_module(body: str) -> bytes:
    import wasmtime
    return wasmtime.wat2wasm(f'(module {body} (func (export "_start")))')


@pytest.mark.parametrize("guest,message", [
    ("trap_unreachable", "unreachable"),
    ("trap_oob", "out of bounds"),
    ("stack_overflow", "call stack exhausted"),
])
def test_trapping_guest_fails_alone(roostd, guest, message):
    healthy = compile_guest("spin_print")
    native = run_native(healthy, ["spin_print", "300"])
    ok_id = roostd.roost("run", "--detach", str(healthy), "--", "300", check=True).stdout.decode().strip()
    wasm = compile_guest(guest)
    got = roostd.roost("run", str(wasm))
    assert got.returncode == EXIT_FAILED
    assert message in got.stderr.decode(), got.stderr
    assert b"Traceback" not in got.stderr
    assert got.stdout == run_native(wasm, [guest]).stdout     # output before the trap is kept
    assert roostd.roost("wait", ok_id).returncode == native.exit_code
    assert roostd.roost("logs", "--stdout", ok_id).stdout == native.stdout


def test_memory_limit_fails_the_execution_with_the_reason(roostd):
    wasm = compile_guest("memhog")
    got = roostd.roost("run", "--memory-limit", "32M", "--detach", str(wasm), check=True)
    exec_id = got.stdout.decode().strip()
    assert roostd.roost("wait", exec_id).returncode == EXIT_FAILED
    record = json.loads(roostd.roost("inspect", "--json", exec_id).stdout)
    assert record["state"] == "FAILED"
    assert "memory limit of 33554432 bytes" in record["error"]
    assert b"allocation failed after" in roostd.roost("logs", "--stderr", exec_id).stderr


def test_malformed_rpc_gets_invalid_argument(roostd):
    healthy = compile_guest("spin_print")
    native = run_native(healthy, ["spin_print", "300"])
    ok_id = roostd.roost("run", "--detach", str(healthy), "--", "300", check=True).stdout.decode().strip()
    with grpc.insecure_channel(roostd.addr) as ch:
        call = ch.unary_unary("/roost.v1.Control/StartExecution")
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\xff garbage", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        get = ch.unary_unary("/roost.v1.Control/GetExecution",
                             request_serializer=pb.GetExecutionRequest.SerializeToString)
        with pytest.raises(grpc.RpcError) as err:
            get(pb.GetExecutionRequest(id="nope"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    missing = roostd.roost("inspect", "does-not-exist")
    assert missing.returncode == EXIT_ERROR and b"not found" in missing.stderr and b"Traceback" not in missing.stderr
    assert roostd.roost("wait", ok_id).returncode == native.exit_code
    assert roostd.roost("logs", "--stdout", ok_id).stdout == native.stdout


def test_logs_follow_replay_and_filters(roostd):
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", "300"])
    exec_id = roostd.roost("run", "--detach", str(wasm), "--", "300", check=True).stdout.decode().strip()
    follow = roostd.roost("logs", "-f", exec_id)
    assert follow.stdout == native.stdout and follow.stderr == native.stderr
    assert roostd.roost("logs", "--stdout", exec_id).stdout == native.stdout
    assert roostd.roost("logs", "--stderr", exec_id).stderr == native.stderr


def test_kill_and_kill_again(roostd):
    wasm = compile_guest("spin_print")
    exec_id = roostd.roost("run", "--detach", str(wasm), "--", "100000000", check=True).stdout.decode().strip()
    wait_until(lambda: b"line 3" in roostd.roost("logs", "--stdout", exec_id).stdout, what="output")
    assert roostd.roost("kill", exec_id).returncode == 0
    record = json.loads(roostd.roost("inspect", "--json", exec_id).stdout)
    assert record["state"] == "KILLED"
    again = roostd.roost("kill", exec_id)
    assert again.returncode == EXIT_ERROR and b"not running" in again.stderr
    assert roostd.roost("wait", exec_id).returncode == 137


def test_mounts_and_cp_match_plain_wasmtime(roostd, tmp_path):
    wasm = compile_guest(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sieve.c"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "label.txt").write_text("test label\n")
    native = run_native(wasm, ["sieve", "2000000"], mounts=[(data, "/data")], keep=tmp_path / "native")
    got = roostd.roost("run", "--name", "sieve-cp", "--mount", f"{data}:/data", str(wasm), "--", "2000000")
    assert (got.returncode, got.stdout, got.stderr) == (native.exit_code, native.stdout, native.stderr)
    out = tmp_path / "result.txt"
    assert roostd.roost("cp", "sieve-cp:/data/result.txt", str(out)).returncode == 0
    assert out.read_bytes() == (native.files["/data"] / "result.txt").read_bytes()
    tree = tmp_path / "tree"
    assert roostd.roost("cp", "sieve-cp:/data", str(tree)).returncode == 0
    assert sorted(p.name for p in tree.iterdir()) == ["label.txt", "result.txt"]
    assert (data / "result.txt").exists() is False       # the host dir was copied, never written


def test_finished_executions_survive_a_restart(fresh_roostd, tmp_path):
    daemon = fresh_roostd.start()
    wasm = compile_guest(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sieve.c"))
    data = tmp_path / "in"
    data.mkdir()
    native = run_native(wasm, ["sieve", "1000000"], mounts=[(data, "/data")], keep=tmp_path / "n")
    done = daemon.roost("run", "--name", "keep", "--mount", f"{data}:/data", str(wasm), "--", "1000000")
    spin = compile_guest("spin_print")
    running = daemon.roost("run", "--detach", str(spin), "--", "100000000", check=True).stdout.decode().strip()
    wait_until(lambda: b"line 1" in daemon.roost("logs", "--stdout", running).stdout, what="output")
    assert daemon.stop() == 0
    daemon.start()
    record = json.loads(daemon.roost("inspect", "--json", "keep", check=True).stdout)
    assert record["state"] == "EXITED" and record.get("exit_code", 0) == done.returncode == native.exit_code
    assert daemon.roost("logs", "--stdout", "keep").stdout == native.stdout
    out = tmp_path / "r.txt"
    assert daemon.roost("cp", "keep:/data/result.txt", str(out)).returncode == 0
    assert out.read_bytes() == (native.files["/data"] / "result.txt").read_bytes()
    resumed = json.loads(daemon.roost("inspect", "--json", running, check=True).stdout)
    assert resumed["state"] == "RUNNING" and resumed["restores"] == 1     # resumed, not lost
    assert daemon.roost("kill", running).returncode == 0


def test_twenty_executions_at_once(roostd):
    """Twenty starts in flight together on a 2-core machine; each output is checked in full."""
    from concurrent.futures import ThreadPoolExecutor
    wasm = compile_guest("spin_print")
    client = Client(roostd.addr)
    sha = client.upload_module(wasm).sha256
    counts = [str(50 + i * 7) for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        started = list(pool.map(lambda n: client.start(sha, argv0="spin_print", args=[n]), counts))
    assert len({e.id for e in started}) == 20
    for lines, ex in zip(counts, started):
        native = run_native(wasm, ["spin_print", lines])
        assert roostd.roost("wait", ex.id, timeout=300).returncode == native.exit_code
        logs = roostd.roost("logs", ex.id)
        assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)


def test_metrics(roostd):
    wasm = compile_guest("spin_print")
    roostd.roost("run", str(wasm), "--", "5")
    text = roostd.metrics()
    assert 'roost_executions{state="EXITED"}' in text
    assert 'roost_host_calls_total{function="fd_write"}' in text
    assert 'roost_module_uploads_total{result="stored"}' in text
    assert "roost_worker_starts_total" in text
    assert "roost_worker_failures_total" in text or "roost_worker_failures" in text


def test_health_and_reflection(roostd):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    with grpc.insecure_channel(roostd.addr) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
    assert {"roost.v1.Control", "grpc.health.v1.Health"} <= names


def test_sd_notify_protocol(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    daemon = Roostd(tmp_path / "data", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}).start()
    try:
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert f"MAINPID={daemon.proc.pid}" in ready
        while "WATCHDOG=1" not in sock.recv(4096).decode():
            pass
        daemon.proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in sock.recv(4096).decode():
            pass
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        sock.close()
        if daemon.proc.poll() is None:
            daemon.kill9()
