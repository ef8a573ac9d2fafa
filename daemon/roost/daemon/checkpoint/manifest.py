"""A checkpoint's manifest: what a restore, a replica and a migration need to know of it
(`Manifest`), and apart from it the measurements of how it was taken (`CheckpointStats`).

Both are stored together as one flat JSON object under the checkpoint's key (store/checkpoints
`PageStore.put`), travel together in the worker's CHECKPOINT frame and in a push to a peer
(`CheckpointHeader.manifest`), and are read back by restore, replication, migration and the
API. The flat object is the format on disk and on the wire, so its keys are the ones roostd has
always written; `format_version` is the one key added (a manifest without one is version 1, as
every manifest stored before the key existed reads as one).

    durable   number reason requests journal_seq stdout_offset stderr_offset memory_bytes
              globals created_at stopped_at wake_at_ns prepare_version instrumented
              frames (supervisor) map_base chain_entries map_bytes (store) owner epoch (replica)
    stats     time_to_safepoint_seconds dirty_runs waited_seconds precopy_seconds
              precopied_pages pause_pages stage_seconds tracker pause_seconds dirty_pages
              stored_bytes compress_seconds compress_wait_seconds send_wait_seconds parts
              held_by drain_seconds (supervisor)

A key that is added along the way (by the supervisor, the store, a replica) is None until then
and is left out of the JSON while it is; so are stats a checkpoint never measured. Keys neither
record knows (written by a newer roostd) are kept in `Manifest.extra` and written back as they
came: a replica stores a newer peer's manifest whole.

    manifest, stats = read(raw)                      # bytes/str from the store or a push
    raw = manifest.to_json(stats)                    # bytes, as the store writes them
    manifest = dataclasses.replace(manifest, frames=n)
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.daemon.errors import FormatError

FORMAT_VERSION = 1              # the manifest format this roostd writes and reads
VERSION_KEY = "format_version"

Global = tuple[str, int | float]  # (export name, value) of a mutable global of the guest


def _fail(key: str, want: str, value: object) -> FormatError:
    return FormatError(f"checkpoint manifest: {key} must be {want}, not {value!r}")


def _int(d: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = d.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(key, "an integer", value)
    return value


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    return None if d.get(key) is None else _int(d, key)


def _float(d: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = d.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _fail(key, "a number", value)
    return value        # an int stays one: the JSON written back is the JSON read


def _opt_float(d: Mapping[str, Any], key: str) -> float | None:
    return None if d.get(key) is None else _float(d, key)


def _str(d: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    return value


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    return None if d.get(key) is None else _str(d, key)


def _names(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key, [])
    if not isinstance(value, list) or any(not isinstance(n, str) for n in value):
        raise _fail(key, "a list of strings", value)
    return tuple(value)


def _globals(d: Mapping[str, Any]) -> tuple[Global, ...]:
    value = d.get("globals", [])
    if not isinstance(value, list):
        raise _fail("globals", "a list of [name, value]", value)
    out: list[Global] = []
    for g in value:
        if (not isinstance(g, (list, tuple)) or len(g) != 2 or not isinstance(g[0], str)
                or not isinstance(g[1], (int, float)) or isinstance(g[1], bool)):
            raise _fail("globals", "a list of [name, value]", g)
        out.append((g[0], g[1]))
    return tuple(out)


def _requests(d: Mapping[str, Any]) -> tuple[int, ...]:
    value = d.get("requests", [])
    if not isinstance(value, list) or any(not isinstance(n, int) or isinstance(n, bool) for n in value):
        raise _fail("requests", "a list of integers", value)
    return tuple(value)


def _object(raw: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The JSON object `raw` holds (a dict is taken as parsed already), its version checked."""
    if isinstance(raw, Mapping):
        d = raw
    else:
        try:
            d = json.loads(bytes(raw) if isinstance(raw, memoryview) else raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"checkpoint manifest: not JSON ({e})") from None
        if not isinstance(d, dict):
            raise FormatError(f"checkpoint manifest: not a JSON object but {type(d).__name__}")
    version = _int(d, VERSION_KEY, FORMAT_VERSION)
    if not 1 <= version <= FORMAT_VERSION:
        raise FormatError(f"checkpoint manifest: format version {version} is not supported "
                          f"(this roostd reads versions 1 to {FORMAT_VERSION})")
    return d


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


_STATS_INTS = frozenset({"dirty_runs", "precopied_pages", "pause_pages", "dirty_pages", "stored_bytes", "parts"})
_STATS_STRS = frozenset({"tracker", "held_by"})


