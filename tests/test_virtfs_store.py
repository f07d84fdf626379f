"""fastnfs.virtfs.store on real files in temporary directories."""

from __future__ import annotations

import errno
import os
import socket
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnfs.virtfs import store
from fastnfs.virtfs.meta import PyMetaCache
from fastnfs.virtfs.store import (HIDDEN, MAX_META_SIZE, META_DIR, META_ROOT, Meta, link_meta,
                                  make_rdev, meta_dir_only, remove_meta, rename_meta,
                                  rmdir_meta_dir, split_rdev, write_meta, write_root_meta)
from virtfs_reader import read_meta, read_root_meta  # the store's former read side

from conftest import cython_twin


_cx, _why = cython_twin("fastnfs.virtfs._meta")


@pytest.fixture(params=[
    pytest.param(PyMetaCache, id="python"),
    pytest.param(getattr(_cx, "MetaCache", None), id="cython",
                 marks=pytest.mark.skipif(_cx is None, reason=_why or "")),
])
def cache(request):
    return request.param(1024)


class Warnings(list):
    def __call__(self, message):
        assert isinstance(message, str)
        self.append(message)


@pytest.fixture
def warn():
    return Warnings()


@pytest.fixture
def d(tmp_path):
    """An O_PATH fd of a fresh directory (as the server holds them), and its path."""
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    yield fd, tmp_path
    os.close(fd)


def _opendir(path):
    return os.open(path, os.O_PATH | os.O_DIRECTORY)


def _mdir(path):
    return path / META_DIR.decode()


REG = stat.S_IFREG | 0o644
CHR = stat.S_IFCHR | 0o666


# ------------------------------------------------------------------ read / write

def test_round_trip(d, cache, warn):
    fd, path = d
    (path / "dev-null").write_bytes(b"")
    m = Meta(0, 0, CHR, make_rdev(1, 3))
    write_meta(fd, b"dev-null", m, cache=cache)
    f = _mdir(path) / "dev-null"
    assert f.read_bytes() == b"virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=%d\nvirtfs.rdev=259\n" % CHR
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(_mdir(path).stat().st_mode) == 0o700 & ~_umask()
    assert os.listdir(_mdir(path)) == ["dev-null"]  # no temporary left
    got = read_meta(fd, b"dev-null", cache, warn)
    assert got == m and isinstance(got, Meta) and warn == []
    assert cache.hits == 1  # write_meta cached what it wrote
    assert read_meta(fd, b"dev-null", PyMetaCache(4), warn) == m  # and from the file


def _umask():
    u = os.umask(0)
    os.umask(u)
    return u


def test_subset_of_keys(d, cache, warn):
    fd, path = d
    write_meta(fd, b"f", Meta(-1, 100, -1, -1))
    assert (_mdir(path) / "f").read_bytes() == b"virtfs.gid=100\n"
    assert read_meta(fd, b"f", cache, warn) == Meta(-1, 100, -1, -1)
    write_meta(fd, b"f", (1000, -1, REG, -1), fsync=True)
    assert (_mdir(path) / "f").read_bytes() == b"virtfs.uid=1000\nvirtfs.mode=33188\n"
    assert read_meta(fd, b"f", cache, warn) == Meta(1000, -1, REG, -1)
    write_meta(fd, b"g", Meta(-1, -1, -1, -1))  # all absent: an empty file
    assert (_mdir(path) / "g").read_bytes() == b""
    assert read_meta(fd, b"g", cache, warn) == Meta(-1, -1, -1, -1) and warn == []


def test_qemu_written_file(d, cache, warn):
    fd, path = d
    _mdir(path).mkdir(0o700)
    (_mdir(path) / "tty").write_bytes(
        b"virtfs.uid=0\nvirtfs.gid=5\nvirtfs.mode=8592\nvirtfs.rdev=1280\n")
    m = read_meta(fd, b"tty", cache, warn)
    assert m == Meta(0, 5, stat.S_IFCHR | 0o620, 1280) and split_rdev(m.rdev) == (5, 0)


