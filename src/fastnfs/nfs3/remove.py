"""REMOVE, RMDIR and RENAME (RFC 1813 sections 3.3.12-3.3.14)."""

from __future__ import annotations

from ..fs import NFSError, status_of
from . import const as C
from .create import open_dirop, put_dir_wcc
from .types import get_diropargs3


def _remove(s, call, p, fh: bytes, name: bytes, rmdir: bool) -> None:
    e = op = None
    try:
        try:
            if rmdir and name == b".":
                raise NFSError(C.NFS3ERR_INVAL)
            if rmdir and name == b"..":
                raise NFSError(C.NFS3ERR_NOTEMPTY)
            e, cred, op = open_dirop(s, call, fh, name)
            if rmdir:
                e.backend.rmdir(cred, op)
            else:
                e.backend.remove(cred, op)
            p.u32(C.NFS3_OK)
        except (NFSError, OSError) as err:
            p.u32(status_of(err))
        put_dir_wcc(p, e, op)
    finally:
        if op is not None:
            op.close()


def REMOVE(s, call, u, p):
    fh, name = get_diropargs3(u)
    _remove(s, call, p, fh, name, False)


def RMDIR(s, call, u, p):
    fh, name = get_diropargs3(u)
    _remove(s, call, p, fh, name, True)


def RENAME(s, call, u, p):
    ffh, fname = get_diropargs3(u)
    tfh, tname = get_diropargs3(u)
    e = de = src = dst = None
    try:
        try:
            if fname in (b".", b"..") or tname in (b".", b".."):
                raise NFSError(C.NFS3ERR_INVAL)
            e, cred, src = open_dirop(s, call, ffh, fname)
            de, _cred, dst = open_dirop(s, call, tfh, tname)
            if de is not e:
                raise NFSError(C.NFS3ERR_XDEV)
            e.backend.rename(cred, src, dst)
            p.u32(C.NFS3_OK)
        except (NFSError, OSError) as err:
            p.u32(status_of(err))
        put_dir_wcc(p, e, src)
        put_dir_wcc(p, de, dst)
    finally:
        for op in (src, dst):
            if op is not None:
                op.close()
