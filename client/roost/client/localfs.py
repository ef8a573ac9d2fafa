"""The local side of `roost cp`: names checked, and files made under a root without ever
following a symlink.

Every name a stream carries is one plain component (`split_path`), compared as a
case-insensitive filesystem would (`fold`); a symlink's target is checked never to leave the
copied tree (`leaves_tree`). Files and directories are created relative to open directory
descriptors with O_NOFOLLOW (`open_dir`, `create_file`), at most MAX_OPEN_DIRS of them open
however deep the tree (`DirChain`). `copyout.TreeWriter` is the one user; its docstring has the
rules these serve.
"""
from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path

from roost.client.errors import LocalError

MAX_NAME_BYTES = 255
MAX_TARGET_BYTES = 4095
MAX_OPEN_DIRS = 64
MAX_LINK_HOPS = 40
COPY_BLOCK_BYTES = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone left in the destination fails instead of hanging.
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# ---------------------------------------------------------------- names


def split_path(rel: str) -> list[str]:
    """The components of a path from the daemon, each checked to be one plain name."""
    if not rel:
        return []
    parts = rel.split("/")
    if ("\0" in rel or not _NOT_NAMES.isdisjoint(parts)
            or max(map(len, parts)) * 4 > MAX_NAME_BYTES and _too_long(parts)):
        raise LocalError(f"copy out: refusing unsafe path {short(repr(rel))} from roostd")
    return parts


_NOT_NAMES = frozenset(("", ".", ".."))


def _too_long(parts: list[str]) -> bool:
    return any(len(name.encode()) > MAX_NAME_BYTES for name in parts)