def test_absent(d, cache, warn):
    fd, path = d
    assert read_meta(fd, b"nothing", cache, warn) is None  # no .virtfs_metadata at all
    write_meta(fd, b"other", Meta(1, 1, REG, -1))
    assert read_meta(fd, b"nothing", cache, warn) is None
    assert read_root_meta(fd, cache, warn) is None
    assert warn == []


def test_dir_key_argument(d, cache, warn):
    fd, path = d
    write_meta(fd, b"f", Meta(1, 2, REG, -1), cache=cache, dir_key="D")
    assert ("D", b"f") in cache
    assert read_meta(fd, b"f", cache, warn, dir_key="D") == Meta(1, 2, REG, -1)
    assert cache.hits == 1


def test_root_meta(d, cache, warn):
    fd, path = d
    write_root_meta(fd, Meta(0, 0, stat.S_IFDIR | 0o755, -1), cache=cache)
    assert ((path / ".virtfs_metadata_root").read_bytes()
            == b"virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=16877\n")
    assert sorted(os.listdir(path)) == [".virtfs_metadata_root"]  # no temp, no empty meta dir
    assert read_root_meta(fd, cache, warn) == Meta(0, 0, 0o40755, -1)
    # with other metadata present the metadata dir stays
    write_meta(fd, b"etc", Meta(0, 0, 0o40755, -1))
    write_root_meta(fd, Meta(0, 0, stat.S_IFDIR | 0o700, -1), fsync=True, cache=cache)
    assert os.listdir(_mdir(path)) == ["etc"]
    assert read_root_meta(fd, cache, warn) == Meta(0, 0, 0o40700, -1) and warn == []


def test_bad_arguments(d, cache, warn):
    fd, path = d
    for bad in (b"", b".", b"..", b"a/b", b"a\0b", META_DIR, META_ROOT):
        with pytest.raises(ValueError):
            read_meta(fd, bad, cache, warn)
        with pytest.raises(ValueError):
            write_meta(fd, bad, Meta(0, 0, REG, -1))
    with pytest.raises(TypeError):
        read_meta(fd, "str", cache, warn)
    for bad in (Meta(2**32, 0, REG, -1), Meta(0, -2, REG, -1), Meta(0, 0, 0o200000, -1),
                Meta(0, 0, REG, 2**64)):
        with pytest.raises(ValueError):
            write_meta(fd, b"f", bad)
    with pytest.raises(TypeError):
        write_meta(fd, b"f", Meta(0, 0, "33188", -1))
    assert not _mdir(path).exists()


def test_long_name(d, cache, warn):
    fd, path = d
    name = b"n" * 255
    write_meta(fd, name, Meta(7, 7, REG, -1), cache=cache)
    assert read_meta(fd, name, PyMetaCache(2), warn) == Meta(7, 7, REG, -1)
    assert os.listdir(_mdir(path)) == [name.decode()]


def test_refuses_bad_meta_dir(tmp_path, cache, warn):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "f").write_bytes(b"virtfs.uid=0\n")
    for kind in ("symlink", "file"):
        sub = tmp_path / kind
        sub.mkdir()
        if kind == "symlink":
            (sub / ".virtfs_metadata").symlink_to(target)
        else:
            (sub / ".virtfs_metadata").write_bytes(b"")
        fd = _opendir(sub)
        try:
            with pytest.raises(NotADirectoryError):
                write_meta(fd, b"f", Meta(1, 1, REG, -1))
            # reading does not follow it either: warned once, None
            assert read_meta(fd, b"f", cache, warn) is None
            assert read_meta(fd, b"f", cache, warn) is None
            assert remove_meta(fd, b"f") is False
        finally:
            os.close(fd)
    assert (target / "f").read_bytes() == b"virtfs.uid=0\n"  # untouched through the symlink
    assert os.listdir(target) == ["f"]
    assert warn == [".virtfs_metadata: is a symlink, not a directory; metadata in it ignored",
                    ".virtfs_metadata: is a regular file, not a directory; metadata in it ignored"]


