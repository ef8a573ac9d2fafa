"""Checkpoints on a real daemon: `roost checkpoint`, `pause`/`resume`, periodic checkpoints, and
restores from a checkpoint after kill -9 — always byte-identical to a plain wasmtime run."""
from __future__ import annotations

import json
import random
import re
import subprocess
import time

import pytest

from roost.client.conventions import EXIT_ERROR, EXIT_FAILED
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, Roostd, process_alive, wait_until
from tests.framework.native import run_native
from tests.integration.test_durability import SEED, SPIN, _inspect, _kill_worker, _stdout_len


def _start(daemon, wasm, *args, opts=()):
    return daemon.roost("run", "--detach", *opts, str(wasm), "--", *args, check=True).stdout.decode().strip()


def test_checkpoint_pause_resume(roostd):
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", *SPIN])
    exec_id = _start(roostd, wasm, *SPIN)
    wait_until(lambda: _stdout_len(roostd, exec_id) > 0, what="first output")
    got = roostd.roost("checkpoint", exec_id)
    assert got.returncode == 0, got.stderr
    assert re.match(rb"checkpoint 1 of \w+: paused [\d.]+ ms", got.stdout), got.stdout
    report = json.loads(roostd.roost("checkpoint", "--json", exec_id, check=True).stdout)
    assert report["number"] == 2 and report["stored_bytes"] > 0 and report["memory_bytes"] >= 65536

    assert roostd.roost("pause", exec_id).returncode == 0
    paused = _inspect(roostd, exec_id)
    assert paused["state"] == "PAUSED" and paused["checkpoints"] == 3
    time.sleep(0.3)
    assert _inspect(roostd, exec_id)["stdout_bytes"] == paused["stdout_bytes"]   # really stopped
    waiter = subprocess.Popen([str(BIN / "roost"), "--addr", roostd.addr, "wait", exec_id])
    time.sleep(0.5)
    assert waiter.poll() is None                     # a paused execution has not ended
    assert roostd.roost("resume", exec_id).returncode == 0
    assert waiter.wait(timeout=300) == native.exit_code
    assert roostd.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    logs = roostd.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)


def test_restore_from_checkpoint_after_kill9(roostd):
    rng = random.Random(SEED + 11)
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", *SPIN])
    exec_id = _start(roostd, wasm, *SPIN, opts=("--checkpoint-every", "0.2"))
    kills = 0
    for _ in range(4):
        time.sleep(rng.uniform(0.2, 0.6))
        kills += _kill_worker(roostd, exec_id)
    assert kills >= 1
    assert roostd.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    logs = roostd.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr), f"seed {SEED}"
    record = _inspect(roostd, exec_id)
    assert record["checkpoints"] >= 2 and record["restores"] == kills


def test_pause_survives_a_daemon_restart(fresh_roostd):
    daemon = fresh_roostd.start()
    wasm = compile_guest("spin_print")
    native = run_native(wasm, ["spin_print", *SPIN])
    exec_id = _start(daemon, wasm, *SPIN)
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
    assert daemon.roost("pause", exec_id).returncode == 0
    daemon.kill9()
    daemon.start()
    assert _inspect(daemon, exec_id)["state"] == "PAUSED"      # not resumed on its own
    assert daemon.roost("resume", exec_id).returncode == 0
    assert daemon.roost("wait", exec_id, timeout=300).returncode == native.exit_code
    assert daemon.roost("logs", "--stdout", exec_id).stdout == native.stdout


def test_checkpoint_errors(roostd):
    wasm = compile_guest("spin_print")
    exec_id = _start(roostd, wasm, "3")
    roostd.roost("wait", exec_id)
    done = roostd.roost("checkpoint", exec_id)
    assert done.returncode == EXIT_ERROR and b"not running" in done.stderr
    assert roostd.roost("resume", exec_id).returncode == EXIT_ERROR
    assert roostd.roost("checkpoint", "nope").returncode == EXIT_ERROR


def test_checkpoint_metrics(roostd):
    text = roostd.metrics()
    for name in ("roost_checkpoint_pause_seconds", "roost_checkpoint_duration_seconds",
                 "roost_time_to_safepoint_seconds", "roost_checkpoint_bytes_total",
                 "roost_journal_records_total", "roost_restores_total"):
        assert name in text, name


