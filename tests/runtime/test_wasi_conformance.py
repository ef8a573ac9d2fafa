"""roost's WASI against wasmtime's built-in WASI, byte for byte, plus save/restore.

Each C guest under tests/guests/ runs twice: under wasmtime's own WASI (real temp dirs) and
in-process on roost's `WasiHost` (a `Vfs`); stdout, stderr, exit code and every file in every
preopen must be identical. The guests print only what both runtimes legitimately agree on.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from roost.daemon.runtime.vfs import Vfs
from roost.daemon.runtime.wasi import PROVIDED_FUNCTIONS, WasiHost, initial_state
from tests.framework.guestbuild import compile_guest
from tests.framework.shared_guests import guests_dir
from tests.framework.wasi_harness import make_vfs, run_roost, run_roost_state, run_wasmtime

WORK = {'input.txt': b'some input\nsecond line\n', 'sub': None, 'sub/inner.txt': b'inner'}
APP = {'in.txt': b'app input', 'sub': None, 'sub/inner.txt': b'inner'}
STDIN = bytes(range(256)) * 3 + b'tail without newline'

# name -> (guest, argv, env, stdin, mounts)
CASES = {
    'hello': ('hello', ['hello'], [], b'', []),
    'hello-exit7': ('hello', ['hello', '7'], [], b'', []),
    'args_env': ('args_env', ['prog', 'a b', '', 'ünï', '--flag=1'],
                 [('HOME', '/home/x'), ('EMPTY', ''), ('EQ', 'a=b')], b'', []),
    'clocks': ('clocks', ['clocks'], [], b'', []),
    'random': ('random', ['random'], [], b'', []),
    'stdin_echo': ('stdin_echo', ['stdin_echo'], [], STDIN, []),
    'stdin_empty': ('stdin_echo', ['stdin_echo'], [], b'', []),
    'exit0': ('exitcode', ['exitcode', '0'], [], b'', []),
    'exit3': ('exitcode', ['exitcode', '3'], [], b'', []),
    'exit125': ('exitcode', ['exitcode', '125'], [], b'', []),
    'exit200': ('exitcode', ['exitcode', '200'], [], b'', []),
    'sockets': ('sockets', ['sockets'], [], b'', [('/app', dict(APP))]),
    'poll': ('poll', ['poll'], [], b'ready input', []),
    'files': ('files', ['files'], [], b'', [('/work', dict(WORK))]),
    'escape': ('escape', ['escape'], [], b'', [('/app', dict(APP))]),
}
GUESTS = sorted({c[0] for c in CASES.values()})


@pytest.fixture(scope='module')
def wasm() -> dict[str, Path]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(GUESTS, pool.map(compile_guest, GUESTS)))


@pytest.mark.parametrize('case', sorted(CASES))
def test_guest_matches_wasmtime(case: str, wasm: dict[str, Path]) -> None:
    guest, argv, env, stdin, mounts = CASES[case]
    ref = run_wasmtime(wasm[guest], argv, env, stdin, mounts)
    got = run_roost(wasm[guest], argv, env, stdin, mounts)
    assert got.stdout.decode(errors='replace') == ref.stdout.decode(errors='replace')
    assert got.stdout == ref.stdout
    assert got.stderr == ref.stderr
    assert got.exit == ref.exit
    assert got.trees == ref.trees


def test_all_preview1_functions_provided() -> None:
    assert len(PROVIDED_FUNCTIONS) == 46
    assert {'fd_write', 'path_open', 'poll_oneoff', 'proc_exit', 'sock_accept'} <= PROVIDED_FUNCTIONS


def test_calls_are_counted(wasm: dict[str, Path]) -> None:
    state = initial_state(['hello'], [], b'', Vfs())
    run, host = run_roost_state(wasm['hello'], state)
    assert run.exit == 0
    assert host.calls['fd_write'] >= 1
    assert sum(host.calls.values()) >= host.calls['fd_write']


def test_save_restore_between_runs(wasm: dict[str, Path]) -> None:
    """A guest's files survive save -> to_bytes -> from_bytes -> restore into a second run."""
    mounts = [('/work', dict(WORK))]
    state = initial_state(['files'], [], b'', make_vfs(mounts))
    first, host = run_roost_state(wasm['files'], state)
    saved = host.save()
    restored = WasiHost(saved, lambda fd, b: None).save()
    assert restored.clocks.monotonic_ns >= saved.clocks.monotonic_ns
    assert restored.__class__(**{**restored.__dict__, 'clocks': saved.clocks}) == saved
    vfs2 = Vfs.from_bytes(host.vfs.to_bytes())
    assert vfs2.save() == host.vfs.save()
    # The second run sees the first run's outputs: same result as wasmtime on that tree.
    tree = {p: (None if v[0] == 'dir' else (v if v[0] == 'symlink' else v[1]))
            for p, v in first.trees['/work'].items()}
    again = initial_state(['files'], [], b'', vfs2)
    run2, _ = run_roost_state(wasm['files'], again)
    ref2 = run_wasmtime(wasm['files'], ['files'], [], b'', [('/work', tree)])
    assert run2.stdout == ref2.stdout
    assert run2.trees == ref2.trees


