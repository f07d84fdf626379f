"""The filehandle layout: fastnfs._handles (Cython, cimported by the fast
lane) against its plain-Python twin in fastnfs.handles, and which object a
handle names: fastnfs._fsstat.names_object against fsstat.py_names_object,
and names_fileid (a board's handles) against fsstat.py_names_fileid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from fastnfs import fsstat, handles
from fastnfs.fs import NFSError
from fastnfs.nfs3 import const as C

_cx, _why = cython_twin("fastnfs._handles")
_fs, _ = cython_twin("fastnfs._fsstat")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
ancestors = st.lists(u64, max_size=5).map(tuple)


@settings(max_examples=400, deadline=None)
@given(u32, u64, u64, u32, ancestors)
def test_encode_twins_agree(eid, ino, dev, gen, anc):
    fh = handles.py_encode_fh(eid, ino, dev, gen, anc)
    assert _cx.encode_fh(eid, ino, dev, gen, anc) == fh
    assert _cx.unpack_fh(fh) == handles.py_unpack_fh(fh) == (eid, ino, dev & 0xFFFFFFFF,
                                                               gen, anc)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=72),
                 st.tuples(u32, u64, u32, u32, ancestors, st.integers(0, 71),
                           st.integers(0, 255)).map(
                     lambda t: _mangle(handles.py_encode_fh(*t[:5]), t[5], t[6]))))
def test_unpack_twins_agree_on_any_bytes(fh):
    assert _cx.unpack_fh(fh) == handles.py_unpack_fh(fh)


def _mangle(fh: bytes, i: int, b: int) -> bytes:
    """fh with one byte changed, or cut short, or one byte longer."""
    if i < len(fh):
        return fh[:i] + bytes([b]) + fh[i + 1:]
    return fh + bytes([b]) if i % 2 else fh[:i % len(fh)]


def test_decode_fh_refuses_as_before():
    fh = handles.encode_fh(7, 42, 3, 9, (1, 2))
    assert handles.decode_fh(fh, 7) == (42, 3, 9, (1, 2))
    for bad, status in ((fh[:-1], C.NFS3ERR_BADHANDLE), (b"\2" + fh[1:], C.NFS3ERR_BADHANDLE),
                        (fh[:2] + b"\0\1" + fh[4:], C.NFS3ERR_BADHANDLE)):
        with pytest.raises(NFSError) as e:
            handles.decode_fh(bad, 7)
        assert e.value.status == status
    with pytest.raises(NFSError) as e:
        handles.decode_fh(fh, 8)
    assert e.value.status == C.NFS3ERR_STALE


def test_the_module_uses_the_cython_twin():
    assert handles.encode_fh is _cx.encode_fh and handles.unpack_fh is _cx.unpack_fh


class _St:
    def __init__(self, ino, dev, btime_ns):
        self.st_ino, self.st_dev, self.btime_ns = ino, dev, btime_ns


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([5, 6]), st.sampled_from([0, 0x10803, 0x1_0000_0803]),
       st.sampled_from([0, 1, 1_700_000_000_123_456_789]),
       st.sampled_from([5, 6]), st.sampled_from([0, 0x803, 0x10803]), u32)
def test_names_object_twins_agree(ino, dev, btime, hino, hdev, hgen):
    s = _St(ino, dev, btime)
    for gen in (hgen, 0, fsstat.generation(btime)):
        assert _fs.names_object(s, hino, hdev, gen) == \
            fsstat.py_names_object(s, hino, hdev, gen)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([5, 6, 2**63 | 5]), st.sampled_from([0, 1, 7, 2**32 - 1]),
       st.sampled_from([5, 6, 2**63 | 5]), st.sampled_from([0, 1, 7, 2**32 - 1]))
def test_names_fileid_twins_agree(fileid, fgen, ino, gen):
    assert _fs.names_fileid(fileid, fgen, ino, gen) is \
        fsstat.py_names_fileid(fileid, fgen, ino, gen)


def test_names_fileid_compares_generations_only_when_both_have_one():
    for f in (_fs.names_fileid, fsstat.py_names_fileid):
        assert f(5, 7, 5, 7) and f(5, 0, 5, 7) and f(5, 7, 5, 0)
        assert not f(5, 7, 5, 8) and not f(6, 7, 5, 7) and not f(6, 0, 5, 0)


def _outcome(f, *args):
    try:
        st = f(*args)
    except OSError as e:
        return e.errno
    return (st.st_ino, st.st_mode, st.st_dev, st.st_nlink, st.st_size, st.st_mtime_ns,
            st.btime_ns)


def test_lookup_at_twins_agree(tmp_path):
    import errno
    import os
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    (tmp_path / "d" / "ln").symlink_to("/etc/passwd")
    (tmp_path / "s").symlink_to("d")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        d_ino = os.lstat(tmp_path / "d").st_ino
        f_ino = os.lstat(tmp_path / "d" / "f").st_ino
        cases = {(b".", 0, b"d"): None, (b"d", d_ino, b"f"): None, (b"d", d_ino, b"ln"): None,
                 (b"d", d_ino, b"no"): errno.ENOENT, (b"d", f_ino, b"f"): errno.ESTALE,
                 (b"d/f", f_ino, b"x"): errno.ENOTDIR, (b"s", d_ino, b"f"): errno.ENOTDIR,
                 (b"gone", d_ino, b"f"): errno.ESTALE}
        for args, want in cases.items():
            got = _outcome(fsstat.py_lookup_at, root, *args)
            assert _outcome(_fs.lookup_at, root, *args) == got, args
            if want is not None:
                assert got == want, args
            else:
                name = tmp_path / os.fsdecode(args[0]) / os.fsdecode(args[2])
                assert got[0] == os.lstat(name).st_ino, args
    finally:
        os.close(root)
