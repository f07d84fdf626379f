# cython: language_level=3
"""Cython twin of fastnfs.fhcache.PyFHCache: bounded LRU inode -> path.

The entries are C structs in one array (the inode, a reference to the path,
the LRU links and the hash chain link: 32 bytes), found through an array of
chain heads indexed by a multiplicative hash of the inode.  A dict entry, an
int key and a list node took ~110 bytes per entry besides the path (issue 15:
~0.9 MB in the two workers after the 64-client boot storm).  The arrays grow
by doubling as the cache fills and are freed by clear().

LRUMap is the general form (any key, a dict and a list node per entry), which
virtfs's metadata cache builds on.
"""

cimport cython
from libc.stdint cimport int32_t, uint64_t
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.object cimport PyObject
from cpython.dict cimport PyDict_DelItem, PyDict_SetItem
from cpython.ref cimport Py_DECREF, Py_INCREF

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL


cdef int32_t NONE = -1
cdef Py_ssize_t MAX_ENTRIES = 0x7ffffff0   # entry indices are int32


cdef inline Py_ssize_t _bucket(FHCache c, uint64_t ino) noexcept:
    return <Py_ssize_t>((ino * <uint64_t>0x9E3779B97F4A7C15) >> c._shift)


cdef inline int _as_ino(object key, uint64_t* out) except -1:
    """1 with the inode in out; 0 for an int no inode can be (never stored)."""
    try:
        out[0] = key
    except OverflowError:
        return 0
    return 1


cdef class FHCache:
    """Bounded LRU map from inode number to path bytes (see fastnfs.fhcache)."""

    def __cinit__(self, *args, **kwargs):
        self._e = NULL
        self._buckets = NULL
        self._reset()

    def __init__(self, maxsize=65536):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.clear()
        self.maxsize = min(maxsize, MAX_ENTRIES - 1)
        self.hits = 0
        self.misses = 0

    def __dealloc__(self):
        self._drop_all()

    def __len__(self):
        return self._len

    def __contains__(self, ino):
        cdef uint64_t k
        return _as_ino(ino, &k) == 1 and self._find(k) != NONE

    def get(self, ino):
        """The cached path for ino (and mark it recently used), or None."""
        cdef uint64_t k
        if not _as_ino(ino, &k):
            self.misses += 1
            return None
        return self.lookup(k)

    def put(self, ino, path):
        self.store(ino, path)

    def discard(self, ino):
        cdef uint64_t k
        cdef int32_t i
        if _as_ino(ino, &k):
            i = self._find(k)
            if i != NONE:
                self._remove(i)

    def clear(self):
        self._drop_all()

    # -- the C interface (_fastpath) -----------------------------------------
    cdef object lookup(self, uint64_t ino):
        cdef int32_t i = self._find(ino)
        if i == NONE or <object>self._e[i].path is None:
            self.misses += 1
            return None
        if i != self._mru:
            self._unlink(i)
            self._append(i)
        self.hits += 1
        return <object>self._e[i].path

    cdef int store(self, uint64_t ino, object path) except -1:
        cdef int32_t i = self._find(ino)
        cdef PyObject* old
        if i != NONE:
            old = self._e[i].path
            Py_INCREF(path)
            self._e[i].path = <PyObject*>path
            if i != self._mru:
                self._unlink(i)
                self._append(i)
            Py_DECREF(<object>old)
        else:
            if self._free != NONE:        # one freed by a discard or an eviction
                i = self._free
                self._free = self._e[i].hnext
            else:                         # the next never used (its page untouched so far)
                if self._used == self._cap:
                    self._grow()
                i = <int32_t>self._used
                self._used += 1
            self._e[i].ino = ino
            Py_INCREF(path)
            self._e[i].path = <PyObject*>path
            b = _bucket(self, ino)
            self._e[i].hnext = self._buckets[b]
            self._buckets[b] = i
            self._append(i)
            self._len += 1
        if self._len > self.maxsize:
            self._remove(self._lru)    # one eviction, as the reference's single pop
        return 0

    # -- internals -----------------------------------------------------------
    cdef void _reset(self) noexcept:
        self._cap = 0
        self._used = 0
        self._nb = 0
        self._shift = 64
        self._free = NONE
        self._lru = self._mru = NONE
        self._len = 0

    cdef void _drop_all(self) noexcept:
        """Release every path and both arrays."""
        cdef Entry* e = self._e
        cdef int32_t i = self._lru
        cdef PyObject* p
        self._e = NULL
        PyMem_RawFree(self._buckets)
        self._buckets = NULL
        self._reset()          # consistent (empty) before any path is released
        while i != NONE:
            p = e[i].path
            i = e[i].next
            Py_DECREF(<object>p)
        PyMem_RawFree(e)

    cdef int32_t _find(self, uint64_t ino) noexcept:
        if self._nb == 0:
            return NONE
        cdef int32_t i = self._buckets[_bucket(self, ino)]
        while i != NONE and self._e[i].ino != ino:
            i = self._e[i].hnext
        return i

    cdef void _unlink(self, int32_t i) noexcept:
        cdef Entry* e = self._e
        if e[i].prev != NONE:
            e[e[i].prev].next = e[i].next
        else:
            self._lru = e[i].next
        if e[i].next != NONE:
            e[e[i].next].prev = e[i].prev
        else:
            self._mru = e[i].prev

    cdef void _append(self, int32_t i) noexcept:
        cdef Entry* e = self._e
        e[i].prev = self._mru
        e[i].next = NONE
        if self._mru != NONE:
            e[self._mru].next = i
        else:
            self._lru = i
        self._mru = i

    cdef void _remove(self, int32_t i) noexcept:
        """Unlink entry i from its chain and the LRU list, free it, release its path."""
        cdef Entry* e = self._e
        cdef Py_ssize_t b = _bucket(self, e[i].ino)
        cdef int32_t j = self._buckets[b]
        cdef PyObject* p = e[i].path
        if j == i:
            self._buckets[b] = e[i].hnext
        else:
            while e[j].hnext != i:
                j = e[j].hnext
            e[j].hnext = e[i].hnext
        self._unlink(i)
        e[i].path = NULL
        e[i].hnext = self._free
        self._free = i
        self._len -= 1
        Py_DECREF(<object>p)

    cdef int _grow(self) except -1:
        """Double the entries (and the chain heads with them); rechain every entry.
        The new entries are not written to until used: a big array is mapped
        by malloc, and its pages become resident only as the cache fills."""
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else 8
        cdef Py_ssize_t nb = 1
        cdef int shift = 64
        cdef Py_ssize_t k
        cdef int32_t i
        if cap > MAX_ENTRIES:
            raise MemoryError("filehandle cache full")
        cdef Entry* e = <Entry*>PyMem_RawRealloc(self._e, cap * sizeof(Entry))
        if e == NULL:
            raise MemoryError()
        self._e = e
        while nb < cap:
            nb *= 2
            shift -= 1
        if nb != self._nb:
            PyMem_RawFree(self._buckets)
            self._buckets = <int32_t*>PyMem_RawMalloc(nb * sizeof(int32_t))
            if self._buckets == NULL:
                self._nb = 0
                raise MemoryError()
            self._nb = nb
            self._shift = shift
            for k in range(nb):
                self._buckets[k] = NONE
            i = self._lru
            while i != NONE:
                b = _bucket(self, e[i].ino)
                e[i].hnext = self._buckets[b]
                self._buckets[b] = i
                i = e[i].next
        self._cap = cap
        return 0


