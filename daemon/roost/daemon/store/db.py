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
    journal     id + 0x00 + seq (u64 BE) -> one encoded journal record (roost.daemon.checkpoint.journal)
    checkpoints id + 0x00 + number (u64 BE) -> checkpoint manifest JSON (see SNAPSHOT_FORMAT.md)
    pagemaps    id + 0x00 + number (u64 BE) -> page map, full or delta (roost.daemon.checkpoint.pagemap)
    pages       id + 0x00 + number + b"/f" + u32 BE -> one page frame (roost.daemon.checkpoint.frames)
                id + 0x00 + number + b"/host"  -> host state (roost.daemon.checkpoint.hoststate)
                id + 0x00 + number + b"/stack" -> the guest's asyncify stack
    (checkpoints, pagemaps and pages are written by `pagestore`, through this environment)
    timers      id                    -> u64 BE unix ns: wake the execution (durable sleep)

Every value above is stored sealed: its bytes, then a u32 LE crc32 of key and bytes (`seal`) —
but page frames, which carry checksums of their own (`self_checked`).
Every transaction hands out `Txn`, which seals what is put and checks what is read, so no
caller sees the seal and no bit flipped on disk is ever served: the read raises `Corrupt`
naming the database and the key. A store of format 1 (values unsealed) is sealed in one
transaction when this roostd first opens it.

The log key layout keeps one execution's records contiguous and in order, so a replay is one
cursor scan from (id, seq).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from roost.daemon.errors import Corrupt, FormatError, NotFound, StoreError, StoreFull
from roost.daemon.store.records import ExecutionRecord, ModuleRecord

log = logging.getLogger(__name__)
FORMAT_VERSION = (2, 0)
UNSEALED_MAJOR = 1          # format 1: the same layout, values without their crc32
RESERVE_FRACTION = 0.95     # bulk writes stop here; the rest is kept for recording outcomes
FULL_ADVICE = "the store is full: raise store.map_size_bytes or free disk space, then roost resume"
DISK_FULL_SLACK_BYTES = 64 << 20    # an I/O error with less free than this is a full disk
DATABASES = ("meta", "modules", "blobs", "executions", "logs", "inputs", "vfs", "journal",
             "checkpoints", "pagemaps", "pages", "timers")
_SEQ = struct.Struct(">Q")
_CRC = struct.Struct("<I")
_LEGACY_FORMAT = re.compile(rb"\d+\.\d+")


def log_key(exec_id: str, seq: int) -> bytes:
    return exec_id.encode() + b"\x00" + _SEQ.pack(seq)


# ---- sealed values: every value carries a crc32 of its key and bytes ----
def seal(key: bytes, value) -> bytes:
    """The value as stored: its bytes, then crc32(key + bytes), so a flipped bit — or a value
    stored under another key — is caught on read. crc32 runs at ~3 GB/s: cheap next to zstd."""
    return b"".join((value, _CRC.pack(zlib.crc32(value, zlib.crc32(key)))))


def self_checked(db: str, key: bytes) -> bool:
    """Page frames (`pages`, keys ending in /f + u32) carry their own checks — a crc32 of their
    index and zstd's XXH64 of their pages, verified by every decode (`snapshot`) — so the
    store neither seals nor checks them again: a crc32 and a copy of every frame made a 512 MiB
    restore ~50 % slower and a full checkpoint's commit ~20 % (bench/checkpoint.py A/B)."""
    return db == "pages" and key[-6:-4] == b"/f"


def unseal(db: str, key: bytes, raw: bytes, what: str = "reading the store") -> bytes:
    """The bytes of a stored value, after checking its crc32; Corrupt (naming the database and
    the key) instead of ever serving bytes that changed on disk."""
    body = memoryview(raw)[:-_CRC.size]
    stored = _CRC.unpack_from(raw, len(body))[0] if len(raw) >= _CRC.size else None
    if stored != zlib.crc32(body, zlib.crc32(key)):
        raise Corrupt(f"{what}: the {db} record {describe_key(key)} is corrupt (it fails its "
                      f"checksum); it is not served")
    return bytes(body)


def describe_key(key: bytes) -> str:
    """A key as a person reads it: `id/seq`, `id/number/f3`, `id/number/host`, `id/stdin`."""
    exec_id, sep, rest = key.partition(b"\x00")
    if not sep or len(rest) < _SEQ.size:
        return key.decode(errors="backslashreplace")
    text = f"{exec_id.decode(errors='backslashreplace')}/{_SEQ.unpack(rest[:8])[0]}"
    suffix = rest[8:]
    if suffix.startswith(b"/f") and len(suffix) == 6:
        return f"{text}/f{struct.unpack('>I', suffix[2:])[0]}"
    return text + suffix.decode(errors="backslashreplace")


