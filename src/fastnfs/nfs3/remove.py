"""REMOVE, RMDIR and RENAME (RFC 1813 sections 3.3.12-3.3.14)."""

from __future__ import annotations

import os

from ..fsstat import fstat, lstatat
from ..fs import NFSError, check_name, join, nfsstat_of
from . import const as C
from .create import DirOp, _fail, _run
from .types import get_diropargs3, put_wcc_data


def _ok(p, op):
    p.u32(C.NFS3_OK)
    put_wcc_data(p, op.before, op.after(), op.e.fsid)


def REMOVE(s, call, u, p):
    fh, name = get_diropargs3(u)

    def body(op):
        try:
            st = lstatat(op.dfd, op.name)
        except OSError as err:
            raise NFSError(nfsstat_of(err))
        os.unlink(op.name, dir_fd=op.dfd)
        if st.st_nlink <= 1:
            op.e.cache.discard(st.st_ino)
        _ok(p, op)

    _run(p, lambda: DirOp(s, call, fh, name), body)


def RMDIR(s, call, u, p):
    fh, name = get_diropargs3(u)

    def make():
        if name == b".":
            raise NFSError(C.NFS3ERR_INVAL)
        if name == b"..":
            raise NFSError(C.NFS3ERR_NOTEMPTY)
        return DirOp(s, call, fh, name)

    def body(op):
        st = lstatat(op.dfd, op.name)
        os.rmdir(op.name, dir_fd=op.dfd)
        op.e.cache.discard(st.st_ino)
        _ok(p, op)

    _run(p, make, body)


def RENAME(s, call, u, p):
    ffh, fname = get_diropargs3(u)
    tfh, tname = get_diropargs3(u)
    src = dst = None
    try:
        if fname in (b".", b"..") or tname in (b".", b".."):
            raise NFSError(C.NFS3ERR_INVAL)
        src = DirOp(s, call, ffh, fname)
        dst = DirOp(s, call, tfh, tname)
        if src.e is not dst.e:
            raise NFSError(C.NFS3ERR_XDEV)
        e = src.e
        st = lstatat(src.dfd, fname)
        try:
            old = lstatat(dst.dfd, tname)
        except FileNotFoundError:
            old = None
        os.rename(fname, tname, src_dir_fd=src.dfd, dst_dir_fd=dst.dfd)
        if old is not None and old.st_ino != st.st_ino:
            e.cache.discard(old.st_ino)
        e.cache.put(st.st_ino, join(dst.d.path, tname))
        p.u32(C.NFS3_OK)
        put_wcc_data(p, src.before, src.after(), e.fsid)
        put_wcc_data(p, dst.before, dst.after(), e.fsid)
    except (NFSError, OSError) as err:
        p.u32(err.status if isinstance(err, NFSError) else nfsstat_of(err))
        for op in (src, dst):
            if op is None:
                put_wcc_data(p, None, None, 0)
            else:
                put_wcc_data(p, op.before, op.after(), op.e.fsid)
    finally:
        for op in (src, dst):
            if op is not None:
                op.close()
