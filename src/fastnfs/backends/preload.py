"""Ownership as fakeroot or pseudo record it, asked through libc.

Under ``fakeroot --`` (ptxdist's default nfsroot) or ``pseudo`` (Yocto's runqemu)
the files on disk belong to the build user; the owners, modes and device numbers
a board must see live in the preload's records (faked's memory, pseudo's
database), and only libc calls reach them.  This backend keeps the host storage
of ``PlainBackend`` (found by inode with raw statx, as elsewhere) and takes each
object's owner, group, mode and device number from ``os.lstat`` (libc, seen by
the preload).  What a board changes goes through libc too, so the preload
records it as if done locally: chown and chmod, mknod and mkfifo of any
device (an empty file on disk), files, directories and symlinks created with
the caller's ids.  The process has no privilege, so the server checks
permissions itself against the recorded owners, with the rules of virtfs
(``VirtfsBackend``).  The fast lane, which makes raw system calls, never
serves these exports.
"""

from __future__ import annotations

import os
import stat as S

from ..fs import NFSError, basename, dirname
from ..nfs3 import const as C
from ..virtfs.overlay import VStat
from ..virtfs.store import Meta
from .plain import PlainBackend, makedev
from ..virtfs.style import HOST
from .virtfs import VirtfsBackend


class PreloadBackend(VirtfsBackend):
    """Host storage with ownership from (and changes to) fakeroot's or pseudo's records."""

    lane = False        # the fast lane's raw statx would show the build user's owners
    symlink_style = HOST  # a symlink is a real one, as the preload or pseudo made it
    hidden = frozenset()

    def __init__(self, path, *, kind: str = "fakeroot", fhcache_size: int = 262144,
                 dircache_size: int = 64):
        PlainBackend.__init__(self, path, fhcache_size=fhcache_size,
                              dircache_size=dircache_size, switch_creds=False)
        self.kind = kind

    def view(self, path: bytes, st):
        """st (raw statx) with the owner, group, mode and rdev libc reports."""
        try:
            if path == b".":
                ls = os.stat(self.root_fd)
            else:
                ls = os.stat(path, dir_fd=self.root_fd, follow_symlinks=False)
        except OSError:
            return st
        if ls.st_ino != st.st_ino:
            return st       # replaced in between: the caller's lookup will notice
        return VStat(st, Meta(ls.st_uid, ls.st_gid, ls.st_mode, ls.st_rdev))

    # -- changes go through libc, where the preload records them -------------------
    def _apply(self, dfd: int, name: bytes, meta) -> None:
        is_link = S.S_ISLNK(meta.mode)
        os.chown(name, meta.uid, meta.gid, dir_fd=dfd, follow_symlinks=False)
        if not is_link:     # chmod after chown: chown clears set-id bits
            os.chmod(name, meta.mode & 0o7777, dir_fd=dfd)

    def _write_meta(self, obj, meta) -> None:
        if obj.path == b".":
            os.chown(self.root_fd, meta.uid, meta.gid)
            os.chmod(self.root_fd, meta.mode & 0o7777)
            return
        from .hostpaths import DIR_FLAGS
        pfd = os.open(dirname(obj.path), DIR_FLAGS, dir_fd=self.root_fd)
        try:
            name = basename(obj.path)
            if os.stat(name, dir_fd=pfd, follow_symlinks=False).st_ino != obj.ino:
                raise NFSError(C.NFS3ERR_STALE)
            self._apply(pfd, name, meta)
        finally:
            os.close(pfd)

    def _record_new(self, op, meta) -> None:
        self._apply(op.dfd, op.name, meta)

    def mknod(self, cred, op, fmt: int, attrs, major: int, minor: int):
        from ..virtfs.ops import new_meta
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        dev = makedev(major, minor)
        # recorded by the preload as a device; on disk an empty file (or a real fifo)
        os.mknod(op.name, fmt | 0o600, dev, dir_fd=op.dfd)
        attrs.mode = None
        return self._created_meta(cred, op, attrs,
                                  new_meta(cred, op.before, fmt, mode,
                                           dev if fmt in (S.S_IFCHR, S.S_IFBLK) else -1))

    def _read_link(self, obj) -> bytes:
        return os.readlink(obj.path, dir_fd=self.root_fd)

    # the preload follows unlink, rename and link itself; nothing kept beside the entry
    def _removed(self, op) -> None:
        pass

    def _renamed(self, src, dst) -> None:
        pass

    def _linked(self, obj, op) -> None:
        pass

    def _only_bookkeeping(self, op) -> bool:
        return False

