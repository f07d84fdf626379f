# C-level interface of fastnfs._fhcache (cimport-able by other Cython modules).

cimport cython
from cpython.object cimport PyObject


@cython.final
cdef class _Node:
    # List links are borrowed pointers: the owning FHCache's dict holds the
    # only strong reference to each node, so linking costs no refcounting.
    cdef PyObject* prev
    cdef PyObject* next
    cdef object key
    cdef object value


cdef class FHCache:
    cdef dict _map                  # key -> _Node
    cdef _Node _root                # sentinel of the circular list; root.next is the LRU end
    cdef public Py_ssize_t maxsize
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses

    cdef object lookup(self, object ino)            # get() without Python call overhead
    cdef int store(self, object ino, object path) except -1
