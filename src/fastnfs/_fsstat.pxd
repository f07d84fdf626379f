cdef class Stat:
    cdef public unsigned int st_mode
    cdef public unsigned long long st_ino
    cdef public unsigned long long st_dev
    cdef public unsigned long long st_nlink
    cdef public unsigned int st_uid
    cdef public unsigned int st_gid
    cdef public unsigned long long st_size
    cdef public unsigned long long st_blocks
    cdef public unsigned long long st_rdev
    cdef public long long st_atime_ns
    cdef public long long st_mtime_ns
    cdef public long long st_ctime_ns
    cdef public long long btime_ns