@pytest.mark.serial
def test_durable_sleep_wakes_at_the_original_deadline_across_restarts(fresh_roostd):
    """A guest sleeping 10 s; roostd killed after 3 s, restarted after 6 s: it wakes within half
    a second of its original deadline, its worker released while it sleeps."""
    daemon = fresh_roostd.start()
    wasm = compile_guest("sleeper")
    exec_id = _start(daemon, wasm, "10")
    t0 = time.time()
    wait_until(lambda: _inspect(daemon, exec_id)["state"] == "SLEEPING", timeout=10, what="SLEEPING")
    pid = int(_inspect(daemon, exec_id)["worker_pid"])
    wait_until(lambda: not process_alive(pid), timeout=5, what="the sleeping guest's worker to exit")
    time.sleep(max(0.0, t0 + 3 - time.time()))
    daemon.kill9()
    time.sleep(max(0.0, t0 + 6 - time.time()))
    daemon.start()
    assert _inspect(daemon, exec_id)["state"] == "SLEEPING"
    wait_until(lambda: b"woke" in daemon.roost("logs", "--stdout", exec_id).stdout, timeout=20,
               interval=0.01, what="the guest to wake")
    woke = time.time() - t0
    assert 10 - 0.5 <= woke <= 10 + 0.5, woke
    assert daemon.roost("wait", exec_id, timeout=30).returncode == 0
    assert daemon.roost("logs", "--stdout", exec_id).stdout == (
        b"sleeping 10.0 s\nwoke after at least the requested time: yes\n")    # as under wasmtime





def test_full_store_pauses_the_execution_and_loses_nothing(tmp_path):
    """A store too small for a guest's output: the execution pauses with the reason (it is not
    failed, nothing is corrupted); after restarting roostd with room, resume finishes it with
    exactly the output of a plain run."""
    small = Roostd(tmp_path / "data", config_text="[store]\nmap_size_bytes = 8388608\n").start()
    try:
        wasm = compile_guest("spin_print")
        args = ["400000", "100"]           # about 11 MB of output
        native = run_native(wasm, ["spin_print", *args])
        exec_id = _start(small, wasm, *args)
        wait_until(lambda: _inspect(small, exec_id)["state"] != "RUNNING", timeout=120,
                   what="the execution to stop")
        record = _inspect(small, exec_id)
        assert record["state"] == "PAUSED" and "store is full" in record["error"], record
        assert small.roost("ps").returncode == 0              # the daemon carries on
    finally:
        small.stop()
    roomy = Roostd(tmp_path / "data", config_text="[store]\nmap_size_bytes = 268435456\n").start()
    try:
        assert roomy.roost("resume", exec_id).returncode == 0
        assert roomy.roost("wait", exec_id, timeout=300).returncode == native.exit_code
        logs = roomy.roost("logs", exec_id)
        assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
    finally:
        roomy.stop()


def test_kill_during_the_background_write_keeps_the_previous_checkpoint(tmp_path):
    """The worker dies halfway through sending checkpoint 2 (compression and the send run after
    the guest resumed): the torn checkpoint is never stored, checkpoint 1 restores, and the
    output is byte-identical."""
    daemon = Roostd(tmp_path / "data", env={
        "ROOST_FAULTS": f"die_mid_checkpoint_send=2@{tmp_path / 'fired'}"}).start()
    try:
        wasm = compile_guest("spin_print")
        native = run_native(wasm, ["spin_print", *SPIN])
        exec_id = _start(daemon, wasm, *SPIN, opts=("--checkpoint-every", "0.3"))
        assert daemon.roost("wait", exec_id, timeout=300).returncode == native.exit_code
        assert (tmp_path / "fired").exists()
        logs = daemon.roost("logs", exec_id)
        assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
        assert _inspect(daemon, exec_id)["restores"] == 1
    finally:
        daemon.stop()


def test_corrupt_checkpoint_is_reported_on_restore(tmp_path):
    """A page frame damaged on disk: resume fails the execution naming the checksum, it does
    not run on corrupt memory."""
    import struct as _struct

    from roost.daemon.store.db import Store, log_key
    daemon = Roostd(tmp_path / "data").start()
    wasm = compile_guest("spin_print")
    exec_id = _start(daemon, wasm, *SPIN)
    wait_until(lambda: _stdout_len(daemon, exec_id) > 0, what="first output")
    assert daemon.roost("pause", exec_id).returncode == 0
    number = _inspect(daemon, exec_id)["checkpoints"]
    daemon.stop()
    store = Store(tmp_path / "data" / "store", 1 << 30)
    key = log_key(exec_id, 1) + b"/f" + _struct.pack(">I", 0)
    with store.txn("damaging a frame", write=True) as txn:
        frame = bytearray(txn.get(key, db=store.dbs["pages"]))
        frame[-10] ^= 0x55
        txn.put(key, bytes(frame), db=store.dbs["pages"])
    store.close()
    daemon.start()
    try:
        assert daemon.roost("resume", exec_id).returncode == 0
        assert daemon.roost("wait", exec_id, timeout=60).returncode == EXIT_FAILED
        error = _inspect(daemon, exec_id)["error"]
        assert f"restoring checkpoint {number}" in error and ("checksum" in error or "decode" in error), error
    finally:
        daemon.stop()


