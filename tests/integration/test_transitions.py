"""The C guest corpus under every transition (CRIU's zdtm is the model): each guest of the WASI
conformance suite runs on a real roostd with a fault point armed — checkpoints every few host
calls, the first six each followed by kill -9 of the worker (so they are restored in a fresh
worker), a kill -9 of the worker at a random host call, and a kill -9 of roostd after a
checkpoint commit — and must produce exactly what wasmtime's own WASI produces: stdout, stderr,
exit code and every file.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from roost.client.conventions import EXIT_FAILED
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import Roostd, wait_until
from tests.framework.wasi_harness import host_tree, run_wasmtime
from tests.integration.test_durability import SEED
from tests.runtime.test_wasi_conformance import CASES

# Cases whose guests need no particular timing (poll sleeps are fine: they are journaled).
CORPUS = sorted(CASES)
MODES = {
    "checkpoint-restore": "checkpoint_every_calls=2,die_after_checkpoint=6",
    "kill-worker": "die_at_call={n}@{marker}",
    "kill-roostd": "checkpoint_every_calls=3,daemon_die_after_checkpoints={n}@{marker}",
}


def _mount_dirs(tmp: Path, mounts) -> list[str]:
    opts = []
    for i, (guest, files) in enumerate(mounts):
        root = tmp / f"mount{i}"
        root.mkdir()
        for rel, content in files.items():
            path = root / rel
            if content is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        opts += ["--mount", f"{root}:{guest}"]
    return opts


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    """One daemon per mode, each with its fault points armed (markers: once per test)."""
    base = tmp_path_factory.mktemp("transitions")
    out = {}
    for mode in MODES:
        out[mode] = Roostd(base / mode / "data")
    yield out
    for d in out.values():
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()


def _arm(daemon: Roostd, spec: str) -> None:
    """(Re)start the daemon with ROOST_FAULTS set for the next case."""
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.stop()
    daemon.env["ROOST_FAULTS"] = spec
    daemon.start()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", CORPUS)
def test_guest_under_transition(daemons, tmp_path, mode, case):
    guest, argv, env, stdin, mounts = CASES[case]
    wasm = compile_guest(guest)
    ref = run_wasmtime(wasm, argv, env, stdin, mounts)
    rng = random.Random(f"{SEED}-{case}-{mode}")
    marker = tmp_path / "fired"
    daemon = daemons[mode]
    _arm(daemon, MODES[mode].format(n=rng.randint(1, 12), marker=marker))

    opts = ["--argv0", argv[0]] + [a for k, v in env for a in ("--env", f"{k}={v}")]
    if stdin:
        (tmp_path / "stdin").write_bytes(stdin)
        opts += ["--stdin", str(tmp_path / "stdin")]
    opts += _mount_dirs(tmp_path, mounts)
    started = daemon.roost("run", "--detach", "--name", f"{case}-{mode}", *opts, str(wasm), "--",
                           *argv[1:], check=True)
    exec_id = started.stdout.decode().strip()
    if mode == "kill-roostd":
        _restart_when_dead(daemon, exec_id)
    waited = daemon.roost("wait", exec_id, timeout=120)
    logs = daemon.roost("logs", exec_id)
    assert logs.stdout == ref.stdout
    assert logs.stderr == ref.stderr
    expected_exit = ref.exit if isinstance(ref.exit, int) else EXIT_FAILED
    assert waited.returncode == expected_exit & 0xFF, waited.stderr
    for i, (guest_dir, _) in enumerate(mounts):
        out = tmp_path / f"out{i}"
        # --unsafe-links: the reference tree holds the escape guest's `up -> ../outside` too
        assert daemon.roost("cp", "--unsafe-links", f"{exec_id}:{guest_dir}", str(out)).returncode == 0
        assert host_tree(out) == ref.trees[guest_dir]


def _restart_when_dead(daemon: Roostd, exec_id: str) -> None:
    """The daemon kills itself after a checkpoint commit (once): start it again."""
    def ended_or_dead() -> bool:
        if daemon.proc.poll() is not None:
            return True
        state = daemon.roost("inspect", "--json", exec_id).stdout
        return b'"EXITED"' in state or b'"FAILED"' in state
    wait_until(ended_or_dead, timeout=60, interval=0.05, what="the guest to end or roostd to die")
    if daemon.proc.poll() is not None:
        daemon.start()
