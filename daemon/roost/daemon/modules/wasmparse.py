"""Upload validation of wasm modules: a small, pure-Python reader of the wasm binary format.

Why this exists: `wasmtime.Module.validate` says *whether* a module is valid wasm, but not
whether roost can *run* it. roost prepares every module with Binaryen asyncify and links it
only against `wasi_snapshot_preview1`, so an upload must also be rejected, with a one-line
reason that names the problem, when it

* is not wasm at all, is truncated, or is a component-model binary;
* imports anything roost does not provide (all such imports are named in one message);
* uses threads (shared memory), memory64/table64, multiple memories, imported
  memories/tables/globals, or exception handling (tags; asyncify cannot process it);
* is not a WASI *command* (no exported `_start` function or no exported `memory`).

`parse` reads only what those checks need: the header, the section framing, and the import,
function, table, memory, tag, export, datacount and code-body framing. Type, global, element
and data sections are skipped by their declared size; deep validation is left to
`wasmtime.Module.validate`, which the caller runs afterwards. The input is never copied: the
reader indexes a memoryview, so a 68 MB module is parsed in milliseconds.

Errors: `parse` raises `InvalidModule` (a `ModuleRejected`) for bytes that are not a well-formed
core wasm module; `check_supported` raises plain `ModuleRejected` for well-formed modules that
roost cannot run (so does `parse` for the one unsupported thing it meets while reading: a GC
opcode in a table initializer). Callers that do not care about the difference catch `ModuleRejected`.
Atomics are detected by shared memory only: scanning code bodies for the 0xFE prefix byte
would need a full instruction decoder to avoid false hits inside immediates.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NoReturn

from roost.daemon.errors import InvalidModule, ModuleRejected

__all__ = [
    "Import",
    "InvalidModule",
    "MemoryInfo",
    "ModuleInfo",
    "TableInfo",
    "check_supported",
    "parse",
]


@dataclass(frozen=True)
class Import:
    """One import; `kind` is 'func', 'table', 'memory', 'global' or 'tag'."""

    module: str
    name: str
    kind: str


@dataclass(frozen=True)
class MemoryInfo:
    """A memory's limits and flags, imported or defined (imports come first, as in wasm)."""

    minimum_pages: int
    maximum_pages: int | None
    shared: bool
    is64: bool
    imported: bool


@dataclass(frozen=True)
class TableInfo:
    """A table's limits; only `is64` (table64, part of memory64) matters to roost."""

    minimum: int
    maximum: int | None
    is64: bool
    imported: bool


@dataclass(frozen=True)
class ModuleInfo:
    """What upload validation needs to know about a module."""

    imports: tuple[Import, ...]
    exports: tuple[tuple[str, str], ...]  # (name, kind)
    memories: tuple[MemoryInfo, ...]
    func_count: int  # defined functions (not imports)
    code_size_bytes: int  # payload size of the code section
    uses_exceptions: bool  # tag section, tag import or tag export present
    uses_atomics: bool  # a shared memory is present
    custom_sections: tuple[str, ...]
    tables: tuple[TableInfo, ...] = ()


MAGIC = b"\x00asm"
CORE_VERSION = b"\x01\x00\x00\x00"

SECTION_NAMES = {
    0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
    7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "datacount", 13: "tag",
}
# Required relative order of the non-custom sections (tag sits between memory and global,
# datacount between element and code).
_SECTION_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}
_EXTERN_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
_KIND_LABELS = {"func": "function", "table": "table", "memory": "memory", "global": "global", "tag": "tag"}
_NUM_TYPES = frozenset({0x7F, 0x7E, 0x7D, 0x7C, 0x7B})  # i32 i64 f32 f64 v128
_REF_ABBREVIATIONS = frozenset(range(0x69, 0x75))  # funcref 0x70, externref 0x6F, GC/exn types
_REF_PREFIXES = frozenset({0x63, 0x64})  # (ref null ht), (ref ht)