class Txn:
    """An LMDB transaction that seals every value put and checks every value read: the one
    place values are encoded, so no caller can skip the checksum."""

    def __init__(self, raw: lmdb.Transaction, names: dict, what: str) -> None:
        self.raw, self._names, self.what = raw, names, what

    def get(self, key: bytes, default=None, db=None):
        raw = self.raw.get(key, db=db)
        if raw is None or self_checked(self._names[db], key):
            return default if raw is None else raw
        return unseal(self._names[db], key, raw, self.what)

    def has(self, key: bytes, db=None) -> bool:
        """Whether `key` is stored, without reading (and checking) its value."""
        return self.raw.get(key, db=db) is not None

    def put(self, key: bytes, value, db=None, overwrite: bool = True) -> bool:
        if not self_checked(self._names[db], key):
            value = seal(key, value)
        return self.raw.put(key, value, db=db, overwrite=overwrite)

    def delete(self, key: bytes, db=None) -> bool:
        return self.raw.delete(key, db=db)

    def cursor(self, db=None) -> "Cursor":
        return Cursor(self.raw.cursor(db=db), self._names[db], self.what)


class Cursor:
    """An LMDB cursor whose values are checked as they are read (keys are not sealed: a damaged
    key moves its value, and the crc, which covers the key, catches that)."""

    def __init__(self, raw: lmdb.Cursor, db: str, what: str) -> None:
        self.raw, self.db, self.what = raw, db, what

    def set_range(self, key: bytes) -> bool:
        return self.raw.set_range(key)

    def first(self) -> bool:
        return self.raw.first()

    def last(self) -> bool:
        return self.raw.last()

    def prev(self) -> bool:
        return self.raw.prev()

    def next(self) -> bool:
        return self.raw.next()

    def key(self) -> bytes:
        return self.raw.key()

    def value(self) -> bytes:
        return self._checked(self.raw.key(), self.raw.value())

    def _checked(self, key: bytes, raw: bytes) -> bytes:
        return raw if self_checked(self.db, key) else unseal(self.db, key, raw, self.what)

    def delete(self) -> bool:
        return self.raw.delete()

    def iternext(self, keys: bool = True, values: bool = True):
        if not values:
            return self.raw.iternext(keys=keys, values=False)
        return ((k, self._checked(k, v)) if keys else self._checked(k, v)
                for k, v in self.raw.iternext(keys=True, values=True))

    def __iter__(self):
        return self.iternext()


