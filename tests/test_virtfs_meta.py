"""virtfs metadata parser and MetaCache: the Python and Cython twins against each other,
against the format, and against an OrderedDict LRU model."""

from __future__ import annotations

import gc
import os
import sys
from collections import OrderedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnfs.virtfs import meta as meta_mod
from fastnfs.virtfs.meta import KEYS, LIMITS, MAX_PROBLEMS, PyMetaCache, py_parse_meta

from conftest import cython_twin


_cx, _why = cython_twin("fastnfs.virtfs._meta")
needs_cython = pytest.mark.skipif(_cx is None, reason=_why or "")

PARSERS = [
    pytest.param(py_parse_meta, id="python"),
    pytest.param(getattr(_cx, "parse_meta", None), id="cython", marks=needs_cython),
]
CACHES = [
    pytest.param(PyMetaCache, id="python"),
    pytest.param(getattr(_cx, "MetaCache", None), id="cython", marks=needs_cython),
]
ALL_PARSERS = [py_parse_meta] + ([_cx.parse_meta] if _cx is not None else [])


@pytest.fixture(scope="module", params=PARSERS)
def parse(request):
    return request.param


@pytest.fixture(scope="module", params=CACHES)
def cache_cls(request):
    return request.param


def test_selector():
    want = "python" if (os.environ.get("FASTNFS_PURE") or _cx is None) else "cython"
    assert meta_mod.IMPLEMENTATION == want
    if want == "cython":
        assert meta_mod.parse_meta is _cx.parse_meta and meta_mod.MetaCache is _cx.MetaCache
    else:
        assert meta_mod.parse_meta is py_parse_meta and meta_mod.MetaCache is PyMetaCache


# ------------------------------------------------------------------ well-formed files

QEMU_CHR = b"virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=8630\nvirtfs.rdev=1283\n"


def test_qemu_file(parse):
    # c 5,3 (/dev/ptmx), mode S_IFCHR|0666 = 0o20666 = 8630
    assert parse(QEMU_CHR) == (0, 0, 0o20666, 5 << 8 | 3, [])


def test_empty_and_blank(parse):
    assert parse(b"") == (-1, -1, -1, -1, [])
    assert parse(b"\n\n  \r\n\t\n") == (-1, -1, -1, -1, [])


def test_crlf_whitespace_no_final_newline(parse):
    data = b"  virtfs.uid = 1000 \r\n\tvirtfs.gid\t=\t100\r\n\r\nvirtfs.mode=0000016877"
    assert parse(data) == (1000, 100, 0o40755, -1, [])


def test_limits_accepted(parse):
    data = (b"virtfs.uid=4294967295\nvirtfs.gid=0\nvirtfs.mode=65535\n"
            b"virtfs.rdev=18446744073709551615")
    assert parse(data) == (2**32 - 1, 0, 0o177777, 2**64 - 1, [])


def test_accepts_bytes_like(parse):
    assert parse(bytearray(b"virtfs.uid=5")) == (5, -1, -1, -1, [])
    assert parse(memoryview(b"virtfs.gid=6")) == (-1, 6, -1, -1, [])


ws = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])


@st.composite
def well_formed(draw):
    """A file as QEMU, ptxdist or a careful human writes it: a subset of keys in any order."""
    idx = draw(st.permutations(range(4)))
    idx = idx[:draw(st.integers(0, 4))]
    want = [-1, -1, -1, -1]
    lines = []
    for i in idx:
        v = draw(st.integers(0, LIMITS[i]))
        want[i] = v
        zeros = b"0" * draw(st.integers(0, 2))
        lines.append(draw(ws) + KEYS[i] + draw(ws) + b"=" + draw(ws) + zeros + b"%d" % v
                     + draw(ws) + draw(st.sampled_from([b"", b"\r"])))
        if draw(st.booleans()):
            lines.append(draw(ws))  # blank line
    data = b"\n".join(lines)
    if lines and draw(st.booleans()):
        data += b"\n"
    return data, tuple(want)


@settings(max_examples=300, deadline=None)
@given(case=well_formed())
def test_well_formed_files(case):
    data, want = case
    for parse in ALL_PARSERS:
        assert parse(data) == (*want, [])


