"""Checkpoints in the store: manifests, page maps (index) and page frames (bytes), apart.

A checkpoint stores only the pages written since the previous one, in frames (`snapshot`), and
a page map saying, for every page, which checkpoint holds its latest version (`pagemap`). A
restore reads the map, then for each version it names, that version's frames, and writes each
page from exactly one version. Versions no retained checkpoint's map refers to are deleted, in
the same transaction that writes the checkpoint; so are maps no retained chain needs, and
journal records older than the oldest retained checkpoint.

A large checkpoint's frames arrive in parts while the worker still compresses the rest; each
part is written in a transaction of its own (`put_frames`), so the disk writes while the
worker compresses. Those frames are invisible until the checkpoint's manifest commits (`commit`):
nothing reads a version no manifest names. Frames of a checkpoint that never committed (its
worker or roostd died) are deleted before the next worker starts (`discard_after`) and again
by the first part of the next attempt at that number.

`PageStore` is the LMDB backend of `checkpoint.transfer`: a sink (`put_frames`, `commit`,
`put_records`) and the source of any checkpoint it holds (`source`).
"""
from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from roost.daemon.checkpoint import manifest as manifests
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.checkpoint.transfer import COMMITTED, Commit, Records, Uncommitted
from roost.daemon.errors import NotFound, StoreError
from roost.daemon.store import keys
from roost.daemon.store.db import Store, delete_prefix, delete_range
from roost.daemon.store.keys import scan
from roost.daemon.store.records import ExecutionRecord

__all__ = ["COMMITTED", "Commit", "PageStore", "Records", "Restore", "Uncommitted"]
_SEQ = struct.Struct(">Q")             # (a timer's value)


@dataclass
class Restore:
    """Everything a worker needs to rebuild a checkpoint."""
    manifest: Manifest
    page_map: PageMap
    frames: list[tuple[int, bytes]]       # (version, frame) for every version the map names
    host: bytes
    stack: bytes


