"""Copy-out: writing the FileChunks of `roost cp` into the local filesystem.

Paths in chunks come from the daemon; they are checked to stay below the destination
before anything is written.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from roost.client.errors import LocalError
from roost.v1 import control_pb2 as pb


def guest_basename(guest_path: str) -> str:
    """The last name in a guest path; "" for "/", "." and the like."""
    name = PurePosixPath(guest_path.rstrip("/") or "/").name
    return "" if name in ("", ".", "..") else name


def destination(guest_path: str, local: Path) -> Path:
    """Where the requested path lands: into `local` under its basename if `local` is a
    directory that exists (as `cp` does), else at `local` itself."""
    name = guest_basename(guest_path)
    if local.is_dir() and name:
        return local / name
    return local


def write_chunks(chunks: Iterable[pb.FileChunk], guest_path: str, local: Path) -> Path:
    """Recreates the streamed file or tree; returns the path written for the requested path."""
    root = destination(guest_path, local)
    for chunk in chunks:
        _write_chunk(root, chunk)
    return root


def _target(root: Path, rel: str) -> Path:
    """root/rel, refusing anything that would climb out of root."""
    if not rel:
        return root
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or any(p in ("..", ".") for p in parts):
        raise LocalError(f"copy out: refusing unsafe path {rel!r} from roostd")
    return root.joinpath(*parts)


def _write_chunk(root: Path, chunk: pb.FileChunk) -> None:
    path = _target(root, chunk.path)
    if chunk.kind == pb.FileEntry.DIRECTORY:
        path.mkdir(parents=True, exist_ok=True)
    elif chunk.kind == pb.FileEntry.SYMLINK:
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(chunk.target, path)
    elif chunk.kind == pb.FileEntry.FILE:
        _write_file_part(path, chunk)
    else:
        raise LocalError(f"copy out {chunk.path!r}: unknown entry kind {chunk.kind}")


def _write_file_part(path: Path, chunk: pb.FileChunk) -> None:
    """The first part (offset 0) creates or truncates the file; later parts write in place."""
    if chunk.offset == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        with path.open("wb") as f:
            f.write(chunk.data)
        return
    with path.open("r+b") as f:
        f.seek(chunk.offset)
        f.write(chunk.data)
