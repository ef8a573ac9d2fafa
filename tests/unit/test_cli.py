"""Unit tests of the `roost` CLI and client library; no roostd needed.

A fake in-process Control server stands in for the daemon where the CLI's byte-exact output
and exit codes are the point; the real daemon is covered by the integration tests.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from roost.client import cli, commands, copyout, display, mounts, times
from roost.client.api import Client
from roost.client.attach import Follow, Reconnect, follow_logs
from roost.client.errors import LocalError, MountError, RoostClientError
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc

WASM = b"\x00asm\x01\x00\x00\x00"

# ---------------------------------------------------------------- argument parsing


def test_run_env_keeps_order_and_splits_at_first_equals() -> None:
    ns = cli.parse_args(["run", "--env", "B=2", "-e", "A=x=y", "--env", "E=", "m.wasm"])
    assert ns.env == [("B", "2"), ("A", "x=y"), ("E", "")]


def test_guest_args_after_double_dash_reach_the_guest_untouched() -> None:
    ns = cli.parse_args(["--addr", "h:1", "run", "--detach", "m.wasm", "--", "-v", "--help", "--", "x"])
    assert ns.module == "m.wasm"
    assert ns.args == ["-v", "--help", "--", "x"]
    assert ns.detach and ns.addr == "h:1"


def test_run_without_args_and_with_plain_args() -> None:
    assert cli.parse_args(["run", "m.wasm"]).args == []
    assert cli.parse_args(["run", "m.wasm", "a", "b"]).args == ["a", "b"]


def test_double_dash_keeps_its_meaning_for_other_commands() -> None:
    assert cli.parse_args(["logs", "--", "-odd-id"]).id == "-odd-id"


def test_run_defaults() -> None:
    ns = cli.parse_args(["run", "dir/dot.wasm"])
    assert (ns.cooperative, ns.detach, ns.mount, ns.env, ns.memory_limit) == (False, False, [], [], None)
    assert commands.default_argv0(ns.module) == "dot"
    assert cli.parse_args(["run", "--cooperative", "m.wasm"]).cooperative is True
    assert cli.parse_args(["run", "--preempt", "m.wasm"]).cooperative is False


@pytest.mark.parametrize("guest", ["/", ".", "/app"])
def test_mount_specs_accept_any_guest_name(guest: str) -> None:
    ns = cli.parse_args(["run", "--mount", f"/host/dir:{guest}", "m.wasm"])
    assert ns.mount == [mounts.MountSpec(Path("/host/dir"), guest)]


def test_mount_spec_splits_at_last_colon() -> None:
    assert mounts.parse_mount_spec("a:b:/app") == mounts.MountSpec(Path("a:b"), "/app")


@pytest.mark.parametrize("spec", ["nocolon", ":/app", "/host:"])
def test_bad_mount_spec_is_rejected(spec: str) -> None:
    with pytest.raises(LocalError):
        mounts.parse_mount_spec(spec)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--env", "NOEQUALS", "m.wasm"],
        ["run", "--mount", "nocolon", "m.wasm"],
        ["run", "--memory-limit", "lots", "m.wasm"],
        ["run", "--preempt", "--cooperative", "m.wasm"],
        ["cp", "no-colon", "out"],
        ["migrate", "x"],
        ["bogus"],
    ],
)
def test_usage_errors_exit_2_without_traceback(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def test_json_is_accepted_before_or_after_the_command() -> None:
    assert cli.parse_args(["--json", "ps"]).json is True
    assert cli.parse_args(["ps", "--json"]).json is True
    assert cli.parse_args(["ps"]).json is False


def test_addr_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_ADDR", "10.0.0.1:9")
    assert cli.parse_args(["ps"]).addr == "10.0.0.1:9"
    assert cli.parse_args(["ps", "--addr", "h:2"]).addr == "h:2"
    monkeypatch.delenv("ROOST_ADDR")
    assert cli.parse_args(["ps"]).addr == "unix:/run/roost/roostd.sock"     # (tests run as root)


def test_the_cli_looks_for_roostd_where_roostd_puts_its_socket(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path) -> None:
    """The CLI's default address and roostd's default socket agree, for root and for a user
    (without a system daemon's socket)."""
    from roost.client import api
    from roost.daemon.node import config
    monkeypatch.delenv("ROOST_ADDR", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert api.default_addr() == "unix:" + config.default_control_socket()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(api, "SYSTEM_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert api.default_addr() == "unix:" + config.default_control_socket() \
        == f"unix:{tmp_path}/roost/roostd.sock"


def test_migrate_parses() -> None:
    ns = cli.parse_args(["migrate", "abc", "--to", "h:1", "--cold", "--downtime-ms", "15"])
    assert (ns.command, ns.id, ns.to, ns.cold, ns.downtime_ms) == ("migrate", "abc", "h:1", True, 15.0)
    assert cli.parse_args(["migrate", "abc", "--to", "h:1"]).cold is False


def test_migrate_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "abc"]) == 2
    assert "--to" in capsys.readouterr().err


def test_tls_flags_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--tls-ca", "ca.pem", "ps"]) == 125
    assert "go together" in capsys.readouterr().err
    head, guest = cli.split_guest_args(["--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c",
                                        "run", "m.wasm", "--", "-x"])
    assert guest == ["-x"] and head[-2:] == ["run", "m.wasm"]


@pytest.mark.parametrize("command", ["checkpoint", "pause", "resume"])
def test_checkpoint_commands_parse(command: str) -> None:
    assert cli.parse_args([command, "abc"]).id == "abc"


def test_modules_prepare_needs_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["modules", "prepare", str(tmp_path / "missing.wasm")]) == 125
    assert "no such file" in capsys.readouterr().err


