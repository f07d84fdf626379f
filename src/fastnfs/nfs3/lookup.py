"""LOOKUP and READLINK (RFC 1813 sections 3.3.3, 3.3.5)."""

from __future__ import annotations

import os
import stat as S

from .. import perm
from ..fs import NFSError, nfsstat_of
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
        if d.is_dir:
            s.check(call, e, d.st, perm.X)
        obj = e.lookup(d, name)
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
        if not S.S_ISLNK(obj.st.st_mode):
            raise NFSError(C.NFS3ERR_INVAL)
        try:
            if getattr(obj.st, "stored_as_file", False):
                # QEMU mapped-file keeps a symlink as a file holding the target
                fd = e.open_obj(obj, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    target = os.read(fd, C.NFS3_MAXPATHLEN)
                finally:
                    os.close(fd)
            else:
                target = os.readlink(obj.path, dir_fd=e.root_fd)
        except OSError as err:
            raise NFSError(nfsstat_of(err))
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return
    p.u32(C.NFS3_OK)
    put_post_op_attr(p, obj.st, e.fsid)
    p.string(target)
