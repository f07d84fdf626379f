"""GETATTR, SETATTR and ACCESS (RFC 1813 sections 3.3.1, 3.3.2, 3.3.4)."""

from __future__ import annotations

from ..fs import NFSError, nfsstat_of
from . import const as C
from .types import get_fh3, get_sattr3, put_fattr3, put_post_op_attr, put_wcc_data


def GETATTR(s, call, u, p):
    fh = get_fh3(u)
    try:
        e, obj = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        return
    p.u32(C.NFS3_OK)
    put_fattr3(p, e.backend.getattr(call.ucred, obj), e.fsid)


def SETATTR(s, call, u, p):
    fh = get_fh3(u)
    a = get_sattr3(u)
    guard = None
    if u.boolean():
        guard = (u.u32(), u.u32())
    try:
        e, obj = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, None, None, 0)
        return
    before = obj.st
    b = e.backend
    try:
        s.check_writable(call, e)
        if guard is not None:
            c = before.st_ctime_ns
            if guard != (c // 1_000_000_000, c % 1_000_000_000):
                raise NFSError(C.NFS3ERR_NOT_SYNC)  # section 3.3.2: guard ctime differs
        b.setattr(s.cred(call, e), obj, a)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, before, before, e.fsid)
        return
    except OSError as err:
        p.u32(nfsstat_of(err))
        put_wcc_data(p, before, b.refresh(obj), e.fsid)
        return
    p.u32(C.NFS3_OK)
    put_wcc_data(p, before, b.refresh(obj), e.fsid)


def ACCESS(s, call, u, p):
    fh = get_fh3(u)
    requested = u.u32()
    try:
        e, obj = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return
    granted = e.backend.access(s.cred(call, e), obj, requested, s.read_only(call))
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u32(granted & requested)