def test_stdin_position_survives_restore(wasm: dict[str, Path]) -> None:
    state = initial_state(['stdin_echo'], [], STDIN, Vfs())
    _, host = run_roost_state(wasm['stdin_echo'], state)
    saved = host.save()
    assert saved.stdin.position == len(STDIN)
    run2, _ = run_roost_state(wasm['stdin_echo'], saved)
    assert run2.stdout.startswith(b'\n[read 0 bytes')


def _guests_dir() -> Path:
    return guests_dir() or Path('/nonexistent')


def _cases() -> list[Path]:
    root = _guests_dir() / 'cases'
    return sorted(p for p in root.iterdir() if (p / 'case.json').exists()) if root.is_dir() else []


@pytest.mark.guests
@pytest.mark.skipif(not _cases(), reason='third-party guests not present')
@pytest.mark.parametrize('case_dir', _cases(), ids=lambda p: p.name)
def test_third_party_guest(case_dir: Path) -> None:
    spec = json.loads((case_dir / 'case.json').read_text())
    if spec.get('kind', 'command') != 'command' or spec.get('wasm_exceptions'):
        pytest.skip('not a plain command guest')
    root = _guests_dir()
    files = {f: (case_dir / f).read_bytes() for f in spec.get('files', [])}
    mounts = [(guest, dict(files)) for _host, guest in spec.get('preopens', [])]
    stdin = (case_dir / spec['stdin']).read_bytes() if spec.get('stdin') else b''
    wasm_path = root / spec['wasm'][1:] if spec['wasm'].startswith('@') else Path(spec['wasm'])
    run = run_roost(wasm_path, spec['argv'], list(spec.get('env', {}).items()), stdin, mounts)
    exp = spec['expected']
    assert run.exit == exp['exit']
    assert hashlib.sha256(run.stdout).hexdigest() == exp['stdout_sha256']
    assert hashlib.sha256(run.stderr).hexdigest() == exp['stderr_sha256']
    for name, digest in exp.get('files', {}).items():
        data = run.trees[mounts[0][0]][name][1]
        assert hashlib.sha256(data).hexdigest() == digest


@pytest.mark.serial
def test_hostcall_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """Median cost of one trivial host call (clock_time_get), measured in-process."""
    import statistics
    import time
    w = compile_guest('hostcall_loop')
    n = 50_000

    def timed(count: int) -> float:
        t0 = time.perf_counter()
        assert run_roost(w, ['loop', str(count)]).exit == 0
        return time.perf_counter() - t0
    base = statistics.median(timed(0) for _ in range(3))
    per_call_us = (statistics.median(timed(n) for _ in range(3)) - base) / n * 1e6
    with capsys.disabled():
        print(f'\n[roost] one clock_time_get host call: {per_call_us:.2f} us (median)')
    assert per_call_us < 50
