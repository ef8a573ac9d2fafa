"""`roost cp` against a malicious guest and a malicious daemon (issue 10, item 2).

The writer is fed hostile FileChunk streams directly; then the real CLI runs against a fake
daemon, and against a real one whose guest plants a symlink and swaps it for a directory
between two copies. Every test keeps a `victim` directory beside the destination that must stay
empty. The daemon side: deep trees export without recursion, hard links travel once, and the
daemon's peak memory does not grow with the number of names of a file.
"""
from __future__ import annotations

import os
import resource
import subprocess
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from roost.client import copyout, localfs
from roost.client.api import Client
from roost.client.conventions import EXIT_ERROR
from roost.client.errors import LocalError
from roost.daemon.runtime.vfs import Entry, Vfs
from roost.v1 import control_pb2 as pb
from roost.v1 import control_pb2_grpc
from tests.framework.guestbuild import compile_guest
from tests.framework.harness import BIN, wait_until

MiB = 1 << 20


# ---------------------------------------------------------------- stream builders


def d(path: str) -> pb.FileChunk:
    return pb.FileChunk(path=path, kind=pb.FileEntry.DIRECTORY)


def f(path: str, data: bytes = b"data", part: int = 3, links: int = 1) -> list[pb.FileChunk]:
    return [pb.FileChunk(path=path, kind=pb.FileEntry.FILE, data=data[i:i + part], offset=i,
                         size_bytes=len(data), link_count=links)
            for i in range(0, max(len(data), 1), part)]


def s(path: str, target: str) -> pb.FileChunk:
    return pb.FileChunk(path=path, kind=pb.FileEntry.SYMLINK, target=target)


