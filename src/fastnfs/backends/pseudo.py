"""Ownership from pseudo's database, read directly (``fastnfs serve --pseudo STATEDIR``).

Yocto builds a rootfs under pseudo: on disk every file belongs to the build
user and devices are empty files; owners, the whole st_mode and device numbers
are rows of ``STATEDIR/files.db`` (``fastnfs.pseudodb`` reads it without ever
locking it).  This backend serves host storage (``PlainBackend``'s) with each
object's attributes overlaid from its row, found as pseudo finds it (by
absolute path, else by device and inode); an object without a row keeps its
host attributes, as under pseudo.

pseudo's database is never written: what clients change (chown, chmod, mknod,
new files owned by the caller) is kept in this process's memory, by device and
inode, until fastnfs stops; file contents go to disk as usual.  Permissions
are checked by the server against these owners, with virtfs's rules.
"""

from __future__ import annotations

import os
import stat as S

from ..fs import join
from ..fsstat import lstatat
from ..pseudodb import PseudoDB
from ..virtfs.overlay import VStat
from ..virtfs.store import Meta
from .plain import PlainBackend
from ..virtfs.style import HOST
from .virtfs import VirtfsBackend


class PseudoBackend(VirtfsBackend):
    """Host storage seen through pseudo's files.db, changes kept in memory."""

    lane = False            # the fast lane knows nothing of pseudo's rows
    symlink_style = HOST  # a symlink is a real one, as the preload or pseudo made it
    hidden = frozenset()

    def __init__(self, path, statedir: str, *, fhcache_size: int = 262144,
                 dircache_size: int = 64):
        PlainBackend.__init__(self, path, fhcache_size=fhcache_size,
                              dircache_size=dircache_size, switch_creds=False)
        self.db = PseudoDB(statedir)
        self.changes: dict[tuple, Meta] = {}   # (dev, ino) -> what a client set

    def view(self, path: bytes, st):
        meta = self.changes.get((st.st_dev, st.st_ino))
        if meta is None:
            abspath = self.path if path == b"." else self.path + b"/" + path
            row = self.db.row(abspath, st.st_dev, st.st_ino, st.st_mode)
            if row is None:
                return st
            meta = Meta(row.uid, row.gid, row.mode, row.rdev)
        return VStat(st, meta)

    # -- what clients change stays here --------------------------------------------
    def _write_meta(self, obj, meta) -> None:
        self.changes[(obj.st.st_dev, obj.ino)] = meta

    def _record_new(self, op, meta) -> None:
        st = lstatat(op.dfd, op.name)
        self.changes[(st.st_dev, st.st_ino)] = meta

    def _read_link(self, obj) -> bytes:
        return os.readlink(obj.path, dir_fd=self.root_fd)

    def remove(self, cred, op) -> None:
        key = self._key(op.dfd, op.name)
        VirtfsBackend.remove(self, cred, op)
        self._gone(op.dfd, op.name, key)

    def rmdir(self, cred, op) -> None:
        key = self._key(op.dfd, op.name)
        VirtfsBackend.rmdir(self, cred, op)
        self._gone(op.dfd, op.name, key)

    def _key(self, dfd: int, name: bytes):
        try:
            st = lstatat(dfd, name)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_nlink, S.S_ISDIR(st.st_mode))

    def _gone(self, dfd: int, name: bytes, key) -> None:
        """The entry is gone: its inode may be reused, so what we kept for it goes,
        unless other names still hold it."""
        if key is None:
            return
        dev, ino, nlink, is_dir = key
        if is_dir or nlink <= 1:
            self.changes.pop((dev, ino), None)

    def rename(self, cred, src, dst) -> None:
        # the moved object keeps the attributes it has now (its row is found by path)
        try:
            st = lstatat(src.dfd, src.name)
        except OSError:
            st = None
        keep = None
        if st is not None and (st.st_dev, st.st_ino) not in self.changes:
            v = self.view(join(src.d.path, src.name), st)
            if v is not st:
                keep = ((st.st_dev, st.st_ino), Meta(v.st_uid, v.st_gid, v.st_mode, v.st_rdev))
        VirtfsBackend.rename(self, cred, src, dst)
        if keep is not None:
            self.changes.setdefault(*keep)

    def _removed(self, op) -> None:
        pass

    def _linked(self, obj, op) -> None:
        pass

    def _only_bookkeeping(self, op) -> bool:
        return False
