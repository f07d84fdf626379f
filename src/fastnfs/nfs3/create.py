"""CREATE, MKDIR, SYMLINK, MKNOD and LINK (RFC 1813 sections 3.3.8-3.3.11, 3.3.15)."""

from __future__ import annotations

import errno
import os
import stat as S

from ..fsstat import lstatat
from .. import perm
from ..fs import NFSError, status_of, check_name
from ..virtfs import ops as vops
from ..virtfs.store import link_meta, make_rdev, write_meta
from ..xdr import XdrError
from . import const as C
from .attrs import apply_sattr3
from .types import (Sattr3, get_diropargs3, get_fh3, get_sattr3, put_post_op_attr,
                    put_post_op_fh3, put_wcc_data)


class DirOp:
    """A procedure that changes one name in one directory, with its wcc data."""

    __slots__ = ("s", "call", "e", "d", "name", "before", "dfd")

    def __init__(self, s, call, fh: bytes, name: bytes):
        self.s = s
        self.call = call
        self.e = self.d = self.before = None
        self.dfd = -1
        self.name = name
        self.e, self.d = s.resolve(call, fh)
        self.before = self.d.st
        s.check_writable(call, self.e)
        if not self.d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        if name in (b".", b".."):
            raise NFSError(C.NFS3ERR_EXIST)
        check_name(name)
        if name in self.e.hidden:
            raise NFSError(C.NFS3ERR_ACCES)
        s.check(call, self.e, self.d.st, perm.W | perm.X)
        self.dfd = self.e.open_dir(self.d)

    def close(self):
        if self.dfd >= 0:
            self.e.close_fd(self.dfd)
            self.dfd = -1

    def after(self):
        self.e.refresh(self.d)
        self.e.forget_missing()
        return self.d.st


def _undo_create(op) -> None:
    try:
        st = lstatat(op.dfd, op.name)
        if S.S_ISDIR(st.st_mode):
            os.rmdir(op.name, dir_fd=op.dfd)
        else:
            os.unlink(op.name, dir_fd=op.dfd)
    except OSError:
        pass


def _fail(p, op, status):
    p.u32(status)
    if op is None or op.d is None:
        put_wcc_data(p, None, None, 0)
    else:
        put_wcc_data(p, op.before, op.after(), op.e.fsid)


def _created(p, op, attrs: Sattr3 | None, vmeta=None):
    """Apply the requested attributes to a new entry and encode the diropres3.

    The entry already belongs to the caller: it was made under the caller's
    filesystem credentials (NFS3State.resolve), as a local create would be;
    with virtfs, vmeta (the caller's ids and the requested mode) is recorded.
    """
    s, e, d = op.s, op.e, op.d
    if vmeta is not None:
        if attrs is not None and s.cred(op.call, e).uid == 0 and (
                attrs.uid is not None or attrs.gid is not None):
            vmeta = vmeta._replace(uid=vmeta.uid if attrs.uid is None else attrs.uid,
                                   gid=vmeta.gid if attrs.gid is None else attrs.gid)
        try:
            write_meta(op.dfd, op.name, vmeta)
        except BaseException:
            _undo_create(op)  # never leave an entry without the owner the client asked for
            raise
        if attrs is not None:
            rest = Sattr3()
            rest.size, rest.atime, rest.mtime = attrs.size, attrs.atime, attrs.mtime
            attrs = rest
    obj = e.child_obj(d, op.name, op.dfd)
    if obj is not None and attrs is not None and not attrs.empty():
        try:
            apply_sattr3(s, op.call, e, obj, attrs)
        except (OSError, NFSError):
            pass
        e.refresh(obj)
    p.u32(C.NFS3_OK)
    if obj is None:
        put_post_op_fh3(p, None)
        put_post_op_attr(p, None, 0)
    else:
        put_post_op_fh3(p, e.fh(obj))
        put_post_op_attr(p, obj.st, e.fsid)
    put_wcc_data(p, op.before, op.after(), e.fsid)


def _run(p, op_factory, body):
    op = None
    try:
        op = op_factory()
        body(op)
    except (NFSError, OSError) as err:
        _fail(p, op, status_of(err))
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

    def body(op):
        if how == C.EXCLUSIVE:
            _create_exclusive(p, op, verf)
            return
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        vfs = op.e.virtfs is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(op.name, flags | os.O_EXCL,
                         vops.disk_mode(S.S_IFREG, mode) if vfs else mode, dir_fd=op.dfd)
            fresh = True
        except FileExistsError:
            if how == C.GUARDED:
                raise
            # UNCHECKED over an existing entry: only a regular file is reused
            # (never open a FIFO or device for writing on behalf of a create)
            st = lstatat(op.dfd, op.name)
            if not S.S_ISREG(st.st_mode):
                raise
            fd = os.open(op.name, flags, mode, dir_fd=op.dfd)
            fresh = False
        os.close(fd)
        rest = attrs
        vmeta = None
        if fresh and vfs:
            vmeta = vops.new_meta(op.s.cred(op.call, op.e), op.before, S.S_IFREG, mode)
        elif fresh:
            rest = Sattr3()
            rest.uid, rest.gid, rest.size = attrs.uid, attrs.gid, attrs.size
            rest.atime, rest.mtime = attrs.atime, attrs.mtime
            if attrs.mode is not None and attrs.mode & 0o6000:
                rest.mode = attrs.mode  # set-id bits survive only a chmod after chown
        _created(p, op, rest, vmeta)

    _run(p, lambda: DirOp(s, call, fh, name), body)


