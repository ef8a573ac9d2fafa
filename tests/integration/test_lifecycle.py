"""Execution and module lifecycle against a real roostd: unique names, id prefixes, `rm`,
`prune`, `run --rm`, `modules rm`, the retention of ended executions, and the store space a
removal gives back (measured in LMDB's pages in use, `Store.used_bytes`).
"""
from __future__ import annotations

import json
import re

import pytest

from roost.client.api import Client
from roost.client.commands import EXIT_USAGE
from roost.client.errors import RoostClientError
from roost.daemon.store.db import Store
from roost.v1 import control_pb2 as pb
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until

MiB = 1 << 20


def _error(call) -> RoostClientError:
    with pytest.raises(RoostClientError) as err:
        call()
    return err.value


def _start(client: Client, guest: str, *args: str, name: str = "") -> pb.Execution:
    module = client.upload_module(compile_guest(guest))
    return client.start(module.sha256, name=name, argv0=guest, args=list(args))


def _used_bytes(daemon: Roostd) -> int:
    """The daemon's store pages in use, read as a second LMDB reader (the daemon runs on)."""
    store = Store(daemon.data_dir / "store", 1 << 38, readonly=True)
    try:
        return store.used_bytes()
    finally:
        store.close()


def _ids(client: Client) -> set[str]:
    return {e.id for e in client.list(all=True)}


def test_a_name_in_use_is_refused_until_its_execution_is_removed(roostd):
    client = Client(roostd.addr)
    first = _start(client, "sleeper", "60", name="job")
    err = _error(lambda: _start(client, "hello", name="job"))
    assert err.code_name == "ALREADY_EXISTS"
    assert err.message.startswith(f'name "job" is already used by execution {first.id}')
    cli = roostd.roost("run", "--name", "job", str(compile_guest("hello")))
    assert cli.returncode != 0
    assert f'name "job" is already used by execution {first.id}'.encode() in cli.stderr
    client.kill("job")               # ended, it still holds its name (as docker's containers do)
    assert _error(lambda: _start(client, "hello", name="job")).code_name == "ALREADY_EXISTS"
    assert roostd.roost("rm", "job", check=True).stdout.decode().split() == [first.id]
    again = _start(client, "hello", name="job")
    assert client.wait(again.id).state == pb.EXITED


def test_ids_resolve_by_unique_prefix(roostd):
    client = Client(roostd.addr)
    started = [_start(client, "hello").id for _ in range(2)]
    while True:                      # until two ids share a first digit (17 at most)
        ids = sorted(_ids(client))
        shared = [c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1]
        if shared:
            break
        started.append(_start(client, "hello").id)
    target = started[0]
    unique = next(target[:n] for n in range(1, 13)
                  if sum(i.startswith(target[:n]) for i in ids) == 1)
    assert client.get(unique).id == target
    assert client.wait(unique).id == target           # every id-taking call resolves it
    got = roostd.roost("inspect", "--json", unique, check=True)
    assert json.loads(got.stdout)["id"] == target
    ambiguous = shared[0]
    matches = sorted(i for i in ids if i.startswith(ambiguous))
    err = _error(lambda: client.get(ambiguous))
    assert err.code_name == "INVALID_ARGUMENT"
    assert err.message == f'"{ambiguous}" matches {len(matches)} executions: {", ".join(matches)}'
    err = _error(lambda: client.kill(ambiguous))
    assert err.code_name == "INVALID_ARGUMENT"
    err = _error(lambda: client.get("zz"))               # (ids are hex: no prefix of any)
    assert (err.code_name, err.message) == ("NOT_FOUND", "execution zz not found")
    module = client.upload_module(compile_guest("hello"))
    assert client.get_module(module.sha256[:10]).sha256 == module.sha256


def test_rm_refuses_a_running_execution_and_force_kills_it(roostd):
    client = Client(roostd.addr)
    running = _start(client, "sleeper", "60")
    err = _error(lambda: client.remove(running.id))
    assert err.code_name == "FAILED_PRECONDITION"
    assert re.fullmatch(rf"execution {running.id} is (RUNNING|SLEEPING): kill it first, or "
                        r"remove it with force \(roost rm -f\)", err.message)
    cli = roostd.roost("rm", running.id)
    assert cli.returncode != 0 and b"kill it first" in cli.stderr
    assert roostd.roost("rm", "-f", running.id[:8], check=True).stdout.decode().split() == [running.id]
    assert _error(lambda: client.get(running.id)).code_name == "NOT_FOUND"
    assert running.id not in _ids(client)


