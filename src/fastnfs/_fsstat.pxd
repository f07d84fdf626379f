# C-level interface of fastnfs._fsstat (statx declarations for other Cython modules).

cdef extern from "<sys/stat.h>" nogil:
    struct statx_timestamp:
        long long tv_sec
        unsigned int tv_nsec
    struct statx:
        unsigned int stx_mask
        unsigned int stx_uid
        unsigned int stx_gid
        unsigned int stx_nlink
        unsigned short stx_mode
        unsigned long long stx_ino
        unsigned long long stx_size
        unsigned long long stx_blocks
        statx_timestamp stx_atime
        statx_timestamp stx_btime
        statx_timestamp stx_ctime
        statx_timestamp stx_mtime
        unsigned int stx_rdev_major
        unsigned int stx_rdev_minor
        unsigned int stx_dev_major
        unsigned int stx_dev_minor
    int c_statx "statx"(int dirfd, const char *pathname, int flags, unsigned int mask, statx *buf)

cdef extern from "<sys/sysmacros.h>" nogil:
    unsigned long long makedev(unsigned int major, unsigned int minor)

cdef enum:
    AT_SYMLINK_NOFOLLOW = 0x100
    AT_EMPTY_PATH = 0x1000
    STATX_BASIC_STATS = 0x7ff
    STATX_BTIME = 0x800

cpdef unsigned int generation(long long btime_ns) noexcept nogil

# LOOKUP of one name (RFC 1813 section 3.3.3): the directory opened and statted,
# then the name statted in it (fsstat.lookup_at takes both steps for HostPaths.walk)
cdef int lookup_dir(int root_fd, const char* path, statx* dsx) noexcept nogil
cdef int lookup_name(int dfd, const char* name, statx* sx) noexcept nogil
cdef void lookup_done(int root_fd, int dfd) noexcept nogil

# the birth time in ns (0: unknown), and whether sx is the object a handle names
cdef long long statx_btime_ns(const statx* sx) noexcept nogil
cdef bint statx_names(const statx* sx, unsigned long long ino, unsigned int dev,
                      unsigned int gen) noexcept nogil
# whether an object (fileid, its generation) is the one a board's handle names
cpdef bint names_fileid(unsigned long long fileid, unsigned int fgen, unsigned long long ino,
                        unsigned int gen) noexcept nogil


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
