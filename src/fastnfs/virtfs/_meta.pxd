# C-level interface of fastnfs.virtfs._meta (cimport-able by other Cython modules).

cimport cython
from cpython.object cimport PyObject


from fastnfs._fhcache cimport FHCache


cdef class MetaCache(FHCache):       # entries are (stamp, value) pairs
    cdef object lookup_stamped(self, object key, object stamp)
    cdef object lookup_stamp3(self, object key, long long a, long long b, long long c)


cpdef tuple parse_meta(object data)