def h(path: str, target: str) -> pb.FileChunk:
    return pb.FileChunk(path=path, kind=pb.FileEntry.HARDLINK, target=target)


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, victim): cp ID:/work/out dest writes dest/out; dest/out/x -> ../../victim is victim."""
    dest, victim = tmp_path / "dest", tmp_path / "victim"
    dest.mkdir()
    victim.mkdir()
    return dest, victim


def copy(chunks: list, dest: Path, unsafe_links: bool = False) -> list[str]:
    """Writes a stream as `roost cp ID:/work/out dest` would; the warnings it gave."""
    warnings: list[str] = []
    copyout.write_chunks(_flat(chunks), "/work/out", dest, unsafe_links, warnings.append)
    return warnings


def _flat(chunks: list) -> list[pb.FileChunk]:
    return [c for item in chunks for c in (item if isinstance(item, list) else [item])]


def assert_untouched(victim: Path) -> None:
    assert list(victim.iterdir()) == [], "something was written outside the destination"


# ---------------------------------------------------------------- symlinks


def test_absolute_symlink_then_a_file_under_it(place) -> None:
    dest, victim = place
    with pytest.raises(LocalError, match="inside the symlink"):
        copy([d(""), s("evil", str(victim)), f("evil/pwned.txt")], dest)
    assert_untouched(victim)
    assert not os.path.lexists(dest / "out" / "evil")


def test_climbing_symlink_then_a_file_under_it(place) -> None:
    dest, victim = place
    with pytest.raises(LocalError, match="inside the symlink"):
        copy([d(""), s("x", "../../victim"), d("x"), f("x/pwned.txt")], dest)
    assert_untouched(victim)


def test_symlinks_leaving_the_tree_are_skipped_with_a_warning(place) -> None:
    dest, victim = place
    warnings = copy([d(""), s("abs", str(victim)), s("up", "../../victim"), d("sub"),
                     s("sub/ok", "../file"), s("sub/deep-up", "../../x"), *f("file")], dest)
    out = dest / "out"
    assert os.readlink(out / "sub" / "ok") == "../file"
    for name in ("abs", "up", "sub/deep-up"):
        assert not os.path.lexists(out / name)
    assert len(warnings) == 3 and all("outside the copied tree" in w for w in warnings)


def test_unsafe_links_makes_them_but_still_never_follows_them(place) -> None:
    dest, victim = place
    assert copy([d(""), s("abs", str(victim)), s("up", "../../victim")], dest, unsafe_links=True) == []
    assert os.readlink(dest / "out" / "abs") == str(victim)
    assert os.readlink(dest / "out" / "up") == "../../victim"


def test_a_chain_of_links_cannot_climb_out(place) -> None:
    """`a -> d/up/../..` stays inside as text but not through `d/up -> ..`; case differences
    in the names do not hide the link (a case-insensitive filesystem would follow it), nor
    does a loop under one reading of the names hide a way out under the other."""
    dest, _ = place
    warnings = copy([d(""), s("a", "d/up/../.."), s("b", "D/UP/../.."), s("c", "E/../.."),
                     d("d"), s("d/up", ".."), s("e", "e")], dest)
    out = dest / "out"
    assert os.readlink(out / "d" / "up") == ".."
    assert [os.path.lexists(out / n) for n in ("a", "b", "c")] == [False, False, False]
    assert os.readlink(out / "e") == "e"
    assert len(warnings) == 3


def test_symlink_loops_are_copied_as_they_are(place) -> None:
    """A loop resolves nowhere (ELOOP), so it cannot lead out of the tree."""
    dest, _ = place
    assert copy([d(""), s("loopa", "loopb"), s("loopb", "loopa"), s("grow", "grow/x")], dest) == []
    assert [os.readlink(dest / "out" / n) for n in ("loopa", "loopb", "grow")] == [
        "loopb", "loopa", "grow/x"]


@pytest.mark.parametrize("existing", ["dir", "file", "root"])
def test_a_symlink_already_in_the_destination_is_never_written_through(place, existing) -> None:
    """The two-step attack: a first cp made out/x -> ../../victim (with --unsafe-links, or an
    older roost); the guest then turned x into a directory (or a file) and the user copies again."""
    dest, victim = place
    if existing == "root":
        os.symlink(victim, dest / "out")
        second = [d(""), *f("pwned.txt")]
    else:
        copy([d(""), s("x", "../../victim")], dest, unsafe_links=True)
        assert os.readlink(dest / "out" / "x") == "../../victim"
        second = [d(""), d("x"), *f("x/pwned.txt")] if existing == "dir" else [d(""), *f("x")]
    with pytest.raises(LocalError, match="refusing to write through the symlink"):
        copy(second, dest)
    assert_untouched(victim)


def test_two_copies_without_the_flag_keep_everything_inside(place) -> None:
    dest, victim = place
    assert len(copy([d(""), s("x", "../../victim")], dest)) == 1
    copy([d(""), d("x"), *f("x/pwned.txt", b"pwned")], dest)
    assert (dest / "out" / "x" / "pwned.txt").read_bytes() == b"pwned"
    assert_untouched(victim)


def test_a_symlink_of_an_earlier_copy_is_replaced_by_the_new_one(place) -> None:
    dest, _ = place
    copy([d(""), *f("a"), s("l", "a")], dest)
    copy([d(""), *f("b"), s("l", "b")], dest)
    assert os.readlink(dest / "out" / "l") == "b"


# ---------------------------------------------------------------- names and streams


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a/../../b", "a//b", "./a", "a/.",
                                 "nul\0byte", "x" * 256])
def test_unsafe_names_are_refused(place, bad: str) -> None:
    dest, victim = place
    with pytest.raises(LocalError, match="unsafe path"):
        copy([d(""), f(bad)], dest)
    assert_untouched(victim)


@pytest.mark.parametrize("target", ["", "a\0b", "x" * 5000])
def test_bad_symlink_targets_are_refused(place, target: str) -> None:
    with pytest.raises(LocalError, match="bad target"):
        copy([d(""), s("l", target)], place[0])


def test_parts_out_of_order_are_refused(place) -> None:
    """A daemon cannot make a sparse file of any size with one chunk at offset 2^40."""
    dest, _ = place
    far = pb.FileChunk(path="f", kind=pb.FileEntry.FILE, data=b"x", offset=1 << 40, size_bytes=1)
    with pytest.raises(LocalError, match="out of order"):
        copy([d(""), *f("f", b"abc"), far], dest)
    with pytest.raises(LocalError, match="out of order"):
        copy([d(""), *f("f", b"abc"), *f("g", b"xy"), f("f", b"abcdef")[1]], dest)


def test_a_fifo_in_the_way_is_refused_instead_of_hanging(place) -> None:
    dest, _ = place
    (dest / "out").mkdir()
    os.mkfifo(dest / "out" / "pipe")
    with pytest.raises(LocalError, match="not a regular file"):
        copy([d(""), *f("pipe")], dest)


def test_contents_of_a_directory_never_sent_are_refused(place) -> None:
    with pytest.raises(LocalError, match="did not send it"):
        copy([d(""), *f("a/b/c")], place[0])


# ---------------------------------------------------------------- case-insensitive filesystems


def test_names_equal_but_for_case_are_both_written_where_the_filesystem_tells_them_apart(place) -> None:
    dest, _ = place
    assert copy([d(""), *f("README", b"upper"), *f("readme", b"lower")], dest) == []
    assert (dest / "out" / "README").read_bytes() == b"upper"
    assert (dest / "out" / "readme").read_bytes() == b"lower"


@pytest.fixture
def case_insensitive(monkeypatch):
    """Makes the writer see the destination as case-insensitive (APFS, NTFS): a test machine
    cannot mount one, so names that fold alike are reported to be one entry on disk."""
    monkeypatch.setattr(copyout, "same_entry", lambda parent, a, b: localfs.fold(a) == localfs.fold(b))


def test_a_name_equal_but_for_case_does_not_overwrite_the_first(place, case_insensitive) -> None:
    dest, _ = place
    warnings = copy([d(""), *f("README", b"first"), *f("readme", b"second", part=2),
                     d("Dir"), *f("Dir/a"), d("dir"), *f("dir/b", b"inside"), d("dir/sub"),
                     *f("dir/sub/c")], dest)
    out = dest / "out"
    assert (out / "README").read_bytes() == b"first"
    assert sorted(p.name for p in (out / "Dir").iterdir()) == ["a"]
    assert len(warnings) == 2 and all("does not tell it apart" in w for w in warnings)


def test_unicode_normalisation_is_folded_too() -> None:
    assert localfs.fold("Caf\u00e9") == localfs.fold("cafe\u0301") == localfs.fold("CAFE\u0301")
    assert localfs.fold("a") != localfs.fold("b")


# ---------------------------------------------------------------- hard links


def test_hard_links_are_made_as_links(place) -> None:
    dest, _ = place
    copy([d(""), *f("data", b"x" * 1000, part=300, links=3), h("l1", "data"), d("sub"),
          h("sub/l2", "data")], dest)
    out = dest / "out"
    stats = [os.stat(out / p) for p in ("data", "l1", "sub/l2")]
    assert {st.st_ino for st in stats} == {stats[0].st_ino} and stats[0].st_nlink == 3
    assert (out / "sub" / "l2").read_bytes() == b"x" * 1000


@pytest.mark.parametrize("target", ["nothing", "single", "/etc/passwd", "../victim/f", "sub"])
def test_a_hard_link_must_name_a_linked_file_of_this_copy(place, target: str) -> None:
    dest, victim = place
    (victim / "f").write_bytes(b"secret")
    with pytest.raises(LocalError, match="not a file of this copy"):
        copy([d(""), *f("single"), d("sub"), h("l", target)], dest)
    assert not os.path.lexists(dest / "out" / "l")
    assert sorted(p.name for p in victim.iterdir()) == ["f"]


def test_a_hard_link_over_an_existing_symlink_is_refused(place) -> None:
    dest, victim = place
    (dest / "out").mkdir()
    os.symlink(victim / "f", dest / "out" / "l")
    with pytest.raises(LocalError, match="refusing to write through the symlink"):
        copy([d(""), *f("data", links=2), h("l", "data")], dest)
    assert_untouched(victim)


def test_a_hard_link_the_filesystem_refuses_is_copied(place, monkeypatch) -> None:
    dest, _ = place

    def no_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(copyout.os, "link", no_links)
    copy([d(""), *f("data", b"y" * 5000, part=2048, links=2), h("l", "data")], dest)
    assert (dest / "out" / "l").read_bytes() == b"y" * 5000


def test_copying_the_same_hard_links_twice(place) -> None:
    dest, _ = place
    stream = [d(""), *f("data", b"z", links=2), h("l", "data")]
    copy(stream, dest)
    copy(stream, dest)
    assert os.stat(dest / "out" / "l").st_ino == os.stat(dest / "out" / "data").st_ino


# ---------------------------------------------------------------- deep trees


DEPTH = 2000


def deep_stream(depth: int = DEPTH) -> list:
    names = ["dir"] * depth
    return [d(""), *(d("/".join(names[:i])) for i in range(1, depth + 1)),
            *f("/".join([*names, "bottom.txt"]), b"bottom")]


def read_deep(root: Path, depth: int = DEPTH) -> bytes:
    """The file at the bottom, read through directory descriptors (its path is longer than
    PATH_MAX, and os.walk/os.fwalk recurse)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        nxt = os.open("dir", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    try:
        with open(os.open("bottom.txt", os.O_RDONLY, dir_fd=fd), "rb") as bottom:
            return bottom.read()
    finally:
        os.close(fd)


def remove_tree(top: Path) -> None:
    """shutil.rmtree, and pytest's removal of old temporary directories in every later session,
    recurse once per level and fail on these trees: each subdirectory is lifted beside `top`
    (so no path grows) and removed there."""
    pending, lifted = [top], 0
    while pending:
        directory = pending.pop()
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                lifted += 1
                pending.append(top.parent / f"{top.name}.{lifted}")
                os.rename(entry.path, pending[-1])
            else:
                os.unlink(entry.path)
        os.rmdir(directory)


@pytest.fixture
def deep_place(place):
    """`place` whose destination is removed afterwards without recursion."""
    yield place
    remove_tree(place[0])


def open_under(path: Path) -> list[str]:
    """This process's descriptors open on anything below `path` (or on a path too long for
    readlink: deep in such a tree)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue                       # the listing's own descriptor, closed by now
        except OSError as e:
            target = f"{path}/ ({e.strerror})"
        if target.startswith(f"{path}/"):
            found.append(target)
    return found


def test_a_deep_tree_is_written_with_few_descriptors(deep_place) -> None:
    """2,000 nested directories: paths far past PATH_MAX, and no more descriptors than the
    writer's bound even with a low limit; none left open afterwards."""
    dest, _ = deep_place
    before = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (before + 3 * localfs.MAX_OPEN_DIRS, hard))
    try:
        copy(deep_stream() + [*f("/".join(["dir"] * 100 + ["back-up.txt"]))], dest)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert open_under(dest) == []
    assert read_deep(dest / "out") == b"bottom"
    assert dest.joinpath("out", *["dir"] * 100, "back-up.txt").read_bytes() == b"data"


