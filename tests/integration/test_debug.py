"""`roost debug checkpoint` on a real daemon: a running guest's checkpoints shown as stored —
manifest, page map, frames, host state — as text and as JSON that parses; an unknown id, a
missing checkpoint and a damaged one are one line each (NOT_FOUND, NOT_FOUND, DATA_LOSS),
exit 1, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import grpc
import lmdb
import pytest

from roost.client.conventions import EXIT_ERROR
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until
from tests.integration.test_durability import SPIN, _inspect, _stdout_len


def _start(daemon: Roostd, wasm: Path, *args: str) -> str:
    return daemon.roost("run", "--detach", str(wasm), "--", *args, check=True).stdout.decode().strip()


def _one_line_error(result, says: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == EXIT_ERROR, (result.returncode, err)
    assert err.count("\n") == 1 and err.startswith("roost: ") and says in err, err
    assert "Traceback" not in err and not result.stdout
    return err


def test_debug_checkpoint_shows_what_is_stored(roostd):
    wasm = compile_guest("spin_print")
    exec_id = _start(roostd, wasm, *SPIN)
    try:
        wait_until(lambda: _stdout_len(roostd, exec_id) > 0, what="first output")
        for _ in range(2):
            roostd.roost("checkpoint", exec_id, check=True)

        text = roostd.roost("debug", "checkpoint", exec_id, check=True).stdout.decode()
        assert text.startswith(f"checkpoint 2 of {exec_id} (restorable: 2, 1)"), text
        for section in ("\nmanifest:\n", "  journal_seq:", "  memory_bytes:", "\npage map: ",
                        "\nframes: ", "VERSION  INDEX  FORMAT", "\nhost state: format 1."):
            assert section in text, (section, text)
        assert "spin_print-" in text and f"{' '.join(SPIN)}\n" in text         # (argv)

        first = json.loads(roostd.roost("debug", "checkpoint", "--json", exec_id, "1",
                                        check=True).stdout)
        assert first["id"] == exec_id and first["number"] == 1 and first["manifest"]["number"] == 1
        page_map, frames = first["page_map"], first["frames"]
        assert page_map["pages"] * 4096 == first["manifest"]["memory_bytes"]
        assert [v["version"] for v in page_map["versions"]] == [1]        # the first holds all
        stored = page_map["pages"] - page_map["zero_pages"]
        assert stored == page_map["versions"][0]["pages"] > 0
        assert frames and sum(f["pages"] for f in frames) == stored
        assert [f["index"] for f in frames] == list(range(len(frames)))
        assert all(f["format"] == "2.0" and f["bytes"] > 0 and len(f["content_checksum"]) == 8
                   for f in frames)
        host = first["host_state"]
        assert host["present"] and host["argv"][1:] == SPIN and host["open_fds"] >= 3

        second = json.loads(roostd.roost("debug", "checkpoint", "--json", exec_id, check=True).stdout)
        assert second["number"] == 2 and second["restorable"] == [2, 1]
        assert {v["version"] for v in second["page_map"]["versions"]} <= {1, 2}
    finally:
        roostd.roost("kill", exec_id)


def _status(daemon: Roostd, exec_id: str) -> tuple[grpc.StatusCode, dict]:
    """The DebugCheckpoint call's status code and trailing metadata."""
    with daemon.channel() as ch, pytest.raises(grpc.RpcError) as e:
        control_pb2_grpc.ControlStub(ch).DebugCheckpoint(pb.DebugCheckpointRequest(id=exec_id),
                                                         timeout=30)
    return e.value.code(), dict(e.value.trailing_metadata())


def test_unknown_ids_and_checkpoints_are_one_line_errors(roostd):
    _one_line_error(roostd.roost("debug", "checkpoint", "nosuchexecution"), "not found")
    assert _status(roostd, "nosuchexecution") == (
        grpc.StatusCode.NOT_FOUND, {"roost-error": "NotFound", "roost-retriable": "0"})
    wasm = compile_guest("spin_print")
    exec_id = _start(roostd, wasm, *SPIN)
    try:
        _one_line_error(roostd.roost("debug", "checkpoint", exec_id), "has no checkpoint")
        roostd.roost("checkpoint", exec_id, check=True)
        _one_line_error(roostd.roost("debug", "checkpoint", exec_id, "99"),
                        "has no checkpoint 99 (restorable: 1)")
    finally:
        roostd.roost("kill", exec_id)


def _flip_host_state(data_dir: Path, exec_id: str) -> None:
    """Flip a bit of the stored host state of the execution's checkpoints (as a disk would:
    the lmdb module directly, the daemon stopped)."""
    env = lmdb.open(str(data_dir / "store"), max_dbs=32, map_size=1 << 30)
    try:
        pages = env.open_db(b"pages", create=False)
        with env.begin(write=True) as txn:
            keys = [k for k, _ in txn.cursor(db=pages)
                    if k.startswith(exec_id.encode() + b"\x00") and k.endswith(b"/host")]
            assert keys
            for key in keys:
                value = bytearray(txn.get(key, db=pages))
                value[len(value) // 2] ^= 0x01
                txn.put(key, bytes(value), db=pages)
    finally:
        env.close()


def test_a_damaged_checkpoint_is_data_loss_in_one_line(fresh_roostd):
    daemon = fresh_roostd.start()
    exec_id = _start(daemon, compile_guest("spin_print"), *SPIN)
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
    daemon.roost("pause", exec_id, check=True)         # (paused: not restored at the restart)
    daemon.stop()
    _flip_host_state(daemon.data_dir, exec_id)
    daemon.start()
    assert _inspect(daemon, exec_id)["state"] == "PAUSED"
    err = _one_line_error(daemon.roost("debug", "checkpoint", exec_id), "corrupt")
    assert len(err) < 400
    code, trailer = _status(daemon, exec_id)
    assert code == grpc.StatusCode.DATA_LOSS and trailer["roost-retriable"] == "0"
