"""Compile C test guests to wasm32-wasi with the ziglang wheel, cached by content hash.

`compile_guest("hello")` (a name under tests/guests/) or `compile_guest(path)` returns the path
of the compiled module under tests/.cache/guests/, keyed by sha256 of (source, flags), so a
second run does not invoke the compiler at all.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent.parent / "guests"
CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "guests"
FLAGS = ("-target", "wasm32-wasi", "-O2")


def guest_source(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix != ".c":
        p = GUESTS_DIR / f"{p}.c"
    return p


def compile_guest(name_or_path: str | os.PathLike, flags: tuple[str, ...] = FLAGS) -> Path:
    """The compiled .wasm for a guest source, compiling only on a cache miss."""
    src = guest_source(name_or_path)
    key = hashlib.sha256(src.read_bytes() + b"\0" + " ".join(flags).encode()).hexdigest()[:24]
    out = CACHE_DIR / f"{src.stem}-{key}.wasm"
    if out.exists():
        return out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with cache_lock(CACHE_DIR / f"{out.name}.lock"):   # parallel test workers compile it once
        if out.exists():
            return out
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        cmd = [sys.executable, "-m", "ziglang", "cc", *flags, "-o", str(tmp), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"compiling guest {src.name} failed:\n{r.stderr}")
        tmp.replace(out)
    return out


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing): the test processes of one run
    (pytest-xdist workers) and runs beside it build a cached thing once, the others wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