def _reference(data: bytes):
    """An independent, slow statement of the rules (for the property test)."""
    vals, seen, probs = [-1] * 4, [0] * 4, []
    for n, line in enumerate(data.split(b"\n"), 1):
        line = line.strip(b" \t\r\v\f")
        if not line:
            continue
        if b"=" not in line:
            probs.append((n, "line without '='"))
            continue
        k, v = line.split(b"=", 1)
        k, v = k.strip(b" \t\r\v\f"), v.strip(b" \t\r\v\f")
        if k not in KEYS:
            probs.append((n, "unknown key"))
            continue
        i = KEYS.index(k)
        if not v:
            probs.append((n, "empty"))
        elif any(c not in b"0123456789" for c in v):
            probs.append((n, "not a decimal"))
        elif int(v.lstrip(b"0") or b"0") > LIMITS[i]:
            probs.append((n, "out of range"))
        else:
            if seen[i]:
                probs.append((n, "duplicate"))
            vals[i], seen[i] = int(v.lstrip(b"0") or b"0"), n
    return tuple(vals), probs


def _check_against_reference(data):
    results = [parse(data) for parse in ALL_PARSERS]
    assert all(r == results[0] for r in results), results  # twins agree exactly
    uid, gid, mode, rdev, problems = results[0]
    want_vals, want_probs = _reference(data)
    assert (uid, gid, mode, rdev) == want_vals
    assert len(problems) == min(len(want_probs), MAX_PROBLEMS + 1)
    for (ln, msg), (wln, wkind) in zip(problems[:MAX_PROBLEMS], want_probs):
        assert ln == wln and isinstance(msg, str)
        if wkind in ("line without '='",):
            assert msg == wkind
        else:
            assert wkind in msg
    for v, limit in zip(want_vals, LIMITS):
        assert v == -1 or 0 <= v <= limit


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(data):
    _check_against_reference(data)


# bytes that make the interesting cases likely: keys, '=', digits, whitespace, newlines
fragments = st.lists(st.sampled_from(
    [b"virtfs.uid", b"virtfs.gid", b"virtfs.mode", b"virtfs.rdev", b"virtfs.", b"virtfs.x",
     b"=", b"==", b"0", b"7", b"65535", b"65536", b"4294967296", b"18446744073709551616",
     b"99999999999999999999999", b"-1", b"+1", b"0x10", b" ", b"\t", b"\r", b"\n", b"\r\n",
     b"\x00", b"\xff", b"\xe2\x82\xac", b"1_0", b"\xd9\xa3"]), max_size=40).map(b"".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=fragments)
def test_structured_noise(data):
    _check_against_reference(data)


# ------------------------------------------------------------------ malformed files

@pytest.mark.parametrize("data, want_vals, want_probs", [
    (b"virtfs.uid", (-1,) * 4, [(1, "line without '='")]),
    (b"virtfs.uid=0\ngarbage\nvirtfs.gid=5\n", (0, 5, -1, -1), [(2, "line without '='")]),
    (b"virtfs.uid=", (-1,) * 4, [(1, "virtfs.uid: empty value")]),
    (b"virtfs.uid=  \r\n", (-1,) * 4, [(1, "virtfs.uid: empty value")]),
    (b"=5", (-1,) * 4, [(1, "unknown key ''")]),
    (b"virtfs.foo=1", (-1,) * 4, [(1, "unknown key 'virtfs.foo'")]),
    (b"user.virtfs.uid=1", (-1,) * 4, [(1, "unknown key 'user.virtfs.uid'")]),
    (b"VIRTFS.UID=1", (-1,) * 4, [(1, "unknown key 'VIRTFS.UID'")]),
    (b"virtfs.uid=-1", (-1,) * 4, [(1, "virtfs.uid: not a decimal unsigned integer: '-1'")]),
    (b"virtfs.uid=+1", (-1,) * 4, [(1, "virtfs.uid: not a decimal unsigned integer: '+1'")]),
    (b"virtfs.uid=1_000", (-1,) * 4,
     [(1, "virtfs.uid: not a decimal unsigned integer: '1_000'")]),
    (b"virtfs.mode=0x1ff", (-1,) * 4,
     [(1, "virtfs.mode: not a decimal unsigned integer: '0x1ff'")]),
    (b"virtfs.uid=1 2", (-1,) * 4, [(1, "virtfs.uid: not a decimal unsigned integer: '1 2'")]),
    (b"virtfs.uid==1", (-1,) * 4, [(1, "virtfs.uid: not a decimal unsigned integer: '=1'")]),
    (b"virtfs.gid=\xd9\xa3", (-1,) * 4,  # ARABIC-INDIC DIGIT THREE: not ASCII
     [(1, "virtfs.gid: not a decimal unsigned integer: '\\xd9\\xa3'")]),
    (b"virtfs.uid=4294967296", (-1,) * 4, [(1, "virtfs.uid: out of range (max 4294967295)")]),
    (b"virtfs.gid=99999999999999999999999999", (-1,) * 4,
     [(1, "virtfs.gid: out of range (max 4294967295)")]),
    (b"virtfs.mode=65536", (-1,) * 4, [(1, "virtfs.mode: out of range (max 65535)")]),
    (b"virtfs.rdev=18446744073709551616", (-1,) * 4,
     [(1, "virtfs.rdev: out of range (max 18446744073709551615)")]),
    (b"virtfs.rdev=" + b"0" * 100 + b"5", (-1, -1, -1, 5), []),  # leading zeros: decimal
    (b"virtfs.uid=1\nvirtfs.uid=2\n", (2, -1, -1, -1),
     [(2, "virtfs.uid: duplicate key, overrides line 1")]),
    (b"virtfs.uid=1\nvirtfs.uid=x\n", (1, -1, -1, -1),  # an invalid value does not clear
     [(2, "virtfs.uid: not a decimal unsigned integer: 'x'")]),
    (b"virtfs.uid=x\nvirtfs.uid=3\n", (3, -1, -1, -1),
     [(1, "virtfs.uid: not a decimal unsigned integer: 'x'")]),
    (b"virtfs.uid=0\rvirtfs.gid=0", (-1,) * 4,  # a lone CR is not a line break
     [(1, "virtfs.uid: not a decimal unsigned integer: '0\\x0dvirtfs.gid=0'")]),
    (b"virtfs.mode=33188\x00\n", (-1,) * 4,
     [(1, "virtfs.mode: not a decimal unsigned integer: '33188\\x00'")]),
    (b"k" * 100 + b"=1", (-1,) * 4, [(1, "unknown key '" + "k" * 40 + "...'")]),
])
def test_malformed(parse, data, want_vals, want_probs):
    assert parse(data) == (*want_vals, want_probs)


