"""Every on-disk format against golden files an earlier roostd wrote (tests/compat/golden/*/,
made by make_golden.py from a real checkpoint): an old checkpoint must still restore.

For every golden file whose format today's code reads (same major, older or equal minor):
(a) it decodes to the values recorded beside it (expected.json); (b) while the code's format
version equals the file's, encoding the decoded value gives the same bytes, so an encoding that
changes without a version bump fails here; (c) the golden checkpoint (memory from its frames and
page maps, asyncify stack, globals, host state) restores into today's runtime and the guest runs
to its end with the same output, files and exit code as a plain run. And every format's current
version has a golden file: after a bump, make_golden.py adds the new generation.
"""
from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import wasmtime
import zstandard

from roost.daemon.checkpoint import frames, hoststate, journal, pagemap
from roost.daemon.checkpoint.journal import Replay
from roost.daemon.errors import Corrupt
from roost.daemon.modules import prepare
from roost.daemon.runtime import capture, engine, vfs
from roost.daemon.runtime.wasi import GuestExit, WasiHost
from roost.daemon.store import db
from roost.daemon.store.records import ExecutionRecord
from tests.compat.make_golden import sha, vfs_files
from tests.framework.wasi_harness import vfs_tree
from tests.runtime.test_prepare import prepared

GOLDEN = Path(__file__).resolve().parent / "golden"
GENERATIONS = sorted(p for p in GOLDEN.iterdir() if (p / "expected.json").is_file())
CURRENT = {"frame": frames.FORMAT_VERSION, "pagemap-full": pagemap.FORMAT_VERSION,
           "pagemap-delta": pagemap.FORMAT_VERSION, "hoststate": hoststate.FORMAT_VERSION,
           "vfs": vfs.FORMAT_VERSION, "journal": db.FORMAT_VERSION, "manifest": db.FORMAT_VERSION,
           "execution": db.FORMAT_VERSION, "sealed": db.FORMAT_VERSION}
# name.v1.0..., name.store-v2.0...: the format and the version its bytes are in (journal
# records, manifests and execution records have no version of their own: the store's is theirs).
_NAMED = re.compile(r"^(?P<format>[a-z-]+)\.(?:store-)?v(?P<major>\d+)\.(?P<minor>\d+)\b")


@dataclass(frozen=True)
class Golden:
    path: Path
    format: str
    version: tuple[int, int]
    expected: dict

    @property
    def raw(self) -> bytes:
        return self.path.read_bytes()

    @property
    def readable(self) -> bool:
        """Today's code reads it: the same major, an older or equal minor."""
        now = CURRENT[self.format]
        return self.version[0] == now[0] and self.version[1] <= now[1]

    @property
    def current(self) -> bool:
        """Today's code writes this very version: it must write these very bytes."""
        return self.version == tuple(CURRENT[self.format])


def goldens(fmt: str) -> list[Golden]:
    out = []
    for gen in GENERATIONS:
        expected = json.loads((gen / "expected.json").read_text())
        for path in sorted(gen.iterdir()):
            m = _NAMED.match(path.name)
            if m and m["format"] == fmt:
                out.append(Golden(path, fmt, (int(m["major"]), int(m["minor"])), expected))
    return out


def cases(fmt: str) -> list:
    return [pytest.param(g, id=f"{g.path.parent.name}/{g.path.name}") for g in goldens(fmt)]


def readable(g: Golden) -> None:
    if not g.readable:
        pytest.skip(f"{g.path.name}: format {g.version} is no longer read (today: {CURRENT[g.format]})")


def same_bytes(g: Golden, encoded: bytes) -> None:
    assert encoded == g.raw, (
        f"{g.path.name}: today's code writes format {g.format} {g.version} differently. A change of "
        f"the bytes needs a new format version (and make_golden.py run for it); if it is a new "
        f"zstd that compresses differently (recorded {g.expected['zstd']}, now "
        f"{zstandard.ZSTD_VERSION}), say so here")


@pytest.mark.parametrize("fmt", sorted(CURRENT))
def test_every_current_format_version_has_a_golden_file(fmt):
    assert any(g.current for g in goldens(fmt)), (
        f"no golden file of {fmt} at today's version {CURRENT[fmt]}: run "
        f".venv/bin/python -m tests.compat.make_golden and commit what it writes")


