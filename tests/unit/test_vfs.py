"""The VFS alone: mounts, path rules, export for `roost cp`, and its saved forms."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.daemon.runtime.vfs import Entry, Errno, FsError, Vfs


def sample() -> Vfs:
    v = Vfs()
    v.add_mount('/app', [Entry('', 'dir'), Entry('a.txt', 'file', b'A'), Entry('d', 'dir'),
                         Entry('d/b.bin', 'file', bytes(range(256))),
                         Entry('lnk', 'symlink', target='d/b.bin')])
    v.add_mount('.', [Entry('x/y.txt', 'file', b'xy')])
    v.add_mount('/app/sub', [Entry('s', 'file', b'S')])
    return v


def test_preopens_in_mount_order() -> None:
    assert [n for n, _ in sample().preopens] == ['/app', '.', '/app/sub']


def test_export_file_tree_and_prefixes() -> None:
    v = sample()
    assert list(v.export('/app/a.txt')) == [Entry('', 'file', b'A')]
    assert [e.path for e in v.export('/app')] == ['', 'a.txt', 'd', 'd/b.bin', 'lnk']
    assert list(v.export('/app/sub/s')) == [Entry('', 'file', b'S')]   # longest prefix
    assert list(v.export('x/y.txt')) == [Entry('', 'file', b'xy')]     # relative -> "."
    assert list(v.export('./x/y.txt')) == [Entry('', 'file', b'xy')]
    assert list(v.export('/app/lnk')) == [Entry('', 'file', bytes(range(256)))]
    with pytest.raises((KeyError, FileNotFoundError, FsError)):
        list(v.export('/app/missing'))
    with pytest.raises(KeyError):
        list(Vfs().export('/nowhere'))


def test_resolution_never_escapes() -> None:
    v = sample()
    root = v.preopens[0][1]
    d = v.lookup(root, 'd')
    for bad in ('..', '../x', 'd/../../x', '/etc/passwd'):
        with pytest.raises(FsError) as e:
            v.resolve(root, bad, follow=True)
        assert e.value.errno == Errno.PERM
    with pytest.raises(FsError):
        v.resolve(d, '../a.txt', follow=True)        # cap-std: relative to the fd's dir
    assert v.lookup(root, 'd/../a.txt') == v.lookup(root, 'a.txt')
    with pytest.raises(FsError) as e:
        v.lookup(root, 'a.txt/x')
    assert e.value.errno == Errno.NOTDIR


def test_save_restore_and_bytes_round_trip() -> None:
    v = sample()
    assert Vfs.restore(v.save()).save() == v.save()
    b = v.to_bytes()
    assert b == v.to_bytes()                           # deterministic
    assert Vfs.from_bytes(b).save() == v.save()


def test_from_bytes_rejects_corruption() -> None:
    b = bytearray(sample().to_bytes())
    for i in (0, 5, len(b) - 1):
        bad = bytearray(b)
        bad[i] ^= 0x40
        with pytest.raises(ValueError):
            Vfs.from_bytes(bytes(bad))
    with pytest.raises(ValueError):
        Vfs.from_bytes(b[:10])
    newer_major = bytearray(b)
    newer_major[4] += 1
    with pytest.raises(ValueError, match='version'):
        Vfs.from_bytes(bytes(newer_major))


names = st.text(alphabet='abcdé_.-', min_size=1, max_size=6).filter(lambda s: s not in ('.', '..'))
trees = st.dictionaries(st.lists(names, min_size=1, max_size=3).map('/'.join),
                        st.one_of(st.binary(max_size=64), st.none()), max_size=12).filter(
    lambda t: not any(q.startswith(p + '/') for p, d in t.items() if d is not None for q in t))


def test_conflicting_mount_entries_rejected() -> None:
    with pytest.raises(ValueError):
        Vfs().add_mount('/m', [Entry('a', 'file', b''), Entry('a/b', 'dir')])


@settings(max_examples=60, deadline=None)
@given(trees)
def test_any_tree_round_trips(tree: dict[str, bytes | None]) -> None:
    v = Vfs()
    v.add_mount('/m', [Entry(p, 'dir') if d is None else Entry(p, 'file', d)
                       for p, d in tree.items()])
    again = Vfs.from_bytes(v.to_bytes())
    assert again.save() == v.save()
    assert list(again.export('/m')) == list(v.export('/m'))
