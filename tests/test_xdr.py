"""XDR twins: PyUnpacker/PyPacker vs the Cython Unpacker/Packer vs xdrlib3.

Every test taking ``impl`` runs on both twins (the Cython one is skipped under
FASTNFS_PURE=1 or when the extension is not built); ``twins`` tests compare
the two byte for byte.
"""

from __future__ import annotations

import array
import struct
import tracemalloc
from types import SimpleNamespace

import pytest
import xdrlib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnfs.xdr import PyPacker, PyUnpacker, XdrError

from conftest import cython_twin


_cx, _why = cython_twin("fastnfs._xdr")
needs_cython = pytest.mark.skipif(_cx is None, reason=_why or "")

PY = SimpleNamespace(name="python", Packer=PyPacker, Unpacker=PyUnpacker)
CY = SimpleNamespace(name="cython", Packer=getattr(_cx, "Packer", None),
                     Unpacker=getattr(_cx, "Unpacker", None))


@pytest.fixture(scope="module", params=[
    pytest.param(PY, id="python"),
    pytest.param(CY, id="cython", marks=needs_cython),
])
def impl(request):
    return request.param


twins = needs_cython  # tests that need both implementations at once

settings.register_profile("fastnfs", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fastnfs")

u32s = st.integers(0, 2**32 - 1)
i32s = st.integers(-2**31, 2**31 - 1)
u64s = st.integers(0, 2**64 - 1)
i64s = st.integers(-2**63, 2**63 - 1)
blobs = st.binary(max_size=70)

# (name, strategy, xdrlib3 pack, xdrlib3 unpack) for the scalar types
SCALARS = {
    "u32": (u32s, "pack_uint", "unpack_uint"),
    "i32": (i32s, "pack_int", "unpack_int"),
    "u64": (u64s, "pack_uhyper", "unpack_uhyper"),
    "i64": (i64s, "pack_hyper", "unpack_hyper"),
    "boolean": (st.booleans(), "pack_bool", "unpack_bool"),
}

# One XDR item: (kind, value).  "fixed" carries its bytes (n = len).
items = st.one_of(
    *[st.tuples(st.just(k), s) for k, (s, _, _) in SCALARS.items()],
    st.tuples(st.sampled_from(["fixed", "opaque", "string", "opaque_view"]), blobs),
)


def pack_items(P, seq) -> PyPacker:
    p = P()
    for kind, v in seq:
        if kind == "opaque_view":
            p.opaque(v)
        else:
            getattr(p, kind)(v)
    return p


def unpack_item(u, kind, v):
    if kind in SCALARS:
        return getattr(u, kind)()
    if kind == "fixed":
        return u.fixed(len(v))
    if kind == "opaque_view":
        return bytes(u.opaque_view(len(v)))
    return getattr(u, kind)(len(v))


def xdrlib3_pack(seq) -> bytes:
    p = xdrlib3.Packer()
    for kind, v in seq:
        if kind in SCALARS:
            getattr(p, SCALARS[kind][1])(v)
        elif kind == "fixed":
            p.pack_fopaque(len(v), v)
        elif kind == "string":
            p.pack_string(v)
        else:
            p.pack_opaque(v)
    return p.get_buffer()


def xdrlib3_unpack(data, seq):
    u = xdrlib3.Unpacker(data)
    out = []
    for kind, v in seq:
        if kind in SCALARS:
            out.append(getattr(u, SCALARS[kind][2])())
        elif kind == "fixed":
            out.append(u.unpack_fopaque(len(v)))
        elif kind == "string":
            out.append(u.unpack_string())
        else:
            out.append(u.unpack_opaque())
    u.done()
    return out


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind", sorted(SCALARS))
@given(data=st.data())
def test_scalar_roundtrip_and_xdrlib3(impl, kind, data):
    strat, pk, upk = SCALARS[kind]
    v = data.draw(strat)
    p = impl.Packer()
    getattr(p, kind)(v)
    ref = xdrlib3.Packer()
    getattr(ref, pk)(v)
    assert p.getvalue() == ref.get_buffer()
    u = impl.Unpacker(p.getvalue())
    assert getattr(u, kind)() == v
    assert u.remaining() == 0 and u.pos == len(p)
    assert getattr(xdrlib3.Unpacker(p.getvalue()), upk)() == v


@given(seq=st.lists(items, max_size=12))
def test_sequence_roundtrip_and_xdrlib3(impl, seq):
    p = pack_items(impl.Packer, seq)
    data = p.getvalue()
    assert data == xdrlib3_pack(seq)
    assert len(p) == len(data) and len(data) % 4 == 0
    assert xdrlib3_unpack(data, seq) == [v for _, v in seq]
    for buf in (data, bytearray(data), memoryview(data)):
        u = impl.Unpacker(buf)
        assert [unpack_item(u, k, v) for k, v in seq] == [v for _, v in seq]
        assert u.remaining() == 0 and u.pos == len(data)


@given(seq=st.lists(items, max_size=12), n=st.integers(0, 400))
def test_truncation_is_xdrerror_everywhere(impl, seq, n):
    data = pack_items(PyPacker, seq).getvalue()
    cut = data[:min(n, len(data))]
    u = impl.Unpacker(cut)
    for kind, v in seq:
        pos = u.pos
        try:
            unpack_item(u, kind, v)
        except XdrError:
            # only a read that runs off the end fails; no partial advance
            # except the length word of opaque/bool (same in both twins)
            assert u.pos in (pos, pos + 4)
            assert u.remaining() == len(cut) - u.pos
            return
    assert len(cut) == len(data)


@twins
@given(seq=st.lists(items, max_size=12), n=st.integers(0, 400),
       reserve=st.integers(0, 8))
def test_twins_agree_byte_for_byte(seq, n, reserve):
    """Same bytes packed; same values, positions and errors unpacked."""
    pp, cp = PyPacker(reserve), CY.Packer(reserve)
    for kind, v in seq:
        for p in (pp, cp):
            (p.opaque if kind == "opaque_view" else getattr(p, kind))(v)
        assert len(pp) == len(cp)
    data = pp.getvalue()
    assert cp.getvalue() == data and bytes(cp.getbuffer()) == bytes(pp.getbuffer())
    cut = data[:n]

    def trace(U):
        u = U(cut, reserve if reserve <= len(cut) else len(cut))
        out = []
        for kind, v in seq:
            try:
                out.append(unpack_item(u, kind, v))
            except XdrError as e:
                out.append(("XdrError", str(e)))
                break
            finally:
                out.append((u.pos, u.remaining()))
        return out

    assert trace(PyUnpacker) == trace(CY.Unpacker)


# ------------------------------------------------------------ decode errors


def test_oversized_length_does_not_allocate(impl):
    """A 4 GiB opaque length on an 8-byte record (RFC 4506 section 4.10)."""
    data = b"\xff\xff\xff\xff" + b"abcd"
    tracemalloc.start()
    try:
        for call in (lambda u: u.opaque(2**40), lambda u: u.string(2**40),
                     lambda u: u.opaque_view(2**40), lambda u: u.opaque(2**32 - 1)):
            u = impl.Unpacker(data)
            with pytest.raises(XdrError, match="truncated"):
                call(u)
            assert u.pos == 4 and u.remaining() == 4
        for n in (2**32 - 1, 2**32, 2**63, 2**70):
            with pytest.raises(XdrError):
                impl.Unpacker(data).fixed(n)
            with pytest.raises(XdrError):
                impl.Unpacker(data).skip(n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("maxlen", [0, 3, 7])
def test_opaque_over_limit(impl, maxlen):
    data = PyPacker()
    data.opaque(b"x" * 8)
    for meth in ("opaque", "string", "opaque_view"):
        u = impl.Unpacker(data.getvalue())
        with pytest.raises(XdrError, match="over limit"):
            getattr(u, meth)(maxlen)
        assert u.pos == 4 and u.remaining() == 8  # the length word was consumed
    assert impl.Unpacker(data.getvalue()).opaque(8) == b"x" * 8
    assert impl.Unpacker(data.getvalue()).opaque(2**64) == b"x" * 8


@pytest.mark.parametrize("v", [2, 3, 0x80000000, 0xFFFFFFFF])
def test_bool_out_of_range(impl, v):
    u = impl.Unpacker(struct.pack(">II", v, 1))
    with pytest.raises(XdrError, match="bool"):
        u.boolean()
    assert u.pos == 4 and u.remaining() == 4
    assert u.boolean() is True


@pytest.mark.parametrize("meth", ["u32", "i32", "u64", "i64", "boolean"])
@pytest.mark.parametrize("size", [0, 1, 3, 7])
def test_truncated_scalars(impl, meth, size):
    need = 8 if meth in ("u64", "i64") else 4
    u = impl.Unpacker(b"\0" * size)
    if size >= need:
        getattr(u, meth)()
        return
    with pytest.raises(XdrError, match="truncated"):
        getattr(u, meth)()
    assert u.pos == 0 and u.remaining() == size


def test_negative_lengths(impl):
    u = impl.Unpacker(b"\0" * 16, 8)
    for call in (lambda: u.fixed(-1), lambda: u.fixed(-4), lambda: u.skip(-4)):
        with pytest.raises(XdrError, match="negative"):
            call()
        assert u.pos == 8 and u.remaining() == 8
    assert u.fixed(0) == b"" and u.pos == 8
    u.skip(3)
    assert u.pos == 11 and u.remaining() == 5


def test_window(impl):
    data = bytes(range(16))
    u = impl.Unpacker(data, 4, 12)
    assert u.pos == 4 and u.remaining() == 8
    assert u.u32() == 0x04050607 and u.u32() == 0x08090A0B
    with pytest.raises(XdrError):
        u.u32()  # bytes 12.. exist, but lie outside the window
    for pos, end in [(-1, None), (17, None), (0, 17), (8, 4), (0, -1)]:
        with pytest.raises(XdrError, match="window"):
            impl.Unpacker(data, pos, end)
    assert impl.Unpacker(data, 16).remaining() == 0


def test_buffer_kinds(impl):
    words = array.array("I", [0x01020304, 0x05060708])
    mv = memoryview(words)  # itemsize 4: the window is still in bytes
    u = impl.Unpacker(mv)
    assert u.remaining() == 8
    assert u.fixed(8) == words.tobytes()
    with pytest.raises(TypeError):
        impl.Unpacker("not bytes")


def test_opaque_view_is_zero_copy(impl):
    p = PyPacker()
    p.opaque(b"hello world")
    p.u32(7)
    data = bytearray(p.getvalue())
    u = impl.Unpacker(data)
    v = u.opaque_view(100)
    assert isinstance(v, memoryview) and v.format == "B" and v.nbytes == 11
    assert bytes(v) == b"hello world" and u.u32() == 7
    data[4] = ord("j")  # same memory, no copy
    assert bytes(v) == b"jello world"
    with pytest.raises(BufferError):
        data.append(0)  # the view pins the bytearray, as with any memoryview
    assert not v.readonly
    vb = impl.Unpacker(p.getvalue()).opaque_view(0xFFFFFFFF)
    assert vb.readonly and vb.obj is not None and bytes(vb) == b"hello world"


# ------------------------------------------------------------ packer API


def test_packer_api(impl):
    p = impl.Packer(4)
    assert len(p) == 4 and p.getvalue() == b"\0" * 4
    p.u32(1)
    p.string(b"abcde")
    assert len(p) == 20
    p.put_u32_at(0, 0x80000000 | (len(p) - 4))
    p.put_u32_at(-4, 0xDEADBEEF)
    assert p.getvalue()[:4] == b"\x80\0\0\x10" and p.getvalue()[-4:] == b"\xde\xad\xbe\xef"
    buf = p.getbuffer()
    assert isinstance(buf, (bytearray, memoryview)) and bytes(buf) == p.getvalue()
    assert bytes(memoryview(buf)[4:]) == p.getvalue()[4:]
    del buf
    mark = len(p)
    p.raw(b"\1\2\3\4")
    p.fixed(b"xyz")
    p.fixed(bytearray(b"wxyz"), 4)
    p.fixed(memoryview(b"12345678"), 8)
    with pytest.raises(XdrError):
        p.fixed(b"abc", 4)
    p.truncate(mark)
    assert len(p) == mark
    p.truncate(mark + 100)
    assert len(p) == mark
    p.truncate(-4)
    assert len(p) == mark - 4
    p.truncate(0)
    assert p.getvalue() == b""
    p.boolean([1])
    p.boolean(0)
    assert p.getvalue() == b"\0\0\0\1\0\0\0\0"


def test_packer_buffer_arguments(impl):
    """opaque/fixed count bytes, not items, of wide-format buffers."""
    words = array.array("I", [1, 2, 3])
    p = impl.Packer()
    p.opaque(memoryview(words))
    p.fixed(words)
    p.raw(bytearray(b"\0\0\0\0"))
    assert p.getvalue() == b"\0\0\0\x0c" + words.tobytes() * 2 + b"\0" * 4
    with pytest.raises(TypeError):
        p.opaque("text")


@pytest.mark.parametrize("meth,bad", [
    ("u32", -1), ("u32", 2**32), ("u32", 1.5), ("u32", "1"),
    ("i32", 2**31), ("i32", -2**31 - 1), ("i32", None),
    ("u64", -1), ("u64", 2**64), ("i64", 2**63), ("i64", -2**63 - 1),
])
def test_packer_rejects_out_of_range(impl, meth, bad):
    p = impl.Packer()
    with pytest.raises(struct.error):
        getattr(p, meth)(bad)
    assert len(p) == 0


def test_put_u32_at_bounds(impl):
    p = impl.Packer(6)
    for off in (3, 6, -7, 100):
        with pytest.raises(struct.error):
            p.put_u32_at(off, 1)
    with pytest.raises(struct.error):
        p.put_u32_at(0, 2**32)
    p.put_u32_at(2, 0x01020304)
    assert p.getvalue() == b"\0\0\1\2\3\4"


def test_packer_grows(impl):
    p = impl.Packer()
    blob = bytes(range(256)) * 64
    for i in range(200):
        p.u32(i)
        p.opaque(blob[: i * 37])
    u = impl.Unpacker(p.getvalue())
    for i in range(200):
        assert u.u32() == i and u.opaque(1 << 20) == blob[: i * 37]
    assert u.remaining() == 0


@needs_cython
def test_cython_getbuffer_is_pinned_memoryview():
    p = CY.Packer(4)
    p.u32(5)
    view = p.getbuffer()
    assert isinstance(view, memoryview) and not view.readonly and len(view) == 8
    view[0:4] = b"\x80\0\0\4"  # the record mark, written through the view
    p.put_u32_at(4, 6)  # in place: allowed while exported
    assert p.getvalue() == b"\x80\0\0\4\0\0\0\6"
    for grow in (lambda: p.u32(1), lambda: p.truncate(0), lambda: p.raw(b"x" * 1000)):
        with pytest.raises(BufferError):
            grow()
    p.raw(b"")  # no size change: fine
    assert len(p) == 8
    view.release()
    p.u32(7)
    p.truncate(4)
    assert p.getvalue() == b"\x80\0\0\4"


# ------------------------------------------------------------ fattr3

_FATTR3 = struct.Struct(">5I2Q2I2Q6I")  # RFC 1813 section 2.6, 84 bytes


def fattr3_reference(ftype, mode, nlink, uid, gid, size, used, smaj, smin, fsid, fileid,
                     atime_ns, mtime_ns, ctime_ns):
    def t(ns):
        sec, nsec = divmod(ns, 10**9)
        return sec % 2**32, nsec
    return _FATTR3.pack(ftype, mode % 0o10000, nlink, uid % 2**32, gid % 2**32, size, used,
                        smaj, smin, fsid, fileid, *t(atime_ns), *t(mtime_ns), *t(ctime_ns))


fattr3_args = st.tuples(
    st.integers(1, 7), st.integers(-2**40, 2**40), u32s, st.integers(-2**63, 2**64),
    st.integers(-2**63, 2**64), u64s, u64s, u32s, u32s, u64s, u64s,
    st.integers(-2**70, 2**70), st.integers(-2**63, 2**63 - 1),
    st.integers(0, 2**64),
)


@given(args=fattr3_args)
def test_fattr3_matches_struct_reference(impl, args):
    p = impl.Packer()
    p.fattr3(*args)
    assert len(p) == 84
    assert p.getvalue() == fattr3_reference(*args)


def test_fattr3_typical_and_keywords(impl):
    kw = dict(ftype=1, mode=0o100644, nlink=1, uid=-2, gid=1000, size=12345, used=16384,
              specmajor=0, specminor=0, fsid=0x1234, fileid=987654321,
              atime_ns=1_700_000_000_123_456_789, mtime_ns=-1, ctime_ns=0)
    p = impl.Packer()
    p.fattr3(**kw)
    assert p.getvalue() == fattr3_reference(*kw.values())
    u = impl.Unpacker(p.getvalue())
    assert [u.u32() for _ in range(5)] == [1, 0o644, 1, 0xFFFFFFFE, 1000]
    u.skip(40)
    assert [u.u32() for _ in range(4)] == [1_700_000_000, 123_456_789, 0xFFFFFFFF, 999_999_999]


@pytest.mark.parametrize("field,bad", [(0, -1), (2, 2**32), (5, -1), (9, 2**64), (1, 1.5)])
def test_fattr3_rejects(impl, field, bad):
    args = [1, 0o644, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    args[field] = bad
    with pytest.raises((struct.error, TypeError)):
        impl.Packer().fattr3(*args)


@twins
@given(args=fattr3_args, prefix=st.binary(max_size=9))
def test_twins_fattr3(args, prefix):
    pp, cp = PyPacker(), CY.Packer()
    for p in (pp, cp):
        p.raw(prefix)
        p.fattr3(*args)
    assert pp.getvalue() == cp.getvalue()


def test_implementation_flag():
    import fastnfs.xdr as x
    assert x.IMPLEMENTATION == ("python" if _cx is None else "cython")
