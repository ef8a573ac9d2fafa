"""No record too big to move or read (issue 10, finding 5): a single 80 MiB or 600 MiB write to
stdout and 100 MiB of files in an execution's filesystem replicate, migrate (live; the 600 MiB
one paused, so that its first replica push of ~1.2 GB need not race its end) and read back
byte for byte — output through `roost logs`, files through `roost cp` — compared with a plain
wasmtime run. Output is stored in records of at most 1 MiB; a push carries no message bigger
than a piece (1 MiB) of any value, the host state with the files included."""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from tests.framework.guestbuild import compile_guest
from tests.framework.harness import cluster, wait_until
from tests.framework.native import run_native


def _digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(1200)
# Both cases race their replication against the guest's computing: alone (serial), as CPU taken
# by other tests can let the guest end before it could move (seen in a fresh clone's run).
@pytest.mark.serial
@pytest.mark.parametrize("out_mib,files_mib,rounds", [(80, 100, 1000), (600, 0, 300)])
def test_huge_writes_and_files_replicate_migrate_and_read_back(tmp_path, out_mib, files_mib, rounds):
    wasm = compile_guest("big_records")
    (tmp_path / "in").mkdir()
    args = [str(out_mib), str(files_mib), str(rounds)]    # then 20 ms rounds: time to move it
    plain: list = []
    oracle = threading.Thread(target=lambda: plain.append(run_native(
        wasm, ["big_records", *args], mounts=[(tmp_path / "in", "/data")], keep=tmp_path / "native")))
    oracle.start()
    limits = "[limits]\nvfs_bytes = 268435456\noutput_bytes = 2147483648\n"
    a, b = cluster(tmp_path / "big", n=2, config_text=limits)
    try:
        exec_id = a.roost("run", "--detach", "--checkpoint-every", "1", "--mount",
                          f"{tmp_path / 'in'}:/data", str(wasm), "--", *args,
                          check=True).stdout.decode().strip()
        inspect = lambda d: json.loads(d.roost("inspect", "--json", exec_id, check=True).stdout)
        wait_until(lambda: int(inspect(a)["stdout_bytes"]) > out_mib << 20, timeout=300,
                   interval=0.5, what="the huge write done and the guest computing")
        if out_mib > 100:      # paused while the replica catches up (a GiB of pages and output)
            a.roost("pause", exec_id, check=True)
        wait_until(lambda: inspect(a)["replicas"], timeout=600, interval=0.5, what="a replica on b")
        moved = a.roost("migrate", exec_id, "--to", b.addr, "--json", timeout=600)
        assert moved.returncode == 0, moved.stderr.decode()
        if out_mib > 100:      # moved as it was (cold), it goes on on b
            b.roost("resume", exec_id, check=True)
        oracle.join()
        native = plain[0]
        assert b.roost("wait", exec_id, timeout=600).returncode == native.exit_code
        logs = b.roost("logs", "--stdout", exec_id, timeout=300)
        assert _digest(logs.stdout) == _digest(native.stdout)
        if files_mib:
            got = b.roost("cp", f"{exec_id}:/data", str(tmp_path / "out"), timeout=300)
            assert got.returncode == 0, got.stderr.decode()
            assert _tree(tmp_path / "out") == _tree(native.files["/data"])
    finally:
        for d in (a, b):
            d.stop()
