"""Admission of long-polls: `logs -f`, `wait` and an attached `run` hold a gRPC thread for as
long as they follow an execution, so without a bound 64 of them blocked every other call —
`ps`, `inspect`, and a peer's handover in the middle of a migration.

roostd's gRPC server has `grpc_threads` threads; long-polls may hold at most `long_polls` of
them (the rest always serve short calls: Control, Peer, health), and one caller at most
`long_polls_per_client`. The one too many is refused at once with RESOURCE_EXHAUSTED, saying
which bound it met, instead of queueing behind the others.

A caller is its gRPC peer's host (a TCP client's IP; every user of the Unix socket is one
caller, "unix").
"""
from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

from roost.daemon.errors import LimitExceeded


class LongPolls:
    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self, peer: str, what: str) -> Iterator[None]:
        """Hold one long-poll slot for `peer` (gRPC's context.peer()) while the body runs."""
        client = caller_of(peer)
        with self._lock:
            if sum(self._held.values()) >= self.total:
                raise LimitExceeded(f"{what}: roostd follows {self.total} executions for its "
                                    "clients already (grpc.long_polls); try again later")
            if self._held[client] >= self.per_client:
                raise LimitExceeded(f"{what}: this client follows {self.per_client} executions "
                                    "already (grpc.long_polls_per_client)")
            self._held[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[client] -= 1
                if not self._held[client]:
                    del self._held[client]

    def count(self) -> int:
        with self._lock:
            return sum(self._held.values())


def caller_of(peer: str) -> str:
    """"ipv4:1.2.3.4:5678" -> "1.2.3.4"; "ipv6:[::1]:5" -> "::1"; "unix:..." -> "unix"."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return kind or "unknown"
