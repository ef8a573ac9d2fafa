"""Modules: upload, validation, content-hash dedup, preparation and the artifact cache.

A module is accepted only if roost can run it: it parses (`wasmparse`), it imports nothing roost
does not provide, it uses no feature roost refuses, and wasmtime validates it. It is prepared
for checkpoints (`prepare`: asyncify, exported globals, safepoint polls) in the background; one
Binaryen cannot prepare runs without checkpoints (logged). The prepared module is compiled by
wasmtime and cached on disk with its manifest, once per (module, mode), so that starting an
execution costs a mmap, not a preparation or a compilation:

    cache/<sha256>.<mode>.p<PREPARE_VERSION>.<engine fingerprint>.cwasm   compiled artifact
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.<engine fingerprint>.json    its manifest
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.prepared.wasm                the prepared wasm
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.prepared.json                its manifest

    cache/<sha256>.plain.<engine fingerprint>.cwasm                       the original, compiled

mode is "preempt" (loop polls: a compute loop can be stopped) or "coop" (host calls only).

Adaptive loop polls: a loop poll in a function that cannot reach an import only notes the
request (prepare.py). A checkpoint whose request such a function held longer than the safepoint
budget names it (`CheckpointStats.held_by`), and `note_slow_function` adds it to the module's
list (cache/<sha256>.<mode>.instrument.json, at most MAX_INSTRUMENTED names) and queues the
preparation of the variant that instruments those functions. A variant's files carry a short
hash of its sorted names after the mode (`<sha256>.<mode>.i<hash>.p<V>...`), its manifest the
names (`instrumented`). A fresh start runs the newest variant that is ready; a checkpoint
records the names of the variant it was taken in (`Manifest.instrumented`: the asyncify stack
layout differs between variants) and is restored only into that variant, prepared again if
this roostd lacks it (a peer after a failover: the same names give the same module).

Preparation costs minutes for a big module (Binaryen's asyncify), so nothing waits for it: an
upload is checked (parse, imports, features, wasmtime's validation) and stored at once, and
its preparation queued for the one background thread (`_Preparer`; Binaryen's child at a low
CPU priority). Until a mode's artifact exists, `ensure_artifact` gives a launch the original
module compiled as is ("plain": seconds) with an empty manifest: its guest runs with its host
calls journaled as usual but cannot be checkpointed (checkpoint, pause, migration are refused;
a durable sleep sleeps in the worker; a crash or a restart replays the journal from the start,
on the prepared module if it is ready by then: the same host calls in the same order). It
first waits for a preparation under way until `prepared_wait_seconds` after it was queued, if
the module is small (under `PLAIN_QUICK_BYTES`): one is often prepared in less, and starts
checkpointable. A big one is compiled without Cranelift's optimizations (twice as fast).

The prepared wasm is kept because it is architecture- and engine-neutral: a peer that receives
the module gets it too (`prepared`, `add_prepared`) and only compiles it, and a new engine
(wasmtime upgrade) recompiles it here; preparation costs minutes for a big module, a
compilation seconds. Each file is written atomically; the artifact last, so that its presence
means the mode is complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from roost.daemon import faults
from roost.daemon.errors import InvalidRequest, LimitExceeded, ModuleRejected, NotFound
from roost.daemon.lazy import load
from roost.daemon.modules import prepare, wasmparse
from roost.daemon.node import metrics
from roost.daemon.store.db import Store
from roost.daemon.store.records import ModuleRecord

if TYPE_CHECKING:
    import wasmtime

    from roost.daemon.runtime import engine
else:      # (wasmtime, on first use: roostd serves its API before it imports it, issue 14)
    from roost.daemon.lazy import LazyModule
    wasmtime, engine = LazyModule("wasmtime"), LazyModule("roost.daemon.runtime.engine")

log = logging.getLogger(__name__)
MODES = ("preempt", "coop")
PLAIN = "plain"                  # the original module compiled as is: no checkpoints
UNPREPARED: dict = {}            # the manifest of a plain artifact (the worker: not checkpointable)
UNPREPARED_WHY = ("its module is still being prepared for checkpoints: it runs unprepared until then, "
                  "and a restart of its worker replays it on the prepared module")
PREPARED_WAIT_SECONDS = 3.0      # a launch waits until this long after a preparation was queued
PLAIN_QUICK_BYTES = 4 << 20     # a module this big runs unprepared at once, compiled unoptimized
PREPARE_NICE = 10                # Binaryen's child yields the CPU to guests and the API
PREPARED_FACTOR = 8              # a prepared form may be this many times the module size limit
MAX_MANIFEST_BYTES = 1 << 20
SAFEPOINT_BUDGET_SECONDS = 0.010  # a longer time to safepoint names the function that held it
#                                   (the worker's default: `checkpointer.SAFEPOINT_BUDGET_SECONDS`)
MAX_INSTRUMENTED = 64            # functions an adaptive variant instruments, at most
MAX_FUNCTION_NAME = 256
Names = tuple[str, ...]          # an adaptive variant: the functions it instruments, sorted
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")      # a sha256 or a prefix of one (`resolve`)
_ASYNCIFY_EXPORTS = ("asyncify_start_unwind", "asyncify_stop_unwind", "asyncify_start_rewind",
                     "asyncify_stop_rewind", "asyncify_get_state")


class PreparedForm(NamedTuple):
    """One mode of a module as preparation left it: uncompiled wasm (any host can compile it)
    and the manifest the worker reads with the artifact."""
    mode: str
    wasm: bytes
    manifest: dict


class ModuleRegistry:
    """Owns the modules database and the artifact cache directory."""

    def __init__(self, store: Store, cache_dir: Path, max_module_bytes: int,
                 asyncify_stack_bytes: int = 1 << 20,
                 prepared_wait_seconds: float = PREPARED_WAIT_SECONDS,
                 run_unprepared: bool = True,
                 safepoint_budget_seconds: float = SAFEPOINT_BUDGET_SECONDS) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.max_module_bytes = max_module_bytes
        self.asyncify_stack_bytes = asyncify_stack_bytes
        self.prepared_wait_seconds = prepared_wait_seconds
        self.run_unprepared = run_unprepared     # False: every launch waits for the prepared one
        self.safepoint_budget_seconds = safepoint_budget_seconds   # (to the worker: manifest)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._quick_engine: wasmtime.Engine | None = None   # (opt level none: made when needed)
        self._lock = threading.Lock()   # guards _keys (held for no compilation)
        self._keys: dict[tuple[str, str], threading.Lock] = {}   # one build of an artifact at a time
        self._notes = threading.Lock()  # guards the instrument.json files
        self._preparer = _Preparer(self)
        # A mode of a module is prepared and cached (main: push its form to the peers that
        # hold the module, so that the cluster prepares it once).
        self.on_prepared: Callable[[str, str], None] = lambda digest, mode: None

    def receive(self, name: str, size_bytes: int, want_sha256: str, chunks: Iterable[bytes],
                prepared: Sequence[PreparedForm] = (), prepare_now: bool = True
                ) -> tuple[ModuleRecord, bool]:
        """Assemble an upload, then `add` it (with the prepared forms a peer sent along).
        Returns (record, deduplicated)."""
        if size_bytes > self.max_module_bytes:
            raise LimitExceeded(f"module {name!r} is {size_bytes} bytes; the limit is {self.max_module_bytes}")
        data = bytearray()
        for chunk in chunks:
            data += chunk
            if len(data) > size_bytes:
                raise InvalidRequest(f"upload of {name!r}: more bytes than the announced {size_bytes}")
        if len(data) != size_bytes:
            raise InvalidRequest(f"upload of {name!r} truncated: got {len(data)} of {size_bytes} bytes")
        digest = hashlib.sha256(data).hexdigest()
        if want_sha256 and want_sha256 != digest:
            raise InvalidRequest(f"upload of {name!r}: sha256 mismatch (got {digest}, announced {want_sha256})")
        return self.add(name, bytes(data), digest, prepared=prepared, prepare_now=prepare_now)

    def add(self, name: str, data: bytes, digest: str,
            progress: Callable[[str], None] | None = None,
            prepared: Sequence[PreparedForm] = (), prepare_now: bool = True
            ) -> tuple[ModuleRecord, bool]:
        """Check and store a module, at once; its preemptive preparation is queued (unless the
        cache or the `prepared` forms, a peer's installed once `data` passed its checks, have
        it). `prepare_now=False` (a peer's push: its owner prepares it, and sends the forms)
        leaves it to the first launch here. `progress` is obsolete: prepare.py logs the phases."""
        if self.store.has_module(digest):
            self._install_forms(digest, prepared)
            metrics.MODULE_UPLOADS.labels(result="deduplicated").inc()
            if prepare_now:
                self.prepare_later(digest, True)
            return self.store.get_module(digest), True
        try:
            info = self.check(data)
        except ModuleRejected:
            metrics.MODULE_UPLOADS.labels(result="rejected").inc()
            raise
        self._install_forms(digest, prepared)
        record = ModuleRecord(sha256=digest, name=name, size_bytes=len(data),
                              uploaded_at=time.time(),
                              imports=[f"{i.module}.{i.name}" for i in info.imports])
        self.store.put_module(record, data)
        metrics.MODULE_UPLOADS.labels(result="stored").inc()
        log.info("stored module %s (%s, %d bytes)", digest[:12], name, len(data))
        if prepare_now:
            self.prepare_later(digest, True)
        return record, False

    def prepare_later(self, digest: str, preemptive: bool) -> None:
        """Queue a mode's preparation for the background thread, unless it is cached (or
        under way, or failed already)."""
        if not self.artifact(digest, preemptive).exists():
            self._preparer.want(digest, preemptive)

    def preparing(self, digest: str, preemptive: bool) -> bool:
        """A mode's preparation is queued or under way."""
        return self._preparer.pending(digest, preemptive)

    @cached_property
    def _engine(self) -> wasmtime.Engine:
        """wasmtime's engine, made at its first use (a check, a compilation; roostd's start
        warms it in the background): roostd serves its API before it imports wasmtime.
        (cached_property locks: one engine, whichever thread asks first.)"""
        return engine.make_engine()

    def check(self, data: bytes) -> wasmparse.ModuleInfo:
        info = wasmparse.parse(data)
        wasmparse.check_supported(info, _provided())
        try:
            wasmtime.Module.validate(self._engine, data)
        except wasmtime.WasmtimeError as e:
            raise ModuleRejected(f"invalid module: {_first_line(e)}") from e
        return info

    def _key(self, digest: str, kind: str) -> threading.Lock:
        with self._lock:
            return self._keys.setdefault((digest, kind), threading.Lock())

    def _build(self, digest: str, preemptive: bool, niced: bool = False,
               instrument: Names = ()) -> None:
        """Prepare, compile and cache a mode (an adaptive variant of it: `instrument`) unless
        it is cached; one build of each at a time (a caller that must have it waits for the
        background's build)."""
        with self._key(digest, _mode(preemptive) + _variant(instrument)):
            if not self.artifact(digest, preemptive, instrument).exists():
                self._prepare(digest, self.store.module_bytes(digest), preemptive, niced=niced,
                              instrument=instrument)

    def _prepare(self, digest: str, data: bytes, preemptive: bool,
                 progress: Callable[[str], None] | None = None, niced: bool = False,
                 instrument: Names = ()) -> None:
        """Prepare, compile and cache one mode of a module (minutes for a large module), unless
        its prepared wasm is kept already (then a compilation for this engine is enough)."""
        if self._compile_kept(digest, preemptive, instrument):
            return
        began = time.monotonic()
        what = _mode(preemptive) + (f", instrumenting {', '.join(instrument)}" if instrument else "")
        log.info("preparing module %s (%s, %d bytes)%s", digest[:12], what, len(data),
                 " in the background" if niced else "")
        slow = faults.value(faults.Fault.SLOW_PREPARE_MS)
        if slow:                        # tests: a preparation as slow as a big module's
            time.sleep(slow / 1000)
        run = lambda: prepare.prepare(data, preemptive=preemptive,  # noqa: E731
                                      asyncify_data_bytes=self.asyncify_stack_bytes, progress=progress,
                                      instrument=frozenset(instrument))
        prepared = _niced(run) if niced else run()
        metrics.PREPARE_SECONDS.observe(time.monotonic() - began)
        module = self._compile(prepared.wasm)
        manifest = prepared.manifest()
        if instrument:                  # (a checkpoint taken in it records them: restore)
            manifest["instrumented"] = list(instrument)
        self._cache(digest, preemptive, prepared.wasm, manifest, module, instrument)
        log.info("prepared module %s (%s) in %.1f s", digest[:12], what, time.monotonic() - began)

    def _compile_kept(self, digest: str, preemptive: bool, instrument: Names = ()) -> bool:
        """Compile the kept prepared wasm of a mode for this engine; False if there is none
        (or it no longer compiles: then it is prepared again)."""
        kept = self._read_prepared(digest, _mode(preemptive), instrument)
        if kept is None or self._foreign(kept.manifest):
            return False
        try:
            self._cache(digest, preemptive, kept.wasm, kept.manifest, self._compile(kept.wasm),
                        instrument)
        except ModuleRejected as e:
            log.warning("kept prepared wasm of module %s (%s) is unusable, preparing again: %s",
                        digest[:12], kept.mode, e)
            return False
        log.info("compiled module %s (%s) from its kept prepared wasm", digest[:12], kept.mode)
        return True

    def _compile(self, wasm: bytes, what: str = "prepared module", quick: bool = False) -> wasmtime.Module:
        """`quick`: without Cranelift's optimizations, twice as fast to compile (a big module's
        unprepared run: its first output comes sooner; it runs so only until prepared)."""
        eng = self._engine
        if quick:
            if self._quick_engine is None:
                self._quick_engine = engine.make_engine("none")
            eng = self._quick_engine
        try:
            return wasmtime.Module(eng, wasm)
        except wasmtime.WasmtimeError as e:
            raise ModuleRejected(f"{what} does not compile: {_first_line(e)}") from e

    def _cache(self, digest: str, preemptive: bool, wasm: bytes, manifest: dict,
               module: wasmtime.Module, instrument: Names = ()) -> None:
        """Write a mode's files, the prepared wasm (the one the artifact is compiled from) with
        them; the artifact last (its presence means the mode is complete)."""
        kept = self.prepared_path(digest, _mode(preemptive), instrument)
        path = self.artifact(digest, preemptive, instrument)
        encoded = json.dumps(manifest).encode()
        _write_atomic(kept.with_suffix(".json"), encoded)
        _write_atomic(kept, wasm)
        _write_atomic(path.with_suffix(".json"), encoded)
        _write_atomic(path, module.serialize())

    def prepared(self, digest: str) -> list[PreparedForm]:
        """The prepared forms of a module this cache keeps (the modes used here so far), for a
        peer: it compiles them instead of preparing. Prepares nothing."""
        _check_digest(digest)
        forms = (self._read_prepared(digest, mode) for mode in MODES)
        return [form for form in forms if form is not None]

    def _read_prepared(self, digest: str, mode: str, instrument: Names = ()) -> PreparedForm | None:
        kept = self.prepared_path(digest, mode, instrument)
        try:
            manifest = json.loads(kept.with_suffix(".json").read_bytes())
            return PreparedForm(mode, kept.read_bytes(), manifest)
        except (OSError, ValueError):
            return None

    def add_prepared(self, digest: str, mode: str, wasm: bytes, manifest: dict) -> bool:
        """Compile and cache a peer's prepared form of a module (ModuleRejected if it does not
        compile or its manifest does not fit it). False if it is ignored: prepared by another
        preparation version or for another asyncify stack size than this roostd's (it prepares
        the module itself if it runs it)."""
        with self._key(digest, _mode(_preemptive(mode))):
            return self._add_prepared(digest, PreparedForm(mode, wasm, manifest))

    def _install_forms(self, digest: str, forms: Sequence[PreparedForm]) -> None:
        """A peer's prepared forms, sent with a module: one that is unusable is only logged
        (this roostd prepares that mode itself when it needs it)."""
        for form in forms:
            try:
                with self._key(digest, _mode(_preemptive(form.mode))):
                    self._add_prepared(digest, form)
            except ModuleRejected as e:
                log.warning("ignored a peer's prepared form of module %s (%s): %s",
                            digest[:12], form.mode, e)

    def _add_prepared(self, digest: str, form: PreparedForm) -> bool:
        _check_digest(digest)
        preemptive = _preemptive(form.mode)
        if self.artifact(digest, preemptive).exists() and self.prepared_path(digest, form.mode).exists():
            return True
        why = self._foreign(form.manifest)
        if why:
            log.info("ignored a prepared form of module %s (%s): %s", digest[:12], form.mode, why)
            return False
        manifest = _checked_manifest(form.manifest, preemptive)
        module = self._compile(form.wasm)
        _check_interface(module, manifest)
        self._cache(digest, preemptive, form.wasm, manifest, module)
        log.info("compiled module %s (%s) from a prepared form received", digest[:12], form.mode)
        return True

    def _foreign(self, manifest: dict) -> str:
        """Why a prepared form is not what this roostd would have made ("" if it is)."""
        version = manifest.get("prepare_version") if isinstance(manifest, dict) else None
        if version != prepare.PREPARE_VERSION:
            return f"preparation version {version!r}, this roostd's is {prepare.PREPARE_VERSION}"
        if manifest.get("asyncify_data_bytes") != self.asyncify_stack_bytes:
            return (f"asyncify stack of {manifest.get('asyncify_data_bytes')!r} bytes, "
                    f"this roostd's is {self.asyncify_stack_bytes}")
        return ""

    def get(self, digest: str) -> ModuleRecord:
        """The record of an uploaded module (NotFound if there is none)."""
        return self.store.get_module(digest)

    def list(self) -> list[ModuleRecord]:
        """Every uploaded module's record."""
        return self.store.list_modules()

    def resolve(self, ref: str, what: str = "sha256") -> str:
        """The sha256 `ref` stands for: the whole digest, or a unique prefix of one (as docker
        takes image ids). NotFound for none; InvalidRequest naming the candidates for several."""
        if not _HEX_PREFIX.fullmatch(ref):
            raise InvalidRequest(f"{what}: {ref[:80]!r} is not a sha256 or a prefix of one "
                                 "(1 to 64 lowercase hex digits)")
        if len(ref) == 64:
            return ref
        matches = sorted(d for d in self.store.module_ids() if d.startswith(ref))
        if len(matches) > 1:
            raise InvalidRequest(f'"{ref}" matches {len(matches)} modules: {", ".join(matches)}')
        if not matches:
            raise NotFound(f"module {ref} not found")
        return matches[0]

    def remove(self, digest: str) -> int:
        """Delete a module (record and bytes) and every file the cache holds of it (all its
        modes, variants and engines: they all start with its digest); queued preparations of
        it are dropped. The caller checks no execution needs it. The cache files removed."""
        self._preparer.forget(digest)
        if not self.store.delete_module(digest):
            raise NotFound(f"module {digest} not found")
        files = list(self.cache_dir.glob(f"{digest}.*"))
        for path in files:
            path.unlink(missing_ok=True)
        with self._lock:
            for key in [k for k in self._keys if k[0] == digest]:
                del self._keys[key]
        log.info("removed module %s (%d cache files)", digest[:12], len(files))
        return len(files)

    def artifact(self, digest: str, preemptive: bool, instrument: Names = ()) -> Path:
        return self.cache_dir / (f"{digest}.{_mode(preemptive)}{_variant(instrument)}"
                                 f".p{prepare.PREPARE_VERSION}.{engine.fingerprint()}.cwasm")

    def prepared_path(self, digest: str, mode: str, instrument: Names = ()) -> Path:
        """The kept prepared wasm of a mode (its manifest: the same path, .json)."""
        return self.cache_dir / f"{digest}.{mode}{_variant(instrument)}.p{prepare.PREPARE_VERSION}.prepared.wasm"

    # ---- adaptive loop polls ----
    def instrument_path(self, digest: str, mode: str) -> Path:
        """The functions a mode's next preparation instruments (a JSON list, sorted)."""
        return self.cache_dir / f"{digest}.{mode}.instrument.json"

    def instrumented(self, digest: str, mode: str) -> Names:
        """The newest adaptive variant of a mode: the functions noted so far (() if none, or
        if the file is unreadable: the plain preparation is always sound)."""
        try:
            names = json.loads(self.instrument_path(digest, mode).read_bytes())
            return _names(names)
        except (OSError, ValueError, TypeError):
            return ()

    def note_slow_function(self, digest: str, mode: str, name: str) -> None:
        """`name` held a checkpoint request of the module past the safepoint budget: add it
        to the mode's list (persisted) and queue the preparation of the variant that
        instruments the list. A full list is left as it is (logged)."""
        _check_digest(digest)
        preemptive = _preemptive(mode)
        if not isinstance(name, str) or not 0 < len(name) <= MAX_FUNCTION_NAME:
            log.warning("module %s: ignored a function name to instrument: %r", digest[:12], name)
            return
        with self._notes:
            names = self.instrumented(digest, mode)
            if name not in names:
                if len(names) >= MAX_INSTRUMENTED:
                    log.warning("module %s (%s): %s held a safepoint request too long, but %d "
                                "functions are instrumented already", digest[:12], mode, name,
                                len(names))
                    return
                names = tuple(sorted({*names, name}))
                _write_atomic(self.instrument_path(digest, mode), json.dumps(list(names)).encode())
                log.info("module %s (%s): instrumenting %s at its next preparation (%d in all)",
                         digest[:12], mode, name, len(names))
        if not self.artifact(digest, preemptive, names).exists():
            self._preparer.want(digest, preemptive, names)

    @property
    def max_prepared_bytes(self) -> int:
        """The largest prepared form a peer may send (preparation grows a module)."""
        return self.max_module_bytes * PREPARED_FACTOR

    def plain_artifact(self, digest: str) -> Path:
        """The original module compiled as is (runs before its preparation ends)."""
        return self.cache_dir / f"{digest}.{PLAIN}.{engine.fingerprint()}.cwasm"

    def ensure_artifact(self, digest: str, preemptive: bool = True,
                        progress: Callable[[str], None] | None = None,
                        wait: bool = False,
                        instrument: Sequence[str] | None = None) -> tuple[Path, dict]:
        """The compiled module to run and its manifest. The prepared one if it is cached, or
        is prepared within `prepared_wait_seconds` (queued now if it is not under way: first
        use of a mode, a wiped cache, a new engine or preparation version); else the original
        compiled as is, with the manifest `UNPREPARED` (empty: not checkpointable), while the
        preparation goes on in the background. `wait`: the prepared one, whatever it takes
        (a checkpoint is to be restored; `roost modules prepare`).

        `instrument`: the adaptive variant a checkpoint to restore was taken in (its
        `Manifest.instrumented`; () the plain preparation), prepared now if it is not cached.
        None (a fresh start): the newest variant that is ready, else the plain preparation
        (and the variant is queued, if it is not under way)."""
        if instrument is not None and instrument:
            names = tuple(sorted(set(instrument)))   # (as the variant was keyed)
            path = self.artifact(digest, preemptive, names)
            if not path.exists():
                self._build(digest, preemptive, instrument=names)
            return path, self._manifest(path)
        if instrument is None:
            newest = self.instrumented(digest, _mode(preemptive))
            if newest:
                path = self.artifact(digest, preemptive, newest)
                if path.exists():
                    return path, self._manifest(path)
                self._preparer.want(digest, preemptive, newest)   # (a restart forgot it)
        path = self.artifact(digest, preemptive)
        if not path.exists():
            if wait or not self.run_unprepared:
                self._build(digest, preemptive)
            else:
                self.prepare_later(digest, preemptive)
                plain = self._plain(digest)        # (seconds for a big module: meanwhile it
                if not self._preparer.wait(digest, preemptive, self._budget(digest)):  # prepares)
                    return plain, dict(UNPREPARED)
        return path, self._manifest(path)

    def _manifest(self, artifact: Path) -> dict:
        """An artifact's manifest for its worker, with this roostd's safepoint budget if it is
        not the worker's default (`checkpointer.SAFEPOINT_BUDGET_SECONDS`, the same): the
        manifest is then the prepared one as stored, the one a peer receives."""
        manifest = json.loads(artifact.with_suffix(".json").read_bytes())
        if manifest.get("preemptive") and self.safepoint_budget_seconds != SAFEPOINT_BUDGET_SECONDS:
            manifest["safepoint_budget_seconds"] = self.safepoint_budget_seconds
        return manifest

    def _budget(self, digest: str) -> float:
        """How long a launch may wait for a preparation: none for a big module (minutes)."""
        small = self.store.get_module(digest).size_bytes < PLAIN_QUICK_BYTES
        return self.prepared_wait_seconds if small else 0.0

    def _plain(self, digest: str) -> Path:
        """Compile and cache the original module once (`plain_artifact`)."""
        path = self.plain_artifact(digest)
        if path.exists():
            return path
        with self._key(digest, PLAIN):
            if not path.exists():
                began = time.monotonic()
                data = self.store.module_bytes(digest)
                module = self._compile(data, "module", quick=len(data) >= PLAIN_QUICK_BYTES)
                _write_atomic(path, module.serialize())
                log.info("compiled module %s unprepared in %.1f s (it runs so until prepared)",
                         digest[:12], time.monotonic() - began)
        return path


