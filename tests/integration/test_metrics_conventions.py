"""/metrics as Prometheus' own tools read it: a real roostd, after a guest ran and was
checkpointed (so that the histograms and labelled series exist), scraped and checked by
`promtool check metrics` (names, units, suffixes, HELP); then the series an operator looks for
first: process_* (roostd's own process), roost_build_info, and the gRPC server's requests by
service, method, type and code, on both of roostd's Control endpoints (TCP and Unix socket).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, wait_until
from tests.integration.test_durability import SPIN, _stdout_len

ROOT = Path(__file__).resolve().parents[2]
CONTROL = "roost.v1.Control"


def _promtool() -> str:
    """promtool (tests/env.sh puts it in tests/.cache/bin); a skip only where env.sh wrote down
    why it could not."""
    found = shutil.which("promtool") or shutil.which("promtool", path=str(ROOT / "tests/.cache/bin"))
    if found:
        return found
    failed = ROOT / "tests/.cache/promtool-unavailable"
    if failed.exists():
        pytest.skip(f"promtool unavailable: {failed.read_text().strip()}")
    pytest.fail("promtool not found: tests/env.sh installs it (bash tests/run.sh, or source tests/env.sh)")


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def _value(text: str, name: str, **labels: str) -> float:
    return sum(v for n, got, v in _samples(text) if n == name and labels.items() <= got.items())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A roostd serving Control on TCP and on a Unix socket, a guest run and checkpointed."""
    sock_dir = Path(tempfile.mkdtemp(prefix="rm-", dir="/tmp"))        # (a socket path: < 108 bytes)
    daemon = Roostd(tmp_path_factory.mktemp("metrics") / "data")
    daemon.control_socket = str(sock_dir / "roostd.sock")
    daemon.start()
    wasm = compile_guest("spin_print")
    exec_id = daemon.roost("run", "--detach", str(wasm), "--", *SPIN, check=True).stdout.decode().strip()
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
    daemon.roost("checkpoint", exec_id, check=True)
    daemon.roost("wait", exec_id)
    daemon.roost("logs", exec_id, check=True)                         # a server stream
    assert daemon.roost("inspect", "0" * 32).returncode != 0          # a NOT_FOUND
    daemon.exec_id = exec_id
    yield daemon
    daemon.stop()
    shutil.rmtree(sock_dir, ignore_errors=True)


def test_promtool_check_metrics_is_clean(daemon):
    text = daemon.metrics()
    checked = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
    problems = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and problems == "", problems
    assert "roost_checkpoint_duration_seconds_count" in text                   # series that exist
    assert "roost_checkpoint_total_seconds" not in text                         # (renamed)


def test_process_platform_and_gc_collectors(daemon):
    text = daemon.metrics()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds", "python_info",
                 "python_gc_collections_total"):
        assert name in {n for n, _, _ in _samples(text)}, name
    assert "execution workers are separate processes" in text        # whose process it is


def test_build_info(daemon):
    (labels,) = [got for n, got, v in _samples(daemon.metrics()) if n == "roost_build_info" and v == 1]
    assert set(labels) == {"version", "python", "wasmtime", "prepare_version"}
    assert labels["wasmtime"][0].isdigit() and labels["prepare_version"].isdigit()


def test_grpc_server_requests_by_method_and_code(daemon):
    text = daemon.metrics()
    started = _value(text, "roost_grpc_server_started_total", grpc_service=CONTROL,
                     grpc_method="StartExecution", grpc_type="unary")
    handled = _value(text, "roost_grpc_server_handled_total", grpc_service=CONTROL,
                     grpc_method="StartExecution", grpc_type="unary", grpc_code="OK")
    assert started >= 1 and handled >= 1
    assert _value(text, "roost_grpc_server_handled_total", grpc_service=CONTROL,
                  grpc_method="GetExecution", grpc_code="NotFound") >= 1
    assert _value(text, "roost_grpc_server_handled_total", grpc_service=CONTROL, grpc_method="StreamLogs",
                  grpc_type="server_stream", grpc_code="OK") >= 1
    assert _value(text, "roost_grpc_server_handling_seconds_count", grpc_service=CONTROL,
                  grpc_method="StartExecution") >= 1
    assert _value(text, "roost_grpc_server_handled_total", grpc_service="grpc.health.v1.Health",
                  grpc_method="Check", grpc_code="OK") >= 1


def test_grpc_metrics_count_the_unix_socket_too(daemon):
    def listed() -> float:
        return _value(daemon.metrics(), "roost_grpc_server_handled_total", grpc_service=CONTROL,
                      grpc_method="ListExecutions", grpc_code="OK")
    before = listed()
    got = subprocess.run([str(BIN / "roost"), "--addr", f"unix:{daemon.control_socket}", "ps", "-a"],
                         capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert daemon.exec_id[:12].encode() in got.stdout
    assert listed() > before
