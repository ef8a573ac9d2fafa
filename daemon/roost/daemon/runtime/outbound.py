"""Durable outbound HTTP in the worker: every request a guest makes, through the `roost`
imports (`wasi.http`) or its device folder (`httpdev`), goes through `Outbound.perform`.

    live     intent journaled -> sync (stored, and replicated per replication.ack) -> sent
             with its Idempotency-Key -> response journaled -> the guest sees it
    replay   the journal answers: the guest's request must match the recorded intent, and
             the recorded response is given back without sending anything
    cut off  the intent is durable, its response is not (a crash while it was out): sent
             again with the same key when that is safe (an idempotent method, or a
             destination configured with idempotency_keys), else ECANCELED — never a silent
             repeat

The key is "roost-<execution>-<request number>" unless the guest set its own. A request the
policy refuses gets its errno (EACCES, EINVAL) journaled as its response, so a replay on a
daemon with another policy gives the same answer.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from roost.daemon.checkpoint.journal import Replay, ReplayDiverged
from roost.daemon.http import policy
from roost.daemon.http.records import (
    INTENT,
    INTERRUPTED,
    REFUSED,
    RESENT,
    RESPONSE,
    SENT,
    Intent,
    Reply,
    Request,
)
from roost.daemon.http.settings import HttpSettings
from roost.daemon.runtime.vfs import Errno

if TYPE_CHECKING:
    from roost.daemon.http.transport import Transport
    from roost.daemon.runtime.wasi.clocks import Clocks

MAX_HELD = 64          # responses a guest may hold unread at once (more: EMFILE, nothing sent)


@dataclass(frozen=True)
class Held:
    """A response the guest has not read yet (saved with the execution)."""
    status: int
    headers: bytes
    body: bytes


@dataclass(frozen=True)
class OutboundState:
    """Saved form of `Outbound`."""
    requests: int = 0                                   # requests numbered so far
    next_handle: int = 1
    held: tuple[tuple[int, Held], ...] = ()
    last_error: str = ""


@dataclass
class Hooks:
    """What the worker provides: making the journal durable up to now, and telling the
    supervisor what happened (metrics, `roost inspect`)."""
    sync: Callable[[], None] = lambda: None
    before_send: Callable[[], None] = lambda: None      # file times a body may show: journaled
    event: Callable[[dict[str, Any]], None] = lambda event: None


@dataclass
class Outbound:
    """One execution's requests: numbering, the durable flow, the responses it holds."""
    settings: HttpSettings
    clocks_of: Callable[[], Clocks]                     # the host's (a standby's are replaced)
    replay_of: Callable[[], Replay | None]
    journal: Callable[[bytes], None]
    flush: Callable[[], None] = lambda: None
    hooks: Hooks = field(default_factory=Hooks)
    requests: int = 0
    next_handle: int = 1
    held: dict[int, Held] = field(default_factory=dict)
    last_error: str = ""
    _transport: Transport | None = None

    # ---- state ----
    def load(self, state: OutboundState) -> None:
        self.requests, self.next_handle = state.requests, state.next_handle
        self.held, self.last_error = dict(state.held), state.last_error

    def save(self) -> OutboundState:
        return OutboundState(self.requests, self.next_handle, tuple(sorted(self.held.items())),
                             self.last_error)

    # ---- the durable flow ----
    def perform(self, request: Request) -> Reply:
        """The reply the guest gets for `request` (see the module docstring)."""
        self.requests += 1
        replay = self.replay_of()
        if replay is not None and replay.active:
            reply = self._replayed(request, replay)
        else:
            reply = self._live(request)
        self.last_error = reply.error if reply.errno else ""
        return reply

    def _replayed(self, request: Request, replay: Replay) -> Reply:
        if replay.peek().name == RESPONSE:                # a refused request has no intent
            return self._recorded(replay)
        record = replay.next(INTENT)
        intent = Intent.decode(record)
        if intent.digest != request.digest():
            raise ReplayDiverged(f"replay diverged at HTTP request {intent.number}: the guest sent "
                                 f"another request than the recorded {intent.method} {intent.url}")
        self.clocks_of().advance_to(record.monotonic_ns)
        if replay.active:
            reply = self._recorded(replay)
            self.hooks.event({"event": "replayed", "url": intent.url, "outcome": reply.outcome})
            return reply
        return self._cut_off(intent, request)

    def _recorded(self, replay: Replay) -> Reply:
        record = replay.next(RESPONSE)
        self.clocks_of().advance_to(record.monotonic_ns)
        return Reply.decode(record)

    def _cut_off(self, intent: Intent, request: Request) -> Reply:
        """The intent is durable, its response is not: the request may have reached the
        server. Sent again under the same key when that is safe, else ECANCELED."""
        if intent.resend:
            self.hooks.event({"event": "start", "url": intent.url, "method": intent.method,
                              "key": intent.key, "resend": True})
            reply = self._send(intent, request, RESENT)
        else:
            reply = Reply(int(Errno.CANCELED), outcome=INTERRUPTED, error=(
                f"interrupted: {intent.describe()} was in flight when the execution stopped and "
                "may have reached the server; it is not sent again (not idempotent, and its "
                "destination is not configured with idempotency_keys)"))
            self._record(reply)
            self.hooks.event({"event": "done", "url": intent.url, "method": intent.method,
                              "key": intent.key, "outcome": INTERRUPTED, "errno": reply.errno,
                              "error": reply.error, "seconds": 0.0})
        return reply

    def _live(self, request: Request) -> Reply:
        try:
            method = policy.check_method(request.method)
            _, honours_keys = policy.allowed(self.settings, request.url)
        except policy.RequestError as e:
            reply = Reply(int(Errno.ACCES if e.denied else Errno.INVAL), error=str(e), outcome=REFUSED)
            self._record(reply)
            self.hooks.event({"event": "refused", "url": request.url[:200], "errno": reply.errno,
                              "error": reply.error})
            return reply
        key = request.key() or f"{self.settings.key_prefix}{self.requests}"
        intent = Intent(self.requests, method, request.url, request.digest(), key,
                        resend=method in policy.IDEMPOTENT or honours_keys)
        self.hooks.before_send()
        self.journal(intent.encode(self.clocks_of().monotonic_ns()))
        began = time.monotonic()
        self.hooks.sync()                   # durable (and replicated) before it leaves
        self.hooks.event({"event": "start", "url": intent.url, "method": method, "key": key,
                          "resend": False, "sync_seconds": time.monotonic() - began})
        return self._send(intent, replace(request, method=method), SENT)

    def _send(self, intent: Intent, request: Request, outcome: str) -> Reply:
        sent = self.transport().send(request, intent.key, intent.resend)
        reply = sent.reply if sent.reply.errno else replace(sent.reply, outcome=outcome)
        self._record(reply, urgent=not intent.resend)
        self.hooks.event({"event": "done", "url": intent.url, "method": intent.method,
                          "key": intent.key, "outcome": reply.outcome, "status": reply.status,
                          "errno": reply.errno, "error": reply.error, "seconds": sent.seconds,
                          "attempts": sent.attempts})
        return reply

    def _record(self, reply: Reply, urgent: bool = True) -> None:
        """Journal the reply. An `urgent` one is sent on at once: a request that may not be
        sent again costs the guest an ECANCELED if a crash loses its reply. Any other rides
        with what follows (the next request's sync, output, the stats tick): one store
        commit per step instead of two, and a lost reply costs only a resend under its key."""
        self.journal(reply.encode(self.clocks_of().monotonic_ns()))
        if urgent:
            self.flush()

    def transport(self) -> Transport:
        if self._transport is None:
            from roost.daemon.http.transport import Transport  # urllib3: only when used
            self._transport = Transport(self.settings)
        return self._transport

    # ---- responses the guest holds ----
    def hold(self, reply: Reply) -> int:
        """Keep a response for the guest to read; its handle."""
        handle = self.next_handle
        self.next_handle += 1
        self.held[handle] = Held(reply.status, reply.headers, reply.body)
        return handle
