"""FHCache twins (PyFHCache, Cython FHCache) against an OrderedDict LRU model."""

from __future__ import annotations

import gc
import os
import sys
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastnfs.fhcache import PyFHCache

from conftest import cython_twin


_cx, _why = cython_twin("fastnfs._fhcache")
needs_cython = pytest.mark.skipif(_cx is None, reason=_why or "")


@pytest.fixture(scope="module", params=[
    pytest.param(PyFHCache, id="python"),
    pytest.param(getattr(_cx, "FHCache", None), id="cython", marks=needs_cython),
])
def cache_cls(request):
    return request.param


class Model:
    """The specification: an OrderedDict LRU, most recent last."""

    def __init__(self, maxsize):
        self.d = OrderedDict()
        self.maxsize = maxsize
        self.hits = self.misses = 0

    def get(self, k):
        if k not in self.d:
            self.misses += 1
            return None
        self.d.move_to_end(k)
        self.hits += 1
        return self.d[k]

    def put(self, k, v):
        self.d[k] = v
        self.d.move_to_end(k)
        if len(self.d) > self.maxsize:
            self.d.popitem(last=False)

    def discard(self, k):
        self.d.pop(k, None)


keys = st.integers(0, 12)
paths = st.binary(min_size=1, max_size=6)
ops = st.lists(st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("put"), keys, paths),
    st.tuples(st.just("discard"), keys),
    st.tuples(st.just("contains"), keys),
    st.tuples(st.just("clear")),
), max_size=60)


def check_against_model(cls, maxsize, seq):
    c, m = cls(maxsize), Model(maxsize)
    for op, *args in seq:
        if op == "get":
            assert c.get(*args) == m.get(*args)
        elif op == "put":
            c.put(*args)
            m.put(*args)
        elif op == "discard":
            c.discard(*args)
            m.discard(*args)
        elif op == "contains":
            assert (args[0] in c) == (args[0] in m.d)
        else:
            c.clear()
            m.d.clear()
        assert len(c) == len(m.d) <= maxsize
        assert (c.hits, c.misses) == (m.hits, m.misses)
        assert {k for k in range(13) if k in c} == set(m.d)  # evicted the same
    # and the remaining LRU order: fresh keys push the entries out in order
    order = list(m.d)
    for i in range(maxsize - len(order)):
        c.put(1000 + i, b"fill")
    for i, k in enumerate(order):
        assert k in c
        c.put(2000 + i, b"new")
        assert k not in c


@pytest.mark.parametrize("maxsize", [1, 2, 3, 5])
@settings(max_examples=100, deadline=None)
@given(seq=ops)
def test_random_sequences_match_model(cache_cls, maxsize, seq):
    check_against_model(cache_cls, maxsize, seq)


def test_lru_basics(cache_cls):
    c = cache_cls(3)
    assert c.maxsize == 3 and len(c) == 0
    for k in (1, 2, 3):
        c.put(k, b"p%d" % k)
    assert c.get(1) == b"p1"  # refreshes 1: order 2, 3, 1
    c.put(4, b"p4")  # evicts 2
    assert 2 not in c and [k in c for k in (1, 3, 4)] == [True] * 3
    c.put(3, b"p3'")  # refresh by put: order 1, 4, 3
    c.put(5, b"p5")  # evicts 1
    assert 1 not in c and c.get(3) == b"p3'"
    assert c.get(99) is None
    assert (c.hits, c.misses) == (2, 1)
    c.discard(3)
    c.discard(3)
    assert len(c) == 2 and 3 not in c
    assert c.get(3) is None and c.misses == 2
    c.clear()
    assert len(c) == 0 and (c.hits, c.misses) == (2, 2)  # counters survive clear
    c.hits = c.misses = 0
    c.put(7, b"x")
    assert c.get(7) == b"x" and (c.hits, c.misses) == (1, 0)


def test_big_keys_and_values(cache_cls):
    c = cache_cls(2)
    big = 2**64 - 1  # inode numbers are u64
    c.put(big, b"/a" * 1000)
    assert c.get(big) == b"/a" * 1000 and big in c
    with pytest.raises(TypeError):
        c.get([1])  # unhashable, as a dict


def test_contains_does_not_refresh_or_count(cache_cls):
    c = cache_cls(2)
    c.put(1, b"a")
    c.put(2, b"b")
    assert 1 in c and 3 not in c
    c.put(3, b"c")  # 1 is still the least recently used
    assert 1 not in c and (c.hits, c.misses) == (0, 0)


def test_bad_maxsize(cache_cls):
    for bad in (0, -1):
        with pytest.raises(ValueError):
            cache_cls(bad)
    assert cache_cls().maxsize == 65536


def test_no_leak_on_churn(cache_cls):
    """Evicted, discarded and cleared entries are freed (refcounts balance)."""
    c = cache_cls(64)
    path = b"some/path/" + os.urandom(8)
    before = sys.getrefcount(path)
    for i in range(5000):
        c.put(i, path)
        c.get(i - 3)
        if i % 7 == 0:
            c.discard(i - 10)
    c.clear()
    del c
    gc.collect()
    assert sys.getrefcount(path) == before


class LRUMachine(RuleBasedStateMachine):
    """Both twins (whichever are available) step in lockstep with the model."""

    impls = [PyFHCache] + ([_cx.FHCache] if _cx is not None else [])

    def __init__(self):
        super().__init__()
        self.caches = [cls(3) for cls in self.impls]
        self.model = Model(3)

    @rule(k=keys, v=paths)
    def put(self, k, v):
        for c in self.caches:
            c.put(k, v)
        self.model.put(k, v)

    @rule(k=keys)
    def get(self, k):
        want = self.model.get(k)
        assert [c.get(k) for c in self.caches] == [want] * len(self.caches)

    @rule(k=keys)
    def discard(self, k):
        for c in self.caches:
            c.discard(k)
        self.model.discard(k)

    @precondition(lambda self: len(self.model.d) == 3)
    @rule()
    def clear(self):
        for c in self.caches:
            c.clear()
        self.model.d.clear()

    @invariant()
    def agree(self):
        m = self.model
        for c in self.caches:
            assert len(c) == len(m.d)
            assert (c.hits, c.misses) == (m.hits, m.misses)
            assert all(k in c for k in m.d)


TestLRUMachine = LRUMachine.TestCase
TestLRUMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@needs_cython
def test_cython_entries_are_compact_and_bounded():
    """The Cython cache keeps an entry in a C struct (~32 bytes plus its share of
    the chain heads), not a dict entry, an int and a list node (~110 bytes): the
    workers' caches after a boot storm hold thousands.  Full, it stays at
    maxsize entries, and clear() gives the arrays back."""
    import tracemalloc
    keys = [2**40 + 7 * i for i in range(20000)]   # inode numbers, made beforehand
    path = b"usr/lib/some/file"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        c = _cx.FHCache(65536)
        for k in keys:
            c.put(k, path)
        per_entry = (tracemalloc.get_traced_memory()[0] - base) / len(keys)
        assert len(c) == len(keys) and c.get(keys[0]) == path
        assert per_entry < 64, per_entry
        c.clear()
        assert tracemalloc.get_traced_memory()[0] - base < 1024
        small = _cx.FHCache(100)
        for k in keys:
            small.put(k, path)
        assert len(small) == 100 and keys[-1] in small and keys[-101] not in small
        assert tracemalloc.get_traced_memory()[0] - base < 100 * 64
    finally:
        tracemalloc.stop()
