"""GETATTR, SETATTR and ACCESS (RFC 1813 sections 3.3.1, 3.3.2, 3.3.4)."""

from __future__ import annotations

import os
import stat as S
import time

from .. import perm
from ..fs import NFSError, nfsstat_of
from ..virtfs.ops import changed_meta, write_obj_meta
from . import const as C
from .types import Sattr3, get_fh3, get_sattr3, put_fattr3, put_post_op_attr, put_wcc_data


def GETATTR(s, call, u, p):
    fh = get_fh3(u)
    try:
        e, obj = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        return
    p.u32(C.NFS3_OK)
    put_fattr3(p, obj.st, e.fsid)


def apply_sattr3(s, call, e, obj, a: Sattr3) -> None:
    """Carry out a sattr3 on obj (also used after CREATE/MKDIR/...)."""
    if e.virtfs is not None:
        _apply_virtfs(s, call, e, obj, a)
        return
    _apply_disk(s, call, e, obj, a)


def _apply_virtfs(s, call, e, obj, a: Sattr3) -> None:
    """virtfs: owner, group and mode go to the metadata, size and times to the file."""
    st = obj.st
    cred = s.cred(call, e)
    if a.size is not None:
        s.check_io(call, e, st, perm.W)
    if a.atime is not None or a.mtime is not None:
        explicit = (a.atime not in (None, Sattr3.SERVER_TIME)
                    or a.mtime not in (None, Sattr3.SERVER_TIME))
        if cred.uid not in (0, st.st_uid):
            if explicit:
                raise NFSError(C.NFS3ERR_PERM)   # utimes(2): only owner or root set a time
            s.check(call, e, st, perm.W)
    if a.mode is not None or a.uid is not None or a.gid is not None:
        meta = changed_meta(cred, st, a.uid, a.gid, a.mode)
        write_obj_meta(e, obj, meta)
    disk = Sattr3()
    disk.size, disk.atime, disk.mtime = a.size, a.atime, a.mtime
    if getattr(st, "stored_as_file", False) and disk.size is not None:
        raise NFSError(C.NFS3ERR_INVAL)
    _apply_disk(s, call, e, obj, disk, real_fmt=S.S_IFMT(getattr(st, "real_mode", st.st_mode)))


def _apply_disk(s, call, e, obj, a: Sattr3, real_fmt=None) -> None:
    st = obj.st
    fmt = S.S_IFMT(st.st_mode) if real_fmt is None else real_fmt
    if a.size is not None:
        if fmt == S.S_IFDIR:
            raise NFSError(C.NFS3ERR_ISDIR)
        if fmt != S.S_IFREG:
            raise NFSError(C.NFS3ERR_INVAL)
        if a.size > (1 << 63) - 1:
            raise NFSError(C.NFS3ERR_FBIG)
        fd = e.open_obj(obj, os.O_WRONLY)
        try:
            os.ftruncate(fd, a.size)
        finally:
            os.close(fd)
    if a.mode is None and a.uid is None and a.gid is None and a.atime is None and a.mtime is None:
        return
    if fmt == S.S_IFLNK:
        if a.uid is not None or a.gid is not None:
            os.chown(obj.path, -1 if a.uid is None else a.uid, -1 if a.gid is None else a.gid,
                     dir_fd=e.root_fd, follow_symlinks=False)
        if a.atime is not None or a.mtime is not None:
            os.utime(obj.path, ns=_times(st, a), dir_fd=e.root_fd, follow_symlinks=False)
        return
    # an O_PATH fd pins the verified object; /proc/self/fd/N reaches it without
    # walking the path again, so a concurrent rename cannot redirect the change
    fd = e.open_obj(obj, os.O_PATH)
    try:
        via = "/proc/self/fd/%d" % fd
        if a.uid is not None or a.gid is not None:
            os.chown(via, -1 if a.uid is None else a.uid, -1 if a.gid is None else a.gid)
        if a.mode is not None:
            os.chmod(via, a.mode & 0o7777)
        if a.atime is not None or a.mtime is not None:
            os.utime(via, ns=_times(st, a))
    finally:
        os.close(fd)


def _times(st, a: Sattr3):
    now = None
    at, mt = a.atime, a.mtime
    if at == Sattr3.SERVER_TIME or mt == Sattr3.SERVER_TIME:
        now = time.time_ns()
    at = st.st_atime_ns if at is None else (now if at == Sattr3.SERVER_TIME else at)
    mt = st.st_mtime_ns if mt is None else (now if mt == Sattr3.SERVER_TIME else mt)
    return at, mt


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
    try:
        s.check_writable(call, e)
        if guard is not None:
            c = before.st_ctime_ns
            if guard != (c // 1_000_000_000, c % 1_000_000_000):
                raise NFSError(C.NFS3ERR_NOT_SYNC)  # section 3.3.2: guard ctime differs
        apply_sattr3(s, call, e, obj, a)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, before, before, e.fsid)
        return
    except OSError as err:
        e.refresh(obj)
        p.u32(nfsstat_of(err))
        put_wcc_data(p, before, obj.st, e.fsid)
        return
    e.refresh(obj)
    p.u32(C.NFS3_OK)
    put_wcc_data(p, before, obj.st, e.fsid)


def ACCESS(s, call, u, p):
    fh = get_fh3(u)
    requested = u.u32()
    try:
        e, obj = s.resolve(call, fh)
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return
    granted = perm.access3(s.cred(call, e), obj.st, requested, s.read_only(call))
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.u32(granted & requested)
