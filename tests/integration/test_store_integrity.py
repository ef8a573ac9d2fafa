"""Store integrity: every stored value carries a checksum verified on read; a data file that is
not a whole LMDB store is refused at start in one line; a corrupt checkpoint falls back to the
older retained one (output byte-identical to a plain run); a full disk pauses the execution
saying so. Damage is done the way a disk does it: a byte flipped in the LMDB file of a stopped
daemon, with the `lmdb` module directly (nothing of roost's write path involved)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import lmdb
import pytest

from roost.daemon.errors import Corrupt, StoreError
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import DATABASES, FORMAT_VERSION, Store, log_key, seal
from roost.daemon.store.records import ExecutionRecord
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, free_port, wait_until
from tests.framework.native import run_native
from tests.integration.test_durability import _inspect, _stdout_len


def _start(daemon: Roostd, wasm: Path, *args: str) -> str:
    return daemon.roost("run", "--detach", str(wasm), "--", *args, check=True).stdout.decode().strip()


def _flip(data_dir: Path, db: str, key: bytes, index: int = 1) -> None:
    """Flip one bit of byte `index` of the value stored under `key` in database `db`."""
    env = lmdb.open(str(data_dir / "store"), max_dbs=len(DATABASES) + 4, map_size=1 << 30)
    try:
        handle = env.open_db(db.encode(), create=False)
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=handle))
            value[index] ^= 0x01
            txn.put(key, bytes(value), db=handle)
    finally:
        env.close()


def _keys(data_dir: Path, db: str, prefix: bytes) -> list[bytes]:
    env = lmdb.open(str(data_dir / "store"), max_dbs=len(DATABASES) + 4, map_size=1 << 30,
                    readonly=True)
    try:
        handle = env.open_db(db.encode(), create=False)
        with env.begin() as txn:
            return [k for k, _ in txn.cursor(db=handle) if k.startswith(prefix)]
    finally:
        env.close()


# ---- the store on its own ----
def _record(exec_id: str) -> ExecutionRecord:
    return ExecutionRecord(id=exec_id, module_sha256="m", module_name="m", argv=["m"], env=[], mounts=[])


def test_a_flipped_bit_in_any_value_is_caught_naming_database_and_key(tmp_path):
    store = Store(tmp_path / "store", 1 << 26)
    store.create_execution(_record("a"), b"in", b"fs")
    store.append(_record("a"), 0, [(1, b"hello")], 0, [b"journal"])
    store.close()
    for db, key in [("logs", log_key("a", 0)), ("journal", log_key("a", 0)),
                    ("executions", b"a"), ("inputs", b"a/stdin"), ("vfs", b"a")]:
        _flip(tmp_path, db, key, index=0)
    store = Store(tmp_path / "store", 1 << 26)
    reads = {"logs": lambda: store.read_logs("a", 0), "journal": lambda: store.read_journal("a", 0),
             "executions": lambda: store.get_execution("a"), "inputs": lambda: store.stdin("a"),
             "vfs": lambda: store.vfs("a")}
    for db, read in reads.items():
        with pytest.raises(Corrupt, match=f"the {db} record a.* is corrupt"):
            read()
    assert store.list_executions() == []           # left out (and logged), not an error for all


def test_a_format_1_store_is_sealed_at_open(tmp_path):
    """Values written without a checksum (format 1.0) are rewritten with one, in one
    transaction, and read back unchanged."""
    env = lmdb.open(str(tmp_path / "store"), max_dbs=len(DATABASES) + 4, map_size=1 << 26)
    dbs = {name: env.open_db(name.encode()) for name in DATABASES}
    with env.begin(write=True) as txn:
        txn.put(b"format", b"1.0", db=dbs["meta"])
        txn.put(b"a", _record("a").to_json(), db=dbs["executions"])
        for seq in range(300):
            txn.put(log_key("a", seq), b"\x01line %d\n" % seq, db=dbs["logs"])
    env.close()
    store = Store(tmp_path / "store", 1 << 26)
    assert store.get_execution("a").id == "a"
    assert [data for _, _, data in store.read_logs("a", 0)] == [b"line %d\n" % s for s in range(300)]
    with store.txn("reading the format") as txn:
        assert txn.get(b"format", db=store.dbs["meta"]) == b"%d.%d" % FORMAT_VERSION
    store.close()
    env = lmdb.open(str(tmp_path / "store"), max_dbs=len(DATABASES) + 4, map_size=1 << 26)
    logs = env.open_db(b"logs")
    with env.begin() as txn:
        raw = txn.get(log_key("a", 7), db=logs)
    env.close()
    assert raw == seal(log_key("a", 7), b"\x01line 7\n")


def test_a_truncated_or_empty_data_file_is_refused(tmp_path):
    store = Store(tmp_path / "store", 1 << 26)
    for seq in range(2000):
        store.append(_record("a"), seq, [(1, os.urandom(300))], seq, [])
    store.close()
    data = tmp_path / "store" / "data.mdb"
    for size in (data.stat().st_size // 2, 100, 0):
        os.truncate(data, size)
        with pytest.raises(StoreError, match="data.mdb is (truncated|not a whole LMDB store|empty)"):
            Store(tmp_path / "store", 1 << 26)


def test_restorable_checkpoints_and_dropping_the_newest(tmp_path):
    """What a restore falls back on: the retained checkpoints newest first; dropping a corrupt
    one leaves the older one whole."""
    from tests.unit.test_pagestore import Guest
    store = Store(tmp_path / "store", 1 << 28)
    guest = Guest(store)
    for value in (1, 2, 3):
        guest.write(0, 2, value)
        guest.checkpoint()
    pages = guest.pages
    assert pages.restorable("e1") == [3, 2]
    pages.drop_newest("e1", 3)
    assert pages.restorable("e1") == [2] and pages.latest("e1").number == 2
    assert PageStore(store).load("e1", 2).manifest.number == 2


# ---- a real daemon ----
def _two_finished(daemon):
    """Two executions of one guest run to their end, then the daemon stopped: (its plain run,
    the one a test damages, the one it leaves intact)."""
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", "20", "100"])
    damaged, intact = _start(daemon, wasm, "20", "100"), _start(daemon, wasm, "20", "100")
    for exec_id in (damaged, intact):
        assert daemon.roost("wait", exec_id).returncode == native.exit_code
    daemon.stop()
    return native, damaged, intact


def test_flipped_output_record_is_never_served(fresh_roostd):
    daemon = fresh_roostd.start()
    native, damaged, intact = _two_finished(daemon)
    _flip(daemon.data_dir, "logs", log_key(damaged, 0), index=1)
    daemon.start()
    logs = daemon.roost("logs", damaged, timeout=30)
    assert logs.returncode != 0 and native.stdout[:20] not in logs.stdout
    assert b"logs record" in logs.stderr and b"corrupt" in logs.stderr, logs.stderr
    logs = daemon.roost("logs", intact)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, native.stdout, native.stderr)


def test_flipped_journal_record_fails_only_its_execution(fresh_roostd):
    """A journal record damaged while roostd was down: the execution that needs it to resume
    fails naming it (it does not replay a wrong random value); the others are served."""
    daemon = fresh_roostd.start()
    other = compile_guest("spin_print")
    native = run_native(other, ["spin_print", "20", "100"])
    done = _start(daemon, other, "20", "100")
    assert daemon.roost("wait", done).returncode == native.exit_code
    clock = _start(daemon, compile_guest("clock_random"), "100000", "3000000")
    wait_until(lambda: _inspect(daemon, clock).get("journal_records", 0) >= 3, what="journal records")
    daemon.kill9()                                   # no checkpoint: the journal is all there is
    _flip(daemon.data_dir, "journal", log_key(clock, 1), index=-8)
    daemon.start()
    wait_until(lambda: _inspect(daemon, clock)["state"] != "RUNNING", timeout=30, what="the resume to fail")
    record = _inspect(daemon, clock)
    assert record["state"] == "FAILED", record
    assert "journal record" in record["error"] and "corrupt" in record["error"], record["error"]
    logs = daemon.roost("logs", done)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, native.stdout, native.stderr)


def test_flipped_execution_record_is_reported_and_the_others_are_served(fresh_roostd):
    daemon = fresh_roostd.start()
    native, damaged, intact = _two_finished(daemon)
    raw = _keys(daemon.data_dir, "executions", damaged.encode())
    assert raw == [damaged.encode()]
    env = lmdb.open(str(daemon.data_dir / "store"), max_dbs=32, map_size=1 << 30, readonly=True)
    executions = env.open_db(b"executions", create=False)
    with env.begin() as txn:
        value = txn.get(damaged.encode(), db=executions)
    env.close()
    # a letter of the module's name: the JSON stays valid, only a checksum can tell
    _flip(daemon.data_dir, "executions", damaged.encode(), index=value.index(b'"module_name": "spin') + 18)
    daemon.start()
    inspect = daemon.roost("inspect", damaged)
    assert inspect.returncode != 0, inspect.stdout
    assert b"executions record" in inspect.stderr and b"corrupt" in inspect.stderr, inspect.stderr
    listing = daemon.roost("ps", "-a", "--json")
    assert listing.returncode == 0 and intact in listing.stdout.decode()
    logs = daemon.roost("logs", intact)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, native.stdout, native.stderr)


def test_truncated_data_file_stops_roostd_with_one_line(tmp_path):
    daemon = Roostd(tmp_path / "data").start()
    wasm = compile_guest("spin_print")
    for _ in range(3):
        _start(daemon, wasm, "200", "100")
    daemon.stop()
    data = tmp_path / "data" / "store" / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)
    began = time.monotonic()
    proc = subprocess.run([str(BIN / "roostd"), "--config", str(daemon.config()),
                           "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}",
                           "--metrics-listen", f"127.0.0.1:{free_port()}", "--node-id", daemon.node_id],
                          capture_output=True, timeout=60)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert time.monotonic() - began < 30
    lines = proc.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("roostd: ") and str(data) in lines[-1] and "truncated" in lines[-1], lines
    assert not any("Traceback" in line for line in lines), lines


@pytest.mark.parametrize("damage", ["on_disk", "before_sealing"])
def test_corrupt_newest_checkpoint_restores_from_the_older_one(tmp_path, damage):
    """Two checkpoints of a running guest, then roostd is killed and a page frame of the newest
    is damaged: on disk (the store's checksum catches it), or before it was stored (sealed
    intact: the frame's own checksum catches it in the worker). The restore falls back to the
    older checkpoint plus the journal, says so, numbers the next checkpoint after the dropped
    one, and the output is a plain run's."""
    args = ["1500", "2500000"]
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", *args])
    daemon = Roostd(tmp_path / "data").start()
    try:
        exec_id = _start(daemon, wasm, *args)
        wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
        for _ in range(2):
            assert daemon.roost("checkpoint", exec_id).returncode == 0
        daemon.kill9()
        assert _inspect_offline(tmp_path, exec_id)["state"] == "RUNNING"
        frames = _keys(tmp_path / "data", "pages", log_key(exec_id, 2) + b"/f")
        assert frames, "checkpoint 2 stored no frame"
        if damage == "on_disk":
            _flip(tmp_path / "data", "pages", frames[0], index=40)
        else:
            _damage_sealed(tmp_path / "data", frames[0])
        daemon.start()
        taken = wait_until(lambda: (r := daemon.roost("checkpoint", "--json", exec_id)).returncode == 0
                           and json.loads(r.stdout), timeout=60, what="a checkpoint after the restore")
        assert taken["number"] == 3            # never 2 again: a replica may hold the dropped one
        assert daemon.roost("wait", exec_id, timeout=300).returncode == native.exit_code
        logs = daemon.roost("logs", exec_id)
        assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
        record = _inspect(daemon, exec_id)
        assert any("checkpoint 2 is corrupt" in note for note in record["notes"]), record
        assert "checkpoint 2 is corrupt" in daemon.roost("inspect", exec_id).stdout.decode()
        assert "checkpoint 2 is corrupt" in daemon.log()
    finally:
        daemon.stop()


def _inspect_offline(tmp_path: Path, exec_id: str) -> dict:
    store = Store(tmp_path / "data" / "store", 1 << 30)
    try:
        return json.loads(store.get_execution(exec_id).to_json())
    finally:
        store.close()


def _damage_sealed(data_dir: Path, key: bytes) -> None:
    """Damage a frame's compressed pages and store it sealed again, as if it had been damaged
    in memory before it was written: only the frame's own checksum can tell."""
    store = Store(data_dir / "store", 1 << 30)
    try:
        with store.txn("damaging a frame", write=True) as txn:
            frame = bytearray(txn.get(key, db=store.dbs["pages"]))
            frame[-10] ^= 0x55
            txn.put(key, bytes(frame), db=store.dbs["pages"])
    finally:
        store.close()


@pytest.fixture
def small_disk(tmp_path):
    """The store's directory on an 8 MiB tmpfs (root only)."""
    where = tmp_path / "data" / "store"
    where.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(where)]).returncode:
        pytest.skip("cannot mount a tmpfs (not root?)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)])


def test_full_disk_pauses_the_execution_saying_so(tmp_path, small_disk):
    """A map far bigger than the disk under it: the disk fills first; the execution pauses with
    a reason that says the disk is full (not "Input/output error"), and the daemon carries on."""
    daemon = Roostd(tmp_path / "data", config_text="[store]\nmap_size_bytes = 268435456\n").start()
    try:
        exec_id = _start(daemon, compile_guest("spin_print"), "400000", "100")   # ~11 MB of output
        wait_until(lambda: _inspect(daemon, exec_id)["state"] != "RUNNING", timeout=120,
                   what="the execution to stop")
        record = _inspect(daemon, exec_id)
        assert record["state"] == "PAUSED", record
        assert "disk" in record["error"] and "is full" in record["error"], record["error"]
        assert str(small_disk) in record["error"], record["error"]
        assert daemon.roost("ps").returncode == 0
    finally:
        daemon.stop()
