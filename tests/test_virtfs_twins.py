"""The virtfs rules the fast lane shares with the general path: their C home
(fastnfs.virtfs._meta, cimported by the lane) against the pure-Python twins
(virtfs.store.HIDDEN, virtfs.overlay.py_*)."""

from __future__ import annotations

import os
import stat as S

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from fastnfs.fsstat import lstatat
from fastnfs.virtfs import overlay
from fastnfs.virtfs.meta import PyMetaCache
from fastnfs.virtfs.store import HIDDEN, META_DIR, META_ROOT, NO_META, Meta

_cx, _why = cython_twin("fastnfs.virtfs._meta")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

names = st.one_of(st.sampled_from(sorted(HIDDEN) + [b".virtfs_metadatA", b".virtfs_metadata_",
                                                   b"virtfs_metadata", b".virtfs_metadata_roo"]),
                  st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\0" not in b))


@settings(max_examples=500, deadline=None)
@given(names)
def test_hidden_twins_agree(name):
    assert _cx.is_hidden(name) == (name in HIDDEN)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.just(b"."), st.lists(names, min_size=1, max_size=6).map(b"/".join)))
def test_meta_path_twins_agree(path):
    assert _cx.meta_path(path) == overlay.py_meta_path(path)


def test_meta_path_layout():
    for f in (_cx.meta_path, overlay.py_meta_path):
        assert f(b".") == META_ROOT
        assert f(b"dev") == META_DIR + b"/dev"
        assert f(b"a/b/c") == b"a/b/" + META_DIR + b"/c"


kinds = st.sampled_from([S.S_IFREG, S.S_IFDIR, S.S_IFLNK, S.S_IFCHR, S.S_IFBLK, S.S_IFIFO,
                         S.S_IFSOCK])
opt = st.one_of(st.just(-1), st.integers(0, 2**32 - 1))
metas = st.builds(Meta, opt, opt,
                  st.one_of(st.just(-1), st.builds(lambda k, b: k | b, kinds, st.integers(0, 0o7777))),
                  st.one_of(st.just(-1), st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF)))


@settings(max_examples=1500, deadline=None)
@given(kinds, st.integers(0, 0o7777), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.sampled_from([0, 1, 4096]), st.sampled_from([0, 0x803]), metas)
def test_overlay_twins_agree(kind, bits, uid, gid, size, rdev, meta):
    args = (kind | bits, uid, gid, size, rdev, meta)
    assert _cx.overlay_fields(*args) == overlay.py_overlay_fields(*args)


def test_device_as_file_rule():
    for f in (_cx.overlay_fields, overlay.py_overlay_fields):
        chr_meta = Meta(0, 0, S.S_IFCHR | 0o620, os.makedev(4, 1))
        # an empty regular file stands for the device
        assert f(S.S_IFREG | 0o600, 1000, 1000, 0, 0, chr_meta) == (
            S.S_IFCHR | 0o620, 0, 0, 0, os.makedev(4, 1))
        # a file with content stays a file, with the metadata's permission bits
        assert f(S.S_IFREG | 0o600, 1000, 1000, 5, 0, chr_meta) == (
            S.S_IFREG | 0o620, 0, 0, 5, 0)
        # a symlink kept as a file (QEMU's way) may hold its target
        assert f(S.S_IFREG | 0o600, 1, 1, 9, 0, Meta(-1, -1, S.S_IFLNK | 0o777, -1)) == (
            S.S_IFLNK | 0o777, 1, 1, 9, 0)
        # nothing said, nothing changed
        assert f(S.S_IFDIR | 0o755, 1, 2, 4096, 0, NO_META) == (S.S_IFDIR | 0o755, 1, 2, 4096, 0)


def _both(fd, mp):
    """meta_at's answer from each twin, each with a cache of its own kind."""
    return [f(c, fd, mp, NO_META) for c, f in ((_py_cache, overlay.py_meta_at),
                                              (_cx_cache, _cx.meta_at_py))]


_py_cache = _cx_cache = None


def test_meta_at_twins_agree(tmp_path):
    global _py_cache, _cx_cache
    from fastnfs.virtfs.meta import MetaCache
    _py_cache, _cx_cache = PyMetaCache(), MetaCache()
    d = tmp_path / "d"
    md = d / META_DIR.decode()
    md.mkdir(parents=True)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _both(fd, META_DIR + b"/f") == [NO_META, NO_META]          # no metadata file
        (md / "f").write_text("virtfs.uid=7\n")
        assert _both(fd, META_DIR + b"/f") == [Meta(7, -1, -1, -1)] * 2   # read and cached
        assert len(_py_cache) == len(_cx_cache) == 1
        assert _both(fd, META_DIR + b"/f") == [Meta(7, -1, -1, -1)] * 2   # a hit
        (md / "f").write_text("virtfs.uid=8\nvirtfs.gid=9\nvirtfs.mode=8630\nvirtfs.rdev=1283\n")
        assert _both(fd, META_DIR + b"/f") == [Meta(8, 9, 8630, 1283)] * 2  # rewritten: read again
        (md / "g").write_text("\n")
        assert _both(fd, META_DIR + b"/g") == [NO_META, NO_META]          # says nothing
        # flaws are left to Virtfs.meta, which warns: nothing cached here
        (md / "bad").write_text("virtfs.uid=oops\n")
        (md / "big").write_bytes(b"virtfs.uid=1\n" + b" " * 5000)
        (md / "dir").mkdir()
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "h").write_text("virtfs.uid=4242\n")
        (d / "lnk").symlink_to(outside)
        os.symlink("../outside/h", md / "sym")
        for mp in (b"bad", b"big", b"dir", b"sym"):
            assert _both(fd, META_DIR + b"/" + mp) == [None, None], mp
        assert _both(fd, b"lnk/h") == [None, None]                       # a symlink on the way
        assert len(_py_cache) == len(_cx_cache) == 2                     # f and g only
    finally:
        os.close(fd)


def test_metadata_size_limit_is_the_stores():
    from fastnfs.virtfs.store import MAX_META_SIZE
    assert MAX_META_SIZE == 4096   # virtfs/_meta.pyx's MAX_META_SIZE


def test_the_module_uses_the_cython_twins():
    assert overlay.overlay_fields is _cx.overlay_fields
    assert overlay.meta_path is _cx.meta_path and overlay.meta_at is _cx.meta_at_py