@dataclass(frozen=True)
class CheckpointStats:
    """How one checkpoint was taken: what the worker measured in the pause and while writing
    it, and how long the supervisor waited for its store (`drain_seconds`). Metrics, the API's
    answer and the benchmarks read these; nothing restores from them."""
    time_to_safepoint_seconds: float | None = None  # request -> the guest stopped
    dirty_runs: int | None = None            # runs of dirty pages the tracker found
    waited_seconds: float | None = None      # the pause waiting for the previous background write
    precopy_seconds: float | None = None     # pre-copy, while the guest still ran
    precopied_pages: int | None = None
    pause_pages: int | None = None           # pages copied in the pause itself
    stage_seconds: float | None = None       # the pause's copy to the staging buffer
    tracker: str | None = None               # the dirty-page tracker's name
    pause_seconds: float | None = None       # the guest stood still (to its rewind)
    dirty_pages: int | None = None
    stored_bytes: int | None = None          # frames + host state + stack
    compress_seconds: float | None = None    # the whole background write
    compress_wait_seconds: float | None = None   # ... of it waiting for compression
    send_wait_seconds: float | None = None       # ... of it sending PAGES parts
    parts: int | None = None                 # PAGES parts + the CHECKPOINT frame's
    drain_seconds: float | None = None       # the supervisor waiting for the parts' writes
    # The uninstrumented function that held the request longer than the safepoint budget (its
    # loop poll noted it): the module's next preparation instruments it (modules.registry).
    held_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(dataclasses.asdict(self))

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointStats:
        """The stats keys of a (flat) manifest object; the other keys are not looked at."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            read = _opt_str if f.name in _STATS_STRS else _opt_int if f.name in _STATS_INTS else _opt_float
            values[f.name] = read(d, f.name)
        return cls(**values)

    @classmethod
    def from_json(cls, raw: bytes | bytearray | memoryview | str) -> CheckpointStats:
        return cls.from_dict(_object(raw))


_STATS_KEYS = frozenset(f.name for f in dataclasses.fields(CheckpointStats))


@dataclass(frozen=True)
class Manifest:
    """The durable facts of one checkpoint: which it is, where the guest stood (journal
    position, output offsets, memory size, globals), why it was taken, and how its page map is
    chained in the store. Restore, replication, migration and the API read these."""
    number: int
    journal_seq: int                         # the journal position the guest resumes at
    memory_bytes: int
    reason: str = "checkpoint"               # checkpoint | pause | suspend | sleep | migrate
    requests: tuple[int, ...] = ()           # the supervisor's request ids it answered
    stdout_offset: int = 0                   # bytes of output before it: not sent again
    stderr_offset: int = 0
    globals: tuple[Global, ...] = ()
    created_at: float = 0.0                  # unix seconds
    stopped_at: float | None = None          # unix seconds the guest stopped (a migration's
    wake_at_ns: int = 0                      # downtime starts there); sleep: wake time
    prepare_version: int | None = None       # of the prepared module: restorable only by it
    # ... and only by its variant: the functions its preparation instrumented besides the
    # usual ones (adaptive polls; () for the plain preparation, as before the key existed)
    instrumented: tuple[str, ...] = ()
    frames: int | None = None                # frames of this version (supervisor)
    map_base: int | None = None              # the full map its map chain starts at (store)
    chain_entries: int | None = None         # delta entries since map_base (store)
    map_bytes: int | None = None             # its stored map's size (store)
    owner: str | None = None                 # a replica's: the owner that pushed it
    epoch: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=True, hash=False)

    def to_dict(self, stats: CheckpointStats | None = None) -> dict[str, Any]:
        """The flat JSON object: durable keys, then `stats`', then the version."""
        d: dict[str, Any] = {
            "number": self.number, "reason": self.reason, "requests": list(self.requests),
            "journal_seq": self.journal_seq, "stdout_offset": self.stdout_offset,
            "stderr_offset": self.stderr_offset, "memory_bytes": self.memory_bytes,
            "globals": [list(g) for g in self.globals], "created_at": self.created_at,
            "stopped_at": self.stopped_at, "wake_at_ns": self.wake_at_ns}
        d = _drop_none(d)
        d["prepare_version"] = self.prepare_version      # written even when None (as ever)
        if self.instrumented:
            d["instrumented"] = list(self.instrumented)
        d.update(_drop_none({"frames": self.frames, "map_base": self.map_base,
                             "chain_entries": self.chain_entries, "map_bytes": self.map_bytes,
                             "owner": self.owner, "epoch": self.epoch}))
        if stats is not None:
            d.update(stats.to_dict())
        d.update(self.extra)
        d[VERSION_KEY] = FORMAT_VERSION
        return d

    def to_json(self, stats: CheckpointStats | None = None) -> bytes:
        """As `PageStore.put` stores it (sorted keys)."""
        return json.dumps(self.to_dict(stats), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """The durable keys of a flat manifest object (stats keys are `CheckpointStats`');
        FormatError if one has the wrong type or a required one is missing."""
        d = _object(d)
        if "prepare_version" in d and d["prepare_version"] is not None:
            _int(d, "prepare_version")
        extra = {k: v for k, v in d.items() if k not in _KEYS and k not in _STATS_KEYS}
        return cls(
            number=_int(d, "number"), journal_seq=_int(d, "journal_seq"),
            memory_bytes=_int(d, "memory_bytes"), reason=_str(d, "reason", "checkpoint"),
            requests=_requests(d), stdout_offset=_int(d, "stdout_offset", 0),
            stderr_offset=_int(d, "stderr_offset", 0), globals=_globals(d),
            created_at=_float(d, "created_at", 0.0), stopped_at=_opt_float(d, "stopped_at"),
            wake_at_ns=_int(d, "wake_at_ns", 0), prepare_version=d.get("prepare_version"),
            instrumented=_names(d, "instrumented"),
            frames=_opt_int(d, "frames"), map_base=_opt_int(d, "map_base"),
            chain_entries=_opt_int(d, "chain_entries"), map_bytes=_opt_int(d, "map_bytes"),
            owner=_opt_str(d, "owner"), epoch=_opt_int(d, "epoch"), extra=extra)

    @classmethod
    def from_json(cls, raw: bytes | bytearray | memoryview | str) -> Manifest:
        return cls.from_dict(_object(raw))


_KEYS = frozenset(f.name for f in dataclasses.fields(Manifest)) - {"extra"} | {VERSION_KEY}


def read(raw: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> tuple[Manifest, CheckpointStats]:
    """Both records of one stored (or pushed, or sent) manifest."""
    d = _object(raw)
    return Manifest.from_dict(d), CheckpointStats.from_dict(d)
