"""Module preparation: a prepared module (asyncify, exported globals, safepoint polls) behaves
exactly like the original under plain wasmtime, and what Binaryen cannot process is refused.

Prepared modules are cached under tests/.cache/prepared by (source hash, mode, PREPARE_VERSION):
preparing the third-party guests takes minutes the first time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import wasmtime

from roost.daemon.errors import ModuleRejected
from roost.daemon.modules.prepare import ASYNCIFY_MEMORY_EXPORT, PREPARE_VERSION, prepare
from tests.framework.guestbuild import cache_lock, compile_guest
from tests.framework.native import run_native
from tests.framework.shared_guests import Case, cases

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "prepared"
ENGINE = wasmtime.Engine()
C_GUESTS = [("hello", []), ("args_env", ["a", "b c"]), ("clocks", []), ("spin_print", ["40", "2000"]),
            ("compute_loop", ["3000000"]), ("cp_loops", ["3"]), ("exitcode", []), ("stdin_echo", []), ("files", [])]
SHARED = ("boolector", "quickjs", "flite")


def prepared(wasm: Path, preemptive: bool) -> tuple[Path, dict]:
    """The prepared module for `wasm` (path, manifest), preparing it on a cache miss."""
    data = wasm.read_bytes()
    mode = "pre" if preemptive else "coop"
    key = hashlib.sha256(data + f"|{mode}|{PREPARE_VERSION}".encode()).hexdigest()[:24]
    out = CACHE / f"{wasm.stem}-{mode}-{key}.wasm"
    meta = out.with_suffix(".json")
    if not (out.exists() and meta.exists()):
        with cache_lock(out.with_suffix(".lock")):      # test processes prepare it once
            if not (out.exists() and meta.exists()):
                pm = prepare(data, preemptive)
                for path, blob in ((out, pm.wasm), (meta, json.dumps(pm.manifest()).encode())):
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(blob)
                    tmp.replace(path)
    return out, json.loads(meta.read_text())


def shared_case(name: str) -> Case:
    found = [c for c in cases() if c.name == name]
    if not found:
        pytest.skip("third-party guests not fetched (tests/env.sh)")
    return found[0]


def run_plain(wasm: Path, argv: list[str], env: dict[str, str] | None = None, stdin: bytes = b"",
              preopens: list[tuple[Path, str]] = ()) -> tuple[int | str, bytes, bytes]:
    """Run under wasmtime's own WASI, with `roost.safepoint` as a no-op."""
    with tempfile.TemporaryDirectory(prefix="plain-") as tmp:
        t = Path(tmp)
        cfg = wasmtime.WasiConfig()
        cfg.argv = argv
        cfg.env = [[k, v] for k, v in (env or {}).items()]
        (t / "stdin").write_bytes(stdin)
        cfg.stdin_file, cfg.stdout_file, cfg.stderr_file = (str(t / n) for n in ("stdin", "stdout", "stderr"))
        for host, guest in preopens:
            cfg.preopen_dir(str(host), guest)
        store = wasmtime.Store(ENGINE)
        store.set_wasi(cfg)
        linker = wasmtime.Linker(ENGINE)
        linker.define_wasi()
        linker.define_func("roost", "safepoint", wasmtime.FuncType([], []), lambda: None)
        code: int | str = 0
        try:
            linker.instantiate(store, wasmtime.Module.from_file(ENGINE, str(wasm)))\
                .exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:
            code = e.code
        except wasmtime.Trap as e:
            code = "trap: " + str(e).splitlines()[0]
        return code, (t / "stdout").read_bytes(), (t / "stderr").read_bytes()


def case_layout(case: Case, work: Path) -> tuple[list[str], dict[str, str], bytes, list[tuple[Path, str]]]:
    """argv, env, stdin and preopens of a third-party case, with its inputs copied to `work`."""
    work.mkdir(parents=True, exist_ok=True)
    for f in case.spec.get("files", []):
        shutil.copy(case.dir / f, work / f)
    for d in case.spec.get("mkdirs", []):
        (work / d).mkdir(parents=True, exist_ok=True)
    preopens = []
    for host, guest in case.spec.get("preopens", []):
        preopens.append((work / host[5:] if host.startswith("work/") else
                         (work if host == "work" else case.resolve(host)), guest))
    stdin = (work / case.spec["stdin"]).read_bytes() if case.spec.get("stdin") else b""
    return case.spec["argv"], case.spec.get("env", {}), stdin, preopens


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("preemptive", [False, True], ids=["cooperative", "preemptive"])
@pytest.mark.parametrize("name,args", C_GUESTS, ids=[g for g, _ in C_GUESTS])
def test_prepared_c_guest_matches_the_original(name, args, preemptive, tmp_path):
    src = compile_guest(name)
    wasm, manifest = prepared(src, preemptive)
    stdin = b"some input\nover two lines\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    want = run_native(src, [name, *args], [("K", "v")], stdin, [(tmp_path / "a", "/work")])
    got = run_plain(wasm, [name, *args], {"K": "v"}, stdin, [(tmp_path / "b", "/work")])
    assert got == (want.exit_code, want.stdout, want.stderr)
    assert manifest["preemptive"] is preemptive
    assert ("roost_global_0", "i32") in [tuple(g) for g in manifest["globals"]]   # __stack_pointer


