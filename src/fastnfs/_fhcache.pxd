# C-level interface of fastnfs._fhcache (cimport-able by other Cython modules).

cimport cython
from libc.stdint cimport int32_t, uint64_t
from cpython.object cimport PyObject


cdef struct Entry:
    uint64_t ino
    PyObject* path          # a strong reference; NULL while the entry is free
    int32_t prev            # LRU list: towards the least recently used (-1: none)
    int32_t next            # towards the most recently used (-1: none)
    int32_t hnext           # the next entry of the same bucket, or of the free list


cdef class FHCache:
    cdef Entry* _e                  # _cap entries
    cdef int32_t* _buckets          # _nb (a power of two) chain heads, -1 empty
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _used           # entries ever handed out: those beyond are untouched
    cdef Py_ssize_t _nb
    cdef int _shift                 # 64 - log2(_nb)
    cdef int32_t _free              # free list head
    cdef int32_t _lru               # least recently used entry (evicted first)
    cdef int32_t _mru               # most recently used entry
    cdef Py_ssize_t _len
    cdef public Py_ssize_t maxsize
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses

    cdef object lookup(self, uint64_t ino)            # get() without Python call overhead
    cdef int store(self, uint64_t ino, object path) except -1
    cdef void _reset(self) noexcept
    cdef void _drop_all(self) noexcept
    cdef int32_t _find(self, uint64_t ino) noexcept
    cdef void _unlink(self, int32_t i) noexcept
    cdef void _append(self, int32_t i) noexcept
    cdef void _remove(self, int32_t i) noexcept
    cdef int _grow(self) except -1


@cython.final
cdef class _Node:
    # List links are borrowed pointers: the owning LRUMap's dict holds the
    # only strong reference to each node, so linking costs no refcounting.
    cdef PyObject* prev
    cdef PyObject* next
    cdef object key
    cdef object value


cdef class LRUMap:
    cdef dict _map                  # key -> _Node
    cdef _Node _root                # sentinel of the circular list; root.next is the LRU end
    cdef public Py_ssize_t maxsize
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses

    cdef object lookup(self, object key)            # get() without Python call overhead
    cdef int store(self, object key, object value) except -1
