"""The oracle: run a module under wasmtime's built-in WASI, as a plain wasmtime user would.

Every integration test compares roost's output for a guest byte for byte with this.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime


@dataclass
class Outcome:
    exit_code: int | str          # an int, or "trap: ..." for a trap
    stdout: bytes
    stderr: bytes
    files: dict[str, Path] = field(default_factory=dict)   # guest dir -> host copy after the run


def run_native(wasm: Path, argv: list[str], env: list[tuple[str, str]] = (), stdin: bytes = b"",
               mounts: list[tuple[Path, str]] = (), keep: Path | None = None) -> Outcome:
    """Run `wasm` once. Mounted dirs are copied first (as roost copies them in), so the caller's
    inputs are not modified; the copies are kept under `keep` for comparing output files."""
    work = Path(keep or tempfile.mkdtemp(prefix="native-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = wasmtime.WasiConfig()
    cfg.argv = list(argv)
    cfg.env = [list(kv) for kv in env]
    (work / "stdin").write_bytes(stdin)
    cfg.stdin_file = str(work / "stdin")
    cfg.stdout_file = str(work / "stdout")
    cfg.stderr_file = str(work / "stderr")
    files = {}
    for i, (host, guest) in enumerate(mounts):
        copy = work / f"mount{i}"
        shutil.copytree(host, copy, symlinks=True)
        cfg.preopen_dir(str(copy), guest)
        files[guest] = copy
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    store.set_wasi(cfg)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    instance = linker.instantiate(store, wasmtime.Module.from_file(engine, str(wasm)))
    try:
        instance.exports(store)["_start"](store)
        code: int | str = 0
    except wasmtime.ExitTrap as e:
        code = e.code
    except wasmtime.Trap as e:
        code = "trap: " + str(e)
    out = Outcome(code, (work / "stdout").read_bytes(), (work / "stderr").read_bytes(), files)
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return out
