"""The frame pump on its own: a fake worker writes frames into a real `Link` over a socketpair,
the pump hands them to the real output writer and checkpoint committer over a real `Store` in a
tmp dir. What is stored, and in what order: the output and journal records a worker sent
before a checkpoint are durable before that checkpoint commits; streamed page parts and the
CHECKPOINT's own frames make one checkpoint; the requests it merged are answered; output a
restored guest repeats is stored once; the output quota and the END end the pump as they should.
"""
from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable

import numpy as np
import pytest

from roost.daemon.checkpoint import frames as snapshot
from roost.daemon.checkpoint.frames import PAGE_BYTES
from roost.daemon.checkpoint.manifest import CheckpointStats, Manifest
from roost.daemon.executions import requests
from roost.daemon.executions.committer import Committer
from roost.daemon.executions.output import OutputWriter
from roost.daemon.executions.pool import WorkerProcess
from roost.daemon.executions.pump import Pump
from roost.daemon.executions.running import OUTPUT_QUOTA, Live
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import Link
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord

MEMORY = 4 * PAGE_BYTES


class FakeProc:
    """What the pump asks of a worker's process: a signal when it stops the worker."""
    pid = 4242

    def __init__(self) -> None:
        self.signals: list[int] = []

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def poll(self) -> int | None:
        return None


class Rig:
    """A store, the pump's parts over it, and one execution whose worker is a socketpair end."""

    def __init__(self, tmp_path, output_limit_bytes: int = 0) -> None:
        self.store = Store(tmp_path, 1 << 30)
        self.pages = PageStore(self.store)
        self.committer = Committer(self.pages, retain=2)
        self.pump = Pump(OutputWriter(self.store, output_limit_bytes), self.committer)
        self.record = ExecutionRecord(id="e1", module_sha256="m", module_name="m", argv=["m"],
                                      env=[], mounts=[])
        self.store.create_execution(self.record, b"", b"")
        ours, theirs = socket.socketpair()
        self.proc = FakeProc()
        self.live = Live(self.record, WorkerProcess(self.proc, Link(ours)),  # type: ignore[arg-type]
                         durable={1: 0, 2: 0})
        self.worker = Link(theirs)
        self.commits: list[tuple[int, list]] = []    # (number, logs stored when it committed)
        self.committer.on_commit = lambda record, number: self.commits.append(
            (number, self.logs()))

    def logs(self) -> list[tuple[int, int, bytes]]:
        return [(seq, stream, bytes(data)) for seq, stream, data in self.store.read_logs("e1", 0)]

    def run(self, worker: Callable[[Link], None]) -> msg.End | None:
        """Pump while `worker` writes its frames (then hangs up)."""
        def write() -> None:
            try:
                worker(self.worker)
            finally:
                self.worker.sock.shutdown(socket.SHUT_RDWR)
        thread = threading.Thread(target=write)
        thread.start()
        end = self.pump.run(self.live)
        thread.join(timeout=10)
        return end


def streams(logs: list[tuple[int, int, bytes]]) -> dict[int, bytes]:
    """fd -> everything the records hold of that stream, in order."""
    out: dict[int, bytes] = {}
    for _, fd, data in logs:
        out[fd] = out.get(fd, b"") + data
    return out


def checkpoint(number: int, pages: dict[int, int], reason: str = "checkpoint",
               request_ids: tuple[int, ...] = (), journal_seq: int = 0,
               streamed_frames: bool = False) -> tuple[list[bytes], msg.Checkpoint]:
    """A checkpoint of pages {index: byte value}; (its frames, its CHECKPOINT without them
    when `streamed_frames`, the frames then go in PAGES parts)."""
    staged = [(p, bytes([v]) * PAGE_BYTES) for p, v in sorted(pages.items())]
    frames, stored, zeroed = snapshot.encode_pages(staged)
    manifest = Manifest(number=number, journal_seq=journal_seq, memory_bytes=MEMORY, reason=reason,
                        requests=request_ids, prepare_version=1)
    stats = CheckpointStats(pause_seconds=0.001, time_to_safepoint_seconds=0.002, stored_bytes=10)
    ckpt = msg.Checkpoint(manifest, stats, b"host", b"stack",
                          np.array(stored, "<u4").tobytes(), np.array(zeroed, "<u4").tobytes(),
                          () if streamed_frames else tuple(frames))
    return frames, ckpt


