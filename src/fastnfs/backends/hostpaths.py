"""Finding host-filesystem objects again: inode -> path cache, search, verified opens.

A handle names an inode (``handles``).  The bounded inode -> path cache
answers most resolutions in O(1); a miss scans the nearest known ancestor,
then the whole export.  Every path from the cache is verified by comparing
the inode and device it reaches, so a stale or forged entry can cost a
search but never reach the wrong object.  Objects are only ever found by
single-component, no-follow steps from the export root, so a handle never
leads outside the export.

``HostPaths`` is the part of the host filesystem backends that holds the
export root and finds objects; ``view(path, st)`` (the backend's) turns what
the disk says into what clients see.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as S
import threading
import time
from collections import OrderedDict

from ..fhcache import FHCache
from ..fs import NFSError, Obj, check_name, dirname, join, nfsstat_of
from ..fsstat import fstat, lookup_at, lstatat, names_object
from ..nfs3 import const as C
from ..proc import libc

O_PATH = getattr(os, "O_PATH", 0o10000000)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPATH_FLAGS = O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


# fchmodat(2) as a raw system call: the temporary grant of open_granting is no
# change of ownership or mode that fakeroot's or pseudo's preload should record
_SYS_FCHMODAT = {"x86_64": 268, "aarch64": 53}.get(os.uname().machine, 268)
_AT_FDCWD = -100
_grants = threading.Lock()


def _chmod_raw(path: bytes, mode: int) -> None:
    if libc().syscall(_SYS_FCHMODAT, _AT_FDCWD, path, mode) != 0:
        import ctypes
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _kernel_fsuid() -> int:
    """The fsuid the kernel checks (geteuid() lies under fakeroot and pseudo)."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Uid:"):
                return int(line.split()[4])
    return os.geteuid()


def open_granting(paths, obj, flags: int) -> int:
    """Open a regular file that the server itself owns on disk but whose mode
    denies it (chmod 000 by its owner while a client had it open): the owner's
    read or write bit is granted on the pinned inode for the open, then the
    mode is put back unless someone changed it meanwhile.  Grants are taken
    one at a time (a lock in this process, flock of the export root across
    worker processes), so no grant is ever taken for the original mode.
    Anything else: the PermissionError of a plain open."""
    acc = flags & os.O_ACCMODE
    need = (S.S_IRUSR if acc != os.O_WRONLY else 0) | (S.S_IWUSR if acc != os.O_RDONLY else 0)
    pin = paths.open_obj(obj, O_PATH)
    try:
        st = fstat(pin)
        if not S.S_ISREG(st.st_mode) or st.st_uid != _kernel_fsuid():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        via = b"/proc/self/fd/%d" % pin
        with _grants:
            lock = os.open(b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                           dir_fd=paths.root_fd)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                mode = S.S_IMODE(fstat(pin).st_mode)
                _chmod_raw(via, mode | need)
                try:
                    return os.open(via, (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
                finally:
                    if S.S_IMODE(fstat(pin).st_mode) == mode | need:
                        _chmod_raw(via, mode)
            finally:
                os.close(lock)      # and the flock with it
    finally:
        os.close(pin)


class HostPaths:
    """An exported directory tree of the host and the objects in it."""

    NEGATIVE_TTL = 5.0
    hidden = frozenset()

    def __init__(self, path, *, fhcache_size: int = 262144):
        if isinstance(path, str):
            path = os.fsencode(path)
        self.path = os.path.realpath(path)
        self.root_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = fstat(self.root_fd)
        self.root_ino = st.st_ino
        self.dev = st.st_dev
        self.fsid = st.st_dev
        self.cache = FHCache(fhcache_size)
        self.cache.put(self.root_ino, b".")
        self._missing: OrderedDict = OrderedDict()

    def close(self) -> None:
        os.close(self.root_fd)

    def view(self, path: bytes, st):
        """Attributes as clients see them (a backend may overlay them)."""
        return st

    def root(self) -> Obj:
        st = fstat(self.root_fd)
        return Obj(self.root_ino, b".", self.view(b".", st), ())

    # -- resolution ------------------------------------------------------------
    def find_cached(self, ino: int, dev: int, gen: int, anc: tuple):
        """The object a handle names if the cache places it, else None."""
        path = self.cache.get(ino)
        if path is not None:
            st = self._lstat(path)
            if st is not None and names_object(st, ino, dev, gen):
                return Obj(ino, path, self.view(path, st), anc)
        return None

    def find_any(self, ino: int, dev: int, gen: int, anc: tuple) -> Obj:
        """The object a handle names, or NFSError(STALE)."""
        obj = self.find_cached(ino, dev, gen, anc)
        if obj is not None:
            return obj
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
            if not names_object(st, ino, dev, gen):
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
            fd = os.open(start, DIR_FLAGS, dir_fd=self.root_fd)
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
                            if names_object(st, ino, dev, gen):
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
                                sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
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

    # -- directories and names ---------------------------------------------------
    def open_dir(self, obj: Obj) -> int:
        """An O_PATH fd on the verified directory (close with close_fd)."""
        if obj.ino == self.root_ino:
            return self.root_fd
        try:
            fd = os.open(obj.path, OPATH_FLAGS | os.O_DIRECTORY, dir_fd=self.root_fd)
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

    def refresh(self, obj: Obj):
        """Re-read obj's attributes after a change; returns obj.st."""
        st = self._lstat(obj.path)
        if st is not None and st.st_ino == obj.ino:
            obj.st = self.view(obj.path, st)
        return obj.st

    def walk(self, dirobj: Obj, name: bytes) -> Obj:
        """One component; "." and ".." stay inside the export."""
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
        try:   # the directory verified by inode, then the name (as the fast lane does)
            st = lookup_at(self.root_fd, dirobj.path, dirobj.ino, name)
        except OSError as e:
            raise NFSError(nfsstat_of(e))
        path = join(dirobj.path, name)
        self.cache.put(st.st_ino, path)
        return Obj(st.st_ino, path, self.view(path, st), dirobj.child_anc())

    def child_obj(self, dirobj: Obj, name: bytes, dfd: int):
        """Stat a just-created child through the directory fd and cache it."""
        try:
            st = lstatat(dfd, name)
        except OSError:
            return None
        path = join(dirobj.path, name)
        self.cache.put(st.st_ino, path)
        return Obj(st.st_ino, path, self.view(path, st), dirobj.child_anc())

    def parent_ino(self, d: Obj) -> int:
        """The fileid of d's parent (the root's is its own)."""
        if d.ino == self.root_ino:
            return d.ino
        st = self._lstat(dirname(d.path))
        return st.st_ino if st is not None else d.ino
