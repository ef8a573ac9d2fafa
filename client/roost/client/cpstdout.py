"""`roost cp ID:PATH -`: a copy-out stream to stdout instead of the local filesystem.

A file comes out as its bytes, so `roost cp job:/out.txt - | wc -c` counts what the guest
wrote. A tree comes out as a tar stream (as `docker cp CONTAINER:DIR -`), its entries under the
copied directory's name, so `roost cp job:/data - | tar -x` makes ./data. Nothing touches the
local filesystem; the names are checked as `roost cp` into a directory checks them, and the
consumer (tar) applies its own rules when extracting.
"""
from __future__ import annotations

import tarfile
import time
from collections.abc import Iterable
from typing import BinaryIO

from roost.client.copyout import guest_basename
from roost.client.errors import LocalError
from roost.client.localfs import short, split_path
from roost.v1 import control_pb2 as pb

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


def write_stdout(chunks: Iterable[pb.FileChunk], guest_path: str, out: BinaryIO) -> None:
    """Writes the stream to `out`: a file's bytes, or a tree as tar."""
    stream = iter(chunks)
    first = next(stream, None)
    if first is None:
        return
    if first.kind == pb.FileEntry.FILE and not first.path:
        out.write(first.data)
        for chunk in stream:
            out.write(chunk.data)
    else:
        tar = TarStream(out, guest_basename(guest_path) or ".")
        tar.write(first)
        for chunk in stream:
            tar.write(chunk)
        tar.close()
    out.flush()


class TarStream:
    """A ustar/PAX stream written as the chunks arrive: a file's header (its size is in the
    first chunk), its data parts as they come, the padding once it is complete."""

    def __init__(self, out: BinaryIO, root: str) -> None:
        self._out = out
        self._root = root
        self._left = 0               # bytes of the current file still to come
        self._name = ""
        self._written = 0
        self._mtime = int(time.time())

    def write(self, chunk: pb.FileChunk) -> None:
        if chunk.kind == pb.FileEntry.FILE and chunk.offset:
            self._data(chunk.data)
            return
        self._end_file()
        name = self._member(chunk.path)
        if chunk.kind == pb.FileEntry.DIRECTORY:
            self._header(name, tarfile.DIRTYPE, 0o755)
        elif chunk.kind == pb.FileEntry.FILE:
            self._header(name, tarfile.REGTYPE, 0o644, size=chunk.size_bytes)
            self._name, self._left = name, chunk.size_bytes
            self._data(chunk.data)
        elif chunk.kind == pb.FileEntry.SYMLINK:
            self._header(name, tarfile.SYMTYPE, 0o777, link=chunk.target)
        elif chunk.kind == pb.FileEntry.HARDLINK:
            self._header(name, tarfile.LNKTYPE, 0o644, link=self._member(chunk.target))
        else:
            raise LocalError(f"copy out {short(repr(chunk.path))}: unknown entry kind {chunk.kind}")

    def close(self) -> None:
        """The end: two zero blocks, then zeros to a whole record (as tarfile writes it)."""
        self._end_file()
        self._emit(b"\0" * (2 * BLOCK))
        self._emit(b"\0" * (-self._written % RECORD))

    def _member(self, rel: str) -> str:
        parts = split_path(rel)
        return "/".join([self._root, *parts]) if parts or self._root != "." else "."

    def _header(self, name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname = kind, mode, size, link
        info.mtime = self._mtime
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _data(self, data: bytes) -> None:
        if len(data) > self._left:
            raise LocalError(f"copy out {short(repr(self._name))}: roostd sent more bytes than "
                             "the file's size")
        self._emit(data)
        self._left -= len(data)

    def _end_file(self) -> None:
        if self._left:
            raise LocalError(f"copy out {short(repr(self._name))}: the stream ended "
                             f"{self._left} bytes short of the file's size")
        self._emit(b"\0" * (-self._written % BLOCK))

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)
