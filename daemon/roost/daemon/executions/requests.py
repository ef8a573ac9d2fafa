"""Requests to a worker and their answers: CONTROL frames out, checkpoints back.

A checkpoint/pause/suspend/migrate request gets an id; the worker merges the requests pending at
its next safepoint into one checkpoint, whose meta lists them (`requests`), and the commit of
that checkpoint answers every one of them (`answer`). Waiters block on `Live.changed`.
"""
from __future__ import annotations

import time

from roost.daemon.executions.running import Live
from roost.daemon.link import messages as msg
from roost.daemon.node import metrics


def ask(live: Live, action: str) -> int:
    """Send a checkpoint/pause/suspend request to the worker; its id (0 if the worker is gone)."""
    with live.changed:
        live.next_request += 1
        n = live.next_request
        live.requests[n] = None
        live.requests[("at", n)] = time.monotonic()
        if action == "migrate":              # known before the worker can answer it
            live.migrate_request = n
    try:
        live.worker.link.send_message(msg.Control.ask(action, n))
    except OSError:
        return 0
    return n


def answer(live: Live, result: dict, only: int | None = None) -> None:
    """The checkpoint answers the requests it merged (`only` that one), their waiters wake."""
    answered = [n for n in result.get("requests", []) if live.requests.get(n, False) is None
                and only in (None, n)]
    asked = [live.requests.pop(("at", n), None) for n in answered]
    requested_at = min((t for t in asked if t is not None), default=None)
    if requested_at is not None:
        metrics.CHECKPOINT_TOTAL.observe(time.monotonic() - requested_at)
    with live.changed:
        for n, at in zip(answered, asked):
            live.requests[n] = {**result, "total_seconds": time.monotonic() - at if at else 0.0}
        live.changed.notify_all()


def await_answer(live: Live, n: int, gone, timeout: float) -> dict | None:
    """The answer to request `n` (None: `gone()` — the worker ended — or `timeout` first)."""
    with live.changed:
        live.changed.wait_for(lambda: live.requests.get(n) is not None or gone(), timeout=timeout)
        return live.requests.pop(n, None)


def control(live: Live | None, request: msg.Control) -> bool:
    """A CONTROL frame that asks for no checkpoint (resume, release, throttle); False when
    there is no worker to take it."""
    if live is None:
        return False
    try:
        live.worker.link.send_message(request)
    except OSError:
        return False
    return True