def test_output_and_journal_are_stored_before_the_checkpoint_after_them(tmp_path):
    rig = Rig(tmp_path)
    _, ckpt = checkpoint(1, {0: 1, 1: 2}, journal_seq=1)

    def worker(link: Link) -> None:
        link.send_output(1, 0, b"hello ")
        link.send_output(1, 6, b"world\n")
        link.send_output(2, 0, b"oops\n")
        link.send_journal([b"j0", b"j1"])
        link.send_message(ckpt)
        link.send_output(1, 12, b"after\n")
        link.send_message(msg.End("EXITED", 0, vfs=b"vfs"))

    end = rig.run(worker)
    assert isinstance(end, msg.End) and end.state == "EXITED"
    # When checkpoint 1 committed, what the worker wrote before it was stored already (writes
    # to one stream read together are merged into one record), and nothing after it.
    [(number, before)] = rig.commits
    assert number == 1 and streams(before) == {1: b"hello world\n", 2: b"oops\n"}
    logs = rig.logs()
    assert logs[:len(before)] == before and streams(logs[len(before):]) == {1: b"after\n"}
    assert [seq for seq, _, _ in logs] == list(range(len(logs)))
    assert [bytes(r) for r in rig.store.read_journal("e1", 0)][-1:] == [b"j1"]   # (from the checkpoint on)
    read = rig.pages.checkpoint("e1", 1)
    assert read is not None
    stored, stats = read
    assert stored.number == 1 and stored.frames == 1 and stored.journal_seq == 1
    assert stats.drain_seconds is not None and stats.pause_seconds == 0.001
    assert rig.store.get_execution("e1").checkpoints == 1
    assert (rig.record.stdout_bytes, rig.record.stderr_bytes, rig.record.journal_records) == (18, 5, 2)
    assert rig.proc.signals == []


def test_streamed_parts_and_the_checkpoint_make_one_checkpoint(tmp_path):
    rig = Rig(tmp_path)
    frames, ckpt = checkpoint(1, {p: p + 1 for p in range(4)}, streamed_frames=True)
    frames2, ckpt2 = checkpoint(2, {1: 9})

    def worker(link: Link) -> None:
        for i, frame in enumerate(frames):                 # one part per frame
            link.send_message(msg.Pages(1, i, (frame,)))
        link.send_message(ckpt)
        link.send_message(ckpt2)
        link.send_message(msg.End("EXITED", 0, vfs=b"vfs"))

    rig.run(worker)
    assert [n for n, _ in rig.commits] == [1, 2]
    saved = rig.pages.load("e1", 2)
    image = snapshot.image_from_versions(saved.frames, saved.page_map.versions, MEMORY)
    assert bytes(image) == b"".join(bytes([v]) * PAGE_BYTES for v in (1, 9, 3, 4))
    stored = rig.pages.manifest("e1", 1)
    assert stored is not None and stored.frames == len(frames)
    assert rig.live.streamed == (0, 0) and rig.live.writes == []


def test_out_of_order_parts_stop_the_worker_and_store_nothing(tmp_path):
    rig = Rig(tmp_path)
    frames, ckpt = checkpoint(1, {0: 1}, streamed_frames=True)

    def worker(link: Link) -> None:
        link.send_message(msg.Pages(1, 5, tuple(frames)))   # frame 5 first: a part went missing
        link.send_message(ckpt)

    assert rig.run(worker) is None
    assert rig.proc.signals == [signal.SIGKILL]
    assert "store could not take" in rig.live.end_reason
    assert rig.pages.latest("e1") is None and rig.commits == []