def test_the_vfs_exports_a_deep_tree_without_recursion() -> None:
    v = Vfs()
    v.add_mount("/work", [Entry("", "dir")])
    ino = v.preopens[0][1]
    for _ in range(DEPTH):
        child = v.new_inode("dir")
        v.link(ino, "dir", child)
        ino = child
    v.link(ino, "bottom.txt", v.new_inode("file", data=bytearray(b"bottom")), new=True)
    entries = list(v.export("/work"))
    assert len(entries) == DEPTH + 2
    assert entries[-1].path == "/".join(["dir"] * DEPTH + ["bottom.txt"])
    assert bytes(entries[-1].data) == b"bottom"


def test_the_vfs_exports_a_file_once_per_inode_as_a_view() -> None:
    v = Vfs()
    v.add_mount("/work", [Entry("", "dir"), Entry("b", "dir"), Entry("b/data", "file", b"x" * 100)])
    root = v.preopens[0][1]
    data = v.lookup(root, "b/data")
    v.link(root, "a-first", data)
    v.link(v.lookup(root, "b"), "z-last", data)
    entries = list(v.export("/work"))
    assert [(e.path, e.kind, e.target) for e in entries] == [
        ("", "dir", ""), ("a-first", "file", ""), ("b", "dir", ""),
        ("b/data", "hardlink", "a-first"), ("b/z-last", "hardlink", "a-first")]
    assert entries[1].links == 3 and isinstance(entries[1].data, memoryview)
    assert entries[1].data.obj is v.inodes[data].data       # a view of the VFS, not a copy


