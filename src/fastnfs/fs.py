"""Everything that touches the exported tree: filehandles, resolution, names.

Filehandle format (opaque to clients, at most 64 bytes; RFC 1813 section 2.4)::

    0   u8   version (1)
    1   u8   number of ancestor inodes that follow the fixed part (0..5)
    2   u16  reserved (0)
    4   u32  export id (crc32 of the export path)
    8   u64  inode number
    16  u32  low 32 bits of st_dev
    20  u32  generation: 32 bits of the birth time (statx btime; 0 if unknown)
    24  u64* ancestors: parent, grandparent, ... (a search hint)

A handle names an inode, so it survives a server restart and a rename; the
generation tells a reused inode number from the object that was deleted.  The
bounded inode -> path cache answers most lookups in O(1); a miss scans the
nearest known ancestor, then the whole export.  Every path from the cache is
verified by comparing the inode and device it reaches, so a stale or forged
entry can cost a search but never reach the wrong object.  Objects are only
ever found by single-component, no-follow steps from the export root, so a
handle never leads outside the export.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as S
import struct
import threading
import time
import zlib
from bisect import bisect_right
from collections import OrderedDict

from ._accel import load
from .fhcache import FHCache
from .fsstat import fstat, lstatat
from .nfs3 import const as C

_FH_HEAD = struct.Struct(">BBHIQII")
_FH_VERSION = 1
_MAX_ANCESTORS = 5
_ANC = [struct.Struct(">%dQ" % n) for n in range(_MAX_ANCESTORS + 1)]

O_PATH = getattr(os, "O_PATH", 0o10000000)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPATH_FLAGS = O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

_ERRNO_TO_NFS = {
    errno.EPERM: C.NFS3ERR_PERM,
    errno.ENOENT: C.NFS3ERR_NOENT,
    errno.EIO: C.NFS3ERR_IO,
    errno.ENXIO: C.NFS3ERR_NXIO,
    errno.EACCES: C.NFS3ERR_ACCES,
    errno.EEXIST: C.NFS3ERR_EXIST,
    errno.EXDEV: C.NFS3ERR_XDEV,
    errno.ENODEV: C.NFS3ERR_NODEV,
    errno.ENOTDIR: C.NFS3ERR_NOTDIR,
    errno.EISDIR: C.NFS3ERR_ISDIR,
    errno.EINVAL: C.NFS3ERR_INVAL,
    errno.EFBIG: C.NFS3ERR_FBIG,
    errno.ENOSPC: C.NFS3ERR_NOSPC,
    errno.EROFS: C.NFS3ERR_ROFS,
    errno.EMLINK: C.NFS3ERR_MLINK,
    errno.ENAMETOOLONG: C.NFS3ERR_NAMETOOLONG,
    errno.ENOTEMPTY: C.NFS3ERR_NOTEMPTY,
    errno.EDQUOT: C.NFS3ERR_DQUOT,
    errno.ESTALE: C.NFS3ERR_STALE,
    errno.EOPNOTSUPP: C.NFS3ERR_NOTSUPP,
    errno.ELOOP: C.NFS3ERR_ACCES,     # a symlink where the server refuses to follow one
    errno.EBADF: C.NFS3ERR_STALE,
    errno.ETXTBSY: C.NFS3ERR_ACCES,
    errno.EAGAIN: C.NFS3ERR_JUKEBOX,
    errno.EOVERFLOW: C.NFS3ERR_FBIG,
    errno.EMFILE: C.NFS3ERR_JUKEBOX,
    errno.ENFILE: C.NFS3ERR_JUKEBOX,
    errno.ENOMEM: C.NFS3ERR_JUKEBOX,
    errno.ENOTSUP: C.NFS3ERR_NOTSUPP,
    errno.ERANGE: C.NFS3ERR_INVAL,
    errno.EBUSY: C.NFS3ERR_ACCES,
}


SINGLE_USER_CALLER = threading.local()  # .ids = (uid, gid) of the call being served


class NFSError(Exception):
    """A procedure failure with its nfsstat3."""

    def __init__(self, status: int, msg: str = ""):
        super().__init__(status, msg)
        self.status = status


def nfsstat_of(e: OSError) -> int:
    return _ERRNO_TO_NFS.get(e.errno, C.NFS3ERR_IO)


def status_of(e: Exception) -> int:
    """The nfsstat3 of an NFSError or an OSError."""
    return e.status if isinstance(e, NFSError) else nfsstat_of(e)


def check_name(name: bytes) -> None:
    """A single path component as a client may create or look it up."""
    if not name:
        raise NFSError(C.NFS3ERR_ACCES)
    if len(name) > C.NFS3_MAXNAMLEN:
        raise NFSError(C.NFS3ERR_NAMETOOLONG)
    if b"/" in name or b"\0" in name:
        raise NFSError(C.NFS3ERR_ACCES)


def name_cookie(name: bytes) -> int:
    """A READDIR cookie stable across restarts and directory changes.

    Entries are returned in cookie order, so a client continuing from cookie
    c gets exactly the entries with a larger cookie: nothing is repeated or
    skipped when other entries come and go (RFC 1813 section 3.3.16).
    1 and 2 are "." and ".."; 0 means "from the start".
    """
    c = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big") >> 1
    return c if c > 2 else c + 3


def py_scan_listing(fd: int, hidden) -> tuple:
    """(cookies, names, inodes) of the directory open at fd, sorted by cookie,
    without the names in hidden; fd stays open.  Cython twin: _listing.scan_listing."""
    items = []
    with os.scandir(fd) as it:
        for e in it:
            name = os.fsencode(e.name)
            if name in hidden:
                continue
            items.append((name_cookie(name), name, e.inode()))
    items.sort()
    return [c for c, _n, _i in items], [n for _c, n, _i in items], [i for _c, _n, i in items]


scan_listing = py_scan_listing
_cx = load("_listing")
if _cx is not None:  # the Cython twin
    scan_listing = _cx.scan_listing


class Obj:
    """A resolved object: where it is now, its attributes, its ancestors."""

    __slots__ = ("ino", "path", "st", "anc")

    def __init__(self, ino: int, path: bytes, st, anc: tuple):
        self.ino = ino
        self.path = path
        self.st = st
        self.anc = anc

    @property
    def is_dir(self) -> bool:
        return S.S_ISDIR(self.st.st_mode)

    def child_anc(self) -> tuple:
        return (self.ino,) + self.anc[:_MAX_ANCESTORS - 1]


def _same(st, dev: int, gen: int) -> bool:
    """Does st belong to the object a handle's device and generation name?"""
    return (st.st_dev & 0xFFFFFFFF) == dev and (gen == 0 or st.gen == gen)


