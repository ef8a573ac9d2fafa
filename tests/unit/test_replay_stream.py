"""A restored worker's journal streams to it after START (REPLAY frames, flow-controlled by
REPLAY_MORE), and the output its replay writes again below the stored offsets never crosses
the link: a real worker process, driven over its socketpair as roostd drives it.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import wasmtime

from roost.daemon.checkpoint import journal
from roost.daemon.link import messages as msg
from roost.daemon.link.transport import END, JOURNAL, OUTPUT, REPLAY_MORE, Link
from roost.daemon.runtime import engine
from roost.daemon.runtime.vfs import Vfs
from tests.framework.guestbuild import compile_guest

VFS = Vfs().to_bytes()
STEPS = 600
CHUNK = 50                     # records per REPLAY frame: the journal needs 12 of them


def _artifact(tmp: Path) -> Path:
    out = tmp / "steps.cwasm"
    out.write_bytes(wasmtime.Module.from_file(engine.make_engine(), str(compile_guest("steps"))).serialize())
    return out


def _spec(artifact: Path, **kw) -> msg.Spec:
    return msg.Spec(id="e1", artifact=str(artifact), module=None, argv=("steps", str(STEPS)), env=(),
                    vfs_limits={"bytes": 1 << 20, "inodes": 100, "links": 8}, **kw)


def _worker() -> tuple[subprocess.Popen, Link]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "roost.daemon.runtime.worker", str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),))
    theirs.close()
    return proc, Link(ours)


def _run(start: msg.Start, chunks: list[bytes] = ()) -> tuple[list, list[bytes], int]:
    """Run a worker to its END: its OUTPUT frames (fd, offset, data), JOURNAL records and the
    REPLAY frames it asked for. The chunks go out as the worker asks (a window of one)."""
    proc, link = _worker()
    outputs, records, asked = [], [], 0
    try:
        link.send_message(start)
        pending = list(chunks)
        if pending:
            link.send_message(msg.ReplayChunk(pending.pop(0), end=not pending))
        while True:
            frames = link.read_batch()
            assert frames is not None, "the worker went without END"
            for f in frames:
                if f.kind == OUTPUT:
                    outputs.append((f.fd, f.offset, f.data))
                elif f.kind == JOURNAL:
                    records.append(f.data)
                elif f.kind == REPLAY_MORE:
                    asked += 1
                    if pending:
                        link.send_message(msg.ReplayChunk(pending.pop(0), end=not pending))
                elif f.kind == END:
                    assert msg.End.decode(f).state == "EXITED", msg.End.decode(f)
                    return outputs, records, asked
    finally:
        link.close()
        proc.wait(timeout=30)


def _stdout(outputs: list) -> bytes:
    out = bytearray()
    for fd, offset, data in outputs:
        if fd == 1:
            assert offset <= len(out), "a gap in stdout"
            out[offset:offset + len(data)] = data
    return bytes(out)


def test_streamed_replay_drops_stored_output(tmp_path):
    artifact = _artifact(tmp_path)
    first, records, _ = _run(msg.Start(_spec(artifact), b"", VFS, b""))
    original = _stdout(first)
    assert len(records) == STEPS and original.endswith(b"\n") and b"sum " in original
    # A worker that restores from the start with the whole journal: its stdout is durable up
    # to the middle of the run, so only the rest may cross the link.
    durable = len(original) * 2 // 3
    chunks = [journal.pack_many(records[i:i + CHUNK]) for i in range(0, len(records), CHUNK)]
    spec = _spec(artifact, replay_streamed=True, durable_stdout=durable)
    again, recorded, asked = _run(msg.Start(spec, b"", VFS, b""), chunks)
    assert recorded == [], "a replay that covers the run records nothing new"
    assert asked == len(chunks), "one REPLAY_MORE per chunk taken"
    assert again and min(offset for _, offset, _ in again) == durable, "replayed output crossed the link"
    assert original[:durable] + b"".join(d for _, _, d in again) == original
