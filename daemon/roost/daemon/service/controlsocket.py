"""The Control API's Unix socket: roostd's default endpoint, private to its owner and group.

A plaintext TCP port on loopback lets every local user control every execution; a Unix socket
is guarded by file permissions instead, as Docker's is. The socket is created with mode 0660
(group: `control_socket_group`, if set) in a directory this daemon makes 0750 if it is missing.
A socket file left by a daemon that was killed is replaced; one that a live daemon answers on
is not (two daemons with two data dirs must not take each other's socket).
"""
from __future__ import annotations

import contextlib
import grp
import os
import socket
from pathlib import Path

from roost.daemon.errors import InvalidRequest, StateConflict

MAX_PATH = 107                   # sun_path holds 108 bytes with its NUL


def prepare(path: str) -> str:
    """Make `path` ready to bind; the gRPC address for it."""
    if len(path.encode()) > MAX_PATH:
        raise InvalidRequest(f"control socket {path}: longer than the {MAX_PATH} bytes a Unix "
                             "socket path may have")
    where = Path(path)
    where.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if where.is_socket() and _answers(path):
        raise StateConflict(f"control socket {path}: another roostd serves on it")
    with contextlib.suppress(FileNotFoundError):
        if where.is_socket():
            where.unlink()
    if where.exists():
        raise InvalidRequest(f"control socket {path}: a file that is not a socket is there")
    return f"unix:{path}"


def restrict(path: str, group: str) -> None:
    """Owner and group only (bound with a umask that already kept others out)."""
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidRequest(f"control_socket_group: no group named {group!r}") from None
        os.chown(path, -1, gid)
    os.chmod(path, 0o660)


@contextlib.contextmanager
def private_umask():
    """Sockets bound meanwhile get no permission for others (gRPC creates the file)."""
    old = os.umask(0o117)
    try:
        yield
    finally:
        os.umask(old)


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
        return True
