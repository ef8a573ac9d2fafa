"""A guest's HTTP request and what the journal keeps of it.

Two journal records per request (`checkpoint.journal` layout; their data rides in "writes" at
address 0, never applied to memory):

    http_intent    result = the request's number; one write: JSON {method, url, digest, key,
                   resend} — stored (and replicated, per `replication.ack`) before the request
                   leaves
    http_response  result = 0 or the WASI errno; three writes: JSON {status, error, outcome},
                   the response headers ("Name: value\\r\\n"...), the body — journaled before the
                   guest sees it

A refused request (malformed, denied) has only its `http_response`. The digest is a sha256
of method, URL, headers and body: on replay the guest's request must be the recorded one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from roost.daemon.checkpoint import journal

INTENT = "http_intent"
RESPONSE = "http_response"
# How a response came about (`Reply.outcome`): metrics and `roost inspect` count them.
SENT, RESENT, INTERRUPTED, REFUSED, FAILED = "sent", "resent", "interrupted", "refused", "failed"


@dataclass(frozen=True)
class Request:
    """What the guest asked for (headers as it gave them, minus none)."""
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.method.encode(), self.url.encode(),
                     *(f"{k.lower()}: {v}".encode() for k, v in self.headers)):
            h.update(len(part).to_bytes(4, "little") + part)
        h.update(self.body)
        return h.hexdigest()

    def key(self) -> str:
        """The Idempotency-Key the guest set itself ("" if none)."""
        return next((v for k, v in self.headers if k.lower() == "idempotency-key"), "")


@dataclass(frozen=True)
class Intent:
    """A request about to leave: enough to recognise it on replay and to send it again."""
    number: int
    method: str
    url: str
    digest: str
    key: str
    resend: bool          # may be sent again after a crash: idempotent, or keys honoured

    def encode(self, monotonic_ns: int) -> bytes:
        meta = {"method": self.method, "url": self.url, "digest": self.digest, "key": self.key,
                "resend": self.resend}
        return journal.encode_fields(INTENT, self.number, monotonic_ns,
                                     [(0, json.dumps(meta, sort_keys=True).encode())])

    @classmethod
    def decode(cls, record: journal.Record) -> Intent:
        meta = json.loads(record.writes[0][1])
        return cls(record.result, str(meta["method"]), str(meta["url"]), str(meta["digest"]),
                   str(meta["key"]), bool(meta["resend"]))

    def describe(self) -> str:
        return f"{self.method} {self.url} (Idempotency-Key {self.key})"


@dataclass(frozen=True)
class Reply:
    """What the guest gets: a response (errno 0) or an errno with a message."""
    errno: int = 0
    status: int = 0
    headers: bytes = b""
    body: bytes = b""
    error: str = ""
    outcome: str = SENT

    def encode(self, monotonic_ns: int) -> bytes:
        meta = {"status": self.status, "error": self.error, "outcome": self.outcome}
        return journal.encode_fields(RESPONSE, self.errno, monotonic_ns,
                                     [(0, json.dumps(meta, sort_keys=True).encode()),
                                      (0, self.headers), (0, self.body)])

    @classmethod
    def decode(cls, record: journal.Record) -> Reply:
        meta = json.loads(record.writes[0][1])
        return cls(record.result, int(meta["status"]), record.writes[1][1], record.writes[2][1],
                   str(meta["error"]), str(meta["outcome"]))
