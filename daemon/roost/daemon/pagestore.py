"""Checkpoints in the store: manifests, page maps (index) and page frames (bytes), apart.

A checkpoint stores only the pages written since the previous one, in frames (`snapshot`), and
a page map saying, for every page, which checkpoint holds its latest version (`pagemap`). A
restore reads the map, then for each version it names, that version's frames, and writes each
page from exactly one version. Versions no retained checkpoint's map refers to are deleted, in
the same transaction that writes the checkpoint; so are maps no retained chain needs, and
journal records older than the oldest retained checkpoint.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from . import pagemap
from .errors import NotFound
from .pagemap import PageMap
from .records import ExecutionRecord
from .store import Store, delete_prefix, delete_range, log_key

_SEQ = struct.Struct(">Q")


@dataclass
class Restore:
    """Everything a worker needs to rebuild a checkpoint."""
    manifest: dict
    page_map: PageMap
    frames: list[tuple[int, bytes]]       # (version, frame) for every version the map names
    host: bytes
    stack: bytes


class PageStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dbs = store.dbs

    def put(self, record: ExecutionRecord, manifest: dict, frames: list[bytes], host: bytes,
            stack: bytes, page_map: PageMap, delta: list[tuple[int, int]], retain: int,
            wake_at_ns: int = 0) -> None:
        """Commit one checkpoint with its map (delta or compacted full), the record that counts
        it and its durable-sleep timer; garbage-collect in the same transaction."""
        exec_id, number = record.id, manifest["number"]
        base = log_key(exec_id, number)
        self.store.check_room(f"storing checkpoint {number} of {exec_id}")
        with self.store.txn(f"storing checkpoint {number} of {exec_id}", write=True) as txn:
            prev = self._manifest(txn, exec_id, number - 1)
            full = (prev is None or number - prev["map_base"] >= pagemap.COMPACT_EVERY
                    or 2 * (prev.get("chain_entries", 0) + len(delta)) > page_map.pages)
            manifest["map_base"] = number if full else prev["map_base"]
            manifest["chain_entries"] = 0 if full else prev.get("chain_entries", 0) + len(delta)
            raw = pagemap.encode_full(page_map) if full else pagemap.encode_delta(page_map.pages, delta)
            manifest["map_bytes"] = len(raw)
            for i, frame in enumerate(frames):
                txn.put(base + b"/f" + struct.pack(">I", i), frame, db=self.dbs["pages"])
            txn.put(base + b"/host", host, db=self.dbs["pages"])
            txn.put(base + b"/stack", stack, db=self.dbs["pages"])
            txn.put(base, raw, db=self.dbs["pagemaps"])
            txn.put(base, json.dumps(manifest, sort_keys=True).encode(), db=self.dbs["checkpoints"])
            txn.put(exec_id.encode(), record.to_json(), db=self.dbs["executions"])
            if wake_at_ns:
                txn.put(exec_id.encode(), _SEQ.pack(wake_at_ns), db=self.dbs["timers"])
            self._collect_garbage(txn, exec_id, retain)

    def _collect_garbage(self, txn, exec_id: str, retain: int) -> None:
        numbers = self._numbers(txn, exec_id)
        kept = numbers[-retain:]
        needed_maps = min(self._manifest(txn, exec_id, n)["map_base"] for n in kept)
        referenced: set[int] = set(kept)
        for n in kept:
            referenced |= self._map(txn, exec_id, n).referenced()
        for n in numbers:
            base = log_key(exec_id, n)
            if n not in referenced:
                delete_prefix(txn, self.dbs["pages"], base + b"/")
            elif n not in kept:                  # its pages live on; its host state does not
                txn.delete(base + b"/host", db=self.dbs["pages"])
                txn.delete(base + b"/stack", db=self.dbs["pages"])
            if n < needed_maps and n not in referenced:
                txn.delete(base, db=self.dbs["pagemaps"])
                txn.delete(base, db=self.dbs["checkpoints"])
        oldest = self._manifest(txn, exec_id, kept[0])
        delete_range(txn, self.dbs["journal"], log_key(exec_id, 0),
                     log_key(exec_id, oldest["journal_seq"]))

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
        """The full map of checkpoint `number`: its chain's full map plus the deltas after it."""
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
        with self.store.txn(f"reading checkpoints of {exec_id}") as txn:
            for n in reversed(self._numbers(txn, exec_id)):
                if txn.get(log_key(exec_id, n) + b"/host", db=self.dbs["pages"]) is not None:
                    return self._manifest(txn, exec_id, n)
        return None

    def host_state(self, exec_id: str, number: int) -> bytes:
        with self.store.txn(f"reading checkpoint {number} of {exec_id}") as txn:
            raw = txn.get(log_key(exec_id, number) + b"/host", db=self.dbs["pages"])
        if raw is None:
            raise NotFound(f"checkpoint {number} of {exec_id} has no host state")
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
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                out.append(bytes(value))
        return out
