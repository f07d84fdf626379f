# cython: language_level=3
"""Unix permission rules in Cython: the twin of fastnfs.perm.

The general path calls ``allowed`` and ``access3`` (through ``perm``); the
fast lane cimports ``allowed_ids``, ``io_allowed_ids`` and ``access3_ids`` (``_perm.pxd``), so the
two paths apply one rule.  Plain-Python twin: perm.py (``py_allowed``,
``py_access3``, ``py_io_allowed``); tests/test_perm.py holds them to the same answers.
"""

from libc.stdint cimport uint32_t

cdef enum:
    S_IFMT = 0o170000
    S_IFDIR = 0o040000
    R_OK = 4
    W_OK = 2
    X_OK = 1
    A_READ = 0x01
    A_LOOKUP = 0x02
    A_MODIFY = 0x04
    A_EXTEND = 0x08
    A_DELETE = 0x10
    A_EXECUTE = 0x20


cdef bint allowed_ids(uint32_t cuid, uint32_t cgid, tuple cgids, uint32_t uid, uint32_t gid,
                      uint32_t mode, int want) noexcept:
    """May the caller (cuid, cgid, cgids) get every bit of want (R|W|X) on an
    object of (uid, gid, mode)?  Root passes everything but execute of a file
    with no x bit at all."""
    cdef int bits
    if cuid == 0:
        if want & X_OK and (mode & S_IFMT) != S_IFDIR and not (mode & 0o111):
            return False
        return True
    if cuid == uid:
        bits = (mode >> 6) & 7
    elif cgid == gid or gid in cgids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return (bits & want) == want


cdef bint io_allowed_ids(uint32_t cuid, uint32_t cgid, tuple cgids, uint32_t uid,
                         uint32_t gid, uint32_t mode, int want) noexcept:
    """READ (want R) or WRITE (want W) of a regular file: the owner always
    (RFC 1813 section 4.4, no open in NFSv3: knfsd's owner override), read
    if executable, else the mode bits."""
    if cuid == uid:
        return True
    if want == R_OK and allowed_ids(cuid, cgid, cgids, uid, gid, mode, X_OK):
        return True
    return allowed_ids(cuid, cgid, cgids, uid, gid, mode, want)


cdef uint32_t access3_ids(uint32_t cuid, uint32_t cgid, tuple cgids, bint read_only,
                          uint32_t uid, uint32_t gid, uint32_t mode,
                          uint32_t requested) noexcept:
    """The ACCESS3 bits granted (RFC 1813 section 3.3.4)."""
    cdef uint32_t granted = 0
    if requested & A_READ and allowed_ids(cuid, cgid, cgids, uid, gid, mode, R_OK):
        granted |= A_READ
    if (mode & S_IFMT) == S_IFDIR:
        if requested & A_LOOKUP and allowed_ids(cuid, cgid, cgids, uid, gid, mode, X_OK):
            granted |= A_LOOKUP
        if not read_only and allowed_ids(cuid, cgid, cgids, uid, gid, mode, W_OK | X_OK):
            granted |= requested & (A_MODIFY | A_EXTEND | A_DELETE)
    else:
        if not read_only and allowed_ids(cuid, cgid, cgids, uid, gid, mode, W_OK):
            granted |= requested & (A_MODIFY | A_EXTEND | A_DELETE)
        if requested & A_EXECUTE and allowed_ids(cuid, cgid, cgids, uid, gid, mode, X_OK):
            granted |= A_EXECUTE
    return granted


def allowed(cred, uid, gid, mode, want) -> bool:
    """perm.allowed: may cred get every bit of want (R|W|X) on the object?"""
    return allowed_ids(cred.uid, cred.gid, tuple(cred.gids), uid, gid, mode, want)


def io_allowed(cred, uid, gid, mode, want) -> bool:
    """perm.io_allowed: may cred READ (R) or WRITE (W) a regular file?"""
    return io_allowed_ids(cred.uid, cred.gid, tuple(cred.gids), uid, gid, mode, want)


def access3(cred, st, requested, read_only) -> int:
    """perm.access3: ACCESS3 bits granted to cred on an object with attributes st."""
    return access3_ids(cred.uid, cred.gid, tuple(cred.gids), read_only, st.st_uid, st.st_gid,
                       st.st_mode, requested)