# ---------------------------------------------------------------- mounts


def test_mount_tree_is_read_sorted_with_links_unfollowed(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a-file").write_bytes(bytes(range(256)))
    (root / "b" / "deep" / "x.txt").write_text("x")
    (root / "empty").mkdir()
    os.symlink("b/deep/x.txt", root / "link")
    os.symlink("/nowhere", root / "b" / "dangling")
    mount = mounts.read_mount(mounts.MountSpec(root, "/app"))
    assert mount.guest_path == "/app"
    got = [(e.path, pb.FileEntry.Kind.Name(e.kind)) for e in mount.entries]
    assert got == [
        ("a-file", "FILE"),
        ("b", "DIRECTORY"),
        ("b/dangling", "SYMLINK"),
        ("b/deep", "DIRECTORY"),
        ("b/deep/x.txt", "FILE"),
        ("empty", "DIRECTORY"),
        ("link", "SYMLINK"),
    ]
    by_path = {e.path: e for e in mount.entries}
    assert by_path["a-file"].data == bytes(range(256))
    assert by_path["link"].target == "b/deep/x.txt" and not by_path["link"].data
    assert by_path["b/dangling"].target == "/nowhere"


def test_mount_of_a_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="not a directory"):
        mounts.read_mount(mounts.MountSpec(tmp_path / "missing", "/"))


def test_mount_of_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(MountError, match="not a file"):
        mounts.read_mount(mounts.MountSpec(tmp_path, "."))


# ---------------------------------------------------------------- display


@pytest.mark.parametrize(
    "text, expected",
    [("512", 512), ("64K", 65536), ("64k", 65536), ("256M", 256 << 20), ("1G", 1 << 30),
     ("1.5G", 3 << 29), ("2MiB", 2 << 20), ("3MB", 3 << 20), ("1T", 1 << 40)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert display.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-1", "1X", "one"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(LocalError):
        display.parse_size(text)


@pytest.mark.parametrize(
    "size, expected", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 << 20, "5.0 MiB"), (3 << 30, "3.0 GiB")]
)
def test_human_bytes(size: int, expected: str) -> None:
    assert display.human_bytes(size) == expected


@pytest.mark.parametrize(
    "seconds, expected",
    [(0.25, "250ms"), (42, "42s"), (192, "3m12s"), (5 * 3600 + 180, "5h03m"), (2 * 86400 + 4 * 3600, "2d04h"),
     (-3, "0ms")],
)
def test_human_duration(seconds: float, expected: str) -> None:
    assert display.human_duration(seconds) == expected


def test_table_aligns_columns() -> None:
    text = display.table(["ID", "STATE"], [["a1", "running"], ["bbbbbb", "exited"]])
    assert text.splitlines() == ["ID      STATE", "a1      running", "bbbbbb  exited"]


def test_execution_json_keeps_proto_names_and_zero_values() -> None:
    data = json.loads(display.to_json(pb.Execution(id="e1", state=pb.EXITED, stdout_bytes=7)))
    assert data["id"] == "e1" and data["state"] == "EXITED"
    assert data["exit_code"] == 0 and data["stdout_bytes"] == 7


def test_ps_row() -> None:
    e = pb.Execution(id="e1", name="n", state=pb.EXITED, exit_code=3, module_name="m.wasm",
                     create_time=times.to_timestamp(100.0), start_time=times.to_timestamp(101.0),
                     finish_time=times.to_timestamp(103.5))
    assert commands.execution_row(e, now=160.0) == ["e1", "n", "exited", "3", "m.wasm", "1m00s", "2s"]