class _Preparer:
    """The one background thread that prepares queued modes, one at a time, oldest first. A
    preparation that fails is logged and not tried again by this roostd (the module runs
    unprepared; a `wait` caller prepares it itself and gets the error)."""

    def __init__(self, registry: ModuleRegistry) -> None:
        self.registry = registry
        self._queue: deque[_Key] = deque()
        self._current: _Key | None = None
        self._failed: set[_Key] = set()
        self._since: dict[_Key, float] = {}   # when it was queued (monotonic)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def want(self, digest: str, preemptive: bool, instrument: Names = ()) -> None:
        key = (digest, preemptive, instrument)
        with self._changed:
            if key in self._queue or key == self._current or key in self._failed:
                return
            self._queue.append(key)
            self._since[key] = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="roost-prepare", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def forget(self, digest: str) -> None:
        """A removed module: its queued preparations go (one under way finishes; its files
        are removed with the module's, or left in the cache if it ends after that)."""
        with self._changed:
            self._queue = deque(k for k in self._queue if k[0] != digest)
            self._failed = {k for k in self._failed if k[0] != digest}
            self._changed.notify_all()

    def pending(self, digest: str, preemptive: bool) -> bool:
        key = (digest, preemptive, ())
        with self._changed:
            return key == self._current or key in self._queue

    def wait(self, digest: str, preemptive: bool, budget: float) -> bool:
        """Whether the mode's artifact is there, waiting for its preparation until `budget`
        seconds after it was queued (an upload queues it: `roost run` waits for it at most
        `budget` seconds in all, however many times it asks)."""
        artifact = self.registry.artifact(digest, preemptive)
        deadline = self._since.get((digest, preemptive, ()), time.monotonic()) + budget
        with self._changed:       # (not while others' are prepared first: that takes minutes)
            while not artifact.exists() and self._active((digest, preemptive, ())):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.05))
        return artifact.exists()

    def _active(self, key: _Key) -> bool:
        """Being prepared, or next with the thread idle (the call holds `_changed`)."""
        return key == self._current or (self._current is None and bool(self._queue)
                                        and self._queue[0] == key)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                self._current = self._queue.popleft()
            key = self._current
            digest, preemptive, instrument = key
            try:
                # Niced only where guests run meanwhile: with run_unprepared = false a launch
                # waits for this very preparation.
                self.registry._build(digest, preemptive, niced=self.registry.run_unprepared,
                                     instrument=instrument)
            except Exception as e:   # noqa: BLE001 - the module runs unprepared: say why, go on
                with self._changed:
                    self._failed.add(key)
                log.warning("could not prepare module %s (%s%s); %s: %s", digest[:12], _mode(preemptive),
                            _variant(instrument), "it runs on the plain preparation" if instrument
                            else "it runs without checkpoints", _first_line(e))
            else:
                if not instrument:         # (peers get the plain forms; a variant is rebuilt)
                    self._prepared(digest, preemptive)
            with self._changed:
                self._current = None
                self._since.pop(key, None)
                self._changed.notify_all()

    def _prepared(self, digest: str, preemptive: bool) -> None:
        try:
            self.registry.on_prepared(digest, _mode(preemptive))
        except Exception:   # noqa: BLE001 - a listener's failure is not the preparation's
            log.exception("after preparing module %s", digest[:12])


