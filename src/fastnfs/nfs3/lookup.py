"""LOOKUP and READLINK (RFC 1813 sections 3.3.3, 3.3.5)."""

from __future__ import annotations

from ..fs import NFSError
from . import const as C
from .types import get_diropargs3, get_fh3, put_fattr3, put_post_op_attr


def LOOKUP(s, call, u, p):
    fh, name = get_diropargs3(u)
    try:
        e, d = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return
    try:
        obj = e.backend.lookup(s.cred(call, e), d, name)
    except NFSError as err:
        p.u32(err.status)
        put_post_op_attr(p, d.st, e.fsid)
        return
    p.u32(C.NFS3_OK)
    p.opaque(e.fh(obj))
    p.u32(1)
    put_fattr3(p, obj.st, e.fsid)
    put_post_op_attr(p, d.st, e.fsid)


def READLINK(s, call, u, p):
    fh = get_fh3(u)
    try:
        e, obj = s.resolve(call, fh)
        target = e.backend.readlink(s.cred(call, e), obj)
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.string(target)