@pytest.mark.parametrize(
    "execution, code",
    [
        (pb.Execution(state=pb.EXITED, exit_code=0), 0),
        (pb.Execution(state=pb.EXITED, exit_code=42), 42),
        (pb.Execution(state=pb.EXITED, exit_code=256), 1),
        (pb.Execution(state=pb.FAILED, error="trap"), 134),
        (pb.Execution(state=pb.KILLED), 137),
        (pb.Execution(state=pb.RUNNING), 125),
    ],
)
def test_exit_status(execution: pb.Execution, code: int) -> None:
    assert commands.exit_status(execution) == code


# ---------------------------------------------------------------- copy out


def file_chunks(path: str, data: bytes, part: int) -> list[pb.FileChunk]:
    return [
        pb.FileChunk(path=path, kind=pb.FileEntry.FILE, data=data[i : i + part], offset=i, size_bytes=len(data))
        for i in range(0, max(len(data), 1), part)
    ]


def test_copy_file_into_existing_dir_uses_basename(tmp_path: Path) -> None:
    written = copyout.write_chunks(file_chunks("", b"abcdefg", 3), "/app/out.txt", tmp_path)
    assert written == tmp_path / "out.txt"
    assert written.read_bytes() == b"abcdefg"


def test_copy_file_to_new_path(tmp_path: Path) -> None:
    copyout.write_chunks(file_chunks("", b"", 3), "out.wav", tmp_path / "renamed.wav")
    assert (tmp_path / "renamed.wav").read_bytes() == b""


def test_copy_tree(tmp_path: Path) -> None:
    chunks = [
        pb.FileChunk(path="", kind=pb.FileEntry.DIRECTORY),
        pb.FileChunk(path="sub", kind=pb.FileEntry.DIRECTORY),
        *file_chunks("sub/data.bin", bytes(range(200)), 64),
        pb.FileChunk(path="ln", kind=pb.FileEntry.SYMLINK, target="sub/data.bin"),
    ]
    root = copyout.write_chunks(chunks, "/", tmp_path / "out")
    assert root == tmp_path / "out"
    assert (root / "sub" / "data.bin").read_bytes() == bytes(range(200))
    assert os.readlink(root / "ln") == "sub/data.bin"


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a/../../b"])
def test_copy_refuses_paths_outside_destination(tmp_path: Path, bad: str) -> None:
    with pytest.raises(LocalError, match="unsafe"):
        copyout.write_chunks(file_chunks(bad, b"x", 1), "/d", tmp_path / "new")


# ---------------------------------------------------------------- reconnect


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_reconnect_gives_up_after_the_window() -> None:
    clock = FakeClock()
    reconnect = Reconnect(10.0, sleep=clock.sleep, clock=clock)

    def down() -> None:
        raise RoostClientError("UNAVAILABLE", "down")

    with pytest.raises(RoostClientError, match="down"):
        reconnect.call(down)
    assert 10.0 <= clock.now < 13.0


def test_reconnect_does_not_retry_real_answers() -> None:
    clock = FakeClock()
    reconnect = Reconnect(10.0, sleep=clock.sleep, clock=clock)
    with pytest.raises(RoostClientError, match="NOT_FOUND"):
        reconnect.pause(RoostClientError("NOT_FOUND", "no such execution"))
    assert clock.now == 0.0


def test_reconnect_window_restarts_after_a_healthy_spell() -> None:
    clock = FakeClock()
    reconnect = Reconnect(10.0, sleep=clock.sleep, clock=clock)
    reconnect.pause(RoostClientError("UNAVAILABLE", "down"))
    clock.now += 600  # a long quiet, healthy stream
    reconnect.pause(RoostClientError("UNAVAILABLE", "down again"))  # must not give up


def test_reconnect_never_waits_for_a_daemon_never_reached() -> None:
    clock = FakeClock()
    reconnect = Reconnect(10.0, sleep=clock.sleep, clock=clock, reached=False)
    with pytest.raises(RoostClientError, match="down"):
        reconnect.call(lambda: (_ for _ in ()).throw(RoostClientError("UNAVAILABLE", "down")))
    assert clock.now == 0.0
    assert reconnect.call(lambda: 7) == 7 and reconnect.reached   # an answer: outages now wait
    reconnect.pause(RoostClientError("UNAVAILABLE", "down"))
    assert clock.now > 0.0


# ---------------------------------------------------------------- fake daemon