def _niced(run: Callable[[], prepare.PreparedModule]) -> prepare.PreparedModule:
    """Run `run` in a thread of its own at a low CPU priority (nice is per thread on Linux,
    and a child inherits its creating thread's): Binaryen's child then yields the CPU to the
    guests, the API and the compilation of an unprepared module for its first run."""
    result: list[prepare.PreparedModule] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PREPARE_NICE)
        except OSError:
            pass
        try:
            result.append(run())
        except BaseException as e:   # noqa: BLE001 - re-raised in the caller's thread
            error.append(e)
    thread = threading.Thread(target=body, name="roost-prepare-niced", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


_Key = tuple[str, bool, Names]      # a preparation: (module, preemptive, adaptive variant)


def _variant(instrument: Names) -> str:
    """The file name part of an adaptive variant ("" for the plain preparation)."""
    if not instrument:
        return ""
    return ".i" + hashlib.sha256("\n".join(sorted(instrument)).encode()).hexdigest()[:12]


def _names(value: object) -> Names:
    """A list of function names as a variant (sorted, deduplicated, bounded); TypeError if it
    is not one."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_INSTRUMENTED or any(
            not isinstance(n, str) or not 0 < len(n) <= MAX_FUNCTION_NAME for n in value):
        raise TypeError(f"{repr(value)[:80]} is not a list of function names")
    return tuple(sorted(set(value)))


def _mode(preemptive: bool) -> str:
    return "preempt" if preemptive else "coop"


def _preemptive(mode: str) -> bool:
    if mode not in MODES:
        raise InvalidRequest(f"unknown preparation mode {mode[:40]!r} (known: {', '.join(MODES)})")
    return mode == "preempt"


def _check_digest(digest: str) -> None:
    if not _SHA256.fullmatch(digest):
        raise InvalidRequest(f"not a sha256 digest: {digest[:80]!r}")


def _checked_manifest(raw: dict, preemptive: bool) -> dict:
    """A peer's manifest rebuilt from the fields the worker reads, each of its type (so the
    worker never meets a surprise), for the mode it is sent as."""
    try:
        optional: dict[str, Any] = {name: convert(raw[name]) for name, convert in _OPTIONAL_FIELDS.items()
                    if name in raw and name in _PREPARED_FIELDS}
        pm = prepare.PreparedModule(
            wasm=b"", globals=tuple((_str(n), _str(t)) for n, t in raw["globals"]),
            preemptive=raw["preemptive"] is True, asyncify_data_bytes=_int(raw["asyncify_data_bytes"]),
            flag_address=_int(raw["flag_address"]), data_ptr=_int(raw["data_ptr"]),
            loops_polled=_int(raw.get("loops_polled", 0)), prepare_version=_int(raw["prepare_version"]),
            **optional)
    except KeyError as e:
        raise ModuleRejected(f"prepared module's manifest lacks {str(e)[:60]}") from e
    except (TypeError, ValueError) as e:
        raise ModuleRejected(f"prepared module's manifest is malformed: {str(e)[:120]}") from e
    if pm.preemptive != preemptive:
        raise ModuleRejected(f"prepared module's manifest is for the other mode than {_mode(preemptive)!r}")
    if raw.get("asyncify_memory_export", prepare.ASYNCIFY_MEMORY_EXPORT) != prepare.ASYNCIFY_MEMORY_EXPORT:
        raise ModuleRejected("prepared module's manifest names another asyncify memory export")
    return pm.manifest()


def _noted(v: object) -> tuple[tuple[int, str], ...]:
    if not isinstance(v, list):
        raise TypeError(f"{repr(v)[:60]} is not a list")
    return tuple((_int(i), _str(n)) for i, n in v)


# Manifest fields a preparation version may add (checked by type, carried if this roostd's
# PreparedModule has them): the worker reads them too.
_OPTIONAL_FIELDS: dict[str, Callable[[object], object]] = {
    "note_address": lambda v: _int(v), "loops_noted": lambda v: _int(v), "noted_functions": _noted}
_PREPARED_FIELDS = {f.name for f in dataclasses.fields(prepare.PreparedModule)}


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{repr(v)[:60]} is not a string")
    return v


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{repr(v)[:60]} is not an integer")
    return v


def _check_interface(module: wasmtime.Module, manifest: dict) -> None:
    """ModuleRejected unless a prepared module exports what the worker will look up and imports
    only what it provides (WASI, and the safepoint in preemptive mode)."""
    provided = _provided()
    exports = {e.name for e in module.exports}
    wanted = [manifest["asyncify_memory_export"], *_ASYNCIFY_EXPORTS, *(n for n, _ in manifest["globals"])]
    missing = [name for name in wanted if name not in exports]
    if missing:
        raise ModuleRejected(f"prepared module lacks the export {missing[0]!r}")
    safepoint = {(prepare.SAFEPOINT_MODULE, prepare.SAFEPOINT_NAME)} if manifest["preemptive"] else set()
    for imp in module.imports:
        if imp.name not in provided.get(imp.module, ()) and (imp.module, imp.name) not in safepoint:
            raise ModuleRejected(f"prepared module imports {imp.module}.{imp.name}, which roost does not provide")


def _write_atomic(path: Path, data: bytes | bytearray) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _provided() -> dict[str, frozenset[str]]:
    """`runtime.wasi.host.PROVIDED` (it imports wasmtime: not at start; see `lazy.load`)."""
    return load("roost.daemon.runtime.wasi.host").PROVIDED