def test_rm_frees_the_store_space_of_output_and_checkpoints(fresh_roostd):
    daemon = fresh_roostd.start()
    client = Client(daemon.addr)
    _start(client, "hello")                  # (modules and a first record: not measured)
    client.upload_module(compile_guest("big_rewrite"))
    client.upload_module(compile_guest("output_flood"))
    before = _used_bytes(daemon)
    flood = _start(client, "output_flood", "6")                  # 6 MiB of output
    assert client.wait(flood.id).state == pb.EXITED
    rewrite = _start(client, "big_rewrite", "8", "100000", "50")  # 8 MiB of changing memory
    for _ in range(2):
        client.checkpoint(rewrite.id)
    client.kill(rewrite.id)
    grown = _used_bytes(daemon)
    assert grown - before > 8 * MiB, (before, grown)
    removed = [client.remove(flood.id), client.remove(rewrite.id)]
    after = _used_bytes(daemon)
    assert grown - after > 0.9 * (grown - before), (before, grown, after)
    assert sum(r.bytes_freed for r in removed) > 0.9 * (grown - before)
    for exec_id in (flood.id, rewrite.id):
        assert _error(lambda: client.logs(exec_id).__next__()).code_name == "NOT_FOUND"


def test_prune_by_age_and_state(fresh_roostd):
    daemon = fresh_roostd.start()
    client = Client(daemon.addr)
    exited = _start(client, "hello")
    failed = _start(client, "trap_unreachable")
    killed = _start(client, "sleeper", "60")
    running = _start(client, "sleeper", "60")
    client.kill(killed.id)
    assert client.wait(exited.id).state == pb.EXITED
    assert client.wait(failed.id).state == pb.FAILED
    dry = client.prune(states=[pb.KILLED], dry_run=True)
    assert list(dry.ids) == [killed.id] and dry.bytes_freed > 0
    assert client.get(killed.id).state == pb.KILLED                   # still there
    got = daemon.roost("prune", "--dry-run", "--json", "--state", "killed,failed", check=True)
    assert sorted(json.loads(got.stdout)["ids"]) == sorted([killed.id, failed.id])
    assert list(client.prune(older_than_seconds=3600).ids) == []       # all ended just now
    assert list(client.prune(states=[pb.FAILED]).ids) == [failed.id]
    got = daemon.roost("prune", "--older-than", "0s", check=True).stdout.decode().splitlines()
    assert sorted(got[:-1]) == sorted([exited.id, killed.id])
    assert got[-1].startswith("Total reclaimed space: ")
    assert _ids(client) == {running.id}
    err = _error(lambda: client.prune(states=[pb.RUNNING]))
    assert err.code_name == "INVALID_ARGUMENT"


def test_run_rm_leaves_nothing_behind(roostd):
    client = Client(roostd.addr)
    before = _ids(client)
    got = roostd.roost("run", "--rm", "--name", "gone", str(compile_guest("hello")), "--", "3")
    assert got.returncode == 3 and b"hello from" in got.stdout
    assert _ids(client) == before
    assert _error(lambda: client.get("gone")).code_name == "NOT_FOUND"
    detached = roostd.roost("run", "--rm", "-d", str(compile_guest("hello")))
    assert detached.returncode == EXIT_USAGE and b"--rm and --detach" in detached.stderr
    assert _ids(client) == before


def test_modules_rm_is_refused_while_an_execution_uses_it(fresh_roostd, tmp_path):
    fresh_roostd.cache_dir = tmp_path / "cache"        # its own: removal deletes artifacts
    daemon = fresh_roostd.start()
    client = Client(daemon.addr)
    module = client.upload_module(compile_guest("sleeper"))
    user = client.start(module.sha256, args=["60"])
    client.prepare_module(module.sha256)
    assert list(daemon.cache_dir.glob(f"{module.sha256}.*"))
    err = _error(lambda: client.remove_module(module.sha256[:6]))
    assert err.code_name == "FAILED_PRECONDITION"
    assert re.search(rf"is used by executions {user.id} \((RUNNING|SLEEPING)\)", err.message)
    assert _error(lambda: client.remove_module(module.sha256, force=True)).code_name == \
        "FAILED_PRECONDITION"                           # force never removes a running one's
    client.kill(user.id)
    assert "(KILLED)" in _error(lambda: client.remove_module(module.sha256)).message
    client.remove(user.id)
    got = daemon.roost("modules", "rm", module.sha256[:8], check=True)
    assert got.stdout.decode().split() == [module.sha256]
    assert module.sha256 not in {m.sha256 for m in client.modules()}
    assert not list(daemon.cache_dir.glob(f"{module.sha256}.*"))
    assert _error(lambda: client.get_module(module.sha256)).code_name == "NOT_FOUND"
    err = _error(lambda: client.start(module.sha256))
    assert err.code_name == "NOT_FOUND"


def test_retention_collects_ended_executions(tmp_path):
    daemon = Roostd(tmp_path / "data", config_text="[executions]\nretain_ended_seconds = 2\n")
    try:
        daemon.start()
        client = Client(daemon.addr)
        ended = _start(client, "hello")
        running = _start(client, "sleeper", "60")
        assert client.wait(ended.id).state == pb.EXITED
        wait_until(lambda: ended.id not in _ids(client), 20, what="retention to collect it")
        assert _error(lambda: client.get(ended.id)).code_name == "NOT_FOUND"
        assert client.get(running.id).state in (pb.RUNNING, pb.SLEEPING)   # (not ended: kept)
        assert "retention: removed 1 executions" in daemon.log_path.read_text()
    finally:
        daemon.stop()