def _create_exclusive(p, op, verf: bytes):
    # Section 3.3.8: keep the verifier where the client cannot see it change
    # before its SETATTR: in atime and mtime seconds, as Linux nfsd does.
    a = int.from_bytes(verf[:4], "big")
    m = int.from_bytes(verf[4:], "big")
    try:
        fd = os.open(op.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=op.dfd)
    except FileExistsError:
        st = lstatat(op.dfd, op.name)
        if S.S_ISREG(st.st_mode) and int(st.st_atime) == a and int(st.st_mtime) == m:
            _created(p, op, None)  # a retransmission of our own create
            return
        raise
    try:
        os.utime(fd, ns=(a * 1_000_000_000, m * 1_000_000_000))
    finally:
        os.close(fd)
    vmeta = None
    if op.e.virtfs is not None:
        vmeta = vops.new_meta(op.s.cred(op.call, op.e), op.before, S.S_IFREG, 0o600)
    _created(p, op, None, vmeta)


def MKDIR(s, call, u, p):
    fh, name = get_diropargs3(u)
    attrs = get_sattr3(u)

    def body(op):
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        if op.e.virtfs is not None:
            os.mkdir(op.name, vops.disk_mode(S.S_IFDIR, mode), dir_fd=op.dfd)
            vmeta = vops.new_meta(op.s.cred(op.call, op.e), op.before, S.S_IFDIR, mode)
            _created(p, op, attrs, vmeta)
            return
        os.mkdir(op.name, mode, dir_fd=op.dfd)
        attrs.mode = mode if mode & 0o7000 else None
        _created(p, op, attrs)

    _run(p, lambda: DirOp(s, call, fh, name), body)


def SYMLINK(s, call, u, p):
    fh, name = get_diropargs3(u)
    attrs = get_sattr3(u)
    target = u.string(C.NFS3_MAXPATHLEN)

    def body(op):
        if not target or b"\0" in target:
            raise NFSError(C.NFS3ERR_INVAL)
        os.symlink(target, op.name, dir_fd=op.dfd)
        attrs.mode = None  # a symlink's mode means nothing on Linux
        vmeta = None
        if op.e.virtfs is not None:
            vmeta = vops.new_meta(op.s.cred(op.call, op.e), op.before, S.S_IFLNK, 0o777)
        _created(p, op, attrs, vmeta)

    _run(p, lambda: DirOp(s, call, fh, name), body)


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

    def body(op):
        if attrs is None:
            raise NFSError(C.NFS3ERR_BADTYPE)  # section 3.3.11: REG, DIR, LNK are not for MKNOD
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        fmt = _MKNOD_FMT[ftype]
        if op.e.virtfs is not None:
            # no privilege needed: an empty regular file that the metadata calls a device
            fd = os.open(op.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=op.dfd)
            os.close(fd)
            vmeta = vops.new_meta(op.s.cred(op.call, op.e), op.before, fmt, mode,
                                  make_rdev(major, minor))
            attrs.mode = None
            _created(p, op, attrs, vmeta)
            return
        try:
            dev = os.makedev(major, minor)
        except (OverflowError, ValueError):
            raise NFSError(C.NFS3ERR_INVAL) from None
        os.mknod(op.name, mode | _MKNOD_FMT[ftype], dev, dir_fd=op.dfd)
        attrs.mode = mode if mode & 0o7000 else None
        _created(p, op, attrs)

    _run(p, lambda: DirOp(s, call, fh, name), body)


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
    op = None
    try:
        op = DirOp(s, call, dfh, name)
        if op.e is not e:
            raise NFSError(C.NFS3ERR_XDEV)
        if obj.is_dir:
            raise NFSError(C.NFS3ERR_ISDIR)
        fd = e.open_obj(obj, os.O_PATH)
        try:
            # linkat through the pinned O_PATH fd: no path walk, no symlink follow
            os.link("/proc/self/fd/%d" % fd, op.name, dst_dir_fd=op.dfd, follow_symlinks=True)
        finally:
            os.close(fd)
        if e.virtfs is not None and obj.path != b".":
            pfd, sname = vops.open_parent(e, obj)
            try:
                link_meta(pfd, sname, op.dfd, op.name)
            finally:
                os.close(pfd)
        e.refresh(obj)
        p.u32(C.NFS3_OK)
        put_post_op_attr(p, obj.st, e.fsid)
        put_wcc_data(p, op.before, op.after(), e.fsid)
    except (NFSError, OSError) as err:
        status = status_of(err)
        if isinstance(err, OSError) and err.errno == errno.ENOENT and op is not None:
            status = C.NFS3ERR_STALE
        p.u32(status)
        put_post_op_attr(p, obj.st, e.fsid)
        if op is None or op.d is None:
            put_wcc_data(p, None, None, 0)
        else:
            put_wcc_data(p, op.before, op.after(), op.e.fsid)
    finally:
        if op is not None:
            op.close()
