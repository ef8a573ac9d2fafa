"""A worker the kernel's OOM killer kills fails only its own execution (node/oom.py).

roostd runs in a memory cgroup of the test's own, a child of the test's cgroup; once it runs a
healthy guest its limit is set to what the cgroup uses then plus some room, and a guest that
allocates without end (late_memhog) pushes the cgroup over it. The kernel kills the biggest process
of the cgroup: that guest's worker. Its execution must end FAILED with the OOM error (not be
replayed again and again), while the healthy execution finishes with its right output and roostd
keeps serving. Skipped where no memory cgroup can be created (no cgroup fs, not root).
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.daemon.node.oom import MemoryCgroup, find_memory_cgroup
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until
from tests.framework.native import run_native

ROOM_BYTES = 256 << 20      # above the usage with the healthy guest running: memhog's to fill


def _limit_file(cgroup: MemoryCgroup) -> str:
    return "memory.limit_in_bytes" if cgroup.version == 1 else "memory.max"


def _usage(cgroup: MemoryCgroup) -> int:
    assert cgroup.directory is not None
    name = "memory.usage_in_bytes" if cgroup.version == 1 else "memory.current"
    return int((cgroup.directory / name).read_text())


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    """A new memory cgroup under this process's own, without a limit yet; removed after."""
    parent = find_memory_cgroup()
    if parent.directory is None:
        pytest.skip("no memory cgroup (cgroup v1 memory controller or v2 with memory) is mounted")
    directory = parent.directory / f"roost-test-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a memory cgroup under {parent.directory}: {e}")
    cgroup = MemoryCgroup(f"{parent.name.rstrip('/')}/{directory.name}", directory, parent.version)
    try:
        if not (directory / _limit_file(cgroup)).exists() or cgroup.oom_kills() is None:
            pytest.skip(f"{directory} has no memory limit or OOM-kill counter (memory controller "
                        "not enabled for it)")
        yield cgroup
    finally:
        _remove(directory)


def _remove(directory: Path) -> None:
    """rmdir once the cgroup's processes (roostd's workers, exiting after it) are gone."""
    procs = directory / "cgroup.procs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if not procs.read_text().split():
                directory.rmdir()
                return
        except OSError:
            pass
        time.sleep(0.1)
    for pid in procs.read_text().split():       # stragglers: only ever roostd's processes
        os.kill(int(pid), 9)
    wait_until(lambda: not procs.read_text().split(), 10, what=f"{directory} to empty")
    directory.rmdir()


def _inspect(daemon: Roostd, exec_id: str) -> dict:
    got = daemon.roost("inspect", "--json", exec_id, check=True)
    return json.loads(got.stdout)


def test_oom_killed_worker_fails_only_its_execution(tmp_path, memory_cgroup):
    assert memory_cgroup.directory is not None
    daemon = Roostd(tmp_path / "data")
    # roostd is in the cgroup from its start (the shell writes its own pid, then execs roostd):
    # so is every worker it spawns.
    daemon.wrap = ["sh", "-c", f'echo $$ > {memory_cgroup.directory}/cgroup.procs && exec "$@"', "sh"]
    daemon.start()
    try:
        healthy = compile_guest("spin_print")
        args = ["400", "10000000"]             # ~12 s: still running when the hog is killed
        native = run_native(healthy, ["spin_print", *args])
        hog = compile_guest("late_memhog")
        ok_id = daemon.roost("run", "--detach", str(healthy), "--", *args, check=True).stdout.decode().strip()
        # The hog computes 4 s before it allocates: meanwhile the spare workers replacing the two
        # taken settle, and the limit is set above what roostd and its workers use then. (Were a
        # spare still starting when the OOM killer strikes, it could be a second victim: the
        # kernel may kill again before the first victim's memory is uncharged.)
        hog_id = daemon.roost("run", "--detach", str(hog), "--", "4", check=True).stdout.decode().strip()
        time.sleep(3.0)
        worker = int(_inspect(daemon, ok_id)["worker_pid"])    # the OOM killer's first choice:
        assert Path(f"/proc/{worker}/oom_score_adj").read_text().strip() == "500"   # not roostd
        limit = _usage(memory_cgroup) + ROOM_BYTES
        (memory_cgroup.directory / _limit_file(memory_cgroup)).write_text(str(limit))
        if memory_cgroup.version == 2 and (memory_cgroup.directory / "memory.swap.max").exists():
            (memory_cgroup.directory / "memory.swap.max").write_text("0")

        def hog_ended() -> bool:
            assert daemon.serving(), "roostd stopped serving"     # (raises with its log if it died)
            return _inspect(daemon, hog_id)["state"] != "RUNNING"

        wait_until(hog_ended, 120, interval=0.5, what="the memory hog's execution to end")
        record = _inspect(daemon, hog_id)
        assert record["state"] == "FAILED", record
        assert "killed by the kernel's OOM killer" in record["error"], record["error"]
        assert "memory cgroup limit" in record["error"] and memory_cgroup.name in record["error"]
        assert memory_cgroup.oom_kills() >= 1
        assert "restoring" not in daemon.log()          # failed at once, never replayed
        assert daemon.roost("logs", "--stdout", hog_id).stdout == b"allocating\n"

        assert daemon.roost("wait", ok_id, timeout=300).returncode == native.exit_code
        healthy_record = _inspect(daemon, ok_id)     # untouched: its worker never died
        assert healthy_record["state"] == "EXITED" and not int(healthy_record.get("restores", 0)), healthy_record
        assert daemon.roost("logs", "--stdout", ok_id).stdout == native.stdout
        assert daemon.serving() and daemon.proc is not None and daemon.proc.poll() is None
        assert re.search(r'^roost_worker_failures(_total)?\{reason="oom"\} 1\.0$', daemon.metrics(), re.M)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
