"""A malicious guest is bounded (issue 10): absurd sleeps, a sparse or huge file, inodes, hard
links, deep trees, extreme host-call arguments and a flood of output each meet a limit the guest
sees as an errno (or a pause, for output), never an internal error, a dead timer thread or a
worker that outgrows its memory limit; VFS timestamps are identical across a restore."""
from __future__ import annotations

import functools
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, process_alive, wait_until
from tests.framework.native import run_native
from tests.integration.test_durability import _inspect, _kill_worker

MiB = 1 << 20
VFS_BYTES = 64 * MiB
INODES = 2000
LINKS = 100
OUTPUT_BYTES = 1 * MiB
LIMITS = f"""
[limits]
vfs_bytes = {VFS_BYTES}
vfs_inodes = {INODES}
links = {LINKS}
output_bytes = {OUTPUT_BYTES}
"""
# The sparse guest's worker (up to 64 MiB of guest memory, 64 MiB of files, Python and wasmtime:
# ~110 MiB measured) stays under this; before the limits its files alone passed 1 GiB (a write
# after a seek to 1 GiB), or the execution failed (pwrite at 2^40: MemoryError).
WORKER_HWM_BOUND = 320 * MiB
DAEMON_RSS_BOUND = 512 * MiB


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A daemon with small guest limits (files, inodes, links, output)."""
    daemon = Roostd(tmp_path_factory.mktemp("limited") / "data", config_text=LIMITS).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "mount"
    d.mkdir()
    (d / "input.txt").write_text("input\n")
    return d


def _start(daemon: Roostd, wasm: Path, *args: str, opts: tuple = ()) -> str:
    out = daemon.roost("run", "--detach", *opts, str(wasm), "--", *args, check=True)
    return out.stdout.decode().strip()


def _stdout(daemon: Roostd, exec_id: str) -> bytes:
    return daemon.roost("logs", "--stdout", exec_id).stdout


def _state(daemon: Roostd, exec_id: str) -> str:
    return _inspect(daemon, exec_id)["state"]


def _native(wasm: Path, argv: list[str], mount: Path):
    """The plain wasmtime run (its copy of the mount removed without recursion: deep trees)."""
    keep = Path(tempfile.mkdtemp(prefix="native-"))
    try:
        return run_native(wasm, argv, mounts=[(mount, "/data")], keep=keep)
    finally:
        subprocess.run(["rm", "-rf", str(keep)], check=False)


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# ---- timeouts ----------------------------------------------------------------------------------
HUGE = ("ns", "u64", "abs")     # nanosleep(1e19 ns); poll 2^64-1 ns relative; and absolute


def test_huge_sleeps_neither_fail_nor_stop_other_sleepers(fresh_roostd):
    """Guests sleeping 1e19 ns and 2^64-1 ns sleep (durably; killable), and another
    execution's 3 s durable sleep still wakes on time — before and after a daemon restart."""
    daemon = fresh_roostd.start()
    huge = compile_guest("hugesleep")
    sleepers = []
    for mode in HUGE:                    # after each, another execution's sleep still wakes
        sleepers.append(_start(daemon, huge, mode))
        wait_until(lambda: _state(daemon, sleepers[-1]) in ("SLEEPING", "FAILED", "EXITED"),
                   timeout=30, what="the huge sleeper to sleep")
        record = _inspect(daemon, sleepers[-1])
        assert record["state"] == "SLEEPING", record.get("error")
        _second_sleeper_wakes(daemon)
    daemon.kill9()
    daemon.start()
    assert [_state(daemon, i) for i in sleepers] == ["SLEEPING"] * len(HUGE)
    _second_sleeper_wakes(daemon)
    for exec_id in sleepers:
        daemon.roost("kill", exec_id)
        wait_until(lambda: _state(daemon, exec_id) == "KILLED", timeout=10, what="KILLED")
    assert "OverflowError" not in daemon.log()


def _second_sleeper_wakes(daemon: Roostd) -> None:
    wasm = compile_guest("sleeper")
    exec_id = _start(daemon, wasm, "3")
    began = time.monotonic()
    wait_until(lambda: _state(daemon, exec_id) == "SLEEPING", timeout=10, what="SLEEPING")
    assert daemon.roost("wait", exec_id, timeout=30).returncode == 0
    assert time.monotonic() - began < 15
    assert _stdout(daemon, exec_id) == _native_sleeper(wasm)


