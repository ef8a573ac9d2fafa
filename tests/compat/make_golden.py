"""Write the golden files of tests/compat from a real checkpoint (run by hand, not by the tests):

    .venv/bin/python -m tests.compat.make_golden

A real roostd runs tests/guests/file_journal.c over a mounted /data (files kept open, written
in place, and filesystem timestamps journaled); `roost checkpoint` takes checkpoint 1 (a full
page map) and `roost pause` checkpoint 2 (a delta). The daemon stops and its LMDB store is read
raw: every on-disk format is written to golden/ as it is stored, named with the version of its
format (`frame.v2.0.c1f0.bin`), and expected.json beside them holds what each decodes to, so
that test_golden.py can check today's code against them. They go to a directory of their own
named by every version (golden/frame-v2.0_..._prepare-v2/): after a format's version changes, run
this again to add the new generation and keep the old ones, for as long as the code reads them
(a golden file is a record of what an older roostd wrote, not a snapshot of today's encoder).
The guest's module is kept too (file_journal.wasm), so a new compiler cannot change what the
checkpoint restores.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import zstandard

from roost.daemon.checkpoint import frames, hoststate, journal, pagemap
from roost.daemon.modules import prepare
from roost.daemon.runtime import vfs
from roost.daemon.store import db
from tests.framework.guestbuild import FLAGS, compile_guest
from tests.framework.harness import ARTIFACTS, Roostd, wait_until
from tests.framework.native import run_native

GOLDEN = Path(__file__).resolve().parent / "golden"
ARGS = ["200", "10000000"]                     # steps, hash rounds per step: seconds of computing
INITIAL_FILES = {"journal.txt": b"a line from before\n", "notes/readme.txt": b"kept as it was\n"}


def version(v: tuple[int, int]) -> str:
    return f"v{v[0]}.{v[1]}"


def run_to_pause(workdir: Path, wasm: Path, data: Path) -> tuple[Path, str]:
    """Run the guest on a fresh roostd, checkpoint it once, pause it; the data dir and its id.

    The daemon gets the test harness's pinned settings (`harness._pinned`: no periodic
    checkpoints, runs start prepared), so the guest is checkpointed exactly twice."""
    os.environ.setdefault("PYTEST_CURRENT_TEST", "make_golden")
    daemon = Roostd(workdir / "roostd" / "data").start()
    try:
        exec_id = daemon.roost("run", "--detach", "--mount", f"{data}:/data", str(wasm), "--", *ARGS,
                               check=True).stdout.decode().strip()
        inspect = lambda: json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)
        wait_until(lambda: inspect()["state"] == "RUNNING", timeout=60, what="the guest to run")
        time.sleep(0.1)                        # into its steps: files open, a few written
        daemon.roost("checkpoint", exec_id, check=True)
        daemon.roost("pause", exec_id, check=True)
        record = inspect()
        if record["state"] != "PAUSED" or int(record["checkpoints"]) != 2:
            raise SystemExit(f"the guest was not paused at its second checkpoint: {record}")
    finally:
        daemon.stop()
    return daemon.data_dir, exec_id


def read_store(data_dir: Path) -> dict[str, dict[bytes, bytes]]:
    """Every database of the store, raw (values as stored: sealed)."""
    env = lmdb.open(str(data_dir / "store"), readonly=True, lock=False, max_dbs=len(db.DATABASES) + 4)
    try:
        out = {}
        for name in db.DATABASES:
            handle = env.open_db(name.encode(), create=False)
            with env.begin(db=handle) as txn:
                out[name] = {bytes(k): bytes(v) for k, v in txn.cursor()}
        return out
    finally:
        env.close()


def unsealed(store: dict, name: str, key: bytes) -> bytes:
    raw = store[name][key]
    return raw if db.self_checked(name, key) else db.unseal(name, key, raw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def vfs_files(state: vfs.VfsState) -> dict[str, list]:
    """Every entry of every preopen of a VFS: path -> [kind, sha256 of data | target | ""]."""
    table = vfs.Vfs.restore(state)
    out: dict[str, list] = {}
    for guest_name, _ in table.preopens:
        for e in table.export(guest_name):
            what = sha(e.data) if e.kind == "file" else (e.target if e.kind == "symlink" else "")
            out[f"{guest_name}:{e.path}"] = [e.kind, what]
    return out


def nonzero(m: pagemap.PageMap) -> dict:
    """A page map as its size and its non-zero entries (most of a memory is never written)."""
    pages = [int(p) for p in m.versions.nonzero()[0]]
    return {"pages": m.pages, "nonzero": {str(p): int(m.versions[p]) for p in pages}}


def generation() -> str:
    """The directory of the golden files today's formats write: named by every version."""
    return (f"frame-{version(frames.FORMAT_VERSION)}_pagemap-{version(pagemap.FORMAT_VERSION)}"
            f"_host-{version(hoststate.FORMAT_VERSION)}_vfs-{version(vfs.FORMAT_VERSION)}"
            f"_store-{version(db.FORMAT_VERSION)}_prepare-v{prepare.PREPARE_VERSION}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="write over an existing generation of golden files")
    opts = parser.parse_args()
    out_dir = GOLDEN / generation()
    if out_dir.exists() and not opts.force:
        raise SystemExit(f"{out_dir} exists: golden files of today's versions are there already "
                         "(--force writes them again)")
    out_dir.mkdir(parents=True, exist_ok=True)
    guest = out_dir / "file_journal.wasm"
    if opts.force or not guest.exists():
        shutil.copy(compile_guest("file_journal", FLAGS + ("-s",)), guest)   # stripped: 30 KB
    workdir = Path(tempfile.mkdtemp(prefix="golden-"))
    data = workdir / "data"
    for rel, content in INITIAL_FILES.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(content)
    native = run_native(guest, ["file_journal", *ARGS], mounts=[(data, "/data")], keep=workdir / "native")
    data_dir, exec_id = run_to_pause(workdir, guest, data)
    store = read_store(data_dir)
    written: dict[str, bytes] = {}
    expected = describe(store, exec_id, native, written)
    for name, content in written.items():
        (out_dir / name).write_bytes(content)
        print(f"wrote {out_dir.name}/{name} ({len(content)} bytes)")
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)


