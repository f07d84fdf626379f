"""One board's merged view: the read-only base plus the board's own layer.

The layer (``fastnfs.boards.Layer``) holds the board's objects in ``upper/``
and its bookkeeping out of band (whiteouts, opaque directories, redirects,
fileids).  The rules, in overlayfs's terms:

* a name in upper/ wins over the base's for non-directories; directories
  merge (unless opaque, or redirected to the base directory they were renamed
  from);
* removing a base entry records a whiteout in the layer's database (never a
  name a client could see);
* WRITE, SETATTR of size, LINK and rename of base objects copy up, parents
  first, atomically (built in work/, renamed into place), keeping owner, mode
  and times in virtfs mapped-file metadata; chmod, chown and times of a base
  object change only its attributes (kept in the database: metadata-only);
* a fileid never changes: a base object's is its base inode, kept across
  copy-up (the ids table), a board-created object's is its upper inode tagged
  with bit 63 and the layer's epoch; a copied-up base file with more than one
  link lives in index/ under its base inode, so all its names stay one object.

Objects are located by their merged path (``Obj.path``); each call locates
them again, one no-follow step at a time from the roots, so a symlink, a
``..`` or a layer's own files are never reached.  The server checks
permissions itself on the merged attributes (``fastnfs.perm``), as virtfs does.

The fast lane (``_fastpath``) answers for objects that are the base's own
(``_own``: nothing of them or of a directory on their way in the layer), from
the base, with the board's handles and fsid; it asks ``lane_layer`` when the
layer's generation moved and ``lane_base`` for a handle it has not met, and
declines everything else to the methods here.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as S
import threading
import time
import zlib
from collections import OrderedDict
from contextlib import contextmanager

from .. import perm
from .._accel import load
from ..beneath import DIRP, open_dir as _open_dir, openat2 as _openat2, openat2_ok as _openat2_ok
from ..boards import Layer
from ..fs import NFSError, Obj, check_name, join, name_cookie
from ..fsstat import fstat, lstatat, names_fileid
from ..nfs3 import const as C
from ..nfs3.types import Sattr3, put_fattr3
from ..virtfs.ops import changed_meta, disk_mode, new_meta
from ..virtfs.overlay import Virtfs, VStat
from ..virtfs.store import (HIDDEN, Meta, link_meta, make_rdev, meta_dir_only, remove_meta,
                            rename_meta, rmdir_meta_dir, write_meta, write_root_meta)
from . import Backend, RefreshingDirOp, ServerChecks
from .listing import listing_start
from .plain import entry_plus_size, read_reply

_cx = load("_fastpath")
# a directory that is the base's own: its entries in C (the loop below is its twin)
_c_board_entries = _cx.put_board_entries_plus if _cx is not None else None

log = logging.getLogger("fastnfs.boards")

TAG = 1 << 63
INO_BITS = 40
DIRR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OFFSET = (1 << 63) - 1
U, I, B = "upper", "index", "base"


class BStat(VStat):
    """Attributes as the board's clients see them: st's (a host stat or a
    virtfs VStat) under the board's fileid, fsid and generation."""

    __slots__ = ()

    def __init__(self, st, fileid: int, fsid: int, gen: int):
        self.st_mode = st.st_mode
        self.st_nlink = st.st_nlink
        self.st_uid = st.st_uid
        self.st_gid = st.st_gid
        self.st_size = st.st_size
        self.st_blocks = st.st_blocks
        self.st_rdev = st.st_rdev
        self.st_atime_ns = st.st_atime_ns
        self.st_mtime_ns = st.st_mtime_ns
        self.st_ctime_ns = st.st_ctime_ns
        self.btime_ns = st.btime_ns
        self.real_mode = getattr(st, "real_mode", st.st_mode)
        self.st_ino = fileid
        self.st_dev = fsid
        self.gen = gen


class Loc:
    """Where a merged object lives now."""

    __slots__ = ("kind", "raw", "bpath", "st", "fileid", "gen")


def _split(path: bytes):
    i = path.rfind(b"/")
    if i < 0:
        return b".", path
    return path[:i], path[i + 1:]


_NOATIME = getattr(os, "O_NOATIME", 0)
_BASE_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _open_base(dfd: int, name: bytes) -> int:
    """Open a base file for reading without touching its atime where allowed
    (O_NOATIME needs the file's owner or CAP_FOWNER)."""
    if _NOATIME:
        try:
            return os.open(name, _BASE_READ | _NOATIME, dir_fd=dfd)
        except PermissionError:
            pass
    return os.open(name, _BASE_READ, dir_fd=dfd)


_LSTAT = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _lstat_in(root_fd: int, path: bytes):
    """lstat of path under root_fd (no symlink followed on the way), or None."""
    if path == b".":
        return fstat(root_fd)
    if _openat2_ok[0]:
        try:
            fd = _openat2(root_fd, path, _LSTAT)
        except OSError:
            return None
        if fd is not None:
            try:
                return fstat(fd)
            finally:
                os.close(fd)
    d, name = _split(path)
    try:
        dfd = _open_dir(root_fd, d)
    except OSError:
        return None
    try:
        return lstatat(dfd, name)
    except OSError:
        return None
    finally:
        os.close(dfd)