# ---------------------------------------------------------------- a fake daemon, the real CLI


class FakeDaemon(control_pb2_grpc.ControlServicer):
    """A daemon the CLI was redirected to: it answers CopyOut with whatever `stream` holds."""

    def __init__(self) -> None:
        self.stream: list[pb.FileChunk] = []

    def GetExecution(self, request, context):
        return pb.Execution(id=request.id, state=pb.EXITED)

    def CopyOut(self, request, context):
        yield from self.stream


@pytest.fixture
def fake_daemon():
    daemon = FakeDaemon()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    control_pb2_grpc.add_ControlServicer_to_server(daemon, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield daemon, f"127.0.0.1:{port}"
    server.stop(None)


def roost_cli(addr: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "roost"), "--addr", addr, *args], capture_output=True,
                          text=True, timeout=120)


def test_the_cli_against_a_daemon_sending_an_absolute_symlink_then_a_file_under_it(
        fake_daemon, place) -> None:
    daemon, addr = fake_daemon
    dest, victim = place
    daemon.stream = [d(""), s("evil", str(victim)), *f("evil/pwned.txt", b"pwned")]
    got = roost_cli(addr, "cp", "ex-1:/work/out", str(dest))
    assert got.returncode == EXIT_ERROR
    assert got.stderr.count("\n") == 1 and "inside the symlink" in got.stderr
    assert "Traceback" not in got.stderr
    assert_untouched(victim)


