"""The receiving side of replication on the in-memory sink: a checkpoint pushed by the real
push code (`push.Pusher`) goes in as messages and comes out as one commit, its frames in parts;
a push out of order, oversized or from someone who does not own the execution is refused
before anything of it is stored. Then the same push into the LMDB sink restores."""
from __future__ import annotations

from pathlib import Path

import pytest

from roost.daemon.checkpoint import frames as snapshot
from roost.daemon.checkpoint import pagemap
from roost.daemon.checkpoint.frames import PAGE_BYTES
from roost.daemon.checkpoint.manifest import Manifest
from roost.daemon.checkpoint.pagemap import PageMap
from roost.daemon.checkpoint.transfer import Commit, MemoryCheckpoints, Parts, Records
from roost.daemon.cluster.authority import Ownership
from roost.daemon.cluster.peerauth import Caller
from roost.daemon.cluster.push import Pusher
from roost.daemon.cluster.pushwire import Bounds
from roost.daemon.cluster.receive import Replicas
from roost.daemon.errors import InvalidRequest, NotFound, PermissionDenied, StateConflict, StoreError
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.store import logrecord
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, ModuleRecord, Owner
from roost.v1 import peer_pb2 as pb

OWNER = NodeIdentity("n1", "10.0.0.1:7070")
REPLICA = NodeIdentity("n2", "10.0.0.2:7070")


class Standby:
    """No migration standby here."""

    def has_standby(self, exec_id: str) -> bool:
        return False

    def follow(self, exec_id: str, number: int) -> None:
        raise AssertionError("not a migration")


