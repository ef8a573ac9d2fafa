"""Modules: upload, validation, content-hash dedup and the compiled-artifact cache.

A module is accepted only if roost can run it: it parses (`wasmparse`), it imports nothing roost
does not provide, it uses no feature roost refuses, and wasmtime compiles it. The compiled
artifact is cached on disk next to the store so that starting an execution costs a mmap, not a
compilation.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import wasmtime

from . import engine, metrics, wasmparse
from .errors import InvalidRequest, LimitExceeded, ModuleRejected
from .records import ModuleRecord
from .store import Store
from .wasi import PROVIDED_FUNCTIONS

log = logging.getLogger(__name__)
PROVIDED = {"wasi_snapshot_preview1": PROVIDED_FUNCTIONS}


class ModuleRegistry:
    """Owns the modules database and the artifact cache directory."""

    def __init__(self, store: Store, cache_dir: Path, max_module_bytes: int) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.max_module_bytes = max_module_bytes
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

    def add(self, name: str, data: bytes, digest: str) -> tuple[ModuleRecord, bool]:
        with self._lock:
            if self.store.has_module(digest) and self.artifact(digest).exists():
                metrics.MODULE_UPLOADS.labels(result="deduplicated").inc()
                return self.store.get_module(digest), True
            try:
                info = self.check(data)
            except ModuleRejected:
                metrics.MODULE_UPLOADS.labels(result="rejected").inc()
                raise
            self._compile(digest, data)
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

    def _compile(self, digest: str, data: bytes) -> None:
        try:
            module = wasmtime.Module(self._engine, data)
        except wasmtime.WasmtimeError as e:
            raise ModuleRejected(f"module does not compile: {_first_line(e)}") from e
        path = self.artifact(digest)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(module.serialize())
        os.replace(tmp, path)

    def artifact(self, digest: str) -> Path:
        return engine.artifact_path(self.cache_dir, digest)

    def ensure_artifact(self, digest: str) -> Path:
        """The cached artifact, recompiled from the stored bytes if the cache was wiped or the
        engine changed since upload."""
        path = self.artifact(digest)
        if not path.exists():
            with self._lock:
                if not path.exists():
                    self._compile(digest, self.store.module_bytes(digest))
        return path


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
