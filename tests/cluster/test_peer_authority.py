"""The Peer service attacked as a hostile caller would (issue 10, finding 1): forged handovers,
epoch pushes, a push whose header and record name different executions, a malformed record, a
page-map bomb, a stray ABORT, absurd epochs — through a raw gRPC channel, in plaintext and under
mutual TLS with a client's certificate — and misconfigurations that ran executions twice: two
daemons on one data dir, two peers with one node id.

Each attack must be refused with a clear status, the execution it aimed at must run on to the
output of a plain wasmtime run, and the daemon must keep serving within a stated memory bound."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import time

import grpc
import pytest
import zstandard

from roost.daemon.checkpoint import pagemap
from roost.daemon.store.records import ExecutionRecord
from roost.v1 import control_pb2, control_pb2_grpc, peer_pb2_grpc
from roost.v1 import peer_pb2 as pb
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, cluster, make_ca, make_cert, wait_until
from tests.framework.native import run_native

ARGS = ("900", "3000000")          # spin_print: a few seconds of lines, then an exit code


def inspect(daemon: Roostd, exec_id: str) -> dict:
    return json.loads(daemon.roost("inspect", "--json", exec_id, check=True).stdout)


def start(daemon: Roostd, *opts: str) -> str:
    wasm = compile_guest("spin_print")
    return daemon.roost("run", "--detach", *opts, str(wasm), "--", *ARGS,
                        check=True).stdout.decode().strip()


@pytest.fixture(scope="module")
def native():
    wasm = compile_guest("spin_print")
    return run_native(wasm, ["spin_print", *ARGS])


def finishes_as_native(daemon: Roostd, exec_id: str, native) -> None:
    assert daemon.roost("wait", exec_id, timeout=180).returncode == native.exit_code
    logs = daemon.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)


def refused(call, *codes: grpc.StatusCode) -> str:
    """Run `call`; it must fail with one of `codes`; its details."""
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() in codes, (error.value.code(), error.value.details())
    assert len(error.value.details()) < 600
    return error.value.details()


def workers_of(daemon: Roostd) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(daemon.proc.pid), "-f", "roost.daemon.runtime.worker"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def header_of(exec_id: str, owner: str, epoch: int, number: int, record: bytes,
              source_address: str) -> pb.CheckpointHeader:
    """A push's header as a real daemon sends one (a manifest and a map of no pages), so that
    only the rule a test aims at can refuse it."""
    manifest = {"number": number, "memory_bytes": 0, "journal_seq": 0}
    return pb.CheckpointHeader(id=exec_id, owner=owner, epoch=epoch, number=number, record=record,
                               source_address=source_address, manifest=json.dumps(manifest).encode(),
                               page_map=pagemap.encode_full(pagemap.PageMap()), has_inputs=True)


def held_by(daemon: Roostd, exec_id: str) -> control_pb2.Execution:
    """The record `daemon` itself holds (the CLI would follow a replica to its owner)."""
    with daemon.channel() as ch:
        return control_pb2_grpc.ControlStub(ch).GetExecution(
            control_pb2.GetExecutionRequest(id=exec_id), timeout=10)


def push(stub, header: pb.CheckpointHeader, *more: pb.CheckpointChunk):
    return lambda: stub.PushCheckpoint(iter([pb.CheckpointChunk(header=header), *more]), timeout=20)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    a, b = cluster(tmp_path_factory.mktemp("authority"), n=2)
    yield a, b
    for d in (a, b):
        d.stop()


@pytest.fixture(scope="module")
def replicated(pair):
    """An execution running on `a`, checkpointed and replicated to `b`: (id, its status on b)."""
    a, b = pair
    exec_id = start(a, "--checkpoint-every", "0.5")
    with b.channel() as ch:
        status = lambda: peer_pb2_grpc.PeerStub(ch).ReplicaStatus(pb.ReplicaStatusRequest(id=exec_id))
        held = wait_until(lambda: (s := status()).latest_checkpoint and s, timeout=60,
                          what="a replica on b")
    return exec_id, held


def test_a_forged_handover_of_a_running_execution_is_refused(pair, native):
    """PREPARE and COMMIT from a made-up source for an execution `a` owns and runs: refused;
    no second worker; the output is the plain run's, nothing duplicated or lost."""
    a, _ = pair
    exec_id = start(a, "--checkpoint-every", "0.5")
    wait_until(lambda: int(inspect(a, exec_id)["checkpoints"]) >= 1, timeout=60, what="a checkpoint")
    epoch = int(inspect(a, exec_id)["epoch"])
    with a.channel() as ch:
        stub = peer_pb2_grpc.PeerStub(ch)
        latest = stub.ReplicaStatus(pb.ReplicaStatusRequest(id=exec_id)).latest_checkpoint
        for phase in (pb.HandoverRequest.PREPARE, pb.HandoverRequest.COMMIT):
            forged = pb.HandoverRequest(id=exec_id, phase=phase, source="mallory",
                                        source_address="127.0.0.1:1", epoch=epoch + 1,
                                        checkpoint=latest)
            details = refused(lambda: stub.Handover(forged, timeout=10),
                              grpc.StatusCode.FAILED_PRECONDITION)
            assert "owns and runs" in details or "not prepared" in details
    assert len(workers_of(a)) <= 2            # its worker and at most one warm spare
    after = inspect(a, exec_id)
    assert (after["owner"], int(after["epoch"])) == (a.node_id, epoch)
    finishes_as_native(a, exec_id, native)