def fold(name: str) -> str:
    """The form in which two names are one on a case- and normalisation-insensitive
    filesystem (Unicode canonical caseless matching)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def leaves_tree(link_parts: list[str], target: str, links: dict[str, str],
                folded: dict[str, str] | None = None) -> bool:
    """Whether following `target` from the link's directory can climb above the tree's root.

    `links` maps the path of every symlink of the stream to its target. The target is resolved
    one component at a time, a component naming another link replaced by that link's target as
    the kernel would, so `a -> d/up/..` with `d/up -> ..` is caught although it looks harmless
    as text. It is resolved twice: with names as they are (a case-sensitive filesystem) and
    case-folded (a case-insensitive one, where `D/UP` is `d/up`); either climbing out is enough.
    The link at the root itself lives outside the tree: any target of it leaves. `folded`
    is `links` keyed by case-folded paths (`fold_links`), passed when checking many links."""
    if not link_parts or target.startswith("/"):
        return True
    folded = fold_links(links) if folded is None else folded
    return (_climbs(link_parts[:-1], target, links, lambda name: name)
            or _climbs(link_parts[:-1], target, folded, fold))


def fold_links(links: dict[str, str]) -> dict[str, str]:
    return {"/".join(fold(p) for p in path.split("/")): t for path, t in links.items()}


def _climbs(where: list[str], target: str, links: dict[str, str],
            key: Callable[[str], str]) -> bool:
    """One resolution of `leaves_tree`, comparing names by `key`. A chain of more than
    MAX_LINK_HOPS links (Linux's limit; BSD and macOS stop at 32) resolves nowhere (ELOOP)
    and so cannot leave: symlink loops a guest made are copied as they are."""
    where = [key(p) for p in where]
    todo = list(reversed(target.split("/")))
    hops = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if not where:
                return True
            where.pop()
            continue
        where.append(key(name))
        inner = links.get("/".join(where))
        if inner is None:
            continue
        hops += 1
        if inner.startswith("/"):
            return True
        if hops > MAX_LINK_HOPS:
            return False
        where.pop()
        todo.extend(reversed(inner.split("/")))
    return False


def short(text: str, limit: int = 200) -> str:
    """A path for a message: deep trees make paths of many kilobytes; keep the end."""
    return text if len(text) <= limit else "..." + text[-limit:]


# ---------------------------------------------------------------- descriptors


def open_dir(parent: int, name: str, shown: Callable[[], str]) -> int:
    """Opens directory `name` of `parent` without following a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise LocalError(f"copy out: {shown()}: no such directory (roostd did not send it "
                         "before its contents)") from None
    except OSError as e:
        raise _refusal(parent, name, shown(), e, stat.S_ISDIR, "a directory") from None


def _refusal(parent: int, name: str, shown: str, err: OSError,
             is_kind: Callable[[int], bool], kind: str) -> LocalError:
    """Why `name` of `parent` could not be used: a symlink, another kind of file, or the OS's
    own reason."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return LocalError(f"copy out: {shown}: {err.strerror}")
    if stat.S_ISLNK(mode):
        return LocalError(f"copy out: refusing to write through the symlink {shown}")
    if not is_kind(mode):
        return LocalError(f"copy out: {shown} exists and is not {kind}")
    return LocalError(f"copy out: {shown}: {err.strerror}")


def create_file(parent: int, name: str, shown: Callable[[], str]) -> int:
    """Creates or truncates regular file `name` of `parent`; never through a symlink."""
    try:
        fd = os.open(name, _FILE_FLAGS, 0o666, dir_fd=parent)
    except OSError as e:
        raise _refusal(parent, name, shown(), e, stat.S_ISREG, "a regular file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LocalError(f"copy out: {shown()} exists and is not a regular file")
    os.set_blocking(fd, True)
    return fd


def write_all(fd: int, data: bytes, shown: Callable[[], str]) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise LocalError(f"copy out: {shown()}: {e.strerror}") from None


def same_entry(parent: int, a: str, b: str) -> bool:
    """Whether names `a` and `b` of `parent` are one entry (a case-insensitive directory)."""
    try:
        sa = os.stat(a, dir_fd=parent, follow_symlinks=False)
        sb = os.stat(b, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class DirChain:
    """Open descriptors of the directories from the base down to the one last written in.

    Entries come in pre-order, so the next entry's directory is nearly always this chain or one
    below it: each directory is opened once, not once per entry. Only MAX_OPEN_DIRS stay open
    (the deepest); one closed is reopened from the base, by name and without following links,
    when the walk climbs back to it. Each level also keeps the case-folded names written in it.
    """

    def __init__(self, base: int, show: Callable[[list[str]], str]) -> None:
        self._names: list[str] = []
        self._fds: list[int | None] = [base]
        self._seen: list[dict[str, str]] = [{}]
        self._closed_below = 1        # _fds[1:_closed_below] are closed, the rest open
        self._show = show

    def enter(self, parts: list[str]) -> int:
        """The descriptor of directory `parts` (relative to the base), opening what is needed."""
        keep = self._common(parts)
        self._truncate(keep)
        fd = self._fds[keep]
        if fd is None:
            fd = self._reopen(keep)
        for name in parts[keep:]:
            fd = open_dir(fd, name, lambda: self._show(parts[:len(self._names) + 1]))
            self._names.append(name)
            self._fds.append(fd)
            self._seen.append({})
            self._evict()
        return fd

    def seen(self) -> dict[str, str]:
        """Case-folded name -> name written, of the directory last entered."""
        return self._seen[-1]

    def close(self) -> None:
        """Closes every descriptor but the base's (the writer owns that)."""
        self._truncate(0)

    def _common(self, parts: list[str]) -> int:
        n = len(self._names)
        if len(parts) >= n and parts[:n] == self._names:
            return n
        k = 0
        while k < n and k < len(parts) and parts[k] == self._names[k]:
            k += 1
        return k

    def _truncate(self, depth: int) -> None:
        while len(self._names) > depth:
            self._names.pop()
            self._seen.pop()
            fd = self._fds.pop()
            if fd is not None:
                os.close(fd)
        self._closed_below = min(self._closed_below, len(self._fds))

    def _evict(self) -> None:
        while len(self._fds) - self._closed_below > MAX_OPEN_DIRS:
            os.close(self._open_fd(self._closed_below))
            self._fds[self._closed_below] = None
            self._closed_below += 1

    def _open_fd(self, depth: int) -> int:
        """The descriptor of level `depth`, one the chain keeps open (the base, or at and
        above `_closed_below`)."""
        fd = self._fds[depth]
        if fd is None:
            raise RuntimeError(f"directory chain: level {depth} is closed")
        return fd

    def _reopen(self, depth: int) -> int:
        """Reopens the chain down to `depth` from the base, keeping only the deepest open."""
        keep_from = max(1, depth - MAX_OPEN_DIRS + 1)
        fd = self._open_fd(0)
        for i in range(1, depth + 1):
            try:
                child = open_dir(fd, self._names[i - 1], lambda: self._show(self._names[:i]))
            finally:
                if 1 <= i - 1 < keep_from:
                    os.close(fd)          # a directory on the way, above those kept open
            if i >= keep_from:
                self._fds[i] = child
            fd = child
        self._closed_below = keep_from
        return fd


def hard_link(src_dir: int, src: str, dst_dir: int, dst: str, shown: Callable[[], str]) -> None:
    """link(2) without following anything; where the filesystem cannot (FAT, some network
    filesystems, a link count limit), the data is copied from the first name instead.
    FileExistsError is the caller's to handle."""
    try:
        os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        _copy_local(src_dir, src, dst_dir, dst, shown)


def same_entry_in(dir_fd: int, name: str, other: os.stat_result) -> bool:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def _copy_local(src_dir: int, src: str, dst_dir: int, dst: str, shown: Callable[[], str]) -> None:
    """A hard link the filesystem cannot make: the data is copied from the first name."""
    rfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        wfd = create_file(dst_dir, dst, shown)
        try:
            while block := os.read(rfd, COPY_BLOCK_BYTES):
                write_all(wfd, block, shown)
        finally:
            os.close(wfd)
    finally:
        os.close(rfd)


def base_of(root: Path, existing_dir: bool) -> tuple[Path, list[str]]:
    """The directory opened first and the names below it leading to `root`."""
    if existing_dir or root.name in ("", ".", ".."):
        return root, []
    return root.parent, [root.name]


def open_base(path: Path) -> int:
    """Opens the directory the user named (following their own symlinks), creating it and
    its parents if missing, as `roost cp` always has."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise LocalError(f"copy out: {path}: {e.strerror}") from None