def test_problems_are_capped(parse):
    data = b"bad\n" * 1000 + b"virtfs.uid=9\n"
    uid, gid, mode, rdev, problems = parse(data)
    assert uid == 9
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[MAX_PROBLEMS - 1] == (MAX_PROBLEMS, "line without '='")
    assert problems[-1] == (MAX_PROBLEMS + 1, "too many problems, the rest are not reported")


# ------------------------------------------------------------------ termination

MB = 1 << 20


@pytest.mark.timeout(60)
@pytest.mark.parametrize("data", [
    pytest.param(b"=" * MB, id="1MB-of-equals"),
    pytest.param(b"virtfs.uid" * (MB // 10), id="1MB-line-without-equals"),
    pytest.param(b"virtfs.uid=" + b"9" * MB, id="1MB-digits"),
    pytest.param(b"virtfs.uid=" + b" " * MB, id="1MB-blank-value"),
    pytest.param(b"\n" * MB, id="1MB-newlines"),
    pytest.param(b"x\n" * (MB // 2), id="half-a-million-bad-lines"),
    pytest.param(b"virtfs.uid\n" * (MB // 11), id="lines-without-value"),
    pytest.param(b"\x00" * MB, id="1MB-NUL"),
])
def test_pathological_input_terminates(parse, data):
    uid, gid, mode, rdev, problems = parse(data)
    assert len(problems) <= MAX_PROBLEMS + 1
    if parse is py_parse_meta or _cx is None:
        return
    assert (uid, gid, mode, rdev, problems) == py_parse_meta(data)


# ------------------------------------------------------------------ MetaCache

class Model:
    """The specification: an OrderedDict LRU of (stamp, value), most recent last."""

    def __init__(self, maxsize):
        self.d = OrderedDict()
        self.maxsize = maxsize
        self.hits = self.misses = 0

    def get(self, k, stamp):
        e = self.d.get(k)
        if e is None or e[0] != stamp:
            self.d.pop(k, None)
            self.misses += 1
            return None
        self.d.move_to_end(k)
        self.hits += 1
        return e[1]

    def put(self, k, stamp, v):
        self.d[k] = (stamp, v)
        self.d.move_to_end(k)
        if len(self.d) > self.maxsize:
            self.d.popitem(last=False)

    def discard(self, k):
        self.d.pop(k, None)


mkeys = st.tuples(st.integers(0, 3), st.sampled_from([b"a", b"b", b"c"]))
stamps = st.tuples(st.integers(0, 2), st.integers(0, 1))
values = st.tuples(st.integers(-1, 3), st.integers(-1, 3))
cache_ops = st.lists(st.one_of(
    st.tuples(st.just("get"), mkeys, stamps),
    st.tuples(st.just("put"), mkeys, stamps, values),
    st.tuples(st.just("discard"), mkeys),
    st.tuples(st.just("clear")),
), max_size=80)


@pytest.mark.parametrize("maxsize", [1, 2, 3, 7])
@settings(max_examples=150, deadline=None)
@given(seq=cache_ops)
def test_cache_matches_model(cache_cls, maxsize, seq):
    c, m = cache_cls(maxsize), Model(maxsize)
    for op, *args in seq:
        if op == "get":
            assert c.get(*args) == m.get(*args)
        elif op == "put":
            c.put(*args)
            m.put(*args)
        elif op == "discard":
            c.discard(*args)
            m.discard(*args)
        else:
            c.clear()
            m.d.clear()
        assert len(c) == len(m.d) <= maxsize
        assert (c.hits, c.misses) == (m.hits, m.misses)
        assert all((k in c) == (k in m.d) for k in [(i, n) for i in range(4) for n in b"abc"])


def test_cache_lru_and_stamps(cache_cls):
    c = cache_cls(3)
    assert c.maxsize == 3 and len(c) == 0
    s1 = (11, 40, 1_700_000_000_000_000_000, 1_700_000_000_000_000_001)
    for i in range(3):
        c.put((5, b"f%d" % i), s1, ("meta", i))
    assert c.get((5, b"f0"), s1) == ("meta", 0)      # refresh: order f1 f2 f0
    assert c.get((5, b"f0"), tuple(list(s1))) == ("meta", 0)  # equal, not identical
    c.put((5, b"f3"), s1, ("meta", 3))               # evicts f1
    assert (5, b"f1") not in c and (5, b"f0") in c
    # stamp changed (file edited): a miss, and the stale entry is dropped
    s2 = s1[:3] + (s1[3] + 1,)
    assert c.get((5, b"f0"), s2) is None and (5, b"f0") not in c
    assert c.get((5, b"nope"), s1) is None
    assert (c.hits, c.misses) == (2, 2)
    c.put((5, b"f2"), s2, ("meta", 22))              # replace value and stamp
    assert c.get((5, b"f2"), s1) is None and c.get((5, b"f2"), s2) is None  # dropped by s1
    c.put((5, b"f2"), s2, ("meta", 22))
    assert c.get((5, b"f2"), s2) == ("meta", 22)
    c.discard((5, b"f2"))
    c.discard((5, b"f2"))
    assert (5, b"f2") not in c
    c.clear()
    assert len(c) == 0 and c.hits == 3  # counters survive clear
    c.hits = c.misses = 0
    assert (c.hits, c.misses) == (0, 0)


def test_cache_rejects_none_and_bad_size(cache_cls):
    c = cache_cls(2)
    with pytest.raises(TypeError):
        c.put(1, (1,), None)
    assert len(c) == 0
    with pytest.raises(TypeError):
        c.get([1], (1,))  # unhashable key, as a dict
    for bad in (0, -1):
        with pytest.raises(ValueError):
            cache_cls(bad)
    assert cache_cls().maxsize == 65536


def test_cache_no_leak(cache_cls):
    c = cache_cls(16)
    value = ("v", os.urandom(8))
    stamp = (1, 2, 3, 4)
    before_v, before_s = sys.getrefcount(value), sys.getrefcount(stamp)
    for i in range(3000):
        c.put(i, stamp, value)
        c.get(i - 2, stamp)
        c.get(i - 5, (9,))  # stale drop
        if i % 7 == 0:
            c.discard(i - 1)
    c.clear()
    del c
    gc.collect()
    assert sys.getrefcount(value) == before_v and sys.getrefcount(stamp) == before_s


# ------------------------------------------------------------------ benchmarks

_TIME = float(os.environ.get("FASTNFS_BENCH_TIME", "0.25"))


def bench(group):
    return pytest.mark.benchmark(group=group, max_time=_TIME, min_rounds=5, min_time=20e-6,
                                 warmup=False)


@bench("virtfs parse_meta")
@pytest.mark.parametrize("impl", PARSERS)
def test_bench_parse(benchmark, impl):
    r = benchmark(impl, QEMU_CHR)
    assert r == (0, 0, 0o20666, 1283, [])


@bench("virtfs MetaCache get hit")
@pytest.mark.parametrize("impl", CACHES)
def test_bench_cache_hit(benchmark, impl):
    c = impl(4096)
    t = 1_700_000_000_123_456_789
    for i in range(4000):
        c.put((2, b"file%d" % i), (1000 + i, 44, t, t), i)
    key = (2, b"file1234")
    stamp = (2234, 44, t, t)  # equal to, not the same object as, the stored stamp
    r = benchmark(c.get, key, stamp)
    assert r == 1234 and c.hits >= 1