@functools.lru_cache(maxsize=None)
def _native_sleeper(wasm: Path) -> bytes:
    return run_native(wasm, ["sleeper", "3"]).stdout


# ---- files --------------------------------------------------------------------------------------
SPARSE_EXPECTED = b"""pwrite at 2^40: EFBIG
seek to 1 GiB: OK
write at 1 GiB: EFBIG
ftruncate 2^40: EFBIG
seek back: OK
1 MiB writes: ENOSPC after at least 16
another file when full: ENOSPC
remove the big file: OK
write after removing it: OK
write of 2097152 empty iovecs: rc=0 written=0
limits reached
"""


def test_sparse_file_and_pwrite_at_2_40_are_bounded(limited, data_dir):
    """Under --memory-limit 64M: EFBIG for a file past the limit, ENOSPC when the files fill it,
    room again after a removal; the worker's peak RSS stays bounded, so does the daemon's."""
    wasm = compile_guest("vfs_limits")
    exec_id = _start(limited, wasm, "sparse", "200",
                     opts=("--memory-limit", "64M", "--mount", f"{data_dir}:/data"))
    wait_until(lambda: b"limits reached" in _stdout(limited, exec_id) or
               _state(limited, exec_id) not in ("RUNNING", "PENDING"), timeout=60,
               what="the guest to reach its limits")
    pid = int(_inspect(limited, exec_id)["worker_pid"])
    hwm = _status_kib(pid, "VmHWM") * 1024 if process_alive(pid) else 0
    assert limited.roost("wait", exec_id, timeout=60).returncode == 0, _inspect(limited, exec_id)
    assert _stdout(limited, exec_id) == SPARSE_EXPECTED
    assert 0 < hwm < WORKER_HWM_BOUND, f"worker peak RSS {hwm / MiB:.0f} MiB"
    daemon_rss = _status_kib(limited.proc.pid, "VmHWM") * 1024
    assert daemon_rss < DAEMON_RSS_BOUND, f"daemon peak RSS {daemon_rss / MiB:.0f} MiB"


def test_inodes_until_enospc(limited, data_dir):
    wasm = compile_guest("vfs_limits")
    exec_id = _start(limited, wasm, "inodes", "5000", opts=("--mount", f"{data_dir}:/data"))
    assert limited.roost("wait", exec_id, timeout=120).returncode == 0, _inspect(limited, exec_id)
    out = _stdout(limited, exec_id).decode()
    assert "files created: stopped (ENOSPC)\nremove one: OK\ncreate after removing one: OK\n" in out
    count = int(out.rsplit("count ", 1)[1])
    assert INODES - 10 < count < INODES      # the mount's inodes and the directory take a few


def test_links_until_emlink(limited, data_dir):
    wasm = compile_guest("vfs_limits")
    exec_id = _start(limited, wasm, "links", "1000", opts=("--mount", f"{data_dir}:/data"))
    assert limited.roost("wait", exec_id, timeout=120).returncode == 0, _inspect(limited, exec_id)
    assert _stdout(limited, exec_id) == (
        b"links made: stopped (EMLINK)\nremove one link: OK\nlink again: OK\n"
        + f"count {LINKS - 1}\n".encode())


def test_mounts_over_the_limits_are_refused(limited, tmp_path):
    wasm = compile_guest("hello")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(INODES + 10):
        (many / f"f{i}").write_bytes(b"")
    got = limited.roost("run", str(wasm), "--mount", f"{many}:/data")
    assert got.returncode != 0 and b"limits.vfs_inodes" in got.stderr, got.stderr
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "sparse.bin", "wb") as f:
        f.truncate(VFS_BYTES + 1)
    got = limited.roost("run", str(wasm), "--mount", f"{big}:/data")
    assert got.returncode != 0 and b"limits.vfs_bytes" in got.stderr, got.stderr