def test_a_push_claiming_a_newer_epoch_does_not_take_a_running_execution(pair, native):
    """One push at epoch+1 naming another owner and address used to kill the run and send the
    CLI elsewhere; now it is refused, and ownership and address stay."""
    a, b = pair
    exec_id = start(a)
    wait_until(lambda: a.roost("logs", exec_id).stdout, timeout=60, what="output")
    before = inspect(a, exec_id)
    record = ExecutionRecord(exec_id, before["module_sha256"], "x", [], [], [])
    header = header_of(exec_id, b.node_id, int(before["epoch"]) + 1, 1, record.to_json(),
                       "127.0.0.1:9")
    with a.channel() as ch:
        details = refused(push(peer_pb2_grpc.PeerStub(ch), header), grpc.StatusCode.FAILED_PRECONDITION)
    assert "owns and runs" in details
    after = inspect(a, exec_id)
    assert (after["owner"], after["epoch"], after["state"]) == (a.node_id, before["epoch"], "RUNNING")
    finishes_as_native(a, exec_id, native)


def test_header_and_record_naming_two_executions_are_refused(pair, replicated):
    """A push for X carrying Y's record (or a record of another module) changes nothing."""
    a, b = pair
    exec_id, held = replicated
    other = start(a, "--checkpoint-every", "0.5")
    wait_until(lambda: inspect(a, other)["replicas"], timeout=60, what="a replica of the other")
    local = held_by(b, exec_id)
    for record in (ExecutionRecord(other, held.module_sha256, "x", [], [], []),
                   ExecutionRecord(exec_id, "0" * 64, "x", [], [], [])):
        header = header_of(exec_id, a.node_id, held.epoch, held.latest_checkpoint + 100_000,
                           record.to_json(), a.addr)
        with b.channel() as ch:
            refused(push(peer_pb2_grpc.PeerStub(ch), header), grpc.StatusCode.INVALID_ARGUMENT)
    assert held_by(b, exec_id).module_sha256 == local.module_sha256
    assert "x" not in (held_by(b, exec_id).module_name, held_by(b, other).module_name)
    a.roost("kill", other)


@pytest.fixture(scope="module")
def paused(pair):
    """An execution paused on `a` once `b` holds its last checkpoint: nothing pushes it again,
    so a record a test's push left on b stays there to be seen. (id, its status on b)"""
    a, b = pair
    exec_id = start(a, "--checkpoint-every", "0.5")
    wait_until(lambda: inspect(a, exec_id)["replicas"], timeout=60, what="a replica on b")
    a.roost("pause", exec_id, check=True)
    number = int(inspect(a, exec_id)["checkpoints"])
    with b.channel() as ch:
        status = lambda: peer_pb2_grpc.PeerStub(ch).ReplicaStatus(pb.ReplicaStatusRequest(id=exec_id))
        held = wait_until(lambda: (s := status()).latest_checkpoint >= number and s, timeout=60,
                          what="b holding the paused checkpoint")
    return exec_id, held


