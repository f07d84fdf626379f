"""Hot-path benchmarks, each Cython twin beside its pure-Python twin.

    pytest tests/test_bench_hotpaths.py                      # short runs, grouped
    FASTNFS_BENCH_TIME=2 pytest tests/test_bench_hotpaths.py # steadier numbers
    pytest tests/test_bench_hotpaths.py --benchmark-disable  # one call each, as a test

Rounds are capped by the marks below so a plain ``pytest`` run stays quick.
"""

from __future__ import annotations

import os
import struct

import pytest

from fastnfs.fhcache import PyFHCache
from fastnfs.xdr import PyPacker, PyUnpacker

from conftest import cython_twin


_cx, _why_x = cython_twin("fastnfs._xdr")
_cf, _why_f = cython_twin("fastnfs._fhcache")

_TIME = float(os.environ.get("FASTNFS_BENCH_TIME", "0.25"))


def bench(group):
    # min_time: enough calls per timed round to hide the timer overhead
    return pytest.mark.benchmark(group=group, max_time=_TIME, min_rounds=5, min_time=20e-6,
                                 warmup=False)


XDR_IMPLS = [
    pytest.param((PyPacker, PyUnpacker), id="python"),
    pytest.param((getattr(_cx, "Packer", None), getattr(_cx, "Unpacker", None)), id="cython",
                 marks=pytest.mark.skipif(_cx is None, reason=_why_x or "")),
]
CACHE_IMPLS = [
    pytest.param(PyFHCache, id="python"),
    pytest.param(getattr(_cf, "FHCache", None), id="cython",
                 marks=pytest.mark.skipif(_cf is None, reason=_why_f or "")),
]


# ---------------------------------------------- an NFSv3 GETATTR call record

FH = bytes(range(56))
GIDS = tuple(range(100, 116))


def _call_record() -> bytes:
    """RFC 5531 call header, AUTH_SYS credential (appendix A), GETATTR3args."""
    cred = PyPacker()
    cred.u32(0x5F3E2A11)  # stamp
    cred.string(b"buildhost-01.example")
    cred.u32(1000)
    cred.u32(1000)
    cred.u32(len(GIDS))
    for g in GIDS:
        cred.u32(g)
    p = PyPacker()
    for v in (0x1234ABCD, 0, 2, 100003, 3, 1, 1):  # xid CALL rpcvers prog vers GETATTR AUTH_SYS
        p.u32(v)
    p.opaque(cred.getvalue())
    p.u32(0)  # verifier AUTH_NONE
    p.opaque(b"")
    p.opaque(FH)  # nfs_fh3
    return p.getvalue()


CALL = _call_record()


def decode_getattr_call(Unpacker, data):
    u = Unpacker(data)
    xid = u.u32()
    if u.u32() != 0 or u.u32() != 2:
        raise ValueError
    prog, vers, proc = u.u32(), u.u32(), u.u32()
    flavor = u.u32()
    body = u.opaque(400)
    u.u32()
    u.opaque(400)
    c = Unpacker(body)
    c.u32()
    machine = c.string(255)
    uid, gid = c.u32(), c.u32()
    gids = tuple([c.u32() for _ in range(c.u32())])
    fh = u.opaque(64)
    return xid, prog, vers, proc, flavor, machine, uid, gid, gids, fh


ATTRS = (1, 0o100644, 1, 1000, 1000, 123456, 126976, 0, 0, 0x1234, 9876543,
         1_700_000_000_123_456_789, 1_700_000_001_000_000_000, 1_700_000_002_999_999_999)


def encode_getattr_reply(Packer, xid):
    p = Packer(4)
    for v in (xid, 1, 0, 0, 0, 0, 0):  # xid REPLY MSG_ACCEPTED verf(NONE, 0) SUCCESS NFS3_OK
        p.u32(v)
    p.fattr3(*ATTRS)
    p.put_u32_at(0, 0x80000000 | (len(p) - 4))
    return p.getbuffer()


EXPECTED_REPLY = struct.pack(">8I", 0x80000000 | 112, 0x1234ABCD, 1, 0, 0, 0, 0, 0)


@bench("decode GETATTR call")
@pytest.mark.parametrize("impl", XDR_IMPLS)
def test_decode_getattr_call(benchmark, impl):
    _, Unpacker = impl
    r = benchmark(decode_getattr_call, Unpacker, CALL)
    assert r == (0x1234ABCD, 100003, 3, 1, 1, b"buildhost-01.example", 1000, 1000, GIDS, FH)


@bench("encode GETATTR reply")
@pytest.mark.parametrize("impl", XDR_IMPLS)
def test_encode_getattr_reply(benchmark, impl):
    Packer, _ = impl
    r = benchmark(encode_getattr_reply, Packer, 0x1234ABCD)
    assert len(r) == 116 and bytes(r[:32]) == EXPECTED_REPLY


@bench("FHCache get hit")
@pytest.mark.parametrize("impl", CACHE_IMPLS)
def test_fhcache_get_hit(benchmark, impl):
    c = impl(4096)
    for ino in range(4000):
        c.put(ino, b"usr/lib/%d" % ino)
    get = c.get
    r = benchmark(get, 1234)
    assert r == b"usr/lib/1234" and c.hits >= 1


# ------------------------- a whole GETATTR: the fast lane against the general path

_cl, _why_l = cython_twin("fastnfs._fastpath")