class BoardBackend(ServerChecks, Backend):
    """Board NAME's view of BASE, its layer kept under the boards directory."""

    lane = False    # (not the host layout: the lane serves boards through lane_layer)
    hidden = HIDDEN
    NEGATIVE_TTL = 5.0

    def __init__(self, base, boards_dir, name: bytes, *, virtfs_base: bool = False):
        if isinstance(base, str):
            base = os.fsencode(base)
        self.base_path = os.path.realpath(base)
        self.name = name
        self.base_fd = os.open(self.base_path, DIRR)
        self.boards_fd = os.open(os.fsencode(boards_dir), DIRR)
        # a virtfs base's metadata reader (the fast lane shares its cache), else None
        self.base_virtfs = Virtfs(self.base_fd) if virtfs_base else None
        self.base_view = self.base_virtfs.view if virtfs_base else (lambda p, st: st)
        # its own fsid: per base and board (the client keys its caches on it)
        self.fsid = zlib.crc32(b"board:" + self.base_path + b"@" + name) & 0xFFFFFFFF
        self.lock = threading.RLock()   # this process's threads (Layer.lock: processes)
        self.paths: dict = {}     # fileid -> merged path (verified on use)
        self._missing: dict = {}  # (fileid, gen) -> when a search did not find it
        self.listings: OrderedDict = OrderedDict()  # merged path -> (version, listing)
        self.layer = None
        self._open_layer()
        bst = fstat(self.base_fd)
        self.root_ino = bst.st_ino

    def close(self) -> None:
        if self.layer is not None:
            self.layer.close()
        os.close(self.base_fd)
        os.close(self.boards_fd)

    # -- the layer, reopened when reset from the command line ----------------------
    def _open_layer(self) -> None:
        old = self.layer
        L = Layer(self.boards_fd, self.name, self.base_fd, self.base_path)
        with L.lock():   # no other process is amid a change of it
            self._clean_work(L)
            if Virtfs(L.upper_fd).meta(b".") is None:
                # the board's root looks like the base's until the board changes it
                write_root_meta(L.upper_fd,
                                self._meta_of(self.base_view(b".", fstat(self.base_fd))))
        self.layer = L
        self.upper_virtfs = Virtfs(L.upper_fd)
        self.upper_view = self.upper_virtfs.view
        self.index_view = Virtfs(L.index_fd).view
        self.paths = {}
        self._missing.clear()
        self.listings.clear()
        self._no_upper = (None, set())   # (generation, paths not in upper/)
        if old is not None:
            old.close()
            log.info("board %s: layer reset, serving the base again", self.name.decode())

    @staticmethod
    def _clean_work(L: Layer) -> None:
        """Copy-ups that a crash left half made in work/ (never in upper/) go
        (under the layer's lock: no process is amid one)."""
        from ..boards import _rmtree_at
        wfd = L.work_fd
        for n in os.listdir(wfd):
            n = os.fsencode(n)
            try:
                if S.S_ISDIR(lstatat(wfd, n).st_mode):
                    _rmtree_at(wfd, n)
                else:
                    os.unlink(n, dir_fd=wfd)
            except OSError:
                pass

    def _L(self) -> Layer:
        """The layer, this process's copy of its bookkeeping brought up to date if
        another process (a worker, `fastnfs boards reset`) changed it since."""
        if not self.layer.fresh():
            with self.lock:
                L = self.layer
                if not L.fresh():
                    if not L.current():
                        self._open_layer()
                    else:
                        with L.lock():   # (waits out a change under way elsewhere)
                            L.reload()
                        self._missing.clear()
        return self.layer

    @contextmanager
    def _changing(self):
        """Around every change: this process's threads and the other processes
        serving the board kept out (the layer's flock), the bookkeeping current,
        the generation odd meanwhile (Layer.begin, end)."""
        with self.lock:
            if self.layer.locked:   # (a change within a change)
                yield self.layer
                return
            while True:
                L = self._L()
                with L.lock():
                    if L.fresh():   # nobody changed it between _L() and the flock
                        L.begin()
                        try:
                            yield L
                        finally:
                            L.end()
                        return

    def lane_layer(self):
        """For the fast lane (_fastpath): (the layer, the generation its bookkeeping
        in this process is current for, upper/'s metadata reader), brought up to
        date first; None while a change is under way.  The lane answers only for
        objects that are the base's own and forgets them when the generation moves."""
        if not self.lock.acquire(blocking=False):
            return None   # a thread of this process is amid a call: never wait on the loop
        try:
            L = self._L()
            seen = L.seen
            if seen & 1 or L.generation() != seen or L.locked:
                return None
            return L, seen, self.upper_virtfs
        finally:
            self.lock.release()

    def _own(self, L: Layer, path: bytes):
        """The base's lstat of the object at merged path if it is the base's own:
        nothing of it or of a directory on its way in the layer (no upper entry,
        whiteout, opaque mark, redirect or attribute change), not a file with
        more names; else None (the caller holds self.lock)."""
        if path == b".":
            return None
        p = b"."
        st = None
        for comp in path.split(b"/"):
            if st is not None and (not S.S_ISDIR(st.st_mode) or st.st_ino in L.attrs):
                return None
            p = join(p, comp)
            if (comp in self.hidden or p in L.whiteouts or p in L.opaque
                    or p in L.redirects or self._upper_lstat(L, p) is not None):
                return None
            st = _lstat_in(self.base_fd, p)
            if st is None:
                return None
        if st.st_ino in L.attrs or (not S.S_ISDIR(st.st_mode) and st.st_nlink > 1):
            return None
        return st

    def lane_base(self, ino: int, seen: int):
        """For the fast lane: the path of object ino if it is the base's own
        (_own) at generation seen, None if it is not, False if this process
        does not know where it is."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            L = self.layer
            path = self.paths.get(ino)
            if path is None or path == b"." or L.seen != seen or not L.fresh():
                return False
            st = self._own(L, path)
            if st is None or st.st_ino != ino:
                return None
            return path if L.generation() == seen else False
        finally:
            self.lock.release()

    def mounted(self) -> None:
        self._L().set_meta("last_mount", str(time.time()))

    # -- locating ----------------------------------------------------------------------
    def base_dir_of(self, path: bytes):
        """The base directory a merged directory path merges with, or None."""
        L = self.layer
        if path == b".":
            return b"."
        r = L.redirects.get(path)
        if r is not None:
            return r
        if path in L.opaque:
            return None
        parent, name = _split(path)
        bp = self.base_dir_of(parent)
        if bp is None:
            return None
        return join(bp, name)

    def _base_entry(self, path: bytes):
        """(base path, lstat) of the base entry that path shows if no upper entry
        hides it and no whiteout removed it, else (None, None)."""
        L = self.layer
        if path in L.whiteouts:
            return None, None
        if path == b".":
            return b".", fstat(self.base_fd)
        parent, name = _split(path)
        bd = self.base_dir_of(parent)
        if bd is None:
            return None, None
        bpath = join(bd, name)
        st = _lstat_in(self.base_fd, bpath)
        return (bpath, st) if st is not None else (None, None)

    def locate(self, path: bytes) -> Loc:
        """Where the object at merged path is now (NFSError NOENT if nowhere); looked
        at again if another process changed the layer meanwhile (a sequence lock)."""
        while True:
            L = self._L()
            seen = L.seen
            try:
                loc = self._locate(L, path)
            except NFSError:
                if L.generation() == seen:
                    raise
                continue
            if L.generation() == seen:
                return loc

    def _upper_lstat(self, L: Layer, path: bytes):
        """lstat of path in upper/, or None; remembered while None for as long as the
        layer's generation stays (an upper entry appears only by a change, which
        moves it on; none is remembered during a change of this process's)."""
        if path == b".":
            return fstat(L.upper_fd)
        seen = L.seen
        nu = self._no_upper
        if nu[0] != seen:
            nu = self._no_upper = (seen, set())
        if path in nu[1]:
            return None
        ust = _lstat_in(L.upper_fd, path)
        if ust is None and not L.locked:
            if len(nu[1]) > 65536:
                nu[1].clear()
            nu[1].add(path)
        return ust

    def _locate(self, L: Layer, path: bytes) -> Loc:
        loc = Loc()
        ust = self._upper_lstat(L, path)
        if ust is not None:
            loc.kind, loc.raw, loc.bpath = U, ust, None
            view = self.upper_view(path, ust)
            if path == b".":
                loc.fileid, loc.gen = self.root_ino, fstat(self.base_fd).gen
            else:
                loc.fileid, loc.gen = L.ids.get(ust.st_ino) or (
                    TAG | (L.epoch << INO_BITS) | (ust.st_ino & ((1 << INO_BITS) - 1)),
                    ust.gen)
            nlink = view.st_nlink
            loc.st = BStat(view, loc.fileid, self.fsid, loc.gen)
            bn = L.base_nlink.get(loc.fileid) if not S.S_ISDIR(ust.st_mode) else None
            if bn is not None and _lstat_in(L.index_fd, str(loc.fileid).encode()) is not None:
                # a base file with more names: the index holds one more link
                loc.st.st_nlink = max(bn, nlink - 1)
            return loc
        bpath, bst = self._base_entry(path)
        if bst is None:
            raise NFSError(C.NFS3ERR_NOENT)
        loc.bpath = bpath
        loc.fileid, loc.gen = bst.st_ino, bst.gen
        if bst.st_nlink > 1 and not S.S_ISDIR(bst.st_mode):
            iname = str(bst.st_ino).encode()
            ist = _lstat_in(L.index_fd, iname)
            if ist is not None:
                loc.kind, loc.raw = I, ist
                loc.st = BStat(self.index_view(iname, ist), loc.fileid, self.fsid, loc.gen)
                loc.st.st_nlink = bst.st_nlink
                return loc
        loc.kind, loc.raw = B, bst
        view = self.base_view(bpath, bst)
        loc.st = BStat(view, loc.fileid, self.fsid, loc.gen)
        a = L.attrs.get(loc.fileid)
        if a is not None:  # a chmod/chown/utimes of a base object: metadata only
            uid, gid, mode, at, mt, ct = a
            st = loc.st
            st.st_uid, st.st_gid = uid, gid
            st.st_mode = S.S_IFMT(st.st_mode) | (mode & 0o7777)
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns = at, mt, ct
        return loc

    def _obj(self, path: bytes, anc: tuple) -> Obj:
        loc = self.locate(path)
        self.paths[loc.fileid] = path
        if len(self.paths) > 262144:
            self.paths.clear()
        return Obj(loc.fileid, path, loc.st, anc)

    # -- objects -------------------------------------------------------------------------
    def root(self) -> Obj:
        return self._obj(b".", ())

    def find(self, cred, ino: int, dev: int, gen: int, anc: tuple) -> Obj:
        if dev != self.fsid & 0xFFFFFFFF:
            raise NFSError(C.NFS3ERR_STALE)
        with self.lock:
            self._L()
            if ino == self.root_ino:
                return self._obj(b".", ())
            path = self.paths.get(ino)
            if path is not None:
                obj = self._verify(path, ino, gen, anc)
                if obj is not None:
                    return obj
            if ino & TAG and ((ino >> INO_BITS) & ((1 << 22) - 1)) != self.layer.epoch:
                raise NFSError(C.NFS3ERR_STALE)   # an object of a layer since reset
            # search: first below the ancestors the handle names, then everywhere
            for a in anc:
                p = self.paths.get(a)
                if p is not None:
                    obj = self._search(p, ino, gen, anc, 3)
                    if obj is not None:
                        return obj
            key = (ino, gen)
            seen = self._missing.get(key)
            if seen is not None and time.monotonic() - seen < self.NEGATIVE_TTL:
                raise NFSError(C.NFS3ERR_STALE)   # searched a moment ago: no new search
            obj = self._search(b".", ino, gen, anc, 64)
            if obj is not None:
                self._missing.pop(key, None)
                return obj
            if len(self._missing) > 4096:
                self._missing.clear()
            self._missing[key] = time.monotonic()
        raise NFSError(C.NFS3ERR_STALE)

    def _verify(self, path, ino, gen, anc):
        try:
            loc = self.locate(path)
        except (NFSError, OSError):
            return None
        if not names_fileid(loc.fileid, loc.gen, ino, gen):
            return None
        return Obj(ino, path, loc.st, anc)

    def _search(self, top: bytes, ino: int, gen: int, anc: tuple, depth: int):
        todo = [(top, 0)]
        while todo:
            d, lvl = todo.pop(0)
            try:
                names = self._merged_names(d)
            except (NFSError, OSError):
                continue
            for name in names:
                p = join(d, name)
                try:
                    loc = self.locate(p)
                except (NFSError, OSError):
                    continue
                self.paths[loc.fileid] = p
                if names_fileid(loc.fileid, loc.gen, ino, gen):
                    return Obj(ino, p, loc.st, anc)
                if S.S_ISDIR(loc.st.st_mode) and lvl + 1 < depth:
                    todo.append((p, lvl + 1))
        if top == b"." and ino == self.root_ino:
            return self._obj(b".", ())
        return None

    def walk(self, d: Obj, name: bytes) -> Obj:
        if not d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        if name == b".":
            return self._obj(d.path, d.anc)
        if name == b"..":
            p = d.path if d.path == b"." else _split(d.path)[0]
            return self._obj(p, d.anc[1:])
        check_name(name)
        if name in self.hidden:
            raise NFSError(C.NFS3ERR_NOENT)
        with self.lock:
            return self._obj(join(d.path, name), d.child_anc())

    def refresh(self, obj: Obj):
        try:
            obj.st = self.locate(obj.path).st
        except (NFSError, OSError):
            pass
        return obj.st

    # -- copy-up -------------------------------------------------------------------------------
    def _upper_dir(self, path: bytes) -> int:
        """An O_PATH fd of path's directory in upper/, copied up (parents first) if needed."""
        self.copy_up(path)
        return _open_dir(self.layer.upper_fd, path)

    def _meta_of(self, st) -> Meta:
        rdev = st.st_rdev if S.S_ISCHR(st.st_mode) or S.S_ISBLK(st.st_mode) else -1
        return Meta(st.st_uid, st.st_gid, st.st_mode, rdev)

    def copy_up(self, path: bytes) -> Loc:
        """Make the object at path an upper object (its parents first); its fileid stays."""
        loc = self.locate(path)
        if loc.kind == U:
            return loc
        L = self.layer
        parent, name = _split(path)
        self.copy_up(parent)
        pfd = _open_dir(L.upper_fd, parent)
        try:
            st = loc.st
            if loc.kind == I:
                iname = str(loc.fileid).encode()
                os.link(iname, name, src_dir_fd=L.index_fd, dst_dir_fd=pfd,
                        follow_symlinks=False)
                link_meta(L.index_fd, iname, pfd, name)
                return self.locate(path)
            tmp = b"cu-%d-%s" % (loc.fileid, os.urandom(4).hex().encode())
            wfd = L.work_fd
            fmt = S.S_IFMT(st.st_mode)
            raw = loc.raw
            if fmt == S.S_IFDIR:
                os.mkdir(tmp, disk_mode(S.S_IFDIR, st.st_mode), dir_fd=wfd)
            elif fmt == S.S_IFREG and S.S_ISREG(raw.st_mode):
                self._copy_data(loc.bpath, wfd, tmp, st.st_mode)
            elif fmt == S.S_IFLNK and S.S_ISLNK(raw.st_mode):
                bd, bn = _split(loc.bpath)
                bdfd = _open_dir(self.base_fd, bd)
                try:
                    target = os.readlink(bn, dir_fd=bdfd)
                finally:
                    os.close(bdfd)
                os.symlink(target, tmp, dir_fd=wfd)
            elif S.S_ISREG(raw.st_mode):   # a virtfs base's device/symlink stored as a file
                self._copy_data(loc.bpath, wfd, tmp, 0o600)
            else:  # a real device, fifo or socket: a file the metadata calls one
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600, dir_fd=wfd))
            write_meta(wfd, tmp, self._meta_of(st))
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=wfd,
                     follow_symlinks=False)
            ust = lstatat(wfd, tmp)
            L.set_id(ust.st_ino, loc.fileid, loc.gen,
                     loc.raw.st_nlink if fmt != S.S_IFDIR else 1)
            if fmt != S.S_IFDIR and loc.raw.st_nlink > 1:
                # keep every base name of this file one object: the copy is indexed
                iname = str(loc.fileid).encode()
                os.link(tmp, iname, src_dir_fd=wfd, dst_dir_fd=L.index_fd,
                        follow_symlinks=False)
                link_meta(wfd, tmp, L.index_fd, iname)
            os.rename(tmp, name, src_dir_fd=wfd, dst_dir_fd=pfd)
            rename_meta(wfd, tmp, pfd, name)   # (after the entry: virtfs.store's rule)
            L.drop_attrs(loc.fileid)
        finally:
            os.close(pfd)
        return self.locate(path)

    def _copy_data(self, bpath: bytes, wfd: int, tmp: bytes, mode: int) -> None:
        bd, bn = _split(bpath)
        bdfd = _open_dir(self.base_fd, bd)
        try:
            src = _open_base(bdfd, bn)
        finally:
            os.close(bdfd)
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, disk_mode(S.S_IFREG, mode), dir_fd=wfd)
            try:
                n = os.fstat(src).st_size
                off = 0
                while off < n:
                    try:
                        k = os.copy_file_range(src, dst, n - off, off, off)
                    except OSError:
                        k = os.pwrite(dst, os.pread(src, min(1 << 20, n - off), off), off)
                    if k <= 0:
                        break
                    off += k
            finally:
                os.close(dst)
        finally:
            os.close(src)

    # -- attributes ----------------------------------------------------------------------------
    def setattr(self, cred, obj, a: Sattr3) -> None:
        with self._changing():
            loc = self.locate(obj.path)
            st = loc.st
            if a.size is not None:
                if S.S_ISDIR(st.st_mode):
                    raise NFSError(C.NFS3ERR_ISDIR)
                if not S.S_ISREG(st.st_mode):
                    raise NFSError(C.NFS3ERR_INVAL)
                if a.size > MAX_OFFSET:
                    raise NFSError(C.NFS3ERR_FBIG)
                self.check_io(cred, st, perm.W)
            explicit = (a.atime not in (None, Sattr3.SERVER_TIME)
                        or a.mtime not in (None, Sattr3.SERVER_TIME))
            if (a.atime is not None or a.mtime is not None) and cred.uid not in (0, st.st_uid):
                if explicit:
                    raise NFSError(C.NFS3ERR_PERM)
                self.check(cred, st, perm.W)
            meta = None
            if a.mode is not None or a.uid is not None or a.gid is not None:
                meta = changed_meta(cred, st, a.uid, a.gid, a.mode)
            now = time.time_ns()
            at = st.st_atime_ns if a.atime is None else (
                now if a.atime == Sattr3.SERVER_TIME else a.atime)
            mt = st.st_mtime_ns if a.mtime is None else (
                now if a.mtime == Sattr3.SERVER_TIME else a.mtime)
            if loc.kind == B and a.size is None:
                # metadata only: the base object stays where it is
                m = meta or self._meta_of(st)
                self.layer.set_attrs(loc.fileid, (m.uid, m.gid, m.mode, at, mt, now), obj.path)
                return
            loc = self.copy_up(obj.path) if loc.kind != U else loc
            parent, name = _split(obj.path)
            L = self.layer
            if meta is not None:
                if obj.path == b".":
                    write_root_meta(L.upper_fd, meta)
                else:
                    pfd = _open_dir(L.upper_fd, parent)
                    try:
                        write_meta(pfd, name, meta)
                    finally:
                        os.close(pfd)
            if a.size is not None:
                if getattr(loc.st, "real_mode", loc.st.st_mode) != loc.raw.st_mode or \
                        not S.S_ISREG(loc.raw.st_mode):
                    raise NFSError(C.NFS3ERR_INVAL)
                fd = self._open_upper(obj.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, a.size)
                finally:
                    os.close(fd)
            if a.atime is not None or a.mtime is not None:
                pfd = _open_dir(L.upper_fd, parent) if obj.path != b"." else None
                try:
                    if pfd is None:
                        os.utime(L.upper_fd, ns=(at, mt))
                    else:
                        os.utime(name, ns=(at, mt), dir_fd=pfd, follow_symlinks=False)
                finally:
                    if pfd is not None:
                        os.close(pfd)

    def _open_upper(self, path: bytes, flags: int) -> int:
        parent, name = _split(path)
        pfd = _open_dir(self.layer.upper_fd, parent)
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                           dir_fd=pfd)
        finally:
            os.close(pfd)

    def _open_read(self, path: bytes, loc: Loc | None = None) -> int:
        """An fd of the file at path for reading (loc: where it was just located)."""
        if loc is None:
            loc = self.locate(path)
        if not S.S_ISREG(loc.raw.st_mode):
            raise NFSError(C.NFS3ERR_INVAL)
        if loc.kind == U:
            return self._open_upper(path, os.O_RDONLY)
        if loc.kind == I:
            return os.open(str(loc.fileid).encode(), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=self.layer.index_fd)
        if _openat2_ok[0]:
            try:
                fd = _openat2(self.base_fd, loc.bpath, _BASE_READ | _NOATIME)
            except PermissionError:   # O_NOATIME: the owner's or CAP_FOWNER's
                fd = _openat2(self.base_fd, loc.bpath, _BASE_READ)
            if fd is not None:
                return fd
        bd, bn = _split(loc.bpath)
        dfd = _open_dir(self.base_fd, bd)
        try:
            return _open_base(dfd, bn)
        finally:
            os.close(dfd)

    # -- names ------------------------------------------------------------------------------------
    def readlink(self, cred, obj) -> bytes:
        with self.lock:
            loc = self.locate(obj.path)
            if not S.S_ISLNK(loc.st.st_mode):
                raise NFSError(C.NFS3ERR_INVAL)
            if loc.kind == U:
                root, path = self.layer.upper_fd, obj.path
            elif loc.kind == I:
                root, path = self.layer.index_fd, str(loc.fileid).encode()
            else:
                root, path = self.base_fd, loc.bpath
            if S.S_ISREG(loc.raw.st_mode):
                fd = self._open_read(obj.path)
                try:
                    return os.read(fd, C.NFS3_MAXPATHLEN)
                finally:
                    os.close(fd)
            d, n = _split(path)
            dfd = _open_dir(root, d)
            try:
                return os.readlink(n, dir_fd=dfd)
            finally:
                os.close(dfd)

    # -- data ------------------------------------------------------------------------------------
    def read(self, cred, obj, offset: int, count: int, p, head, nowait: bool = False):
        with self.lock:
            loc = self.locate(obj.path)
            fd = self._open_read(obj.path, loc)
        try:
            # what the page cache holds inline, the rest in a thread (as plain)
            return read_reply(fd, loc.st, offset, count, p, head, nowait)
        finally:
            os.close(fd)

    def write(self, cred, obj, offset: int, data, stable: int):
        with self.lock:
            loc = self.locate(obj.path)
            if loc.kind != U:   # a copy-up: a change of the layer
                with self._changing():
                    loc = self.copy_up(obj.path)
            if not S.S_ISREG(loc.raw.st_mode) or not S.S_ISREG(loc.st.st_mode):
                raise NFSError(C.NFS3ERR_INVAL)
            fd = self._open_upper(obj.path, os.O_WRONLY)
        try:
            done, n = 0, len(data)
            while done < n:
                done += os.pwrite(fd, data[done:], offset + done)
            if stable != C.UNSTABLE:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        return self.locate(obj.path).st

    def commit(self, cred, obj):
        return self.locate(obj.path).st

    # -- changes of names ----------------------------------------------------------------------
    def dirop(self, cred, d, name: bytes) -> RefreshingDirOp:
        self.check_dirop(cred, d, name)
        return RefreshingDirOp(self, d, name)

    def _exists(self, path: bytes):
        try:
            return self.locate(path)
        except NFSError:
            return None

    def _new_entry(self, cred, op, fmt: int, mode: int, make, attrs, rdev: int = -1):
        """Make a new upper entry with make(pfd, name); its metadata; the new Obj."""
        with self._changing():
            path = join(op.d.path, op.name)
            if self._exists(path) is not None:
                raise NFSError(C.NFS3ERR_EXIST)
            pfd = self._upper_dir(op.d.path)
            try:
                try:
                    lstatat(pfd, op.name)   # a stale upper entry cannot be: locate said none
                    raise NFSError(C.NFS3ERR_EXIST)
                except FileNotFoundError:
                    pass
                make(pfd, op.name)
                meta = new_meta(cred, op.before, fmt, mode, rdev)
                if attrs is not None and cred.uid == 0 and (
                        attrs.uid is not None or attrs.gid is not None):
                    meta = meta._replace(uid=meta.uid if attrs.uid is None else attrs.uid,
                                         gid=meta.gid if attrs.gid is None else attrs.gid)
                try:
                    write_meta(pfd, op.name, meta)
                except BaseException:
                    try:
                        if fmt == S.S_IFDIR:
                            os.rmdir(op.name, dir_fd=pfd)
                        else:
                            os.unlink(op.name, dir_fd=pfd)
                    except OSError:
                        pass
                    raise
                if fmt == S.S_IFDIR:
                    # a new directory never shows a base one that was (or will be) there
                    self.layer.set_opaque(path)
                if attrs is not None and (attrs.size is not None or attrs.atime is not None
                                          or attrs.mtime is not None):
                    try:
                        if attrs.size and fmt == S.S_IFREG:
                            fd = os.open(op.name, os.O_WRONLY | os.O_NOFOLLOW, dir_fd=pfd)
                            try:
                                os.ftruncate(fd, attrs.size)
                            finally:
                                os.close(fd)
                        now = time.time_ns()
                        st = lstatat(pfd, op.name)
                        at = st.st_atime_ns if attrs.atime is None else (
                            now if attrs.atime == Sattr3.SERVER_TIME else attrs.atime)
                        mt = st.st_mtime_ns if attrs.mtime is None else (
                            now if attrs.mtime == Sattr3.SERVER_TIME else attrs.mtime)
                        os.utime(op.name, ns=(at, mt), dir_fd=pfd, follow_symlinks=False)
                    except OSError:
                        pass
            finally:
                os.close(pfd)
            self._missing.clear()
            return self._obj(path, op.d.child_anc())

    def create(self, cred, op, how: int, attrs, verf):
        path = join(op.d.path, op.name)
        if how == C.EXCLUSIVE:
            old = self._exists(path)
            if old is not None:
                a, m = int.from_bytes(verf[:4], "big"), int.from_bytes(verf[4:], "big")
                if (old.kind == U and S.S_ISREG(old.st.st_mode)
                        and old.st.st_atime_ns // 10**9 == a and old.st.st_mtime_ns // 10**9 == m):
                    return self._obj(path, op.d.child_anc())
                raise NFSError(C.NFS3ERR_EXIST)
            va = Sattr3()
            va.atime = int.from_bytes(verf[:4], "big") * 10**9
            va.mtime = int.from_bytes(verf[4:], "big") * 10**9
            return self._new_entry(cred, op, S.S_IFREG, 0o600, self._mkfile, va)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        old = self._exists(path)
        if old is not None:
            if how == C.GUARDED or not S.S_ISREG(old.st.st_mode):
                raise NFSError(C.NFS3ERR_EXIST)
            if attrs.size is not None:
                self.check_io(cred, old.st, perm.W)
                a = Sattr3()
                a.size = attrs.size
                self.setattr(cred, Obj(old.fileid, path, old.st, ()), a)
            return self._obj(path, op.d.child_anc())
        return self._new_entry(cred, op, S.S_IFREG, mode, self._mkfile, attrs)

    @staticmethod
    def _mkfile(pfd, name):
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=pfd))

    def mkdir(self, cred, op, attrs):
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        return self._new_entry(cred, op, S.S_IFDIR, mode,
                               lambda pfd, n: os.mkdir(n, 0o700, dir_fd=pfd), attrs)

    def symlink(self, cred, op, target: bytes, attrs):
        if not target or b"\0" in target:
            raise NFSError(C.NFS3ERR_INVAL)
        return self._new_entry(cred, op, S.S_IFLNK, 0o777,
                               lambda pfd, n: os.symlink(target, n, dir_fd=pfd), attrs)

    def mknod(self, cred, op, fmt: int, attrs, major: int, minor: int):
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        try:
            rdev = make_rdev(major, minor)
        except (OverflowError, ValueError):
            raise NFSError(C.NFS3ERR_INVAL) from None
        return self._new_entry(cred, op, fmt, mode, self._mkfile, attrs, rdev)

    def _drop(self, path: bytes, loc: Loc, base_had: bool) -> None:
        """Remove the entry at path from the merged view (its upper object, if any)."""
        L = self.layer
        if loc.kind == U:
            parent, name = _split(path)
            pfd = _open_dir(L.upper_fd, parent)
            try:
                if S.S_ISDIR(loc.raw.st_mode):
                    dfd = os.open(name, DIRR, dir_fd=pfd)
                    try:
                        only = meta_dir_only(dfd)
                    finally:
                        os.close(dfd)
                    if only:
                        rmdir_meta_dir(pfd, name)
                    os.rmdir(name, dir_fd=pfd)
                else:
                    os.unlink(name, dir_fd=pfd)
                remove_meta(pfd, name)
            finally:
                os.close(pfd)
            if loc.raw.st_nlink <= 1 or S.S_ISDIR(loc.raw.st_mode):
                L.drop_id(loc.raw.st_ino)
        if S.S_ISDIR(loc.st.st_mode):
            L.forget_tree(path)
        if base_had:
            L.add_whiteout(path)
        self.paths.pop(loc.fileid, None)

    def _touch(self, path: bytes) -> None:
        """The merged directory at path changed: copy it up, new mtime and ctime (so
        that clients see the change even when only a whiteout was recorded)."""
        self.copy_up(path)
        fd = _open_dir(self.layer.upper_fd, path, DIRR)
        try:
            os.utime(fd)
        finally:
            os.close(fd)

    def _victim(self, cred, op) -> Loc:
        path = join(op.d.path, op.name)
        loc = self.locate(path)
        self.check_delete(cred, op.d.st, loc.st)
        return loc

    def remove(self, cred, op) -> None:
        with self._changing():
            loc = self._victim(cred, op)
            if S.S_ISDIR(loc.st.st_mode):
                raise NFSError(C.NFS3ERR_ISDIR)
            path = join(op.d.path, op.name)
            self._drop(path, loc, self._base_entry(path)[1] is not None)
            self._touch(op.d.path)

    def rmdir(self, cred, op) -> None:
        with self._changing():
            loc = self._victim(cred, op)
            if not S.S_ISDIR(loc.st.st_mode):
                raise NFSError(C.NFS3ERR_NOTDIR)
            path = join(op.d.path, op.name)
            if self._merged_names(path):
                raise NFSError(C.NFS3ERR_NOTEMPTY)
            self._drop(path, loc, self._base_entry(path)[1] is not None)
            self._touch(op.d.path)

    def rename(self, cred, src, dst) -> None:
        with self._changing():
            spath = join(src.d.path, src.name)
            dpath = join(dst.d.path, dst.name)
            loc = self._victim(cred, src)
            if spath == dpath:
                return
            is_dir = S.S_ISDIR(loc.st.st_mode)
            if is_dir:
                if (dpath + b"/").startswith(spath + b"/"):
                    raise NFSError(C.NFS3ERR_INVAL)
                if src.d.path != dst.d.path:
                    self.check(cred, loc.st, perm.W)
            old = self._exists(dpath)
            if old is not None:
                if old.fileid == loc.fileid and not is_dir:
                    return  # two names of one file: rename(2) does nothing
                self.check_delete(cred, dst.d.st, old.st)
                if S.S_ISDIR(old.st.st_mode) != is_dir:
                    raise NFSError(C.NFS3ERR_ISDIR if S.S_ISDIR(old.st.st_mode)
                                   else C.NFS3ERR_NOTDIR)
                if is_dir and self._merged_names(dpath):
                    raise NFSError(C.NFS3ERR_NOTEMPTY)
            base_src = self.base_dir_of(spath) if is_dir else None
            src_base_had = self._base_entry(spath)[1] is not None
            dst_base_had = self._base_entry(dpath)[1] is not None
            self.copy_up(spath)
            L = self.layer
            if old is not None:
                self._drop(dpath, self.locate(dpath), False)
            spfd = _open_dir(L.upper_fd, src.d.path)
            try:
                dpfd = self._upper_dir(dst.d.path)
                try:
                    os.rename(src.name, dst.name, src_dir_fd=spfd, dst_dir_fd=dpfd)
                    rename_meta(spfd, src.name, dpfd, dst.name)
                finally:
                    os.close(dpfd)
            finally:
                os.close(spfd)
            if is_dir:
                L.forget_tree(dpath)
                L.move_tree(spath, dpath)
                L.forget_tree(spath)
                if base_src is not None:
                    L.set_redirect(dpath, base_src)   # it still merges what it merged
                else:
                    L.set_opaque(dpath)
                for fid, p in list(self.paths.items()):
                    if p.startswith(spath + b"/"):
                        self.paths[fid] = dpath + p[len(spath):]
            if src_base_had:
                L.add_whiteout(spath)
            if dst_base_had:
                L.add_whiteout(dpath)
            self.paths[loc.fileid] = dpath
            self._touch(src.d.path)
            self._touch(dst.d.path)

    def link(self, cred, obj, op) -> None:
        if obj.is_dir:
            raise NFSError(C.NFS3ERR_ISDIR)
        with self._changing():
            path = join(op.d.path, op.name)
            if self._exists(path) is not None:
                raise NFSError(C.NFS3ERR_EXIST)
            self.copy_up(obj.path)
            L = self.layer
            sp, sn = _split(obj.path)
            spfd = _open_dir(L.upper_fd, sp)
            try:
                dpfd = self._upper_dir(op.d.path)
                try:
                    os.link(sn, op.name, src_dir_fd=spfd, dst_dir_fd=dpfd,
                            follow_symlinks=False)
                    link_meta(spfd, sn, dpfd, op.name)
                finally:
                    os.close(dpfd)
            finally:
                os.close(spfd)
            self.refresh(obj)

    # -- listings ---------------------------------------------------------------------------------
    def listing_cached(self, d) -> bool:
        return d.path in self.listings   # (its version is checked when it is used)

    def _merged_names(self, path: bytes) -> list:
        """The names in the merged directory at path (no ".", "..", hidden ones)."""
        L = self._L()
        names = set()
        try:
            fd = _open_dir(L.upper_fd, path, DIRR)
        except (FileNotFoundError, NotADirectoryError):
            fd = None
        if fd is not None:
            try:
                names.update(os.listdir(fd))
            finally:
                os.close(fd)
        names = {os.fsencode(n) for n in names}
        bd = self.base_dir_of(path)
        if bd is not None:
            try:
                fd = _open_dir(self.base_fd, bd, DIRR)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    for n in os.listdir(fd):
                        n = os.fsencode(n)
                        if join(path, n) not in L.whiteouts:
                            names.add(n)
                finally:
                    os.close(fd)
        return sorted(n for n in names if n not in self.hidden)

    def _dir_version(self, path: bytes) -> tuple:
        """What a merged listing of path depends on: both directories' change
        times, the layer, and the backend's count of name changes."""
        L = self.layer
        u = fstat(L.upper_fd) if path == b"." else _lstat_in(L.upper_fd, path)
        bd = self.base_dir_of(path)
        bst = None if bd is None else (fstat(self.base_fd) if bd == b"." else
                                       _lstat_in(self.base_fd, bd))
        return (L.ino, L.seen, bd,
                None if u is None else (u.st_ino, u.st_mtime_ns, u.st_ctime_ns),
                None if bst is None else (bst.st_ino, bst.st_mtime_ns, bst.st_ctime_ns))

    def _listing(self, path: bytes) -> list:
        """[(cookie, name, fileid)] of the merged directory at path, sorted by
        cookie; cached per version, so paging a big directory costs one merge."""
        self._L()
        version = self._dir_version(path)
        hit = self.listings.get(path)
        if hit is not None and hit[0] == version:
            self.listings.move_to_end(path)
            return hit[1]
        items = []
        # a directory that is the base's own: each entry is the base's, its fileid the
        # base inode (locate's answer, for a fraction of its cost)
        dfd = (_open_dir(self.base_fd, path) if self._own(self.layer, path) is not None
               else None)
        try:
            for n in self._merged_names(path):
                p = join(path, n)
                try:
                    fid = (os.lstat(n, dir_fd=dfd).st_ino if dfd is not None
                           else self.locate(p).fileid)
                except (NFSError, OSError):
                    continue
                self.paths[fid] = p
                items.append((name_cookie(n), n, fid))
        finally:
            if dfd is not None:
                os.close(dfd)
        items.sort()
        self.listings[path] = (version, items)
        if len(self.listings) > 64:
            self.listings.popitem(last=False)
        return items

    def _entries(self, d, cookie: int):
        with self.lock:
            items = self._listing(d.path)
            parent = d.path if d.path == b"." else _split(d.path)[0]
            pino = self.locate(parent).fileid
        out = []
        if cookie == 0:
            out.append((1, b".", d.ino))
        if cookie <= 1:
            out.append((2, b"..", pino))
        i = listing_start([c for c, _n, _f in items], cookie) if cookie > 2 else 0
        out.extend(items[i:])
        return out

    def readdir(self, cred, d, cookie: int):
        yield from self._entries(d, cookie)

    def readdirplus(self, export, cred, d, cookie: int, p, budget: int, dirbudget: int,
                    sent: int):
        anc = d.child_anc()
        items = self._entries(d, cookie)
        attrs = None   # a directory that is the base's own: its entries written in C
        if _c_board_entries is not None:
            with self.lock:
                L = self._L()
                if self._own(L, d.path) is not None:
                    attrs = L.attrs
        dfd = None
        try:
            i, n = 0, len(items)
            while i < n:
                if attrs is not None and items[i][1] not in (b".", b".."):
                    if dfd is None:
                        dfd = _open_dir(self.base_fd, d.path)
                    r = _c_board_entries(p, export, dfd, d.path, anc, items, i, budget,
                                         dirbudget, sent, attrs)
                    if r is None:
                        attrs = None
                        continue
                    sent, budget, dirbudget, i, full = r
                    if full:
                        return sent, False
                    if i >= n:
                        break
                r = self._put_entry(export, d, anc, items[i], p, budget, dirbudget, sent)
                if r is None:
                    return sent, False
                sent, budget, dirbudget = r
                i += 1
        finally:
            if dfd is not None:
                os.close(dfd)
        return sent, True

    def _put_entry(self, export, d, anc, item, p, budget: int, dirbudget: int, sent: int):
        """One entryplus3 (RFC 1813 section 3.3.17) of directory d: (sent, budget,
        dirbudget) after it, or None when it does not fit."""
        c, name, fid = item
        size, dsize = entry_plus_size(name, len(anc))
        if size > budget or (dsize > dirbudget and sent):
            return None
        p.u32(1)
        p.u64(fid)
        p.string(name)
        p.u64(c)
        st = None
        if name == b".":
            st = d.st
        elif name != b"..":
            try:
                with self.lock:
                    loc = self.locate(join(d.path, name))
            except (NFSError, OSError):
                loc = None
            if loc is not None and loc.fileid == fid:   # (not gone or replaced meanwhile)
                st = loc.st
        if st is None:
            p.u32(0)
            p.u32(0)
        else:
            p.u32(1)
            put_fattr3(p, st, self.fsid)
            p.u32(1)
            p.opaque(export.fh(d if name == b"." else Obj(fid, b"", st, anc)))
        return sent + 1, budget - size, dirbudget - dsize

    # -- the filesystem --------------------------------------------------------------------------
    def fsstat(self, cred, obj) -> tuple:
        v = os.fstatvfs(self.layer.upper_fd)
        return (v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize, v.f_bavail * v.f_frsize,
                v.f_files, v.f_ffree, v.f_favail)

    def pathconf(self, cred, obj) -> tuple:
        return 65000, 255


class _ReadOnly:
    """Mixin: the base itself, served read-only while boards are enabled."""

    lane = False

    def _rofs(self, *_a, **_k):
        raise NFSError(C.NFS3ERR_ROFS)

    setattr = write = dirop = create = mkdir = symlink = mknod = remove = rmdir = rename = \
        link = commit = _rofs


def read_only_base(backend):
    """The base's own backend, refusing every change (NFS3ERR_ROFS)."""
    cls = type("ReadOnly" + type(backend).__name__, (_ReadOnly, type(backend)), {})
    backend.__class__ = cls
    backend.lane = False
    return backend
