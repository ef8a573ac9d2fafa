"""Named fault points, armed by an environment variable, for tests of every transition.

    ROOST_FAULTS="checkpoint_every_calls=3,die_after_checkpoint=1"

Each point is a place where a test wants a checkpoint, or a crash, at a deterministic moment
(CRIU's CRIU_FAULT is the model). A point given as `name=N@/path/marker` fires only while the
marker file does not exist and creates it when it fires: once per test, not once per worker.
Unarmed (the variable unset), every check is a dictionary lookup that finds nothing.
"""
from __future__ import annotations

import enum
import os
import signal


class Fault(enum.Enum):
    CHECKPOINT_EVERY_CALLS = "checkpoint_every_calls"   # worker: checkpoint every N host calls
    DIE_AFTER_CHECKPOINT = "die_after_checkpoint"       # worker: kill -9 itself after sending
                                                        # each of the execution's first N
    DIE_AT_CALL = "die_at_call"                         # worker: kill -9 itself at host call N
    DIE_MID_CHECKPOINT_SEND = "die_mid_checkpoint_send" # worker: kill -9 halfway through sending
                                                        # checkpoint N (the background write)
    DAEMON_DIE_AFTER_CHECKPOINTS = "daemon_die_after_checkpoints"  # roostd: kill -9 after committing N
    RELEASED_LINGER_MS = "released_linger_ms"           # worker: exit N ms after a handover
                                                        # released it (a slow teardown)
    SLOW_PREPARE_MS = "slow_prepare_ms"                 # roostd: a module's preparation takes N ms more
    REFUSE_PREPARE = "refuse_prepare"                   # roostd: refuse a handover's PREPARE
                                                        # (give it a marker: the first only)


def _parse(raw: str) -> dict[Fault, tuple[int, str]]:
    armed = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, _, value = item.partition("=")
        number, _, marker = value.partition("@")
        armed[Fault(name)] = (int(number or 1), marker)
    return armed


ARMED = _parse(os.environ.get("ROOST_FAULTS", ""))


def value(fault: Fault) -> int:
    """The point's number if it is armed (and its marker not yet created), else 0."""
    if fault not in ARMED:
        return 0
    number, marker = ARMED[fault]
    return 0 if marker and os.path.exists(marker) else number


def spend(fault: Fault) -> None:
    """The point fired: create its marker, so that it fires no more."""
    marker = ARMED[fault][1]
    if marker:
        open(marker, "w").close()


def crash(fault: Fault) -> None:
    """Die like `kill -9` at this point (creating the marker first, if the point has one)."""
    spend(fault)
    os.kill(os.getpid(), signal.SIGKILL)
