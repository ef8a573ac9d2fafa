"""The data directory: one roostd at a time, and this installation's node id.

Two daemons on one data dir would both resume every running execution — each execution then
runs twice. So the daemon takes an exclusive lock on `roostd.lock` before it opens the store
and holds it for its life (the kernel drops it when the process dies, kill -9 included; workers
do not inherit it). A second daemon fails at once with one line naming the first.

A node id must be unique among the daemons that replicate to each other: the host name is not
(copied VMs, containers, a config file copied between hosts). Without a configured one, the
daemon makes `<hostname>-<8 hex digits>` once and keeps it in `node_id` in the data dir.
"""
from __future__ import annotations

import fcntl
import os
import secrets
import socket
from pathlib import Path

from roost.daemon.errors import StateConflict

LOCK_FILE = "roostd.lock"
NODE_ID_FILE = "node_id"


class DataDirLock:
    """An exclusive lock on a data dir, held until `release` or the process's end."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StateConflict(f"data dir {data_dir} is in use by another roostd (pid {holder}); "
                                "one daemon per data dir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def node_id(data_dir: Path) -> str:
    """This installation's node id: the one kept in the data dir, made on first use."""
    path = data_dir / NODE_ID_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    made = f"{socket.gethostname()}-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    return made
