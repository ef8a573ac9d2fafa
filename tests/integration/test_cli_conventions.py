"""The `roost` CLI behaves like the CLIs operators already trust (docker, podman, temporal),
against real daemons: exit codes, versions, `-i` and `-` for stdin/stdout, --json on every
command that takes it, global flags anywhere, TLS mismatches explained in one line.
"""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from roost.client import cli, conventions
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, make_ca, make_cert, wait_until


def _id(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().strip()


def _one_line(stderr: bytes) -> str:
    """The whole of stderr, which must be one `roost: ...` line (no traceback, no grpc log)."""
    text = stderr.decode()
    assert text.count("\n") == 1 and text.startswith("roost: "), text
    return text


# ---------------------------------------------------------------- exit codes


def test_exit_codes_tell_roost_guest_failed_and_killed_apart(roostd):
    exitcode, trap = compile_guest("exitcode"), compile_guest("trap_unreachable")
    assert roostd.roost("run", str(exitcode), "--", "1").returncode == 1        # the guest's
    assert roostd.roost("run", str(exitcode), "--", "0").returncode == 0
    assert roostd.roost("run", str(exitcode), "--", "42").returncode == 42
    failed = roostd.roost("run", "--name", "conv-trap", str(trap))
    assert failed.returncode == conventions.EXIT_FAILED == 134
    assert b"failed" in failed.stderr
    assert roostd.roost("wait", "conv-trap").returncode == 134
    sleeper = _id(roostd.roost("run", "-d", str(compile_guest("sleeper")), "--", "600"))
    assert roostd.roost("kill", sleeper).returncode == 0
    assert roostd.roost("wait", sleeper).returncode == conventions.EXIT_KILLED == 137
    missing = roostd.roost("inspect", "no-such-execution")
    assert missing.returncode == conventions.EXIT_ERROR == 125
    _one_line(missing.stderr)
    assert roostd.roost("run", str(tmp_missing := "/no/such/module.wasm")).returncode == 125, tmp_missing
    assert roostd.roost("bogus-command").returncode == 2                          # usage
    assert roostd.roost("run", "--memory-limit", "1K", str(exitcode)).returncode == 2


def test_unreachable_daemon_is_125_in_one_line():
    got = subprocess.run([str(BIN / "roost"), "--addr", "127.0.0.1:1", "ps"], capture_output=True)
    assert got.returncode == 125
    assert "cannot reach roostd at 127.0.0.1:1" in _one_line(got.stderr)


@pytest.mark.parametrize("command", [["wait", "x"], ["logs", "-f", "x"]])
def test_wait_and_follow_do_not_wait_out_a_daemon_never_reached(command):
    """(They retry a daemon that goes away while they follow it; one never reached is an error.)"""
    got = subprocess.run([str(BIN / "roost"), "--addr", "127.0.0.1:1", *command], capture_output=True,
                         timeout=30)
    assert got.returncode == 125
    assert "cannot reach roostd at 127.0.0.1:1" in _one_line(got.stderr)


# ---------------------------------------------------------------- versions


def test_version_flag_and_command(roostd):
    flag = subprocess.run([str(BIN / "roost"), "--version"], capture_output=True, text=True)
    assert flag.returncode == 0 and flag.stdout.strip() == f"roost {conventions.client_version()}"
    both = json.loads(roostd.roost("version", "--json", check=True).stdout)
    assert both["client"]["api"] == both["server"]["api"] == "roost.v1"
    assert both["server"]["node_id"] == roostd.node_id
    assert both["server"]["version"] == conventions.client_version()
    assert both["server"]["wasmtime"] and both["server"]["python"]
    text = roostd.roost("version", check=True).stdout.decode()
    assert text.startswith("Client:") and f"Server: roostd at {roostd.addr}" in text


def test_version_without_a_daemon_prints_the_client_then_the_error():
    got = subprocess.run([str(BIN / "roost"), "--addr", "127.0.0.1:1", "version"], capture_output=True)
    assert got.returncode == 125
    assert got.stdout.decode().startswith("Client:\n version:")
    _one_line(got.stderr)


# ---------------------------------------------------------------- stdin and stdout


def test_piped_stdin_is_forwarded_with_i_and_said_without(roostd):
    echo = str(compile_guest("stdin_echo"))
    for flags in (["-i"], ["--interactive"], ["--stdin", "-"]):
        got = roostd.roost("run", *flags, echo, input=b"hello, guest")
        assert got.returncode == 0, got.stderr
        assert got.stdout.startswith(b"hello, guest\n[read 12 bytes")
    dropped = roostd.roost("run", echo, input=b"unread")
    assert dropped.stdout.startswith(b"\n[read 0 bytes")
    assert b"stdin is not forwarded to the guest without -i" in dropped.stderr
    quiet = roostd.roost("run", echo, input=b"")              # an empty pipe: nothing to say
    assert b"not forwarded" not in quiet.stderr


def test_cp_to_dash_writes_a_file_or_a_tar_stream(roostd, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "label.txt").write_bytes(b"label\x00\xff\n")
    (data / "sub" / "x").write_bytes(b"x" * 3000)
    run = roostd.roost("run", "--name", "conv-cp", "--mount", f"{data}:/data",
                       str(compile_guest("hello")))
    assert run.returncode == 0, run.stderr
    one = roostd.roost("cp", "conv-cp:/data/label.txt", "-", check=True)
    assert one.stdout == b"label\x00\xff\n"
    tree = roostd.roost("cp", "conv-cp:/data", "-", check=True)
    with tarfile.open(fileobj=io.BytesIO(tree.stdout), mode="r:") as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert set(names) == {"data", "data/label.txt", "data/sub", "data/sub/x"}
        assert tar.extractfile(names["data/sub/x"]).read() == b"x" * 3000
    summary = json.loads(roostd.roost("cp", "--json", "conv-cp:/data", str(tmp_path / "out"),
                                      check=True).stdout)
    assert (summary["files"], summary["directories"], summary["bytes"]) == (2, 2, 3008)
    assert (tmp_path / "out" / "sub" / "x").read_bytes() == b"x" * 3000
    assert not (Path.cwd() / "-").exists()


# ---------------------------------------------------------------- --json everywhere


def _json_or_lines(text: str) -> list:
    """stdout of a --json command: one JSON document, or JSON lines."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines()]
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON: {text[:300]!r}") from None


def _json_calls(roostd: Roostd, tmp_path: Path) -> list[tuple[str, list[str]]]:
    """A command line for every command of the parser, in an order that works on one daemon:
    `ran` ended, `busy` runs (prepared: checkpoints work)."""
    hello, loop = str(compile_guest("hello")), str(compile_guest("compute_loop"))
    ran = _id(roostd.roost("run", "-d", "--name", "conv-json-ran", hello))
    roostd.roost("wait", ran)
    busy = _id(roostd.roost("run", "-d", loop, "--", "100000000000"))
    wait_until(lambda: json.loads(roostd.roost("inspect", "--json", busy, check=True).stdout)
               ["state"] == "RUNNING", what="busy to run")
    return [
        ("run", [hello]), ("ps", []), ("nodes", []), ("inspect", [ran]), ("logs", [ran]),
        ("wait", [ran]), ("cp", [f"{ran}:/", str(tmp_path / "cp-out")]), ("modules", []),
        ("modules prepare", [hello]), ("checkpoint", [busy]), ("debug checkpoint", [busy]),
        ("pause", [busy]), ("resume", [busy]), ("migrate", [busy, "--to", roostd.addr]),
        ("recover", [ran, "--on", roostd.addr]), ("sdk-path", []), ("drain", ["no-such-node"]),
        ("version", []), ("completion", ["bash"]), ("kill", [busy]),
        ("modules rm", ["0" * 64]), ("rm", [ran]), ("prune", []),
    ]


def _subcommand_required(parser) -> bool:
    return any(getattr(a, "required", False) and a.choices for a in parser._actions
               if not a.option_strings)


def test_every_command_that_takes_json_prints_json(roostd, tmp_path):
    calls = _json_calls(roostd, tmp_path)
    commands = {path for path, p in conventions.walk(cli.build_parser())
                if path and not _subcommand_required(p)}
    missing = commands - {path for path, _ in calls}
    assert not missing, f"add a --json call for {sorted(missing)}"
    for path, args in calls:
        if path not in commands:
            continue                                  # a command this version does not have
        call = [*path.split(), *args]
        got = roostd.roost(*call, "--json")
        out = got.stdout.decode()
        assert out or got.returncode != 0, (call, got.stderr)
        if out:
            assert _json_or_lines(out), (call, out)   # raises if any of it is not JSON
        if got.returncode not in (0, 1):              # (1: hello's own code, run/wait)
            assert got.returncode == 125, (call, got.returncode, got.stderr)
            assert got.stderr.startswith(b"roost: ") and b"Traceback" not in got.stderr


def test_run_json_streams_records_then_the_execution(roostd):
    got = roostd.roost("run", "--json", str(compile_guest("hello")), "--", "a")
    records = [json.loads(line) for line in got.stdout.decode().splitlines()]
    assert {"seq", "stream", "data"} <= set(records[0])
    assert "".join(r["data"] for r in records[:-1] if r["stream"] == "stdout").startswith("hello from")
    assert records[-1]["execution"]["state"] == "EXITED"
    assert got.returncode == records[-1]["execution"]["exit_code"]
    detached = json.loads(roostd.roost("run", "-d", "--json", str(compile_guest("hello")),
                                       check=True).stdout)
    assert detached["id"]


# ---------------------------------------------------------------- flags and TLS


def test_global_flags_go_after_the_command_too(roostd):
    got = subprocess.run([str(BIN / "roost"), "ps", "--json", "--addr", roostd.addr],
                         capture_output=True, check=True)
    assert isinstance(json.loads(got.stdout), list)


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv-tls")
    ca = make_ca(root / "pki", "conv")
    daemon = Roostd(root / "d", tls=make_cert(ca, root / "pki", "conv-node")).start()
    yield daemon, make_cert(ca, root / "pki", "conv-user", role="client")
    daemon.stop()


def test_tls_mismatches_are_one_line_each_way(roostd, tls_daemon):
    daemon, user = tls_daemon
    tls_flags = ["--tls-ca", str(user[0]), "--tls-cert", str(user[1]), "--tls-key", str(user[2])]
    plain_at_tls = subprocess.run([str(BIN / "roost"), "--addr", daemon.addr, "ps"], capture_output=True)
    assert plain_at_tls.returncode == 125
    assert f"roostd at {daemon.addr} speaks TLS: give --tls-ca" in _one_line(plain_at_tls.stderr)
    tls_at_plain = subprocess.run([str(BIN / "roost"), "ps", "--addr", roostd.addr, *tls_flags],
                                  capture_output=True)
    assert tls_at_plain.returncode == 125
    assert f"roostd at {roostd.addr} does not speak TLS" in _one_line(tls_at_plain.stderr)
    ok = subprocess.run([str(BIN / "roost"), "ps", "--json", *tls_flags, "--addr", daemon.addr],
                        capture_output=True)
    assert ok.returncode == 0 and json.loads(ok.stdout) == [], ok.stderr
