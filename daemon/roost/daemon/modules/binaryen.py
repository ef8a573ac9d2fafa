"""Binaryen's C library (the `icpp-binaryen` wheel's bundled libbinaryen.so), through cffi.

ABI mode (`ffi.dlopen`), with roost's own declarations of exactly the functions `prepare` uses,
checked against Binaryen 116's `src/binaryen-c.h`. `Module` wraps one `BinaryenModuleRef` with
the few operations preparation needs; everything else stays in `prepare`.

Binaryen reports fatal errors on stderr and may `abort()` the process: never call this from the
daemon process itself, only from the preparation subprocess (`prepare.prepare` arranges that).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cffi import FFI

CDEF = """
typedef uint32_t BinaryenIndex;
typedef uintptr_t BinaryenType;
typedef uint32_t BinaryenFeatures;
typedef struct BinaryenModule* BinaryenModuleRef;
typedef struct BinaryenExpression* BinaryenExpressionRef;
typedef struct BinaryenFunction* BinaryenFunctionRef;
typedef struct BinaryenGlobal* BinaryenGlobalRef;
typedef struct BinaryenExport* BinaryenExportRef;
/* 24 bytes, 8-aligned: `type` then a 16-byte union (i32/i64/f32/f64/v128/func). Declared with
   two int64 halves: cffi cannot pass unions by value, and the ABI passes it in memory anyway. */
struct BinaryenLiteral { uintptr_t type; int64_t lo; int64_t hi; };

BinaryenType BinaryenTypeNone(void);
BinaryenType BinaryenTypeInt32(void);
BinaryenType BinaryenTypeInt64(void);
BinaryenType BinaryenTypeFloat32(void);
BinaryenType BinaryenTypeFloat64(void);
BinaryenType BinaryenTypeVec128(void);
BinaryenType BinaryenTypeFuncref(void);
BinaryenType BinaryenTypeExternref(void);
BinaryenType BinaryenTypeAuto(void);
BinaryenFeatures BinaryenFeatureMultiMemory(void);
BinaryenFeatures BinaryenFeatureMutableGlobals(void);
BinaryenFeatures BinaryenFeatureNontrappingFPToInt(void);
BinaryenFeatures BinaryenFeatureSignExt(void);
BinaryenFeatures BinaryenFeatureSIMD128(void);
BinaryenFeatures BinaryenFeatureBulkMemory(void);
BinaryenFeatures BinaryenFeatureMultivalue(void);
BinaryenFeatures BinaryenFeatureReferenceTypes(void);
BinaryenFeatures BinaryenFeatureExtendedConst(void);

BinaryenModuleRef BinaryenModuleRead(char* input, size_t inputSize);
void BinaryenModuleDispose(BinaryenModuleRef module);
bool BinaryenModuleValidate(BinaryenModuleRef module);
void BinaryenModuleOptimize(BinaryenModuleRef module);
void BinaryenModuleRunPasses(BinaryenModuleRef module, const char** passes, BinaryenIndex numPasses);
BinaryenFeatures BinaryenModuleGetFeatures(BinaryenModuleRef module);
void BinaryenModuleSetFeatures(BinaryenModuleRef module, BinaryenFeatures features);
void BinaryenSetOptimizeLevel(int level);
void BinaryenSetShrinkLevel(int level);
void BinaryenSetPassArgument(const char* name, const char* value);
void BinaryenClearPassArguments(void);

typedef struct BinaryenModuleAllocateAndWriteResult {
  void* binary;
  size_t binaryBytes;
  char* sourceMap;
} BinaryenModuleAllocateAndWriteResult;
BinaryenModuleAllocateAndWriteResult BinaryenModuleAllocateAndWrite(BinaryenModuleRef module,
                                                                    const char* sourceMapUrl);
char* BinaryenModuleAllocateAndWriteText(BinaryenModuleRef module);