def test_inspect_and_metrics_report_tracker_and_restore_time(roostd):
    wasm = compile_guest("spin_print")
    exec_id = _start(roostd, wasm, *SPIN)
    wait_until(lambda: _stdout_len(roostd, exec_id) > 0, what="first output")
    assert roostd.roost("pause", exec_id).returncode == 0
    assert roostd.roost("resume", exec_id).returncode == 0
    wait_until(lambda: "restore_duration" in _inspect(roostd, exec_id), what="restore time")
    record = _inspect(roostd, exec_id)
    assert record["dirty_tracker"] in ("uffd-wp-async", "hash")
    text = roostd.metrics()
    assert "roost_restore_seconds_count" in text and "roost_dirty_tracker_info" in text
    roostd.roost("kill", exec_id)


@pytest.mark.serial     # checkpoint 2 must come before the guest ends: starved under load, it did not
def test_large_checkpoints_stream_in_parts_and_a_torn_one_is_discarded(tmp_path):
    """64 MiB rewritten every round: each checkpoint reaches the daemon in parts, written while
    the rest is compressed. The worker dies after the first part of checkpoint 2: those frames
    are never used, checkpoint 1 (itself streamed) restores, and the output is byte-identical."""
    daemon = Roostd(tmp_path / "data", env={
        "ROOST_FAULTS": f"die_mid_checkpoint_send=2@{tmp_path / 'fired'}"}).start()
    try:
        wasm = compile_guest("big_rewrite")
        args = ["64", "12", "150"]
        native = run_native(wasm, ["big_rewrite", *args])
        exec_id = _start(daemon, wasm, *args, opts=("--checkpoint-every", "0.5"))
        assert daemon.roost("wait", exec_id, timeout=300).returncode == native.exit_code == 0
        assert (tmp_path / "fired").exists()
        logs = daemon.roost("logs", exec_id)
        assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
        info = _inspect(daemon, exec_id)
        assert info["restores"] == 1 and info["checkpoints"] >= 2, info
    finally:
        daemon.stop()
    from roost.daemon.store.checkpoints import PageStore
    from roost.daemon.store.db import Store
    store = Store(tmp_path / "data" / "store", 1 << 30)
    try:
        pages = PageStore(store)
        _, stats = pages.checkpoint(exec_id, pages.restorable(exec_id)[0])
        assert stats.parts is not None and stats.parts >= 2, stats
        assert stats.dirty_pages is not None and stats.dirty_pages > 2048, stats
    finally:
        store.close()


def test_checkpoints_asked_faster_than_they_are_written_wait_and_say_so(roostd):
    """64 MiB rewritten every round and a checkpoint asked every 20 ms: each one waits for the
    previous one's write instead of piling up (the wait is in the manifests and the metric),
    and the output stays byte-identical."""
    wasm = compile_guest("big_rewrite")
    args = ["64", "10", "50"]
    native = run_native(wasm, ["big_rewrite", *args])
    before = _metric_sum(roostd, "roost_checkpoint_wait_seconds")
    exec_id = _start(roostd, wasm, *args, opts=("--checkpoint-every", "0.02"))
    assert roostd.roost("wait", exec_id, timeout=300).returncode == native.exit_code == 0
    logs = roostd.roost("logs", exec_id)
    assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
    assert _inspect(roostd, exec_id)["checkpoints"] >= 3
    assert _metric_sum(roostd, "roost_checkpoint_wait_seconds") > before


def _metric_sum(daemon, name: str) -> float:
    match = re.search(rf"^{name}_sum (\S+)$", daemon.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def test_hashing_tracker_checkpoints_and_restores_the_same(tmp_path):
    """Where userfaultfd is unavailable (here: chosen by ROOST_DIRTY_TRACKER=hash) the hashing
    tracker finds the written pages: periodic checkpoints, a kill -9 of the worker, a restore,
    byte-identical output; inspect and the metrics say which tracker it was."""
    daemon = Roostd(tmp_path / "data", env={"ROOST_DIRTY_TRACKER": "hash"}).start()
    try:
        wasm = compile_guest("big_rewrite")
        args = ["16", "12", "100"]
        native = run_native(wasm, ["big_rewrite", *args])
        exec_id = _start(daemon, wasm, *args, opts=("--checkpoint-every", "0.3"))
        wait_until(lambda: _inspect(daemon, exec_id)["checkpoints"] >= 2, timeout=60,
                   what="two checkpoints")
        assert _kill_worker(daemon, exec_id)
        assert daemon.roost("wait", exec_id, timeout=300).returncode == native.exit_code == 0
        logs = daemon.roost("logs", exec_id)
        assert (logs.stdout, logs.stderr) == (native.stdout, native.stderr)
        info = _inspect(daemon, exec_id)
        assert info["dirty_tracker"] == "hash" and info["restores"] >= 1, info
        assert 'tracker="hash"' in daemon.metrics()
    finally:
        daemon.stop()
