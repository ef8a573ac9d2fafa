"""Checks of the fields a client sets in a Control request, before anything acts on them.

Every field that sizes, times or names something is bounded here, so that a mistaken or hostile
client gets INVALID_ARGUMENT naming the field — not an INTERNAL error from deep inside (NaN,
inf or -5 seconds, an empty id reaching LMDB, a memory limit of 2^64-1) — and error messages
never echo more than a short prefix of what was sent (`short`).
"""
from __future__ import annotations

import math

from google.protobuf.duration_pb2 import Duration
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp

from roost.daemon.errors import InvalidRequest

MAX_REF = 128                    # an execution id (12 hex digits) or a name
MAX_TIMEOUT_SECONDS = 366 * 86400.0
MIN_CHECKPOINT_EVERY_SECONDS = 0.01
MAX_CHECKPOINT_EVERY_SECONDS = 7 * 86400.0
MIN_MEMORY_BYTES = 64 << 10      # one wasm page
MAX_ARGS_BYTES = 1 << 20         # argv and environment, as a guest's args_sizes_get counts them
MAX_PATH = 4096


def short(text: str, limit: int = 80) -> str:
    """At most `limit` characters of a caller's text, for an error message."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def ref(value: str, what: str = "id") -> str:
    """An execution id or name: present, bounded, printable."""
    if not value:
        raise InvalidRequest(f"{what}: an execution id or name is required")
    if len(value) > MAX_REF or not value.isprintable():
        raise InvalidRequest(f"{what}: {short(value, 40)!r} is not an execution id or name "
                             f"(printable, at most {MAX_REF} characters)")
    return value


def seconds(value: float, what: str, low: float = 0.0, high: float = MAX_TIMEOUT_SECONDS) -> float:
    """A duration: finite, within [low, high]; 0 means "the default" and always passes."""
    if value == 0:
        return value
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(f"{what}: {value!r} seconds is not a duration from {low:g} to {high:g}")
    return value


MAX_DURATION_SECONDS = 315_576_000_000   # google.protobuf.Duration's own range (10,000 years)


def duration(value: Duration, what: str, low: float = 0.0,
             high: float = MAX_TIMEOUT_SECONDS) -> float:
    """A request's Duration as seconds, checked like `seconds`: unset or zero means "the
    default" (0.0); a malformed one (nanos out of range or of the other sign) is refused too."""
    if not -1_000_000_000 < value.nanos < 1_000_000_000 or abs(value.seconds) > MAX_DURATION_SECONDS \
            or (value.seconds > 0 > value.nanos) or (value.seconds < 0 < value.nanos):
        raise InvalidRequest(f"{what}: {{seconds: {value.seconds}, nanos: {value.nanos}}} is not "
                             "a valid google.protobuf.Duration")
    return seconds(seconds_of(value), what, low, high)


def seconds_of(value: Duration) -> float:
    """A Duration as float seconds (what the daemon's code measures in)."""
    return value.seconds + value.nanos / 1e9


def to_duration(seconds_: float) -> Duration:
    """Float seconds (a measurement, 0 included) as a Duration, to the nanosecond."""
    out = Duration()
    out.FromNanoseconds(round(seconds_ * 1e9) if math.isfinite(seconds_) else 0)
    return out


def optional_duration(seconds_: float) -> Duration | None:
    """Float seconds as a Duration, where 0 means "none" (no restore yet): left unset."""
    return to_duration(seconds_) if seconds_ else None


def to_timestamp(unix_seconds: float) -> Timestamp | None:
    """Unix seconds (time.time()) as a Timestamp, to the microsecond (a float's precision);
    0 (never happened) leaves the field unset."""
    if not unix_seconds or not math.isfinite(unix_seconds):
        return None
    out = Timestamp()
    out.FromMicroseconds(round(unix_seconds * 1e6))
    return out


def memory_limit(value: int, cap: int) -> int:
    """A requested memory limit (0: the default) no larger than the operator's cap."""
    if value and not MIN_MEMORY_BYTES <= value <= cap:
        raise InvalidRequest(f"memory_limit_bytes: {value} is not from {MIN_MEMORY_BYTES} to the "
                             f"configured cap {cap} (limits.max_memory_bytes)")
    return value


def sha256(value: str, what: str = "module_sha256") -> str:
    """A module's content hash: 64 lowercase hex digits."""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidRequest(f"{what}: {short(value, 40)!r} is not a sha256 (64 hex digits)")
    return value


def name(value: str, what: str = "name") -> str:
    if len(value) > MAX_REF or not value.isprintable():
        raise InvalidRequest(f"{what}: {short(value, 40)!r} is not a name (printable, at most "
                             f"{MAX_REF} characters)")
    return value


def execution_state(value: int, enum: EnumTypeWrapper) -> str:
    """An ExecutionState a request names (a filter): its name; unknown or UNSPECIFIED refused."""
    if value not in enum.values() or value == 0:
        raise InvalidRequest(f"states: {value} is not an execution state (1 to {max(enum.values())})")
    return enum.Name(value)


def args_and_env(argv: list[str], env: list[tuple[str, str]]) -> None:
    """Bounded in total (the guest copies them into its memory at start); no NUL, and no '='
    in an environment variable's name."""
    total = sum(len(a.encode()) + 1 for a in argv) + sum(len(k) + len(v) + 2 for k, v in env)
    if total > MAX_ARGS_BYTES:
        raise InvalidRequest(f"args and env: {total} bytes, more than {MAX_ARGS_BYTES}")
    if any("\0" in a for a in argv):
        raise InvalidRequest("args: an argument holds a NUL byte")
    for key, value in env:
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidRequest(f"env: {short(key, 40)!r} is not a variable name (non-empty, "
                                 "no '=' or NUL)")


def path(value: str, what: str) -> str:
    if not value:
        raise InvalidRequest(f"{what}: a guest path is required")
    if len(value) > MAX_PATH or "\0" in value:
        raise InvalidRequest(f"{what}: {short(value, 40)!r} is not a path (at most {MAX_PATH} "
                             "characters, no NUL)")
    return value


MAX_ALLOW_HTTP = 32                # destinations one execution may name


def allow_http(values: list[str]) -> list[str]:
    """An execution's --allow-http prefixes, each a well-formed http(s) prefix (normalised)."""
    from roost.daemon.http.policy import parse_prefix
    if len(values) > MAX_ALLOW_HTTP:
        raise InvalidRequest(f"allow_http: {len(values)} prefixes, more than {MAX_ALLOW_HTTP}")
    return [str(parse_prefix(short(v, 2048) if len(v) > 2048 else v, "allow_http")) for v in values]
