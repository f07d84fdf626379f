"""The Cython call-header decoder, fattr3 encoder and READ's data reader against
their Python twins."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from fastnfs import fsstat, rpc
from fastnfs.nfs3 import types
from fastnfs.xdr import PyPacker, PyUnpacker

_cx, _why = cython_twin("fastnfs._rpc")
_cxdr, _ = cython_twin("fastnfs._xdr")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")


def _outcome(decode, Unpacker, data):
    u = Unpacker(data)
    try:
        xid = u.u32()
        u.u32()
        h = decode(u, xid)
    except rpc.RpcReject as e:
        return ("reject", e.kind, e.values)
    except Exception as e:  # XdrError: GARBAGE_ARGS
        return ("error", type(e).__name__)
    c = h.cred
    return ("ok", h.xid, h.prog, h.vers, h.proc, c.flavor, c.uid, c.gid, c.gids, c.machine,
            u.pos)


def _call(xid, vers, prog, proc, flavor, machine, uid, gid, gids, vflavor, tail):
    p = PyPacker()
    for v in (xid, 0, vers, prog, 3, proc):
        p.u32(v)
    body = PyPacker()
    body.u32(0)
    body.string(machine)
    body.u32(uid)
    body.u32(gid)
    body.u32(len(gids))
    for g in gids:
        body.u32(g)
    p.u32(flavor)
    p.opaque(body.getvalue())
    p.u32(vflavor)
    p.u32(0)
    return p.getvalue() + tail


u32 = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=300, deadline=None)
@given(xid=u32, vers=st.sampled_from([2, 2, 3]), prog=u32, proc=st.integers(0, 30),
       flavor=st.sampled_from([0, 1, 1, 6]), machine=st.binary(max_size=300), uid=u32, gid=u32,
       gids=st.lists(u32, max_size=18), vflavor=st.sampled_from([0, 0, 1]),
       tail=st.binary(max_size=8), cut=st.integers(0, 400))
def test_decode_call_twins_agree(xid, vers, prog, proc, flavor, machine, uid, gid, gids,
                                 vflavor, tail, cut):
    data = _call(xid, vers, prog, proc, flavor, machine, uid, gid, gids, vflavor, tail)
    for d in (data, data[:cut]):
        assert _outcome(rpc.py_decode_call, PyUnpacker, d) == \
            _outcome(_cx.decode_call, _cxdr.Unpacker, d)


class _St:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@settings(max_examples=300, deadline=None)
@given(mode=st.integers(0, 0o177777), nlink=u32, uid=st.integers(0, 2**32 - 1),
       gid=st.integers(0, 2**32 - 1), size=st.integers(0, 2**63 - 1),
       blocks=st.integers(0, 2**40), rdev=st.integers(0, 2**40), ino=st.integers(0, 2**64 - 1),
       t=st.integers(0, 2**40), fsid=st.integers(0, 2**64 - 1))
def test_put_fattr3_twins_agree(mode, nlink, uid, gid, size, blocks, rdev, ino, t, fsid):
    s = _St(st_mode=mode, st_nlink=nlink, st_uid=uid, st_gid=gid, st_size=size,
            st_blocks=blocks, st_rdev=rdev, st_ino=ino, st_atime_ns=t, st_mtime_ns=t + 1,
            st_ctime_ns=t + 2)
    a, b = PyPacker(), _cxdr.Packer()
    types.py_put_fattr3(a, s, fsid)
    _cx.put_fattr3(b, s, fsid)
    assert a.getvalue() == b.getvalue()


@given(data=st.binary(max_size=40), off=st.integers(-4, 44), n=st.integers(0, 12))
def test_zeros_at_twins_agree(data, off, n):
    a, b = PyPacker(), _cxdr.Packer()
    a.raw(data)
    b.raw(data)
    assert rpc.py_zeros_at(a, off, n) == _cx.zeros_at(b, off, n) or off < 0


def _read_outcome(P, fd, count, offset, size, nowait):
    p = P()
    p.raw(b"head")
    try:
        n = p.read_data(fd, count, offset, size, nowait)
    except OSError as e:
        return "error", e.errno, p.getvalue()
    return n, p.getvalue()


def test_read_data_twins_agree(tmp_path):
    """Packer.read_data (the block the fast lane's READ calls) against
    PyPacker.read_data: the data as an opaque, nothing past the end or past
    any off_t, and, with nowait, None for data not all in the page cache."""
    f = tmp_path / "f"
    f.write_bytes(os.urandom(1 << 20))
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        for nowait in (False, True):
            for count, offset in ((0, 0), (5, 0), (4096, 3), (7, size - 3), (9, size),
                                  (9, size + 100), (9, 2**63 - 1), (9, 2**63), (9, 2**64 - 1)):
                a = _read_outcome(PyPacker, fd, count, offset, size, nowait)
                assert _read_outcome(_cxdr.Packer, fd, count, offset, size, nowait) == a
                if offset < 2**62 or offset > 2**63 - 1:   # (2**63 - 1: the kernel says EINVAL)
                    assert a[0] == (max(0, min(count, size - offset)) if offset < 2**63 else 0)
        for P in (PyPacker, _cxdr.Packer):
            # clean pages: dropped (again: a missed read may start the kernel's read-ahead)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if fsstat.cache_pages(fd, 512 << 10, 65536) == 0:
                assert _read_outcome(P, fd, 65536, 512 << 10, size, True) == (None, b"head")
        bad = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)   # EISDIR
        try:
            assert _read_outcome(_cxdr.Packer, bad, 9, 0, 0, False) == \
                _read_outcome(PyPacker, bad, 9, 0, 0, False) == ("error", 21, b"head")
        finally:
            os.close(bad)
    finally:
        os.close(fd)