# ------------------------------------------------------------------ LRUMap

@cython.no_gc          # holds only a key and a value: no reference cycles
@cython.freelist(64)
cdef class _Node:
    pass


cdef inline void _unlink(_Node n) noexcept:
    (<_Node>n.prev).next = n.next
    (<_Node>n.next).prev = n.prev


cdef inline void _append(_Node root, _Node n) noexcept:
    # insert before the sentinel, i.e. at the most-recently-used end
    n.prev = root.prev
    n.next = <PyObject*>root
    (<_Node>root.prev).next = <PyObject*>n
    root.prev = <PyObject*>n


cdef class LRUMap:
    """Bounded LRU map from any key to a value: the base of virtfs's MetaCache
    (its keys are (device, inode) pairs).  Each key has a dict entry and a
    node of an intrusive circular doubly linked list (most recently used at
    the tail); the list links are borrowed pointers (the dict owns the nodes)."""

    def __cinit__(self, *args, **kwargs):
        self._map = {}
        self._root = _Node()
        self._root.prev = self._root.next = <PyObject*>self._root

    def __init__(self, maxsize=65536):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.clear()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._map)

    def __contains__(self, ino):
        return ino in self._map

    def get(self, ino):
        """The cached path for ino (and mark it recently used), or None."""
        return self.lookup(ino)

    def put(self, ino, path):
        self.store(ino, path)

    def discard(self, ino):
        cdef _Node n = self._map.pop(ino, None)
        if n is not None:
            _unlink(n)

    def clear(self):
        # detach the list first: nodes die with the dict below
        self._root.prev = self._root.next = <PyObject*>self._root
        self._map.clear()

    cdef object lookup(self, object ino):
        cdef PyObject* p = PyDict_GetItemWithError(self._map, ino)
        cdef _Node n
        if p == NULL or (<_Node>p).value is None:
            self.misses += 1
            return None
        n = <_Node>p
        if n.next != <PyObject*>self._root:  # already most recent otherwise
            _unlink(n)
            _append(self._root, n)
        self.hits += 1
        return n.value

    cdef int store(self, object ino, object path) except -1:
        cdef PyObject* p = PyDict_GetItemWithError(self._map, ino)
        cdef _Node n
        if p != NULL:
            n = <_Node>p
            n.value = path
            _unlink(n)
            _append(self._root, n)
        else:
            n = _Node.__new__(_Node)
            n.key = ino
            n.value = path
            PyDict_SetItem(self._map, ino, n)
            _append(self._root, n)
        if len(self._map) > self.maxsize:
            # evict the least recently used (same single pop as the reference)
            n = <_Node>self._root.next
            _unlink(n)
            PyDict_DelItem(self._map, n.key)
        return 0