def join(parent: bytes, name: bytes) -> bytes:
    return name if parent == b"." else parent + b"/" + name


def dirname(path: bytes) -> bytes:
    i = path.rfind(b"/")
    return b"." if i < 0 else path[:i]


def basename(path: bytes) -> bytes:
    return path[path.rfind(b"/") + 1:]


class Export:
    """One exported directory tree and its filehandle space."""

    NEGATIVE_TTL = 5.0

    def __init__(self, path, *, entry=None, name: bytes | None = None,
                 fhcache_size: int = 262144, dircache_size: int = 64,
                 virtfs: bool = False, metacache_size: int = 65536):
        if isinstance(path, str):
            path = os.fsencode(path)
        self.path = os.path.realpath(path)
        # what clients MNT and EXPORT lists (differs from path with UNFS_BASE)
        self.name = self.path if name is None else name
        self.entry = entry
        self._opts_memo: dict = {}
        self.root_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = fstat(self.root_fd)
        self.root_ino = st.st_ino
        self.dev = st.st_dev
        self.fsid = st.st_dev
        self.export_id = zlib.crc32(self.path)
        self.cache = FHCache(fhcache_size)
        self.cache.put(self.root_ino, b".")
        self._missing: OrderedDict = OrderedDict()
        self._dircache: OrderedDict = OrderedDict()
        self._dircache_size = dircache_size
        self.virtfs = None
        self.single_user = None  # (uid, gid) of the server, when reporting as unfsd -s
        self.hidden = frozenset()
        if virtfs:
            from .virtfs.overlay import Virtfs
            self.virtfs = Virtfs(self.root_fd, metacache_size)
            self.hidden = Virtfs.hidden
        self.root_fh = self.fh_of(self.root_ino, st.st_dev, st.gen, ())

    def close(self) -> None:
        os.close(self.root_fd)

    def view(self, path: bytes, st):
        """Attributes as clients see them (the virtfs overlay, when enabled)."""
        v = self.virtfs
        if v is not None:
            return v.view(path, st)
        if self.single_user is not None:
            return self._single_user_view(st)
        return st

    def _single_user_view(self, st):
        """unfsd -s: what the server's user owns looks the caller's, the rest root's."""
        from .virtfs.overlay import VStat
        from .virtfs.store import Meta
        caller = getattr(SINGLE_USER_CALLER, "ids", None)
        if caller is None:
            return st
        suid, sgid = self.single_user
        return VStat(st, Meta(caller[0] if st.st_uid == suid else 0,
                              caller[1] if st.st_gid == sgid else 0, -1, -1))

    def options_for(self, addr: str):
        """ExportOptions for a client address, or None if it is not allowed."""
        try:
            return self._opts_memo[addr]
        except KeyError:
            pass
        opts = self.entry.options_for(addr)
        if len(self._opts_memo) > 4096:
            self._opts_memo.clear()
        self._opts_memo[addr] = opts
        return opts

    def set_entry(self, entry) -> None:
        """New options after an exports reload; handles stay valid."""
        self.entry = entry
        self._opts_memo = {}

    # -- filehandles ------------------------------------------------------
    def fh_of(self, ino: int, dev: int, gen: int, anc: tuple) -> bytes:
        return (_FH_HEAD.pack(_FH_VERSION, len(anc), 0, self.export_id, ino,
                              dev & 0xFFFFFFFF, gen) + _ANC[len(anc)].pack(*anc))

    def fh(self, obj: Obj) -> bytes:
        st = obj.st
        return self.fh_of(obj.ino, st.st_dev, st.gen, obj.anc)

    def owns(self, fh: bytes) -> bool:
        return len(fh) >= 8 and int.from_bytes(fh[4:8], "big") == self.export_id

    def decode_fh(self, fh: bytes):
        if len(fh) < _FH_HEAD.size:
            raise NFSError(C.NFS3ERR_BADHANDLE)
        ver, nanc, reserved, eid, ino, dev, gen = _FH_HEAD.unpack_from(fh)
        if (ver != _FH_VERSION or nanc > _MAX_ANCESTORS or reserved
                or len(fh) != _FH_HEAD.size + 8 * nanc):
            raise NFSError(C.NFS3ERR_BADHANDLE)
        if eid != self.export_id:
            raise NFSError(C.NFS3ERR_STALE)
        return ino, dev, gen, _ANC[nanc].unpack_from(fh, _FH_HEAD.size)

    def resolve_cached(self, fh: bytes):
        """The object a handle names if the cache places it, else None."""
        ino, dev, gen, anc = self.decode_fh(fh)
        path = self.cache.get(ino)
        if path is not None:
            st = self._lstat(path)
            if st is not None and st.st_ino == ino and _same(st, dev, gen):
                return Obj(ino, path, self.view(path, st), anc)
        return None

    def resolve(self, fh: bytes) -> Obj:
        """The object a handle names, or NFSError(STALE/BADHANDLE)."""
        obj = self.resolve_cached(fh)
        if obj is not None:
            return obj
        ino, dev, gen, anc = self.decode_fh(fh)
        obj = self._search(ino, dev, gen, anc)
        if obj is None:
            raise NFSError(C.NFS3ERR_STALE)
        return obj

    def _lstat(self, path: bytes):
        try:
            if path == b".":
                return fstat(self.root_fd)
            return lstatat(self.root_fd, path)
        except OSError:
            return None

    def _verified_dir_path(self, ino: int):
        path = self.cache.get(ino)
        if path is None:
            return None
        st = self._lstat(path)
        if st is None or st.st_ino != ino or not S.S_ISDIR(st.st_mode):
            return None
        return path

    def _search(self, ino: int, dev: int, gen: int, anc: tuple):
        """Find an inode that the cache does not place (restart, rename, eviction)."""
        if ino == self.root_ino:
            # the root is nobody's child: no scan finds it once the LRU evicted it
            st = fstat(self.root_fd)
            if not _same(st, dev, gen):
                return None
            self.cache.put(ino, b".")
            return Obj(ino, b".", self.view(b".", st), anc)
        now = time.monotonic()
        t = self._missing.get(ino)
        if t is not None and now - t < self.NEGATIVE_TTL:
            return None
        start, depth = b".", None
        for i, a in enumerate(anc):
            p = self._verified_dir_path(a)
            if p is not None:
                start, depth = p, i + 2
                break
        found = self._scan(start, ino, dev, gen, depth)
        if found is None and depth is not None:
            found = self._scan(b".", ino, dev, gen, None)
        if found is None:
            self._missing[ino] = now
            if len(self._missing) > 4096:
                self._missing.popitem(last=False)
            return None
        path, st = found
        self.cache.put(ino, path)
        return Obj(ino, path, self.view(path, st), anc)

    def _scan(self, start: bytes, ino: int, dev: int, gen: int, maxdepth):
        """Breadth-first search below start, never following symlinks."""
        try:
            fd = os.open(start, _DIR_FLAGS, dir_fd=self.root_fd)
        except OSError:
            return None
        level = [(fd, start)]
        open_fds = {fd}
        depth = 0
        try:
            while level:
                depth += 1
                nxt = []
                for dfd, dpath in level:
                    try:
                        with os.scandir(dfd) as it:
                            entries = list(it)
                    except OSError:
                        entries = []
                    subdirs = []
                    for e in entries:
                        name = os.fsencode(e.name)
                        if name in self.hidden:
                            continue
                        path = join(dpath, name)
                        if e.inode() == ino:
                            try:
                                st = lstatat(dfd, name)
                            except OSError:
                                continue
                            if st.st_ino == ino and _same(st, dev, gen):
                                return path, st
                        try:
                            if e.is_dir(follow_symlinks=False):
                                subdirs.append((name, path))
                                self.cache.put(e.inode(), path)
                        except OSError:
                            pass
                    if maxdepth is None or depth < maxdepth:
                        for name, path in subdirs:
                            try:
                                sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                                open_fds.add(sub)
                                nxt.append((sub, path))
                            except OSError:
                                pass
                    open_fds.discard(dfd)
                    os.close(dfd)
                level = nxt
            return None
        finally:
            for dfd in open_fds:
                os.close(dfd)

    def forget_missing(self) -> None:
        self._missing.clear()

    # -- directories and names --------------------------------------------
    def open_dir(self, obj: Obj) -> int:
        """An O_PATH fd on the verified directory (close with close_fd)."""
        if obj.ino == self.root_ino:
            return self.root_fd
        try:
            fd = os.open(obj.path, _OPATH_FLAGS | os.O_DIRECTORY, dir_fd=self.root_fd)
        except OSError as e:
            raise NFSError(C.NFS3ERR_NOTDIR if e.errno == errno.ENOTDIR else C.NFS3ERR_STALE)
        if fstat(fd).st_ino != obj.ino:
            os.close(fd)
            raise NFSError(C.NFS3ERR_STALE)
        return fd

    def close_fd(self, fd: int) -> None:
        if fd != self.root_fd:
            os.close(fd)

    def open_obj(self, obj: Obj, flags: int) -> int:
        """Open the object itself with no symlink at the end, verified by inode."""
        try:
            fd = os.open(obj.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root_fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NFSError(C.NFS3ERR_STALE)
            raise
        st = fstat(fd)
        if st.st_ino != obj.ino or st.btime_ns != obj.st.btime_ns:
            os.close(fd)
            raise NFSError(C.NFS3ERR_STALE)
        return fd

    def refresh(self, obj: Obj) -> None:
        """Re-read obj's attributes after a change."""
        st = self._lstat(obj.path)
        if st is not None and st.st_ino == obj.ino:
            obj.st = self.view(obj.path, st)

    def lookup(self, dirobj: Obj, name: bytes) -> Obj:
        """LOOKUP of one component; "." and ".." stay inside the export."""
        if not dirobj.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        if name == b".":
            return dirobj
        if name == b"..":
            if dirobj.ino == self.root_ino:
                return dirobj  # RFC 1813 section 3.3.3: the root is its own parent here
            ppath = dirname(dirobj.path)
            st = self._lstat(ppath)
            if st is None:
                raise NFSError(C.NFS3ERR_STALE)
            pino = st.st_ino
            self.cache.put(pino, ppath)
            panc = dirobj.anc[1:] if dirobj.anc and dirobj.anc[0] == pino else ()
            return Obj(pino, ppath, self.view(ppath, st), panc)
        check_name(name)
        if name in self.hidden:
            raise NFSError(C.NFS3ERR_NOENT)
        dfd = self.open_dir(dirobj)
        try:
            st = lstatat(dfd, name)
        except OSError as e:
            raise NFSError(nfsstat_of(e))
        finally:
            self.close_fd(dfd)
        path = join(dirobj.path, name)
        self.cache.put(st.st_ino, path)
        return Obj(st.st_ino, path, self.view(path, st), dirobj.child_anc())

    def child_obj(self, dirobj: Obj, name: bytes, dfd: int) -> Obj | None:
        """Stat a just-created child through the directory fd and cache it."""
        try:
            st = lstatat(dfd, name)
        except OSError:
            return None
        path = join(dirobj.path, name)
        self.cache.put(st.st_ino, path)
        return Obj(st.st_ino, path, self.view(path, st), dirobj.child_anc())

    @staticmethod
    def _listing_version(st) -> tuple:
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_nlink)

    def listing_cached(self, dirobj: Obj) -> bool:
        """Is this version of the directory's listing cached (listing() is cheap)?"""
        hit = self._dircache.get(dirobj.ino)
        return hit is not None and hit[0] == self._listing_version(dirobj.st)

    def listing(self, dirobj: Obj):
        """(cookies, names, inodes) sorted by cookie, cached per directory version."""
        key = dirobj.ino
        version = self._listing_version(dirobj.st)
        hit = self._dircache.get(key)
        if hit is not None and hit[0] == version:
            self._dircache.move_to_end(key)
            return hit[1]
        if dirobj.ino == self.root_ino:
            fd = os.dup(self.root_fd)
        else:
            try:
                fd = os.open(dirobj.path, _DIR_FLAGS, dir_fd=self.root_fd)
            except OSError as e:
                raise NFSError(nfsstat_of(e))
            if fstat(fd).st_ino != dirobj.ino:
                os.close(fd)
                raise NFSError(C.NFS3ERR_STALE)
        try:
            result = scan_listing(fd, self.hidden)
        except OSError as e:
            raise NFSError(nfsstat_of(e))
        finally:
            os.close(fd)
        self._dircache[key] = (version, result)
        if len(self._dircache) > self._dircache_size:
            self._dircache.popitem(last=False)
        return result

    @staticmethod
    def listing_start(cookies: list, cookie: int) -> int:
        """Index of the first entry after cookie (cookie 0, 1, 2: the start)."""
        if cookie <= 2:
            return 0
        return bisect_right(cookies, cookie)