@dataclass
class FakeControl(control_pb2_grpc.ControlServicer):
    """Just enough of roostd's Control service to drive the CLI."""

    logs: list[pb.LogChunk] = field(default_factory=list)
    final: pb.Execution = field(default_factory=lambda: pb.Execution(id="ex-1", state=pb.EXITED))
    known_modules: set[str] = field(default_factory=set)
    reject_module: str = ""
    break_logs_after: int | None = None  # first StreamLogs call aborts after this many chunks
    uploads: list[bytes] = field(default_factory=list)
    starts: list[pb.StartExecutionRequest] = field(default_factory=list)
    log_requests: list[pb.StreamLogsRequest] = field(default_factory=list)
    files: list[pb.FileChunk] = field(default_factory=list)

    def GetModule(self, request, context):
        if request.sha256 not in self.known_modules:
            context.abort(grpc.StatusCode.NOT_FOUND, f"module {request.sha256} not found")
        return pb.Module(sha256=request.sha256, name="known.wasm")

    def UploadModule(self, request_iterator, context):
        header, data = None, b""
        for part in request_iterator:
            if part.HasField("header"):
                header = part.header
            else:
                data += part.chunk
        if self.reject_module:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.reject_module)
        self.uploads.append(data)
        assert header is not None and header.size_bytes == len(data)
        assert header.sha256 == hashlib.sha256(data).hexdigest()
        return pb.Module(sha256=header.sha256, name=header.name, size_bytes=len(data))

    def StartExecution(self, request, context):
        self.starts.append(request)
        return pb.Execution(id=self.final.id, state=pb.RUNNING)

    def StreamLogs(self, request, context):
        self.log_requests.append(request)
        first_call = len(self.log_requests) == 1
        for n, chunk in enumerate(c for c in self.logs if c.seq >= request.from_seq):
            if first_call and self.break_logs_after == n:
                context.abort(grpc.StatusCode.UNAVAILABLE, "daemon restarting")
            if request.stream in (pb.LOG_STREAM_UNSPECIFIED, chunk.stream):
                yield chunk

    def GetExecution(self, request, context):
        if request.id != self.final.id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"execution {request.id} not found")
        return self.final

    def WaitExecution(self, request, context):
        return self.GetExecution(request, context)

    def ListExecutions(self, request, context):
        return pb.ListExecutionsResponse(executions=[self.final])

    def CopyOut(self, request, context):
        yield from self.files