class _Reader:
    """Cursor over `buf[pos:end]`; every read is bounds-checked and fails with InvalidModule."""

    __slots__ = ("buf", "pos", "end", "what")

    def __init__(self, buf: memoryview, pos: int, end: int, what: str) -> None:
        self.buf, self.pos, self.end, self.what = buf, pos, end, what

    def fail(self, problem: str) -> NoReturn:
        raise InvalidModule(f"malformed {self.what}: {problem} at byte {self.pos}")

    def byte(self) -> int:
        if self.pos >= self.end:
            self.fail("unexpected end")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def skip(self, count: int) -> None:
        if count > self.end - self.pos:
            self.fail(f"{count} bytes run past the end (ends at byte {self.end})")
        self.pos += count

    def _leb(self, bits: int, signed: bool) -> int:
        """LEB128 as the spec requires: at most ceil(bits/7) bytes, value within range."""
        result = shift = 0
        for _ in range((bits + 6) // 7):
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        else:
            self.fail(f"LEB128 integer longer than {(bits + 6) // 7} bytes")
        if signed:
            if b & 0x40:
                result -= 1 << shift
            if not -(1 << (bits - 1)) <= result < 1 << (bits - 1):
                self.fail(f"integer out of range for s{bits}")
        elif result >> bits:
            self.fail(f"integer out of range for u{bits}")
        return result

    def u32(self) -> int:
        pos = self.pos
        if pos < self.end and self.buf[pos] < 0x80:  # fast path: one-byte values dominate
            self.pos = pos + 1
            return self.buf[pos]
        return self._leb(32, False)

    def u64(self) -> int:
        return self._leb(64, False)

    def s32(self) -> int:
        return self._leb(32, True)

    def s33(self) -> int:
        return self._leb(33, True)

    def s64(self) -> int:
        return self._leb(64, True)

    def name(self) -> str:
        size = self.u32()
        start = self.pos
        self.skip(size)
        try:
            return str(self.buf[start:self.pos], "utf-8")
        except UnicodeDecodeError:
            self.pos = start
            self.fail("name is not valid UTF-8")

    def expect_end(self) -> None:
        """A parsed section must be consumed exactly; leftovers mean a miscounted vector."""
        if self.pos != self.end:
            self.fail(f"{self.end - self.pos} unexpected trailing bytes")


def _check_header(buf: memoryview) -> None:
    """Recognise empty files, non-wasm, components and unknown versions before anything else."""
    size = len(buf)
    if size == 0:
        raise InvalidModule("not a wasm module (empty file)")
    head = bytes(buf[:4])
    if head != MAGIC[:len(head)]:
        hint = " (looks like WAT text; upload the compiled binary)" if head[:1] == b"(" else ""
        raise InvalidModule(f"not a wasm module (bad magic {head!r}){hint}")
    if size < 8:
        raise InvalidModule(f"truncated module: {size} bytes, shorter than the 8-byte header")
    version = bytes(buf[4:8])
    if version == CORE_VERSION:
        return
    if version[2:4] == b"\x01\x00":  # layer 1 = component
        raise InvalidModule(
            f"component model binaries are not supported (version 0x{version[:2][::-1].hex()}, "
            "layer 1); upload a core wasm module built for wasi_snapshot_preview1")
    raise InvalidModule(f"unsupported wasm binary version 0x{version[::-1].hex()} (only 1 is supported)")


def _limits(r: _Reader, allowed: frozenset[int]) -> tuple[int, int | None, bool, bool]:
    """Limits: flags byte (bit0 has-max, bit1 shared, bit2 64-bit), then min and optional max."""
    flags = r.byte()
    if flags not in allowed:
        r.pos -= 1
        r.fail(f"unknown limits flags 0x{flags:02x}")
    is64 = bool(flags & 0x04)
    read = r.u64 if is64 else r.u32
    minimum = read()
    maximum = read() if flags & 0x01 else None
    return minimum, maximum, bool(flags & 0x02), is64


_MEMORY_FLAGS = frozenset(range(8))
_TABLE_FLAGS = frozenset({0x00, 0x01, 0x04, 0x05})


def _memory(r: _Reader, imported: bool) -> MemoryInfo:
    minimum, maximum, shared, is64 = _limits(r, _MEMORY_FLAGS)
    return MemoryInfo(minimum, maximum, shared, is64, imported)


def _reftype(r: _Reader) -> None:
    b = r.byte()
    if b in _REF_PREFIXES:
        r.s33()
    elif b not in _REF_ABBREVIATIONS:
        r.pos -= 1
        r.fail(f"unknown reference type 0x{b:02x}")


def _table(r: _Reader, imported: bool) -> TableInfo:
    _reftype(r)
    minimum, maximum, _, is64 = _limits(r, _TABLE_FLAGS)
    return TableInfo(minimum, maximum, is64, imported)


def _valtype(r: _Reader) -> None:
    b = r.byte()
    if b in _REF_PREFIXES:
        r.s33()
    elif b not in _NUM_TYPES and b not in _REF_ABBREVIATIONS:
        r.pos -= 1
        r.fail(f"unknown value type 0x{b:02x}")


class _Module:
    """Accumulates what the section readers find; frozen into ModuleInfo at the end."""

    def __init__(self) -> None:
        self.imports: list[Import] = []
        self.exports: list[tuple[str, str]] = []
        self.memories: list[MemoryInfo] = []
        self.tables: list[TableInfo] = []
        self.custom: list[str] = []
        self.func_count = 0
        self.code_count: int | None = None
        self.code_size = 0
        self.has_tags = False


def _extern_kind(r: _Reader, what: str) -> str:
    kind_byte = r.byte()
    kind = _EXTERN_KINDS.get(kind_byte)
    if kind is None:
        r.pos -= 1
        r.fail(f"unknown kind 0x{kind_byte:02x} of {what}")
    return kind


def _import_section(r: _Reader, m: _Module) -> None:
    for _ in range(r.u32()):
        module, name = r.name(), r.name()
        kind = _extern_kind(r, f"import {module}.{name}")
        if kind == "func":
            r.u32()
        elif kind == "table":
            m.tables.append(_table(r, imported=True))
        elif kind == "memory":
            m.memories.append(_memory(r, imported=True))
        elif kind == "global":
            _valtype(r)
            r.byte()  # mutability
        else:  # tag
            r.byte()  # attribute (0 = exception)
            r.u32()
        m.imports.append(Import(module, name, kind))


def _function_section(r: _Reader, m: _Module) -> None:
    m.func_count = r.u32()
    for _ in range(m.func_count):
        r.u32()


def _table_section(r: _Reader, m: _Module) -> None:
    for _ in range(r.u32()):
        if r.pos < r.end and r.buf[r.pos] == 0x40:  # table with initializer expression
            r.pos += 1
            if r.byte() != 0x00:
                r.pos -= 1
                r.fail("expected 0x00 after 0x40 in table type")
            m.tables.append(_table(r, imported=False))
            _skip_const_expr(r)
        else:
            m.tables.append(_table(r, imported=False))


def _skip_const_expr(r: _Reader) -> None:
    """Skip a constant expression (MVP + extended-const opcodes) through its `end`.

    Other constant opcodes (the GC proposal's 0xFB prefix) are well-formed wasm that roost's
    asyncify preparation cannot handle, so they are rejected as unsupported, not malformed.
    """
    while True:
        op = r.byte()
        if op == 0x0B:
            return
        if op == 0x41:  # i32.const
            r.s32()
        elif op == 0x42:  # i64.const
            r.s64()
        elif op in (0x23, 0xD2):  # global.get, ref.func
            r.u32()
        elif op in (0x43, 0x44):  # f32.const, f64.const
            r.skip(4 if op == 0x43 else 8)
        elif op == 0xD0:  # ref.null heaptype
            r.s33()
        elif op not in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const arithmetic
            raise ModuleRejected(
                f"unsupported opcode 0x{op:02x} in a table initializer at byte {r.pos - 1} "
                "(GC proposal features are not supported)")


def _memory_section(r: _Reader, m: _Module) -> None:
    for _ in range(r.u32()):
        m.memories.append(_memory(r, imported=False))


def _export_section(r: _Reader, m: _Module) -> None:
    for _ in range(r.u32()):
        name = r.name()
        kind = _extern_kind(r, f"export {name!r}")
        r.u32()
        m.exports.append((name, kind))


def _tag_section(r: _Reader, m: _Module) -> None:
    m.has_tags = True
    for _ in range(r.u32()):
        r.byte()
        r.u32()


def _code_section(r: _Reader, m: _Module) -> None:
    """Walk the body framing only: each body's size must fit inside the section."""
    m.code_count = r.u32()
    m.code_size = r.end - r.pos
    for _ in range(m.code_count):
        r.skip(r.u32())


def _start_or_datacount(r: _Reader, m: _Module) -> None:
    r.u32()


_READERS = {
    2: _import_section, 3: _function_section, 4: _table_section, 5: _memory_section,
    7: _export_section, 8: _start_or_datacount, 10: _code_section, 12: _start_or_datacount,
    13: _tag_section,
}


def _custom_section(r: _Reader, m: _Module) -> None:
    m.custom.append(r.name())
    r.pos = r.end  # payload is opaque


def _sections(buf: memoryview, m: _Module) -> None:
    """Walk section framing: ids, sizes against the file size, order, duplicates."""
    size = len(buf)
    pos, last_order = 8, 0
    while pos < size:
        header = _Reader(buf, pos, size, f"section header at byte {pos}")
        sid = header.byte()
        if sid not in SECTION_NAMES:
            raise InvalidModule(f"malformed module: unknown section id {sid} at byte {pos}")
        label = f"{SECTION_NAMES[sid]} section (id {sid})"
        header.what = f"{label} header"
        length = header.u32()
        start, end = header.pos, header.pos + length
        if end > size:
            raise InvalidModule(
                f"truncated module: {label} ends at byte {end} past end of file (size {size})")
        if sid:
            order = _SECTION_ORDER[sid]
            if order <= last_order:
                raise InvalidModule(
                    f"malformed module: {label} at byte {pos} is duplicated or out of order")
            last_order = order
        r = _Reader(buf, start, end, label)
        reader = _READERS.get(sid, _custom_section if sid == 0 else None)
        if reader is not None:
            reader(r, m)
            r.expect_end()
        pos = end


def parse(data: bytes | bytearray | memoryview) -> ModuleInfo:
    """Read a core wasm module's outline; raise InvalidModule if it is not well-formed."""
    buf = memoryview(data)
    if buf.format != "B" or buf.ndim != 1:
        buf = buf.cast("B")
    _check_header(buf)
    m = _Module()
    _sections(buf, m)
    code_count = m.code_count or 0
    if code_count != m.func_count:
        raise InvalidModule(
            f"malformed module: function section declares {m.func_count} functions "
            f"but the code section has {code_count} bodies")
    memories = tuple(m.memories)
    return ModuleInfo(
        imports=tuple(m.imports),
        exports=tuple(m.exports),
        memories=memories,
        func_count=m.func_count,
        code_size_bytes=m.code_size,
        uses_exceptions=m.has_tags or any(i.kind == "tag" for i in m.imports)
        or any(kind == "tag" for _, kind in m.exports),
        uses_atomics=any(mem.shared for mem in memories),
        custom_sections=tuple(m.custom),
        tables=tuple(m.tables),
    )


def _feature_problem(info: ModuleInfo) -> str | None:
    """The first unsupported feature, checked most-fundamental first, or None."""
    for index, mem in enumerate(info.memories):
        if mem.shared:
            return (f"threads are not supported: memory {index} is shared "
                    "(build without -pthread / wasm32-wasi-threads)")
    for index, mem in enumerate(info.memories):
        if mem.is64:
            return f"memory64 is not supported: memory {index} uses 64-bit addresses"
    for index, table in enumerate(info.tables):
        if table.is64:
            return f"memory64 is not supported: table {index} uses 64-bit indexes (table64)"
    if len(info.memories) > 1:
        return f"multiple memories are not supported (module has {len(info.memories)})"
    if info.uses_exceptions:
        return ("wasm exception handling is not supported (module declares, imports or exports "
                "tags); build without -fwasm-exceptions")
    return None


def _import_problem(info: ModuleInfo, provided: Mapping[str, Collection[str]]) -> str | None:
    """All imports roost cannot satisfy, named in one sorted line, or None."""
    missing = sorted({
        f"{imp.module}.{imp.name} ({_KIND_LABELS[imp.kind]})"
        for imp in info.imports
        if imp.kind != "func" or imp.name not in provided.get(imp.module, ())
    })
    if not missing:
        return None
    noun = "import" if len(missing) == 1 else "imports"
    message = f"unsupported {noun} {', '.join(missing)}"
    if any(imp.kind != "func" for imp in info.imports):
        message += "; imported memories, tables and globals are not supported"
    return message


def _command_problem(info: ModuleInfo) -> str | None:
    """roost runs WASI commands: an exported `_start` function and an exported `memory`."""
    exports = set(info.exports)
    if ("_start", "func") not in exports:
        return "not a WASI command: no exported function _start (reactors/libraries are not supported)"
    if ("memory", "memory") not in exports:
        others = sorted(name for name, kind in info.exports if kind == "memory")
        hint = f" (memory is exported as {', '.join(others)})" if others else ""
        return f"not a WASI command: no exported memory named 'memory'{hint}"
    return None


def check_supported(info: ModuleInfo, provided: Mapping[str, Collection[str]]) -> None:
    """Raise ModuleRejected naming the first unsupported feature, else all unsupported imports.

    `provided` maps an import module name (e.g. "wasi_snapshot_preview1") to the function
    names roost implements for it. Features come first because they explain imports too: a
    threads build imports a shared `env.memory`, and "threads are not supported" is the
    actionable reason, not "unsupported import env.memory".
    """
    problem = _feature_problem(info) or _import_problem(info, provided) or _command_problem(info)
    if problem is not None:
        raise ModuleRejected(problem)
