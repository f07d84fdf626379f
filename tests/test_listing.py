"""READDIR listings: the Cython scan (fastnfs._listing) against its Python twin
(fs.py_scan_listing, on os.scandir)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from fastnfs import fs

_cx, _why = cython_twin("fastnfs._listing")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@settings(max_examples=40, deadline=None)
@given(st.sets(names, max_size=60), st.sets(names, max_size=3))
def test_twins_agree(tmp_path_factory, entries, hidden):
    d = tmp_path_factory.mktemp("listing")
    for n in entries:
        os.close(os.open(os.path.join(os.fsencode(d), n), os.O_CREAT | os.O_WRONLY, 0o600))
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        want = fs.py_scan_listing(fd, frozenset(hidden))
        got = _cx.scan_listing(fd, frozenset(hidden))
        assert got == want
        assert sorted(got[1]) == sorted(set(entries) - set(hidden))
        assert got[0] == sorted(got[0]) and all(c > 2 for c in got[0])
        assert got[0] == [fs.name_cookie(n) for n in got[1]]
        # the descriptor's offset is left at the start: a second scan sees everything
        assert fs.py_scan_listing(fd, frozenset(hidden)) == want
        assert _cx.scan_listing(fd, frozenset(hidden)) == want
    finally:
        os.close(fd)


def test_not_a_directory(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    fd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            _cx.scan_listing(fd, frozenset())
        with pytest.raises(OSError):
            fs.py_scan_listing(fd, frozenset())
    finally:
        os.close(fd)
