"""The one wasmtime configuration roost compiles and runs modules with.

The daemon compiles a module at upload and caches the artifact; workers deserialize it. Both
must use an identical engine configuration, and the artifact file name carries a fingerprint of
it so that a wasmtime upgrade or a config change never loads a stale artifact.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import wasmtime

# Features roost refuses at upload (see wasmparse.check_supported): keep them off in the engine
# too, so a module that slipped past the parser still fails validation.
_FEATURES = {"wasm_threads": False, "wasm_memory64": False, "wasm_multi_memory": True,
             "wasm_exceptions": False}
MAX_WASM_STACK_BYTES = 1 << 20


def make_engine(opt_level: str = "speed") -> wasmtime.Engine:
    """`opt_level` "none" compiles about twice as fast (a module's first, unprepared run);
    its artifacts load in the default engine (Cranelift's level is no compatibility flag)."""
    config = wasmtime.Config()
    for name, enabled in _FEATURES.items():
        setattr(config, name, enabled)
    config.cranelift_opt_level = opt_level
    config.max_wasm_stack = MAX_WASM_STACK_BYTES
    return wasmtime.Engine(config)


def fingerprint() -> str:
    """Identifies the engine build and settings an artifact was compiled with."""
    version = getattr(wasmtime, "__version__", "") or _package_version()
    text = f"{version}|{sorted(_FEATURES.items())}|speed|{MAX_WASM_STACK_BYTES}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _package_version() -> str:
    from importlib.metadata import version
    return version("wasmtime")


def artifact_path(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / f"{sha256}.{fingerprint()}.cwasm"