def describe(store: dict, exec_id: str, native, written: dict[str, bytes]) -> dict:
    """Fill `written` (golden file name -> bytes) and return what each file decodes to."""
    sv = version(db.FORMAT_VERSION)
    key = db.log_key
    manifests = {n: json.loads(unsealed(store, "checkpoints", key(exec_id, n))) for n in (1, 2)}
    out: dict = {"exec_id": exec_id, "zstd": zstandard.ZSTD_VERSION,
                 "versions": {"frame": list(frames.FORMAT_VERSION), "pagemap": list(pagemap.FORMAT_VERSION),
                              "hoststate": list(hoststate.FORMAT_VERSION), "vfs": list(vfs.FORMAT_VERSION),
                              "store": list(db.FORMAT_VERSION), "prepare": prepare.PREPARE_VERSION}}

    # Page frames: every frame of both checkpoints (the restore needs them all).
    fv = version(frames.FORMAT_VERSION)
    out["frames"] = []
    for n in (1, 2):
        for i in range(manifests[n]["frames"]):
            raw = unsealed(store, "pages", key(exec_id, n) + b"/f" + i.to_bytes(4, "big"))
            indexes, pages = frames.decode_frame(raw)
            name = f"frame.{fv}.c{n}f{i}.bin"
            written[name] = raw
            out["frames"].append({"file": name, "checkpoint": n, "indexes": indexes.tolist(),
                                  "pages_sha256": sha(pages.tobytes())})

    # Page maps: checkpoint 1's is full, checkpoint 2's a delta on it.
    pv = version(pagemap.FORMAT_VERSION)
    full_raw, delta_raw = (unsealed(store, "pagemaps", key(exec_id, n)) for n in (1, 2))
    if not pagemap.is_full(full_raw) or pagemap.is_full(delta_raw):
        raise SystemExit("expected a full map at checkpoint 1 and a delta at 2")
    written[f"pagemap-full.{pv}.bin"], written[f"pagemap-delta.{pv}.bin"] = full_raw, delta_raw
    full = pagemap.decode(full_raw, None)
    pages, delta = pagemap.delta_entries(delta_raw)
    out["pagemap_full"] = {"file": f"pagemap-full.{pv}.bin", **nonzero(full)}
    out["pagemap_delta"] = {"file": f"pagemap-delta.{pv}.bin", "entries": delta.tolist(),
                            **nonzero(pagemap.with_delta(full.copy(), pages, delta))}

    # Host state of checkpoint 2, and the VFS image inside it.
    host = unsealed(store, "pages", key(exec_id, 2) + b"/host")
    stdin = unsealed(store, "inputs", exec_id.encode() + b"/stdin")
    state = hoststate.decode(host, stdin)
    hv, vv = version(hoststate.FORMAT_VERSION), version(vfs.FORMAT_VERSION)
    written[f"hoststate.{hv}.bin"] = host
    image = vfs.state_to_bytes(state.vfs)
    if not host.endswith(image):
        raise SystemExit("the host state does not end with its VFS image")
    written[f"vfs.{vv}.bin"] = image
    out["hoststate"] = {"file": f"hoststate.{hv}.bin", "stdin": stdin.hex(), "argv": list(state.argv),
                        "env": [list(kv) for kv in state.env], "stdin_position": state.stdin.position,
                        "fds": len(state.fds.entries), "clocks": dataclasses.asdict(state.clocks)}
    out["vfs"] = {"file": f"vfs.{vv}.bin", "entries": vfs_files(state.vfs)}

    # The stack: raw bytes, tied to the prepared module (PREPARE_VERSION), not to a format.
    stack_name = f"stack.prepare-v{prepare.PREPARE_VERSION}.bin"
    written[stack_name] = unsealed(store, "pages", key(exec_id, 2) + b"/stack")

    # One journal record (a journaled filesystem timestamp), the manifest, the execution record:
    # no format version of their own; the store's format versions them.
    records = {int.from_bytes(k[-8:], "big"): unsealed(store, "journal", k)
               for k in sorted(store["journal"]) if k.startswith(exec_id.encode() + b"\x00")}
    if not records:
        raise SystemExit("the guest journaled nothing")
    first = min(records)
    rec = journal.decode(records[first])
    written[f"journal.store-{sv}.bin"] = records[first]
    out["journal"] = {"file": f"journal.store-{sv}.bin", "name": rec.name, "result": rec.result,
                      "monotonic_ns": rec.monotonic_ns, "writes": [[a, d.hex()] for a, d in rec.writes],
                      # what a restore of checkpoint 2 replays (its journal_seq on)
                      "replay": [records[n].hex() for n in sorted(records)
                                 if n >= manifests[2]["journal_seq"]]}
    manifest_raw = unsealed(store, "checkpoints", key(exec_id, 2))
    written[f"manifest.store-{sv}.json"] = manifest_raw
    out["manifest"] = {"file": f"manifest.store-{sv}.json", "decoded": manifests[2]}
    record_raw = unsealed(store, "executions", exec_id.encode())
    written[f"execution.store-{sv}.json"] = record_raw
    out["execution"] = {"file": f"execution.store-{sv}.json", "decoded": json.loads(record_raw)}

    # A sealed value: the execution record as LMDB holds it.
    written[f"sealed.{sv}.bin"] = store["executions"][exec_id.encode()]
    out["sealed"] = {"file": f"sealed.{sv}.bin", "db": "executions", "key": exec_id.encode().hex(),
                     "value_sha256": sha(record_raw)}

    # What a restore of checkpoint 2 must go on to print and leave behind.
    m = manifests[2]
    digest = out["execution"]["decoded"]["module_sha256"]
    prepared = sorted(ARTIFACTS.glob(f"{digest}.preempt.p{prepare.PREPARE_VERSION}.*.json"))
    out["restore"] = {"prepared_manifest": json.loads(prepared[-1].read_text()),
                      "stdout": native.stdout[m["stdout_offset"]:].hex(),
                      "stderr": native.stderr[m["stderr_offset"]:].hex(), "exit": native.exit_code,
                      "files": {f"/data:{p.relative_to(native.files['/data']).as_posix()}": sha(p.read_bytes())
                                for p in sorted(native.files["/data"].rglob("*")) if p.is_file()}}
    return out


if __name__ == "__main__":
    sys.exit(main())
