# cython: language_level=3
"""statx(2) in Cython: one syscall, integer nanosecond times, and the birth
time; cachestat(2): how much of a file's range the page cache holds.

The birth time is what makes a filehandle notice that an inode number was
freed and handed to a new file (handles.py keeps 32 bits of it as the
handle's generation).  Plain-Python twin: fsstat.py.
"""

cdef extern from *:
    """
    #include <sys/syscall.h>
    #include <unistd.h>
    #define FASTNFS_SYS_CACHESTAT 451   /* Linux 6.5; the same number on every arch */
    static long long fastnfs_cachestat(int fd, unsigned long long off, unsigned long long len) {
        unsigned long long range[2] = {off, len};
        unsigned long long st[5];   /* nr_cache, nr_dirty, nr_writeback, nr_evicted, ... */
        if (syscall(FASTNFS_SYS_CACHESTAT, fd, range, st, 0) != 0)
            return -1;
        return (long long)st[0];
    }
    """
    long long fastnfs_cachestat(int fd, unsigned long long off, unsigned long long len) nogil

from libc.errno cimport ENOTDIR, ESTALE, errno
from libc.string cimport memset


import os


cdef class Stat:
    """The fields of os.stat_result that the server uses, plus btime_ns (0: unknown)."""

    @property
    def st_atime(self):
        return self.st_atime_ns / 1e9

    @property
    def st_mtime(self):
        return self.st_mtime_ns / 1e9

    @property
    def st_ctime(self):
        return self.st_ctime_ns / 1e9

    @property
    def gen(self):
        return generation(self.btime_ns)

    def __repr__(self):
        return "Stat(ino=%d, mode=%o, size=%d)" % (self.st_ino, self.st_mode, self.st_size)


cdef extern from "<unistd.h>" nogil:
    int getpagesize()