def test_write_replaces_symlink_not_its_target(d, cache, warn, tmp_path_factory):
    fd, path = d
    outside = tmp_path_factory.mktemp("outside") / "victim"
    outside.write_bytes(b"precious\n")
    _mdir(path).mkdir()
    (_mdir(path) / "f").symlink_to(outside)
    assert read_meta(fd, b"f", cache, warn) is None  # not followed
    write_meta(fd, b"f", Meta(0, 0, REG, -1), cache=cache)
    assert outside.read_bytes() == b"precious\n"
    assert not (_mdir(path) / "f").is_symlink()
    assert read_meta(fd, b"f", cache, warn) == Meta(0, 0, REG, -1)
    assert warn == [".virtfs_metadata/f: is a symlink, ignored"]


# ------------------------------------------------------------------ atomicity

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enospc_keeps_old_file(d, cache, warn, monkeypatch):
    fd, path = d
    old = Meta(0, 0, REG, -1)
    write_meta(fd, b"f", old)
    before = (_mdir(path) / "f").read_bytes()
    monkeypatch.setattr(os, "write", _enospc)
    with pytest.raises(OSError) as e:
        write_meta(fd, b"f", Meta(1000, 1000, 0o100755, -1), cache=cache)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert (_mdir(path) / "f").read_bytes() == before
    assert os.listdir(_mdir(path)) == ["f"]  # the temporary is gone
    assert read_meta(fd, b"f", cache, warn) == old


def test_partial_write_then_enospc(d, cache, warn, monkeypatch):
    fd, path = d
    write_meta(fd, b"f", Meta(0, 0, REG, -1))
    real_write = os.write
    calls = []

    def short_then_fail(fd_, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd_, bytes(data[:5]))  # a short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError):
        write_meta(fd, b"f", Meta(1, 1, REG, -1))
    monkeypatch.undo()
    assert len(calls) == 2
    assert read_meta(fd, b"f", cache, warn) == Meta(0, 0, REG, -1)
    assert os.listdir(_mdir(path)) == ["f"]


def test_first_write_fails_leaves_nothing(d, monkeypatch):
    fd, path = d
    monkeypatch.setattr(os, "write", _enospc)
    with pytest.raises(OSError):
        write_meta(fd, b"f", Meta(0, 0, REG, -1))
    monkeypatch.undo()
    assert os.listdir(path) == []  # not even the metadata directory


def test_fsync_failure_and_rename_failure(d, monkeypatch):
    fd, path = d
    write_meta(fd, b"f", Meta(0, 0, REG, -1))
    monkeypatch.setattr(os, "fsync", lambda fd_: _enospc())
    with pytest.raises(OSError):
        write_meta(fd, b"f", Meta(1, 1, REG, -1), fsync=True)
    monkeypatch.undo()
    # the target is a directory: rename(2) fails, the temporary goes
    (_mdir(path) / "g").mkdir()
    with pytest.raises(OSError):
        write_meta(fd, b"g", Meta(1, 1, REG, -1))
    assert sorted(os.listdir(_mdir(path))) == ["f", "g"]
    assert (_mdir(path) / "f").read_bytes() == b"virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=33188\n"


# ------------------------------------------------------------------ namespace

def test_remove(d, cache, warn):
    fd, path = d
    write_meta(fd, b"a", Meta(0, 0, REG, -1), cache=cache)
    write_meta(fd, b"b", Meta(0, 0, REG, -1))
    key = ((os.fstat(fd).st_dev, os.fstat(fd).st_ino), b"a")
    assert key in cache
    assert remove_meta(fd, b"a", cache=cache) is True
    assert key not in cache
    assert os.listdir(_mdir(path)) == ["b"]
    assert remove_meta(fd, b"a") is False  # ENOENT is fine
    assert remove_meta(fd, b"b") is True
    assert not _mdir(path).exists()  # removed once empty
    assert remove_meta(fd, b"b") is False  # and no metadata dir is fine too
    assert read_meta(fd, b"a", cache, warn) is None