@pytest.mark.parametrize("env", [[[1, 2]], "K=V", [["K"]], [["K", None]]])
def test_a_malformed_record_is_refused_and_ps_still_works(pair, paused, env):
    a, b = pair
    exec_id, held = paused
    record = json.loads(ExecutionRecord(exec_id, held.module_sha256, "x", [], [], []).to_json())
    record["env"] = env
    header = header_of(exec_id, a.node_id, held.epoch, held.latest_checkpoint + 100_000,
                       json.dumps(record).encode(), a.addr)
    with b.channel() as ch:
        assert "env" in refused(push(peer_pb2_grpc.PeerStub(ch), header),
                                grpc.StatusCode.INVALID_ARGUMENT)
    assert held_by(b, exec_id).module_name != "x"         # b's record is the one a pushed
    assert b.roost("ps", "-a").returncode == 0


def _bomb(pages: int, declared: int) -> bytes:
    """A full page map of `pages` pages in a small zstd frame whose header declares `declared`
    bytes of content (python-zstandard allocates what a frame declares)."""
    frame = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(1 << 20))
    descriptor = frame[4]
    single = descriptor & 0x20
    size_len = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    at = 5 + (0 if single else 1)
    frame = frame[:4] + bytes([(descriptor & 0x3F) | 0xC0]) + frame[5:at] \
        + struct.pack("<Q", declared) + frame[at + size_len:]
    assert zstandard.frame_content_size(frame) == declared
    return b"RPMF" + struct.pack("<HHI", 1, 0, pages) + frame


def _genuine_bomb(pages: int) -> bytes:
    """A real full map of `pages` zero entries: 4 bytes a page, compressed to a few KB."""
    return b"RPMF" + struct.pack("<HHI", 1, 0, pages) + zstandard.ZstdCompressor(level=19).compress(
        bytes(4 * pages))


