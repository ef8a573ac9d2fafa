"""roostd's log lines on stderr: their format, and the level SIGHUP may change.

Under systemd, stderr is a stream to journald (the unit's default StandardError=journal):
systemd then sets $JOURNAL_STREAM to that stream's "DEVICE:INODE". A line written there is
prefixed with its sd-daemon priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug:
sd-daemon(3)), so `journalctl -p warning` finds the warnings, and carries no timestamp of its
own (journald stamps every line; a second one only clutters `journalctl`). Anywhere else
(a terminal, a file, a test's log) the lines keep their timestamp and level name.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# logging level -> sd-daemon priority (syslog's numbers)
PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7


def priority(levelno: int) -> int:
    """The sd-daemon priority of a logging level (CRITICAL and ERROR are both err)."""
    return next((prio for level, prio in PRIORITIES if levelno >= level), DEBUG_PRIORITY)


class JournalFormatter(logging.Formatter):
    """`<N>name: message`; every line of a multi-line record (a traceback) gets the prefix,
    so journald files each one under the record's priority."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def is_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journald stream systemd connected (its device and inode are
    $JOURNAL_STREAM's: a redirect by the unit or a shell to elsewhere is not)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def configure(level: str, stream: TextIO | None = None) -> logging.Handler:
    """roostd's one log handler on `stream` (stderr), in the journal's format or the plain
    one; the root logger at `level`."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if is_journal(stream) else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def set_level(level: str) -> None:
    """A new level for every logger that inherits the root's (a reload)."""
    logging.getLogger().setLevel(level)
