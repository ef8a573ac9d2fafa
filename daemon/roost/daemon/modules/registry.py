"""Modules: upload, validation, content-hash dedup, preparation and the artifact cache.

A module is accepted only if roost can run it: it parses (`wasmparse`), it imports nothing roost
does not provide, it uses no feature roost refuses, and Binaryen can prepare it for checkpoints
(`prepare`: asyncify, exported globals, safepoint polls). The prepared module is compiled by
wasmtime and cached on disk with its manifest, once per (module, mode), so that starting an
execution costs a mmap, not a preparation or a compilation:

    cache/<sha256>.<mode>.p<PREPARE_VERSION>.<engine fingerprint>.cwasm   compiled artifact
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.<engine fingerprint>.json    its manifest
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.prepared.wasm                the prepared wasm
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.prepared.json                its manifest

mode is "preempt" (loop polls: a compute loop can be stopped) or "coop" (host calls only).

The prepared wasm is kept because it is architecture- and engine-neutral: a peer that receives
the module gets it too (`prepared`, `add_prepared`) and only compiles it, and a new engine
(wasmtime upgrade) recompiles it here; preparation costs minutes for a big module, a
compilation seconds. Each file is written atomically; the artifact last, so that its presence
means the mode is complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import wasmtime

from roost.daemon.errors import InvalidRequest, LimitExceeded, ModuleRejected
from roost.daemon.modules import prepare, wasmparse
from roost.daemon.node import metrics
from roost.daemon.runtime import engine
from roost.daemon.runtime.wasi.host import PROVIDED
from roost.daemon.store.db import Store
from roost.daemon.store.records import ModuleRecord

log = logging.getLogger(__name__)
MODES = ("preempt", "coop")
PREPARED_FACTOR = 8              # a prepared form may be this many times the module size limit
MAX_MANIFEST_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
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
                 asyncify_stack_bytes: int = 1 << 20) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.max_module_bytes = max_module_bytes
        self.asyncify_stack_bytes = asyncify_stack_bytes
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._engine = engine.make_engine()
        self._lock = threading.Lock()   # one compilation of a given module at a time

    def receive(self, name: str, size_bytes: int, want_sha256: str, chunks: Iterable[bytes],
                prepared: Sequence[PreparedForm] = ()) -> tuple[ModuleRecord, bool]:
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
        return self.add(name, bytes(data), digest, prepared=prepared)

    def add(self, name: str, data: bytes, digest: str,
            progress: Callable[[str], None] | None = None,
            prepared: Sequence[PreparedForm] = ()) -> tuple[ModuleRecord, bool]:
        """Check and store a module, prepared in the preemptive mode unless the cache or the
        `prepared` forms (a peer's, installed once `data` passed its checks) have it."""
        with self._lock:
            if self.store.has_module(digest) and self.artifact(digest, True).exists():
                self._install_forms(digest, prepared)
                metrics.MODULE_UPLOADS.labels(result="deduplicated").inc()
                return self.store.get_module(digest), True
            try:
                info = self.check(data)
                self._install_forms(digest, prepared)
                if not self.artifact(digest, True).exists():   # a shared cache or a peer may hold it
                    self._prepare(digest, data, True, progress)
            except ModuleRejected:
                metrics.MODULE_UPLOADS.labels(result="rejected").inc()
                raise
            record = ModuleRecord(sha256=digest, name=name, size_bytes=len(data),
                                  uploaded_at=time.time(),
                                  imports=[f"{i.module}.{i.name}" for i in info.imports])
            self.store.put_module(record, data)
            metrics.MODULE_UPLOADS.labels(result="stored").inc()
            log.info("stored module %s (%s, %d bytes)", digest[:12], name, len(data))
            return record, False

    def check(self, data: bytes) -> wasmparse.ModuleInfo:
        info = wasmparse.parse(data)
        wasmparse.check_supported(info, PROVIDED)
        try:
            wasmtime.Module.validate(self._engine, data)
        except wasmtime.WasmtimeError as e:
            raise ModuleRejected(f"invalid module: {_first_line(e)}") from e
        return info

    def _prepare(self, digest: str, data: bytes, preemptive: bool,
                 progress: Callable[[str], None] | None = None) -> None:
        """Prepare, compile and cache one mode of a module (minutes for a large module), unless
        its prepared wasm is kept already (then a compilation for this engine is enough)."""
        if self._compile_kept(digest, preemptive):
            return
        began = time.monotonic()
        prepared = prepare.prepare(data, preemptive=preemptive,
                                   asyncify_data_bytes=self.asyncify_stack_bytes, progress=progress)
        metrics.PREPARE_SECONDS.observe(time.monotonic() - began)
        module = self._compile(prepared.wasm)
        self._cache(digest, preemptive, prepared.wasm, prepared.manifest(), module)
        log.info("prepared module %s (%s) in %.1f s", digest[:12], _mode(preemptive),
                 time.monotonic() - began)

    def _compile_kept(self, digest: str, preemptive: bool) -> bool:
        """Compile the kept prepared wasm of a mode for this engine; False if there is none
        (or it no longer compiles: then it is prepared again)."""
        kept = self._read_prepared(digest, _mode(preemptive))
        if kept is None or self._foreign(kept.manifest):
            return False
        try:
            self._cache(digest, preemptive, kept.wasm, kept.manifest, self._compile(kept.wasm))
        except ModuleRejected as e:
            log.warning("kept prepared wasm of module %s (%s) is unusable, preparing again: %s",
                        digest[:12], kept.mode, e)
            return False
        log.info("compiled module %s (%s) from its kept prepared wasm", digest[:12], kept.mode)
        return True

    def _compile(self, wasm: bytes) -> wasmtime.Module:
        try:
            return wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise ModuleRejected(f"prepared module does not compile: {_first_line(e)}") from e

    def _cache(self, digest: str, preemptive: bool, wasm: bytes, manifest: dict,
               module: wasmtime.Module) -> None:
        """Write a mode's files, the prepared wasm (the one the artifact is compiled from) with
        them; the artifact last (its presence means the mode is complete)."""
        kept, path = self.prepared_path(digest, _mode(preemptive)), self.artifact(digest, preemptive)
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

    def _read_prepared(self, digest: str, mode: str) -> PreparedForm | None:
        kept = self.prepared_path(digest, mode)
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
        with self._lock:
            return self._add_prepared(digest, PreparedForm(mode, wasm, manifest))

    def _install_forms(self, digest: str, forms: Sequence[PreparedForm]) -> None:
        """A peer's prepared forms, sent with a module: one that is unusable is only logged
        (this roostd prepares that mode itself when it needs it)."""
        for form in forms:
            try:
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

    def artifact(self, digest: str, preemptive: bool) -> Path:
        return self.cache_dir / f"{digest}.{_mode(preemptive)}.p{prepare.PREPARE_VERSION}.{engine.fingerprint()}.cwasm"

    def prepared_path(self, digest: str, mode: str) -> Path:
        """The kept prepared wasm of a mode (its manifest: the same path, .json)."""
        return self.cache_dir / f"{digest}.{mode}.p{prepare.PREPARE_VERSION}.prepared.wasm"

    @property
    def max_prepared_bytes(self) -> int:
        """The largest prepared form a peer may send (preparation grows a module)."""
        return self.max_module_bytes * PREPARED_FACTOR

    def ensure_artifact(self, digest: str, preemptive: bool = True,
                        progress: Callable[[str], None] | None = None) -> tuple[Path, dict]:
        """The compiled prepared module and its manifest, prepared now if the cache lacks it
        (first use of a mode, a wiped cache, or a new engine or preparation version)."""
        path = self.artifact(digest, preemptive)
        if not path.exists():
            with self._lock:
                if not path.exists():
                    self._prepare(digest, self.store.module_bytes(digest), preemptive, progress)
        return path, json.loads(path.with_suffix(".json").read_bytes())


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
        pm = prepare.PreparedModule(
            wasm=b"", globals=tuple((_str(n), _str(t)) for n, t in raw["globals"]),
            preemptive=raw["preemptive"] is True, asyncify_data_bytes=_int(raw["asyncify_data_bytes"]),
            flag_address=_int(raw["flag_address"]), data_ptr=_int(raw["data_ptr"]),
            loops_polled=_int(raw.get("loops_polled", 0)), prepare_version=_int(raw["prepare_version"]))
    except KeyError as e:
        raise ModuleRejected(f"prepared module's manifest lacks {str(e)[:60]}") from e
    except (TypeError, ValueError) as e:
        raise ModuleRejected(f"prepared module's manifest is malformed: {str(e)[:120]}") from e
    if pm.preemptive != preemptive:
        raise ModuleRejected(f"prepared module's manifest is for the other mode than {_mode(preemptive)!r}")
    if raw.get("asyncify_memory_export", prepare.ASYNCIFY_MEMORY_EXPORT) != prepare.ASYNCIFY_MEMORY_EXPORT:
        raise ModuleRejected("prepared module's manifest names another asyncify memory export")
    return pm.manifest()


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
    exports = {e.name for e in module.exports}
    wanted = [manifest["asyncify_memory_export"], *_ASYNCIFY_EXPORTS, *(n for n, _ in manifest["globals"])]
    missing = [name for name in wanted if name not in exports]
    if missing:
        raise ModuleRejected(f"prepared module lacks the export {missing[0]!r}")
    safepoint = {(prepare.SAFEPOINT_MODULE, prepare.SAFEPOINT_NAME)} if manifest["preemptive"] else set()
    for imp in module.imports:
        if imp.name not in PROVIDED.get(imp.module, ()) and (imp.module, imp.name) not in safepoint:
            raise ModuleRejected(f"prepared module imports {imp.module}.{imp.name}, which roost does not provide")


def _write_atomic(path: Path, data: bytes | bytearray) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