@pytest.mark.parametrize("g", cases("frame"))
def test_page_frame(g: Golden):
    readable(g)
    want = next(f for f in g.expected["frames"] if f["file"] == g.path.name)
    indexes, pages = frames.decode_frame(g.raw)
    assert indexes.tolist() == want["indexes"]
    assert sha(pages.tobytes()) == want["pages_sha256"]
    if g.current:
        same_bytes(g, frames.frame_bytes(indexes, pages.tobytes(), frames._compressor(frames.LEVEL)))


def _map(entry: dict) -> tuple[int, dict[str, int]]:
    return entry["pages"], entry["nonzero"]


def _nonzero(m: pagemap.PageMap) -> tuple[int, dict[str, int]]:
    return m.pages, {str(int(p)): int(m.versions[p]) for p in np.flatnonzero(m.versions)}


@pytest.mark.parametrize("g", cases("pagemap-full"))
def test_page_map_full(g: Golden):
    readable(g)
    m = pagemap.decode(g.raw, None)
    assert _nonzero(m) == _map(g.expected["pagemap_full"])
    if g.current:
        same_bytes(g, pagemap.encode_full(m))


@pytest.mark.parametrize("g", cases("pagemap-delta"))
def test_page_map_delta(g: Golden):
    readable(g)
    base = pagemap.decode((g.path.parent / g.expected["pagemap_full"]["file"]).read_bytes(), None)
    pages, delta = pagemap.delta_entries(g.raw)
    assert delta.tolist() == g.expected["pagemap_delta"]["entries"]
    assert _nonzero(pagemap.decode(g.raw, base)) == _map(g.expected["pagemap_delta"])
    if g.current:
        same_bytes(g, pagemap.encode_delta(pages, delta))


@pytest.mark.parametrize("g", cases("hoststate"))
def test_host_state(g: Golden):
    readable(g)
    want = g.expected["hoststate"]
    state = hoststate.decode(g.raw, bytes.fromhex(want["stdin"]))
    assert list(state.argv) == want["argv"] and [list(kv) for kv in state.env] == want["env"]
    assert state.stdin.position == want["stdin_position"] and len(state.fds.entries) == want["fds"]
    for name, value in want["clocks"].items():
        assert getattr(state.clocks, name) == value, name
    assert vfs_files(state.vfs) == g.expected["vfs"]["entries"]
    if g.current:
        same_bytes(g, hoststate.encode(state))


@pytest.mark.parametrize("g", cases("vfs"))
def test_vfs_image(g: Golden):
    readable(g)
    table = vfs.Vfs.from_bytes(g.raw)
    assert vfs_files(table.save()) == g.expected["vfs"]["entries"]
    if g.current:
        same_bytes(g, vfs.state_to_bytes(table.save()))


@pytest.mark.parametrize("g", cases("journal"))
def test_journal_record(g: Golden):
    readable(g)
    want = g.expected["journal"]
    rec = journal.decode(g.raw)
    assert (rec.name, rec.result, rec.monotonic_ns) == (want["name"], want["result"], want["monotonic_ns"])
    assert [[a, d.hex()] for a, d in rec.writes] == want["writes"]
    if g.current:
        same_bytes(g, journal.encode(rec))


@pytest.mark.parametrize("g", cases("execution"))
def test_execution_record(g: Golden):
    readable(g)
    record = ExecutionRecord.from_json(g.raw)
    want = g.expected["execution"]["decoded"]
    assert record.id == want["id"] == g.expected["exec_id"]
    assert record.state.value == want["state"] == "PAUSED"
    assert (record.argv, record.checkpoints, record.module_sha256) == (
        want["argv"], want["checkpoints"], want["module_sha256"])
    if g.current:
        same_bytes(g, record.to_json())


@pytest.mark.parametrize("g", cases("manifest"))
def test_checkpoint_manifest(g: Golden):
    """The JSON PageStore.put stores: what a restore reads of it is there, as it was."""
    readable(g)
    manifest = json.loads(g.raw)
    assert manifest == g.expected["manifest"]["decoded"]
    for name in ("number", "memory_bytes", "globals", "journal_seq", "stdout_offset", "stderr_offset",
                 "frames", "map_base", "prepare_version"):
        assert name in manifest, name
    if g.current:
        same_bytes(g, json.dumps(manifest, sort_keys=True).encode())
    _through_the_manifest_record(g, manifest)