def test_the_cli_skips_a_link_leaving_the_tree_unless_told(fake_daemon, place) -> None:
    daemon, addr = fake_daemon
    dest, victim = place
    daemon.stream = [d(""), s("evil", str(victim)), *f("file", b"ok")]
    got = roost_cli(addr, "cp", "ex-1:/work/out", str(dest))
    assert got.returncode == 0 and "warning: skipped symlink" in got.stderr
    assert not os.path.lexists(dest / "out" / "evil")
    assert (dest / "out" / "file").read_bytes() == b"ok"
    assert roost_cli(addr, "cp", "--unsafe-links", "ex-1:/work/out", str(dest)).returncode == 0
    assert os.readlink(dest / "out" / "evil") == str(victim)
    assert_untouched(victim)


# ---------------------------------------------------------------- a real daemon, real guests


def start(roostd, work: Path, *args: str) -> str:
    work.mkdir(exist_ok=True)
    wasm = compile_guest("copyout_trees")
    return roostd.roost("run", "--detach", "--mount", f"{work}:/work", str(wasm), "--", *args,
                        check=True).stdout.decode().strip()


def test_a_guest_swapping_a_symlink_for_a_directory_between_two_copies(roostd, tmp_path, place) -> None:
    """The guest plants out/x -> ../../victim, is paused while the user copies out/, and once
    resumed swaps x for a directory holding pwned.txt; the user copies out/ again. Both with
    and without --unsafe-links, nothing reaches the victim."""
    dest, victim = place
    dest_unsafe = tmp_path / "dest-unsafe"
    dest_unsafe.mkdir()
    exec_id = start(roostd, tmp_path / "work", "swap")
    wait_until(lambda: b"planted" in roostd.roost("logs", "--stdout", exec_id).stdout, what="planted")
    assert roostd.roost("pause", exec_id).returncode == 0
    paused = time.monotonic()
    first = roostd.roost("cp", f"{exec_id}:/work/out", str(dest))
    assert first.returncode == 0 and b"warning: skipped symlink" in first.stderr, (
        first.stderr, roostd.roost("logs", exec_id).stdout)
    assert not os.path.lexists(dest / "out" / "x")
    unsafe = roostd.roost("cp", "--unsafe-links", f"{exec_id}:/work/out", str(dest_unsafe))
    assert unsafe.returncode == 0
    assert os.readlink(dest_unsafe / "out" / "x") == "../../victim"
    time.sleep(max(0.0, paused + 2.5 - time.monotonic()))   # a clock gap the guest notices
    assert roostd.roost("resume", exec_id).returncode == 0
    waited = roostd.roost("wait", exec_id)
    assert waited.returncode == 0, (waited.stderr, roostd.roost("logs", exec_id).stdout)
    assert b"swapped" in roostd.roost("logs", "--stdout", exec_id).stdout
    second = roostd.roost("cp", f"{exec_id}:/work/out", str(dest))
    assert second.returncode == 0
    assert (dest / "out" / "x" / "pwned.txt").read_bytes() == b"pwned\n"
    refused = roostd.roost("cp", f"{exec_id}:/work/out", str(dest_unsafe))
    assert refused.returncode == EXIT_ERROR and b"refusing to write through the symlink" in refused.stderr
    assert_untouched(victim)


