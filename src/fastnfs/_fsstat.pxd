# C-level interface of fastnfs._fsstat (statx declarations for other Cython modules).

from libc.errno cimport errno
from posix.fcntl cimport openat
from posix.unistd cimport close

cdef extern from "<fcntl.h>" nogil:
    int O_PATH
    int O_NOFOLLOW
    int O_DIRECTORY
    int O_CLOEXEC

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


# the birth time in ns (0: unknown), and whether sx is the object a handle names
cdef long long statx_btime_ns(const statx* sx) noexcept nogil
cdef bint statx_names(const statx* sx, unsigned long long ino, unsigned int dev,
                      unsigned int gen) noexcept nogil
# whether an object (fileid, its generation) is the one a board's handle names
cpdef bint names_fileid(unsigned long long fileid, unsigned int fgen, unsigned long long ino,
                        unsigned int gen) noexcept nogil
# whether the page cache holds all of a file's range (cachestat(2)): READ data may leave by sendfile
cpdef bint all_cached(int fd, unsigned long long offset, unsigned long long count) noexcept nogil


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


# LOOKUP of one name (RFC 1813 section 3.3.3), the steps both the fast lane and
# HostPaths.walk (through fsstat.lookup_at) take; inline, so the lane pays no call

cdef inline int lookup_dir(int root_fd, const char* path, statx* dsx) noexcept nogil:
    """The first step: the directory at path below root_fd, opened O_PATH
    without following a symlink at the end, its attributes in dsx (for the
    caller to check it is the object the handle names): its fd, to close with
    lookup_done, or the errno negated."""
    cdef int fd = openat(root_fd, path, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC)
    if fd < 0:
        return -errno
    cdef int e
    if c_statx(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
               STATX_BASIC_STATS | STATX_BTIME, dsx) != 0:
        e = errno
        close(fd)
        return -e
    return fd


cdef inline int lookup_name(int dfd, const char* name, statx* sx) noexcept nogil:
    """The second: one no-follow statx of name (one component) in the
    directory open at dfd; 0, or its errno."""
    if c_statx(dfd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, sx) != 0:
        return errno
    return 0


cdef inline void lookup_done(int root_fd, int dfd) noexcept nogil:
    """Close what lookup_dir opened (the root is no directory it opens)."""
    if dfd != root_fd:
        close(dfd)
