"""FSSTAT, FSINFO and PATHCONF (RFC 1813 sections 3.3.18-3.3.20)."""

from __future__ import annotations

import os

from ..fs import NFSError, nfsstat_of
from . import const as C
from .types import get_fh3, put_post_op_attr


def _obj(s, call, u, p):
    fh = get_fh3(u)
    try:
        return s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return None, None


def FSSTAT(s, call, u, p):
    e, obj = _obj(s, call, u, p)
    if e is None:
        return
    try:
        v = os.fstatvfs(e.root_fd)
    except OSError as err:
        p.u32(nfsstat_of(err))
        put_post_op_attr(p, obj.st, e.fsid)
        return
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u64(v.f_blocks * v.f_frsize)   # tbytes
    p.u64(v.f_bfree * v.f_frsize)    # fbytes
    p.u64(v.f_bavail * v.f_frsize)   # abytes
    p.u64(v.f_files)                 # tfiles
    p.u64(v.f_ffree)                 # ffiles
    p.u64(v.f_favail)                # afiles
    p.u32(0)                         # invarsec: the numbers change at any time


def FSINFO(s, call, u, p):
    e, obj = _obj(s, call, u, p)
    if e is None:
        return
    m = call.maxdata
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u32(m)        # rtmax
    p.u32(m)        # rtpref
    p.u32(4096)     # rtmult
    p.u32(m)        # wtmax
    p.u32(m)        # wtpref
    p.u32(4096)     # wtmult
    p.u32(min(m, 65536))  # dtpref
    p.u64(0x7FFFFFFFFFFFFFFF)  # maxfilesize
    p.u32(0)        # time_delta: nanosecond timestamps
    p.u32(1)
    p.u32(C.FSF3_LINK | C.FSF3_SYMLINK | C.FSF3_HOMOGENEOUS | C.FSF3_CANSETTIME)


def PATHCONF(s, call, u, p):
    e, obj = _obj(s, call, u, p)
    if e is None:
        return
    try:
        linkmax = os.fpathconf(e.root_fd, "PC_LINK_MAX")
        namemax = os.fpathconf(e.root_fd, "PC_NAME_MAX")
    except (OSError, ValueError):
        linkmax, namemax = 65000, 255
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u32(min(linkmax, 0xFFFFFFFF))
    p.u32(min(namemax, C.NFS3_MAXNAMLEN))
    p.boolean(True)    # no_trunc: long names are refused, not cut
    p.boolean(True)    # chown_restricted
    p.boolean(False)   # case_insensitive
    p.boolean(True)    # case_preserving
