# cython: language_level=3
"""Cython twin of fastnfs.fhcache.PyFHCache: bounded LRU inode -> path.

A dict maps each key to a node of an intrusive circular doubly linked list
(most recently used at the tail).  get/put/discard are O(1) with no Python
method calls; the list links are borrowed pointers (the dict owns the nodes).
"""

cimport cython
from cpython.dict cimport PyDict_DelItem, PyDict_SetItem
from cpython.object cimport PyObject

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL


@cython.no_gc          # holds only a key and a path: no reference cycles
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


cdef class FHCache:
    """Bounded LRU map from inode number to path bytes (see fastnfs.fhcache)."""

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
