"""node/oom.py: finding the memory cgroup from /proc, and blaming each OOM kill on one death."""
from __future__ import annotations

import signal
from pathlib import Path

from roost.daemon.node.oom import MemoryCgroup, OomWatch, find_memory_cgroup, format_bytes

V1_MOUNT = "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory\n"
V2_MOUNT = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def _proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text(cgroup)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(mountinfo)
    return tmp_path / "proc"


def _mounted(mountinfo: str, where: Path) -> str:
    return mountinfo.replace(" /sys/fs/cgroup", f" {where}", 1)


def test_cgroup_v2_counter_and_limit_of_an_ancestor(tmp_path):
    fs = tmp_path / "fs"
    unit = fs / "system.slice" / "roostd.service"
    unit.mkdir(parents=True)
    (unit / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n")
    (unit / "memory.max").write_text("max\n")
    (fs / "system.slice" / "memory.max").write_text(f"{512 << 20}\n")
    proc = _proc(tmp_path, "0::/system.slice/roostd.service\n", _mounted(V2_MOUNT, fs))
    cgroup = find_memory_cgroup(proc=proc)
    assert (cgroup.version, cgroup.directory, cgroup.name) == (2, unit, "/system.slice/roostd.service")
    assert cgroup.oom_kills() == 1
    (unit / "memory.events.local").write_text("oom 0\noom_kill 0\n")   # kills below it: not ours
    assert cgroup.oom_kills() == 0
    assert cgroup.limit_bytes() == 512 << 20
    assert "memory cgroup limit 512 MiB of /system.slice/roostd.service" in cgroup.describe()


def test_cgroup_v1_on_a_hybrid_host_with_a_mount_below_the_root(tmp_path):
    fs = tmp_path / "memory"
    fs.mkdir()
    (fs / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (fs / "memory.stat").write_text(f"cache 0\nhierarchical_memory_limit {1 << 30}\n")
    mount = V1_MOUNT.replace(" / /sys/fs/cgroup/memory", f" /docker/abc {fs}")
    proc = _proc(tmp_path, "4:memory:/docker/abc\n1:name=systemd:/x\n0::/\n", mount + V2_MOUNT)
    cgroup = find_memory_cgroup(proc=proc)
    assert (cgroup.version, cgroup.directory) == (1, fs)
    assert cgroup.oom_kills() == 3 and cgroup.limit_bytes() == 1 << 30


def test_no_memory_cgroup_falls_back_to_the_host(tmp_path):
    proc = _proc(tmp_path, "0::/\n", "")
    cgroup = find_memory_cgroup(proc=proc)
    assert cgroup.directory is None and cgroup.version == 0
    assert "the host ran out of memory" in cgroup.describe()


def test_each_oom_kill_explains_one_sigkill_death(tmp_path):
    counter = tmp_path / "memory.oom_control"
    counter.write_text("oom_kill 5\n")
    watch = OomWatch(MemoryCgroup("/t", tmp_path, 1))
    killed = -signal.SIGKILL
    assert not watch.killed_by_oom(killed)              # no new OOM kill: a plain kill -9
    counter.write_text("oom_kill 7\n")
    assert not watch.killed_by_oom(-signal.SIGSEGV)     # a crash is not an OOM kill
    assert not watch.killed_by_oom(1) and not watch.killed_by_oom(None)
    assert watch.killed_by_oom(killed) and watch.killed_by_oom(killed)
    assert not watch.killed_by_oom(killed)              # both kills already blamed
    assert watch.reason(42).startswith("worker process 42 killed by the kernel's OOM killer (")


def test_unreadable_counter_never_blames_the_oom_killer(tmp_path):
    watch = OomWatch(MemoryCgroup("/gone", tmp_path / "gone", 2))
    assert not watch.killed_by_oom(-signal.SIGKILL)


def test_format_bytes():
    assert format_bytes(512 << 20) == "512 MiB"
    assert format_bytes(3 << 29) == "1.5 GiB"
    assert format_bytes(100) == "100 bytes"
