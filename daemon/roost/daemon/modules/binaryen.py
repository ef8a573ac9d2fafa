"""Binaryen's C library (the `icpp-binaryen` wheel's bundled libbinaryen.so), through cffi.

ABI mode (`ffi.dlopen`), with roost's own declarations of exactly the functions `prepare` uses,
checked against Binaryen 116's `src/binaryen-c.h`. `Module` wraps one `BinaryenModuleRef` with
the few operations preparation needs; everything else stays in `prepare`.

Binaryen reports fatal errors on stderr and may `abort()` the process: never call this from the
daemon process itself, only from the preparation subprocess (`prepare.prepare` arranges that).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


    def insert_loop_polls(self, memory: str, flag_address: int, target: str) -> int:
        """Give every loop that can iterate a safepoint poll; returns how many loops got one.

        A loop `loop $L BODY` becomes

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

        A loop without a name has no back-edge (its body runs once) and gets no poll. The walk
        follows statement-level structure (block, if, loop, br, drop, local/global set, store
        value, call operands, return): where compilers put loops. A loop nested elsewhere (inside
        an arithmetic operand, say) gets no poll: pausing it then waits for the next poll or
        host call; that is slower, never unsound.
        """
        L, m, null = self.lib, self.ref, ffi.NULL
        ids = _ExpressionIds(L)
        mem, tgt = self.name(memory), self.name(target)
        i32, none, auto = L.BinaryenTypeInt32(), L.BinaryenTypeNone(), L.BinaryenTypeAuto()
        lit = L.BinaryenLiteralInt32(flag_address)

        def flag() -> Any:
            return L.BinaryenLoad(m, 1, False, 0, 1, i32, L.BinaryenConst(m, lit), mem)

        count = 0
        for i in range(L.BinaryenGetNumFunctions(m)):
            f = L.BinaryenGetFunctionByIndex(m, i)
            mod = L.BinaryenFunctionImportGetModule(f)
            if mod != null and ffi.string(mod):
                continue
            stack = [L.BinaryenFunctionGetBody(f)]
            while stack:
                e = stack.pop()
                if e == null:
                    continue
                kind = L.BinaryenExpressionGetId(e)
                if kind == ids.block:
                    stack.extend(L.BinaryenBlockGetChildAt(e, k)
                                 for k in range(L.BinaryenBlockGetNumChildren(e)))
                elif kind == ids.loop:
                    body = L.BinaryenLoopGetBody(e)
                    stack.append(body)
                    label = L.BinaryenLoopGetName(e)
                    if label == null:
                        continue
                    outer = self.name(f"roost_poll_{count}")
                    check = L.BinaryenBreak(m, outer, flag(), null)
                    kids = ffi.new("BinaryenExpressionRef[2]", [check, body])
                    inner = L.BinaryenLoop(m, label, L.BinaryenBlock(m, null, kids, 2, auto))
                    poll = L.BinaryenIf(m, flag(), L.BinaryenCall(m, tgt, null, 0, none), null)
                    kids = ffi.new("BinaryenExpressionRef[2]", [poll, inner])
                    L.BinaryenLoopSetName(e, outer)
                    L.BinaryenLoopSetBody(e, L.BinaryenBlock(m, null, kids, 2, auto))
                    count += 1
                elif kind == ids.if_:
                    stack += (L.BinaryenIfGetCondition(e), L.BinaryenIfGetIfTrue(e),
                              L.BinaryenIfGetIfFalse(e))
                elif kind in ids.one_child:
                    stack.append(ids.one_child[kind](e))
                elif kind == ids.br:
                    stack += (L.BinaryenBreakGetValue(e), L.BinaryenBreakGetCondition(e))
                elif kind == ids.call:
                    stack.extend(L.BinaryenCallGetOperandAt(e, k)
                                 for k in range(L.BinaryenCallGetNumOperands(e)))
        return count


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
