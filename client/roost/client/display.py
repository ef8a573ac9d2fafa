"""Display: how the CLI turns sizes, times and messages into text, and text into sizes."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from roost.client import times
from roost.client.errors import LocalError
from roost.v1 import control_pb2 as pb

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
ENDED_STATES = frozenset({pb.EXITED, pb.FAILED, pb.KILLED})


def parse_size(text: str) -> int:
    """Parses "512", "64K", "256M", "1.5G" (binary units; "MiB"/"MB" read the same)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise LocalError(f"bad size {text!r}: expected a number with an optional K/M/G/T suffix")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


# A guest's linear memory grows in WebAssembly pages of 64 KiB; a 32-bit memory has at most
# 65536 of them. Limits are said in KiB/MiB/GiB: pages are an implementation detail.
MIN_MEMORY_LIMIT = 64 << 10
MAX_MEMORY_LIMIT = 4 << 30


def parse_memory_limit(text: str) -> int:
    """`--memory-limit`: a size from 64 KiB (the smallest memory a guest can have) to 4 GiB
    (the most a 32-bit WebAssembly memory can address), refused at parse time otherwise."""
    size = parse_size(text)
    if size < MIN_MEMORY_LIMIT:
        raise LocalError(f"bad memory limit {text!r}: the smallest is 64K (64 KiB, a guest's "
                         "least memory)")
    if size > MAX_MEMORY_LIMIT:
        raise LocalError(f"bad memory limit {text!r}: the largest is 4G (4 GiB, all a 32-bit "
                         "guest can address)")
    return size


def human_bytes(size_bytes: int) -> str:
    """1536 -> "1.5 KiB": binary units, one decimal past KiB."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def human_duration(seconds: float) -> str:
    """Short, docker-ps style: "850ms", "42s", "3m12s", "5h03m", "2d04h"."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def state_name(state: int) -> str:
    """ExecutionState as a lowercase word for tables ("running", "exited")."""
    return pb.ExecutionState.Name(state).lower()


def runtime_seconds(execution: pb.Execution, now: float) -> float | None:
    """How long the execution has run (so far, if it is still running); None before start."""
    started = times.unix_seconds(execution.start_time)
    if not started:
        return None
    return (times.unix_seconds(execution.finish_time) or now) - started


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, without trailing blanks."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def message_dict(message: Message) -> dict[str, Any]:
    """A message as the JSON the CLI prints: proto field names, defaults included."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def to_json(value: Message | Iterable[Message]) -> str:
    """One message as a JSON object, or several as a JSON list."""
    if isinstance(value, Message):
        return json.dumps(message_dict(value), indent=2)
    return json.dumps([message_dict(m) for m in value], indent=2)
