"""A child process of roostd (a worker, a module preparation) dies with it: nobody would record
what it does, and a preparation left running after a kill -9 of roostd burns a core for
minutes. The kernel kills the child when the thread that spawned it exits (PR_SET_PDEATHSIG)."""
from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """Ask for SIGKILL when the parent goes; exit now if it is gone already (the parent's pid,
    passed down by it, is no longer ours)."""
    parent = expected_parent or os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
