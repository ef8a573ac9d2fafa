"""Modules: upload, validation, content-hash dedup, preparation and the artifact cache.

A module is accepted only if roost can run it: it parses (`wasmparse`), it imports nothing roost
does not provide, it uses no feature roost refuses, and Binaryen can prepare it for checkpoints
(`prepare`: asyncify, exported globals, safepoint polls). The prepared module is compiled by
wasmtime and cached on disk with its manifest, once per (module, mode), so that starting an
execution costs a mmap, not a preparation or a compilation:

    cache/<sha256>.<mode>.p<PREPARE_VERSION>.<engine fingerprint>.cwasm   compiled artifact
    cache/<sha256>.<mode>.p<PREPARE_VERSION>.<engine fingerprint>.json    its manifest

mode is "preempt" (loop polls: a compute loop can be stopped) or "coop" (host calls only).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import wasmtime

from roost.daemon.errors import InvalidRequest, LimitExceeded, ModuleRejected
from roost.daemon.modules import prepare, wasmparse
from roost.daemon.node import metrics
from roost.daemon.runtime import engine
from roost.daemon.runtime.wasi import PROVIDED_FUNCTIONS
from roost.daemon.store.db import Store
from roost.daemon.store.records import ModuleRecord

log = logging.getLogger(__name__)
PROVIDED = {"wasi_snapshot_preview1": PROVIDED_FUNCTIONS}


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

    def receive(self, name: str, size_bytes: int, want_sha256: str,
                chunks: Iterable[bytes]) -> tuple[ModuleRecord, bool]:
        """Assemble an upload, then `add` it. Returns (record, deduplicated)."""
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
        return self.add(name, bytes(data), digest)

    def add(self, name: str, data: bytes, digest: str,
            progress: Callable[[str], None] | None = None) -> tuple[ModuleRecord, bool]:
        with self._lock:
            if self.store.has_module(digest) and self.artifact(digest, True).exists():
                metrics.MODULE_UPLOADS.labels(result="deduplicated").inc()
                return self.store.get_module(digest), True
            try:
                info = self.check(data)
                if not self.artifact(digest, True).exists():   # a shared cache may hold it
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
        """Prepare, compile and cache one mode of a module (minutes for a large module)."""
        began = time.monotonic()
        prepared = prepare.prepare(data, preemptive=preemptive,
                                   asyncify_data_bytes=self.asyncify_stack_bytes, progress=progress)
        metrics.PREPARE_SECONDS.observe(time.monotonic() - began)
        try:
            module = wasmtime.Module(self._engine, prepared.wasm)
        except wasmtime.WasmtimeError as e:
            raise ModuleRejected(f"prepared module does not compile: {_first_line(e)}") from e
        path = self.artifact(digest, preemptive)
        _write_atomic(path.with_suffix(".json"), json.dumps(prepared.manifest()).encode())
        _write_atomic(path, module.serialize())
        log.info("prepared module %s (%s) in %.1f s", digest[:12], _mode(preemptive),
                 time.monotonic() - began)

    def get(self, digest: str) -> ModuleRecord:
        """The record of an uploaded module (NotFound if there is none)."""
        return self.store.get_module(digest)

    def list(self) -> list[ModuleRecord]:
        """Every uploaded module's record."""
        return self.store.list_modules()

    def artifact(self, digest: str, preemptive: bool) -> Path:
        return self.cache_dir / f"{digest}.{_mode(preemptive)}.p{prepare.PREPARE_VERSION}.{engine.fingerprint()}.cwasm"

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


def _write_atomic(path: Path, data: bytes | bytearray) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
