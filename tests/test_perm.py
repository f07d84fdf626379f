"""The permission rules: fastnfs._perm (Cython, shared with the fast lane)
against its plain-Python twin fastnfs.perm."""

from __future__ import annotations

import stat as S

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from fastnfs import perm
from fastnfs.rpc import Cred

_cx, _why = cython_twin("fastnfs._perm")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

ids = st.sampled_from([0, 1, 100, 1000, 65534])
modes = st.builds(lambda fmt, bits: fmt | bits,
                  st.sampled_from([S.S_IFREG, S.S_IFDIR, S.S_IFLNK, S.S_IFCHR]),
                  st.integers(0, 0o7777))
creds = st.builds(lambda uid, gid, gids: Cred(1, uid, gid, tuple(gids), b"m"),
                  ids, ids, st.lists(ids, max_size=4))


class _St:
    def __init__(self, uid, gid, mode):
        self.st_uid, self.st_gid, self.st_mode = uid, gid, mode


@settings(max_examples=400, deadline=None)
@given(creds, ids, ids, modes, st.integers(0, 7))
def test_allowed_twins_agree(cred, uid, gid, mode, want):
    assert _cx.allowed(cred, uid, gid, mode, want) == perm.py_allowed(cred, uid, gid, mode, want)


@settings(max_examples=400, deadline=None)
@given(creds, ids, ids, modes, st.integers(0, 0x3F), st.booleans())
def test_access3_twins_agree(cred, uid, gid, mode, requested, read_only):
    s = _St(uid, gid, mode)
    assert _cx.access3(cred, s, requested, read_only) == \
        perm.py_access3(cred, s, requested, read_only)


@settings(max_examples=400, deadline=None)
@given(creds, ids, ids, modes, st.sampled_from([perm.R, perm.W]))
def test_io_allowed_twins_agree(cred, uid, gid, mode, want):
    assert _cx.io_allowed(cred, uid, gid, mode, want) == \
        perm.py_io_allowed(cred, uid, gid, mode, want)


@pytest.mark.parametrize("rule", [perm.py_io_allowed, perm.io_allowed])
def test_the_owner_may_read_and_write_whatever_the_mode(rule):
    """RFC 1813 section 4.4 (no open): knfsd's owner override, for READ and
    WRITE only; ACCESS keeps reporting the mode bits."""
    owner = Cred(1, 1000, 100, (), b"m")
    other = Cred(1, 1001, 200, (), b"m")
    for want in (perm.R, perm.W):
        assert rule(owner, 1000, 100, S.S_IFREG | 0o000, want)
        assert not rule(other, 1000, 100, S.S_IFREG | 0o000, want)
    assert rule(other, 1000, 100, S.S_IFREG | 0o001, perm.R)      # read if executable
    assert not rule(other, 1000, 100, S.S_IFREG | 0o001, perm.W)
    assert rule(Cred(1, 1001, 100, (), b"m"), 1000, 100, S.S_IFREG | 0o060, perm.W)
    granted = perm.access3(owner, _St(1000, 100, S.S_IFREG), 0x3F, False)
    assert granted == 0


def test_the_module_uses_the_cython_twin():
    assert perm.allowed is _cx.allowed and perm.access3 is _cx.access3
    assert perm.io_allowed is _cx.io_allowed
