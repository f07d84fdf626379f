"""FSSTAT, FSINFO and PATHCONF (RFC 1813 sections 3.3.18-3.3.20)."""

from __future__ import annotations

from ..fs import NFSError, status_of
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
        tb, fb, ab, tf, ff, af = e.backend.fsstat(s.cred(call, e), obj)
    except (NFSError, OSError) as err:
        p.u32(status_of(err))
        put_post_op_attr(p, obj.st, e.fsid)
        return
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u64(tb)   # tbytes
    p.u64(fb)   # fbytes
    p.u64(ab)   # abytes
    p.u64(tf)   # tfiles
    p.u64(ff)   # ffiles
    p.u64(af)   # afiles
    p.u32(0)    # invarsec: the numbers change at any time


def FSINFO(s, call, u, p):
    e, obj = _obj(s, call, u, p)
    if e is None:
        return
    maxfilesize, properties = e.backend.fsinfo(s.cred(call, e), obj)
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
    p.u64(maxfilesize)
    p.u32(0)        # time_delta: nanosecond timestamps
    p.u32(1)
    p.u32(properties)


def PATHCONF(s, call, u, p):
    e, obj = _obj(s, call, u, p)
    if e is None:
        return
    linkmax, namemax = e.backend.pathconf(s.cred(call, e), obj)
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u32(min(linkmax, 0xFFFFFFFF))
    p.u32(min(namemax, C.NFS3_MAXNAMLEN))
    p.boolean(True)    # no_trunc: long names are refused, not cut
    p.boolean(True)    # chown_restricted
    p.boolean(False)   # case_insensitive
    p.boolean(True)    # case_preserving
