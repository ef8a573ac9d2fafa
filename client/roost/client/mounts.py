"""Mounts: `--mount HOSTDIR:GUESTDIR` specs and the host trees they copy in.

A mount is copied, not shared: the whole tree travels inside StartExecutionRequest and the
execution owns it from then on, so it survives checkpoints and migration.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from roost.client.errors import LocalError, MountError
from roost.v1 import control_pb2 as pb


@dataclass(frozen=True)
class MountSpec:
    """One parsed `--mount` flag."""

    host_dir: Path
    guest_path: str


def parse_mount_spec(spec: str) -> MountSpec:
    """Splits HOSTDIR:GUESTDIR at the last ':' (guest paths like "/app", "/", "." have none)."""
    host, sep, guest = spec.rpartition(":")
    if not sep or not host or not guest:
        raise LocalError(f"bad --mount {spec!r}: expected HOSTDIR:GUESTDIR")
    return MountSpec(Path(host), guest)


def read_mount(spec: MountSpec) -> pb.Mount:
    """Reads the host directory into a Mount (symlinks kept as links, not followed)."""
    if not spec.host_dir.is_dir():
        raise MountError(f"read mount {spec.host_dir}: not a directory")
    return pb.Mount(guest_path=spec.guest_path, entries=list(read_tree(spec.host_dir)))


def read_tree(root: Path) -> Iterator[pb.FileEntry]:
    """Every node under `root`, parents before children, siblings sorted by name.

    The order is deterministic so the same directory always yields the same request.
    """
    yield from _walk(root, "")


def _walk(directory: Path, prefix: str) -> Iterator[pb.FileEntry]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise MountError(f"read mount directory {directory}: {err.strerror}") from None
    for name in names:
        rel = f"{prefix}{name}"
        yield from _entries_for(directory / name, rel)


def _entries_for(path: Path, rel: str) -> Iterator[pb.FileEntry]:
    """The entry for one node, and for a directory everything below it."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            yield pb.FileEntry(path=rel, kind=pb.FileEntry.SYMLINK, target=os.readlink(path))
        elif stat.S_ISDIR(mode):
            yield pb.FileEntry(path=rel, kind=pb.FileEntry.DIRECTORY)
            yield from _walk(path, f"{rel}/")
        elif stat.S_ISREG(mode):
            yield pb.FileEntry(path=rel, kind=pb.FileEntry.FILE, data=path.read_bytes())
        else:
            raise MountError(f"read mount entry {path}: not a file, directory or symlink")
    except OSError as err:
        raise MountError(f"read mount entry {path}: {err.strerror}") from None