# Preparing boolector or QuickJS takes about a minute per mode on these machines; cooperative
# mode (no loop polls) is covered by the C guests and flite, so they are prepared preemptive only
# (the mode roostd uses by default, and the one test_capture restores).
SHARED_MODES = [(name, preemptive) for name in SHARED for preemptive in (False, True)
                if preemptive or name == "flite"]


@pytest.mark.guests
@pytest.mark.parametrize("name,preemptive", SHARED_MODES,
                         ids=[f"{n}-{'preemptive' if p else 'cooperative'}" for n, p in SHARED_MODES])
def test_prepared_shared_guest_matches_the_expected_output(name, preemptive, tmp_path):
    case = shared_case(name)
    wasm, _ = prepared(case.wasm, preemptive)
    argv, env, stdin, preopens = case_layout(case, tmp_path / "work")
    code, out, err = run_plain(wasm, argv, env, stdin, preopens)
    want = case.spec["expected"]
    assert (code, sha(out), sha(err)) == (want["exit"], want["stdout_sha256"], want["stderr_sha256"])
    for f, digest in want.get("files", {}).items():
        assert sha((tmp_path / "work" / f).read_bytes()) == digest


def test_prepared_module_exports_what_capture_needs():
    wasm, manifest = prepared(compile_guest("compute_loop"), True)
    module = wasmtime.Module.from_file(ENGINE, str(wasm))
    exports = {e.name for e in module.exports}
    assert {"asyncify_start_unwind", "asyncify_stop_unwind", "asyncify_start_rewind",
            "asyncify_stop_rewind", "asyncify_get_state", ASYNCIFY_MEMORY_EXPORT} <= exports
    assert {name for name, _ in manifest["globals"]} <= exports
    assert ("roost", "safepoint") in {(i.module, i.name) for i in module.imports}
    assert manifest["loops_polled"] > 0 and manifest["flag_address"] >= 0
    coop, coop_manifest = prepared(compile_guest("compute_loop"), False)
    imports = {(i.module, i.name) for i in wasmtime.Module.from_file(ENGINE, str(coop)).imports}
    assert ("roost", "safepoint") not in imports and coop_manifest["flag_address"] == -1


@pytest.mark.parametrize("blob", [b"not wasm at all", b"\0asm\x01\0\0\0\x01\x7f\x00"],
                         ids=["garbage", "truncated-section"])
def test_what_binaryen_cannot_read_is_refused_without_killing_the_caller(blob):
    with pytest.raises(ModuleRejected, match="module preparation failed"):
        prepare(blob)


def test_progress_is_reported():
    seen: list[str] = []
    prepare(compile_guest("hello").read_bytes(), progress=seen.append)
    assert any("asyncify" in s for s in seen) and any("polls" in s for s in seen)


def test_phases_are_logged_with_their_seconds(caplog):
    caplog.set_level(logging.INFO, logger="roost.prepare")
    prepare(compile_guest("hello").read_bytes())
    lines = [r.getMessage() for r in caplog.records if r.name == "roost.prepare"]
    for phase in ("parse", "globals", "polls", "asyncify", "optimize", "validate", "emit"):
        assert any(re.search(rf"phase {phase} \d+\.\d\ds", line) for line in lines), (phase, lines)
    assert any(re.search(r"phase polls .*: \d+ real, \d+ noted", line) for line in lines)


def test_instrument_turns_noted_polls_into_real_ones():
    """`instrument=` names a function whose polls only noted (the adaptive part): prepared
    again, its loops get real polls, so fewer loops are noted and it is no longer listed."""
    data = compile_guest("leaf_loop").read_bytes()
    before = prepare(data)
    assert "leaf" in dict((n, i) for i, n in before.noted_functions)
    index = dict((n, i) for i, n in before.noted_functions)["leaf"]
    for spelling in ("leaf", index):
        after = prepare(data, instrument={spelling})
        assert "leaf" not in {n for _, n in after.noted_functions}
        assert after.loops_polled == before.loops_polled and after.loops_noted < before.loops_noted
    assert prepare(data, preemptive=False).note_address == -1