class Owners:
    """The owner's side: a store with one execution, and its checkpoints in memory."""

    def __init__(self, path: Path, pages: int = 3 * snapshot.FRAME_PAGES) -> None:
        self.store = Store(path, 1 << 30)
        self.store.put_module(ModuleRecord("m" * 64, "m", 1, 0.0), b"\0asm")
        self.record = ExecutionRecord(id="e1", module_sha256="m" * 64, module_name="m",
                                      argv=["m"], env=[], mounts=[], owner=OWNER.node_id,
                                      owner_address=OWNER.address)
        self.store.create_execution(self.record, b"stdin", b"vfs")
        self.store.append(self.record, 0, [(1, b"hello\n")], 0, [b"journal-0"])
        self.checkpoints = MemoryCheckpoints()
        self.memory = bytearray(pages * PAGE_BYTES)
        self.page_map = PageMap()
        self.number = 0

    def checkpoint(self, dirty: range) -> None:
        """Write the pages in `dirty` and commit a checkpoint of them."""
        self.number += 1
        for p in dirty:
            self.memory[p * PAGE_BYTES] = (p + self.number) % 250 + 1
        staged = [(p, bytes(self.memory[p * PAGE_BYTES:(p + 1) * PAGE_BYTES])) for p in dirty]
        frames, stored, zeroed = snapshot.encode_pages(staged)
        self.page_map, delta = pagemap.successor(self.page_map, self.number,
                                                 len(self.memory) // PAGE_BYTES, stored, zeroed)
        manifest = Manifest(number=self.number, journal_seq=0, memory_bytes=len(self.memory))
        self.checkpoints.commit(Commit(self.record, manifest, b"host", b"stack", self.page_map,
                                       delta, frames))

    def chunks(self, status: pb.ReplicaStatusResponse | None = None) -> list[pb.CheckpointChunk]:
        """The push of the latest checkpoint, message by message, as the pusher sends it."""
        pusher = Pusher(OWNER, self.store, self.checkpoints)
        source = self.checkpoints.source(self.record, self.number)
        status = status or pb.ReplicaStatusResponse()
        after = pb.ReplicaStatusResponse()
        return list(pusher._chunks(self.record, self.number, status, "", [0], 0, after, source))


@pytest.fixture
def owner(tmp_path):
    owner = Owners(tmp_path / "owner")
    owner.checkpoint(range(0, len(owner.memory) // PAGE_BYTES))
    yield owner
    owner.store.close()


@pytest.fixture
def replica(tmp_path):
    store = Store(tmp_path / "replica", 1 << 30)
    store.put_module(ModuleRecord("m" * 64, "m", 1, 0.0), b"\0asm")
    sink = MemoryCheckpoints()
    ownership = Ownership(REPLICA.node_id, REPLICA.owns, lambda exec_id: False)
    replicas = Replicas(REPLICA, store, sink, Standby(), 2, None, ownership)
    yield replicas
    store.close()


def receive(replicas: Replicas, chunks, caller: str = OWNER.node_id) -> pb.PushCheckpointResponse:
    return replicas.receive(iter(chunks), Caller(caller, "10.0.0.1"))


def test_a_push_is_one_commit_its_frames_in_parts(owner, replica, monkeypatch):
    monkeypatch.setattr("roost.daemon.cluster.receive.PART_BYTES", 1)    # a part per frame
    chunks = owner.chunks()
    response = receive(replica, chunks)
    assert response.number == 1
    sink: MemoryCheckpoints = replica.pages
    commit = sink.commits[("e1", 1)]
    sent = list(owner.checkpoints.iter_frames("e1", 1))
    assert len(sent) >= 2
    assert list(sink.iter_frames("e1", 1)) == sent
    assert commit.streamed + len(commit.frames) == len(sent) and commit.streamed >= 1
    assert (commit.host, commit.stack) == (b"host", b"stack")
    assert (commit.page_map.versions == owner.page_map.versions).all()
    assert commit.manifest.owner == OWNER.node_id and commit.manifest.epoch == 1
    early = [r for _, r, _ in sink.records]              # (parts of PART_BYTES: at once)
    assert _untimed([x for r in early + [commit.records] for x in r.logs]) == [(0, b"\x01hello\n")]
    assert [x for r in early + [commit.records] for x in r.journal] == [(0, b"journal-0")]
    assert commit.record.owner == OWNER.node_id and commit.retain == 2
    assert replica.store.stdin("e1") == b"stdin"


def test_a_second_push_sends_a_delta_and_only_the_new_version(owner, replica):
    receive(replica, owner.chunks())
    first = replica.pages.commits[("e1", 1)]
    assert _untimed(first.records.logs) == [(0, b"\x01hello\n")]      # with the commit
    assert list(first.records.journal) == [(0, b"journal-0")]
    status = replica.status("e1", "m" * 64)
    owner.checkpoint(range(2, 5))
    chunks = owner.chunks(status)
    assert {c.frame.version for c in chunks if c.WhichOneof("part") == "frame"} == {2}
    assert chunks[0].header.page_map_base == 1
    receive(replica, chunks)
    commit = replica.pages.commits[("e1", 2)]
    assert commit.delta is not None                      # the owner's delta, not worked out again
    assert (commit.page_map.versions == owner.page_map.versions).all()


def _frames(chunks):
    return [i for i, c in enumerate(chunks) if c.WhichOneof("part") == "frame"]


def test_frames_out_of_order_are_refused(owner, replica):
    chunks = owner.chunks()
    at = _frames(chunks)
    chunks[at[0]], chunks[at[1]] = chunks[at[1]], chunks[at[0]]
    with pytest.raises(InvalidRequest, match="out of order"):
        receive(replica, chunks)
    assert not replica.pages.commits


def test_a_frame_of_a_version_the_map_does_not_name_is_refused(owner, replica):
    chunks = owner.chunks()
    chunks[_frames(chunks)[0]].frame.version = 7
    with pytest.raises(InvalidRequest, match="does not reference"):
        receive(replica, chunks)


def test_an_oversized_frame_is_refused(owner, replica, monkeypatch):
    monkeypatch.setattr(Bounds, "MAX_FRAME", 16)
    with pytest.raises(InvalidRequest, match="it does not reference"):
        receive(replica, owner.chunks())
    assert not replica.pages.commits and not replica.pages.frames


def test_values_overrunning_their_announced_size_are_refused(owner, replica):
    chunks = owner.chunks()
    chunks[0].header.host_bytes = 2                     # b"host" is 4
    with pytest.raises(InvalidRequest, match="overrun"):
        receive(replica, chunks)


def test_a_second_header_is_refused(owner, replica):
    chunks = owner.chunks()
    chunks.insert(_frames(chunks)[1], chunks[0])
    with pytest.raises(InvalidRequest, match="second header"):
        receive(replica, chunks)


def test_a_push_from_someone_not_its_owner_is_refused(owner, replica):
    with pytest.raises(PermissionDenied, match="certificate is node 'n3'"):
        receive(replica, owner.chunks(), caller="n3")
    assert not replica.pages.commits
    with pytest.raises(NotFound):                         # nothing of it was stored either
        replica.store.get_execution("e1")


def test_a_push_naming_this_daemon_as_owner_is_refused(owner, replica):
    chunks = owner.chunks()
    chunks[0].header.owner = REPLICA.node_id
    with pytest.raises(StateConflict, match="own node id"):
        receive(replica, chunks, caller=REPLICA.node_id)


def test_a_stale_epoch_is_refused(owner, replica):
    receive(replica, owner.chunks())
    replica.store.update_execution("e1", lambda r: setattr(r, "epoch", 5) or True)
    owner.checkpoint(range(1, 2))
    with pytest.raises(StateConflict, match="stale"):
        receive(replica, owner.chunks())


def test_parts_refuse_frames_out_of_order_and_hold_back_the_tail():
    sink = MemoryCheckpoints()
    parts = Parts(sink, "e1", 3, part_bytes=4)
    parts.add(1, 0, b"aaaa")
    parts.add(1, 1, b"b")
    with pytest.raises(StoreError, match="out of order"):
        parts.add(1, 3, b"c")
    parts.add(3, 0, b"cccc")
    parts.add(3, 1, b"d")
    with pytest.raises(StoreError, match="out of order"):
        parts.add(1, 2, b"late")                          # version 1 ended
    assert parts.tail() == [b"d"] and parts.streamed == 1
    assert list(sink.iter_frames("e1", 1)) == [(0, b"aaaa"), (1, b"b")]
    assert list(sink.iter_frames("e1", 3)) == [(0, b"cccc")]


def test_a_pushed_checkpoint_in_the_lmdb_sink_restores(owner, replica, tmp_path):
    """The same receive path into the store's own sink: it restores as the owner's memory."""
    pages = PageStore(replica.store)
    replica.pages = pages
    receive(replica, owner.chunks())
    saved = pages.load("e1", 1)
    image = snapshot.image_from_versions(saved.frames, saved.page_map.versions,
                                         saved.manifest.memory_bytes)
    assert bytes(image) == bytes(owner.memory)
    assert replica.store.read_journal("e1", 0) == [b"journal-0"]
    assert pages.held_versions("e1") == [1]


def test_lmdb_put_records_and_owner_text():
    """(Records are falsy when empty; `Owner` is the stored handover text, both ways.)"""
    assert not Records() and Records(logs=[(0, b"\x01x")])
    owner = Owner(7, "n2", "h:1")
    assert str(owner) == "7 n2 h:1" and Owner.parse(str(owner)) == owner
    assert Owner.parse("") is None and Owner.epoch_of("") == 0 and Owner.epoch_of("x n") == 0
    assert Owner.parse("3 n1") == Owner(3, "n1", "")


def _untimed(logs) -> list[tuple[int, bytes]]:
    """Stored output records as (seq, stream byte + data), once checked to carry the owner's
    time (store format 2.2: the push carries it)."""
    decoded = [(seq, logrecord.decode(raw)) for seq, raw in logs]
    assert all(record.time_ns for _, record in decoded)
    return [(seq, bytes((record.stream,)) + record.data) for seq, record in decoded]
