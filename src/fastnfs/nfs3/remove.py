"""REMOVE, RMDIR and RENAME (RFC 1813 sections 3.3.12-3.3.14)."""

from __future__ import annotations

import os

import errno
import stat

from .. import perm
from ..fs import NFSError, status_of, join, nfsstat_of
from ..fsstat import lstatat
from ..virtfs.store import meta_dir_only, remove_meta, rename_meta, rmdir_meta_dir
from . import const as C
from .create import DirOp, _run
from .types import get_diropargs3, put_wcc_data

_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _victim(op, name: bytes):
    """The entry about to go, as clients see it; sticky-directory rule checked."""
    try:
        st = lstatat(op.dfd, name)
    except OSError as err:
        raise NFSError(nfsstat_of(err))
    if op.e.virtfs is not None:
        op.s.check_delete(op.call, op.e, op.d.st, op.e.view(join(op.d.path, name), st))
    return st


def _ok(p, op):
    p.u32(C.NFS3_OK)
    put_wcc_data(p, op.before, op.after(), op.e.fsid)


def REMOVE(s, call, u, p):
    fh, name = get_diropargs3(u)

    def body(op):
        st = _victim(op, op.name)
        os.unlink(op.name, dir_fd=op.dfd)
        if st.st_nlink <= 1:
            op.e.cache.discard(st.st_ino)
        if op.e.virtfs is not None:
            remove_meta(op.dfd, op.name)
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
        st = _victim(op, op.name)
        try:
            os.rmdir(op.name, dir_fd=op.dfd)
        except OSError as err:
            # virtfs: a directory holding only its own .virtfs_metadata is empty
            if op.e.virtfs is None or err.errno != errno.ENOTEMPTY:
                raise
            fd = os.open(op.name, _DIR_RD, dir_fd=op.dfd)
            try:
                only_meta = meta_dir_only(fd)
            finally:
                os.close(fd)
            if not only_meta or not rmdir_meta_dir(op.dfd, op.name):
                raise
            os.rmdir(op.name, dir_fd=op.dfd)
        op.e.cache.discard(st.st_ino)
        if op.e.virtfs is not None:
            remove_meta(op.dfd, op.name)
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
        st = _victim(src, fname)
        if e.virtfs is not None and stat.S_ISDIR(st.st_mode) and src.d.ino != dst.d.ino:
            # rename(2): moving a directory rewrites its "..", which needs write access
            s.check(call, e, e.view(join(src.d.path, fname), st), perm.W)
        try:
            old = lstatat(dst.dfd, tname)
        except FileNotFoundError:
            old = None
        if old is not None and e.virtfs is not None:
            _victim(dst, tname)
        os.rename(fname, tname, src_dir_fd=src.dfd, dst_dir_fd=dst.dfd)
        if e.virtfs is not None:
            rename_meta(src.dfd, fname, dst.dfd, tname)
        if old is not None and old.st_ino != st.st_ino:
            e.cache.discard(old.st_ino)
        e.cache.put(st.st_ino, join(dst.d.path, tname))
        p.u32(C.NFS3_OK)
        put_wcc_data(p, src.before, src.after(), e.fsid)
        put_wcc_data(p, dst.before, dst.after(), e.fsid)
    except (NFSError, OSError) as err:
        p.u32(status_of(err))
        for op in (src, dst):
            if op is None:
                put_wcc_data(p, None, None, 0)
            else:
                put_wcc_data(p, op.before, op.after(), op.e.fsid)
    finally:
        for op in (src, dst):
            if op is not None:
                op.close()
