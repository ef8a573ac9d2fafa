"""The daemon's one LMDB environment: modules, executions, their logs, inputs and filesystems.

This is the only module that imports `lmdb`; LMDB errors become `StoreError` here. Layout
(named databases; keys are bytes):

    meta        b"format"             -> b"MAJOR.MINOR"
    modules     sha256 (hex)          -> ModuleRecord JSON
    blobs       sha256 (hex)          -> module bytes
    executions  id                    -> ExecutionRecord JSON
    logs        id + 0x00 + seq (u64 BE) -> stream byte (1=stdout, 2=stderr) + data
    inputs      id + b"/stdin"        -> stdin bytes
                id + b"/vfs"          -> the filesystem the execution started with
    vfs         id                    -> Vfs.to_bytes() (latest filesystem of the execution)
    journal     id + 0x00 + seq (u64 BE) -> one encoded journal record (roost.daemon.journal)
    checkpoints id + 0x00 + number (u64 BE) -> checkpoint manifest JSON (see SNAPSHOT_FORMAT.md)
    pagemaps    id + 0x00 + number (u64 BE) -> page map, full or delta (roost.daemon.pagemap)
    pages       id + 0x00 + number + b"/f" + u32 BE -> one page frame (roost.daemon.snapshot)
                id + 0x00 + number + b"/host"  -> host state (roost.daemon.hoststate)
                id + 0x00 + number + b"/stack" -> the guest's asyncify stack
    (checkpoints, pagemaps and pages are written by `pagestore`, through this environment)
    timers      id                    -> u64 BE unix ns: wake the execution (durable sleep)

The log key layout keeps one execution's records contiguous and in order, so a replay is one
cursor scan from (id, seq).
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from .errors import FormatError, NotFound, StoreError, StoreFull
from .records import ExecutionRecord, ModuleRecord

FORMAT_VERSION = (1, 0)
RESERVE_FRACTION = 0.95     # bulk writes stop here; the rest is kept for recording outcomes
FULL_ADVICE = "the store is full: raise store.map_size_bytes or free disk space, then roost resume"
DATABASES = ("meta", "modules", "blobs", "executions", "logs", "inputs", "vfs", "journal",
             "checkpoints", "pagemaps", "pages", "timers")
_SEQ = struct.Struct(">Q")


def log_key(exec_id: str, seq: int) -> bytes:
    return exec_id.encode() + b"\x00" + _SEQ.pack(seq)


class Store:
    """Typed access to the LMDB environment; every method is one transaction."""

    def __init__(self, path: Path, map_size_bytes: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self.env = lmdb.open(str(path), map_size=map_size_bytes, max_dbs=len(DATABASES) + 4,
                                 max_readers=512, metasync=True, sync=True)
        except lmdb.Error as e:
            raise StoreError(f"opening store at {path}: {e}") from e
        self.dbs = {name: self.env.open_db(name.encode()) for name in DATABASES}
        self._check_format()

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def txn(self, what: str, write: bool = False) -> Iterator[lmdb.Transaction]:
        """One transaction; LMDB errors become StoreError naming `what`. A write bigger than
        the reserve that check_room keeps can still fill the map: that is StoreFull too, with
        the same advice, since the user's remedy is the same."""
        try:
            with self.env.begin(write=write) as txn:
                yield txn
        except lmdb.MapFullError as e:
            raise StoreFull(f"{what}: {FULL_ADVICE} ({e})") from e
        except lmdb.Error as e:
            raise StoreError(f"{what}: {e}") from e

    def _check_format(self) -> None:
        """Accept the same major version and an older-or-equal minor; stamp a new store."""
        with self.txn("checking store format", write=True) as txn:
            raw = txn.get(b"format", db=self.dbs["meta"])
            if raw is None:
                txn.put(b"format", b"%d.%d" % FORMAT_VERSION, db=self.dbs["meta"])
                return
            major, minor = (int(x) for x in raw.decode().split("."))
            if major != FORMAT_VERSION[0] or minor > FORMAT_VERSION[1]:
                raise FormatError(f"store format {major}.{minor} is not supported by this roostd "
                                  f"(reads {FORMAT_VERSION[0]}.0 to {FORMAT_VERSION[0]}.{FORMAT_VERSION[1]})")

    def node_id(self, current: str) -> str:
        """The node id this store was last used by; `current` from now on."""
        with self.txn("recording the node id", write=True) as txn:
            previous = txn.get(b"node_id", db=self.dbs["meta"])
            txn.put(b"node_id", current.encode(), db=self.dbs["meta"])
        return previous.decode() if previous is not None else current

    # ---- modules ----
    def put_module(self, record: ModuleRecord, data: bytes) -> None:
        with self.txn(f"storing module {record.sha256}", write=True) as txn:
            txn.put(record.sha256.encode(), bytes(data), db=self.dbs["blobs"])
            txn.put(record.sha256.encode(), record.to_json(), db=self.dbs["modules"])

    def get_module(self, sha256: str) -> ModuleRecord:
        with self.txn(f"reading module {sha256}") as txn:
            raw = txn.get(sha256.encode(), db=self.dbs["modules"])
        if raw is None:
            raise NotFound(f"module {sha256} not found")
        return ModuleRecord.from_json(raw)

    def has_module(self, sha256: str) -> bool:
        with self.txn(f"reading module {sha256}") as txn:
            return txn.get(sha256.encode(), db=self.dbs["modules"]) is not None

    def module_bytes(self, sha256: str) -> bytes:
        with self.txn(f"reading module bytes {sha256}") as txn:
            raw = txn.get(sha256.encode(), db=self.dbs["blobs"])
        if raw is None:
            raise NotFound(f"module {sha256} not found")
        return raw

    def list_modules(self) -> list[ModuleRecord]:
        with self.txn("listing modules") as txn:
            return [ModuleRecord.from_json(v) for _, v in txn.cursor(db=self.dbs["modules"])]

    # ---- executions ----
    def create_execution(self, record: ExecutionRecord, stdin: bytes, vfs: bytes) -> None:
        """Record, inputs and initial filesystem land together or not at all."""
        key = record.id.encode()
        with self.txn(f"creating execution {record.id}", write=True) as txn:
            if not txn.put(key, record.to_json(), db=self.dbs["executions"], overwrite=False):
                raise StoreError(f"creating execution {record.id}: id already exists")
            txn.put(key + b"/stdin", stdin, db=self.dbs["inputs"])
            txn.put(key + b"/vfs", vfs, db=self.dbs["inputs"])
            txn.put(key, vfs, db=self.dbs["vfs"])

    def put_execution_in(self, txn, record: ExecutionRecord) -> None:
        """The record, in the caller's transaction."""
        txn.put(record.id.encode(), record.to_json(), db=self.dbs["executions"])

    def put_execution(self, record: ExecutionRecord, vfs: bytes | None = None,
                      clear_timer: bool = False, unless_newer: bool = False) -> bool:
        """Write the record (and the final filesystem); with `unless_newer`, not over one at a
        newer epoch (read and written in one transaction). Whether it wrote."""
        key = record.id.encode()
        with self.txn(f"updating execution {record.id}", write=True) as txn:
            if unless_newer:
                stored = self._read_execution(txn, record.id)
                if stored is not None and stored.epoch > record.epoch:
                    return False
            self.put_execution_in(txn, record)
            if vfs is not None:
                txn.put(key, vfs, db=self.dbs["vfs"])
            if clear_timer:
                txn.delete(key, db=self.dbs["timers"])
        return True

    def update_execution(self, exec_id: str, change: Callable[[ExecutionRecord], bool]) -> None:
        """Read, `change` (True: write it back) and write the record in one transaction: a
        record read, then written, by two threads at once loses one's change (a handover's
        COMMIT landing between another thread's read and write)."""
        with self.txn(f"updating execution {exec_id}", write=True) as txn:
            record = self._read_execution(txn, exec_id)
            if record is None:
                raise NotFound(f"execution {exec_id} not found")
            if change(record):
                self.put_execution_in(txn, record)

    def _read_execution(self, txn, exec_id: str) -> ExecutionRecord | None:
        raw = txn.get(exec_id.encode(), db=self.dbs["executions"])
        return None if raw is None else ExecutionRecord.from_json(raw)

    def get_execution(self, exec_id: str) -> ExecutionRecord:
        with self.txn(f"reading execution {exec_id}") as txn:
            record = self._read_execution(txn, exec_id)
        if record is None:
            raise NotFound(f"execution {exec_id} not found")
        return record

    def list_executions(self) -> list[ExecutionRecord]:
        with self.txn("listing executions") as txn:
            return [ExecutionRecord.from_json(v) for _, v in txn.cursor(db=self.dbs["executions"])]

    def stdin(self, exec_id: str) -> bytes:
        with self.txn(f"reading stdin of {exec_id}") as txn:
            return txn.get(exec_id.encode() + b"/stdin", b"", db=self.dbs["inputs"])

    def initial_vfs(self, exec_id: str) -> bytes:
        with self.txn(f"reading the initial filesystem of {exec_id}") as txn:
            raw = txn.get(exec_id.encode() + b"/vfs", db=self.dbs["inputs"])
        if raw is None:
            raise NotFound(f"execution {exec_id} has no initial filesystem")
        return raw

    def vfs(self, exec_id: str) -> bytes:
        with self.txn(f"reading filesystem of {exec_id}") as txn:
            raw = txn.get(exec_id.encode(), db=self.dbs["vfs"])
        if raw is None:
            raise NotFound(f"execution {exec_id} has no filesystem")
        return raw

    def check_room(self, what: str) -> None:
        """Refuse bulk writes (output, journal, checkpoints) once the map is nearly full, so the
        small writes that record *why* an execution stopped still fit."""
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        if used > info["map_size"] * RESERVE_FRACTION:
            raise StoreFull(f"{what}: {FULL_ADVICE} ({used} of {info['map_size']} bytes used)")

    # ---- logs and journal ----
    def append(self, record: ExecutionRecord, log_seq: int, chunks: list[tuple[int, bytes]],
               journal_seq: int, journal: list[bytes]) -> None:
        """Journal records, then output, then the record's counters: one transaction, so
        durable output never depends on a journal record that is not durable."""
        self.check_room(f"appending output of {record.id}")
        with self.txn(f"appending output of {record.id}", write=True) as txn:
            for i, raw in enumerate(journal):
                txn.put(log_key(record.id, journal_seq + i), raw, db=self.dbs["journal"])
            for i, (stream, data) in enumerate(chunks):
                txn.put(log_key(record.id, log_seq + i), bytes((stream,)) + data, db=self.dbs["logs"])
            txn.put(record.id.encode(), record.to_json(), db=self.dbs["executions"])

    def put_records(self, txn, exec_id: str, logs: list[tuple[int, bytes]],
                    journal: list[tuple[int, bytes]]) -> None:
        """Output and journal records at the seqs their owner gave them (a replica's), in the
        caller's transaction."""
        for seq, raw in logs:
            txn.put(log_key(exec_id, seq), raw, db=self.dbs["logs"])
        for seq, raw in journal:
            txn.put(log_key(exec_id, seq), raw, db=self.dbs["journal"])

    def next_seq(self, db: str, exec_id: str) -> int:
        """One past the last seq stored for `exec_id` in `db` ("logs" or "journal")."""
        with self.txn(f"reading {db} of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs[db])
            ok = cur.prev() if cur.set_range(log_key(exec_id, (1 << 64) - 1)) else cur.last()
            if ok and cur.key().startswith(exec_id.encode() + b"\x00"):
                return _SEQ.unpack(cur.key()[-8:])[0] + 1
        return 0

    def read_journal(self, exec_id: str, from_seq: int) -> list[bytes]:
        prefix = exec_id.encode() + b"\x00"
        with self.txn(f"reading journal of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["journal"])
            out: list[bytes] = []
            if cur.set_range(log_key(exec_id, from_seq)):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out.append(bytes(value))
            return out

    def read_logs(self, exec_id: str, from_seq: int, limit_bytes: int = 4 << 20
                  ) -> list[tuple[int, int, bytes]]:
        """Records (seq, stream, data) from `from_seq` on, up to about `limit_bytes`."""
        prefix = exec_id.encode() + b"\x00"
        out: list[tuple[int, int, bytes]] = []
        total = 0
        with self.txn(f"reading logs of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["logs"])
            if not cur.set_range(log_key(exec_id, from_seq)):
                return out
            for key, value in cur:
                if not key.startswith(prefix) or total >= limit_bytes:
                    break
                out.append((_SEQ.unpack(key[-8:])[0], value[0], bytes(value[1:])))
                total += len(value)
        return out

    # ---- timers ----
    def timers(self) -> dict[str, int]:
        with self.txn("reading timers") as txn:
            return {k.decode(): _SEQ.unpack(v)[0] for k, v in txn.cursor(db=self.dbs["timers"])}

    def clear_timer(self, exec_id: str) -> None:
        with self.txn(f"clearing the timer of {exec_id}", write=True) as txn:
            txn.delete(exec_id.encode(), db=self.dbs["timers"])


def delete_prefix(txn, db, prefix: bytes) -> None:
    cur = txn.cursor(db=db)
    if cur.set_range(prefix):
        while cur.key().startswith(prefix):
            if not cur.delete():
                break


def delete_range(txn, db, start: bytes, end: bytes) -> None:
    """Delete keys in [start, end)."""
    cur = txn.cursor(db=db)
    if cur.set_range(start):
        while cur.key() and cur.key() < end:
            if not cur.delete():
                break
