"""`roost logs --tail N --since T --timestamps` against a real roostd and a guest that prints a
line every few hundred ms (naps.c), byte for byte; `inspect`'s worker_pid once no worker runs
the execution; the daemon's log line for an execution it suspends at shutdown."""
from __future__ import annotations

import calendar
import json
import re
import subprocess
import time

import pytest

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until

STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})Z (.*\n?)$", re.S)


def _start(daemon: Roostd, *args: str) -> str:
    wasm = compile_guest("naps")
    return daemon.roost("run", "--detach", str(wasm), "--", *args, check=True).stdout.decode().strip()


def _logs(daemon: Roostd, exec_id: str, *options: str) -> bytes:
    return daemon.roost("logs", *options, exec_id, check=True).stdout


def _inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def _worker_pid(record: dict) -> int:
    return int(record.get("worker_pid", record.get("workerPid", 0)) or 0)


def _stamped(line: bytes) -> tuple[int, bytes]:
    """(unix ns, the line) of a `--timestamps` line."""
    m = STAMP.match(line)
    assert m, line
    seconds = calendar.timegm(time.strptime(m[1].decode(), "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int(m[2]), m[3]


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


@pytest.fixture(scope="module")
def ended(roostd):
    """An execution that printed 6 lines, 150 ms apart, and ended."""
    exec_id = _start(roostd, "6", "150")
    assert roostd.roost("wait", exec_id).returncode == 0
    return exec_id


def test_tail_gives_the_last_lines_byte_for_byte(roostd, ended):
    full = _logs(roostd, ended)
    lines = full.splitlines(keepends=True)
    assert len(lines) == 6
    assert _logs(roostd, ended, "--tail", "3") == b"".join(lines[-3:])
    assert _logs(roostd, ended, "-n", "1") == lines[-1]
    assert _logs(roostd, ended, "--tail", "0") == b""
    assert _logs(roostd, ended, "--tail", "all") == full
    assert _logs(roostd, ended, "--tail", "99") == full


def test_timestamps_start_every_line_and_do_not_decrease(roostd, ended):
    full = _logs(roostd, ended)
    stamped = [_stamped(line) for line in _logs(roostd, ended, "-t").splitlines(keepends=True)]
    assert b"".join(line for _, line in stamped) == full
    times = [t for t, _ in stamped]
    assert times == sorted(times)
    assert abs(times[-1] - time.time_ns()) < 600 * 10**9
    assert times[-1] - times[0] >= 4 * 150 * 10**6       # made durable as printed, not at once
    tail = [_stamped(line) for line in _logs(roostd, ended, "--timestamps", "--tail", "2").splitlines(True)]
    assert tail == stamped[-2:]


def test_since_between_two_outputs_gives_exactly_the_later_ones(roostd, ended):
    lines = _logs(roostd, ended).splitlines(keepends=True)
    times = [_stamped(line)[0] for line in _logs(roostd, ended, "-t").splitlines(keepends=True)]
    between = (times[2] + times[3]) // 2
    assert times[2] < between < times[3]
    assert _logs(roostd, ended, "--since", _rfc3339(between)) == b"".join(lines[3:])
    assert _logs(roostd, ended, "--since", _rfc3339(times[3])) == b"".join(lines[3:])   # at it: in
    assert _logs(roostd, ended, "--since", _rfc3339(times[3] + 1)) == b"".join(lines[4:])
    assert _logs(roostd, ended, "--since", "1h") == b"".join(lines)
    assert _logs(roostd, ended, "--since", _rfc3339(between), "--tail", "1") == lines[-1]


def test_a_bad_since_or_tail_is_one_usage_line(roostd, ended):
    for flag, value in (("--since", "yesterday"), ("--tail", "-3")):
        got = roostd.roost("logs", flag, value, ended)
        assert got.returncode != 0 and b"Traceback" not in got.stderr
        assert flag.encode() in got.stderr


def test_follow_with_tail_starts_at_the_last_lines_then_follows_to_the_end(roostd):
    exec_id = _start(roostd, "10", "250")
    wait_until(lambda: _logs(roostd, exec_id).count(b"\n") >= 3, timeout=60, what="3 lines")
    before = _logs(roostd, exec_id).count(b"\n")
    follow = subprocess.run([*roostd.roost_command(), "logs", "-f", "--tail", "2", "-t", exec_id],
                            capture_output=True, timeout=120, check=True)
    full = _logs(roostd, exec_id).splitlines(keepends=True)
    got = [_stamped(line)[1] for line in follow.stdout.splitlines(keepends=True)]
    assert len(full) == 10
    assert 2 <= len(got) <= len(full) - before + 2 < len(full)
    assert got == full[-len(got):]


def test_worker_pid_is_that_of_the_running_worker_and_0_once_none_runs_it(roostd, ended):
    assert _worker_pid(_inspect(roostd, ended)) == 0                    # ended
    exec_id = _start(roostd, "100", "100")
    wait_until(lambda: _worker_pid(_inspect(roostd, exec_id)) != 0, timeout=60, what="a worker")
    roostd.roost("pause", exec_id, check=True)
    record = _inspect(roostd, exec_id)
    assert record["state"] == "PAUSED" and _worker_pid(record) == 0
    roostd.roost("kill", exec_id)


def test_an_execution_suspended_at_shutdown_is_logged_as_such(fresh_roostd):
    fresh_roostd.start()
    exec_id = _start(fresh_roostd, "1000", "100")
    wait_until(lambda: _logs(fresh_roostd, exec_id).count(b"\n") >= 1, timeout=60, what="a line")
    fresh_roostd.stop()
    log = fresh_roostd.log_path.read_text(errors="replace")
    assert f"execution {exec_id} suspended at shutdown (RUNNING, resumes at the next start)" in log
    assert f"{exec_id} ended: RUNNING" not in log
    fresh_roostd.restart()
    record = _inspect(fresh_roostd, exec_id)
    assert record["state"] == "RUNNING"
    wait_until(lambda: _worker_pid(_inspect(fresh_roostd, exec_id)) != 0, timeout=60, what="restore")
    fresh_roostd.roost("kill", exec_id)
