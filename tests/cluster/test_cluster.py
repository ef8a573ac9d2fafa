"""Three roostds on loopback ports replicating each other's checkpoints and moving executions
between them: live migrations back and forth, a durable sleep moved mid-sleep, kill -9 of the
target during a migration, of the source after the handover, and of the source mid-pre-copy
(the target's standby goes), stale epochs refused, and a peer with a certificate from another
CA shut out. Output is always compared byte for byte with a plain wasmtime run."""
from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from roost.client.api import Client
from roost.client.display import message_dict
from roost.client.errors import RoostClientError
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, cluster, make_ca, make_cert, wait_until
from tests.framework.native import run_native


@pytest.fixture
def nodes(tmp_path):
    daemons = cluster(tmp_path / "cluster", config_text="[replication]\nfactor = -1\n")
    yield daemons
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def held(daemon: Roostd, exec_id: str) -> dict | None:
    """The record `daemon` itself holds (GetExecution there, not followed to the owner: a
    replica's), None if it holds none. `ps` lists only what a daemon owns."""
    with Client(daemon.addr) as client:
        try:
            return message_dict(client.get(exec_id))
        except RoostClientError as err:
            if err.code_name == "NOT_FOUND":
                return None
            raise


def start(daemon: Roostd, wasm, *args: str, opts: tuple = ()) -> str:
    return daemon.roost("run", "--detach", *opts, str(wasm), "--", *args, check=True).stdout.decode().strip()


def started(daemon: Roostd, guest: str, *args: str):
    """Test guest `guest` started on `daemon` with `args`: (its plain run, the execution's id)."""
    wasm = compile_guest(guest)
    return run_native(wasm, [guest, *args]), start(daemon, wasm, *args)


def migrate(daemon: Roostd, exec_id: str, to: Roostd, *opts: str) -> dict:
    """`roost migrate --json` through `daemon`; the report."""
    done = daemon.roost("migrate", exec_id, "--to", to.addr, "--json", *opts, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def owner_of(nodes: list[Roostd], exec_id: str) -> Roostd:
    node_id = inspect(nodes[0], exec_id)["owner"]   # (inspect follows the execution)
    return next(d for d in nodes if d.node_id == node_id)


def same_output(daemon: Roostd, exec_id: str, native) -> None:
    logs = daemon.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)


def test_replicas_follow_the_owners_checkpoints(nodes):
    """Every committed checkpoint reaches both peers (only what they lack), with the output so
    far; inspect names the replicas; each peer's lag shows in the owner's metrics."""
    a, b, c = nodes
    wasm = compile_guest("spin_print")
    exec_id = start(a, wasm, "600", "2500000", opts=("--checkpoint-every", "0.3"))
    wait_until(lambda: sorted(inspect(a, exec_id)["replicas"]) == sorted([b.node_id, c.node_id]),
               timeout=60, what="both replicas")
    record = inspect(a, exec_id)
    assert record["owner"] == a.node_id and int(record["epoch"]) == 1
    for peer in (b, c):
        replica = held(peer, exec_id)
        assert replica is not None and replica["served_by"] == peer.node_id
        assert replica["owner"] == a.node_id and int(replica.get("checkpoints", 0)) >= 1
        assert exec_id not in peer.roost("--json", "ps", "-a", check=True).stdout.decode()
    text = a.metrics()
    assert f'roost_replication_lag_seconds{{peer="{b.addr}"}}' in text
    assert re.search(rf'roost_replication_bytes_total{{peer="{c.addr}"}} [1-9]', text)
    assert a.roost("wait", exec_id, timeout=120).returncode == int(run_native(
        wasm, ["spin_print", "600", "2500000"]).exit_code)


@pytest.mark.parametrize("guest", ["compute", "files"])
def test_live_migration_back_and_forth_ten_times(nodes, tmp_path, guest):
    """A guest moved live ten times around the three daemons (each move asked of the daemon
    it runs on) finishes with output byte-identical to a plain run; the CLI attached to the
    first daemon follows it to the end; each report is consistent."""
    _moved_around(nodes, tmp_path, guest, ["2000", "4000000"], moves=10)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_migrations_racing_replication(nodes, tmp_path):
    """Soak (`bash tests/run.sh -m slow -k soak_migrations`): a file-writing guest that
    checkpoints every 0.2 s — its replica pushes race the migrations' rounds to the same peers —
    moved 40 times among the three daemons at random moments, to a random other daemon."""
    rng = random.Random(5)
    _moved_around(nodes, tmp_path, "files", ["9000", "4000000"], moves=40,
                  opts=("--checkpoint-every", "0.2"),
                  pick=lambda here, k: rng.choice([d for d in nodes if d is not here]),
                  pause=lambda: time.sleep(rng.uniform(0.0, 0.4)))


