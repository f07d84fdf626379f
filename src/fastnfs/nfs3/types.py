"""RFC 1813 composite types: fattr3, post_op_attr, wcc_data, sattr3, diropargs3."""

from __future__ import annotations

import os
import stat as S

from .._accel import load
from ..xdr import XdrError
from . import const as C

_FTYPE = {
    S.S_IFREG: C.NF3REG, S.S_IFDIR: C.NF3DIR, S.S_IFLNK: C.NF3LNK, S.S_IFCHR: C.NF3CHR,
    S.S_IFBLK: C.NF3BLK, S.S_IFIFO: C.NF3FIFO, S.S_IFSOCK: C.NF3SOCK,
}


def put_fattr3(p, st, fsid: int) -> None:
    """fattr3 (section 2.6): mode carries permission bits only, not the type."""
    mode = st.st_mode
    rdev = st.st_rdev
    p.fattr3(_FTYPE.get(S.S_IFMT(mode), C.NF3REG), mode, st.st_nlink, st.st_uid, st.st_gid,
             st.st_size, st.st_blocks * 512, os.major(rdev), os.minor(rdev),
             fsid, st.st_ino, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


py_put_fattr3 = put_fattr3
_cx = load("_rpc")
if _cx is not None:  # the Cython twin
    put_fattr3 = _cx.put_fattr3


def put_post_op_attr(p, st, fsid: int) -> None:
    if st is None:
        p.u32(0)
    else:
        p.u32(1)
        put_fattr3(p, st, fsid)


def put_pre_op_attr(p, st) -> None:
    """pre_op_attr: wcc_attr is size, mtime, ctime (section 2.6)."""
    if st is None:
        p.u32(0)
        return
    p.u32(1)
    p.u64(st.st_size)
    m = st.st_mtime_ns
    c = st.st_ctime_ns
    p.u32(m // 1_000_000_000)
    p.u32(m % 1_000_000_000)
    p.u32(c // 1_000_000_000)
    p.u32(c % 1_000_000_000)


def put_wcc_data(p, before, after, fsid: int) -> None:
    put_pre_op_attr(p, before)
    put_post_op_attr(p, after, fsid)


def put_post_op_fh3(p, fh) -> None:
    if fh is None:
        p.u32(0)
    else:
        p.u32(1)
        p.opaque(fh)


def get_fh3(u) -> bytes:
    return u.opaque(C.NFS3_FHSIZE)


def get_diropargs3(u):
    fh = u.opaque(C.NFS3_FHSIZE)
    name = u.string(C.NFS3_MAXPATHLEN)  # over 255 bytes: NAMETOOLONG, by check_name
    return fh, name


class Sattr3:
    """Decoded sattr3: None for "don't change"; times are ns or SERVER_TIME."""

    __slots__ = ("mode", "uid", "gid", "size", "atime", "mtime")

    SERVER_TIME = -1

    def __init__(self):
        self.mode = self.uid = self.gid = self.size = self.atime = self.mtime = None

    def empty(self) -> bool:
        return (self.mode is None and self.uid is None and self.gid is None
                and self.size is None and self.atime is None and self.mtime is None)


def _get_settime(u):
    how = u.u32()
    if how == C.DONT_CHANGE:
        return None
    if how == C.SET_TO_SERVER_TIME:
        return Sattr3.SERVER_TIME
    if how == C.SET_TO_CLIENT_TIME:
        sec = u.u32()
        nsec = u.u32()
        return sec * 1_000_000_000 + nsec
    raise XdrError("bad time_how %d" % how)


def get_sattr3(u) -> Sattr3:
    a = Sattr3()
    if u.boolean():
        a.mode = u.u32()
    if u.boolean():
        a.uid = u.u32()
    if u.boolean():
        a.gid = u.u32()
    if u.boolean():
        a.size = u.u64()
    a.atime = _get_settime(u)
    a.mtime = _get_settime(u)
    return a
