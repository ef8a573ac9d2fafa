"""Module preparation: make a WASI module checkpointable, once per module.

    prepare(wasm, preemptive=True) -> PreparedModule     (runs Binaryen in a subprocess)

Steps, all through Binaryen's C library (`binaryen`):
1. export every mutable global as `roost_global_<index>` so the worker can save and restore it;
2. preemptive mode: a safepoint poll in every loop that can iterate: each iteration tests the
   flag byte (`i32.load8_u asyncify_memory (FLAG_ADDRESS)`). In a function that can reach an
   unwinding import (directly or through calls, any indirect call counting as one that can) a
   set flag branches out to `call roost.safepoint` in a wrapper loop around it, so the hot loop
   itself holds no call and asyncify guards it once per entry, not per iteration. In any other
   function (a leaf loop: strchr, a qsort comparator, a memcpy) a set flag only stores the
   function's index at NOTE_ADDRESS, with no call, so asyncify leaves the function (and its
   callers' cost) alone; the checkpoint is taken at the next real poll or host call, after it
   returns (`binaryen.Module.insert_loop_polls`). The same holds for the loops nested in a
   call-free loop of a function that keeps real polls (NOTE_CALL_FREE_LOOPS): the outer loop's
   real poll takes the checkpoint at its next iteration, and asyncify guards nothing inside.
   Functions named in `instrument=` (those that held a request too long before: the adaptive
   part, recorded by roost) get real polls in every loop;
3. `asyncify`, with every `wasi_snapshot_preview1.*` and `roost.http_*` import the module has plus
   `roost.safepoint` as the calls that may unwind, and the asyncify data in a secondary memory
   (`asyncify-in-secondary-memory`), exported as `roost_asyncify_memory`; asyncify exports its
   control functions `asyncify_{start,stop}_{unwind,rewind}` and `asyncify_get_state`;
4. optimize (-O3 on the asyncified module: it gains most on interpreters), validate, emit.
Each step is reported as a phase with its seconds ("phase NAME 1.23s: detail") and logged.

The secondary ("roost") memory, never visible to the guest's own code:

    0            flag byte: nonzero = a safepoint is requested (preemptive mode polls it)
    1..3         reserved
    NOTE_ADDRESS=4  i32 note: index (in the original module's function index space) of the
                 last function whose note-only poll saw the flag set; the worker writes
                 0xFFFFFFFF ("none") when it arms the flag (`capture._Control`)
    8..15        reserved
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
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Collection

from roost.daemon.errors import ModuleRejected
from roost.daemon.lifeline import die_with_parent

log = logging.getLogger("roost.prepare")

PREPARE_VERSION = 5
OPTIMIZE_LEVEL = 3
WASI_MODULE = "wasi_snapshot_preview1"
ROOST_MODULE = "roost"          # roost's own imports (durable HTTP): they may unwind too
SAFEPOINT_MODULE, SAFEPOINT_NAME = "roost", "safepoint"
ASYNCIFY_MEMORY_EXPORT = "roost_asyncify_memory"
GLOBAL_EXPORT_PREFIX = "roost_global_"
FLAG_ADDRESS = 0
NOTE_ADDRESS = 4
# In functions that keep real polls, the loops nested in a call-free loop get note-only polls:
# the outer loop's real poll takes the checkpoint at its next iteration (insert_loop_polls).
NOTE_CALL_FREE_LOOPS = True
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
    loops_polled: int = 0                  # loops with a poll, real or note-only
    note_address: int = -1                 # i32 note in the secondary memory, -1 if cooperative
    loops_noted: int = 0                   # of loops_polled, those with a note-only poll
    # (function index, name) of every function with note-only polls (uninstrumented ones, and
    # those with call-free loops): every function a note can name.
    noted_functions: tuple[tuple[int, str], ...] = ()
    prepare_version: int = PREPARE_VERSION

    def manifest(self) -> dict:
        """Everything but the wasm, JSON-able; `capture.Runner` reads it."""
        d = asdict(self)
        del d["wasm"]
        d["globals"] = [list(g) for g in self.globals]
        d["noted_functions"] = [list(f) for f in self.noted_functions]
        d["asyncify_memory_export"] = ASYNCIFY_MEMORY_EXPORT
        return d


def secondary_memory_pages(asyncify_data_bytes: int) -> int:
    return -(-(DATA_PTR + DATA_HEADER_BYTES + asyncify_data_bytes) // PAGE_BYTES)


def prepare(wasm: bytes, preemptive: bool = True, asyncify_data_bytes: int = 1 << 20,
            progress: Callable[[str], None] | None = None,
            optimize_level: int = OPTIMIZE_LEVEL,
            instrument: Collection[str | int] = frozenset()) -> PreparedModule:
    """Prepare `wasm` in a child process; ModuleRejected if Binaryen cannot process it.

    `instrument`: functions (names as in `noted_functions`, or indices) whose loop polls must be
    real safepoints although they cannot reach an import: those that held a checkpoint request
    too long in an earlier run. Each phase is logged (logger `roost.prepare`) with its seconds,
    and passed to `progress` too."""
    with tempfile.TemporaryDirectory(prefix="roost-prepare-") as tmp:
        src, out = Path(tmp) / "in.wasm", Path(tmp) / "out.wasm"
        src.write_bytes(wasm)
        cmd = [sys.executable, "-m", "roost.daemon.modules.prepare", str(src), str(out),
               "--parent", str(os.getpid()),
               "--data-bytes", str(asyncify_data_bytes), "--optimize", str(optimize_level)]
        cmd += [] if preemptive else ["--cooperative"]
        if instrument:
            cmd += ["--instrument", json.dumps(sorted(str(f) for f in instrument))]
        log.info("preparing a module of %d bytes (%s)", len(wasm),
                 "preemptive" if preemptive else "cooperative")
        began = time.monotonic()
        # stderr to a file, not a pipe: Binaryen's warnings could fill a pipe nobody reads
        # while the progress lines are being read.
        with open(Path(tmp) / "stderr", "w+") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
            manifest = _read_child(proc, progress)
            err.seek(0)
            errors = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
        if proc.returncode != 0 or manifest is None:
            why = " ".join(errors).strip() or f"exit status {proc.returncode}"
            raise ModuleRejected(f"module preparation failed: {why[:2000]}")
        log.info("prepared in %.1fs", time.monotonic() - began)
        return PreparedModule(wasm=out.read_bytes(),
                              globals=tuple((n, t) for n, t in manifest["globals"]),
                              preemptive=manifest["preemptive"],
                              asyncify_data_bytes=manifest["asyncify_data_bytes"],
                              flag_address=manifest["flag_address"],
                              data_ptr=manifest["data_ptr"],
                              loops_polled=manifest["loops_polled"],
                              note_address=manifest["note_address"],
                              loops_noted=manifest["loops_noted"],
                              noted_functions=tuple((int(i), str(n)) for i, n
                                                    in manifest["noted_functions"]))


def _read_child(proc: subprocess.Popen, progress: Callable[[str], None] | None) -> dict | None:
    """Progress lines ("progress: ...", each phase with its seconds) are logged as they come,
    and the result ("manifest: {json}") returned; both come on stdout."""
    manifest = None
    assert proc.stdout is not None
    for line in proc.stdout:
        tag, _, rest = line.rstrip("\n").partition(": ")
        if tag == "progress":
            log.info("prepare: %s", rest)
            if progress:
                progress(rest)
        elif tag == "manifest":
            manifest = json.loads(rest)
    proc.wait()
    return manifest


# ---- the child process ----------------------------------------------------------------------
class _Phases:
    """Times each phase of the work and reports it as `phase: NAME SECONDS DETAIL`."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress
        self.began = time.monotonic()

    def done(self, name: str, detail: str = "") -> None:
        now = time.monotonic()
        self.progress(f"phase {name} {now - self.began:.2f}s{': ' + detail if detail else ''}")
        self.began = now