cpdef bint all_cached(int fd, unsigned long long offset, unsigned long long count) noexcept nogil:
    """Does the page cache hold every page of fd's [offset, offset + count)?
    The rule for sending READ data from the file (offload.cached; the fast
    lane's large READs): then sendfile will not wait for the disk."""
    if count == 0:
        return False
    cdef unsigned long long page = <unsigned long long>getpagesize()
    return fastnfs_cachestat(fd, offset, count) >= <long long>(
        (offset + count - 1) // page - offset // page + 1)


def cache_pages(int fd, unsigned long long offset, unsigned long long count):
    """cachestat(2): how many pages of fd's [offset, offset + count) the page
    cache holds; -1 when the kernel cannot say (before Linux 6.5)."""
    return fastnfs_cachestat(fd, offset, count)


cpdef unsigned int generation(long long btime_ns) noexcept nogil:
    """32 bits of the birth time for a filehandle; 0 when the filesystem has none."""
    if btime_ns == 0:
        return 0
    cdef unsigned long long g = <unsigned long long>btime_ns * 0x9E3779B97F4A7C15ULL
    cdef unsigned int r = <unsigned int>(g >> 32)
    return r if r else 1


cdef long long statx_btime_ns(const statx* sx) noexcept nogil:
    if sx.stx_mask & STATX_BTIME:
        return sx.stx_btime.tv_sec * 1000000000 + sx.stx_btime.tv_nsec
    return 0


cdef inline bint _names(unsigned long long st_ino, unsigned long long st_dev,
                        long long btime_ns, unsigned long long ino, unsigned int dev,
                        unsigned int gen) noexcept nogil:
    # the inode, the low 32 bits of the device, and the generation unless the handle has none
    if st_ino != ino or <unsigned int>(st_dev & 0xFFFFFFFFULL) != dev:
        return False
    return gen == 0 or generation(btime_ns) == gen


cdef bint statx_names(const statx* sx, unsigned long long ino, unsigned int dev,
                      unsigned int gen) noexcept nogil:
    """Is sx the object a handle's inode, device and generation name?"""
    return _names(sx.stx_ino, makedev(sx.stx_dev_major, sx.stx_dev_minor), statx_btime_ns(sx),
                  ino, dev, gen)


cpdef bint names_fileid(unsigned long long fileid, unsigned int fgen, unsigned long long ino,
                        unsigned int gen) noexcept nogil:
    """fsstat.py_names_fileid's twin: is the object with this fileid and
    generation the one a handle's inode and generation name?"""
    # a generation of 0 on either side is unknown (a board's objects: BoardBackend._verify)
    return fileid == ino and (gen == 0 or fgen == 0 or fgen == gen)


def names_object(st, unsigned long long ino, unsigned int dev, unsigned int gen):
    """statx_names on a Stat (fsstat.py_names_object's twin)."""
    return _names(st.st_ino, st.st_dev, st.btime_ns, ino, dev, gen)


def lookup_at(int root_fd, bytes dpath, unsigned long long dino, bytes name):
    """fsstat.py_lookup_at's twin, in the steps of _fsstat.pxd (lookup_dir,
    lookup_name): the Stat of name in the directory dpath below root_fd ("."
    is root_fd itself), which must be inode dino; OSError(ENOTDIR) or
    OSError(ESTALE) when the directory is not there as such, else the name's."""
    cdef statx dsx, sx
    cdef int fd = root_fd
    cdef int rc = 0
    cdef const char* dp = dpath
    cdef const char* np = name
    cdef bint root = dpath == b"."
    memset(&sx, 0, sizeof(sx))
    with nogil:
        if root:
            rc = lookup_name(fd, np, &sx)
        else:
            fd = lookup_dir(root_fd, dp, &dsx)
            if fd < 0:
                rc = -ENOTDIR if fd == -ENOTDIR else -ESTALE
            elif dsx.stx_ino != dino:
                rc = -ESTALE
            else:
                rc = lookup_name(fd, np, &sx)
            if fd >= 0:
                lookup_done(root_fd, fd)
    if rc < 0:      # the directory's
        raise OSError(-rc, os.strerror(-rc), dpath)
    if rc:
        raise OSError(rc, os.strerror(rc), name)
    return _stat_of(&sx)


cdef Stat _call(int dirfd, const char *path, int flags, object name):
    cdef statx sx
    cdef int rc
    memset(&sx, 0, sizeof(sx))
    with nogil:
        rc = c_statx(dirfd, path, flags, STATX_BASIC_STATS | STATX_BTIME, &sx)
    if rc != 0:
        e = errno
        raise OSError(e, os.strerror(e), name)
    return _stat_of(&sx)


cdef Stat _stat_of(const statx* sx):
    cdef Stat st = Stat.__new__(Stat)
    st.st_mode = sx.stx_mode
    st.st_ino = sx.stx_ino
    st.st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor)
    st.st_nlink = sx.stx_nlink
    st.st_uid = sx.stx_uid
    st.st_gid = sx.stx_gid
    st.st_size = sx.stx_size
    st.st_blocks = sx.stx_blocks
    st.st_rdev = makedev(sx.stx_rdev_major, sx.stx_rdev_minor)
    st.st_atime_ns = sx.stx_atime.tv_sec * 1000000000 + sx.stx_atime.tv_nsec
    st.st_mtime_ns = sx.stx_mtime.tv_sec * 1000000000 + sx.stx_mtime.tv_nsec
    st.st_ctime_ns = sx.stx_ctime.tv_sec * 1000000000 + sx.stx_ctime.tv_nsec
    st.btime_ns = statx_btime_ns(sx)
    return st


def lstatat(int dirfd, bytes path):
    """fstatat(dirfd, path, AT_SYMLINK_NOFOLLOW) as a Stat."""
    return _call(dirfd, path, AT_SYMLINK_NOFOLLOW, path)


def fstat(int fd):
    """fstat(fd) as a Stat (works on O_PATH descriptors)."""
    return _call(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, fd)
