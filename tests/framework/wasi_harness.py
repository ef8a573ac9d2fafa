"""Run a WASI guest two ways and capture what it did, for byte-for-byte comparison.

`run_wasmtime` uses wasmtime's built-in WASI with real temp directories as preopens;
`run_roost` runs the same module in-process on roost's `WasiHost` over a `Vfs`. Both return
a `GuestRun`: stdout, stderr, exit code (or 'trap') and the final tree of every preopen.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from roost.daemon.runtime.vfs import Entry, Vfs
from roost.daemon.runtime.wasi import GuestExit, GuestTrap, WasiHost, WasiState, initial_state

Tree = dict[str, tuple]          # relative path -> ('file', bytes) | ('dir',) | ('symlink', target)
# (guest name, {relpath: bytes | None (a dir) | ('symlink', target)})
Mounts = list[tuple[str, dict[str, bytes | None | tuple[str, str]]]]

ENGINE = wasmtime.Engine()
_MODULES: dict[str, wasmtime.Module] = {}


def module(path: str | os.PathLike) -> wasmtime.Module:
    key = str(path)
    if key not in _MODULES:
        _MODULES[key] = wasmtime.Module.from_file(ENGINE, key)
    return _MODULES[key]


@dataclass
class GuestRun:
    stdout: bytes
    stderr: bytes
    exit: int | str
    trees: dict[str, Tree] = field(default_factory=dict)


def _populate(root: Path, files: dict[str, bytes | None]) -> None:
    for rel, data in files.items():
        p = root / rel
        if data is None:
            p.mkdir(parents=True, exist_ok=True)
        elif isinstance(data, tuple):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to(data[1])
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


def host_tree(root: Path) -> Tree:
    out: Tree = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ('symlink', os.readlink(p))
            elif p.is_dir():
                out[rel] = ('dir',)
            else:
                out[rel] = ('file', p.read_bytes())
    return out


def vfs_tree(vfs: Vfs, guest_name: str) -> Tree:
    out: Tree = {}
    for e in vfs.export(guest_name):
        if e.path == '':
            continue
        out[e.path] = ('file', e.data) if e.kind == 'file' else (
            ('symlink', e.target) if e.kind == 'symlink' else ('dir',))
    return out


def run_wasmtime(wasm: str | os.PathLike, argv: list[str], env: list[tuple[str, str]] = (),
                 stdin: bytes = b'', mounts: Mounts = ()) -> GuestRun:
    with tempfile.TemporaryDirectory(prefix='wasi-ref-') as tmp:
        t = Path(tmp)
        cfg = wasmtime.WasiConfig()
        cfg.argv = argv
        cfg.env = [[k, v] for k, v in env]
        (t / 'stdin').write_bytes(stdin)
        cfg.stdin_file = str(t / 'stdin')
        cfg.stdout_file = str(t / 'stdout')
        cfg.stderr_file = str(t / 'stderr')
        roots = []
        for i, (name, files) in enumerate(mounts):
            root = t / f'm{i}'
            root.mkdir()
            _populate(root, files)
            cfg.preopen_dir(str(root), name)
            roots.append((name, root))
        store = wasmtime.Store(ENGINE)
        store.set_wasi(cfg)
        linker = wasmtime.Linker(ENGINE)
        linker.define_wasi()
        code: int | str = 0
        try:
            inst = linker.instantiate(store, module(wasm))
            inst.exports(store)['_start'](store)
        except wasmtime.ExitTrap as e:
            code = e.code
        except (wasmtime.Trap, wasmtime.WasmtimeError):
            code = 'trap'
        return GuestRun((t / 'stdout').read_bytes(), (t / 'stderr').read_bytes(), code,
                        {name: host_tree(root) for name, root in roots})


def make_vfs(mounts: Mounts) -> Vfs:
    vfs = Vfs()
    for name, files in mounts:
        vfs.add_mount(name, [Entry(rel, 'dir') if d is None else (
            Entry(rel, 'symlink', target=d[1]) if isinstance(d, tuple) else Entry(rel, 'file', d))
            for rel, d in files.items()])
    return vfs


def run_roost_state(wasm: str | os.PathLike, state: WasiState) -> tuple[GuestRun, WasiHost]:
    """Run `_start` on a host built from `state`; returns the run and the host after it."""
    out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    host = WasiHost(state, lambda fd, data: out[fd].extend(data))
    store = wasmtime.Store(ENGINE)
    linker = wasmtime.Linker(ENGINE)
    host.define(linker)
    code: int | str = 0
    try:
        inst = linker.instantiate(store, module(wasm))
        ex = inst.exports(store)
        host.bind(store, ex['memory'])
        ex['_start'](store)
    except GuestExit as e:
        code = e.code
    except (GuestTrap, wasmtime.Trap):
        code = 'trap'
    names = [name for name, _ in host.vfs.preopens]
    run = GuestRun(bytes(out[1]), bytes(out[2]), code,
                   {n: vfs_tree(host.vfs, n) for n in names})
    return run, host


def run_roost(wasm: str | os.PathLike, argv: list[str], env: list[tuple[str, str]] = (),
              stdin: bytes = b'', mounts: Mounts = ()) -> GuestRun:
    state = initial_state(argv, list(env), stdin, make_vfs(list(mounts)))
    return run_roost_state(wasm, state)[0]