def test_remove_cleans_leftover_empty_dir(d):
    fd, path = d
    _mdir(path).mkdir()
    assert remove_meta(fd, b"x") is False
    assert not _mdir(path).exists()


def test_rename_same_dir(d, cache, warn):
    fd, path = d
    write_meta(fd, b"old", Meta(1, 2, REG, -1))
    write_meta(fd, b"new", Meta(9, 9, REG, -1))  # the target's, replaced
    (path / "old").write_bytes(b"x")
    (path / "new").write_bytes(b"y")
    os.rename(path / "old", path / "new")
    assert rename_meta(fd, b"old", fd, b"new", cache=cache) is True
    assert os.listdir(_mdir(path)) == ["new"]
    assert read_meta(fd, b"new", cache, warn) == Meta(1, 2, REG, -1)
    assert read_meta(fd, b"old", cache, warn) is None


def test_rename_across_dirs(tmp_path, cache, warn):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    s, t = _opendir(tmp_path / "src"), _opendir(tmp_path / "dst")
    try:
        write_meta(s, b"f", Meta(0, 0, CHR, make_rdev(4, 64)))
        (tmp_path / "src" / "f").write_bytes(b"")
        assert read_meta(s, b"f", cache, warn) is not None
        os.rename(tmp_path / "src" / "f", tmp_path / "dst" / "g")
        assert rename_meta(s, b"f", t, b"g", cache=cache) is True
        assert not _mdir(tmp_path / "src").exists()  # emptied: removed
        assert read_meta(t, b"g", cache, warn) == Meta(0, 0, CHR, make_rdev(4, 64))
        assert read_meta(s, b"f", cache, warn) is None
        # source without metadata: the target's stale metadata goes
        write_meta(t, b"h", Meta(5, 5, REG, -1))
        (tmp_path / "src" / "plain").write_bytes(b"")
        os.rename(tmp_path / "src" / "plain", tmp_path / "dst" / "h")
        assert rename_meta(s, b"plain", t, b"h") is False
        assert read_meta(t, b"h", cache, warn) is None
        assert os.listdir(_mdir(tmp_path / "dst")) == ["g"]
    finally:
        os.close(s)
        os.close(t)


def test_rename_noop_cases(d, cache, warn):
    fd, path = d
    write_meta(fd, b"a", Meta(1, 1, REG, -1))
    write_meta(fd, b"b", Meta(2, 2, REG, -1))
    (path / "a").write_bytes(b"")
    os.link(path / "a", path / "b")
    os.rename(path / "a", path / "b")  # same file: rename(2) does nothing, both names stay
    assert (path / "a").exists()
    assert rename_meta(fd, b"a", fd, b"b") is False
    assert rename_meta(fd, b"a", fd, b"a") is False
    assert read_meta(fd, b"a", cache, warn) == Meta(1, 1, REG, -1)
    assert read_meta(fd, b"b", cache, warn) == Meta(2, 2, REG, -1)


def test_link(tmp_path, cache, warn):
    (tmp_path / "sub").mkdir()
    r, s = _opendir(tmp_path), _opendir(tmp_path / "sub")
    try:
        write_meta(r, b"f", Meta(0, 0, 0o104755, -1))
        assert link_meta(r, b"f", s, b"f2") is True
        a, b = _mdir(tmp_path) / "f", _mdir(tmp_path / "sub") / "f2"
        assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink == 2
        assert read_meta(s, b"f2", cache, warn) == Meta(0, 0, 0o104755, -1)
        assert os.listdir(_mdir(tmp_path / "sub")) == ["f2"]
        # again onto the same file: no temporary left behind
        assert link_meta(r, b"f", s, b"f2") is True
        assert os.listdir(_mdir(tmp_path / "sub")) == ["f2"]
        # source without metadata: nothing for the new name (a stale file there goes)
        write_meta(s, b"stale", Meta(6, 6, REG, -1))
        assert link_meta(r, b"plain", s, b"stale") is False
        assert read_meta(s, b"stale", cache, warn) is None
        assert link_meta(r, b"plain", s, b"other") is False
        assert os.listdir(_mdir(tmp_path / "sub")) == ["f2"]
    finally:
        os.close(r)
        os.close(s)


