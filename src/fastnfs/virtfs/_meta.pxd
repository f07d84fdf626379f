# C-level interface of fastnfs.virtfs._meta (cimport-able by other Cython modules):
# the metadata cache, and the virtfs rules the fast lane shares with the general path.

cimport cython
from cpython.object cimport PyObject


from fastnfs._fhcache cimport LRUMap
from fastnfs._fsstat cimport statx


cdef class MetaCache(LRUMap):       # entries are (stamp, value) pairs
    cdef object lookup_stamped(self, object key, object stamp)
    cdef object lookup_stamp3(self, object key, long long a, long long b, long long c)


cpdef tuple parse_meta(object data)

# the metadata's own names, which are never listed or looked up (store.HIDDEN)
cdef bint hidden_name(const unsigned char* name, Py_ssize_t n) noexcept nogil
# where an object's metadata lives, NUL-terminated into out: its length, -1 when it does not fit
cdef Py_ssize_t meta_path_into(const char* path, Py_ssize_t n, char* out,
                               Py_ssize_t cap) noexcept nogil
cdef Py_ssize_t child_meta_path_into(const unsigned char* name, Py_ssize_t n, char* out,
                                     Py_ssize_t cap) noexcept nogil
# the metadata in the file dirfd/mp, from the cache or read: absent when there is no such
# file, None for one with a flaw (overlay.Virtfs.meta reads that one and warns)
cdef object meta_at(MetaCache cache, int dirfd, const char* mp, object absent)
# a Meta laid over a statx result (the device-as-file rule included)
cdef int overlay_statx(statx* sx, object meta) except -1