@pytest.fixture
def fake() -> Iterator[tuple[FakeControl, str]]:
    control = FakeControl()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    control_pb2_grpc.add_ControlServicer_to_server(control, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield control, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "hello.wasm"
    path.write_bytes(WASM)
    return path


def chunk(seq: int, stream: int, data: bytes) -> pb.LogChunk:
    return pb.LogChunk(seq=seq, stream=stream, data=data)


def test_run_writes_guest_output_byte_exact_and_exits_with_its_code(
    fake: tuple[FakeControl, str], module: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    control, addr = fake
    control.logs = [chunk(0, pb.STDOUT, b"out\x00\xff"), chunk(1, pb.STDERR, b"err\r\n"), chunk(2, pb.STDOUT, b"!")]
    control.final = pb.Execution(id="ex-1", state=pb.EXITED, exit_code=3)
    assert cli.main(["--addr", addr, "run", str(module), "--", "a", "-b"]) == 3
    captured = capsysbinary.readouterr()
    assert captured.out == b"out\x00\xff!"
    assert captured.err == b"err\r\n"  # not a terminal: no progress line
    assert control.uploads == [WASM]
    start = control.starts[0]
    assert (start.argv0, list(start.args), start.module_sha256) == (
        "hello", ["a", "-b"], hashlib.sha256(WASM).hexdigest())


def test_run_sends_every_option(
    fake: tuple[FakeControl, str], module: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    control, addr = fake
    (tmp_path / "in.bin").write_bytes(b"\x01\x02")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_bytes(b"data")
    argv = ["--addr", addr, "run", "--detach", "--name", "job", "--argv0", "dot", "--env", "Z=1", "--env", "A=2",
            "--stdin", str(tmp_path / "in.bin"), "--mount", f"{tmp_path / 'tree'}:/", "--cooperative",
            "--checkpoint-every", "2.5", "--memory-limit", "64M", str(module)]
    assert cli.main(argv) == 0
    assert capsysbinary.readouterr().out == b"ex-1\n"
    start = control.starts[0]
    assert start.name == "job" and start.argv0 == "dot"
    assert [(e.key, e.value) for e in start.env] == [("Z", "1"), ("A", "2")]
    assert start.stdin == b"\x01\x02"
    assert start.mounts[0].guest_path == "/" and start.mounts[0].entries[0].data == b"data"
    assert start.cooperative and times.seconds_of(start.checkpoint_interval) == 2.5
    assert start.memory_limit_bytes == 64 << 20
    assert control.log_requests == []  # detached: no attach


def test_upload_is_skipped_when_the_daemon_has_the_module(fake: tuple[FakeControl, str], module: Path) -> None:
    control, addr = fake
    control.known_modules.add(hashlib.sha256(WASM).hexdigest())
    with Client(addr) as client:
        got = client.upload_module(module)
    assert got.deduplicated and control.uploads == []


def test_upload_progress_counts_to_the_total(fake: tuple[FakeControl, str], tmp_path: Path) -> None:
    _, addr = fake
    big = tmp_path / "big.wasm"
    big.write_bytes(WASM + bytes(3 * 1024 * 1024))
    calls: list[tuple[int, int]] = []
    with Client(addr) as client:
        client.upload_module(big, lambda sent, total: calls.append((sent, total)))
    total = big.stat().st_size
    assert calls[-1] == (total, total) and len(calls) == 4


def test_run_reconnects_and_resumes_logs_after_a_broken_stream(
    fake: tuple[FakeControl, str], module: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    control, addr = fake
    control.logs = [chunk(i, pb.STDOUT, b"%d\n" % i) for i in range(5)]
    control.break_logs_after = 2
    assert cli.main(["--addr", addr, "run", str(module)]) == 0
    assert capsysbinary.readouterr().out == b"0\n1\n2\n3\n4\n"
    assert [r.from_seq for r in control.log_requests] == [0, 2]


def test_run_failed_execution_exits_134_with_message(
    fake: tuple[FakeControl, str], module: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    control, addr = fake
    control.final = pb.Execution(id="ex-1", state=pb.FAILED, error="wasm trap: unreachable")
    assert cli.main(["--addr", addr, "run", str(module)]) == 134
    assert capsysbinary.readouterr().err == b"roost: execution ex-1 failed: wasm trap: unreachable\n"


def test_killed_execution_exits_137(fake: tuple[FakeControl, str], capsys: pytest.CaptureFixture[str]) -> None:
    control, addr = fake
    control.final = pb.Execution(id="ex-1", state=pb.KILLED)
    assert cli.main(["--addr", addr, "wait", "ex-1"]) == 137
    assert capsys.readouterr().out == ""


def test_rejected_module_says_so(
    fake: tuple[FakeControl, str], module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    control, addr = fake
    control.reject_module = "imports wasi_snapshot_preview1.sock_open, which roost does not provide"
    assert cli.main(["--addr", addr, "run", str(module)]) == 125
    assert capsys.readouterr().err == f"roost: module rejected: {control.reject_module}\n"


def test_unknown_execution_is_one_line(fake: tuple[FakeControl, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, addr = fake
    assert cli.main(["--addr", addr, "inspect", "nope"]) == 125
    assert capsys.readouterr().err == "roost: execution nope not found\n"


def test_unreachable_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--addr", "127.0.0.1:1", "ps"]) == 125
    assert capsys.readouterr().err.startswith("roost: cannot reach roostd at 127.0.0.1:1: ")


def test_missing_stdin_file_is_a_clear_error(
    fake: tuple[FakeControl, str], module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, addr = fake
    assert cli.main(["--addr", addr, "run", "--stdin", "/no/such/file", str(module)]) == 125
    assert capsys.readouterr().err == "roost: --stdin /no/such/file: No such file or directory\n"


def test_logs_filters_one_stream(fake: tuple[FakeControl, str], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    control, addr = fake
    control.logs = [chunk(0, pb.STDOUT, b"o"), chunk(1, pb.STDERR, b"e")]
    assert cli.main(["--addr", addr, "logs", "--stderr", "ex-1"]) == 0
    captured = capsysbinary.readouterr()
    assert (captured.out, captured.err) == (b"", b"e")
    assert cli.main(["--addr", addr, "logs", "ex-1"]) == 0
    captured = capsysbinary.readouterr()
    assert (captured.out, captured.err) == (b"o", b"e")


def test_follow_logs_returns_next_seq(fake: tuple[FakeControl, str]) -> None:
    control, addr = fake
    control.logs = [chunk(0, pb.STDOUT, b"a"), chunk(1, pb.STDOUT, b"b")]
    seen: list[bytes] = []
    with Client(addr) as client:
        assert follow_logs(client, "ex-1", write=lambda c: seen.append(c.data)) == 2
    assert seen == [b"a", b"b"]


def test_follow_notices_two_daemons_naming_each_other() -> None:
    """During a handover the source and the target can each name the other as the owner for a
    moment: following them must notice (and wait) instead of asking in a tight loop."""
    class Daemon:
        def __init__(self, addr: str) -> None:
            self.addr = addr

        def at(self, addr: str) -> "Daemon":
            return Daemon(addr)

    def answer(served_by: str, owner: str) -> pb.Execution:
        return pb.Execution(id="ex-1", served_by=served_by, owner=owner, owner_address=f"{owner}:1")

    follow = Follow(Daemon("a:1"))
    assert follow.track(answer("a", "b")) and not follow.bouncing and follow.client.addr == "b:1"
    assert follow.track(answer("b", "a")) and follow.bouncing and follow.client.addr == "a:1"
    assert not follow.track(answer("a", "a")) and not follow.bouncing
    assert follow.track(answer("a", "c")) and not follow.bouncing


def test_ps_and_wait_json(fake: tuple[FakeControl, str], capsys: pytest.CaptureFixture[str]) -> None:
    control, addr = fake
    control.final = pb.Execution(id="ex-1", state=pb.EXITED, exit_code=7)
    assert cli.main(["--addr", addr, "--json", "ps", "-a"]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == ["ex-1"]
    assert cli.main(["--addr", addr, "wait", "--json", "ex-1"]) == 7
    assert json.loads(capsys.readouterr().out)["exit_code"] == 7


def test_ps_table(fake: tuple[FakeControl, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, addr = fake
    assert cli.main(["--addr", addr, "ps"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "EXIT", "MODULE", "AGE", "RUNTIME"]
    assert row.split()[:3] == ["ex-1", "-", "exited"]


def test_cp_writes_the_tree(fake: tuple[FakeControl, str], tmp_path: Path) -> None:
    control, addr = fake
    control.files = [pb.FileChunk(path="", kind=pb.FileEntry.DIRECTORY), *file_chunks("r.txt", b"result", 4)]
    assert cli.main(["--addr", addr, "cp", "ex-1:/app/out", str(tmp_path / "got")]) == 0
    assert (tmp_path / "got" / "r.txt").read_bytes() == b"result"


# ---------------------------------------------------------------- conventions (issue 15)


def _commands_of(parser) -> list[tuple[str, object]]:
    from roost.client import conventions
    return [(path, p) for path, p in conventions.walk(parser) if path]


def test_every_flag_has_help_and_every_command_an_example() -> None:
    """Walks the whole parser, commands added by anyone included."""
    import argparse
    parser = cli.build_parser()
    no_help, no_example = [], []
    for path, command in [("", parser), *_commands_of(parser)]:
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                no_help += [f"{path} {a.dest}" for a in action._choices_actions if not a.help]
            elif action.help in (None, "", argparse.SUPPRESS) and action.dest != "help":
                no_help.append(f"{path or 'roost'} {'/'.join(action.option_strings) or action.dest}")
        if path and "example" not in (command.epilog or ""):
            no_example.append(path)
        if path and "example" not in command.format_help():
            no_example.append(f"{path} (--help does not show it)")
    assert not no_help, f"without help text: {no_help}"
    assert not no_example, f"without an example (conventions.EXAMPLES): {no_example}"


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in ("125", "134", "137", "130", "2 "):
        assert f"  {code}" in out


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from roost.client import conventions
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"roost {conventions.client_version()}\n"


@pytest.mark.parametrize("argv", [
    ["ps", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c", "--addr", "h:1", "--json"],
    ["--tls-ca", "a", "ps", "--tls-cert", "b", "--tls-key", "c", "--addr", "h:1", "--json"],
    ["--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c", "--addr", "h:1", "--json", "ps"],
])
def test_global_flags_go_before_or_after_the_command(argv: list[str]) -> None:
    ns = cli.parse_args(argv)
    assert (ns.tls_ca, ns.tls_cert, ns.tls_key, ns.addr, ns.json) == ("a", "b", "c", "h:1", True)


def test_global_flags_before_a_run_keep_guest_args_apart() -> None:
    ns = cli.parse_args(["--addr", "h:1", "--tls-key", "k", "run", "m.wasm", "--", "--addr", "x"])
    assert ns.args == ["--addr", "x"] and ns.addr == "h:1" and ns.tls_key == "k"


@pytest.mark.parametrize("given, dialed", [
    ("127.0.0.1", "127.0.0.1:7070"), ("127.0.0.1:9", "127.0.0.1:9"), ("host", "host:7070"),
    ("[::1]", "[::1]:7070"), ("[::1]:9", "[::1]:9"), ("::1", "[::1]:7070"),
    ("unix:/run/roost/roostd.sock", "unix:/run/roost/roostd.sock"), ("dns:///h:9", "dns:///h:9"),
])
def test_an_address_without_a_port_gets_7070(given: str, dialed: str) -> None:
    from roost.client.api import Client, with_default_port
    assert with_default_port(given) == dialed
    assert cli.parse_args(["--addr", given, "ps"]).addr == dialed
    with Client(given) as client:
        assert client.addr == dialed


@pytest.mark.parametrize("text", ["1K", "0", "63K", "5G"])
def test_memory_limit_out_of_range_is_a_usage_error_in_kib(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--memory-limit", text, "m.wasm"]) == 2
    err = capsys.readouterr().err
    assert "--memory-limit" in err and ("64K" in err or "4G" in err) and "page" not in err.split(":")[-1]


def test_memory_limit_bounds_are_accepted() -> None:
    assert cli.parse_args(["run", "--memory-limit", "64K", "m.wasm"]).memory_limit == 64 << 10
    assert cli.parse_args(["run", "--memory-limit", "4G", "m.wasm"]).memory_limit == 4 << 30


def test_run_reads_stdin_with_i_or_dash(fake: tuple[FakeControl, str], module: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys
    control, addr = fake
    for flags in (["-i"], ["--stdin", "-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped\x00bytes")))
        assert cli.main(["--addr", addr, "run", "-d", *flags, str(module)]) == 0
        assert control.starts[-1].stdin == b"piped\x00bytes"


def test_i_and_a_stdin_file_are_refused_together(module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--addr", "127.0.0.1:1", "run", "-i", "--stdin", "f", str(module)]) == 125
    assert "use one" in capsys.readouterr().err


def test_a_pipe_with_data_on_stdin_is_mentioned_when_not_forwarded(tmp_path: Path) -> None:
    from roost.client import conventions
    read, write = os.pipe()
    try:
        assert conventions.stdin_has_data(read) is False
        os.write(write, b"x")
        assert conventions.stdin_has_data(read) is True
    finally:
        os.close(read)
        os.close(write)
    with open(os.devnull, "rb") as null:
        assert conventions.stdin_has_data(null.fileno()) is False
    data = tmp_path / "in"
    data.write_bytes(b"abc")
    with data.open("rb") as f:
        assert conventions.stdin_has_data(f.fileno()) is True


def test_ps_quiet_prints_ids(fake: tuple[FakeControl, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, addr = fake
    assert cli.main(["--addr", addr, "ps", "-aq"]) == 0
    assert capsys.readouterr().out == "ex-1\n"
    assert cli.main(["--addr", addr, "ps", "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["ex-1"]


def test_logs_json_is_json_lines(fake: tuple[FakeControl, str], capsys: pytest.CaptureFixture[str]) -> None:
    control, addr = fake
    control.logs = [chunk(0, pb.STDOUT, b"text\n"), chunk(1, pb.STDERR, b"\xff\xfe")]
    assert cli.main(["--addr", addr, "logs", "--json", "ex-1"]) == 0
    first, second = map(json.loads, capsys.readouterr().out.splitlines())
    assert (first["seq"], first["stream"], first["data"]) == (0, "stdout", "text\n")
    assert (second["seq"], second["stream"], second["data_base64"]) == (1, "stderr", "//4=")


def test_run_json_ends_with_the_execution(fake: tuple[FakeControl, str], module: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    control, addr = fake
    control.logs = [chunk(0, pb.STDOUT, b"hi\n")]
    control.final = pb.Execution(id="ex-1", state=pb.EXITED, exit_code=4)
    assert cli.main(["--addr", addr, "run", "--json", str(module)]) == 4
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["data"] == "hi\n" and lines[-1]["execution"]["exit_code"] == 4


def test_cp_dash_writes_a_file_to_stdout(fake: tuple[FakeControl, str], tmp_path: Path,
                                         capsysbinary: pytest.CaptureFixture[bytes],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    control, addr = fake
    control.files = file_chunks("", b"abc\x00def", 3)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--addr", addr, "cp", "ex-1:/app/out", "-"]) == 0
    assert capsysbinary.readouterr().out == b"abc\x00def"
    assert not (tmp_path / "-").exists()


def test_cp_dash_writes_a_tree_as_tar(fake: tuple[FakeControl, str],
                                      capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import io
    import tarfile
    control, addr = fake
    control.files = [pb.FileChunk(path="", kind=pb.FileEntry.DIRECTORY),
                     pb.FileChunk(path="d", kind=pb.FileEntry.DIRECTORY),
                     *file_chunks("d/r.txt", b"result", 4),
                     pb.FileChunk(path="l", kind=pb.FileEntry.SYMLINK, target="d/r.txt"),
                     pb.FileChunk(path="h", kind=pb.FileEntry.HARDLINK, target="d/r.txt")]
    assert cli.main(["--addr", addr, "cp", "ex-1:/app/out", "-"]) == 0
    with tarfile.open(fileobj=io.BytesIO(capsysbinary.readouterr().out), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["out", "out/d", "out/d/r.txt", "out/l", "out/h"]
        assert tar.extractfile(members["out/d/r.txt"]).read() == b"result"
        assert members["out/l"].issym() and members["out/l"].linkname == "d/r.txt"
        assert members["out/h"].islnk() and members["out/h"].linkname == "out/d/r.txt"


def test_cp_json_summarises(fake: tuple[FakeControl, str], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    control, addr = fake
    control.files = [pb.FileChunk(path="", kind=pb.FileEntry.DIRECTORY), *file_chunks("r.txt", b"result", 4)]
    assert cli.main(["--addr", addr, "cp", "--json", "ex-1:/app/out", str(tmp_path / "got")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files"], summary["directories"], summary["bytes"]) == (1, 1, 6)
    assert cli.main(["--addr", addr, "cp", "--json", "ex-1:/app/out", "-"]) == 125


def test_sdk_path_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sdk-path", "--json"])
    out = capsys.readouterr().out
    assert code == 125 or json.loads(out)["path"]


# ---------------------------------------------------------------- completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_generated_and_parse(shell: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    import subprocess
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "migrate" in script and ("--memory-limit" in script or "-l memory-limit" in script)
    path = tmp_path / f"roost.{shell}"
    path.write_text(script)
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed: generated, not syntax-checked")
    check = [binary, "-n", str(path)] if shell != "fish" else [binary, "--no-execute", str(path)]
    got = subprocess.run(check, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr


def _bash_complete(tmp_path: Path, *words: str, env: dict | None = None) -> list[str]:
    """What the generated bash completion offers for `words` (the last one being completed)."""
    import subprocess

    from roost.client import completion
    script = tmp_path / "roost.bash"
    script.write_text(completion.script("bash", cli.build_parser()))
    quoted = " ".join(f"'{w}'" for w in words)
    driver = (f"source {script}\nCOMP_WORDS=({quoted}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
              "_roost; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    got = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, **(env or {})})
    assert got.returncode == 0, got.stderr
    return [line for line in got.stdout.splitlines() if line]


def test_bash_completes_commands_flags_and_files(tmp_path: Path) -> None:
    from roost.client import conventions
    parser = cli.build_parser()
    r_commands = sorted(c for c in conventions.subcommands(parser) if c.startswith("r"))
    assert {"run", "resume", "recover"} <= set(r_commands)
    assert sorted(_bash_complete(tmp_path, "roost", "r")) == r_commands
    assert sorted(_bash_complete(tmp_path, "roost", "--addr", "h:1", "r")) == r_commands
    assert "--memory-limit" in _bash_complete(tmp_path, "roost", "run", "--mem")
    assert "prepare" in _bash_complete(tmp_path, "roost", "modules", "")
    assert _bash_complete(tmp_path, "roost", "completion", "") == ["bash", "zsh", "fish"]
    (tmp_path / "app.wasm").write_bytes(WASM)
    (tmp_path / "notes.txt").write_text("")
    assert "app.wasm" in _bash_complete(tmp_path, "roost", "run", "")
    assert "notes.txt" not in _bash_complete(tmp_path, "roost", "run", "")
    assert "notes.txt" in _bash_complete(tmp_path, "roost", "run", "--stdin", "")


def test_bash_completes_execution_ids_from_ps(fake: tuple[FakeControl, str], tmp_path: Path) -> None:
    import sys
    _, addr = fake
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    roost = bin_dir / "roost"
    roost.write_text(f"#!/bin/sh\nexec {sys.executable} -m roost.client.cli \"$@\"\n")
    roost.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    assert _bash_complete(tmp_path, "roost", "--addr", addr, "inspect", "e", env={"PATH": path}) == ["ex-1"]


def test_inspect_shows_no_worker_pid_once_the_execution_is_not_running() -> None:
    pairs = dict(commands.inspect_lines(pb.Execution(id="e", state=pb.EXITED, worker_pid=42), 0.0))
    assert pairs["worker_pid"] == "-"
    pairs = dict(commands.inspect_lines(pb.Execution(id="e", state=pb.RUNNING, worker_pid=42), 0.0))
    assert pairs["worker_pid"] == "42"
