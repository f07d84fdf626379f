"""CREATE, MKDIR, SYMLINK, MKNOD and LINK (RFC 1813 sections 3.3.8-3.3.11, 3.3.15)."""

from __future__ import annotations

import stat as S

from ..fs import NFSError, status_of
from ..xdr import XdrError
from . import const as C
from .types import (get_diropargs3, get_fh3, get_sattr3, put_post_op_attr,
                    put_post_op_fh3, put_wcc_data)


def open_dirop(s, call, fh: bytes, name: bytes):
    """(export, caller, DirOp) for a change of name in the directory fh names."""
    e, d = s.resolve(call, fh)
    s.check_writable(call, e)
    cred = s.cred(call, e)
    return e, cred, e.backend.dirop(cred, d, name)


def put_dir_wcc(p, e, op) -> None:
    """The directory's wcc data: empty when the DirOp never began."""
    if op is None:
        put_wcc_data(p, None, None, 0)
    else:
        put_wcc_data(p, op.before, op.after(), e.fsid)


def _make(s, call, p, fh: bytes, name: bytes, make) -> None:
    """Run make(backend, cred, op) -> new Obj or None and encode the diropres3."""
    e = op = None
    try:
        e, cred, op = open_dirop(s, call, fh, name)
        obj = make(e.backend, cred, op)
        p.u32(C.NFS3_OK)
        if obj is None:
            put_post_op_fh3(p, None)
            put_post_op_attr(p, None, 0)
        else:
            put_post_op_fh3(p, e.fh(obj))
            put_post_op_attr(p, obj.st, e.fsid)
        put_dir_wcc(p, e, op)
    except (NFSError, OSError) as err:
        p.u32(status_of(err))
        put_dir_wcc(p, e, op)
    finally:
        if op is not None:
            op.close()


def CREATE(s, call, u, p):
    fh, name = get_diropargs3(u)
    how = u.u32()
    attrs = verf = None
    if how in (C.UNCHECKED, C.GUARDED):
        attrs = get_sattr3(u)
    elif how == C.EXCLUSIVE:
        verf = u.fixed(C.NFS3_CREATEVERFSIZE)
    else:
        raise XdrError("bad createmode3 %d" % how)
    _make(s, call, p, fh, name, lambda b, cred, op: b.create(cred, op, how, attrs, verf))


def MKDIR(s, call, u, p):
    fh, name = get_diropargs3(u)
    attrs = get_sattr3(u)
    _make(s, call, p, fh, name, lambda b, cred, op: b.mkdir(cred, op, attrs))


def SYMLINK(s, call, u, p):
    fh, name = get_diropargs3(u)
    attrs = get_sattr3(u)
    target = u.string(C.NFS3_MAXPATHLEN)
    _make(s, call, p, fh, name, lambda b, cred, op: b.symlink(cred, op, target, attrs))


_MKNOD_FMT = {C.NF3CHR: S.S_IFCHR, C.NF3BLK: S.S_IFBLK, C.NF3SOCK: S.S_IFSOCK, C.NF3FIFO: S.S_IFIFO}


def MKNOD(s, call, u, p):
    fh, name = get_diropargs3(u)
    ftype = u.u32()
    attrs = None
    major = minor = 0
    if ftype in (C.NF3CHR, C.NF3BLK):
        attrs = get_sattr3(u)
        major = u.u32()
        minor = u.u32()
    elif ftype in (C.NF3SOCK, C.NF3FIFO):
        attrs = get_sattr3(u)
    elif ftype not in (C.NF3REG, C.NF3DIR, C.NF3LNK):
        raise XdrError("bad ftype3 %d" % ftype)

    def make(b, cred, op):
        if attrs is None:
            raise NFSError(C.NFS3ERR_BADTYPE)  # section 3.3.11: REG, DIR, LNK are not for MKNOD
        return b.mknod(cred, op, _MKNOD_FMT[ftype], attrs, major, minor)

    _make(s, call, p, fh, name, make)


def LINK(s, call, u, p):
    fh = get_fh3(u)
    dfh, name = get_diropargs3(u)
    try:
        e, obj = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        put_post_op_attr(p, None, 0)
        put_wcc_data(p, None, None, 0)
        return
    de = op = None
    try:
        de, cred, op = open_dirop(s, call, dfh, name)
        if de is not e:
            raise NFSError(C.NFS3ERR_XDEV)
        e.backend.link(cred, obj, op)
        p.u32(C.NFS3_OK)
        put_post_op_attr(p, obj.st, e.fsid)
        put_dir_wcc(p, de, op)
    except (NFSError, OSError) as err:
        p.u32(status_of(err))
        put_post_op_attr(p, obj.st, e.fsid)
        put_dir_wcc(p, de, op)
    finally:
        if op is not None:
            op.close()
