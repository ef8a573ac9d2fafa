"""Module preparation: make a WASI module checkpointable, once per module.

    prepare(wasm, preemptive=True) -> PreparedModule     (runs Binaryen in a subprocess)

Steps, all through Binaryen's C library (`binaryen`):
1. export every mutable global as `roost_global_<index>` so the worker can save and restore it;
2. preemptive mode: a safepoint poll in every loop that can iterate: each iteration tests the
   flag byte (`i32.load8_u asyncify_memory (FLAG_ADDRESS)`) and only a set flag branches out to
   `call roost.safepoint` in a wrapper loop around it (`binaryen.Module.insert_loop_polls`), so
   the hot loop itself holds no call and asyncify guards it once per entry, not per iteration;
3. `asyncify`, with every `wasi_snapshot_preview1.*` and `roost.http_*` import the module has plus
   `roost.safepoint` as the calls that may unwind, and the asyncify data in a secondary memory
   (`asyncify-in-secondary-memory`), exported as `roost_asyncify_memory`; asyncify exports its
   control functions `asyncify_{start,stop}_{unwind,rewind}` and `asyncify_get_state`;
4. optimize (-O3: it gains most on interpreters), validate, emit.

The secondary ("roost") memory, never visible to the guest's own code:

    0            flag byte: nonzero = a safepoint is requested (preemptive mode polls it)
    1..15        reserved
    DATA_PTR=16  asyncify data header: i32 current, i32 end   (little-endian)
    24 ..        asyncify stack area, `asyncify_data_bytes` long (end = 24 + asyncify_data_bytes)

`asyncify_start_unwind(DATA_PTR)` / `asyncify_start_rewind(DATA_PTR)` take DATA_PTR, an address
in the secondary memory (with `asyncify-in-secondary-memory` every asyncify load and store goes
to that memory). Unwinding appends each frame's locals and call index at `current` and traps
(`unreachable`) if `current` would pass `end`: `capture` turns that into a clear error. The used
part of the stack area is [24, current).

Binaryen prints fatal errors and may abort(): `prepare()` runs the work in a child process
(`python -m roost.daemon.modules.prepare`) and turns any failure into `ModuleRejected`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from roost.daemon.errors import ModuleRejected
from roost.daemon.lifeline import die_with_parent

PREPARE_VERSION = 2
OPTIMIZE_LEVEL = 3
WASI_MODULE = "wasi_snapshot_preview1"
ROOST_MODULE = "roost"          # roost's own imports (durable HTTP): they may unwind too
SAFEPOINT_MODULE, SAFEPOINT_NAME = "roost", "safepoint"
ASYNCIFY_MEMORY_EXPORT = "roost_asyncify_memory"
GLOBAL_EXPORT_PREFIX = "roost_global_"
FLAG_ADDRESS = 0
DATA_PTR = 16
DATA_HEADER_BYTES = 8
PAGE_BYTES = 65536
_ASYNCIFY_MEMORY = "asyncify_memory"    # the name Binaryen 116 gives the secondary memory
_SAFEPOINT_INTERNAL = "roost_safepoint"


@dataclass(frozen=True)
class PreparedModule:
    wasm: bytes
    globals: tuple[tuple[str, str], ...]   # (export name, valtype) of every mutable global
    preemptive: bool
    asyncify_data_bytes: int               # size of the asyncify stack area
    flag_address: int                      # safepoint flag byte in the secondary memory, -1 if cooperative
    data_ptr: int = DATA_PTR               # asyncify data header in the secondary memory
    loops_polled: int = 0
    prepare_version: int = PREPARE_VERSION

    def manifest(self) -> dict:
        """Everything but the wasm, JSON-able; `capture.Runner` reads it."""
        d = asdict(self)
        del d["wasm"]
        d["globals"] = [list(g) for g in self.globals]
        d["asyncify_memory_export"] = ASYNCIFY_MEMORY_EXPORT
        return d


def secondary_memory_pages(asyncify_data_bytes: int) -> int:
    return -(-(DATA_PTR + DATA_HEADER_BYTES + asyncify_data_bytes) // PAGE_BYTES)


def prepare(wasm: bytes, preemptive: bool = True, asyncify_data_bytes: int = 1 << 20,
            progress: Callable[[str], None] | None = None,
            optimize_level: int = OPTIMIZE_LEVEL) -> PreparedModule:
    """Prepare `wasm` in a child process; ModuleRejected if Binaryen cannot process it."""
    with tempfile.TemporaryDirectory(prefix="roost-prepare-") as tmp:
        src, out = Path(tmp) / "in.wasm", Path(tmp) / "out.wasm"
        src.write_bytes(wasm)
        cmd = [sys.executable, "-m", "roost.daemon.modules.prepare", str(src), str(out),
               "--parent", str(os.getpid()),
               "--data-bytes", str(asyncify_data_bytes), "--optimize", str(optimize_level)]
        cmd += [] if preemptive else ["--cooperative"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        manifest, errors = _read_child(proc, progress)
        if proc.returncode != 0 or manifest is None:
            why = " ".join(errors).strip() or f"exit status {proc.returncode}"
            raise ModuleRejected(f"module preparation failed: {why[:2000]}")
        return PreparedModule(wasm=out.read_bytes(),
                              globals=tuple((n, t) for n, t in manifest["globals"]),
                              preemptive=manifest["preemptive"],
                              asyncify_data_bytes=manifest["asyncify_data_bytes"],
                              flag_address=manifest["flag_address"],
                              data_ptr=manifest["data_ptr"],
                              loops_polled=manifest["loops_polled"])


def _read_child(proc: subprocess.Popen, progress: Callable[[str], None] | None
                ) -> tuple[dict | None, list[str]]:
    """Progress lines ("progress: ...") and the result ("manifest: {json}") come on stdout;
    Binaryen's own complaints on stderr."""
    manifest = None
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        tag, _, rest = line.rstrip("\n").partition(": ")
        if tag == "progress" and progress:
            progress(rest)
        elif tag == "manifest":
            manifest = json.loads(rest)
    errors = [ln.strip() for ln in proc.stderr.read().splitlines() if ln.strip()]
    proc.wait()
    return manifest, errors


