# cython: language_level=3
"""READDIR listings in Cython: readdir(3) on a directory descriptor, each
name's cookie (fs.name_cookie), sorted by cookie.

Plain-Python twin: fs.py_scan_listing (os.scandir); tests/test_listing.py
holds the two to the same result.
"""

from libc.errno cimport errno
from libc.stdint cimport uint64_t
from libc.string cimport strlen
from posix.unistd cimport close, dup
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

import os
from _blake2 import blake2b   # hashlib's, without loading OpenSSL

cdef extern from *:
    """
    #include <errno.h>
    static void fastnfs_clear_errno(void) { errno = 0; }
    """
    void clear_errno "fastnfs_clear_errno"() nogil

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        unsigned long d_ino
        char d_name[256]
    DIR* fdopendir(int fd)
    dirent* readdir(DIR* dirp)
    void rewinddir(DIR* dirp)
    int closedir(DIR* dirp)


cdef object _cookie(bytes name):
    """fs.name_cookie: 63 bits of the name's blake2b; 1 and 2 are "." and ".."."""
    cdef bytes h = blake2b(name, digest_size=8).digest()
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(h)
    cdef uint64_t c = 0
    cdef int i
    for i in range(8):
        c = (c << 8) | p[i]
    c >>= 1
    return c if c > 2 else c + 3


def scan_listing(int fd, hidden):
    """(cookies, names, inodes) of the directory open at fd, sorted by cookie,
    without "." and ".." and the names in hidden; fd stays open (a dup is read)."""
    cdef int d = dup(fd)
    if d < 0:
        raise OSError(errno, os.strerror(errno))
    cdef DIR* dirp = fdopendir(d)
    if dirp == NULL:
        e = errno
        close(d)
        raise OSError(e, os.strerror(e))
    cdef dirent* ent
    cdef const char* nm
    cdef size_t n
    cdef list items = []
    try:
        rewinddir(dirp)          # a dup shares the offset of a descriptor read before
        while True:
            with nogil:
                clear_errno()
                ent = readdir(dirp)
            if ent == NULL:
                if errno:
                    raise OSError(errno, os.strerror(errno))
                break
            nm = ent.d_name
            n = strlen(nm)
            if nm[0] == b'.' and (n == 1 or (n == 2 and nm[1] == b'.')):
                continue
            name = PyBytes_FromStringAndSize(nm, n)
            if name in hidden:
                continue
            items.append((_cookie(name), name, ent.d_ino))
    finally:
        rewinddir(dirp)          # and leave the shared offset at the start, as os.scandir
        closedir(dirp)
    items.sort()
    return [t[0] for t in items], [t[1] for t in items], [t[2] for t in items]
