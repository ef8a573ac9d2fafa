"""Was a worker killed by the kernel's OOM killer? The memory cgroup's OOM-kill counter says.

A worker that dies of SIGKILL nobody in roostd sent is, by default, a crash: another worker
replays the journal from the latest checkpoint. When the kernel's OOM killer sent that SIGKILL
(the memory cgroup roostd and its workers share — under systemd, the service's — ran out, or the
host did), replaying would only grow the same memory and be killed again, each time taking the
other executions' memory with it. So such a worker fails its own execution at once, with the
reason in its error, and nothing else: the other executions keep running and so does roostd
(with `OOMPolicy=continue` in the unit; systemd's default would stop the whole service).

How a death is attributed: the kernel raises the cgroup's `oom_kill` counter before it sends the
SIGKILL (cgroup v2 `memory.events.local`, v1 `memory.oom_control`; without a memory cgroup, the host's
`/proc/vmstat`), so when roostd reaps a worker killed by SIGKILL the counter is already higher
than the last value accounted for. Each increment explains one death. An OOM kill of another
process of the cgroup (a module-preparing child, an idle spare) leaves an increment that a later
`kill -9` of a worker would be blamed on: rare, and that execution then fails with the OOM error
instead of being replayed. Without any readable counter no death is called an OOM kill.
"""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VMSTAT = Path("/proc/vmstat")
UNLIMITED = 1 << 62          # v1 reports "no limit" as a page-aligned 2**63 - 1


@dataclass(frozen=True)
class MemoryCgroup:
    """The memory cgroup a process is in: where its OOM-kill counter is, for the messages."""
    name: str                  # as in /proc/PID/cgroup, e.g. /system.slice/roostd.service
    directory: Path | None     # its directory in the mounted hierarchy (None: no memory cgroup)
    version: int               # 1, 2, or 0 for none (the host's counter in /proc/vmstat)

    @property
    def counter_file(self) -> Path:
        """v2: memory.events.local, as the workers are in roostd's own cgroup (memory.events also
        counts the cgroups below it); v1's counter is local already."""
        if self.directory is None:
            return VMSTAT
        if self.version == 1:
            return self.directory / "memory.oom_control"
        local = self.directory / "memory.events.local"
        return local if local.exists() else self.directory / "memory.events"

    def oom_kills(self) -> int | None:
        """The OOM kills counted so far; None when the counter cannot be read."""
        try:
            text = self.counter_file.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None

    def limit_bytes(self) -> int | None:
        """The memory limit in force for the cgroup (its own or an ancestor's); None: none."""
        if self.directory is None:
            return None
        if self.version == 1:
            return _v1_limit(self.directory)
        return _v2_limit(self.directory)

    def describe(self) -> str:
        """Where the memory ran out, for the execution's error."""
        limit = self.limit_bytes()
        if self.directory is None or limit is None:
            return "the host ran out of memory; no memory cgroup limit applies"
        return (f"memory cgroup limit {format_bytes(limit)} of {self.name}, shared by roostd and "
                f"all its executions")


def _v1_limit(directory: Path) -> int | None:
    """cgroup v1: memory.stat's hierarchical_memory_limit includes the ancestors' limits."""
    try:
        for line in (directory / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "hierarchical_memory_limit" and value.strip().isdigit():
                limit = int(value)
                return limit if limit < UNLIMITED else None
    except OSError:
        pass
    return None


def _v2_limit(directory: Path) -> int | None:
    """cgroup v2: the smallest memory.max of the cgroup and its ancestors in the hierarchy."""
    limits = []
    for level in (directory, *directory.parents):
        try:
            raw = (level / "memory.max").read_text().strip()
        except OSError:
            break                                  # above the hierarchy's root
        if raw.isdigit():
            limits.append(int(raw))
    return min(limits) if limits else None


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def find_memory_cgroup(pid: int | str = "self", proc: Path = Path("/proc")) -> MemoryCgroup:
    """The memory cgroup of a process: cgroup v1's memory controller if it is mounted (also on
    a hybrid host), else cgroup v2's unified hierarchy when it has the memory controller."""
    try:
        memberships = (proc / str(pid) / "cgroup").read_text().splitlines()
        mounts = (proc / str(pid) / "mountinfo").read_text().splitlines()
    except OSError:
        return MemoryCgroup("", None, 0)
    by_controller: dict[str, str] = {}
    for line in memberships:
        _, controllers, name = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            by_controller[controller] = name
    for version, controller in ((1, "memory"), (2, "")):
        if controller not in by_controller:
            continue
        name = by_controller[controller]
        directory = _mounted(mounts, version, name)
        if directory is not None:
            cgroup = MemoryCgroup(name, directory, version)
            if cgroup.counter_file.exists():
                return cgroup
    return MemoryCgroup("", None, 0)


def _mounted(mounts: list[str], version: int, name: str) -> Path | None:
    """Where cgroup `name` is in the mounted hierarchy (mountinfo: the mount's root within the
    hierarchy, its mount point; after " - ", the file system type and its options)."""
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        parts, after = fields.split(), tail.split()
        if len(parts) < 5 or len(after) < 3:
            continue
        fstype, options = after[0], after[2].split(",")
        if (version == 1 and fstype == "cgroup" and "memory" in options) or \
                (version == 2 and fstype == "cgroup2"):
            root, mountpoint = parts[3], parts[4]
            if name == root or name.startswith(root.rstrip("/") + "/"):
                return Path(mountpoint) / name[len(root):].lstrip("/")
    return None


class OomWatch:
    """Tells which worker deaths the OOM killer caused: one counter increment per death."""

    def __init__(self, cgroup: MemoryCgroup | None = None) -> None:
        self.cgroup = cgroup if cgroup is not None else find_memory_cgroup()
        self._lock = threading.Lock()
        self._accounted = self.cgroup.oom_kills()
        if self._accounted is None:
            log.info("no OOM-kill counter readable (%s): a worker the kernel kills for memory "
                     "is replayed like any crash", self.cgroup.counter_file)

    def killed_by_oom(self, exit_code: int | None) -> bool:
        """Whether a worker that ended with `exit_code` (negative: the signal) without being
        asked to was killed by the OOM killer; each OOM kill is blamed on one death only."""
        if exit_code != -signal.SIGKILL:
            return False
        now = self.cgroup.oom_kills()
        with self._lock:
            if now is None or self._accounted is None or now <= self._accounted:
                return False
            self._accounted += 1
            return True

    def reason(self, pid: int) -> str:
        """The execution's error for a worker the OOM killer killed: one line."""
        return f"worker process {pid} killed by the kernel's OOM killer ({self.cgroup.describe()})"
