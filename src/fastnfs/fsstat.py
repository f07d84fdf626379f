"""statx(2): attributes with integer nanosecond times and the birth time;
cachestat(2): how much of a file's range the page cache holds.

Plain-Python twin of ``fastnfs._fsstat`` (through ctypes, loaded at the first
call).  The birth time lets a filehandle notice that its inode number was
freed and reused.
"""

from __future__ import annotations

import os
import struct

from ._accel import load
from .proc import libc

__all__ = ["Stat", "lstatat", "fstat", "generation", "names_object", "cache_pages"]

_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_MASK = 0x7FF | 0x800  # STATX_BASIC_STATS | STATX_BTIME
_STATX_BTIME = 0x800
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


names_object = py_names_object
_cx = load("_fsstat")
if _cx is not None:  # the Cython twin
    Stat, fstat, generation, lstatat = _cx.Stat, _cx.fstat, _cx.generation, _cx.lstatat
    names_object, cache_pages = _cx.names_object, _cx.cache_pages
