"""The HTTP settings an execution runs with: the daemon's `[http]` config and `[[http.allow]]`
destinations, narrowed by the execution's own `--allow-http` prefixes. They travel to the
worker in START (`to_meta` / `from_meta`), so the worker needs no config of its own."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from roost.daemon.errors import InvalidRequest
from roost.daemon.http.policy import Prefix, Target, parse_prefix

MAX_RESPONSE_BYTES = 48 << 20


@dataclass(frozen=True)
class Destination:
    """One `[[http.allow]]` entry: a scheme, host, port and path prefix, and whether the
    service there applies each `Idempotency-Key` once (then any request to it may be sent
    again after a crash, not only the idempotent methods)."""
    prefix: Prefix
    idempotency_keys: bool = False

    def to_meta(self) -> dict[str, Any]:
        return {"prefix": str(self.prefix), "idempotency_keys": self.idempotency_keys}


@dataclass(frozen=True)
class HttpSettings:
    """Everything about outbound HTTP that is the daemon's, not the guest's."""
    allow: tuple[Destination, ...] = ()          # the operator's destinations ([[http.allow]])
    timeout_seconds: float = 30.0                # a whole attempt: connect, send, the response
    connect_timeout_seconds: float = 5.0
    retries: int = 3                             # more attempts for connection errors and 5xx
    backoff_seconds: float = 0.1                 # the first retry's wait; doubles each time
    max_response_bytes: int = 16 << 20           # headers + body; more: EMSGSIZE, nothing kept
    ca_bundle: str = ""                          # PEM file of trusted CAs ("": the system's)
    execution: tuple[Prefix, ...] = ()           # the execution's --allow-http prefixes
    key_prefix: str = ""                         # Idempotency-Key = key_prefix + request number

    @property
    def enabled(self) -> bool:
        """Whether the execution asked to make requests: its device folder exists then. Its
        own prefixes decide, not this daemon's [[http.allow]]: a replay on another daemon
        must find the same folder (its requests are then refused there, EACCES)."""
        return bool(self.execution)

    def for_execution(self, exec_id: str, prefixes: Sequence[str]) -> HttpSettings:
        """These settings for one execution: its prefixes, its key prefix."""
        return replace(self, execution=tuple(parse_prefix(p) for p in prefixes),
                       key_prefix=f"roost-{exec_id}-")

    def check_prefixes(self, prefixes: Sequence[str]) -> None:
        """InvalidRequest unless every prefix an execution asks for lies within one of this
        daemon's destinations (checked at start: a clear error then, not EACCES later)."""
        if prefixes and not self.allow:
            raise InvalidRequest("allow_http: this daemon allows no outbound HTTP "
                                 "(add [[http.allow]] entries to roostd's config)")
        for text in prefixes:
            p = parse_prefix(text, "allow_http")
            inside = Target(p.scheme, p.host, p.port, p.path, False)
            if not any(d.prefix.covers(inside) for d in self.allow):
                raise InvalidRequest(f"allow_http: {text} is not within any [[http.allow]] prefix "
                                     f"of this daemon ({', '.join(str(d.prefix) for d in self.allow)})")

    def to_meta(self) -> dict[str, Any]:
        return {"allow": [d.to_meta() for d in self.allow], "timeout_seconds": self.timeout_seconds,
                "connect_timeout_seconds": self.connect_timeout_seconds, "retries": self.retries,
                "backoff_seconds": self.backoff_seconds,
                "max_response_bytes": self.max_response_bytes, "ca_bundle": self.ca_bundle,
                "execution": [str(p) for p in self.execution], "key_prefix": self.key_prefix}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> HttpSettings:
        if not meta:
            return cls()
        return cls(allow=tuple(Destination(parse_prefix(d["prefix"]), bool(d.get("idempotency_keys")))
                               for d in meta.get("allow", ())),
                   timeout_seconds=float(meta["timeout_seconds"]),
                   connect_timeout_seconds=float(meta["connect_timeout_seconds"]),
                   retries=int(meta["retries"]), backoff_seconds=float(meta["backoff_seconds"]),
                   max_response_bytes=int(meta["max_response_bytes"]), ca_bundle=str(meta["ca_bundle"]),
                   execution=tuple(parse_prefix(p) for p in meta.get("execution", ())),
                   key_prefix=str(meta.get("key_prefix", "")))


def settings(allow: Sequence[Any], timeout_seconds: float, connect_timeout_seconds: float,
             retries: int, max_response_bytes: int, ca_bundle: str) -> HttpSettings:
    """The daemon's settings from its config; InvalidRequest names what is wrong."""
    destinations = []
    for i, entry in enumerate(allow):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("prefix"), str):
            raise InvalidRequest(f"http.allow[{i}]: a table with prefix = \"https://host/path/\" is needed")
        unknown = set(entry) - {"prefix", "idempotency_keys"}
        if unknown:
            raise InvalidRequest(f"http.allow[{i}]: unknown setting {sorted(unknown)[0]!r}")
        keys = entry.get("idempotency_keys", False)
        if not isinstance(keys, bool):
            raise InvalidRequest(f"http.allow[{i}].idempotency_keys must be true or false")
        destinations.append(Destination(parse_prefix(entry["prefix"], f"http.allow[{i}].prefix"), keys))
    for name, value in (("timeout_seconds", timeout_seconds),
                        ("connect_timeout_seconds", connect_timeout_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise InvalidRequest(f"http.{name} must be a number of seconds in (0, 3600]")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise InvalidRequest("http.retries must be an integer from 0 to 10")
    if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int) \
            or not 0 < max_response_bytes <= MAX_RESPONSE_BYTES:
        raise InvalidRequest(f"http.max_response_bytes must be a positive integer up to "
                             f"{MAX_RESPONSE_BYTES >> 20} MiB (a response is one journal record, "
                             f"and replicas take records in messages of 64 MiB)")
    return HttpSettings(tuple(destinations), float(timeout_seconds), float(connect_timeout_seconds),
                        retries, max_response_bytes=max_response_bytes, ca_bundle=ca_bundle)
