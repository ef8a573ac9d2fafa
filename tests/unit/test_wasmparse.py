"""Upload validation: roost.daemon.modules.wasmparse must reject bad or unsupported modules with a
one-line reason, never crash with a non-ModuleRejected exception, and stay fast on big modules."""
from __future__ import annotations

import glob
import os
import random
import time
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.daemon.errors import ModuleRejected
from roost.daemon.modules.wasmparse import Import, InvalidModule, check_supported, parse
from tests.framework.shared_guests import guests_dir

WASI = "wasi_snapshot_preview1"
PROVIDED = {WASI: frozenset({"fd_write", "proc_exit", "args_get", "args_sizes_get"})}
GUESTS = str((guests_dir() or Path("/nonexistent")) / "wasm")

COMMAND_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1 16)
  (data (i32.const 8) "hello\\n")
  (global $g (mut i32) (i32.const 0))
  (table 1 funcref)
  (func $helper (result i32) (i32.const 42))
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
    (call $proc_exit (i32.const 0))))
"""


def wasm(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + leb(len(payload)) + payload


def name(s: str) -> bytes:
    return leb(len(s.encode())) + s.encode()


HEADER = b"\x00asm\x01\x00\x00\x00"
ENGINE = wasmtime.Engine()
COMMAND = wasm(COMMAND_WAT)


def command_with(extra: str, memory: str = '(memory (export "memory") 1)') -> bytes:
    """A minimal WASI command plus `extra` module fields."""
    return wasm(f'(module {extra} {memory} (func (export "_start")))')


def rejection(data: bytes, provided=PROVIDED) -> str:
    """The one-line reason parse+check_supported give for `data`."""
    with pytest.raises(ModuleRejected) as exc:
        check_supported(parse(data), provided)
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# ---- accepted modules ---------------------------------------------------------------------

def test_valid_command_passes_and_is_described():
    info = parse(COMMAND)
    check_supported(info, PROVIDED)
    assert info.imports == (Import(WASI, "fd_write", "func"), Import(WASI, "proc_exit", "func"))
    assert set(info.exports) == {("memory", "memory"), ("_start", "func")}
    assert len(info.memories) == 1
    mem = info.memories[0]
    assert (mem.minimum_pages, mem.maximum_pages, mem.shared, mem.is64, mem.imported) == (1, 16, False, False, False)
    assert info.func_count == 2
    assert info.code_size_bytes > 0
    assert not info.uses_exceptions and not info.uses_atomics
    assert len(info.tables) == 1 and not info.tables[0].is64


def test_bytearray_and_memoryview_inputs():
    assert parse(bytearray(COMMAND)) == parse(COMMAND) == parse(memoryview(COMMAND))


def test_custom_sections_are_listed_and_skipped():
    data = COMMAND + section(0, name("producers") + b"\xff" * 100) + section(0, name(".debug_info"))
    assert parse(data).custom_sections[-2:] == ("producers", ".debug_info")


def test_table_with_initializer_expression():
    info = parse(command_with("(table 2 funcref (ref.null func))"))
    assert info.tables[0].minimum == 2


def test_gc_table_initializer_is_unsupported_not_malformed():
    data = HEADER + section(4, b"\x01\x40\x00\x70\x00\x01\xfb\x01\x00\x0b")
    with pytest.raises(ModuleRejected, match="unsupported opcode 0xfb") as exc:
        parse(data)
    assert not isinstance(exc.value, InvalidModule)


# ---- not wasm / malformed -----------------------------------------------------------------

def test_empty_file():
    with pytest.raises(InvalidModule, match="empty file"):
        parse(b"")


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes(seed):
    data = random.Random(seed).randbytes(1 + seed * 37)
    with pytest.raises(ModuleRejected):
        parse(data)


def test_bad_magic_elf_and_wat_text():
    assert "bad magic" in rejection(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64)
    assert "WAT text" in rejection(COMMAND_WAT.strip().encode())


def test_component_binary():
    msg = rejection(b"\x00asm\x0d\x00\x01\x00" + section(0, name("x")))
    assert msg.startswith("component model binaries are not supported (version 0x000d")


def test_unknown_version():
    assert "version" in rejection(b"\x00asm\x02\x00\x00\x00")


def test_truncated_section_message():
    cut = COMMAND[: len(COMMAND) - 3]
    msg = rejection(cut)
    assert msg.startswith("truncated module: ")
    assert f"past end of file (size {len(cut)})" in msg


def test_every_prefix_is_rejected():
    # A prefix that ends exactly on a section boundary (outside the function..code span) is a
    # complete, valid module; every other prefix must raise InvalidModule.
    accepted = []
    for cut in range(len(COMMAND)):
        try:
            parse(COMMAND[:cut])
        except InvalidModule:
            continue
        wasmtime.Module.validate(ENGINE, COMMAND[:cut])  # genuinely complete
        accepted.append(cut)
    assert len(accepted) < 10, accepted


def test_out_of_order_and_duplicate_sections():
    mem = section(5, b"\x01\x00\x01")
    typ = section(1, b"\x01\x60\x00\x00")
    assert "out of order" in rejection(HEADER + mem + typ)
    assert "duplicated" in rejection(HEADER + mem + mem)


def test_unknown_section_id():
    assert "unknown section id 14" in rejection(HEADER + section(14, b""))


def test_function_and_code_counts_must_agree():
    data = HEADER + section(1, b"\x01\x60\x00\x00") + section(3, b"\x02\x00\x00") + section(10, b"\x01\x02\x00\x0b")
    assert "declares 2 functions but the code section has 1" in rejection(data)


def test_overlong_leb_and_out_of_range_u32():
    assert "LEB128" in rejection(HEADER + section(5, b"\x01\x00\x81\x80\x80\x80\x80\x00"))
    assert "out of range" in rejection(HEADER + section(5, b"\x01\x00\xff\xff\xff\xff\x1f"))


def test_invalid_utf8_name():
    data = HEADER + section(2, b"\x01" + b"\x02\xff\xfe" + name("f") + b"\x00\x00")
    assert "UTF-8" in rejection(data)


def test_trailing_bytes_in_section():
    assert "trailing" in rejection(HEADER + section(5, b"\x01\x00\x01\x00"))


def test_bad_limits_flags():
    assert "limits flags 0x08" in rejection(HEADER + section(5, b"\x01\x08\x01\x10"))


SEEDS = [
    COMMAND,
    wasm('(module (import "env" "memory" (memory 1 2 shared)) (import "env" "t" (table 1 2 funcref))'
         ' (import "env" "g" (global (mut (ref null func)))) (import "env" "e" (tag (param i32)))'
         ' (memory i64 1 3) (table i64 2 funcref) (table 3 funcref (ref.null func)) (tag $x)'
         ' (export "m" (memory 1)) (export "x" (tag $x)) (func (export "_start")) (@custom "c" "data"))'),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4))
def test_fuzz_truncation_and_flips_only_raise_module_rejected(seed, cut, flips):
    data = bytearray(seed)
    for where, value in flips:
        data[int(where * len(seed))] = value
    data = bytes(data[: int(cut * len(seed))])
    try:
        check_supported(parse(data), PROVIDED)
    except ModuleRejected:
        pass
    # Whatever wasmtime's validator accepts, parse must accept too (no false "malformed").
    try:
        wasmtime.Module.validate(ENGINE, data)
    except wasmtime.WasmtimeError:
        return
    try:
        parse(data)
    except InvalidModule as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"wasmtime accepts a module parse rejects: {exc}")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_header_plus_random_bytes(tail):
    try:
        parse(HEADER + tail)
    except ModuleRejected:
        pass


# ---- unsupported imports ------------------------------------------------------------------

def test_unknown_import_is_named():
    data = command_with('(import "env" "foo" (func))')
    assert rejection(data) == "unsupported import env.foo (function)"


def test_all_unknown_imports_are_named_sorted():
    data = command_with('(import "env" "zed" (func)) (import "wasi_snapshot_preview1" "sock_accept" (func))'
                        ' (import "env" "foo" (func (param i32)))')
    assert rejection(data) == ("unsupported imports env.foo (function), env.zed (function), "
                               "wasi_snapshot_preview1.sock_accept (function)")


def test_imported_memory_table_global():
    msg = rejection(wasm('(module (import "env" "memory" (memory 1)) (export "memory" (memory 0))'
                         ' (func (export "_start")))'))
    assert msg.startswith("unsupported import env.memory (memory);")
    msg = rejection(command_with('(import "env" "g" (global i32)) (import "env" "t" (table 1 funcref))'))
    assert "env.g (global), env.t (table)" in msg


# ---- unsupported features -----------------------------------------------------------------

def test_shared_memory_means_threads():
    msg = rejection(command_with("", memory='(memory (export "memory") 1 1 shared)'))
    assert msg.startswith("threads are not supported")
    assert parse(command_with("", memory='(memory (export "memory") 1 1 shared)')).uses_atomics


def test_imported_shared_memory_reports_threads_not_import():
    data = wasm('(module (import "env" "memory" (memory 1 1 shared)) (export "memory" (memory 0))'
                ' (func (export "_start")))')
    assert rejection(data).startswith("threads are not supported")


def test_memory64():
    assert rejection(command_with("", memory='(memory (export "memory") i64 1)')).startswith(
        "memory64 is not supported: memory 0")


def test_table64():
    assert "table64" in rejection(command_with("(table i64 1 funcref)"))


def test_two_memories():
    msg = rejection(command_with("(memory 1)"))
    assert msg == "multiple memories are not supported (module has 2)"


def test_tag_section_means_exceptions():
    data = command_with("(tag $e (param i32))")
    assert parse(data).uses_exceptions
    assert rejection(data).startswith("wasm exception handling is not supported")


def test_handcrafted_tag_section_and_tag_import():
    body = (section(1, b"\x01\x60\x00\x00") + section(3, b"\x01\x00") + section(5, b"\x01\x00\x01")
            + section(13, b"\x01\x00\x00")
            + section(7, b"\x02" + name("_start") + b"\x00\x00" + name("memory") + b"\x02\x00")
            + section(10, b"\x01\x02\x00\x0b"))
    assert rejection(HEADER + body).startswith("wasm exception handling")
    imp = section(2, b"\x01" + name("env") + name("__cpp_exception") + b"\x04\x00\x00")
    data = HEADER + body[:6] + imp + body[6:].replace(section(13, b"\x01\x00\x00"), b"")
    info = parse(data)
    assert info.imports == (Import("env", "__cpp_exception", "tag"),)
    assert rejection(data).startswith("wasm exception handling")


# ---- WASI command shape -------------------------------------------------------------------

def test_no_start_export():
    data = wasm('(module (memory (export "memory") 1) (func (export "main")))')
    assert rejection(data).startswith("not a WASI command: no exported function _start")


def test_no_memory_export():
    assert "no exported memory" in rejection(wasm('(module (memory 1) (func (export "_start")))'))
    msg = rejection(wasm('(module (memory (export "mem") 1) (func (export "_start")))'))
    assert "exported as mem" in msg


# ---- real guests and speed ----------------------------------------------------------------

GUEST_FILES = sorted(glob.glob(os.path.join(GUESTS, "*.wasm")))


@pytest.mark.guests
@pytest.mark.skipif(not GUEST_FILES, reason=f"no guests in {GUESTS}")
@pytest.mark.parametrize("path", GUEST_FILES, ids=os.path.basename)
def test_real_guests(path):
    with open(path, "rb") as f:
        data = f.read()
    start = time.perf_counter()
    info = parse(data)
    elapsed = time.perf_counter() - start
    print(f"{os.path.basename(path)}: {len(data)} bytes parsed in {elapsed * 1000:.1f} ms")
    assert elapsed < 0.5
    if info.uses_exceptions:      # yosys: wasm exception handling, refused with that reason
        with pytest.raises(ModuleRejected, match="exception"):
            check_supported(info, {WASI: {imp.name for imp in info.imports if imp.module == WASI}})
        return
    assert {imp.module for imp in info.imports} == {WASI}
    assert all(imp.kind == "func" for imp in info.imports)
    check_supported(info, {WASI: {imp.name for imp in info.imports}})


def test_large_module_parses_fast():
    """~67 MB, 200k function bodies: the per-function framing walk must stay well under 1 s."""
    count = 200_000
    body = b"\x00" + b"\x01" * 330 + b"\x0b"  # no locals, 330 nops, end
    data = (HEADER + section(1, b"\x01\x60\x00\x00") + section(3, leb(count) + b"\x00" * count)
            + section(5, b"\x01\x00\x01")
            + section(7, b"\x02" + name("_start") + b"\x00\x00" + name("memory") + b"\x02\x00")
            + section(10, leb(count) + (leb(len(body)) + body) * count))
    start = time.perf_counter()
    info = parse(data)
    elapsed = time.perf_counter() - start
    print(f"synthetic: {len(data)} bytes parsed in {elapsed * 1000:.1f} ms")
    assert info.func_count == count
    assert elapsed < 1.0
