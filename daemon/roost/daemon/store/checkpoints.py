"""Checkpoints in the store: manifests, page maps (index) and page frames (bytes), apart.

A checkpoint stores only the pages written since the previous one, in frames (`snapshot`), and
a page map saying, for every page, which checkpoint holds its latest version (`pagemap`). A
restore reads the map, then for each version it names, that version's frames, and writes each
page from exactly one version. Versions no retained checkpoint's map refers to are deleted, in
the same transaction that writes the checkpoint; so are maps no retained chain needs, and
journal records older than the oldest retained checkpoint.

A large checkpoint's frames arrive in parts while the worker still compresses the rest; each
part is written in a transaction of its own (`put_frames`), so the disk writes while the
worker compresses. Those frames are invisible until the checkpoint's manifest commits (`put`):
nothing reads a version no manifest names. Frames of a checkpoint that never committed (its
worker or roostd died) are deleted before the next worker starts (`discard_after`) and again
by the first part of the next attempt at that number.
"""
from __future__ import annotations

import json
import struct
from concurrent.futures import Future
from dataclasses import dataclass, field

from roost.daemon.checkpoint import pagemap
from roost.daemon.errors import NotFound, StoreError
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.store.records import ExecutionRecord
from roost.daemon.store.db import Store, delete_prefix, delete_range, log_key

_SEQ = struct.Struct(">Q")


@dataclass
class Restore:
    """Everything a worker needs to rebuild a checkpoint."""
    manifest: dict
    page_map: PageMap
    frames: list[tuple[int, bytes]]       # (version, frame) for every version the map names
    host: bytes
    stack: bytes


COMMITTED = 1 << 32                       # `Uncommitted.streamed` of a checkpoint stored whole


@dataclass
class Uncommitted:
    """A checkpoint on its way into the store, readable before it commits: a migration's final
    checkpoint is pushed to the target while this daemon still writes it (the push ends only
    once `committed` is done, so no peer holds a checkpoint its source could lose)."""
    exec_id: str
    number: int
    manifest: dict
    page_map: PageMap
    host: bytes
    stack: bytes
    frames: list[bytes]                   # frames `streamed`, `streamed + 1`, ... (the rest are
    streamed: int                         # stored already, by `put_frames`; all: COMMITTED)
    record_json: bytes
    referenced: frozenset[int]
    committed: Future = field(default_factory=Future)

    def iter_frames(self, pages: "PageStore", version: int):
        """(index, frame) of `version` as `PageStore.iter_frames` gives them once committed."""
        if version != self.number:
            yield from pages.iter_frames(self.exec_id, version)
            return
        for index, frame in pages.iter_frames(self.exec_id, version):
            if index >= self.streamed:           # committed meanwhile: those are below
                break
            yield index, frame
        for index, frame in enumerate(self.frames, self.streamed):
            yield index, bytes(frame)            # (a view into a big frame from the worker)