def _moved_around(nodes: list[Roostd], tmp_path, guest: str, args: list[str], moves: int,
                  opts: tuple = (), pick=None, pause=lambda: None) -> None:
    """Run `guest` attached to the first daemon, move it `moves` times (by default around
    the three in turn, each move asked of the daemon it runs on), then check its output (as
    the CLI streamed it, and as any daemon serves it) and its files against a plain run."""
    pick = pick or (lambda here, k: nodes[(nodes.index(here) + 1 + k % 2) % 3])
    if guest == "compute":
        wasm, mounts = compile_guest("spin_print"), []
    else:
        data = tmp_path / "data"
        data.mkdir()
        (data / "journal.txt").write_text("existing line\n")
        wasm, mounts = compile_guest("file_journal"), [(data, "/data")]
        opts = (*opts, "--mount", f"{data}:/data")
    native = run_native(wasm, [wasm.stem, *args], mounts=mounts, keep=tmp_path / "native")
    a = nodes[0]
    attached = subprocess.Popen([str(BIN / "roost"), "--addr", a.addr, "run", *opts, str(wasm),
                                 "--", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    exec_id = wait_until(lambda: _only_execution(a), timeout=60, what="the execution")
    here = a
    for k in range(moves):
        there = pick(here, k)
        report = migrate(here, exec_id, there)
        assert report["target"] == there.node_id and int(report["epoch"]) == k + 2
        assert not report["cold"] and int(report["rounds"]) >= 1
        here = there
        pause()
    out, err = attached.communicate(timeout=600)
    assert (out, err) == (native.stdout, native.stderr)
    assert attached.returncode == native.exit_code
    same_output(a, exec_id, native)               # asked of the first daemon: it redirects
    assert owner_of(nodes, exec_id) is here
    if guest == "files":
        copied = tmp_path / "journal.txt"
        a.roost("cp", f"{exec_id}:/data/journal.txt", str(copied), check=True)
        assert copied.read_bytes() == (native.files["/data"] / "journal.txt").read_bytes()


def _only_execution(daemon: Roostd) -> str:
    listed = json.loads(daemon.roost("--json", "ps", check=True).stdout)
    return listed[0]["id"] if listed else ""


@pytest.mark.serial
def test_durable_sleep_moves_ten_times_mid_sleep_and_wakes_on_time(nodes):
    """A guest in a 12 s durable sleep (no worker anywhere) moves around the three daemons ten
    times; the last one wakes it at the original deadline, once."""
    wasm = compile_guest("sleeper")
    native = run_native(wasm, ["sleeper", "12"])
    began = time.monotonic()
    here = nodes[0]
    exec_id = start(here, wasm, "12")
    wait_until(lambda: inspect(here, exec_id)["state"] == "SLEEPING", timeout=30, what="the sleep")
    for k in range(10):
        there = nodes[(nodes.index(here) + 1 + k % 2) % 3]
        report = migrate(here, exec_id, there)
        assert report["cold"] and inspect(there, exec_id)["owner"] == there.node_id
        here = there
    assert time.monotonic() - began < 12, "the migrations outlasted the sleep: make it longer"
    assert nodes[0].roost("wait", exec_id, timeout=60).returncode == 0
    assert time.monotonic() - began >= 12
    same_output(nodes[0], exec_id, native)
    assert int(inspect(here, exec_id)["restores"]) == 1     # woken once, where it was


def test_kill_of_the_target_during_migration_keeps_it_on_the_source(nodes):
    """kill -9 of the target while a 96 MiB guest is being pre-copied to it: the migration
    fails, the guest goes on where it was, and the target, restarted, never runs it."""
    a, b, _ = nodes
    native, exec_id = started(a, "big_rewrite", "96", "40", "50")
    wait_until(lambda: int(inspect(a, exec_id)["stdout_bytes"]) > 0, timeout=60, what="first round")
    failed: list = []
    mover = threading.Thread(target=lambda: failed.append(a.roost(
        "migrate", exec_id, "--to", b.addr, timeout=180)))
    mover.start()
    time.sleep(0.4)
    b.kill9()
    mover.join()
    assert failed[0].returncode != 0
    b.restart()
    assert a.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    same_output(a, exec_id, native)
    record = inspect(a, exec_id)
    assert record["owner"] == a.node_id and int(record["epoch"]) == 1
    on_b = held(b, exec_id)
    assert on_b is None or on_b["owner"] == a.node_id, on_b


def standby_workers(daemon: Roostd) -> float:
    found = re.search(r"^roost_standby_workers (\S+)$", daemon.metrics(), re.M)
    return float(found.group(1)) if found else -1.0


def test_a_standby_whose_source_died_goes_and_never_runs(tmp_path):
    """kill -9 of the source mid-pre-copy, and it stays away: the target's standby worker
    (as big as the guest) goes after migration.standby_timeout_seconds, the target never runs
    the execution, and the source, back, runs it to the end with the right output."""
    a, b = cluster(tmp_path / "cluster", n=2,
                   config_text="[migration]\nstandby_timeout_seconds = 2\n")
    try:
        wasm = compile_guest("big_rewrite")
        args = ["96", "40", "50"]
        native = run_native(wasm, ["big_rewrite", *args])
        exec_id = start(a, wasm, *args)
        wait_until(lambda: int(inspect(a, exec_id)["stdout_bytes"]) > 0, timeout=60, what="first round")
        mover = threading.Thread(target=lambda: a.roost("migrate", exec_id, "--to", b.addr, timeout=180))
        mover.start()
        wait_until(lambda: standby_workers(b) == 1, timeout=60, what="a standby on the target")
        a.kill9()
        mover.join()
        wait_until(lambda: standby_workers(b) == 0, timeout=30, what="the idle standby to go")
        on_b = held(b, exec_id)
        assert on_b is None or on_b["owner"] == a.node_id, on_b
        a.restart()
        assert a.roost("wait", exec_id, timeout=300).returncode == native.exit_code
        same_output(a, exec_id, native)
        assert inspect(a, exec_id)["owner"] == a.node_id
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()


def test_kill_of_the_source_after_the_handover_leaves_it_on_the_target(nodes):
    a, b, _ = nodes
    native, exec_id = started(a, "spin_print", "1500", "4000000")
    time.sleep(1)
    migrate(a, exec_id, b)
    a.kill9()
    assert b.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    same_output(b, exec_id, native)
    a.restart()                                   # it knows the execution moved: no second run
    assert inspect(a, exec_id)["owner"] == b.node_id
    same_output(a, exec_id, native)


def test_a_released_worker_exiting_late_leaves_the_execution_that_came_back(tmp_path):
    """A source's worker that its handover released can still be exiting when the execution
    comes back to that daemon: the execution runs there at once, and the late exit changes
    neither its record nor which worker the daemon follows (a COMMIT took that worker for a
    running execution and did nothing; its exit then wrote the record of the epoch before)."""
    a, b = cluster(tmp_path / "linger", n=2, env={"ROOST_FAULTS": "released_linger_ms=4000"})
    try:
        native, exec_id = started(a, "spin_print", "2000", "4000000")
        time.sleep(0.5)
        migrate(a, exec_id, b)
        migrate(b, exec_id, a)                    # a's first worker has 4 s left to exit
        record = inspect(a, exec_id)
        assert (record["owner"], record["state"], int(record["epoch"])) == (a.node_id, "RUNNING", 3)
        time.sleep(4.5)                           # ... and has exited now
        record = inspect(a, exec_id)
        assert (record["owner"], record["state"], int(record["epoch"])) == (a.node_id, "RUNNING", 3)
        assert a.roost("wait", exec_id, timeout=120).returncode == native.exit_code
        same_output(a, exec_id, native)
    finally:
        for d in (a, b):
            d.stop()


def test_a_migration_after_one_that_failed_past_its_stop_holds_the_guest_again(tmp_path):
    """A migration refused at PREPARE, after its final stop, resumes the guest in place; the
    next migration out of the same worker must hold the guest stopped again until its handover
    is decided, and the worker must exit once it is (the first migration's `resume`, left
    over, made that worker run the guest on after the handover: two running copies)."""
    marker = tmp_path / "refused"
    a, b = cluster(tmp_path / "refuse", n=2, env={"ROOST_FAULTS": f"refuse_prepare=1@{marker}"})
    try:
        native, exec_id = started(a, "spin_print", "2500", "4000000")
        time.sleep(0.5)
        refused = a.roost("migrate", exec_id, "--to", b.addr, timeout=180)
        assert refused.returncode != 0 and marker.exists(), refused.stderr
        worker = int(inspect(a, exec_id)["worker_pid"])
        migrate(a, exec_id, b)
        wait_until(lambda: worker not in _children(a), timeout=10, what="the source's worker to exit")
        assert b.roost("wait", exec_id, timeout=120).returncode == native.exit_code
        same_output(b, exec_id, native)
    finally:
        for d in (a, b):
            d.stop()


def _children(daemon: Roostd) -> list[int]:
    """The daemon's child processes (its workers, and the spare one it keeps started)."""
    children = []
    for task in Path(f"/proc/{daemon.proc.pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:        # a thread that ended meanwhile
            pass
    return children


def test_cold_migration_of_a_big_running_guest(nodes):
    """--cold moves a running 96 MiB guest that rewrites its memory in one stop-and-copy: the
    final checkpoint holds all of it (streamed to the target while the source commits it)."""
    a, b, _ = nodes
    native, exec_id = started(a, "big_rewrite", "96", "30", "50")
    wait_until(lambda: int(inspect(a, exec_id)["stdout_bytes"]) > 0, timeout=60, what="output")
    report = migrate(a, exec_id, b, "--cold")
    assert report["cold"] and int(report["rounds"]) == 0 and report["target"] == b.node_id
    assert b.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    same_output(b, exec_id, native)


def test_stale_epochs_are_refused(nodes):
    """After a handover the old owner's epoch is stale: a push carrying it is refused, and the
    daemon answers FAILED_PRECONDITION."""
    from roost.v1 import peer_pb2 as pb
    from roost.v1 import peer_pb2_grpc
    a, b, _ = nodes
    wasm = compile_guest("spin_print")
    exec_id = start(a, wasm, "1500", "4000000")
    time.sleep(0.5)
    migrate(a, exec_id, b)
    stale = pb.CheckpointHeader(id=exec_id, owner=a.node_id, epoch=1, number=1,
                                source_address=a.addr)
    with b.channel() as channel:
        with pytest.raises(grpc.RpcError) as refused:
            peer_pb2_grpc.PeerStub(channel).PushCheckpoint(iter([pb.CheckpointChunk(header=stale)]))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stale" in refused.value.details()
    b.roost("kill", exec_id)


@pytest.fixture
def async_nodes(tmp_path):
    """Three peers whose records travel only with checkpoints (`replication.ack = async`)."""
    daemons = cluster(tmp_path / "cluster",
                      config_text='[replication]\nfactor = -1\nack = "async"\n')
    yield daemons
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_a_push_of_a_checkpoint_held_already_still_stores_its_output(async_nodes):
    """A migration round's push of checkpoint N can reach a peer that a replica push of the
    same N reached first; it carries the output written since, which the peer must store (the
    pusher counts it as held from then on: dropped, it was missing from the peer's log for good
    once the execution ran there)."""
    from roost.daemon.store.records import ExecutionRecord
    from roost.v1 import control_pb2, control_pb2_grpc, peer_pb2_grpc
    from roost.v1 import peer_pb2 as pb
    a, b, _ = async_nodes
    wasm = compile_guest("spin_print")
    exec_id = start(a, wasm, "3000", "2500000")
    wait_until(lambda: a.roost("logs", exec_id).stdout, timeout=60, what="output")
    a.roost("checkpoint", exec_id, check=True)
    number = int(inspect(a, exec_id)["checkpoints"])
    with b.channel() as channel:
        peer = peer_pb2_grpc.PeerStub(channel)
        status = lambda: peer.ReplicaStatus(pb.ReplicaStatusRequest(id=exec_id), timeout=10)
        held = wait_until(lambda: (s := status()).latest_checkpoint >= number and s, timeout=60,
                          what="the replica of the checkpoint")
        with a.channel() as to_a:
            logs = lambda: list(control_pb2_grpc.ControlStub(to_a).StreamLogs(
                control_pb2.StreamLogsRequest(id=exec_id, from_seq=held.log_records), timeout=10))
            newer = wait_until(logs, timeout=60, what="output the replica lacks")
        record = ExecutionRecord(exec_id, held.module_sha256, "", [], [], [], owner=a.node_id,
                                 epoch=held.epoch)
        header = pb.CheckpointHeader(id=exec_id, owner=a.node_id, epoch=held.epoch,
                                     number=held.latest_checkpoint, record=record.to_json(),
                                     source_address=a.addr, manifest=json.dumps(
                                         {"number": held.latest_checkpoint, "memory_bytes": 0,
                                          "journal_seq": 0}).encode())
        chunks = [pb.CheckpointChunk(header=header)] + [
            pb.CheckpointChunk(log=pb.LogRecord(seq=c.seq, stream=c.stream, data=c.data)) for c in newer]
        peer.PushCheckpoint(iter(chunks), timeout=30)
        assert status().log_records == newer[-1].seq + 1
        got = list(control_pb2_grpc.ControlStub(channel).StreamLogs(
            control_pb2.StreamLogsRequest(id=exec_id, from_seq=held.log_records), timeout=10))
    assert [(c.seq, c.data) for c in got] == [(c.seq, c.data) for c in newer]
    a.roost("kill", exec_id)


def test_mutual_tls_shuts_out_another_ca(tmp_path):
    """Daemons with certificates from one CA replicate and migrate over mutual TLS; a daemon
    (or a CLI) whose certificate comes from another CA can neither push, nor migrate, nor
    call the API, and a plaintext client is refused too."""
    ours, theirs = make_ca(tmp_path / "pki", "ours"), make_ca(tmp_path / "pki", "theirs")
    good = [make_cert(ours, tmp_path / "pki", f"node{i}") for i in range(2)]
    a, b = cluster(tmp_path / "tls", n=2, tls=good)
    stranger = Roostd(tmp_path / "stranger" / "data", "--peer", a.addr,
                      tls=make_cert(theirs, tmp_path / "pki", "stranger")).start()
    try:
        wasm = compile_guest("spin_print")
        args = ["800", "3000000"]
        native = run_native(wasm, ["spin_print", *args])
        exec_id = start(a, wasm, *args, opts=("--checkpoint-every", "0.3"))
        wait_until(lambda: inspect(a, exec_id)["replicas"] == [b.node_id], timeout=60,
                   what="the replica over TLS")
        migrate(a, exec_id, b)
        assert b.roost("wait", exec_id, timeout=120).returncode == native.exit_code
        same_output(b, exec_id, native)
        for target in (a, b):                     # the stranger's CLI and its migrations
            assert stranger.roost("--addr", target.addr, "ps").returncode != 0
        other = start(stranger, wasm, *args)
        assert stranger.roost("migrate", other, "--to", a.addr).returncode != 0
        plain = subprocess.run([str(BIN / "roost"), "--addr", a.addr, "ps"], capture_output=True)
        assert plain.returncode != 0
        assert other not in a.roost("--json", "ps", "-a", check=True).stdout.decode()
        assert stranger.roost("wait", other, timeout=120).returncode == native.exit_code
    finally:
        for d in (a, b, stranger):
            d.stop()


def test_ack_all_makes_a_checkpoint_wait_for_the_replicas(tmp_path):
    """replication.ack = "all": when `roost checkpoint` returns, the peer holds that checkpoint
    already (no waiting on the background push)."""
    a, b = cluster(tmp_path / "acked", n=2, config_text='[replication]\nack = "all"\n')
    try:
        wasm = compile_guest("spin_print")
        exec_id = start(a, wasm, "1500", "4000000")
        time.sleep(0.5)
        for _ in range(3):
            done = json.loads(a.roost("--json", "checkpoint", exec_id, check=True).stdout)
            replica = held(b, exec_id)
            assert replica is not None and int(replica["checkpoints"]) >= int(done["number"]), \
                (replica, done)
        a.roost("kill", exec_id)
    finally:
        a.stop()
        b.stop()