class Store:
    """Typed access to the LMDB environment; every method is one transaction."""

    def __init__(self, path: Path, map_size_bytes: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        data = path / "data.mdb"
        if data.exists() and data.stat().st_size == 0:     # LMDB would start an empty store
            raise StoreError(f"{data} is empty (truncated?): restore the data directory from a "
                             f"copy, or remove the file to start with an empty store")
        try:
            self.env = lmdb.open(str(path), map_size=map_size_bytes, max_dbs=len(DATABASES) + 4,
                                 max_readers=512, metasync=True, sync=True)
        except lmdb.InvalidError as e:
            raise StoreError(f"{data} is not a whole LMDB store (truncated or corrupt): {e}") from e
        except lmdb.Error as e:
            raise StoreError(f"opening store at {path}: {e}") from e
        self._check_whole(data)
        self.dbs = {name: self.env.open_db(name.encode()) for name in DATABASES}
        self._names = {db: name for name, db in self.dbs.items()}
        self._check_format()

    def _check_whole(self, data: Path) -> None:
        """Refuse a data file shorter than the pages LMDB's newest meta page says are in use (a
        truncated copy, a torn restore from backup): reading past its end would kill roostd
        with SIGBUS, and no line would say why. Checked before any data page is touched."""
        needed = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        size = data.stat().st_size
        if size < needed:
            self.env.close()
            raise StoreError(f"{data} is truncated or corrupt: LMDB's meta page says it uses "
                             f"{needed} bytes, the file holds {size}; restore the data directory "
                             f"from a copy or move it away")

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def txn(self, what: str, write: bool = False) -> Iterator[Txn]:
        """One transaction (values sealed and checked, see `Txn`); LMDB errors become StoreError
        naming `what`. A write bigger than the reserve that check_room keeps can still fill the
        map: that is StoreFull too, with the same advice, since the user's remedy is the same;
        so is a full disk under the data dir."""
        try:
            with self.env.begin(write=write) as txn:
                yield Txn(txn, self._names, what)
        except lmdb.MapFullError as e:
            raise StoreFull(f"{what}: {FULL_ADVICE} ({e})") from e
        except lmdb.Error as e:
            if self._disk_full(e):
                raise StoreFull(f"{what}: the disk under {self.path} is full: free space there, "
                                f"then roost resume ({e})") from e
            raise StoreError(f"{what}: {e}") from e

    def _disk_full(self, error: lmdb.Error) -> bool:
        """ENOSPC is a full disk; so is an I/O error with (almost) no space left under the data
        dir: LMDB reports a short write of its pages as EIO ("short write, filesystem full?")."""
        if isinstance(error, lmdb.DiskError):
            return True
        if os.strerror(errno.EIO) not in str(error):        # (lmdb's errors carry no errno)
            return False
        try:
            fs = os.statvfs(self.path)
        except OSError:
            return False
        return fs.f_bavail * fs.f_frsize < DISK_FULL_SLACK_BYTES

    def _check_format(self) -> None:
        """Accept the same major version and an older-or-equal minor; stamp a new store; seal
        the values of a format-1 store (see `_seal_all`)."""
        with self.txn("checking store format", write=True) as txn:
            found = self._format(txn)
            if found is None:
                txn.put(b"format", b"%d.%d" % FORMAT_VERSION, db=self.dbs["meta"])
            elif found[0] == UNSEALED_MAJOR:
                self._seal_all(txn)
            elif found[0] != FORMAT_VERSION[0] or found[1] > FORMAT_VERSION[1]:
                raise FormatError(f"store format {found[0]}.{found[1]} is not supported by this "
                                  f"roostd (it reads {FORMAT_VERSION[0]}.0 to {FORMAT_VERSION[0]}."
                                  f"{FORMAT_VERSION[1]}, and seals {UNSEALED_MAJOR}.x)")

    def _format(self, txn: Txn) -> tuple[int, int] | None:
        """(major, minor) of the store; None for a new one. Format 1 stored it unsealed."""
        raw = txn.raw.get(b"format", db=self.dbs["meta"])
        if raw is None:
            return None
        if _LEGACY_FORMAT.fullmatch(raw) is None:
            raw = txn.get(b"format", db=self.dbs["meta"])
        elif not raw.startswith(b"%d." % UNSEALED_MAJOR):
            raise FormatError(f"store format {raw.decode()} is not supported by this roostd")
        major, minor = raw.split(b".")
        return int(major), int(minor)

    def _seal_all(self, txn: Txn) -> None:
        """Format 1 -> 2: rewrite every value with its checksum, in the caller's (one)
        transaction, so a crash or a full map leaves the store as it was, still format 1.
        Values of format 1 carry no checksum: what was damaged before is sealed as it is."""
        for name, db in self.dbs.items():
            cur = txn.raw.cursor(db=db)
            for key, value in cur:
                if not self_checked(name, key):
                    cur.put(key, seal(key, value))
        txn.put(b"format", b"%d.%d" % FORMAT_VERSION, db=self.dbs["meta"])

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
            return txn.has(sha256.encode(), db=self.dbs["modules"])

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
        """Every record that reads back intact; a corrupt one is logged and left out, so one
        damaged record does not stop the daemon listing, or resuming, the others."""
        out = []
        with self.txn("listing executions") as txn:
            cur = txn.cursor(db=self.dbs["executions"])
            for key in cur.iternext(values=False):
                try:
                    out.append(ExecutionRecord.from_json(cur.value()))
                except Corrupt as e:
                    log.error("%s", e)
        return out

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
                for key in cur.iternext(values=False):   # values checked only if they are ours
                    if not key.startswith(prefix):
                        break
                    out.append(cur.value())
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
            for key in cur.iternext(values=False):      # values checked only if they are read
                if not key.startswith(prefix) or total >= limit_bytes:
                    break
                value = cur.value()
                out.append((_SEQ.unpack(key[-8:])[0], value[0], value[1:]))
                total += len(value)
        return out

    # ---- timers ----
    def timers(self) -> dict[str, int]:
        """Every stored wake-up time; a corrupt one is due now (logged): waking a durable sleep
        early restores it inside its poll, which sleeps on from its original start."""
        out = {}
        with self.txn("reading timers") as txn:
            cur = txn.cursor(db=self.dbs["timers"])
            for key in cur.iternext(values=False):
                try:
                    out[key.decode()] = _SEQ.unpack(cur.value())[0]
                except Corrupt as e:
                    log.error("%s: waking it now", e)
                    out[key.decode()] = 0
        return out

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