def prepare_in_process(wasm: bytes, preemptive: bool, asyncify_data_bytes: int,
                       progress: Callable[[str], None],
                       optimize_level: int = OPTIMIZE_LEVEL,
                       instrument: Collection[str | int] = frozenset()) -> PreparedModule:
    """The work itself; may abort() inside Binaryen: only call this in a disposable process."""
    from roost.daemon.modules.binaryen import Module, PollCounts
    phases = _Phases(progress)
    with Module(wasm) as m:
        m.enable_features()
        m.run_passes(["strip-dwarf"])      # asyncify invalidates it; Binaryen 116 chokes on DWARF 5
        phases.done("parse", f"{len(wasm)} bytes")
        exported = _export_mutable_globals(m)
        phases.done("globals", f"{len(exported)} exported")
        imports = sorted({f"{mod}.{base}" for _, mod, base in m.function_imports()
                          if mod in (WASI_MODULE, ROOST_MODULE)})
        polls, names = PollCounts(), m.function_names()
        if preemptive:
            forced = _named(names, instrument)
            real = _unwinding_functions(m, names, forced)
            m.add_void_import(_SAFEPOINT_INTERNAL, SAFEPOINT_MODULE, SAFEPOINT_NAME)
            imports.append(f"{SAFEPOINT_MODULE}.{SAFEPOINT_NAME}")
            polls = m.insert_loop_polls(
                _ASYNCIFY_MEMORY, FLAG_ADDRESS, _SAFEPOINT_INTERNAL, NOTE_ADDRESS,
                real=lambda index: index in real,
                call_free_note=lambda index: NOTE_CALL_FREE_LOOPS and index not in forced)
            phases.done("polls", f"safepoint polls in {polls.real + polls.noted} loops: "
                        f"{polls.real} real, {polls.noted} noted (in "
                        f"{len(polls.noted_functions)} functions, {len(real)} can unwind)")
        m.set_optimize_levels(optimize_level)   # asyncify's own cleanups use it too
        m.run_passes(["asyncify"], {
            "asyncify-imports": ",".join(imports),
            "asyncify-in-secondary-memory": "",
            "asyncify-secondary-memory-size": str(secondary_memory_pages(asyncify_data_bytes)),
        })
        m.export_memory(_ASYNCIFY_MEMORY, ASYNCIFY_MEMORY_EXPORT)
        phases.done("asyncify")
        m.optimize()                            # after asyncify: it is what asyncify's code needs
        phases.done("optimize", f"-O{optimize_level}")
        if not m.validate():
            raise RuntimeError("Binaryen's output does not validate")
        phases.done("validate")
        out = m.emit()
        phases.done("emit", f"{len(out)} bytes")
        return PreparedModule(
            wasm=out, globals=exported, preemptive=preemptive,
            asyncify_data_bytes=asyncify_data_bytes,
            flag_address=FLAG_ADDRESS if preemptive else -1, loops_polled=polls.real + polls.noted,
            note_address=NOTE_ADDRESS if preemptive else -1, loops_noted=polls.noted,
            noted_functions=tuple((i, display_name(names[i], i)) for i in polls.noted_functions))