BinaryenIndex BinaryenGetNumGlobals(BinaryenModuleRef module);
BinaryenGlobalRef BinaryenGetGlobalByIndex(BinaryenModuleRef module, BinaryenIndex index);
const char* BinaryenGlobalGetName(BinaryenGlobalRef global);
BinaryenType BinaryenGlobalGetType(BinaryenGlobalRef global);
bool BinaryenGlobalIsMutable(BinaryenGlobalRef global);
const char* BinaryenGlobalImportGetModule(BinaryenGlobalRef import);
BinaryenExportRef BinaryenAddGlobalExport(BinaryenModuleRef module, const char* internalName,
                                          const char* externalName);
BinaryenExportRef BinaryenAddMemoryExport(BinaryenModuleRef module, const char* internalName,
                                          const char* externalName);
bool BinaryenHasMemory(BinaryenModuleRef module);

BinaryenIndex BinaryenGetNumFunctions(BinaryenModuleRef module);
BinaryenFunctionRef BinaryenGetFunctionByIndex(BinaryenModuleRef module, BinaryenIndex index);
BinaryenFunctionRef BinaryenGetFunction(BinaryenModuleRef module, const char* name);
const char* BinaryenFunctionGetName(BinaryenFunctionRef func);
const char* BinaryenFunctionImportGetModule(BinaryenFunctionRef import);
const char* BinaryenFunctionImportGetBase(BinaryenFunctionRef import);
void BinaryenAddFunctionImport(BinaryenModuleRef module, const char* internalName,
                               const char* externalModuleName, const char* externalBaseName,
                               BinaryenType params, BinaryenType results);
BinaryenFunctionRef BinaryenAddFunction(BinaryenModuleRef module, const char* name,
                                        BinaryenType params, BinaryenType results,
                                        BinaryenType* varTypes, BinaryenIndex numVarTypes,
                                        BinaryenExpressionRef body);
void BinaryenRemoveFunction(BinaryenModuleRef module, const char* name);

struct BinaryenLiteral BinaryenLiteralInt32(int32_t x);
BinaryenExpressionRef BinaryenConst(BinaryenModuleRef module, struct BinaryenLiteral value);
BinaryenExpressionRef BinaryenLoad(BinaryenModuleRef module, uint32_t bytes, bool signed_,
                                   uint32_t offset, uint32_t align, BinaryenType type,
                                   BinaryenExpressionRef ptr, const char* memoryName);
BinaryenExpressionRef BinaryenStore(BinaryenModuleRef module, uint32_t bytes, uint32_t offset,
                                    uint32_t align, BinaryenExpressionRef ptr,
                                    BinaryenExpressionRef value, BinaryenType type,
                                    const char* memoryName);
BinaryenExpressionRef BinaryenCall(BinaryenModuleRef module, const char* target,
                                   BinaryenExpressionRef* operands, BinaryenIndex numOperands,
                                   BinaryenType returnType);
BinaryenExpressionRef BinaryenIf(BinaryenModuleRef module, BinaryenExpressionRef condition,
                                 BinaryenExpressionRef ifTrue, BinaryenExpressionRef ifFalse);
BinaryenExpressionRef BinaryenNop(BinaryenModuleRef module);
BinaryenExpressionRef BinaryenLoop(BinaryenModuleRef module, const char* in,
                                   BinaryenExpressionRef body);
BinaryenExpressionRef BinaryenBreak(BinaryenModuleRef module, const char* name,
                                    BinaryenExpressionRef condition, BinaryenExpressionRef value);
BinaryenExpressionRef BinaryenBlock(BinaryenModuleRef module, const char* name,
                                    BinaryenExpressionRef* children, BinaryenIndex numChildren,
                                    BinaryenType type);