def test_deep_tree_matches_wasmtime(roostd, data_dir):
    """2,000 nested directories, the top renamed (the host's is-it-inside-itself check walks the
    tree): no recursion error; the output is wasmtime's."""
    wasm = compile_guest("deep_tree")
    native = _native(wasm, ["deep_tree", "2000"], data_dir)
    exec_id = _start(roostd, wasm, "2000", opts=("--mount", f"{data_dir}:/data"))
    assert roostd.roost("wait", exec_id, timeout=120).returncode == native.exit_code == 0, \
        _inspect(roostd, exec_id)
    assert _stdout(roostd, exec_id) == native.stdout


def test_extreme_host_call_arguments_match_wasmtime(roostd, data_dir):
    """A 5000-byte path, a 300-byte name, 2M empty iovecs, poll with 2^64-1 ns beside a ready
    descriptor, a negative seek and length, timestamps of 2^64-1 ns: wasmtime's answers, and
    the execution's files still save (a timestamp past i64 once broke the saved form)."""
    wasm = compile_guest("hostcall_args")
    native = _native(wasm, ["hostcall_args"], data_dir)
    exec_id = _start(roostd, wasm, opts=("--mount", f"{data_dir}:/data"))
    assert roostd.roost("wait", exec_id, timeout=60).returncode == native.exit_code == 0, \
        _inspect(roostd, exec_id)
    assert _stdout(roostd, exec_id) == native.stdout
    assert _inspect(roostd, exec_id)["restores"] == 0


# ---- timestamps across a restore ---------------------------------------------------------------
def test_vfs_mtime_identical_across_checkpoint_kill_and_restore(limited, data_dir):
    """Paused (checkpointed) and resumed, the guest makes a file and a directory and prints their
    mtimes, then its worker is killed: the run restored from the pause's checkpoint makes them
    again and must stamp the same times."""
    wasm = compile_guest("fs_mtime")
    exec_id = _start(limited, wasm, "8", opts=("--mount", f"{data_dir}:/data"))
    wait_until(lambda: b"ready" in _stdout(limited, exec_id), timeout=30, what="ready")
    assert limited.roost("pause", exec_id).returncode == 0
    assert _stdout(limited, exec_id) == b"ready\n"
    time.sleep(1.5)                      # the guest goes on once its clock jumped over a second
    assert limited.roost("resume", exec_id).returncode == 0
    wait_until(lambda: b"mtime1" in _stdout(limited, exec_id), timeout=30, what="mtime1")
    assert _kill_worker(limited, exec_id)
    assert limited.roost("wait", exec_id, timeout=60).returncode == 0, _inspect(limited, exec_id)
    lines = _stdout(limited, exec_id).decode().splitlines()
    assert lines[0] == "ready" and lines[3] == "same: yes", lines
    assert lines[1].split()[1:] == lines[2].split()[1:], lines
    record = _inspect(limited, exec_id)
    assert record["restores"] == 2 and record["checkpoints"] == 1, record


# ---- output ---------------------------------------------------------------------------------------
def test_output_quota_pauses_the_execution(limited):
    """4 MiB of stdout against a 1 MiB quota: the execution pauses, saying which limit to raise,
    with no more than the quota stored; resumed, it pauses again (the quota has not changed)."""
    wasm = compile_guest("output_flood")
    exec_id = _start(limited, wasm, "4")
    wait_until(lambda: _state(limited, exec_id) != "RUNNING", timeout=60, what="the flood to stop")
    record = _inspect(limited, exec_id)
    assert record["state"] == "PAUSED", record
    assert "limits.output_bytes" in record["error"] and "quota" in record["error"], record["error"]
    assert 0 < record["stdout_bytes"] <= OUTPUT_BYTES
    assert len(_stdout(limited, exec_id)) == record["stdout_bytes"]
    assert limited.roost("resume", exec_id).returncode == 0
    wait_until(lambda: _state(limited, exec_id) == "PAUSED", timeout=60, what="paused again")
    assert _inspect(limited, exec_id)["stdout_bytes"] <= OUTPUT_BYTES
    assert limited.roost("kill", exec_id).returncode == 0


# ---- the pieces alone (in-process) ---------------------------------------------------------------
class _TimerStore:
    def __init__(self, timers: dict[str, int]) -> None:
        self._timers = timers

    def timers(self) -> dict[str, int]:
        return dict(self._timers)


