"""What executions' HTTP requests did, as the supervisor learns it from their workers' HTTP
frames (`runtime.outbound` sends them): the metrics, the counts `roost inspect` shows (kept
in the execution's record), and the request in flight (on its `Live`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from roost.daemon.executions.running import Live
from roost.daemon.http.records import FAILED, INTERRUPTED, REFUSED, SENT
from roost.daemon.node import metrics
from roost.daemon.runtime.vfs import Errno

MAX_NOTED = 20      # interrupted requests a record names (the oldest go first)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _status(event: Mapping[str, Any]) -> str:
    errno = int(event.get("errno") or 0)
    if errno:
        try:
            return "E" + Errno(errno).name
        except ValueError:
            return f"errno {errno}"
    return str(int(event.get("status") or 0))


def observe(live: Live, event: Mapping[str, Any]) -> None:
    """One event of `live`'s worker: start, done, replayed, refused."""
    record, kind = live.record, event.get("event")
    url = str(event.get("url", ""))
    if kind == "start":
        live.http_in_flight = f"{event.get('method', '?')} {url} (Idempotency-Key {event.get('key', '')})"
        if event.get("resend"):
            record.http_resent += 1
            metrics.HTTP_RESENDS.inc()
        else:
            metrics.HTTP_DURABLE_WAIT.observe(float(event.get("sync_seconds") or 0.0))
        return
    if kind == "replayed":
        record.http_replayed += 1
        metrics.HTTP_REPLAYS.inc()
        return
    if kind not in ("done", "refused"):
        return
    live.http_in_flight = ""
    outcome = event.get("outcome", REFUSED if kind == "refused" else FAILED)
    # A refused URL is the guest's alone (any host it likes): never a label of its own.
    host = "(refused)" if kind == "refused" else _host(url)
    metrics.HTTP_REQUESTS.labels(host=host, status=_status(event)).inc()
    if kind == "done" and outcome != INTERRUPTED:
        metrics.HTTP_SECONDS.labels(host=host).observe(float(event.get("seconds") or 0.0))
    if outcome == SENT:
        record.http_sent += 1
    elif outcome == INTERRUPTED:
        record.http_interrupted.append(f"{event.get('method', '?')} {url} "
                                       f"(Idempotency-Key {event.get('key', '')}): ECANCELED")
        del record.http_interrupted[:-MAX_NOTED]
        metrics.HTTP_INTERRUPTED.inc()
    elif outcome == REFUSED:
        record.http_refused += 1
    elif outcome == FAILED:
        record.http_failed += 1
