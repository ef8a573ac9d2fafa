"""Control request fields a client can get wrong (issue 10, finding 8): each is refused with
INVALID_ARGUMENT naming the field, never INTERNAL, and errors never echo unbounded input; the
Control API's default endpoint is a private Unix socket."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, wait_until


@pytest.fixture(scope="module")
def hello(roostd):
    """The hello module uploaded to the shared daemon: its sha256."""
    wasm = compile_guest("hello")
    roostd.roost("run", str(wasm), check=True)
    import hashlib
    return hashlib.sha256(wasm.read_bytes()).hexdigest()


def invalid(call) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.value.code(), e.value.details())
    assert len(e.value.details()) < 400
    return e.value.details()


@pytest.mark.parametrize("field,value,says", [
    ("checkpoint_interval", Duration(seconds=-5), "checkpoint_interval"),
    ("checkpoint_interval", Duration(nanos=1000), "checkpoint_interval"),           # 1 us
    ("checkpoint_interval", Duration(seconds=8 * 86400), "checkpoint_interval"),    # > 7 days
    ("checkpoint_interval", Duration(seconds=1, nanos=-5), "checkpoint_interval"),  # malformed
    ("checkpoint_interval", Duration(nanos=2_000_000_000), "checkpoint_interval"),  # malformed
    ("memory_limit_bytes", 2 ** 64 - 1, "memory_limit_bytes"),
    ("memory_limit_bytes", 1024, "memory_limit_bytes"),
    ("name", "x" * 100_000, "name"),
])
def test_start_fields_are_checked(roostd, hello, field, value, says):
    request = pb.StartExecutionRequest(module_sha256=hello, argv0="hello", **{field: value})
    with roostd.channel() as ch:
        details = invalid(lambda: control_pb2_grpc.ControlStub(ch).StartExecution(request, timeout=10))
    assert says in details


def test_ids_timeouts_and_mounts_are_checked(roostd, hello):
    with roostd.channel() as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        long = invalid(lambda: stub.GetExecution(pb.GetExecutionRequest(id="y" * 1_000_000), timeout=10))
        assert "yyyy" in long and len(long) < 200
        for timeout in (Duration(seconds=-1), Duration(seconds=400 * 86400), Duration(seconds=-1, nanos=5)):
            assert "timeout" in invalid(lambda: stub.WaitExecution(
                pb.WaitExecutionRequest(id="abc", timeout=timeout), timeout=10))
        clash = pb.StartExecutionRequest(module_sha256=hello, mounts=[pb.Mount(
            guest_path="/data", entries=[pb.FileEntry(path="a", kind=pb.FileEntry.FILE, data=b"1"),
                                         pb.FileEntry(path="a/b", kind=pb.FileEntry.FILE, data=b"2")])])
        assert "mount" in invalid(lambda: stub.StartExecution(clash, timeout=10))
        env = pb.StartExecutionRequest(module_sha256=hello, env=[pb.EnvVar(key="A=B", value="1")])
        assert "env" in invalid(lambda: stub.StartExecution(env, timeout=10))
        assert "target" in invalid(lambda: list(stub.Migrate(pb.MigrateRequest(id="abc", target="nohost"),
                                                             timeout=10)))


def test_the_default_control_endpoint_is_a_private_unix_socket(tmp_path):
    """roostd with no --listen serves Control on a Unix socket only its owner and group may
    use (0660), no TCP port; the CLI reaches it by unix:PATH (its default is the same path)."""
    short = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))     # (a socket path: < 108 bytes)
    sock = short / "roost" / "roostd.sock"
    daemon = Roostd(tmp_path / "data")
    daemon.control_socket = str(sock)
    data = tmp_path / "data"
    data.mkdir(parents=True)
    log = open(tmp_path / "roostd.log", "wb")
    proc = subprocess.Popen([str(BIN / "roostd"), "--data-dir", str(data), "--control-socket", str(sock),
                             "--metrics-listen", "", "--node-id", "sock"], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: sock.exists(), timeout=30, what="the socket")
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode & 0o007 == 0 and mode & 0o660 == 0o660, oct(mode)
        ps = wait_until(lambda: (r := subprocess.run([str(BIN / "roost"), "--addr", f"unix:{sock}", "ps"],
                                                     capture_output=True)).returncode == 0 and r,
                        timeout=30, what="ps over the socket")
        assert b"ID" in ps.stdout or ps.stdout == b"" or ps.returncode == 0
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        assert f"pid={proc.pid}," not in listening          # no TCP port at all
        second = subprocess.run([str(BIN / "roostd"), "--data-dir", str(tmp_path / "other"),
                                 "--control-socket", str(sock), "--metrics-listen", ""],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "another roostd serves on it" in second.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(short, ignore_errors=True)