def _through_the_manifest_record(g: Golden, stored: dict) -> None:
    """The typed manifest (checkpoint/manifest.py, where it exists) reads the golden one and
    writes back every key and value, adding only its version key (a manifest without one is
    its version 1); one that carries the key is written back byte for byte at that version."""
    try:
        records = importlib.import_module("roost.daemon.checkpoint.manifest")
    except ImportError:
        return
    manifest, stats = records.read(g.raw)
    assert (manifest.number, manifest.journal_seq, manifest.memory_bytes, manifest.stdout_offset) == (
        stored["number"], stored["journal_seq"], stored["memory_bytes"], stored["stdout_offset"])
    assert [list(x) for x in manifest.globals] == stored["globals"]
    version = stored.get(records.VERSION_KEY, 1)
    if version != records.FORMAT_VERSION:
        return
    written = manifest.to_json(stats)
    if records.VERSION_KEY in stored:
        same_bytes(g, written)
    else:
        assert json.loads(written) == {**stored, records.VERSION_KEY: version}


@pytest.mark.parametrize("g", cases("sealed"))
def test_sealed_value(g: Golden):
    readable(g)
    want = g.expected["sealed"]
    key = bytes.fromhex(want["key"])
    value = db.unseal(want["db"], key, g.raw)
    assert sha(value) == want["value_sha256"]
    with pytest.raises(Corrupt):
        db.unseal(want["db"], key + b"x", g.raw)          # the seal covers the key
    if g.current:
        same_bytes(g, db.seal(key, value))


def _file(gen: Path, fmt: str) -> Path:
    found = [p for p in gen.iterdir() if (m := _NAMED.match(p.name)) and m["format"] == fmt]
    assert len(found) == 1, (gen.name, fmt, found)
    return found[0]


@pytest.mark.parametrize("gen", GENERATIONS, ids=[g.name for g in GENERATIONS])
def test_golden_checkpoint_restores_and_runs_to_its_end(gen: Path):
    """Checkpoint 2 (a pause) of the golden execution, restored as a worker restores it: memory
    from the frames of every version its map names, globals, asyncify stack, host state (VFS
    and open files), journal replayed from its journal_seq; the guest then runs to its end."""
    expected = json.loads((gen / "expected.json").read_text())
    want = expected["restore"]
    if want["prepared_manifest"]["prepare_version"] != prepare.PREPARE_VERSION:
        pytest.skip("checkpoints of another preparation version are not restored (roostd refuses them)")
    if any(not g.readable for fmt in ("frame", "pagemap-full", "hoststate") for g in goldens(fmt)
           if g.path.parent == gen):
        pytest.skip("a format of this generation is no longer read")
    manifest = json.loads(_file(gen, "manifest").read_bytes())
    wasm, prepared_manifest = prepared(gen / "file_journal.wasm", want["prepared_manifest"]["preemptive"])
    assert prepared_manifest == want["prepared_manifest"]

    versions = pagemap.decode(_file(gen, "pagemap-delta").read_bytes(),
                              pagemap.decode(_file(gen, "pagemap-full").read_bytes(), None)).versions
    stored = [(f["checkpoint"], (gen / f["file"]).read_bytes()) for f in expected["frames"]]
    memory = frames.image_from_versions(stored, versions, manifest["memory_bytes"])
    stack = next(gen.glob("stack.prepare-v*.bin")).read_bytes()
    state = hoststate.decode(_file(gen, "hoststate").read_bytes(), bytes.fromhex(expected["hoststate"]["stdin"]))
    replay = Replay([journal.decode(bytes.fromhex(r)) for r in expected["journal"]["replay"]],
                    manifest["journal_seq"])

    out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    host = WasiHost(state, lambda fd, data: out[fd].extend(data), lambda record: None, replay)
    eng = engine.make_engine()
    store = wasmtime.Store(eng)
    linker = wasmtime.Linker(eng)
    host.define(linker)
    gate = capture.Gate()
    capture.define_safepoint(linker, gate)
    instance = linker.instantiate(store, wasmtime.Module.from_file(eng, str(wasm)))
    host.bind(store, instance.exports(store)["memory"])
    runner = capture.Runner(store, instance, prepared_manifest, host, gate)
    runner.restore(capture.GuestImage(bytes(memory), tuple(tuple(g) for g in manifest["globals"]), stack))
    code: int | str = 0
    try:
        runner.run(lambda image: True)
    except GuestExit as e:
        code = e.code
    assert (bytes(out[1]), bytes(out[2])) == (bytes.fromhex(want["stdout"]), bytes.fromhex(want["stderr"]))
    assert code == want["exit"]
    files = {f"/data:{path}": sha(entry[1]) for path, entry in vfs_tree(host.vfs, "/data").items()
             if entry[0] == "file"}
    assert files == want["files"]
