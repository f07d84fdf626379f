# C-level interface of fastnfs.virtfs._meta (cimport-able by other Cython modules).

cimport cython
from cpython.object cimport PyObject


@cython.final
cdef class _MetaNode:
    # The owning MetaCache's dict holds the only strong reference to a node;
    # the list links are borrowed pointers.
    cdef PyObject* prev
    cdef PyObject* next
    cdef object key
    cdef object stamp
    cdef object value


cdef class MetaCache:
    cdef dict _map                  # key -> _MetaNode
    cdef _MetaNode _root            # sentinel of the circular list; root.next is the LRU end
    cdef public Py_ssize_t maxsize
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses

    cdef object lookup(self, object key, object stamp)   # get() without call overhead
    cdef int store(self, object key, object stamp, object value) except -1
    cdef int drop(self, object key) except -1


cpdef tuple parse_meta(object data)
