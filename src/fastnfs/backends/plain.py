"""The host filesystem as it is: the plain backend.

Objects are the host's files, found again by inode (``hostpaths``).  When
the server may act as any user (``creds.ENABLED``: root's capabilities) it
takes each caller's squashed credentials on the calling thread (``fastnfs.creds``: setfsuid, setfsgid, setgroups), so the
kernel checks permissions exactly as for a local process; otherwise it acts
with its own rights.  Every call goes through a directory fd or a verified
fd of the object itself, never a client's path through a symlink.

``VirtfsBackend`` and ``SingleUserBackend`` take this storage and change how
it is seen (``view``) and who may do what (the ``check*`` hooks, which here
leave the decision to the kernel).
"""

from __future__ import annotations

import errno
import os
import stat as S
import time

from .. import creds, offload, perm
from .._accel import load
from ..fs import NFSError, join, nfsstat_of, scan_listing
from ..fsstat import fstat, lstatat
from ..nfs3 import const as C
from ..nfs3.types import Sattr3, put_fattr3
from . import Backend, DirOp, ServerChecks
from .hostpaths import DIR_FLAGS, HostPaths, open_granting
from .listing import ListingCache, listing_start

MAX_OFFSET = (1 << 63) - 1  # off_t; FSINFO's maxfilesize


class HostDirOp(DirOp):
    """A DirOp holding the directory open (O_PATH) for *at() calls."""

    __slots__ = ("b", "dfd")

    def __init__(self, b, d, name: bytes, dfd: int):
        DirOp.__init__(self, d, name)
        self.b = b
        self.dfd = dfd

    def after(self):
        self.b.refresh(self.d)
        self.b.forget_missing()
        return self.d.st

    def close(self) -> None:
        if self.dfd >= 0:
            self.b.close_fd(self.dfd)
            self.dfd = -1


def _times(st, a: Sattr3):
    now = None
    at, mt = a.atime, a.mtime
    if at == Sattr3.SERVER_TIME or mt == Sattr3.SERVER_TIME:
        now = time.time_ns()
    at = st.st_atime_ns if at is None else (now if at == Sattr3.SERVER_TIME else at)
    mt = st.st_mtime_ns if mt is None else (now if mt == Sattr3.SERVER_TIME else mt)
    return at, mt


def _sattr(**kw) -> Sattr3:
    a = Sattr3()
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def py_put_entries_plus(p, e, dfd: int, dpath: bytes, anc: tuple, cookies: list, names: list,
                        inos: list, start: int, budget: int, dirbudget: int, sent: int):
    """entryplus3 for the listing from index start while they fit: each
    entry's attributes and handle from one no-follow stat in the directory.
    e is the handles.Export (its backend overlays the attributes, the export
    makes the handles).  Returns (entries sent in all, eof).
    Cython twin: _fastpath.put_entries_plus."""
    b = e.backend
    view = b.view if b.overlays else None
    for i in range(start, len(cookies)):
        name = names[i]
        size, dsize = entry_plus_size(name, len(anc))
        if size > budget or (dsize > dirbudget and sent):
            return sent, False
        budget -= size
        dirbudget -= dsize
        ino = inos[i]
        try:
            st = lstatat(dfd, name)
        except OSError:
            st = None
        p.u32(1)
        if st is None:
            p.u64(ino)
            p.string(name)
            p.u64(cookies[i])
            p.u32(0)
            p.u32(0)
        else:
            epath = join(dpath, name)
            b.cache.put(st.st_ino, epath)
            efh = e.fh_of(st.st_ino, st.st_dev, st.gen, anc)
            if view is not None:
                st = view(epath, st)
            p.u64(st.st_ino)
            p.string(name)
            p.u64(cookies[i])
            p.u32(1)
            put_fattr3(p, st, e.fsid)
            p.u32(1)
            p.opaque(efh)
        sent += 1
    return sent, True


def entry_plus_size(name: bytes, nanc: int) -> tuple:
    """(size in the reply, size against dircount) of one entryplus3."""
    pad = (len(name) + 3) & ~3
    return 24 + pad + 88 + 8 + 24 + 8 * nanc, 20 + pad