def display_name(binaryen_name: str, index: int) -> str:
    """A function's name for people and for `instrument=`: its name-section name, else
    `func[N]` (Binaryen names an unnamed function by its index)."""
    return f"func[{index}]" if binaryen_name.isdigit() else binaryen_name


def _named(names: list[str], instrument: Collection[str | int]) -> set[int]:
    """Indices of the functions `instrument` names (by name, `func[N]` or index)."""
    wanted = {str(x) for x in instrument}
    return {i for i, n in enumerate(names)
            if n in wanted or display_name(n, i) in wanted or str(i) in wanted}


def _unwinding_functions(m, names: list[str],  # noqa: ANN001 - binaryen.Module
                         forced: set[int]) -> set[int]:
    """Indices of the functions that can reach an unwinding import (a WASI or roost import),
    directly or through calls, any indirect call counting as one that can (as asyncify counts
    it), plus the `forced` ones and everything that calls them."""
    callees, indirect = m.call_graph()
    reach = {n for n, mod, _ in m.function_imports() if mod in (WASI_MODULE, ROOST_MODULE)}
    reach |= indirect | {names[i] for i in forced}
    callers: dict[str, set[str]] = {}
    for caller, targets in callees.items():
        for target in targets:
            callers.setdefault(target, set()).add(caller)
    todo = list(reach)
    while todo:
        for caller in callers.get(todo.pop(), ()):
            if caller not in reach:
                reach.add(caller)
                todo.append(caller)
    # A defined function the text scan did not see (an unusual name): a real poll, as before.
    return {i for i, name in enumerate(names) if name in reach or name not in callees}


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
    [--optimize N] [--parent PID] [--instrument JSON-LIST]"""
    argv = sys.argv[1:] if argv is None else argv
    if "--parent" in argv:                 # run by roostd: never outlive it
        die_with_parent(int(argv[argv.index("--parent") + 1]))
    src, dst = argv[0], argv[1]
    preemptive = "--cooperative" not in argv
    data_bytes = int(argv[argv.index("--data-bytes") + 1]) if "--data-bytes" in argv else 1 << 20
    level = int(argv[argv.index("--optimize") + 1]) if "--optimize" in argv else OPTIMIZE_LEVEL
    instrument = (frozenset(json.loads(argv[argv.index("--instrument") + 1]))
                  if "--instrument" in argv else frozenset())

    def progress(msg: str) -> None:
        print(f"progress: {msg}", flush=True)
    try:
        pm = prepare_in_process(Path(src).read_bytes(), preemptive, data_bytes, progress, level,
                                instrument)
    except Exception as e:   # noqa: BLE001 - reported to the parent as the rejection reason
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    Path(dst).write_bytes(pm.wasm)
    print("manifest: " + json.dumps(pm.manifest()), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