def test_a_guest_tree_of_two_thousand_directories(roostd, tmp_path, deep_place) -> None:
    dest, _ = deep_place
    exec_id = start(roostd, tmp_path / "work", "deep", str(DEPTH))
    assert roostd.roost("wait", exec_id).returncode == 0
    got = roostd.roost("cp", f"{exec_id}:/work/deep", str(dest))
    assert got.returncode == 0, got.stderr
    assert read_deep(dest / "deep") == f"deep {DEPTH}\n".encode()


def vm_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_hard_links_travel_once_and_the_daemon_stays_small(fresh_roostd, tmp_path, place) -> None:
    """A file of 8 MiB with 50 more names: the stream carries 8 MiB, the copy has one inode
    with 51 names, and the daemon's peak memory grows by far less than 51 copies of the file
    (the old export held them all: +400 MiB)."""
    daemon = fresh_roostd.start()
    dest, _ = place
    exec_id = start(daemon, tmp_path / "work", "hardlinks", "50", "8192")
    assert daemon.roost("wait", exec_id).returncode == 0
    peak_before = vm_hwm_bytes(daemon.proc.pid)
    got = daemon.roost("cp", f"{exec_id}:/work/h", str(dest))
    assert got.returncode == 0, got.stderr
    grown = vm_hwm_bytes(daemon.proc.pid) - peak_before
    names = [dest / "h" / "data", *((dest / "h" / f"link-{i:03d}") for i in range(50))]
    assert {os.stat(p).st_ino for p in names} == {os.stat(names[0]).st_ino}
    assert os.stat(names[0]).st_nlink == 51 and os.path.getsize(names[0]) == 8 * MiB
    with Client(daemon.addr) as client:
        chunks = list(client.copy_out(exec_id, "/work/h"))
    assert sum(len(c.data) for c in chunks) == 8 * MiB
    assert [c.kind for c in chunks].count(pb.FileEntry.HARDLINK) == 50
    assert max(len(c.data) for c in chunks) <= MiB
    assert grown < 100 * MiB, f"the daemon's peak grew by {grown / MiB:.0f} MiB"