LANES = [
    pytest.param("general", id="python"),
    pytest.param("fast", id="cython", marks=pytest.mark.skipif(_cl is None, reason=_why_l or "")),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server object (no sockets) on a small tree, a GETATTR record for a file
    and a LOOKUP record for its name in its directory."""
    from fastnfs.exports import single_export
    from fastnfs.server import Config, Server
    root = tmp_path_factory.mktemp("bench-tree")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    srv = Server(Config(exports=[single_export(str(root))]))
    e = srv.exports[0]
    etc = e.lookup(e.resolve(e.root_fh), b"etc")
    obj = e.lookup(etc, b"passwd")
    cred = PyPacker()
    cred.u32(0)
    cred.string(b"board")
    for v in (os.getuid(), os.getgid(), 0):
        cred.u32(v)

    def record(proc, fh, name=None):
        p = PyPacker()
        for v in (7, 0, 2, 100003, 3, proc, 1):
            p.u32(v)
        p.opaque(cred.getvalue())
        p.u32(0)
        p.u32(0)
        p.opaque(fh)
        if name is not None:
            p.string(name)
        return p.getvalue()
    yield srv, record(1, e.fh(obj)), record(3, e.fh(etc), b"passwd")
    from fastnfs import creds
    if creds.ENABLED:
        creds.become_server()


@bench("whole GETATTR call")
@pytest.mark.parametrize("lane", LANES)
def test_answer_getattr(benchmark, served, lane):
    """Record in, reply out: dispatch.Dispatcher (the reference) or _fastpath."""
    srv, rec, _ = served
    _answer(benchmark, srv, rec, lane)


@bench("whole LOOKUP call")
@pytest.mark.parametrize("lane", LANES)
def test_answer_lookup(benchmark, served, lane):
    """One name in a directory, record in, reply out (either path)."""
    srv, _, rec = served
    _answer(benchmark, srv, rec, lane)


def _answer(benchmark, srv, rec, lane):
    peer = ("127.0.0.1", 800)
    if lane == "fast":
        fast = srv.dispatcher.fast
        srv.dispatcher.dispatch(rec, peer, "tcp")   # the caller is admitted, creds in place
        assert fast.answer(rec, peer) is not None
        benchmark(fast.answer, rec, peer)
    else:
        benchmark(srv.dispatcher.dispatch, rec, peer, "tcp")


_ct, _why_t = cython_twin("fastnfs._transport")


class _Sink:
    def write(self, data):
        pass

    def is_closing(self):
        return False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 800) if name == "peername" else default


@bench("GETATTR read by the TCP record layer and answered by the lane")
@pytest.mark.parametrize("impl", [
    pytest.param("python", id="python", marks=pytest.mark.skipif(_cl is None,
                                                                  reason=_why_l or "")),
    pytest.param("cython", id="cython", marks=pytest.mark.skipif(_ct is None or _cl is None,
                                                                  reason=_why_t or _why_l or "")),
])
def test_record_layer_getattr(benchmark, served, impl):
    """What the event loop calls per read (get_buffer, buffer_updated), one
    record per read, the lane answering it: transport's twins with the lane."""
    from fastnfs import transport
    srv, rec, _ = served
    rec = struct.pack(">I", 0x80000000 | len(rec)) + rec
    srv.dispatcher.dispatch(rec[4:], ("127.0.0.1", 800), "tcp")   # admitted, creds in place
    cls = transport.PyRpcStreamProtocol if impl == "python" else _ct.RpcStreamProtocol
    p = cls(srv.dispatcher, 1 << 20)
    p.connection_made(_Sink())
    n = len(rec)
    answered = srv.dispatcher.fast.answered

    def read():
        memoryview(p.get_buffer(-1))[:n] = rec
        p.buffer_updated(n)
    read()
    assert srv.dispatcher.fast.answered == answered + 1
    benchmark(read)


@bench("READDIRPLUS page of 90 entries")
@pytest.mark.parametrize("impl", [
    pytest.param("python", id="python"),
    pytest.param("cython", id="cython", marks=pytest.mark.skipif(_cl is None, reason=_why_l or "")),
])
def test_readdirplus_entries(benchmark, tmp_path, impl):
    """backends.plain.py_put_entries_plus and its Cython twin: stat, handle and
    fattr3 of each entry of a page."""
    from fastnfs.exports import single_export
    from fastnfs.backends import plain as readdir  # put_entries_plus lives with the plain backend
    from fastnfs.server import Config, Server
    from fastnfs.xdr import Packer
    for i in range(90):
        (tmp_path / ("lib%02d.so" % i)).write_bytes(b"x" * i)
    srv = Server(Config(exports=[single_export(str(tmp_path))]))
    e = srv.exports[0]
    d = e.resolve(e.root_fh)
    cookies, names, inos = e.backend.listing(d)
    fn = readdir.py_put_entries_plus if impl == "python" else _cl.put_entries_plus

    def page():
        return fn(Packer(), e, e.backend.root_fd, d.path, d.child_anc(), cookies, names, inos, 0,
                  1 << 20, 1 << 20, 0)

    assert page() == (90, True)
    benchmark(page)


_cs, _why_s = cython_twin("fastnfs._listing")


@bench("directory listing of 800 names")
@pytest.mark.parametrize("impl", [
    pytest.param("python", id="python"),
    pytest.param("cython", id="cython", marks=pytest.mark.skipif(_cs is None, reason=_why_s or "")),
])
def test_scan_listing(benchmark, tmp_path, impl):
    """fs.py_scan_listing (os.scandir) and _listing.scan_listing: names, cookies, sort."""
    from fastnfs import fs
    for i in range(800):
        (tmp_path / ("bin%04d" % i)).write_bytes(b"")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fn = fs.py_scan_listing if impl == "python" else _cs.scan_listing
    try:
        assert len(fn(fd, frozenset())[0]) == 800
        benchmark(fn, fd, frozenset())
    finally:
        os.close(fd)
