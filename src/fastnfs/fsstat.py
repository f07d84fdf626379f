"""statx(2): attributes with integer nanosecond times and the birth time;
cachestat(2): how much of a file's range the page cache holds.

Plain-Python twin of ``fastnfs._fsstat`` (through ctypes, loaded at the first
call).  The birth time lets a filehandle notice that its inode number was
freed and reused.
"""

from __future__ import annotations

import errno
import os
import struct

from ._accel import load
from .proc import libc

__all__ = ["Stat", "lstatat", "fstat", "generation", "names_object", "names_fileid",
           "lookup_at", "cache_pages", "all_cached"]

_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_MASK = 0x7FF | 0x800  # STATX_BASIC_STATS | STATX_BTIME
_STATX_BTIME = 0x800
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SYS_CACHESTAT = 451        # cachestat(2), Linux 6.5; the same number on every arch
_statx = None
# struct statx (linux/stat.h): offsets of the fields used here
_HEAD = struct.Struct("=IIQIIIH2xQQQQ")
_TS = struct.Struct("=qI4x")


class Stat:
    __slots__ = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                 "st_blocks", "st_rdev", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "btime_ns")

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


def generation(btime_ns: int) -> int:
    if btime_ns == 0:
        return 0
    r = ((btime_ns * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 32
    return r or 1


def py_names_object(st, ino: int, dev: int, gen: int) -> bool:
    """Is st the object a handle's inode, device (its low 32 bits) and
    generation (unless the handle has none) name?"""
    if st.st_ino != ino or (st.st_dev & 0xFFFFFFFF) != dev:
        return False
    return gen == 0 or generation(st.btime_ns) == gen


def py_names_fileid(fileid: int, fgen: int, ino: int, gen: int) -> bool:
    """Is the object with this fileid and generation fgen the one a handle's
    inode and generation name?  A generation of 0 on either side is unknown
    and not compared (backends.boards: where the board's fileids name objects)."""
    return fileid == ino and (gen == 0 or fgen == 0 or fgen == gen)


def _ns(buf, off):
    sec, nsec = _TS.unpack_from(buf, off)
    return sec * 1_000_000_000 + nsec


def _call(dirfd: int, path: bytes, flags: int, name):
    global _statx
    import ctypes
    if _statx is None:
        f = libc().statx
        f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
        f.restype = ctypes.c_int
        _statx = f
    buf = ctypes.create_string_buffer(256)
    if _statx(dirfd, path, flags, _MASK, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), name)
    raw = buf.raw
    (mask, _blksize, _attrs, nlink, uid, gid, mode, ino, size, blocks,
     _amask) = _HEAD.unpack_from(raw, 0)
    rmaj, rmin, dmaj, dmin = struct.unpack_from("=IIII", raw, 128)
    st = Stat()
    st.st_mode = mode
    st.st_ino = ino
    st.st_dev = os.makedev(dmaj, dmin)
    st.st_nlink = nlink
    st.st_uid = uid
    st.st_gid = gid
    st.st_size = size
    st.st_blocks = blocks
    st.st_rdev = os.makedev(rmaj, rmin)
    st.st_atime_ns = _ns(raw, 64)
    st.st_mtime_ns = _ns(raw, 112)
    st.st_ctime_ns = _ns(raw, 96)
    st.btime_ns = _ns(raw, 80) if mask & _STATX_BTIME else 0
    return st


def lstatat(dirfd: int, path: bytes) -> Stat:
    return _call(dirfd, path, _AT_SYMLINK_NOFOLLOW, path)


def fstat(fd: int) -> Stat:
    return _call(fd, b"", _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW, fd)


def py_lookup_at(root_fd: int, dpath: bytes, dino: int, name: bytes) -> Stat:
    """LOOKUP of one name (RFC 1813 section 3.3.3), as HostPaths.walk takes it:
    the directory dpath below root_fd ("." is root_fd itself) opened O_PATH
    without following a symlink at its end and checked to be inode dino, then
    one no-follow statx of name in it.  The name's Stat; OSError(ENOTDIR) or
    OSError(ESTALE) when the directory is not there as such, else the name's.
    The fast lane takes the same steps (_fsstat.lookup_dir, lookup_name)."""
    if dpath == b".":
        return _call(root_fd, name, _AT_SYMLINK_NOFOLLOW, name)
    try:
        fd = os.open(dpath, _O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                     dir_fd=root_fd)
    except OSError as e:
        e = errno.ENOTDIR if e.errno == errno.ENOTDIR else errno.ESTALE
        raise OSError(e, os.strerror(e), dpath) from None
    try:
        try:
            dst = _call(fd, b"", _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW, dpath)
        except OSError:
            dst = None
        if dst is None or dst.st_ino != dino:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), dpath)
        return _call(fd, name, _AT_SYMLINK_NOFOLLOW, name)
    finally:
        os.close(fd)


def cache_pages(fd: int, offset: int, count: int) -> int:
    """cachestat(2): how many pages of fd's [offset, offset + count) the page
    cache holds; -1 when the kernel cannot say (before Linux 6.5)."""
    import ctypes
    rng = (ctypes.c_uint64 * 2)(offset, count)
    st = (ctypes.c_uint64 * 5)()     # nr_cache, nr_dirty, nr_writeback, nr_evicted, ...
    syscall = libc().syscall
    syscall.restype = ctypes.c_long
    if syscall(ctypes.c_long(_SYS_CACHESTAT), ctypes.c_long(fd), rng, st,
               ctypes.c_long(0)) != 0:
        return -1
    return st[0]


def py_all_cached(fd: int, offset: int, count: int) -> bool:
    """Does the page cache hold every page of fd's [offset, offset + count)?
    (The rule for sending READ data from the file; twin of _fsstat.all_cached.)"""
    if count <= 0:
        return False
    return cache_pages(fd, offset, count) >= (offset + count - 1) // _PAGE - offset // _PAGE + 1


names_object, names_fileid, lookup_at = py_names_object, py_names_fileid, py_lookup_at
all_cached = py_all_cached
_cx = load("_fsstat")
if _cx is not None:  # the Cython twin
    Stat, fstat, generation, lstatat = _cx.Stat, _cx.fstat, _cx.generation, _cx.lstatat
    names_object, names_fileid, lookup_at = _cx.names_object, _cx.names_fileid, _cx.lookup_at
    cache_pages, all_cached = _cx.cache_pages, _cx.all_cached