typedef uint32_t BinaryenExpressionId;
BinaryenExpressionId BinaryenExpressionGetId(BinaryenExpressionRef expr);
BinaryenExpressionId BinaryenBlockId(void);
BinaryenExpressionId BinaryenIfId(void);
BinaryenExpressionId BinaryenLoopId(void);
BinaryenExpressionId BinaryenBreakId(void);
BinaryenExpressionId BinaryenCallId(void);
BinaryenExpressionId BinaryenLocalSetId(void);
BinaryenExpressionId BinaryenGlobalSetId(void);
BinaryenExpressionId BinaryenStoreId(void);
BinaryenExpressionId BinaryenReturnId(void);
BinaryenExpressionId BinaryenDropId(void);
BinaryenExpressionRef BinaryenFunctionGetBody(BinaryenFunctionRef func);
BinaryenIndex BinaryenBlockGetNumChildren(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenBlockGetChildAt(BinaryenExpressionRef expr, BinaryenIndex index);
BinaryenExpressionRef BinaryenIfGetCondition(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenIfGetIfTrue(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenIfGetIfFalse(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenLoopGetBody(BinaryenExpressionRef expr);
void BinaryenLoopSetBody(BinaryenExpressionRef expr, BinaryenExpressionRef bodyExpr);
const char* BinaryenLoopGetName(BinaryenExpressionRef expr);
void BinaryenLoopSetName(BinaryenExpressionRef expr, const char* name);
BinaryenExpressionRef BinaryenBreakGetCondition(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenBreakGetValue(BinaryenExpressionRef expr);
BinaryenIndex BinaryenCallGetNumOperands(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenCallGetOperandAt(BinaryenExpressionRef expr, BinaryenIndex index);
BinaryenExpressionRef BinaryenLocalSetGetValue(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenGlobalSetGetValue(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenStoreGetValue(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenReturnGetValue(BinaryenExpressionRef expr);
BinaryenExpressionRef BinaryenDropGetValue(BinaryenExpressionRef expr);

uint64_t BinaryenExpressionGetSideEffects(BinaryenExpressionRef expr, BinaryenModuleRef module);
uint64_t BinaryenSideEffectCalls(void);

void free(void* ptr);
"""

ffi = FFI()
ffi.cdef(CDEF)
_lib: Any = None


def library_path() -> Path:
    import icpp_binaryen
    return Path(icpp_binaryen.__file__).parent / "lib" / "libbinaryen.so"


def lib() -> Any:
    """The loaded library (loaded on first use: the daemon itself never loads it)."""
    global _lib
    if _lib is None:
        _lib = ffi.dlopen(str(library_path()))
    return _lib


def _c(s: str) -> Any:
    return ffi.new("char[]", s.encode())


class Module:
    """One Binaryen module, read from wasm bytes; dispose with `close()` (or `with`)."""

    def __init__(self, wasm: bytes) -> None:
        self.lib = lib()
        self._keep: list[Any] = []     # C strings Binaryen may still point to
        buf = ffi.new("char[]", wasm)
        self.ref = self.lib.BinaryenModuleRead(buf, len(wasm))
        if self.ref == ffi.NULL:
            raise ValueError("Binaryen could not read the module")

    def __enter__(self) -> Module:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.ref is not None:
            self.lib.BinaryenModuleDispose(self.ref)
            self.ref = None

    def name(self, s: str) -> Any:
        """A C string kept alive as long as the module (Binaryen interns names, but be safe)."""
        c = _c(s)
        self._keep.append(c)
        return c

    # ---- features, passes, output --------------------------------------------------------
    def enable_features(self) -> None:
        """What wasmtime runs by default, plus multi-memory (for the asyncify memory). Not GC,
        EH, threads or memory64: the optimizer must not introduce what the engine refuses."""
        L = self.lib
        feats = L.BinaryenModuleGetFeatures(self.ref)
        for f in (L.BinaryenFeatureMultiMemory, L.BinaryenFeatureMutableGlobals,
                  L.BinaryenFeatureNontrappingFPToInt, L.BinaryenFeatureSignExt,
                  L.BinaryenFeatureSIMD128, L.BinaryenFeatureBulkMemory,
                  L.BinaryenFeatureMultivalue, L.BinaryenFeatureReferenceTypes,
                  L.BinaryenFeatureExtendedConst):
            feats |= f()
        L.BinaryenModuleSetFeatures(self.ref, feats)

    def run_passes(self, passes: list[str], args: dict[str, str] | None = None) -> None:
        self.lib.BinaryenClearPassArguments()
        for k, v in (args or {}).items():
            self.lib.BinaryenSetPassArgument(_c(k), _c(v))
        names = [_c(p) for p in passes]
        arr = ffi.new("const char*[]", names)
        self.lib.BinaryenModuleRunPasses(self.ref, arr, len(names))
        self.lib.BinaryenClearPassArguments()

    def set_optimize_levels(self, level: int, shrink: int = 0) -> None:
        """Binaryen's global options, used by `optimize` and by passes' own cleanups."""
        self.lib.BinaryenSetOptimizeLevel(level)
        self.lib.BinaryenSetShrinkLevel(shrink)

    def optimize(self) -> None:
        self.lib.BinaryenModuleOptimize(self.ref)

    def validate(self) -> bool:
        return bool(self.lib.BinaryenModuleValidate(self.ref))

    def emit(self) -> bytes:
        res = self.lib.BinaryenModuleAllocateAndWrite(self.ref, ffi.NULL)
        try:
            return bytes(ffi.buffer(res.binary, res.binaryBytes))
        finally:
            self.lib.free(res.binary)
            if res.sourceMap != ffi.NULL:
                self.lib.free(res.sourceMap)

    def text(self) -> str:
        p = self.lib.BinaryenModuleAllocateAndWriteText(self.ref)
        try:
            return ffi.string(p).decode()
        finally:
            self.lib.free(p)

    # ---- globals ------------------------------------------------------------------------
    def globals(self) -> list[tuple[int, str, bool, str]]:
        """(index, internal name, mutable, valtype) of every global, imports included."""
        out = []
        for i in range(self.lib.BinaryenGetNumGlobals(self.ref)):
            g = self.lib.BinaryenGetGlobalByIndex(self.ref, i)
            out.append((i, ffi.string(self.lib.BinaryenGlobalGetName(g)).decode(),
                        bool(self.lib.BinaryenGlobalIsMutable(g)),
                        self.type_name(self.lib.BinaryenGlobalGetType(g))))
        return out

    def type_name(self, t: int) -> str:
        L = self.lib
        names = {L.BinaryenTypeInt32(): "i32", L.BinaryenTypeInt64(): "i64",
                 L.BinaryenTypeFloat32(): "f32", L.BinaryenTypeFloat64(): "f64",
                 L.BinaryenTypeVec128(): "v128", L.BinaryenTypeFuncref(): "funcref",
                 L.BinaryenTypeExternref(): "externref"}
        return names.get(t, "other")

    def export_global(self, internal: str, external: str) -> None:
        self.lib.BinaryenAddGlobalExport(self.ref, self.name(internal), self.name(external))

    def export_memory(self, internal: str, external: str) -> None:
        self.lib.BinaryenAddMemoryExport(self.ref, self.name(internal), self.name(external))

    # ---- functions ----------------------------------------------------------------------
    def function_imports(self) -> list[tuple[str, str, str]]:
        """(internal name, module, base) of every imported function."""
        out = []
        for i in range(self.lib.BinaryenGetNumFunctions(self.ref)):
            f = self.lib.BinaryenGetFunctionByIndex(self.ref, i)
            mod = self.lib.BinaryenFunctionImportGetModule(f)
            if mod != ffi.NULL and ffi.string(mod):
                out.append((ffi.string(self.lib.BinaryenFunctionGetName(f)).decode(),
                            ffi.string(mod).decode(),
                            ffi.string(self.lib.BinaryenFunctionImportGetBase(f)).decode()))
        return out

    def has_function(self, name: str) -> bool:
        return self.lib.BinaryenGetFunction(self.ref, self.name(name)) != ffi.NULL

    def add_void_import(self, internal: str, module: str, base: str) -> None:
        """Import `module.base` of type () -> () as `internal`."""
        none = self.lib.BinaryenTypeNone()
        self.lib.BinaryenAddFunctionImport(self.ref, self.name(internal), self.name(module),
                                           self.name(base), none, none)


    def function_names(self) -> list[str]:
        """Binaryen's name of every function, imports included, by function index (the index
        space of the module as read: imports first). Without a name section Binaryen names a
        function by its index ("12")."""
        L, m = self.lib, self.ref
        return [ffi.string(L.BinaryenFunctionGetName(L.BinaryenGetFunctionByIndex(m, i))).decode()
                for i in range(L.BinaryenGetNumFunctions(m))]

    def call_graph(self) -> tuple[dict[str, set[str]], set[str]]:
        """(direct callees of each defined function, functions with an indirect call).

        Read from Binaryen's text output: the C API has no generic walk over every expression,
        and a walk through cffi would take minutes on large modules; printing and scanning the
        text takes about 0.5 s for QuickJS. A name the scan misreads only makes `prepare` give
        a function the wrong kind of poll, which costs speed, never soundness (asyncify makes
        its own analysis)."""
        callees: dict[str, set[str]] = {}
        indirect: set[str] = set()
        current: set[str] = set()
        name = ""
        for match in _CALLS.finditer(self.text()):
            func, target = match.group(1), match.group(2)
            if func is not None:
                name = _unquote(func)
                current = callees.setdefault(name, set())
            elif target is not None:
                current.add(_unquote(target))
            else:
                indirect.add(name)
        return callees, indirect

    def insert_loop_polls(self, memory: str, flag_address: int, target: str,
                          note_address: int = -1,
                          real: Callable[[int], bool] = lambda index: True,
                          call_free_note: Callable[[int], bool] = lambda index: False
                          ) -> PollCounts:
        """Give every loop that can iterate a safepoint poll; returns how many loops got which.

        In a function where `real(function index)` holds, a loop `loop $L BODY` becomes

            loop $roost_poll_N                                  ;; the original Loop node
              if (i32.load8_u memory (flag_address)) call target
              loop $L                                           ;; every back-edge lands here
                br_if $roost_poll_N (i32.load8_u memory (flag_address))
                BODY

        so every iteration tests the flag, and only a set flag leads (backwards, to the outer
        loop's head) to the call. The call stays outside the hot loop: asyncify, which must
        instrument a function making a call that can unwind, guards `loop $L` once per entry
        instead of guarding the loop body's code on every iteration, and the optimizer still
        sees a call-free inner loop. After the call (the safepoint clears the flag or unwinds)
        the inner loop is entered again at its head: the same as taking the back-edge.

        In any other function (one that cannot reach an unwinding import) a poll only notes the
        request, with no call, so that asyncify leaves the function uninstrumented:

            loop $L
              if (i32.load8_u memory (flag_address))
                i32.store memory (note_address) (i32.const FUNCTION_INDEX)
              BODY

        The flag stays set: the first real poll or host call after the function returns takes
        the checkpoint, and the note says which function held the request meanwhile.

        Where `call_free_note(function index)` holds too, the loops nested inside a loop that
        has no call anywhere in it get note-only polls as well: asyncify then has no call to
        guard inside the nest, and the outer loop's real poll takes the checkpoint at its next
        iteration (one pass through the inner loops; a single call-free loop keeps its real
        poll, so a function's pure compute loop stays preemptible).

        A loop without a name has no back-edge (its body runs once) and gets no poll. The walk
        follows statement-level structure (block, if, loop, br, drop, local/global set, store
        value, call operands, return): where compilers put loops. A loop nested elsewhere (inside
        an arithmetic operand, say) gets no poll: pausing it then waits for the next poll or
        host call; that is slower, never unsound.
        """
        L, m, null = self.lib, self.ref, ffi.NULL
        counts = PollCounts()
        for i in range(L.BinaryenGetNumFunctions(m)):
            f = L.BinaryenGetFunctionByIndex(m, i)
            mod = L.BinaryenFunctionImportGetModule(f)
            if mod != null and ffi.string(mod):
                continue
            if note_address < 0 or (real(i) and not call_free_note(i)):
                poll: Callable[[Any, Any, bool], bool] = _RealPoll(self, memory, flag_address, target,
                                                             counts)
            elif real(i):
                poll = _MixedPoll(_RealPoll(self, memory, flag_address, target, counts),
                                  _NotePoll(self, memory, flag_address, note_address, i, counts))
            else:
                poll = _NotePoll(self, memory, flag_address, note_address, i, counts)
            self._walk_loops(L.BinaryenFunctionGetBody(f), poll)
        return counts

    def _walk_loops(self, body: Any, poll: Callable[[Any, Any, bool], bool]) -> None:
        """Call `poll(loop, label, nested)` on every named loop at statement level in `body`;
        `nested` is what `poll` returned for the innermost loop around it (False outside)."""
        L, null = self.lib, ffi.NULL
        ids = _ExpressionIds(L)
        stack = [(body, False)]
        while stack:
            e, nested = stack.pop()
            if e == null:
                continue
            kind = L.BinaryenExpressionGetId(e)
            if kind == ids.block:
                stack.extend((L.BinaryenBlockGetChildAt(e, k), nested)
                             for k in range(L.BinaryenBlockGetNumChildren(e)))
            elif kind == ids.loop:
                inner = L.BinaryenLoopGetBody(e)      # before `poll` wraps it
                label = L.BinaryenLoopGetName(e)
                stack.append((inner, poll(e, label, nested) if label != null else nested))
            elif kind == ids.if_:
                stack += ((L.BinaryenIfGetCondition(e), nested),
                          (L.BinaryenIfGetIfTrue(e), nested), (L.BinaryenIfGetIfFalse(e), nested))
            elif kind in ids.one_child:
                stack.append((ids.one_child[kind](e), nested))
            elif kind == ids.br:
                stack += ((L.BinaryenBreakGetValue(e), nested),
                          (L.BinaryenBreakGetCondition(e), nested))
            elif kind == ids.call:
                stack.extend((L.BinaryenCallGetOperandAt(e, k), nested)
                             for k in range(L.BinaryenCallGetNumOperands(e)))


@dataclass
class PollCounts:
    """Loops given a real safepoint poll, loops given a note-only poll, and the indices of the
    functions holding note-only polls."""
    real: int = 0
    noted: int = 0
    noted_functions: list[int] = field(default_factory=list)


class _RealPoll:
    """Rewrites a loop to call the safepoint import when the flag is set (see insert_loop_polls)."""

    def __init__(self, m: Module, memory: str, flag_address: int, target: str,
                 counts: PollCounts) -> None:
        self.m, self.counts = m, counts
        self.mem, self.target = m.name(memory), m.name(target)
        self.flag_lit = m.lib.BinaryenLiteralInt32(flag_address)

    def flag(self) -> Any:
        L = self.m.lib
        return L.BinaryenLoad(self.m.ref, 1, False, 0, 1, L.BinaryenTypeInt32(),
                              L.BinaryenConst(self.m.ref, self.flag_lit), self.mem)

    def __call__(self, loop: Any, label: Any, nested: bool = False) -> bool:
        L, m, null = self.m.lib, self.m.ref, ffi.NULL
        auto, none = L.BinaryenTypeAuto(), L.BinaryenTypeNone()
        body = L.BinaryenLoopGetBody(loop)
        outer = self.m.name(f"roost_poll_{self.counts.real}")
        check = L.BinaryenBreak(m, outer, self.flag(), null)
        kids = ffi.new("BinaryenExpressionRef[2]", [check, body])
        inner = L.BinaryenLoop(m, label, L.BinaryenBlock(m, null, kids, 2, auto))
        poll = L.BinaryenIf(m, self.flag(), L.BinaryenCall(m, self.target, null, 0, none), null)
        kids = ffi.new("BinaryenExpressionRef[2]", [poll, inner])
        L.BinaryenLoopSetName(loop, outer)
        L.BinaryenLoopSetBody(loop, L.BinaryenBlock(m, null, kids, 2, auto))
        self.counts.real += 1
        return nested


class _NotePoll(_RealPoll):
    """Rewrites a loop to note its function's index when the flag is set: no call."""

    def __init__(self, m: Module, memory: str, flag_address: int, note_address: int,
                 function_index: int, counts: PollCounts) -> None:
        super().__init__(m, memory, flag_address, "", counts)
        self.note_lit = m.lib.BinaryenLiteralInt32(note_address)
        self.index_lit = m.lib.BinaryenLiteralInt32(function_index)
        self.index = function_index

    def __call__(self, loop: Any, label: Any, nested: bool = False) -> bool:
        L, m, null = self.m.lib, self.m.ref, ffi.NULL
        store = L.BinaryenStore(m, 4, 0, 4, L.BinaryenConst(m, self.note_lit),
                                L.BinaryenConst(m, self.index_lit), L.BinaryenTypeInt32(), self.mem)
        kids = ffi.new("BinaryenExpressionRef[2]", [L.BinaryenIf(m, self.flag(), store, null),
                                                   L.BinaryenLoopGetBody(loop)])
        L.BinaryenLoopSetBody(loop, L.BinaryenBlock(m, null, kids, 2, L.BinaryenTypeAuto()))
        self.counts.noted += 1
        if not self.counts.noted_functions or self.counts.noted_functions[-1] != self.index:
            self.counts.noted_functions.append(self.index)
        return nested


class _MixedPoll:
    """For a function that keeps real polls: a real poll for a loop that is not inside a
    call-free loop, a note-only poll for the loops nested in a call-free loop."""

    def __init__(self, real: _RealPoll, note: _NotePoll) -> None:
        self.real, self.note = real, note
        self.calls = real.m.lib.BinaryenSideEffectCalls()

    def __call__(self, loop: Any, label: Any, nested: bool = False) -> bool:
        """Returns whether the loops inside this one are inside a call-free loop."""
        if nested:
            return self.note(loop, label, True)
        L = self.real.m.lib
        effects = L.BinaryenExpressionGetSideEffects(L.BinaryenLoopGetBody(loop), self.real.m.ref)
        return self.real(loop, label, not effects & self.calls)


# Binaryen's text: a function's header line, a direct call (or tail call), an indirect call.
_NAME = r'(\$"(?:[^"\\]|\\.)*"|\$[^\s()]+)'
_CALLS = re.compile(r"^ \(func " + _NAME + r"|\((?:return_)?call " + _NAME
                    + r"|\((?:return_)?call_(?:indirect|ref)\b", re.M)


def _unquote(name: str) -> str:
    """`$foo` or `$"foo bar"` -> the name (escapes are left as printed: such names only risk a
    wrong kind of poll, see `call_graph`)."""
    name = name[1:]
    return name[1:-1] if name.startswith('"') else name


class _ExpressionIds:
    """Binaryen's expression ids (functions in the C API), read once per walk."""

    def __init__(self, L: Any) -> None:
        self.block, self.loop, self.if_ = L.BinaryenBlockId(), L.BinaryenLoopId(), L.BinaryenIfId()
        self.br, self.call = L.BinaryenBreakId(), L.BinaryenCallId()
        self.one_child = {L.BinaryenDropId(): L.BinaryenDropGetValue,
                          L.BinaryenLocalSetId(): L.BinaryenLocalSetGetValue,
                          L.BinaryenGlobalSetId(): L.BinaryenGlobalSetGetValue,
                          L.BinaryenStoreId(): L.BinaryenStoreGetValue,
                          L.BinaryenReturnId(): L.BinaryenReturnGetValue}