def test_meta_dir_only_and_rmdir(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    r, s = _opendir(tmp_path), _opendir(sub)
    try:
        assert meta_dir_only(s) is False  # empty
        _mdir(sub).mkdir()
        assert meta_dir_only(s) is True  # empty metadata dir only
        write_meta(s, b"gone", Meta(0, 0, REG, -1))
        write_meta(s, b"gone2", Meta(0, 0, REG, -1))
        assert meta_dir_only(s) is True
        (sub / "file").write_bytes(b"")
        assert meta_dir_only(s) is False
        (sub / "file").unlink()
        assert rmdir_meta_dir(r, b"sub") is True
        assert os.listdir(sub) == []
        os.rmdir(sub)
        assert rmdir_meta_dir(r, b"sub") is False
    finally:
        os.close(r)
        os.close(s)


def test_meta_dir_only_odd_cases(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "t").mkdir()
    s = _opendir(sub)
    r = _opendir(tmp_path)
    try:
        (sub / ".virtfs_metadata").write_bytes(b"")  # a file, not the directory
        assert meta_dir_only(s) is False
        assert rmdir_meta_dir(r, b"sub") is False
        (sub / ".virtfs_metadata").unlink()
        (sub / ".virtfs_metadata").symlink_to(tmp_path / "t")
        assert meta_dir_only(s) is False
        assert rmdir_meta_dir(r, b"sub") is False
        (sub / ".virtfs_metadata").unlink()
        # a subdirectory inside: refused, nothing removed
        (_mdir(sub) / "weird").mkdir(parents=True)
        (_mdir(sub) / "f").write_bytes(b"")
        with pytest.raises(OSError) as e:
            rmdir_meta_dir(r, b"sub")
        assert e.value.errno == errno.ENOTEMPTY
        assert sorted(os.listdir(_mdir(sub))) == ["f", "weird"]
        os.symlink(tmp_path / "sub", tmp_path / "link")
        assert rmdir_meta_dir(r, b"link") is False  # never through a symlink
    finally:
        os.close(s)
        os.close(r)


# ------------------------------------------------------------------ malformed files, warnings

def test_warns_once_per_file_and_stamp(d, cache, warn):
    fd, path = d
    _mdir(path).mkdir()
    f = _mdir(path) / "foo"
    f.write_bytes(b"virtfs.uid=0\nvirtfs.gid=0\nbroken\nvirtfs.mode=33188\n")
    for _ in range(3):
        assert read_meta(fd, b"foo", cache, warn) == Meta(0, 0, REG, -1)
    assert warn == [".virtfs_metadata/foo:3: line without '='"]
    # edited: a new stamp, parsed and warned again
    f.write_bytes(b"virtfs.uid=0\nvirtfs.gid=x\nvirtfs.mode=33188\nvirtfs.foo=1\n")
    assert read_meta(fd, b"foo", cache, warn) == Meta(0, -1, REG, -1)
    assert read_meta(fd, b"foo", cache, warn) == Meta(0, -1, REG, -1)
    assert warn[1:] == [".virtfs_metadata/foo:2: virtfs.gid: not a decimal unsigned integer: 'x'; "
                        ".virtfs_metadata/foo:4: unknown key 'virtfs.foo'"]


def test_many_problems_one_message(d, cache, warn):
    fd, path = d
    _mdir(path).mkdir()
    (_mdir(path) / "f").write_bytes(b"bad\n" * 8)
    assert read_meta(fd, b"f", cache, warn) == Meta(-1, -1, -1, -1)
    assert len(warn) == 1 and warn[0].endswith("(and 3 more)")
    assert warn[0].startswith(".virtfs_metadata/f:1: line without '='; .virtfs_metadata/f:2:")


def test_root_file_warning(d, cache, warn):
    fd, path = d
    (path / ".virtfs_metadata_root").write_bytes(b"virtfs.mode=16877\nvirtfs.uid\n")
    assert read_root_meta(fd, cache, warn) == Meta(-1, -1, 0o40755, -1)
    assert read_root_meta(fd, cache, warn) == Meta(-1, -1, 0o40755, -1)
    assert warn == [".virtfs_metadata_root:2: line without '='"]


def test_non_utf8_name_in_message(d, cache, warn):
    fd, path = d
    name = b"caf\xe9"
    write_meta(fd, name, Meta(0, 0, REG, -1))
    with open(os.path.join(os.fsencode(path), META_DIR, name), "ab") as f:
        f.write(b"oops\n")
    assert read_meta(fd, name, cache, warn) == Meta(0, 0, REG, -1)
    assert warn == [".virtfs_metadata/caf\\xe9:4: line without '='"]
    warn[0].encode("utf-8")  # loggable


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink", "socket", "symlink-to-fifo"])
def test_not_a_regular_file(tmp_path, cache, warn, kind):
    """Never opens, follows or blocks on what is not a regular file (timeout: no hang)."""
    m = _mdir(tmp_path)
    m.mkdir()
    target = tmp_path / "real"
    target.write_bytes(b"virtfs.uid=0\n")
    p = m / "x"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    elif kind == "symlink":
        p.symlink_to(target)
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "fifo")
        p.symlink_to(tmp_path / "fifo")
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    fd = _opendir(tmp_path)
    try:
        assert read_meta(fd, b"x", cache, warn) is None
        assert read_meta(fd, b"x", cache, warn) is None
    finally:
        os.close(fd)
    what = {"fifo": "a fifo", "directory": "a directory",
            "socket": "a socket"}.get(kind, "a symlink")
    assert warn == [".virtfs_metadata/x: is %s, ignored" % what]


