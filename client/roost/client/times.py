"""Times in the Control API: google.protobuf.Timestamp and Duration, to and from the float
seconds the CLI computes with — the conversions live here once, not at every field."""
from __future__ import annotations

import math

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from roost.client.errors import LocalError


def unix_seconds(value: Timestamp) -> float:
    """A Timestamp as unix seconds; 0.0 when unset (the event has not happened)."""
    return value.seconds + value.nanos / 1e9


def seconds_of(value: Duration) -> float:
    """A Duration as float seconds; 0.0 when unset."""
    return value.seconds + value.nanos / 1e9


def to_duration(seconds: float | None) -> Duration | None:
    """Float seconds as a Duration for a request; None or 0 leaves the field unset (the
    daemon's default). NaN or an infinity has no Duration: refused here, before sending."""
    if not seconds:
        return None
    if not math.isfinite(seconds):
        raise LocalError(f"{seconds!r} seconds is not a duration")
    out = Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def to_timestamp(unix: float) -> Timestamp | None:
    """Unix seconds as a Timestamp (to the microsecond); 0 leaves the field unset."""
    if not unix:
        return None
    out = Timestamp()
    out.FromMicroseconds(round(unix * 1e6))
    return out


def json_seconds(text: str) -> float:
    """A Duration as JSON shows it ("1.500s", as `roost ... --json` and grpcurl print it) as
    float seconds."""
    out = Duration()
    out.FromJsonString(text)
    return seconds_of(out)


def json_unix_seconds(text: str) -> float:
    """A Timestamp as JSON shows it (RFC 3339, "2026-12-07T12:43:38.123456Z") as unix seconds."""
    out = Timestamp()
    out.FromJsonString(text)
    return unix_seconds(out)