class PageStore:
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

    def put_frames(self, exec_id: str, number: int, first: int, frames: list) -> None:
        """Store frames `first`, `first+1`, ... of checkpoint `number`, not yet committed."""
        base = log_key(exec_id, number)
        self.store.check_room(f"storing pages of checkpoint {number} of {exec_id}")
        with self.store.txn(f"storing pages of checkpoint {number} of {exec_id}", write=True) as txn:
            if first == 0:                 # a torn earlier attempt at this number
                delete_prefix(txn, self.dbs["pages"], base + b"/")
            self._put_frames(txn, base, first, frames)

    def _put_frames(self, txn, base: bytes, first: int, frames: list) -> None:
        for i, frame in enumerate(frames, first):
            txn.put(base + b"/f" + struct.pack(">I", i), frame, db=self.dbs["pages"])

    def discard_after(self, exec_id: str, number: int) -> None:
        """Delete the frames of checkpoints after `number` (started, never committed)."""
        with self.store.txn(f"discarding unfinished checkpoints of {exec_id}", write=True) as txn:
            delete_range(txn, self.dbs["pages"], log_key(exec_id, number + 1),
                         exec_id.encode() + b"\x01")

    def put(self, record: ExecutionRecord, manifest: dict, frames: list[bytes], host: bytes,
            stack: bytes, page_map: PageMap, delta: pagemap.Delta | None, retain: int,
            wake_at_ns: int = 0, streamed: int = 0, also=None,
            referenced: frozenset[int] | None = None, hurry: bool = False) -> None:
        """Commit one checkpoint with its map (delta or compacted full), the record that counts
        it and its durable-sleep timer; garbage-collect in the same transaction. `streamed`:
        frames already stored by `put_frames`; `frames` follow them. `delta` None: worked out
        from the previous checkpoint's map (a replica's). `also(txn)` writes more in the same
        transaction (a replica's log and journal records). `referenced`: the versions the map
        needs, if known already. `hurry` (a migration's final checkpoint, whose commit is in the
        downtime, on both daemons): no compaction and no garbage collection now; the next
        commit does both."""
        exec_id, number = record.id, manifest["number"]
        base = log_key(exec_id, number)
        self.store.check_room(f"storing checkpoint {number} of {exec_id}")
        with self.store.txn(f"storing checkpoint {number} of {exec_id}", write=True) as txn:
            if streamed and not txn.has(base + b"/f" + struct.pack(">I", streamed - 1),
                                        db=self.dbs["pages"]):
                raise StoreError(f"checkpoint {number} of {exec_id}: its streamed pages are missing")
            prev = self._manifest(txn, exec_id, number - 1)
            if delta is None:
                delta = pagemap.difference(self._map(txn, exec_id, number - 1), page_map) \
                    if prev is not None else pagemap.difference(PageMap(), page_map)
            full = prev is None or not hurry and (
                number - prev["map_base"] >= pagemap.COMPACT_EVERY
                or 2 * (prev.get("chain_entries", 0) + len(delta)) > page_map.pages)
            manifest["map_base"] = number if full else prev["map_base"]
            manifest["chain_entries"] = 0 if full else prev.get("chain_entries", 0) + len(delta)
            raw = pagemap.encode_full(page_map) if full else pagemap.encode_delta(page_map.pages, delta)
            manifest["map_bytes"] = len(raw)
            if not streamed:
                delete_prefix(txn, self.dbs["pages"], base + b"/")
            self._put_frames(txn, base, streamed, frames)
            txn.put(base + b"/host", host, db=self.dbs["pages"])
            txn.put(base + b"/stack", stack, db=self.dbs["pages"])
            txn.put(base, raw, db=self.dbs["pagemaps"])
            txn.put(base, json.dumps(manifest, sort_keys=True).encode(), db=self.dbs["checkpoints"])
            txn.put(exec_id.encode(), record.to_json(), db=self.dbs["executions"])
            if wake_at_ns:
                txn.put(exec_id.encode(), _SEQ.pack(wake_at_ns), db=self.dbs["timers"])
            if also is not None:
                also(txn)
            if referenced is None:
                referenced = frozenset(page_map.referenced())
            if not hurry:
                self._collect_garbage(txn, exec_id, retain, (number, referenced))
        self._referenced[(exec_id, number)] = referenced
        recent = [(n, m) for n, m in self._recent_maps.get(exec_id, []) if n != number]
        self._recent_maps[exec_id] = (recent + [(number, page_map)])[-2:]

    def _collect_garbage(self, txn, exec_id: str, retain: int,
                         new: tuple[int, frozenset[int]]) -> None:
        numbers = self._numbers(txn, exec_id)
        kept = numbers[-retain:]
        needed_maps = min(self._manifest(txn, exec_id, n)["map_base"] for n in kept)
        referenced: set[int] = set(kept)
        for n in kept:
            referenced |= new[1] if n == new[0] else self._referenced_by(txn, exec_id, n)
        # Versions as the pages hold them, not as manifests name them: a replica holds frames
        # of versions it never had a checkpoint of (pushed because a newer map names them).
        for n in self._versions(txn, exec_id):
            base = log_key(exec_id, n)
            if n not in referenced:
                delete_prefix(txn, self.dbs["pages"], base + b"/")
            elif n not in kept:                  # its pages live on; its host state does not
                txn.delete(base + b"/host", db=self.dbs["pages"])
                txn.delete(base + b"/stack", db=self.dbs["pages"])
        for n in numbers:
            if n not in kept:
                self._referenced.pop((exec_id, n), None)
            if n < needed_maps and n not in referenced:
                base = log_key(exec_id, n)
                txn.delete(base, db=self.dbs["pagemaps"])
                txn.delete(base, db=self.dbs["checkpoints"])
        oldest = self._manifest(txn, exec_id, kept[0])
        delete_range(txn, self.dbs["journal"], log_key(exec_id, 0),
                     log_key(exec_id, oldest["journal_seq"]))

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
        prefix = exec_id.encode() + b"\x00"
        cur = txn.cursor(db=self.dbs["pages"])
        out, n = [], 0
        while n <= upto and cur.set_range(prefix + _SEQ.pack(n)):
            key = cur.key()
            if not key.startswith(prefix):
                break
            n = _SEQ.unpack(key[len(prefix):len(prefix) + 8])[0]
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
                if txn.get(log_key(exec_id, n), db=self.dbs["pagemaps"]) is not None:
                    try:
                        held |= self._referenced_by(txn, exec_id, n)
                    except NotFound:             # an old map whose chain is collected
                        continue
            present = set(self._versions(txn, exec_id))
            return sorted(held & present)

    def iter_frames(self, exec_id: str, version: int, batch_bytes: int = 8 << 20):
        """(index, frame) of a version, read in short transactions (a push of GiBs must not hold
        one read transaction open: it would keep LMDB from reusing freed pages meanwhile)."""
        index = 0
        while True:
            batch, size = [], 0
            with self.store.txn(f"reading frames of {exec_id} version {version}") as txn:
                cur = txn.cursor(db=self.dbs["pages"])
                prefix = log_key(exec_id, version) + b"/f"
                if cur.set_range(prefix + struct.pack(">I", index)):
                    for key in cur.iternext(values=False):
                        if not key.startswith(prefix) or size >= batch_bytes:
                            break
                        value = cur.value()
                        batch.append((struct.unpack(">I", key[len(prefix):])[0], value))
                        size += len(value)
            if not batch:
                return
            yield from batch
            index = batch[-1][0] + 1

    def page_map(self, exec_id: str, number: int) -> PageMap:
        with self.store.txn(f"reading the page map of {exec_id} checkpoint {number}") as txn:
            return self._map(txn, exec_id, number)

    def manifest(self, exec_id: str, number: int) -> dict | None:
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            return self._manifest(txn, exec_id, number)

    def _numbers(self, txn, exec_id: str) -> list[int]:
        prefix = exec_id.encode() + b"\x00"
        cur = txn.cursor(db=self.dbs["checkpoints"])
        out = []
        if cur.set_range(prefix):
            for key in cur.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                out.append(_SEQ.unpack(key[-8:])[0])
        return out

    def _manifest(self, txn, exec_id: str, number: int) -> dict | None:
        raw = txn.get(log_key(exec_id, number), db=self.dbs["checkpoints"])
        return json.loads(raw) if raw is not None else None

    def _map(self, txn, exec_id: str, number: int) -> PageMap:
        """The full map of checkpoint `number`: its chain's full map plus the deltas after it
        (read-only: the newest one is shared)."""
        for n, cached in self._recent_maps.get(exec_id, []):
            if n == number:
                return cached
        manifest = self._manifest(txn, exec_id, number)
        if manifest is None:
            raise NotFound(f"checkpoint {number} of {exec_id} is gone")
        result = None
        for n in range(manifest["map_base"], number + 1):
            raw = txn.get(log_key(exec_id, n), db=self.dbs["pagemaps"])
            if raw is None:
                raise NotFound(f"page map of checkpoint {n} of {exec_id} is missing")
            result = pagemap.decode(bytes(raw), result)
        return result

    # ---- reading ----
    def latest(self, exec_id: str) -> dict | None:
        """The manifest of the newest checkpoint that can be restored (host state present)."""
        numbers = self.restorable(exec_id)
        return self.manifest(exec_id, numbers[0]) if numbers else None

    def restorable(self, exec_id: str) -> list[int]:
        """The checkpoints that have their host state (the retained ones), newest first: a
        restore that finds one corrupt goes on to the next (the journal is kept from the
        oldest retained checkpoint on)."""
        with self.store.txn(f"reading checkpoints of {exec_id}") as txn:
            return [n for n in reversed(self._numbers(txn, exec_id))
                    if txn.has(log_key(exec_id, n) + b"/host", db=self.dbs["pages"])]

    def drop_newest(self, exec_id: str, number: int) -> None:
        """Delete checkpoint `number` and every later one — manifests, maps, frames, host state
        — after one was found corrupt: the restore goes on from an older one. Frames of these
        versions only newer maps name. The numbers are not reused (the supervisor numbers the
        next checkpoint after them): a replica may still hold the dropped ones."""
        what = f"dropping corrupt checkpoint {number} of {exec_id}"
        with self.store.txn(what, write=True) as txn:
            end = exec_id.encode() + b"\x01"
            for db in ("pages", "pagemaps", "checkpoints"):
                delete_range(txn, self.dbs[db], log_key(exec_id, number), end)
        recent = self._recent_maps.get(exec_id, [])
        self._recent_maps[exec_id] = [(n, m) for n, m in recent if n < number]
        for key in [k for k in self._referenced if k[0] == exec_id and k[1] >= number]:
            del self._referenced[key]

    def stack(self, exec_id: str, number: int) -> bytes:
        return self._blob(exec_id, number, b"/stack", "stack")

    def host_state(self, exec_id: str, number: int) -> bytes:
        return self._blob(exec_id, number, b"/host", "host state")

    def _blob(self, exec_id: str, number: int, suffix: bytes, what: str) -> bytes:
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            raw = txn.get(log_key(exec_id, number) + suffix, db=self.dbs["pages"])
        if raw is None:
            raise NotFound(f"checkpoint {number} of {exec_id} has no {what}")
        return bytes(raw)

    def load(self, exec_id: str, number: int) -> Restore:
        base = log_key(exec_id, number)
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            manifest = self._manifest(txn, exec_id, number)
            host = txn.get(base + b"/host", db=self.dbs["pages"])
            stack = txn.get(base + b"/stack", db=self.dbs["pages"])
            if manifest is None or host is None or stack is None:
                raise NotFound(f"checkpoint {number} of {exec_id} is incomplete")
            page_map = self._map(txn, exec_id, number)
            frames = []
            for version in sorted(page_map.referenced()):
                frames += [(version, f) for f in self._frames(txn, exec_id, version)]
            return Restore(manifest, page_map, frames, bytes(host), bytes(stack))

    def _frames(self, txn, exec_id: str, version: int) -> list[bytes]:
        prefix = log_key(exec_id, version) + b"/f"
        cur = txn.cursor(db=self.dbs["pages"])
        out = []
        if cur.set_range(prefix):
            for key in cur.iternext(values=False):     # values checked only if they are ours
                if not key.startswith(prefix):
                    break
                out.append(cur.value())
        return out