@pytest.mark.timeout(20)
def test_fifo_swapped_in_after_stat(d, cache, warn, monkeypatch):
    """The open itself is non-blocking and the fstat re-checked: a race cannot hang us."""
    fd, path = d
    _mdir(path).mkdir()
    os.mkfifo(_mdir(path) / "x")
    real_stat = os.stat

    def fake_stat(p, *a, **kw):  # claims "regular file" for the fifo
        st = real_stat(p, *a, **kw)
        if p == b"x":
            return os.stat_result((stat.S_IFREG | 0o600,) + tuple(st)[1:])
        return st

    monkeypatch.setattr(os, "stat", fake_stat)
    assert read_meta(fd, b"x", cache, warn) is None
    monkeypatch.undo()
    assert warn == [".virtfs_metadata/x: is a fifo, ignored"]


def test_huge_file(d, cache, warn):
    fd, path = d
    _mdir(path).mkdir()
    ok = b"virtfs.uid=1\n" + b"\n" * (MAX_META_SIZE - 13)
    assert len(ok) == MAX_META_SIZE
    (_mdir(path) / "ok").write_bytes(ok)
    assert read_meta(fd, b"ok", cache, warn) == Meta(1, -1, -1, -1)
    (_mdir(path) / "big").write_bytes(b"virtfs.uid=0\n" * 100_000)
    assert read_meta(fd, b"big", cache, warn) is None
    assert read_meta(fd, b"big", cache, warn) is None
    assert warn == [".virtfs_metadata/big: larger than 4096 bytes, ignored"]


def test_read_error(d, cache, warn, monkeypatch):
    fd, path = d
    write_meta(fd, b"f", Meta(0, 0, REG, -1))

    def eio(*a):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "read", eio)
    assert read_meta(fd, b"f", cache, warn) is None
    assert read_meta(fd, b"f", cache, warn) is None
    monkeypatch.undo()
    assert warn == [".virtfs_metadata/f: cannot read: Input/output error"]