def test_the_checkpoint_answers_the_requests_it_merged(tmp_path):
    rig = Rig(tmp_path)
    asked = requests.ask(rig.live, "checkpoint")
    other = requests.ask(rig.live, "checkpoint")
    _, ckpt = checkpoint(1, {0: 1}, request_ids=(asked,))
    sent = []

    def worker(link: Link) -> None:
        while len(sent) < 2:                               # the two CONTROL frames
            sent.extend(link.read_batch() or [])
        link.send_message(ckpt)
        link.send_message(msg.End("EXITED", 0, vfs=b"vfs"))

    rig.run(worker)
    assert [msg.decode(f) for f in sent] == [msg.Control.ask("checkpoint", asked),
                                             msg.Control.ask("checkpoint", other)]
    answer = rig.live.requests[asked]
    assert answer["number"] == 1 and answer["total_seconds"] >= 0
    assert rig.live.requests[other] is None                 # not merged into this one


def test_a_migrations_final_checkpoint_is_answered_before_it_commits(tmp_path):
    rig = Rig(tmp_path)
    n = requests.ask(rig.live, "migrate")
    _, ckpt = checkpoint(1, {0: 1}, reason="migrate", request_ids=(n,))
    seen: list = []
    rig.committer.on_commit = lambda record, number: seen.append(
        rig.live.requests[n]["uncommitted"].committed.done())

    def worker(link: Link) -> None:
        link.send_message(ckpt)
        link.send_message(msg.End("PAUSED", 0, vfs=b"vfs"))

    rig.run(worker)
    uncommitted = rig.live.requests[n]["uncommitted"]
    assert uncommitted.number == 1 and uncommitted.manifest.reason == "migrate"
    assert seen == [True]                   # committed by the time replication hears of it
    assert uncommitted.committed.result() is None


def test_output_a_restored_guest_repeats_is_stored_once(tmp_path):
    rig = Rig(tmp_path)
    rig.live.durable = {1: 6, 2: 0}          # "hello " was stored before the restore

    def worker(link: Link) -> None:
        link.send_output(1, 0, b"hello ")
        link.send_output(1, 0, b"hello world\n")   # overlapping: only "world\n" is new
        link.send_message(msg.End("EXITED", 0, vfs=b"vfs"))

    rig.run(worker)
    assert streams(rig.logs()) == {1: b"world\n"}


def test_output_over_the_quota_stops_the_worker_and_stores_none_of_it(tmp_path):
    rig = Rig(tmp_path, output_limit_bytes=10)

    def worker(link: Link) -> None:
        link.send_output(1, 0, b"0123456789abcdef")
        link.send_message(msg.End("EXITED", 0, vfs=b"vfs"))

    assert rig.run(worker) is None
    assert rig.live.end_reason.startswith(OUTPUT_QUOTA)
    assert rig.proc.signals == [signal.SIGKILL]
    assert rig.logs() == [] and rig.record.stdout_bytes == 0


def test_ready_stats_and_a_worker_that_hangs_up(tmp_path):
    rig = Rig(tmp_path)

    def worker(link: Link) -> None:
        link.send_message(msg.Ready(pid=1, setup_seconds=0.1, checkpointable=True, standby=False,
                                    restore_seconds=0.5, tracker="uffd"))
        link.send_message(msg.Stats({"fd_write": 3}))

    assert rig.run(worker) is None                          # gone without END
    assert rig.live.running and rig.live.checkpointable
    assert rig.record.dirty_tracker == "uffd" and rig.record.restore_seconds == 0.5
    assert rig.record.host_calls == 3
    assert rig.live.end_reason == ""


@pytest.mark.parametrize("standby_holds", [0, 3])
def test_a_standby_holds_what_it_restored(tmp_path, standby_holds):
    rig = Rig(tmp_path)
    rig.live.standby, rig.live.applied, rig.live.holds = True, 2, standby_holds

    def worker(link: Link) -> None:
        link.send_message(msg.Ready(pid=1, setup_seconds=0.1, checkpointable=True, standby=True,
                                    restore_seconds=0.5, tracker=""))

    rig.run(worker)
    assert rig.live.holds == (standby_holds or 2) and not rig.live.running   # READY: what it restored
    rig.live.worker.link.close()
    rig.worker = Link(socket.socketpair()[1])


def test_a_standby_holds_what_it_applied(tmp_path):
    rig = Rig(tmp_path)
    rig.live.standby, rig.live.applied = True, 2
    rig.run(lambda link: link.send_message(msg.Applied(7)))
    assert rig.live.holds == 7
