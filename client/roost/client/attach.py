"""Attach: follow an execution's durable output across daemon restarts.

The log is durable and numbered, so a broken stream is not an error: reconnect and resume
from the last sequence number + 1. Only a daemon that stays away past the reconnect window,
or an answer that retrying cannot change, ends the attachment.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from roost.client.api import Client
from roost.client.display import ENDED_STATES
from roost.client.errors import RoostClientError
from roost.v1 import control_pb2 as pb

# Codes a restarting or unreachable daemon produces; anything else is a real answer.
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "CANCELLED", "INTERNAL"})
T = TypeVar("T")


class Reconnect:
    """Backoff while roostd is away; gives up once an outage has lasted `window_seconds`.

    An outage is a run of failures less than `OUTAGE_GAP_SECONDS` apart, so a stream that
    stayed healthy for a while (a quiet guest) starts a fresh window when it breaks again.
    With `reached=False` (`wait`, `logs -f`: nothing has talked to roostd yet) a failure
    before the first answer is the error itself, at once: a daemon that is not there, or an
    address or TLS mistake, is not an outage to wait out.
    """

    OUTAGE_GAP_SECONDS = 10.0
    MIN_DELAY_SECONDS = 0.05
    MAX_DELAY_SECONDS = 2.0

    def __init__(
        self,
        window_seconds: float = 120.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[str], None] | None = None,
        reached: bool = True,
    ) -> None:
        self.window_seconds = window_seconds
        self.reached = reached
        self._sleep = sleep
        self._clock = clock
        self._notify = notify
        self._outage_start = 0.0
        self._last_failure: float | None = None
        self._delay = self.MIN_DELAY_SECONDS

    def reset(self) -> None:
        """Progress was made: the next wait starts from the shortest delay."""
        self._delay = self.MIN_DELAY_SECONDS
        self.reached = True

    def pause(self, err: RoostClientError) -> None:
        """Waits before the next attempt, or re-raises `err` when retrying is pointless."""
        if err.code_name not in RETRYABLE_CODES or not self.reached:
            raise err
        now = self._clock()
        if self._last_failure is None or now - self._last_failure > self.OUTAGE_GAP_SECONDS:
            self._outage_start = now
            if self._notify:
                self._notify(f"lost roostd ({err.message}); reconnecting")
        self._last_failure = now
        if now - self._outage_start >= self.window_seconds:
            raise err
        self.idle()

    def idle(self) -> None:
        """Sleeps the current delay and lengthens the next one."""
        self._sleep(self._delay)
        self._delay = min(self._delay * 2, self.MAX_DELAY_SECONDS)

    def call(self, fn: Callable[[], T]) -> T:
        """Calls `fn` until it returns, pausing between retryable failures."""
        while True:
            try:
                result = fn()
            except RoostClientError as err:
                self.pause(err)
                continue
            self.reset()
            return result


def write_chunk(chunk: pb.LogChunk) -> None:
    """Writes a chunk byte for byte to the std stream it came from, then flushes."""
    out = sys.stderr.buffer if chunk.stream == pb.STDERR else sys.stdout.buffer
    out.write(chunk.data)
    out.flush()


def moved(execution: pb.Execution) -> str:
    """Where the execution runs now, when not on the daemon that answered (it migrated)."""
    if execution.owner and execution.served_by and execution.owner != execution.served_by:
        return execution.owner_address
    return ""


class Follow:
    """The client of the daemon that runs an execution, following it when it migrates: a
    daemon answers for an execution that moved away with where it went."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.home = client          # the daemon first asked: it says where the execution went
        self.bouncing = False       # the last move led back to a daemon that sent us away
        self._left: set[str] = set()

    def rehome(self, id: str) -> bool:
        """The daemon followed to is unreachable (its host may be dead): ask the first one
        where the execution runs now — after a takeover, another member. True if that is
        somewhere else than the daemon followed."""
        if self.home.addr == self.client.addr:
            return False
        try:
            execution = self.home.get(id)
        except RoostClientError:
            return False
        address = moved(execution) or self.home.addr
        if address == self.client.addr:
            return False
        self.client = self.home if address == self.home.addr else self.home.at(address)
        self._left.clear()
        self.bouncing = False
        return True

    def get(self, id: str) -> pb.Execution:
        """GetExecution where the execution is, re-homed when that daemon is unreachable."""
        return self._rehomed(id, lambda: self.client.get(id))

    def wait(self, id: str) -> pb.Execution:
        """WaitExecution where the execution is, re-homed when that daemon is unreachable."""
        return self._rehomed(id, lambda: self.client.wait(id))

    def _rehomed(self, id: str, call: Callable[[], pb.Execution]) -> pb.Execution:
        try:
            return call()
        except RoostClientError:
            if not self.rehome(id):
                raise
            return call()

    def track(self, execution: pb.Execution) -> bool:
        """Switch to the execution's new daemon if it moved; True if it did. Two daemons can
        each name the other for a moment (a handover between its decision and the target's
        record of it): `bouncing` says so, and the caller waits before asking again."""
        address = moved(execution)
        if not address or address == self.client.addr:
            self._left.clear()
            self.bouncing = False
            return False
        self._left.add(self.client.addr)
        self.bouncing = address in self._left
        self.client = self.client.at(address)
        return True


def follow_logs(
    client: Client,
    id: str,
    *,
    stream: pb.LogStream | None = None,
    write: Callable[[pb.LogChunk], None] = write_chunk,
    reconnect: Reconnect | None = None,
    follow: Follow | None = None,
    tail: int | None = None,
    since: Timestamp | None = None,
) -> int:
    """Streams the log until the execution has ended, across daemon restarts and migrations;
    returns the next unseen seq. `tail`/`since` (`Client.logs`) pick where it starts: asked
    until the first chunk arrives, then it goes on from the seq after the last one."""
    reconnect = reconnect or Reconnect()
    follow = follow or Follow(client)
    next_seq = 0
    while True:
        fresh = not next_seq                  # nothing received yet
        try:
            for chunk in follow.client.logs(id, follow=True, stream=stream, from_seq=next_seq,
                                            tail=tail if fresh else None,
                                            since=since if fresh else None):
                write(chunk)
                next_seq = chunk.seq + 1
                reconnect.reset()
        except RoostClientError as err:
            if err.code_name in RETRYABLE_CODES and follow.rehome(id):
                continue                      # its owner is gone: on where it runs now
            reconnect.pause(err)
            continue
        execution = reconnect.call(lambda: follow.get(id))
        if execution.state in ENDED_STATES and not moved(execution):
            return next_seq
        if follow.track(execution):
            if follow.bouncing:
                reconnect.idle()
            continue                          # it migrated: go on where it runs now
        # The stream closed cleanly while the execution runs on (a daemon shutting down).
        reconnect.idle()