# ---- the child process ----------------------------------------------------------------------
def prepare_in_process(wasm: bytes, preemptive: bool, asyncify_data_bytes: int,
                       progress: Callable[[str], None],
                       optimize_level: int = OPTIMIZE_LEVEL) -> PreparedModule:
    """The work itself; may abort() inside Binaryen: only call this in a disposable process."""
    from roost.daemon.modules.binaryen import Module
    with Module(wasm) as m:
        m.enable_features()
        m.run_passes(["strip-dwarf"])      # asyncify invalidates it; Binaryen 116 chokes on DWARF 5
        exported = _export_mutable_globals(m)
        imports = sorted({f"{mod}.{base}" for _, mod, base in m.function_imports()
                          if mod in (WASI_MODULE, ROOST_MODULE)})
        loops = 0
        if preemptive:
            m.add_void_import(_SAFEPOINT_INTERNAL, SAFEPOINT_MODULE, SAFEPOINT_NAME)
            imports.append(f"{SAFEPOINT_MODULE}.{SAFEPOINT_NAME}")
            loops = m.insert_loop_polls(_ASYNCIFY_MEMORY, FLAG_ADDRESS, _SAFEPOINT_INTERNAL)
            progress(f"safepoint polls in {loops} loops")
        progress("asyncify")
        m.set_optimize_levels(optimize_level)   # asyncify's own cleanups use it too
        m.run_passes(["asyncify"], {
            "asyncify-imports": ",".join(imports),
            "asyncify-in-secondary-memory": "",
            "asyncify-secondary-memory-size": str(secondary_memory_pages(asyncify_data_bytes)),
        })
        m.export_memory(_ASYNCIFY_MEMORY, ASYNCIFY_MEMORY_EXPORT)
        progress(f"optimize -O{optimize_level}")
        m.optimize()
        progress("validate")
        if not m.validate():
            raise RuntimeError("Binaryen's output does not validate")
        return PreparedModule(wasm=m.emit(), globals=exported, preemptive=preemptive,
                              asyncify_data_bytes=asyncify_data_bytes,
                              flag_address=FLAG_ADDRESS if preemptive else -1, loops_polled=loops)


def _export_mutable_globals(m) -> tuple[tuple[str, str], ...]:   # noqa: ANN001 - binaryen.Module
    out = []
    for index, name, mutable, valtype in m.globals():
        if mutable:
            export = f"{GLOBAL_EXPORT_PREFIX}{index}"
            m.export_global(name, export)
            out.append((export, valtype))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    """python -m roost.daemon.modules.prepare IN.wasm OUT.wasm [--cooperative] [--data-bytes N]
    [--optimize N] [--parent PID]"""
    argv = sys.argv[1:] if argv is None else argv
    if "--parent" in argv:                 # run by roostd: never outlive it
        die_with_parent(int(argv[argv.index("--parent") + 1]))
    src, dst = argv[0], argv[1]
    preemptive = "--cooperative" not in argv
    data_bytes = int(argv[argv.index("--data-bytes") + 1]) if "--data-bytes" in argv else 1 << 20
    level = int(argv[argv.index("--optimize") + 1]) if "--optimize" in argv else OPTIMIZE_LEVEL

    def progress(msg: str) -> None:
        print(f"progress: {msg}", flush=True)
    try:
        pm = prepare_in_process(Path(src).read_bytes(), preemptive, data_bytes, progress, level)
    except Exception as e:   # noqa: BLE001 - reported to the parent as the rejection reason
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    Path(dst).write_bytes(pm.wasm)
    print("manifest: " + json.dumps(pm.manifest()), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