def peak_rss_kib(daemon: Roostd, reset: bool = False) -> int:
    """The daemon's peak resident memory (VmHWM), after resetting it when asked."""
    if reset:
        with open(f"/proc/{daemon.proc.pid}/clear_refs", "w") as f:
            f.write("5")
    status = open(f"/proc/{daemon.proc.pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


@pytest.mark.parametrize("bomb", ["genuine 2^25 pages", "declares 2^30 bytes", "declares 2^34 bytes"])
def test_a_page_map_bomb_is_refused_without_allocating(pair, replicated, bomb):
    """A 33 KB push whose map claims 2^28 pages raised the daemon by 2.5 GiB. The pages a map
    may have follow from the manifest's memory (300 pages here), and a zstd frame's declared
    size is checked before anything is allocated: the daemon's peak memory grows by less than
    64 MiB (a genuine 2^25-page map is 128 MiB decoded)."""
    a, b = pair
    exec_id, held = replicated
    page_map = {"genuine 2^25 pages": lambda: _genuine_bomb(1 << 25),
                "declares 2^30 bytes": lambda: _bomb(1 << 28, 1 << 30),
                "declares 2^34 bytes": lambda: _bomb(300, 1 << 34)}[bomb]()
    assert len(page_map) < 64 << 10
    record = ExecutionRecord(exec_id, held.module_sha256, "x", [], [], [])
    number = held.latest_checkpoint + 300_000 + len(bomb)      # one b does not hold: decoded
    manifest = {"number": number, "memory_bytes": 300 * 4096, "journal_seq": 0}
    header = pb.CheckpointHeader(id=exec_id, owner=a.node_id, epoch=held.epoch,
                                 number=number, record=record.to_json(),
                                 source_address=a.addr, manifest=json.dumps(manifest).encode(),
                                 page_map=page_map)
    before = peak_rss_kib(b, reset=True)
    with b.channel() as ch:
        assert "page map" in refused(push(peer_pb2_grpc.PeerStub(ch), header),
                                     grpc.StatusCode.INVALID_ARGUMENT)
    assert peak_rss_kib(b) - before < 64 << 10
    assert b.roost("ps", "-a").returncode == 0


def test_stray_aborts_and_absurd_epochs_are_refused(pair, replicated):
    a, b = pair
    exec_id, held = replicated
    with b.channel() as ch:
        stub = peer_pb2_grpc.PeerStub(ch)
        abort = pb.HandoverRequest(id=exec_id, phase=pb.HandoverRequest.ABORT, source="mallory",
                                   epoch=held.epoch + 1)
        refused(lambda: stub.Handover(abort, timeout=10), grpc.StatusCode.FAILED_PRECONDITION)
        record = ExecutionRecord(exec_id, held.module_sha256, "x", [], [], [])
        for epoch in (2 ** 64 - 1, 2 ** 60):
            header = header_of(exec_id, a.node_id, epoch, held.latest_checkpoint + 200_000,
                               record.to_json(), a.addr)
            refused(push(stub, header), grpc.StatusCode.INVALID_ARGUMENT)
        header.epoch = held.epoch + 5000                    # in range, but not a step from it
        refused(push(stub, header), grpc.StatusCode.FAILED_PRECONDITION)
        status = stub.ReplicaStatus(pb.ReplicaStatusRequest(id=exec_id))
        assert (status.owner, status.epoch) == (a.node_id, held.epoch)
        empty = pb.CheckpointHeader(id="", owner=a.node_id, epoch=1, number=1)
        refused(push(stub, empty), grpc.StatusCode.INVALID_ARGUMENT)


def test_a_daemon_with_no_peers_refuses_every_peer_call(fresh_roostd):
    """Plaintext: only the configured peers' addresses may call the Peer service."""
    fresh_roostd.start()
    with fresh_roostd.channel() as ch:
        stub = peer_pb2_grpc.PeerStub(ch)
        for call in (lambda: stub.Hello(pb.HelloRequest(node_id="x"), timeout=5),
                     lambda: stub.ReplicaStatus(pb.ReplicaStatusRequest(id="abc"), timeout=5),
                     push(stub, pb.CheckpointHeader(id="abc", owner="x", epoch=1, number=1)),
                     lambda: stub.Handover(pb.HandoverRequest(id="abc", phase=1), timeout=5),
                     lambda: stub.Decision(pb.DecisionRequest(id="abc"), timeout=5)):
            assert "for peers" in refused(call, grpc.StatusCode.PERMISSION_DENIED)
    assert fresh_roostd.roost("ps").returncode == 0


def test_under_mutual_tls_only_peer_certificates_reach_the_peer_service(tmp_path, native):
    """A CLI user's certificate (same CA) uses Control but gets PERMISSION_DENIED from every
    Peer call; a peer's certificate speaks only for its own node."""
    ca = make_ca(tmp_path / "pki", "ours")
    a, b = cluster(tmp_path / "tls", n=2, tls=[make_cert(ca, tmp_path / "pki", f"node{i}")
                                               for i in range(2)])
    user = make_cert(ca, tmp_path / "pki", "alice", role="client")
    third = make_cert(ca, tmp_path / "pki", "node9")
    try:
        exec_id = start(a, "--checkpoint-every", "0.5")
        wait_until(lambda: inspect(a, exec_id)["replicas"] == [b.node_id], timeout=60,
                   what="the replica over TLS")
        as_user = Roostd(tmp_path / "u", tls=user)
        as_user.addr = a.addr
        assert as_user.roost("ps").returncode == 0
        epoch = int(inspect(a, exec_id)["epoch"])
        for creds in (user, third):
            ca_pem, cert, key = (p.read_bytes() for p in creds)
            for target in (a, b):
                with grpc.secure_channel(target.addr, grpc.ssl_channel_credentials(
                        ca_pem, key, cert)) as ch:
                    stub = peer_pb2_grpc.PeerStub(ch)
                    handover = pb.HandoverRequest(id=exec_id, phase=pb.HandoverRequest.PREPARE,
                                                  source=a.node_id, source_address=a.addr,
                                                  epoch=epoch + 1, checkpoint=1)
                    details = refused(lambda: stub.Handover(handover, timeout=10),
                                      grpc.StatusCode.PERMISSION_DENIED)
                    assert ("for peers" in details) == (creds is user)
                    header = pb.CheckpointHeader(id=exec_id, owner=a.node_id, epoch=epoch,
                                                 number=1, source_address=a.addr)
                    refused(push(stub, header), grpc.StatusCode.PERMISSION_DENIED)
        assert inspect(a, exec_id)["owner"] == a.node_id
        finishes_as_native(a, exec_id, native)
    finally:
        for d in (a, b):
            d.stop()


def test_two_daemons_on_one_data_dir(fresh_roostd, native):
    """The second fails at once with one line naming the first, and resumes nothing: on another
    port and on the same one."""
    fresh_roostd.start()
    exec_id = start(fresh_roostd)
    wait_until(lambda: fresh_roostd.roost("logs", exec_id).stdout, timeout=60, what="output")
    workers = workers_of(fresh_roostd)
    for listen in ("127.0.0.1:0", fresh_roostd.addr):
        second = subprocess.run([str(BIN / "roostd"), "--data-dir", str(fresh_roostd.data_dir),
                                 "--listen", listen, "--metrics-listen", "", "--node-id", "second"],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"in use by another roostd (pid {fresh_roostd.proc.pid})" in second.stderr
    assert workers_of(fresh_roostd) == workers
    finishes_as_native(fresh_roostd, exec_id, native)


def test_a_busy_port_stops_a_daemon_before_it_resumes_anything(tmp_path, native):
    """Started on a port in use, roostd says so in one line and launches no worker."""
    a = Roostd(tmp_path / "a" / "data").start()
    b = Roostd(tmp_path / "b" / "data").start()
    try:
        exec_id = start(b)
        wait_until(lambda: b.roost("logs", exec_id).stdout, timeout=60, what="output")
        b.kill9()
        clash = subprocess.run([str(BIN / "roostd"), "--data-dir", str(b.data_dir), "--listen",
                                a.addr, "--metrics-listen", "", "--node-id", b.node_id],
                               capture_output=True, text=True, timeout=30)
        assert clash.returncode == 1 and "cannot listen on" in clash.stderr
        assert "Traceback" not in clash.stderr
        assert "resumed" not in clash.stderr
        b.restart()
        finishes_as_native(b, exec_id, native)
    finally:
        a.stop()
        b.stop()


def test_two_peers_with_one_node_id_never_both_run_an_execution(tmp_path, native):
    """b, configured with a's node id, refuses a's pushes (they name its own id as owner) and
    never holds, let alone runs, a's execution — also after a restart."""
    a = Roostd(tmp_path / "a" / "data")
    b = Roostd(tmp_path / "b" / "data")
    a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr, "--node-id", a.node_id]
    b.start()
    a.start()
    try:
        exec_id = start(a, "--checkpoint-every", "0.3")
        wait_until(lambda: int(inspect(a, exec_id)["checkpoints"]) >= 2, timeout=60, what="checkpoints")
        time.sleep(1.0)                       # pushes would have reached b by now
        b.stop()
        b.restart()
        assert exec_id not in b.roost("--json", "ps", "-a", check=True).stdout.decode()
        assert "own node id" in b.log() or "own node id" in a.log()
        finishes_as_native(a, exec_id, native)
        assert exec_id not in b.roost("--json", "ps", "-a", check=True).stdout.decode()
    finally:
        a.stop()
        b.stop()


def test_the_default_node_id_is_unique_and_kept(tmp_path):
    """Two installations on one host get two node ids (not the host name); a restart keeps
    its own. The log's first line names it."""
    ids = []
    for name in ("a", "b", "a"):
        d = Roostd(tmp_path / name / "data")
        d.auto_node_id = True
        d.start()
        d.stop()
        ids.append((d.data_dir / "node_id").read_text().strip())
        assert f"roostd {ids[-1]} listening" in d.log()
    assert ids[0] != ids[1] and ids[0] == ids[2]
    assert ids[0].startswith(os.uname().nodename + "-")