def test_permission_denied_simulated(d, cache, warn, monkeypatch):
    fd, path = d
    write_meta(fd, b"f", Meta(0, 0, REG, -1))
    real_open = os.open

    def fake_open(p, flags, *a, **kw):
        if p == b"f":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(p, flags, *a, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    assert read_meta(fd, b"f", cache, warn) is None
    assert read_meta(fd, b"f", cache, warn) is None
    monkeypatch.undo()
    assert warn == [".virtfs_metadata/f: cannot open: Permission denied"]
    os.utime(_mdir(path) / "f", ns=(0, 10**9))  # fixed (new stamp): read again
    assert read_meta(fd, b"f", cache, warn) == Meta(0, 0, REG, -1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a 0000 file anyway")
def test_unreadable(d, cache, warn):  # pragma: no cover - tests run as root in CI
    fd, path = d
    write_meta(fd, b"f", Meta(0, 0, REG, -1))
    os.chmod(_mdir(path) / "f", 0)
    assert read_meta(fd, b"f", cache, warn) is None
    assert warn == [".virtfs_metadata/f: cannot open: Permission denied"]


def test_edit_picked_up(d, cache, warn):
    fd, path = d
    write_meta(fd, b"f", Meta(0, 0, REG, -1), cache=cache)
    f = _mdir(path) / "f"
    assert read_meta(fd, b"f", cache, warn) == Meta(0, 0, REG, -1)
    hits = cache.hits
    # edited in place by someone else, growing the file
    f.write_bytes(b"virtfs.uid=1000\nvirtfs.gid=1000\nvirtfs.mode=33188\n")
    assert read_meta(fd, b"f", cache, warn) == Meta(1000, 1000, REG, -1)
    assert cache.hits == hits
    # a same-size in-place edit: the stamp still differs once mtime moves on
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.write(b"virtfs.uid=2000")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert read_meta(fd, b"f", cache, warn) == Meta(2000, 1000, REG, -1)
    # replaced by rename, as QEMU and write_meta do
    tmp = _mdir(path) / "t"
    tmp.write_bytes(b"virtfs.uid=3000\n")
    os.rename(tmp, f)
    assert read_meta(fd, b"f", cache, warn) == Meta(3000, -1, -1, -1)
    assert read_meta(fd, b"f", cache, warn) == Meta(3000, -1, -1, -1)
    assert cache.hits == hits + 1 and warn == []


def test_hidden_constants():
    assert HIDDEN == {b".virtfs_metadata", b".virtfs_metadata_root"}
    assert store.MAX_META_SIZE == 4096


# ------------------------------------------------------------------ device numbers

def test_rdev():
    assert make_rdev(240, 300) == 1110060
    assert split_rdev(1110060) == (240, 300)
    for major in (0, 1, 5, 8, 136, 254, 255):
        for minor in (0, 1, 3, 64, 255):
            assert split_rdev(major << 8 | minor) == (major, minor)  # ptxdist's encoding
            assert make_rdev(major, minor) == major << 8 | minor
    for major, minor in ((4095, 2**20 - 1), (2**32 - 1, 2**32 - 1), (259, 65536)):
        assert split_rdev(make_rdev(major, minor)) == (major, minor)
    assert split_rdev(2**64 - 1) == (2**32 - 1, 2**32 - 1)
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            split_rdev(bad)
    with pytest.raises(ValueError):
        make_rdev(2**32, 0)


@settings(max_examples=300, deadline=None)
@given(major=st.integers(0, 2**31 - 1), minor=st.integers(0, 2**31 - 1),
       rdev=st.integers(0, 2**63 - 1))
def test_rdev_matches_libc(major, minor, rdev):
    """Same as the C library's makedev()/major()/minor() (via os, in its int range)."""
    assert make_rdev(major, minor) == os.makedev(major, minor)
    assert split_rdev(make_rdev(major, minor)) == (major, minor)
    try:
        want = (os.major(rdev), os.minor(rdev))
    except OverflowError:  # some Pythons hand major/minor back as a C int
        return
    assert split_rdev(rdev) == want
