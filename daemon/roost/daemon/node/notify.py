"""systemd's notify protocol (sd_notify), without libsystemd.

roostd runs as Type=notify: it sends READY=1 once its API answers — before the executions a
previous daemon left running are resumed, which happens in the background after it (STATUS=
says "recovering", then "recovery done"); STOPPING=1 when it starts shutting down, and
WATCHDOG=1 at half the watchdog interval systemd asks for. Outside systemd
($NOTIFY_SOCKET unset) every call is a no-op.
"""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable


def _address(raw: str) -> str | bytes:
    """'@name' is an abstract socket: its address starts with a NUL byte."""
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(message: str) -> bool:
    """Send one notification; True if a notify socket was configured and the send worked."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), _address(target))
        except OSError:
            return False
    return True


def watchdog_interval_seconds() -> float | None:
    """Half of $WATCHDOG_USEC, if the watchdog is enabled for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


def start_watchdog(stop: threading.Event, alive: Callable[[], bool] = lambda: True) -> None:
    """Ping WATCHDOG=1 while `alive()` holds; a hung daemon stops pinging and systemd restarts it."""
    interval = watchdog_interval_seconds()
    if interval is None:
        return

    def loop() -> None:
        while not stop.wait(interval):
            if alive():
                notify("WATCHDOG=1")

    threading.Thread(target=loop, name="watchdog", daemon=True).start()