def test_timer_thread_survives_huge_deadlines_and_failing_wakes():
    """A stored wake-up time of 2^70 ns, a 1e19 ns one and a wake that raises: the thread goes
    on and wakes the next execution due."""
    from roost.daemon.executions.timers import Timers
    woken: list[str] = []

    def wake(exec_id: str) -> None:
        woken.append(exec_id)
        if exec_id == "bad":
            raise RuntimeError("wake failed")

    timers = Timers(_TimerStore({"far": 1 << 70}), wake)
    timers.start()
    try:
        timers.add("huge", time.time_ns() + 10**19)
        timers.add("bad", time.time_ns())
        timers.add("soon", time.time_ns() + 200_000_000)
        wait_until(lambda: "soon" in woken, timeout=5, what="the next timer to fire")
        assert woken == ["bad", "soon"] and timers._thread.is_alive()
    finally:
        timers.stop()


def test_vfs_limits_accounting():
    from roost.daemon.runtime.vfs import Entry, Errno, FsError, Vfs, VfsLimits
    v = Vfs(VfsLimits(bytes=100, inodes=6, links=3))
    v.add_mount("/d", [Entry("a", "file", b"x" * 40)])
    root = v.preopens[0][1]
    a, b = v.lookup(root, "a"), v.create(root, "b", "file")
    for call, errno in ((lambda: v.write(a, 1 << 40, b"y"), Errno.FBIG),
                        (lambda: v.truncate(a, 101), Errno.FBIG),
                        (lambda: v.write(b, 0, b"y" * 61), Errno.NOSPC),
                        (lambda: v.create(root, "n" * 256, "file"), Errno.NAMETOOLONG)):
        with pytest.raises(FsError) as e:
            call()
        assert e.value.errno == errno
    v.write(b, 0, b"y" * 60)
    assert v.usage().bytes == 100 and len(v.inodes[b].data) == 60
    v.link(root, "l1", a)
    v.link(root, "l2", a)
    with pytest.raises(FsError) as e:
        v.link(root, "l3", a)
    assert e.value.errno == Errno.MLINK
    with pytest.raises(FsError) as e:       # 6 names at most: a, b, l1, l2, then 2 more
        for i in range(3):
            v.create(root, f"d{i}", "dir")
    assert e.value.errno == Errno.NOSPC and sorted(v.inodes[root].entries) == [
        "a", "b", "d0", "d1", "l1", "l2"]
    assert Vfs.restore(v.save(), v.limits).usage() == v.usage()
    for name in ("a", "l1", "l2"):
        v.unlink(root, name)
    v.collect(a, still_open=False)
    assert v.usage().bytes == 60


def test_deep_tree_rename_check_does_not_recurse():
    from roost.daemon.runtime.vfs import Vfs
    v = Vfs()
    v.add_mount("/d", [])
    root = cur = v.preopens[0][1]
    for _ in range(5000):
        cur = v.create(cur, "d", "dir")
    top = v.lookup(root, "d")
    assert v.is_ancestor(top, cur) and not v.is_ancestor(top, root)
    assert Vfs.from_bytes(v.to_bytes()).save() == v.save()


def test_fs_timestamps_replay_from_the_journal():
    """Stamps taken live are journaled; output confirms a reused one. A replay from the same saved
    clocks hands every change the stamp the original gave it, although the host's time has moved
    on, up to the last output; after it, stamps are live again."""
    from types import SimpleNamespace

    from roost.daemon.checkpoint import journal
    from roost.daemon.runtime.wasi.clocks import Clocks, ClockState, fs_now, fs_sync
    records: list[bytes] = []
    live = SimpleNamespace(clocks=Clocks(ClockState()), replay=None, journal=records.append)
    saved = live.clocks.save()
    stamps = []
    for i in range(30):
        stamps.append(fs_now(live))
        if i % 10 == 9:
            fs_sync(live)                          # output after every tenth change
        time.sleep(0.002)
    assert 2 <= len(records) < 30 and stamps == sorted(stamps)
    time.sleep(0.05)
    replay = journal.Replay([journal.decode(r) for r in records])
    again = SimpleNamespace(clocks=Clocks(saved), replay=replay, journal=lambda r: None)
    replayed = []
    for i in range(30):
        replayed.append(fs_now(again))
        if i % 10 == 9:
            fs_sync(again)
    assert replayed == stamps and not replay.active
    assert fs_now(again) > stamps[-1]              # past the journal: a new stamp
