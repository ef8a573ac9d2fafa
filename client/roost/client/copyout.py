"""Copy-out: writing the FileChunks of `roost cp` into the local filesystem.

The stream comes from a daemon (which the CLI may have been redirected to) and describes what a
guest made: neither is trusted, so nothing it says can make this module touch anything outside
the destination.

* Nothing is resolved by path name. The destination's directory is opened once; every file,
  directory and link below it is created relative to an open directory descriptor (`dir_fd=`),
  and every directory is opened from its parent with O_NOFOLLOW: no symlink is ever followed,
  whether it was on disk before or made by this copy.
* A symlink already where a file or directory is to be written is refused (LocalError), never
  written through; one where a symlink is to be made is replaced (unlinking a link touches
  nothing else).
* Every name is one plain component: not empty, '.' or '..', no '/' or NUL, at most 255 bytes.
* Symlinks are made last, once the whole tree is known, and only those whose target stays in
  the copied tree: resolved component by component from the link's own directory, through the
  other links of the stream, the target must never climb above the tree's root (`leaves_tree`).
  Absolute and climbing ones are skipped with a warning unless `unsafe_links` (`roost cp
  --unsafe-links`). Links already in the destination before the copy are not looked at (the
  copy never follows them, so they cannot redirect it).
* Case-insensitive filesystems (APFS, HFS+, NTFS, ext4 casefold): two names of one directory
  that differ only in case or Unicode normalisation are one entry there, so the second would
  overwrite the first. When a directory gets such a second name, the two are compared on disk;
  if they are the same entry the second is skipped with a warning (and its contents with it).
  Link targets are checked both with names as they are and case-folded.
* A file's data comes once per inode: its other names are HARDLINK entries, made with link(2)
  (or copied locally where the filesystem has no hard links).
* Memory is one chunk at a time, the names along the current path, and the paths (not data)
  of the symlinks and of the files with several names; at most MAX_OPEN_DIRS directory
  descriptors stay open however deep the tree is.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from roost.client.errors import LocalError
from roost.client.localfs import (
    MAX_TARGET_BYTES,
    DirChain,
    base_of,
    create_file,
    fold,
    fold_links,
    hard_link,
    leaves_tree,
    open_base,
    open_dir,
    same_entry,
    same_entry_in,
    short,
    split_path,
    write_all,
)
from roost.v1 import control_pb2 as pb

Warn = Callable[[str], None]


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


def write_chunks(chunks: Iterable[pb.FileChunk], guest_path: str, local: Path,
                 unsafe_links: bool = False, warn: Warn | None = None) -> Path:
    """Recreates the streamed file or tree; returns the path written for the requested path."""
    root = destination(guest_path, local)
    existing_dir = local.is_dir() and not guest_basename(guest_path)
    with TreeWriter(root, existing_dir, unsafe_links, warn or _warn) as writer:
        for chunk in chunks:
            writer.write(chunk)
        writer.finish()
    return root


def _warn(message: str) -> None:
    sys.stderr.write(f"roost: warning: {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- the writer


@dataclass
class _OpenFile:
    rel: str
    fd: int
    written: int


class TreeWriter:
    """Writes one copy-out stream below `root`; see the module docstring for the rules.

    `existing_dir`: `root` is a directory the user named (it may be reached through a symlink
    of theirs); otherwise `root` is created (or reused) as a name in its parent directory, with
    the same rules as every name below it."""

    def __init__(self, root: Path, existing_dir: bool, unsafe_links: bool, warn: Warn) -> None:
        self.root = root
        self._unsafe_links = unsafe_links
        self._warn = warn
        base_path, self._prefix = base_of(root, existing_dir)
        self._base_path = base_path
        self._base = open_base(base_path)
        self._dirs = DirChain(self._base, self._show_parts)
        self._file: _OpenFile | None = None
        self._skipped: set[str] = set()          # written nowhere: their contents neither
        self._link_paths: set[str] = set()       # symlinks sent: nothing may be inside them
        self._pending_links: list[tuple[str, str]] = []   # (path, target), made at the end
        self._linkable: set[str] = set()         # files with more names (HARDLINK targets)
        self._handlers = {pb.FileEntry.DIRECTORY: self._directory, pb.FileEntry.FILE: self._new_file,
                          pb.FileEntry.SYMLINK: self._symlink, pb.FileEntry.HARDLINK: self._hardlink}

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every descriptor; an unfinished copy stays as far as it got."""
        self._close_file()
        self._dirs.close()
        if self._base >= 0:
            os.close(self._base)
            self._base = -1

    def write(self, chunk: pb.FileChunk) -> None:
        """Applies one chunk of the stream."""
        if chunk.kind == pb.FileEntry.FILE and chunk.offset:
            self._continue_file(chunk)
            return
        self._close_file()
        parts = split_path(chunk.path)
        if parts and self._inside_skipped(chunk.path):
            return
        handler = self._handlers.get(chunk.kind)
        if handler is None:
            raise LocalError(f"copy out {short(repr(chunk.path))}: unknown entry kind "
                             f"{chunk.kind}")
        handler(chunk.path, parts, chunk)

    def finish(self) -> None:
        """The end of the stream: makes the symlinks that stay inside the tree."""
        self._close_file()
        links = dict(self._pending_links)
        folded = fold_links(links)
        for path, target in self._pending_links:
            parts = split_path(path)
            if self._unsafe_links or not leaves_tree(parts, target, links, folded):
                self._make_symlink(path, parts, target)
            else:
                self._warn(f"skipped symlink {self._show(path)} -> {short(target)}: it points "
                           "outside the copied tree (roost cp --unsafe-links makes it anyway)")

    # ---- entries ---------------------------------------------------------------------
    def _inside_skipped(self, rel: str) -> bool:
        """Whether `rel` lies in a directory that was skipped (then it is skipped too) or in a
        symlink (a daemon sends no such thing: refused)."""
        parent = rel.rpartition("/")[0]
        if parent in self._link_paths:
            raise LocalError(f"copy out: refusing {self._show(rel)}: roostd sent it inside the "
                             f"symlink {self._show(parent)}")
        if parent in self._skipped:
            self._skipped.add(rel)
            return True
        return False

    def _directory(self, rel: str, parts: list[str], chunk: pb.FileChunk) -> None:
        full = self._prefix + parts
        if not full:
            return                       # the user's existing directory itself
        parent = self._dirs.enter(full[:-1])
        if not self._claim(parent, full[-1], rel):
            return
        try:
            os.mkdir(full[-1], 0o777, dir_fd=parent)
        except FileExistsError:
            pass                         # reused if it is a directory: enter() checks
        except OSError as e:
            raise LocalError(f"copy out: {self._show(rel)}: {e.strerror}") from None
        self._dirs.enter(full)

    def _new_file(self, rel: str, parts: list[str], chunk: pb.FileChunk) -> None:
        full = self._prefix + parts
        if not full:
            raise LocalError(f"copy out: {self.root} is a directory; roostd sent a file")
        parent = self._dirs.enter(full[:-1])
        if not self._claim(parent, full[-1], rel):
            return
        fd = create_file(parent, full[-1], lambda: self._show(rel))
        self._file = _OpenFile(rel, fd, 0)
        self._append(chunk)
        if chunk.link_count > 1:
            self._linkable.add(rel)

    def _continue_file(self, chunk: pb.FileChunk) -> None:
        """A later part of the file being written: must follow the part before it."""
        f = self._file
        if f is None and chunk.path in self._skipped:
            return
        if f is None or chunk.path != f.rel or chunk.offset != f.written:
            raise LocalError(f"copy out: {self._show(chunk.path)}: part at offset "
                             f"{chunk.offset} out of order")
        self._append(chunk)

    def _append(self, chunk: pb.FileChunk) -> None:
        assert self._file is not None
        write_all(self._file.fd, chunk.data, lambda: self._show(chunk.path))
        self._file.written += len(chunk.data)

    def _close_file(self) -> None:
        if self._file is not None:
            os.close(self._file.fd)
            self._file = None

    def _symlink(self, rel: str, parts: list[str], chunk: pb.FileChunk) -> None:
        target = chunk.target
        if not target or "\0" in target or len(target.encode()) > MAX_TARGET_BYTES:
            raise LocalError(f"copy out: refusing symlink {self._show(rel)}: bad target "
                             f"{short(repr(target))}")
        self._link_paths.add(rel)
        self._pending_links.append((rel, target))

    def _hardlink(self, rel: str, parts: list[str], chunk: pb.FileChunk) -> None:
        """Another name of a file of this copy: a hard link to it (a copy if links fail)."""
        if chunk.target in self._skipped:
            self._skipped.add(rel)
            self._warn(f"skipped {self._show(rel)}: a hard link to {short(repr(chunk.target))}, "
                       "which was skipped")
            return
        if chunk.target not in self._linkable or not parts:
            raise LocalError(f"copy out: refusing hard link {self._show(rel)}: "
                             f"{short(repr(chunk.target))} is not a file of this copy")
        full = self._prefix + parts
        src = self._prefix + split_path(chunk.target)
        src_dir = self._open_path(src[:-1])
        try:
            parent = self._dirs.enter(full[:-1])
            if self._claim(parent, full[-1], rel):
                self._link_or_copy(src_dir, src[-1], parent, full[-1], rel)
        finally:
            if src_dir != self._base:
                os.close(src_dir)

    def _make_symlink(self, rel: str, parts: list[str], target: str) -> None:
        """Makes one symlink; an old symlink there is replaced, anything else refused."""
        full = self._prefix + parts
        if not full:
            raise LocalError(f"copy out: {self.root} is a directory; roostd sent a symlink")
        parent = self._dirs.enter(full[:-1])
        try:
            os.symlink(target, full[-1], dir_fd=parent)
            return
        except FileExistsError:
            pass
        mode = os.stat(full[-1], dir_fd=parent, follow_symlinks=False).st_mode
        if not stat.S_ISLNK(mode):
            raise LocalError(f"copy out: {self._show(rel)} exists and is not a symlink")
        os.unlink(full[-1], dir_fd=parent)
        os.symlink(target, full[-1], dir_fd=parent)

    # ---- helpers ---------------------------------------------------------------------
    def _claim(self, parent: int, name: str, rel: str) -> bool:
        """Records `name` in its directory; False (skip it) when the directory already holds
        a name that differs only in case or normalisation and is the same entry on disk."""
        seen = self._dirs.seen()
        first = seen.setdefault(fold(name), name)
        if first == name or not same_entry(parent, first, name):
            return True
        self._warn(f"skipped {self._show(rel)}: this filesystem does not tell it apart from "
                   f"{short(repr(first))}, written already")
        self._skipped.add(rel)
        return False

    def _open_path(self, full: list[str]) -> int:
        """A descriptor of directory `full` opened from the base apart from the chain (the
        caller closes it unless it is the base)."""
        fd = self._base
        for i, name in enumerate(full):
            child = open_dir(fd, name, lambda: self._show_parts(full[:i + 1]))
            if fd != self._base:
                os.close(fd)
            fd = child
        return fd

    def _link_or_copy(self, src_dir: int, src: str, dst_dir: int, dst: str, rel: str) -> None:
        """Links `dst` to `src`; an entry already at `dst` is replaced if it is a regular file."""
        shown = lambda: self._show(rel)     # noqa: E731 - only evaluated for a message
        try:
            hard_link(src_dir, src, dst_dir, dst, shown)
        except FileExistsError:
            if not self._replace_for_link(src_dir, src, dst_dir, dst, rel):
                hard_link(src_dir, src, dst_dir, dst, shown)

    def _replace_for_link(self, src_dir: int, src: str, dst_dir: int, dst: str, rel: str) -> bool:
        """An entry is where a hard link goes: True if it is that file already; a regular file
        is removed; anything else (a symlink above all) is refused."""
        st = os.stat(dst, dir_fd=dst_dir, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise LocalError(f"copy out: refusing to write through the symlink {self._show(rel)}")
        if not stat.S_ISREG(st.st_mode):
            raise LocalError(f"copy out: {self._show(rel)} exists and is not a regular file")
        if same_entry_in(src_dir, src, st):
            return True
        os.unlink(dst, dir_fd=dst_dir)
        return False

    def _show(self, rel: str) -> str:
        return short(str(self.root / rel) if rel else str(self.root))

    def _show_parts(self, full: list[str]) -> str:
        return short(str(self._base_path.joinpath(*full)))