class PageStore:
    """Checkpoints in LMDB: the sink every commit goes through and the source of any stored
    checkpoint."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dbs = store.dbs
        # (execution, checkpoint) -> versions its map refers to, for the retained checkpoints:
        # garbage collection needs them at every checkpoint, and rebuilding them means decoding
        # a map chain of up to 512 K entries per retained checkpoint.
        self._referenced: dict[tuple[str, int], frozenset[int]] = {}
        # The two newest maps stored per execution, decoded (read-only): replication,
        # migration (a delta from the previous round's map) and the next checkpoint's delta
        # start from them, and decoding a chain means up to 512 K entries a time.
        self._recent_maps: dict[str, list[tuple[int, PageMap]]] = {}

    def put_frames(self, exec_id: str, number: int, first: int,
                   frames: Sequence[bytes | memoryview]) -> None:
        """Store frames `first`, `first+1`, ... of checkpoint `number`, not yet committed."""
        self.store.check_room(f"storing pages of checkpoint {number} of {exec_id}")
        with self.store.txn(f"storing pages of checkpoint {number} of {exec_id}", write=True) as txn:
            if first == 0:                 # a torn earlier attempt at this number
                delete_prefix(txn, self.dbs["pages"], keys.version(exec_id, number))
            self._put_frames(txn, exec_id, number, first, frames)

    def _put_frames(self, txn, exec_id: str, number: int, first: int,
                    frames: Sequence[bytes | memoryview]) -> None:
        for i, frame in enumerate(frames, first):
            txn.put(keys.frame(exec_id, number, i), frame, db=self.dbs["pages"])

    def discard_after(self, exec_id: str, number: int) -> None:
        """Delete the frames of checkpoints after `number` (started, never committed)."""
        with self.store.txn(f"discarding unfinished checkpoints of {exec_id}", write=True) as txn:
            delete_range(txn, self.dbs["pages"], keys.seq(exec_id, number + 1), keys.end(exec_id))

    def put(self, record: ExecutionRecord, manifest: Manifest, frames: Sequence[bytes | memoryview],
            host: bytes, stack: bytes, page_map: PageMap, delta: pagemap.Delta | None,
            retain: int, wake_at_ns: int = 0, streamed: int = 0,
            referenced: frozenset[int] | None = None, hurry: bool = False,
            stats: CheckpointStats | None = None) -> Manifest:
        """`commit`, its parts as arguments."""
        return self.commit(Commit(record, manifest, host, stack, page_map, delta, frames,
                                  streamed, retain, wake_at_ns, referenced, hurry,
                                  stats=stats or CheckpointStats()))

    def commit(self, c: Commit) -> Manifest:
        """Commit one checkpoint with its map (delta or compacted full), the record that counts
        it, its durable-sleep timer and a replica's output and journal records; garbage-collect
        in the same transaction (unless `c.hurry`). See `Commit`. Returns the manifest as
        stored: `c.manifest` completed with how its map is chained."""
        exec_id, number = c.exec_id, c.number
        self.store.check_room(f"storing checkpoint {number} of {exec_id}")
        with self.store.txn(f"storing checkpoint {number} of {exec_id}", write=True) as txn:
            if c.streamed and not txn.has(keys.frame(exec_id, number, c.streamed - 1),
                                          db=self.dbs["pages"]):
                raise StoreError(f"checkpoint {number} of {exec_id}: its streamed pages are missing")
            manifest, raw = self._chain(txn, c)
            if not c.streamed:
                delete_prefix(txn, self.dbs["pages"], keys.version(exec_id, number))
            self._put_frames(txn, exec_id, number, c.streamed, c.frames)
            txn.put(keys.host(exec_id, number), c.host, db=self.dbs["pages"])
            txn.put(keys.stack(exec_id, number), c.stack, db=self.dbs["pages"])
            txn.put(keys.seq(exec_id, number), raw, db=self.dbs["pagemaps"])
            txn.put(keys.seq(exec_id, number), manifest.to_json(c.stats),
                    db=self.dbs["checkpoints"])
            self.store.put_execution_in(txn, c.record)
            if c.wake_at_ns:
                txn.put(keys.execution(exec_id), _SEQ.pack(c.wake_at_ns), db=self.dbs["timers"])
            if c.records:
                self.store.put_records(txn, exec_id, list(c.records.logs), list(c.records.journal))
            referenced = c.referenced
            if referenced is None:
                referenced = frozenset(c.page_map.referenced())
            if not c.hurry:
                self._collect_garbage(txn, exec_id, c.retain, (number, referenced))
        self._referenced[(exec_id, number)] = referenced
        recent = [(n, m) for n, m in self._recent_maps.get(exec_id, []) if n != number]
        self._recent_maps[exec_id] = (recent + [(number, c.page_map)])[-2:]
        return manifest

    def _chain(self, txn, c: Commit) -> tuple[Manifest, bytes]:
        """The map to store: a delta from the previous checkpoint's, or — the chain long enough
        that a restore would decode more deltas than the map holds, or COMPACT_EVERY after its
        full map — a compacted full one (never in a hurry). The manifest notes the choice."""
        exec_id, number, page_map = c.exec_id, c.number, c.page_map
        prev = self._manifest(txn, exec_id, number - 1)
        delta = c.delta
        if delta is None:
            delta = pagemap.difference(self._map(txn, exec_id, number - 1), page_map) \
                if prev is not None else pagemap.difference(PageMap(), page_map)
        full = prev is None or not c.hurry and (
            number - _map_base(prev) >= pagemap.COMPACT_EVERY
            or 2 * ((prev.chain_entries or 0) + len(delta)) > page_map.pages)
        raw = pagemap.encode_full(page_map) if full else pagemap.encode_delta(page_map.pages, delta)
        if prev is None or full:
            map_base, chain_entries = number, 0
        else:
            map_base, chain_entries = _map_base(prev), (prev.chain_entries or 0) + len(delta)
        manifest = dataclasses.replace(c.manifest, map_base=map_base,
                                       chain_entries=chain_entries, map_bytes=len(raw))
        return manifest, raw

    def put_records(self, exec_id: str, records: Records,
                    record: ExecutionRecord | None = None,
                    change: Callable[[ExecutionRecord], None] | None = None) -> None:
        """A replica's output and journal records (and its record, or a `change` to the
        record as stored, read and written in the same transaction: a handover's PREPARE
        landing meanwhile is kept), in one transaction."""
        self.store.check_room(f"storing output pushed for {exec_id}")
        with self.store.txn(f"storing records pushed for {exec_id}", write=True) as txn:
            if records:
                self.store.put_records(txn, exec_id, list(records.logs), list(records.journal))
            if record is not None:
                self.store.put_execution_in(txn, record)
            if change is not None:
                self.store.change_execution_in(txn, exec_id, change)

    def source(self, record: ExecutionRecord, number: int) -> Uncommitted:
        """Checkpoint `number` as a source (its record as `record` says now): committed
        already, every frame comes from the store. NotFound if it is gone."""
        exec_id = record.id
        checkpoint = self.checkpoint(exec_id, number)
        if checkpoint is None:
            raise NotFound(f"checkpoint {number} of {exec_id} is gone")
        manifest, stats = checkpoint
        stored = Uncommitted(exec_id, number, manifest, self.page_map(exec_id, number),
                             self.host_state(exec_id, number), self.stack(exec_id, number),
                             [], COMMITTED, record.to_json(), self.referenced(exec_id, number),
                             reader=self, stats=stats)
        stored.committed.set_result(None)
        return stored

    def _collect_garbage(self, txn, exec_id: str, retain: int,
                         new: tuple[int, frozenset[int]]) -> None:
        numbers = self._numbers(txn, exec_id)
        kept = numbers[-retain:]
        needed_maps = min(_map_base(self._stored(txn, exec_id, n)) for n in kept)
        referenced: set[int] = set(kept)
        for n in kept:
            referenced |= new[1] if n == new[0] else self._referenced_by(txn, exec_id, n)
        # Versions as the pages hold them, not as manifests name them: a replica holds frames
        # of versions it never had a checkpoint of (pushed because a newer map names them).
        for n in self._versions(txn, exec_id):
            if n not in referenced:
                delete_prefix(txn, self.dbs["pages"], keys.version(exec_id, n))
            elif n not in kept:                  # its pages live on; its host state does not
                txn.delete(keys.host(exec_id, n), db=self.dbs["pages"])
                txn.delete(keys.stack(exec_id, n), db=self.dbs["pages"])
        for n in numbers:
            if n not in kept:
                self._referenced.pop((exec_id, n), None)
            if n < needed_maps and n not in referenced:
                txn.delete(keys.seq(exec_id, n), db=self.dbs["pagemaps"])
                txn.delete(keys.seq(exec_id, n), db=self.dbs["checkpoints"])
        oldest = self._stored(txn, exec_id, kept[0])
        delete_range(txn, self.dbs["journal"], keys.seq(exec_id, 0),
                     keys.seq(exec_id, oldest.journal_seq))

    def referenced(self, exec_id: str, number: int) -> frozenset[int]:
        """The versions checkpoint `number`'s map needs (kept from its commit: counting them
        walks the whole map, ~1 ms per GiB of memory)."""
        key = (exec_id, number)
        if key in self._referenced:
            return self._referenced[key]
        with self.store.txn(f"reading the page map of {exec_id} checkpoint {number}") as txn:
            return self._referenced_by(txn, exec_id, number)

    def _referenced_by(self, txn, exec_id: str, number: int) -> frozenset[int]:
        key = (exec_id, number)
        if key not in self._referenced:
            self._referenced[key] = frozenset(self._map(txn, exec_id, number).referenced())
        return self._referenced[key]

    def _versions(self, txn, exec_id: str, upto: int = (1 << 64) - 1) -> list[int]:
        """Checkpoint numbers with anything under `pages` (up to `upto`): one seek each."""
        prefix = keys.prefix(exec_id)
        cur = txn.cursor(db=self.dbs["pages"])
        out, n = [], 0
        while n <= upto and cur.set_range(keys.seq(exec_id, n)):
            key = cur.key()
            if not key.startswith(prefix):
                break
            n = keys.number_in(key, exec_id)
            if n > upto:
                break
            out.append(n)
            n += 1
        return out

    def held_versions(self, exec_id: str) -> list[int]:
        """Versions whose frames this store holds complete: those its committed checkpoints'
        maps name (a push that broke off left frames no committed map names)."""
        with self.store.txn(f"reading checkpoints of {exec_id}") as txn:
            held: set[int] = set()
            for n in self._numbers(txn, exec_id):
                if txn.get(keys.seq(exec_id, n), db=self.dbs["pagemaps"]) is not None:
                    try:
                        held |= self._referenced_by(txn, exec_id, n)
                    except NotFound:             # an old map whose chain is collected
                        continue
            present = set(self._versions(txn, exec_id))
            return sorted(held & present)

    def iter_frames(self, exec_id: str, version: int,
                    batch_bytes: int = 8 << 20) -> Iterator[tuple[int, bytes]]:
        """(index, frame) of a version, read in short transactions (a push of GiBs must not hold
        one read transaction open: it would keep LMDB from reusing freed pages meanwhile)."""
        index = 0
        while True:
            batch: list[tuple[int, bytes]] = []
            size = 0
            with self.store.txn(f"reading frames of {exec_id} version {version}") as txn:
                cur = txn.cursor(db=self.dbs["pages"])
                for key in scan(cur, keys.frame(exec_id, version, index), keys.frames(exec_id, version)):
                    if size >= batch_bytes:
                        break
                    value = cur.value()
                    batch.append((keys.frame_index(key), value))
                    size += len(value)
            if not batch:
                return
            yield from batch
            index = batch[-1][0] + 1

    def page_map(self, exec_id: str, number: int) -> PageMap:
        with self.store.txn(f"reading the page map of {exec_id} checkpoint {number}") as txn:
            return self._map(txn, exec_id, number)

    def manifest(self, exec_id: str, number: int) -> Manifest | None:
        """Checkpoint `number`'s manifest (None: no such checkpoint)."""
        checkpoint = self.checkpoint(exec_id, number)
        return checkpoint[0] if checkpoint is not None else None

    def checkpoint(self, exec_id: str, number: int) -> tuple[Manifest, CheckpointStats] | None:
        """Checkpoint `number`'s manifest and the stats stored with it (None: no such one)."""
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            raw = txn.get(keys.seq(exec_id, number), db=self.dbs["checkpoints"])
            return manifests.read(raw) if raw is not None else None

    def _numbers(self, txn, exec_id: str) -> list[int]:
        cur = txn.cursor(db=self.dbs["checkpoints"])
        return [keys.seq_of(key) for key in scan(cur, keys.prefix(exec_id), keys.prefix(exec_id))]

    def _manifest(self, txn, exec_id: str, number: int) -> Manifest | None:
        raw = txn.get(keys.seq(exec_id, number), db=self.dbs["checkpoints"])
        return Manifest.from_json(raw) if raw is not None else None

    def _stored(self, txn, exec_id: str, number: int) -> Manifest:
        """The manifest of a checkpoint listed in this transaction (StoreError if it is not:
        the store lost what it just listed)."""
        manifest = self._manifest(txn, exec_id, number)
        if manifest is None:
            raise StoreError(f"checkpoint {number} of {exec_id}: its manifest is missing")
        return manifest

    def _map(self, txn, exec_id: str, number: int) -> PageMap:
        """The full map of checkpoint `number`: its chain's full map plus the deltas after it
        (read-only: the newest one is shared)."""
        for n, cached in self._recent_maps.get(exec_id, []):
            if n == number:
                return cached
        manifest = self._manifest(txn, exec_id, number)
        if manifest is None:
            raise NotFound(f"checkpoint {number} of {exec_id} is gone")
        result: PageMap | None = None
        for n in range(_map_base(manifest), number + 1):
            raw = txn.get(keys.seq(exec_id, n), db=self.dbs["pagemaps"])
            if raw is None:
                raise NotFound(f"page map of checkpoint {n} of {exec_id} is missing")
            result = pagemap.decode(bytes(raw), result)
        if result is None:               # (a chain's base after its checkpoint: never stored)
            raise StoreError(f"checkpoint {number} of {exec_id}: its map chain starts at "
                             f"{_map_base(manifest)}")
        return result

    # ---- reading ----
    def latest(self, exec_id: str) -> Manifest | None:
        """The manifest of the newest checkpoint that can be restored (host state present)."""
        numbers = self.restorable(exec_id)
        return self.manifest(exec_id, numbers[0]) if numbers else None

    def restorable(self, exec_id: str) -> list[int]:
        """The checkpoints that have their host state (the retained ones), newest first: a
        restore that finds one corrupt goes on to the next (the journal is kept from the
        oldest retained checkpoint on)."""
        with self.store.txn(f"reading checkpoints of {exec_id}") as txn:
            return [n for n in reversed(self._numbers(txn, exec_id))
                    if txn.has(keys.host(exec_id, n), db=self.dbs["pages"])]

    def drop_newest(self, exec_id: str, number: int) -> None:
        """Delete checkpoint `number` and every later one — manifests, maps, frames, host state
        — after one was found corrupt: the restore goes on from an older one. Frames of these
        versions only newer maps name. The numbers are not reused (the supervisor numbers the
        next checkpoint after them): a replica may still hold the dropped ones."""
        what = f"dropping corrupt checkpoint {number} of {exec_id}"
        with self.store.txn(what, write=True) as txn:
            for db in ("pages", "pagemaps", "checkpoints"):
                delete_range(txn, self.dbs[db], keys.seq(exec_id, number), keys.end(exec_id))
        recent = self._recent_maps.get(exec_id, [])
        self._recent_maps[exec_id] = [(n, m) for n, m in recent if n < number]
        for key in [k for k in self._referenced if k[0] == exec_id and k[1] >= number]:
            del self._referenced[key]

    def stack(self, exec_id: str, number: int) -> bytes:
        return self._blob(keys.stack(exec_id, number), exec_id, number, "stack")

    def host_state(self, exec_id: str, number: int) -> bytes:
        return self._blob(keys.host(exec_id, number), exec_id, number, "host state")

    def _blob(self, key: bytes, exec_id: str, number: int, what: str) -> bytes:
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            raw = txn.get(key, db=self.dbs["pages"])
        if raw is None:
            raise NotFound(f"checkpoint {number} of {exec_id} has no {what}")
        return bytes(raw)

    def load(self, exec_id: str, number: int) -> Restore:
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            manifest = self._manifest(txn, exec_id, number)
            host = txn.get(keys.host(exec_id, number), db=self.dbs["pages"])
            stack = txn.get(keys.stack(exec_id, number), db=self.dbs["pages"])
            if manifest is None or host is None or stack is None:
                raise NotFound(f"checkpoint {number} of {exec_id} is incomplete")
            page_map = self._map(txn, exec_id, number)
            frames: list[tuple[int, bytes]] = []
            for version in sorted(page_map.referenced()):
                frames += [(version, f) for f in self._frames(txn, exec_id, version)]
            return Restore(manifest, page_map, frames, bytes(host), bytes(stack))

    def _frames(self, txn, exec_id: str, version: int) -> list[bytes]:
        cur = txn.cursor(db=self.dbs["pages"])
        within = keys.frames(exec_id, version)
        return [cur.value() for _ in scan(cur, within, within)]


def _map_base(manifest: Manifest) -> int:
    """Where a stored manifest's map chain starts (every stored one has it: the store sets it)."""
    if manifest.map_base is None:
        raise StoreError(f"checkpoint {manifest.number}: its manifest has no map_base")
    return manifest.map_base
