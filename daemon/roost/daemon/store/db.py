"""The daemon's one LMDB environment: modules, executions, their logs, inputs and filesystems.

This is the only module that imports `lmdb`; LMDB errors become `StoreError` here. Named
databases: meta, modules, blobs, executions, logs, inputs, vfs, journal, checkpoints, pagemaps,
pages (those three written by `checkpoints`, through this environment) and timers; what their
keys are is `keys`, what their values are: records JSON, module bytes, stdin and filesystems,
output and journal records (`roost.daemon.checkpoint.journal`), checkpoint manifests (see
SNAPSHOT_FORMAT.md), page maps (`checkpoint.pagemap`), page frames (`checkpoint.frames`), host
state (`checkpoint.hoststate`), the guest's stack, and u64 BE unix ns wake-up times.

Every value is stored sealed: its bytes, then a u32 LE crc32 of key and bytes (`seal`) —
but page frames, which carry checksums of their own (`self_checked`).
Every transaction hands out `Txn`, which seals what is put and checks what is read, so no
caller sees the seal and no bit flipped on disk is ever served: the read raises `Corrupt`
naming the database and the key. A store of format 1 (values unsealed) is sealed in one
transaction when this roostd first opens it.

The log key layout keeps one execution's records contiguous and in order, so a replay is one
cursor scan from (id, seq) (`keys.scan`).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from roost.daemon.errors import Corrupt, FormatError, NotFound, StoreError, StoreFull
from roost.daemon.store import keys, logrecord
from roost.daemon.store.keys import scan
from roost.daemon.store.logrecord import LogEntry, LogTail
from roost.daemon.store.records import ExecutionRecord, ModuleRecord

log = logging.getLogger(__name__)
FORMAT_VERSION = (2, 2)          # 2.1: execution records carry allow_http and http_* counts;
#                                  2.2: output records may carry their time (`logrecord`)
UNSEALED_MAJOR = 1          # format 1: the same layout, values without their crc32
RESERVE_FRACTION = 0.95     # bulk writes stop here; the rest is kept for recording outcomes
FULL_ADVICE = "the store is full: raise store.map_size_bytes or free disk space, then roost resume"
DISK_FULL_SLACK_BYTES = 64 << 20    # an I/O error with less free than this is a full disk
DATABASES = ("meta", "modules", "blobs", "executions", "logs", "inputs", "vfs", "journal",
             "checkpoints", "pagemaps", "pages", "timers")
_SEQ = struct.Struct(">Q")
_CRC = struct.Struct("<I")
_LEGACY_FORMAT = re.compile(rb"\d+\.\d+")


log_key = keys.seq             # (the name tests and tools know it by)


def _bytes(raw: bytes | memoryview) -> bytes:
    """What lmdb returned, as bytes: the environment's transactions are begun without
    `buffers=True`, so it is bytes already (lmdb's stubs allow for views too)."""
    return raw if isinstance(raw, bytes) else bytes(raw)


# ---- sealed values: every value carries a crc32 of its key and bytes ----
def seal(key: bytes, value: bytes | memoryview) -> bytes:
    """The value as stored: its bytes, then crc32(key + bytes), so a flipped bit — or a value
    stored under another key — is caught on read. crc32 runs at ~3 GB/s: cheap next to zstd."""
    return b"".join((value, _CRC.pack(zlib.crc32(value, zlib.crc32(key)))))


def self_checked(db: str, key: bytes) -> bool:
    """Page frames (`pages`, keys ending in /f + u32) carry their own checks — a crc32 of their
    index and zstd's XXH64 of their pages, verified by every decode (`snapshot`) — so the
    store neither seals nor checks them again: a crc32 and a copy of every frame made a 512 MiB
    restore ~50 % slower and a full checkpoint's commit ~20 % (bench/checkpoint.py A/B)."""
    return db == "pages" and keys.is_frame(key)


def unseal(db: str, key: bytes, raw: bytes | memoryview, what: str = "reading the store") -> bytes:
    """The bytes of a stored value, after checking its crc32; Corrupt (naming the database and
    the key) instead of ever serving bytes that changed on disk."""
    body = memoryview(raw)[:-_CRC.size]
    stored = _CRC.unpack_from(raw, len(body))[0] if len(raw) >= _CRC.size else None
    if stored != zlib.crc32(body, zlib.crc32(key)):
        raise Corrupt(f"{what}: the {db} record {describe_key(key)} is corrupt (it fails its "
                      f"checksum); it is not served")
    return bytes(body)


describe_key = keys.describe


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
        return _bytes(self.raw.key())

    def value(self) -> bytes:
        return self._checked(self.raw.key(), self.raw.value())

    def _checked(self, key: bytes | memoryview, raw: bytes | memoryview) -> bytes:
        key = _bytes(key)
        return _bytes(raw) if self_checked(self.db, key) else unseal(self.db, key, raw, self.what)

    def delete(self) -> bool:
        return self.raw.delete()

    def iternext(self, keys: bool = True, values: bool = True) -> Iterator:
        """As lmdb's: keys, values (checked) or (key, value) pairs."""
        if not values:
            if not keys:
                raise ValueError("iternext: keys, values or both")
            return (_bytes(k) for k in self.raw.iternext(keys=True, values=False))
        pairs = ((_bytes(k), self._checked(k, v)) for k, v in self.raw.iternext(keys=True, values=True))
        return pairs if keys else (v for _, v in pairs)

    def __iter__(self) -> Iterator:
        return self.iternext()


class Store:
    """Typed access to the LMDB environment; every method is one transaction."""

    def __init__(self, path: Path, map_size_bytes: int, readonly: bool = False) -> None:
        """`readonly`: a tool's view of a live daemon's store (bench, tests), which it may
        read while the daemon writes (LMDB's readers); nothing is created or stamped."""
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        self.path = path
        data = path / "data.mdb"
        if data.exists() and data.stat().st_size == 0:     # LMDB would start an empty store
            raise StoreError(f"{data} is empty (truncated?): restore the data directory from a "
                             f"copy, or remove the file to start with an empty store")
        try:
            self.env = lmdb.open(str(path), map_size=map_size_bytes, max_dbs=len(DATABASES) + 4,
                                 max_readers=512, metasync=True, sync=True, readonly=readonly)
        except lmdb.InvalidError as e:
            raise StoreError(f"{data} is not a whole LMDB store (truncated or corrupt): {e}") from e
        except lmdb.Error as e:
            raise StoreError(f"opening store at {path}: {e}") from e
        self._check_whole(data)
        try:
            self.dbs = {name: self.env.open_db(name.encode(), create=not readonly)
                        for name in DATABASES}
        except lmdb.Error as e:
            self.env.close()
            raise StoreError(f"opening store at {path}: {e}") from e
        self._names = {db: name for name, db in self.dbs.items()}
        if readonly:
            self._check_readable()
        else:
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
                txn.put(keys.FORMAT, b"%d.%d" % FORMAT_VERSION, db=self.dbs["meta"])
            elif found[0] == UNSEALED_MAJOR:
                self._seal_all(txn)
            elif found[0] != FORMAT_VERSION[0] or found[1] > FORMAT_VERSION[1]:
                raise FormatError(f"store format {found[0]}.{found[1]} is not supported by this "
                                  f"roostd (it reads {FORMAT_VERSION[0]}.0 to {FORMAT_VERSION[0]}."
                                  f"{FORMAT_VERSION[1]}, and seals {UNSEALED_MAJOR}.x)")
            elif found < FORMAT_VERSION:
                self._stamp_newer(txn, found)

    def _stamp_newer(self, txn: Txn, found: tuple[int, int]) -> None:
        """An older minor is read as it is, but what this roostd writes from now on is of its
        own minor (e.g. timed output records, 2.2): stamp it, so an older roostd refuses the
        store with one line instead of misreading it."""
        txn.put(keys.FORMAT, b"%d.%d" % FORMAT_VERSION, db=self.dbs["meta"])
        log.info("store format %d.%d is now %d.%d (an older roostd will not open it)",
                 *found, *FORMAT_VERSION)

    def _check_readable(self) -> None:
        """A read-only view reads only a store this roostd would (sealed: format 2.x)."""
        with self.txn("checking store format") as txn:
            found = self._format(txn)
        if found is None or found[0] != FORMAT_VERSION[0] or found[1] > FORMAT_VERSION[1]:
            raise FormatError(f"store format {found} cannot be read here: open it with this "
                              "roostd first")

    def _format(self, txn: Txn) -> tuple[int, int] | None:
        """(major, minor) of the store; None for a new one. Format 1 stored it unsealed."""
        stored = txn.raw.get(keys.FORMAT, db=self.dbs["meta"])
        if stored is None:
            return None
        raw = _bytes(stored)
        if _LEGACY_FORMAT.fullmatch(raw) is None:
            raw = txn.get(keys.FORMAT, db=self.dbs["meta"])
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
                if not self_checked(name, _bytes(key)):
                    cur.put(key, seal(_bytes(key), value))
        txn.put(keys.FORMAT, b"%d.%d" % FORMAT_VERSION, db=self.dbs["meta"])

    def node_id(self, current: str) -> str:
        """The node id this store was last used by; `current` from now on."""
        with self.txn("recording the node id", write=True) as txn:
            previous = txn.get(keys.NODE_ID, db=self.dbs["meta"])
            txn.put(keys.NODE_ID, current.encode(), db=self.dbs["meta"])
        return previous.decode() if previous is not None else current

    # ---- modules ----
    def put_module(self, record: ModuleRecord, data: bytes) -> None:
        with self.txn(f"storing module {record.sha256}", write=True) as txn:
            txn.put(keys.module(record.sha256), bytes(data), db=self.dbs["blobs"])
            txn.put(keys.module(record.sha256), record.to_json(), db=self.dbs["modules"])

    def get_module(self, sha256: str) -> ModuleRecord:
        with self.txn(f"reading module {sha256}") as txn:
            raw = txn.get(keys.module(sha256), db=self.dbs["modules"])
        if raw is None:
            raise NotFound(f"module {sha256} not found")
        return ModuleRecord.from_json(raw)

    def has_module(self, sha256: str) -> bool:
        with self.txn(f"reading module {sha256}") as txn:
            return txn.has(keys.module(sha256), db=self.dbs["modules"])

    def module_bytes(self, sha256: str) -> bytes:
        with self.txn(f"reading module bytes {sha256}") as txn:
            raw = txn.get(keys.module(sha256), db=self.dbs["blobs"])
        if raw is None:
            raise NotFound(f"module {sha256} not found")
        return raw

    def list_modules(self) -> list[ModuleRecord]:
        with self.txn("listing modules") as txn:
            return [ModuleRecord.from_json(v) for _, v in txn.cursor(db=self.dbs["modules"])]

    # ---- executions ----
    def create_execution(self, record: ExecutionRecord, stdin: bytes, vfs: bytes) -> None:
        """Record, inputs and initial filesystem land together or not at all."""
        key = keys.execution(record.id)
        with self.txn(f"creating execution {record.id}", write=True) as txn:
            if not txn.put(key, record.to_json(), db=self.dbs["executions"], overwrite=False):
                raise StoreError(f"creating execution {record.id}: id already exists")
            txn.put(keys.stdin(record.id), stdin, db=self.dbs["inputs"])
            txn.put(keys.initial_vfs(record.id), vfs, db=self.dbs["inputs"])
            txn.put(key, vfs, db=self.dbs["vfs"])

    def put_execution_in(self, txn, record: ExecutionRecord) -> None:
        """The record, in the caller's transaction."""
        txn.put(keys.execution(record.id), record.to_json(), db=self.dbs["executions"])

    def put_execution(self, record: ExecutionRecord, vfs: bytes | memoryview | None = None,
                      clear_timer: bool = False, unless_newer: bool = False) -> bool:
        """Write the record (and the final filesystem); with `unless_newer`, not over one at a
        newer epoch (read and written in one transaction). Whether it wrote."""
        key = keys.execution(record.id)
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

    def change_execution_in(self, txn, exec_id: str,
                            change: Callable[[ExecutionRecord], None]) -> None:
        """Read, `change` and write the record in the caller's transaction (if it exists)."""
        record = self._read_execution(txn, exec_id)
        if record is not None:
            change(record)
            self.put_execution_in(txn, record)

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
        raw = txn.get(keys.execution(exec_id), db=self.dbs["executions"])
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
            return txn.get(keys.stdin(exec_id), b"", db=self.dbs["inputs"])

    def initial_vfs(self, exec_id: str) -> bytes:
        with self.txn(f"reading the initial filesystem of {exec_id}") as txn:
            raw = txn.get(keys.initial_vfs(exec_id), db=self.dbs["inputs"])
        if raw is None:
            raise NotFound(f"execution {exec_id} has no initial filesystem")
        return raw

    def vfs(self, exec_id: str) -> bytes:
        with self.txn(f"reading filesystem of {exec_id}") as txn:
            raw = txn.get(keys.execution(exec_id), db=self.dbs["vfs"])
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
               journal_seq: int, journal: list[bytes], time_ns: int | None = None) -> None:
        """Journal records, then output, then the record's counters: one transaction, so
        durable output never depends on a journal record that is not durable. The output
        records carry `time_ns` (default: now, as this transaction makes them durable)."""
        self.check_room(f"appending output of {record.id}")
        stamp = time.time_ns() if time_ns is None else time_ns
        with self.txn(f"appending output of {record.id}", write=True) as txn:
            for i, raw in enumerate(journal):
                txn.put(keys.seq(record.id, journal_seq + i), raw, db=self.dbs["journal"])
            for i, (stream, data) in enumerate(chunks):
                txn.put(keys.seq(record.id, log_seq + i), logrecord.encode(stream, data, stamp),
                        db=self.dbs["logs"])
            txn.put(keys.execution(record.id), record.to_json(), db=self.dbs["executions"])

    def put_records(self, txn, exec_id: str, logs: list[tuple[int, bytes]],
                    journal: list[tuple[int, bytes]]) -> None:
        """Output and journal records at the seqs their owner gave them (a replica's), in the
        caller's transaction."""
        for seq, raw in logs:
            txn.put(keys.seq(exec_id, seq), raw, db=self.dbs["logs"])
        for seq, raw in journal:
            txn.put(keys.seq(exec_id, seq), raw, db=self.dbs["journal"])

    def next_seq(self, db: str, exec_id: str) -> int:
        """One past the last seq stored for `exec_id` in `db` ("logs" or "journal")."""
        with self.txn(f"reading {db} of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs[db])
            ok = cur.prev() if cur.set_range(keys.seq(exec_id, keys.LAST)) else cur.last()
            if ok and cur.key().startswith(keys.prefix(exec_id)):
                return keys.seq_of(cur.key()) + 1
        return 0

    def read_journal(self, exec_id: str, from_seq: int) -> list[bytes]:
        with self.txn(f"reading journal of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["journal"])
            return [cur.value() for _ in scan(cur, keys.seq(exec_id, from_seq), keys.prefix(exec_id))]

    def read_journal_range(self, exec_id: str, from_seq: int, until_seq: int, limit_bytes: int
                           ) -> list[bytes]:
        """The journal records [from_seq, until_seq), up to about `limit_bytes` (at least one):
        a replay streams its journal a range at a time, never all of it in memory."""
        out: list[bytes] = []
        total = 0
        with self.txn(f"reading journal of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["journal"])
            for key in scan(cur, keys.seq(exec_id, from_seq), keys.prefix(exec_id)):
                if keys.seq_of(key) >= until_seq or (out and total >= limit_bytes):
                    break
                value = cur.value()
                out.append(value)
                total += len(value) + 4
        return out

    def read_logs(self, exec_id: str, from_seq: int, limit_bytes: int = 4 << 20
                  ) -> list[tuple[int, int, bytes]]:
        """Records (seq, stream, data) from `from_seq` on, up to about `limit_bytes`."""
        return [(e.seq, e.stream, e.data) for e in self.read_output(exec_id, from_seq, limit_bytes)]

    def read_output(self, exec_id: str, from_seq: int, limit_bytes: int = 4 << 20
                    ) -> list[LogEntry]:
        """Records (seq, stream, data, time_ns) from `from_seq` on, up to about `limit_bytes`."""
        out: list[LogEntry] = []
        total = 0
        with self.txn(f"reading logs of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["logs"])
            for key in scan(cur, keys.seq(exec_id, from_seq), keys.prefix(exec_id)):
                if total >= limit_bytes:                # values checked only if they are read
                    break
                value = cur.value()
                out.append(LogEntry(keys.seq_of(key), *logrecord.decode(value, keys.describe(key))))
                total += len(value)
        return out

    def log_start(self, exec_id: str, stream: int, tail: int | None, since_ns: int | None,
                  until_seq: int | None = None) -> tuple[int, int]:
        """Where `logs --tail/--since` starts: (seq, bytes of that record's data to skip).
        Scans back from the end (or `until_seq`, exclusive), reading only the records it
        selects — the last `tail` lines of `stream` (0: both; a last line without its newline
        counts), and only records made durable at or after `since_ns` (one without a time
        is older) — so the tail of a long log costs what it returns."""
        end = self.next_seq("logs", exec_id) if until_seq is None else until_seq
        found = LogTail(end, tail, since_ns)
        with self.txn(f"finding the tail of the logs of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["logs"])
            ok = cur.prev() if cur.set_range(keys.seq(exec_id, end)) else cur.last()
            while ok and cur.key().startswith(keys.prefix(exec_id)) and not found.done:
                value = cur.value()
                if not stream or logrecord.stream_of(value) == stream:
                    found.back(keys.seq_of(cur.key()), logrecord.decode(value, keys.describe(cur.key())))
                ok = cur.prev()
        return found.start

    def log_totals(self, exec_id: str) -> tuple[int, int]:
        """The bytes of stdout and of stderr stored for the execution (a replica taking over
        counts what it holds: the offsets below which a restored guest's output is not
        stored again)."""
        totals = [0, 0, 0]
        with self.txn(f"counting the output of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["logs"])
            for _ in scan(cur, keys.seq(exec_id, 0), keys.prefix(exec_id)):
                value = cur.value()
                totals[2 if logrecord.stream_of(value) == 2 else 1] += logrecord.data_size(value)
        return totals[1], totals[2]

    def read_tail(self, exec_id: str, log_from: int, journal_from: int, limit_bytes: int
                  ) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        """The output records from `log_from` and the journal records from `journal_from`,
        as stored — (seq, `logrecord` value) and (seq, record) — up to about `limit_bytes`,
        read in one transaction: every output record read has the journal records it
        depends on (`append` stores them first) among those read or earlier ones."""
        logs: list[tuple[int, bytes]] = []
        journal: list[tuple[int, bytes]] = []
        total = 0
        with self.txn(f"reading the tail of {exec_id}") as txn:
            cur = txn.cursor(db=self.dbs["journal"])
            for key in scan(cur, keys.seq(exec_id, journal_from), keys.prefix(exec_id)):
                if total >= limit_bytes:
                    return logs, journal       # (no output: it may depend on what was left)
                journal.append((keys.seq_of(key), cur.value()))
                total += len(journal[-1][1])
            cur = txn.cursor(db=self.dbs["logs"])
            for key in scan(cur, keys.seq(exec_id, log_from), keys.prefix(exec_id)):
                if total >= limit_bytes and logs:
                    break
                logs.append((keys.seq_of(key), cur.value()))
                total += len(logs[-1][1])
        return logs, journal

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
            txn.delete(keys.execution(exec_id), db=self.dbs["timers"])

    # ---- removal (roost rm, prune, modules rm, retention) ----
    def used_bytes(self) -> int:
        """Bytes of LMDB pages that hold data now (every named database's branch, leaf and
        overflow pages). The file never shrinks, but pages a removal frees go back to LMDB's
        free list for reuse: this is what `rm` and `prune` report as freed."""
        total = 0
        with self.txn("measuring the store") as txn:
            for db in self.dbs.values():
                s = txn.raw.stat(db)
                total += s["psize"] * (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"])
        return total

    def delete_execution(self, exec_id: str) -> bool:
        """Every record of the execution — its record, inputs, filesystem, timer, output,
        journal, checkpoints, page maps and pages — in one transaction: all of it goes, or
        nothing does. Whether it was there."""
        key = keys.execution(exec_id)
        with self.txn(f"removing execution {exec_id}", write=True) as txn:
            found = txn.delete(key, db=self.dbs["executions"])
            for db in ("vfs", "timers"):
                txn.delete(key, db=self.dbs[db])
            delete_range(txn, self.dbs["inputs"], key + b"/", key + b"0")   # stdin, vfs ('/'+1)
            for db in ("logs", "journal", "checkpoints", "pagemaps", "pages"):
                delete_range(txn, self.dbs[db], keys.prefix(exec_id), keys.end(exec_id))
        return found

    def execution_bytes(self, exec_id: str) -> int:
        """The bytes (keys and values, as stored) of every record of the execution: what a dry
        run of `prune` says removing it would free, about."""
        key, total = keys.execution(exec_id), 0
        ranges = [(db, key, key + b"\x00") for db in ("executions", "vfs", "timers")]
        ranges += [("inputs", key + b"/", key + b"0")]
        ranges += [(db, keys.prefix(exec_id), keys.end(exec_id))
                   for db in ("logs", "journal", "checkpoints", "pagemaps", "pages")]
        with self.txn(f"measuring execution {exec_id}") as txn:
            for db, start, end in ranges:
                cur = txn.raw.cursor(db=self.dbs[db])
                if not cur.set_range(start):
                    continue
                for k, v in cur.iternext(keys=True, values=True):
                    if _bytes(k) >= end:
                        break
                    total += len(k) + len(v)
        return total

    def delete_module(self, sha256: str) -> bool:
        """A module's record and its bytes, in one transaction. Whether it was there."""
        with self.txn(f"removing module {sha256}", write=True) as txn:
            found = txn.delete(keys.module(sha256), db=self.dbs["modules"])
            txn.delete(keys.module(sha256), db=self.dbs["blobs"])
        return found

    def module_ids(self) -> list[str]:
        """Every stored module's sha256 (keys only: no record is read)."""
        with self.txn("listing modules") as txn:
            cur = txn.cursor(db=self.dbs["modules"])
            return [k.decode() for k in cur.iternext(values=False)]


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
