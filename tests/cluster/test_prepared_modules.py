"""A module pushed to a peer travels prepared: the peer compiles the sender's prepared wasm and
never runs Binaryen on it (minutes for a big guest). Two roostds with caches of their own (the
harness shares one by default, which would hide a preparation), then the registry's side of it
in process: a prepared form round trip, garbage refused, another preparation version ignored,
and the PushModule stream's bounds."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from roost.daemon.errors import InvalidRequest, LimitExceeded, ModuleRejected
from roost.daemon.modules import prepare
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.service.peer import PushedModule
from roost.daemon.store.db import Store
from roost.v1 import peer_pb2 as pb
from tests.cluster.test_cluster import inspect, migrate, same_output, start
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until
from tests.framework.native import run_native

PREPARED_LOG = re.compile(r"prepared module \w+ \((preempt|coop)\) in")   # registry._prepare's line


@pytest.fixture
def pair(tmp_path):
    """Two roostds, peers of each other, each with its own artifact cache."""
    daemons = [Roostd(tmp_path / f"node{i}" / "data") for i in range(2)]
    for i, d in enumerate(daemons):
        d.cache_dir = tmp_path / f"node{i}" / "cache"
    a, b = daemons
    a.extra, b.extra = ["--peer", b.addr], ["--peer", a.addr]
    for d in daemons:
        d.start()
    yield a, b
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_a_replica_gets_the_module_prepared(pair):
    """B receives the module with A's prepared wasm: it caches the compiled artifact without
    preparing, and runs the execution migrated to it to the same output as a plain run."""
    a, b = pair
    wasm = compile_guest("spin_print")
    args = ["2000", "2500000"]
    native = run_native(wasm, ["spin_print", *args])
    digest = hashlib.sha256(wasm.read_bytes()).hexdigest()
    exec_id = start(a, wasm, *args, opts=("--checkpoint-every", "0.3"))
    wait_until(lambda: b.node_id in inspect(a, exec_id)["replicas"], timeout=60, what="B's replica")
    assert PREPARED_LOG.search(a.log_path.read_text(errors="replace"))
    assert not PREPARED_LOG.search(b.log_path.read_text(errors="replace"))
    assert list(b.cache_dir.glob(f"{digest}.preempt.p{prepare.PREPARE_VERSION}.*.cwasm"))
    assert (b.cache_dir / f"{digest}.preempt.p{prepare.PREPARE_VERSION}.prepared.wasm").exists()

    report = migrate(a, exec_id, b)
    assert report["target"] == b.node_id
    assert b.roost("wait", exec_id, timeout=120).returncode == native.exit_code
    same_output(b, exec_id, native)
    assert not PREPARED_LOG.search(b.log_path.read_text(errors="replace"))


# ---- the registry and the stream, in process --------------------------------------------------
def registry(root, name: str) -> ModuleRegistry:
    return ModuleRegistry(Store(root / name / "store", 1 << 30), root / name / "cache", 64 << 20)


def manifest(preemptive: bool = True, version: int = prepare.PREPARE_VERSION) -> dict:
    return {"prepare_version": version, "preemptive": preemptive, "asyncify_data_bytes": 1 << 20,
            "flag_address": 0 if preemptive else -1, "data_ptr": prepare.DATA_PTR, "globals": [],
            "loops_polled": 0, "asyncify_memory_export": prepare.ASYNCIFY_MEMORY_EXPORT}


def test_prepared_forms_round_trip_without_preparing(tmp_path, monkeypatch):
    """What one registry prepared (both modes), another compiles: it stores the module and
    runs either mode without preparing."""
    wasm = compile_guest("spin_print").read_bytes()
    digest = hashlib.sha256(wasm).hexdigest()
    sender, receiver = registry(tmp_path, "a"), registry(tmp_path, "b")
    assert sender.prepared(digest) == []
    sender.add("spin_print", wasm, digest)
    sender.ensure_artifact(digest, True, wait=True)      # (the upload prepares in the background)
    sender.ensure_artifact(digest, False, wait=True)
    forms = sender.prepared(digest)
    assert [f.mode for f in forms] == ["preempt", "coop"]

    def no_preparing(*a, **k):
        raise AssertionError("the receiver prepared the module")
    monkeypatch.setattr(prepare, "prepare", no_preparing)
    assert receiver.add_prepared(digest, *forms[0])
    record, deduplicated = receiver.add("spin_print", wasm, digest, prepared=forms)
    assert record.sha256 == digest and not deduplicated
    for form in forms:
        path, got = receiver.ensure_artifact(digest, form.mode == "preempt")
        assert path.exists() and got == form.manifest
    assert receiver.prepared(digest) == forms


def test_a_kept_prepared_wasm_is_compiled_not_prepared_again(tmp_path, monkeypatch):
    """A compiled artifact gone (a new engine fingerprint, a cleaned cache) is recompiled from
    the kept prepared wasm."""
    wasm = compile_guest("spin_print").read_bytes()
    digest = hashlib.sha256(wasm).hexdigest()
    modules = registry(tmp_path, "a")
    modules.add("spin_print", wasm, digest)
    modules.ensure_artifact(digest, True, wait=True)     # (the upload prepares in the background)
    modules.artifact(digest, True).unlink()
    monkeypatch.setattr(prepare, "prepare", lambda *a, **k: pytest.fail("prepared again"))
    path, _ = modules.ensure_artifact(digest, True)
    assert path.exists()


def test_add_prepared_refuses_garbage(tmp_path):
    modules = registry(tmp_path, "a")
    digest = "ab" * 32
    with pytest.raises(ModuleRejected, match="does not compile") as e:
        modules.add_prepared(digest, "preempt", b"\0asm garbage", manifest())
    assert "\n" not in str(e.value)
    with pytest.raises(ModuleRejected, match="manifest"):
        modules.add_prepared(digest, "preempt", b"\0asm", {**manifest(), "globals": [[1, 2]]})
    with pytest.raises(ModuleRejected, match="other mode"):
        modules.add_prepared(digest, "coop", b"\0asm", manifest(preemptive=True))
    with pytest.raises(InvalidRequest, match="mode"):
        modules.add_prepared(digest, "turbo", b"\0asm", manifest())
    assert not list(modules.cache_dir.iterdir())


def test_add_prepared_ignores_another_preparation_version(tmp_path):
    modules = registry(tmp_path, "a")
    assert not modules.add_prepared("cd" * 32, "preempt", b"\0asm garbage",
                                    manifest(version=prepare.PREPARE_VERSION + 1))
    assert not list(modules.cache_dir.iterdir())


def pushed(modules: ModuleRegistry, *parts: pb.ModuleChunk) -> PushedModule:
    p = PushedModule(modules)
    for part in parts:
        p.take(part)
    return p


def test_push_stream_bounds(tmp_path):
    """A form's mode, size and manifest are checked before its bytes are taken."""
    modules = registry(tmp_path, "a")
    head = pb.ModuleChunk(header=pb.ModuleHeaderPeer(sha256="ab" * 32, name="m", size_bytes=4))
    form = lambda **k: pb.ModuleChunk(prepared=pb.PreparedHeader(**{
        "mode": "preempt", "size_bytes": 4, "manifest_json": json.dumps(manifest()).encode(), **k}))
    with pytest.raises(InvalidRequest, match="mode"):
        pushed(modules, head, pb.ModuleChunk(chunk=b"\0asm"), form(mode="turbo"))
    with pytest.raises(LimitExceeded):
        pushed(modules, head, pb.ModuleChunk(chunk=b"\0asm"), form(size_bytes=modules.max_prepared_bytes + 1))
    with pytest.raises(LimitExceeded):
        pushed(modules, head, pb.ModuleChunk(chunk=b"\0asm"), form(manifest_json=b" " * (2 << 20)))
    with pytest.raises(InvalidRequest, match="second preempt"):
        pushed(modules, head, form(), pb.ModuleChunk(chunk=b"\0asm"), form())
    with pytest.raises(InvalidRequest, match="more bytes"):
        pushed(modules, head, form(), pb.ModuleChunk(chunk=b"\0asm!"))
    with pytest.raises(InvalidRequest, match="truncated"):
        pushed(modules, head, pb.ModuleChunk(chunk=b"\0asm"), form(), pb.ModuleChunk(chunk=b"\0a")).store()
    with pytest.raises(InvalidRequest, match="header"):
        pushed(modules, pb.ModuleChunk(chunk=b"\0asm"))