put_entries_plus = py_put_entries_plus
_cx = load("_fastpath")
if _cx is not None:  # the Cython twin, where it serves the export
    _c_put_entries_plus = _cx.put_entries_plus

    def put_entries_plus(p, e, *args):  # noqa: F811
        """The Cython twin where it serves e, else the Python loop."""
        r = _c_put_entries_plus(p, e, *args)
        return py_put_entries_plus(p, e, *args) if r is None else r


def makedev(major: int, minor: int) -> int:
    """A device number from a specdata3 (RFC 1813 section 2.5), or NFS3ERR_INVAL."""
    try:
        return os.makedev(major, minor)
    except (OverflowError, ValueError):
        raise NFSError(C.NFS3ERR_INVAL) from None


def read_reply(fd: int, st, offset: int, count: int, p, head, nowait: bool):
    """Backend.read's work on an open file with attributes st: head(st), then the
    data as an XDR opaque; None when nowait and the data is not all in memory."""
    head(st)
    n = p.read_data(fd, count, offset, st.st_size, nowait)   # (the fast lane's read_data)
    return None if n is None else (st, n)


class PlainBackend(HostPaths, ServerChecks, Backend):
    """The host filesystem, with the kernel's permission checks (the check hooks
    below do nothing: the kernel decides, under the caller's credentials)."""

    lane = True
    overlays = False       # does view() apply to READDIRPLUS entries too?

    def __init__(self, path, *, fhcache_size: int = 262144, dircache_size: int = 64,
                 switch_creds: bool | None = None):
        HostPaths.__init__(self, path, fhcache_size=fhcache_size)
        self.listings = ListingCache(dircache_size)
        self.switch_creds = creds.ENABLED if switch_creds is None else switch_creds

    # -- policy hooks: the kernel decides here (under the caller's credentials) --
    def check(self, cred, st, want: int) -> None:
        """Refuse unless cred has every bit of want (perm.R/W/X) on st."""

    def check_io(self, cred, st, want: int) -> None:
        """READ/WRITE permission on a regular file."""

    def _victim(self, cred, op, name: bytes):
        """The entry about to go (its attributes on disk)."""
        try:
            return lstatat(op.dfd, name)
        except OSError as err:
            raise NFSError(nfsstat_of(err))

    # -- resolution and credentials ----------------------------------------------
    def find(self, cred, ino: int, dev: int, gen: int, anc: tuple):
        if not self.switch_creds or cred is None:
            return self.find_any(ino, dev, gen, anc)
        want = (cred.uid, cred.gid, cred.gids)
        if creds.current() == want:
            # the same caller as the last call on this thread: a cache hit needs
            # no switch; anything more (a search) runs as the server, below
            obj = self.find_cached(ino, dev, gen, anc)
            if obj is not None:
                return obj
        creds.become_server()
        obj = self.find_any(ino, dev, gen, anc)
        creds.switch(*want)
        return obj

    def run_as(self, cred, work):
        if not self.switch_creds:
            return work

        def run():
            creds.switch(cred.uid, cred.gid, cred.gids)
            return work()
        return run

    # -- attributes ----------------------------------------------------------------
    def setattr(self, cred, obj, a: Sattr3) -> None:
        self._set_disk(obj, a, S.S_IFMT(obj.st.st_mode), cred)

    def _set_disk(self, obj, a: Sattr3, fmt: int, cred=None) -> None:
        st = obj.st
        if a.size is not None:
            if fmt == S.S_IFDIR:
                raise NFSError(C.NFS3ERR_ISDIR)
            if fmt != S.S_IFREG:
                raise NFSError(C.NFS3ERR_INVAL)
            if a.size > MAX_OFFSET:
                raise NFSError(C.NFS3ERR_FBIG)
            fd = self.open_io(cred, obj, os.O_WRONLY)
            try:
                os.ftruncate(fd, a.size)
            finally:
                os.close(fd)
        if a.mode is None and a.uid is None and a.gid is None and a.atime is None \
                and a.mtime is None:
            return
        if fmt == S.S_IFLNK:
            if a.uid is not None or a.gid is not None:
                os.chown(obj.path, -1 if a.uid is None else a.uid,
                         -1 if a.gid is None else a.gid,
                         dir_fd=self.root_fd, follow_symlinks=False)
            if a.atime is not None or a.mtime is not None:
                os.utime(obj.path, ns=_times(st, a), dir_fd=self.root_fd, follow_symlinks=False)
            return
        # an O_PATH fd pins the verified object; /proc/self/fd/N reaches it without
        # walking the path again, so a concurrent rename cannot redirect the change
        fd = self.open_obj(obj, os.O_PATH)
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

    # -- names -------------------------------------------------------------------------
    def readlink(self, cred, obj) -> bytes:
        if not S.S_ISLNK(obj.st.st_mode):
            raise NFSError(C.NFS3ERR_INVAL)
        try:
            return self._read_link(obj)
        except OSError as err:
            raise NFSError(nfsstat_of(err))

    def _read_link(self, obj) -> bytes:
        return os.readlink(obj.path, dir_fd=self.root_fd)

    # -- data ----------------------------------------------------------------------------
    def open_io(self, cred, obj, flags: int) -> int:
        """open_obj for a file's data (READ, WRITE, COMMIT, a new size), with
        the owner override (RFC 1813 section 4.4: no open in NFSv3, so the
        permission checked was the client's, at its open; knfsd's
        NFSD_MAY_OWNER_OVERRIDE): a file its owner chmod'ed 000 while open is
        still read and written.  The usual open costs nothing more."""
        try:
            return self.open_obj(obj, flags)
        except PermissionError:
            if self.switch_creds:
                if cred is None or cred.uid != obj.st.st_uid:
                    raise
                # the caller owns it: open as the server, then be the caller again
                creds.become_server()
                try:
                    return self.open_obj(obj, flags)
                finally:
                    creds.switch(cred.uid, cred.gid, cred.gids)
            # the server acts with its own rights: where it owns the file on
            # disk, the owner's bits are granted for the open only
            return open_granting(self, obj, flags)

    def read(self, cred, obj, offset: int, count: int, p, head, nowait: bool = False):
        fd = self.open_io(cred, obj, os.O_RDONLY)
        try:
            return read_reply(fd, self.view(obj.path, fstat(fd)), offset, count, p, head,
                              nowait)
        finally:
            os.close(fd)

    def lend_read(self, cred, obj, offset: int, count: int, head):
        if offset > MAX_OFFSET:
            return None
        fd = self.open_obj(obj, os.O_RDONLY)
        try:
            st = self.view(obj.path, fstat(fd))
            n = max(0, min(count, st.st_size - offset))
            if not offload.lend_read(n) or not offload.cached(fd, offset, n):
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        head(st)
        return st, fd, n

    def write(self, cred, obj, offset: int, data, stable: int):
        fd = self.open_io(cred, obj, os.O_WRONLY)
        try:
            done = 0
            n = len(data)
            while done < n:
                done += os.pwrite(fd, data[done:], offset + done)
            if stable == C.FILE_SYNC:
                os.fsync(fd)
            elif stable == C.DATA_SYNC:
                os.fdatasync(fd)
            return self.view(obj.path, fstat(fd))
        finally:
            os.close(fd)

    def commit(self, cred, obj):
        fd = self.open_io(cred, obj, os.O_RDONLY)
        try:
            os.fsync(fd)
            return self.view(obj.path, fstat(fd))
        finally:
            os.close(fd)

    # -- changes of names --------------------------------------------------------------
    def dirop(self, cred, d, name: bytes) -> HostDirOp:
        self.check_dirop(cred, d, name)
        return HostDirOp(self, d, name, self.open_dir(d))

    def _undo_create(self, op) -> None:
        try:
            st = lstatat(op.dfd, op.name)
            if S.S_ISDIR(st.st_mode):
                os.rmdir(op.name, dir_fd=op.dfd)
            else:
                os.unlink(op.name, dir_fd=op.dfd)
        except OSError:
            pass

    def _created(self, cred, op, attrs):
        """The new entry, with the requested attributes applied (failures ignored).

        The entry already belongs to the caller: it was made under the caller's
        filesystem credentials (find), as a local create would be."""
        obj = self.child_obj(op.d, op.name, op.dfd)
        if obj is not None and attrs is not None and not attrs.empty():
            try:
                self.setattr(cred, obj, attrs)
            except (OSError, NFSError):
                pass
            self.refresh(obj)
        return obj

    def _open_new(self, op, how: int, disk_mode: int, mode: int) -> bool:
        """Create (GUARDED) or reuse (UNCHECKED, a regular file only) op.name;
        True when it is new."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(op.name, flags | os.O_EXCL, disk_mode, dir_fd=op.dfd)
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
        return fresh

    def create(self, cred, op, how: int, attrs, verf):
        if how == C.EXCLUSIVE:
            if self._create_exclusive(op, verf):
                return self._created(cred, op, None)
            return self._created_exclusive(cred, op)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        fresh = self._open_new(op, how, mode, mode)
        rest = attrs
        if fresh:
            rest = _sattr(uid=attrs.uid, gid=attrs.gid, size=attrs.size,
                          atime=attrs.atime, mtime=attrs.mtime)
            if attrs.mode is not None and attrs.mode & 0o6000:
                rest.mode = attrs.mode  # set-id bits survive only a chmod after chown
        return self._created(cred, op, rest)

    def _create_exclusive(self, op, verf: bytes) -> bool:
        """Section 3.3.8: keep the verifier where the client cannot see it change
        before its SETATTR: in atime and mtime seconds, as Linux nfsd does.
        True for a retransmission of our own create."""
        a = int.from_bytes(verf[:4], "big")
        m = int.from_bytes(verf[4:], "big")
        try:
            fd = os.open(op.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=op.dfd)
        except FileExistsError:
            st = lstatat(op.dfd, op.name)
            if S.S_ISREG(st.st_mode) and int(st.st_atime) == a and int(st.st_mtime) == m:
                return True
            raise
        try:
            os.utime(fd, ns=(a * 1_000_000_000, m * 1_000_000_000))
        finally:
            os.close(fd)
        return False

    def _created_exclusive(self, cred, op):
        return self._created(cred, op, None)

    def mkdir(self, cred, op, attrs):
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        os.mkdir(op.name, mode, dir_fd=op.dfd)
        attrs.mode = mode if mode & 0o7000 else None
        return self._created(cred, op, attrs)

    def symlink(self, cred, op, target: bytes, attrs):
        if not target or b"\0" in target:
            raise NFSError(C.NFS3ERR_INVAL)
        os.symlink(target, op.name, dir_fd=op.dfd)
        attrs.mode = None  # a symlink's mode means nothing on Linux
        return self._created(cred, op, attrs)

    def mknod(self, cred, op, fmt: int, attrs, major: int, minor: int):
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        os.mknod(op.name, mode | fmt, makedev(major, minor), dir_fd=op.dfd)
        attrs.mode = mode if mode & 0o7000 else None
        return self._created(cred, op, attrs)

    def _removed(self, op) -> None:
        """After an entry of op's directory went (virtfs: its metadata goes too)."""

    # -- the disk calls that change names (pseudo's backend has pseudo make them) --
    def _unlink_disk(self, op) -> None:
        os.unlink(op.name, dir_fd=op.dfd)

    def _rmdir_disk(self, op) -> None:
        os.rmdir(op.name, dir_fd=op.dfd)

    def _rename_disk(self, src, dst) -> None:
        os.rename(src.name, dst.name, src_dir_fd=src.dfd, dst_dir_fd=dst.dfd)

    def _link_disk(self, obj, op) -> None:
        fd = self.open_obj(obj, os.O_PATH)
        try:
            # linkat through the pinned O_PATH fd: no path walk, no symlink follow
            os.link("/proc/self/fd/%d" % fd, op.name, dst_dir_fd=op.dfd,
                    follow_symlinks=True)
        finally:
            os.close(fd)

    def remove(self, cred, op) -> None:
        st = self._victim(cred, op, op.name)
        self._unlink_disk(op)
        if st.st_nlink <= 1:
            self.cache.discard(st.st_ino)
        self._removed(op)

    def _only_bookkeeping(self, op) -> bool:
        """rmdir said ENOTEMPTY: is what is left only the backend's own
        files, now removed (so that a second rmdir may succeed)?"""
        return False

    def rmdir(self, cred, op) -> None:
        st = self._victim(cred, op, op.name)
        try:
            self._rmdir_disk(op)
        except OSError as err:
            if err.errno != errno.ENOTEMPTY or not self._only_bookkeeping(op):
                raise
            self._rmdir_disk(op)
        self.cache.discard(st.st_ino)
        self._removed(op)

    def _check_move(self, cred, src, dst, st) -> None:
        """Before a rename of src.name (attributes on disk st) to dst.name."""

    def _check_replace(self, cred, dst) -> None:
        """Before a rename over the existing entry dst.name."""

    def _renamed(self, src, dst) -> None:
        """After the rename (virtfs: the metadata follows)."""

    def rename(self, cred, src, dst) -> None:
        fname, tname = src.name, dst.name
        st = self._victim(cred, src, fname)
        self._check_move(cred, src, dst, st)
        try:
            old = lstatat(dst.dfd, tname)
        except FileNotFoundError:
            old = None
        if old is not None:
            self._check_replace(cred, dst)
        self._rename_disk(src, dst)
        self._renamed(src, dst)
        if old is not None and old.st_ino != st.st_ino:
            self.cache.discard(old.st_ino)
        self.cache.put(st.st_ino, join(dst.d.path, tname))

    def _linked(self, obj, op) -> None:
        """After a hard link to obj was made as op.name."""

    def link(self, cred, obj, op) -> None:
        if obj.is_dir:
            raise NFSError(C.NFS3ERR_ISDIR)
        try:
            self._link_disk(obj, op)
            self._linked(obj, op)
        except OSError as err:
            if err.errno == errno.ENOENT:
                raise NFSError(C.NFS3ERR_STALE) from err
            raise
        self.refresh(obj)

    # -- listings ------------------------------------------------------------------------
    def listing_cached(self, d) -> bool:
        return self.listings.has(d.ino, d.st)

    def listing(self, d):
        """(cookies, names, inodes) sorted by cookie, cached per directory version."""
        hit = self.listings.get(d.ino, d.st)
        if hit is not None:
            return hit
        if d.ino == self.root_ino:
            fd = os.dup(self.root_fd)
        else:
            try:
                fd = os.open(d.path, DIR_FLAGS, dir_fd=self.root_fd)
            except OSError as e:
                raise NFSError(nfsstat_of(e))
            if fstat(fd).st_ino != d.ino:
                os.close(fd)
                raise NFSError(C.NFS3ERR_STALE)
        try:
            result = scan_listing(fd, self.hidden)
        except OSError as e:
            raise NFSError(nfsstat_of(e))
        finally:
            os.close(fd)
        self.listings.put(d.ino, d.st, result)
        return result

    def _dot_entries(self, d, cookie: int):
        if cookie == 0:
            yield 1, b".", d.ino
        if cookie <= 1:
            yield 2, b"..", self.parent_ino(d)

    def readdir(self, cred, d, cookie: int):
        cookies, names, inos = self.listing(d)
        yield from self._dot_entries(d, cookie)
        for i in range(listing_start(cookies, cookie), len(cookies)):
            yield cookies[i], names[i], inos[i]

    def readdirplus(self, export, cred, d, cookie: int, p, budget: int, dirbudget: int,
                    sent: int):
        cookies, names, inos = self.listing(d)
        dfd = self.open_dir(d)
        try:
            anc = d.child_anc()
            for c, name, ino in self._dot_entries(d, cookie):
                size, dsize = entry_plus_size(name, len(anc))
                if size > budget or (dsize > dirbudget and sent):
                    return sent, False
                budget -= size
                dirbudget -= dsize
                p.u32(1)
                p.u64(ino)
                p.string(name)
                p.u64(c)
                if name == b".":
                    p.u32(1)
                    put_fattr3(p, d.st, export.fsid)
                    p.u32(1)
                    p.opaque(export.fh(d))
                else:
                    p.u32(0)   # "..": the client looks it up if it wants it
                    p.u32(0)
                sent += 1
            return put_entries_plus(p, export, dfd, d.path, anc, cookies, names, inos,
                                    listing_start(cookies, cookie), budget, dirbudget, sent)
        finally:
            self.close_fd(dfd)

    # -- the filesystem ------------------------------------------------------------------
    def fsstat(self, cred, obj) -> tuple:
        v = os.fstatvfs(self.root_fd)
        return (v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize, v.f_bavail * v.f_frsize,
                v.f_files, v.f_ffree, v.f_favail)

    def pathconf(self, cred, obj) -> tuple:
        try:
            return (os.fpathconf(self.root_fd, "PC_LINK_MAX"),
                    os.fpathconf(self.root_fd, "PC_NAME_MAX"))
        except (OSError, ValueError):
            return 65000, 255
