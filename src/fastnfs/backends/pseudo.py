"""Ownership from pseudo's database, read directly (``fastnfs serve --pseudo STATEDIR``).

Yocto builds a rootfs under pseudo: on disk every file belongs to the build
user and devices are empty files; owners, the whole st_mode and device numbers
are rows of ``STATEDIR/files.db`` (``fastnfs.pseudodb`` reads it without ever
locking it).  This backend serves host storage (``PlainBackend``'s) with each
object's attributes overlaid from its row, found as pseudo finds it (by
absolute path, else by device and inode); an object without a row keeps its
host attributes, as under pseudo.

pseudo's database is only ever written by pseudo: what clients change (chown,
chmod, mknod, new entries owned by the caller, rename, remove, link) is done
by a helper process under pseudo's preload (``pseudowriter``), so pseudo
records it as for a local program and saves it when fastnfs stops; meanwhile
this process serves it from memory, by device and inode.  A pseudo server
still alive for STATEDIR at start is asked to save and stop first.  Without
a ``pseudo`` to start, changes stay in memory only (and are lost at stop).
Permissions are checked by the server against these owners, with virtfs's rules.
"""

from __future__ import annotations

import logging
import os
import stat as S

from ..fs import join
from ..fsstat import lstatat
from ..pseudodb import PseudoDB
from ..virtfs.ops import new_meta
from ..virtfs.overlay import VStat
from ..virtfs.store import Meta
from .plain import PlainBackend, makedev
from .pseudowriter import PseudoWriter, pseudo_prefix, stop_server
from ..virtfs.style import HOST
from .virtfs import VirtfsBackend


log = logging.getLogger("fastnfs.pseudo")


class PseudoBackend(VirtfsBackend):
    """Host storage seen through pseudo's files.db, changes recorded by pseudo."""

    lane = False            # the fast lane knows nothing of pseudo's rows
    symlink_style = HOST  # a symlink is a real one, as the preload or pseudo made it
    hidden = frozenset()

    def __init__(self, path, statedir: str, *, fhcache_size: int = 262144,
                 dircache_size: int = 64):
        PlainBackend.__init__(self, path, fhcache_size=fhcache_size,
                              dircache_size=dircache_size, switch_creds=False)
        prefix = pseudo_prefix()
        stop_server(os.path.abspath(statedir), prefix)   # files.db then holds its latest
        self.db = PseudoDB(statedir)
        self.changes: dict[tuple, Meta] = {}   # (dev, ino) -> what a client set
        self.writer = None if prefix is None else PseudoWriter(self.path, self.db.statedir,
                                                               prefix)
        if self.writer is None:
            log.warning("no pseudo on PATH: what clients change under %s is kept in memory "
                        "only and lost when fastnfs stops", os.fsdecode(self.path))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()       # pseudo saves what it recorded
        PlainBackend.close(self)

    def view(self, path: bytes, st):
        meta = self.changes.get((st.st_dev, st.st_ino))
        if meta is None:
            abspath = self.path if path == b"." else self.path + b"/" + path
            row = self.db.row(abspath, st.st_dev, st.st_ino, st.st_mode)
            if row is None:
                return st
            meta = Meta(row.uid, row.gid, row.mode, row.rdev)
        return VStat(st, meta)

    # -- what clients change: pseudo records it, this process serves it ------------
    def _tell(self, path: bytes, meta) -> None:
        """pseudo records the owner, group and mode (chmod after chown: chown
        clears set-id bits; a symlink's mode means nothing)."""
        if self.writer is None:
            return
        self.writer.call("chown", path, meta.uid, meta.gid)
        if not S.S_ISLNK(meta.mode):
            self.writer.call("chmod", path, meta.mode & 0o7777)

    def _write_meta(self, obj, meta) -> None:
        self._tell(obj.path, meta)
        self.changes[(obj.st.st_dev, obj.ino)] = meta

    def _record_new(self, op, meta) -> None:
        self._tell(join(op.d.path, op.name), meta)
        st = lstatat(op.dfd, op.name)
        self.changes[(st.st_dev, st.st_ino)] = meta

    def mknod(self, cred, op, fmt: int, attrs, major: int, minor: int):
        if self.writer is None:
            return VirtfsBackend.mknod(self, cred, op, fmt, attrs, major, minor)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        dev = makedev(major, minor)
        # pseudo records a device (on disk: an empty file) or makes the fifo/socket
        self.writer.call("mknod", join(op.d.path, op.name), fmt | 0o600, dev)
        attrs.mode = None
        return self._created_meta(cred, op, attrs,
                                  new_meta(cred, op.before, fmt, mode,
                                           dev if fmt in (S.S_IFCHR, S.S_IFBLK) else -1))

    # names change through pseudo, which moves or drops its rows with them
    def _unlink_disk(self, op) -> None:
        if self.writer is None:
            return PlainBackend._unlink_disk(self, op)
        self.writer.call("unlink", join(op.d.path, op.name))

    def _rmdir_disk(self, op) -> None:
        if self.writer is None:
            return PlainBackend._rmdir_disk(self, op)
        self.writer.call("rmdir", join(op.d.path, op.name))

    def _rename_disk(self, src, dst) -> None:
        if self.writer is None:
            return PlainBackend._rename_disk(self, src, dst)
        self.writer.call("rename", join(src.d.path, src.name),
                         join(dst.d.path, dst.name))

    def _link_disk(self, obj, op) -> None:
        if self.writer is None:
            return PlainBackend._link_disk(self, obj, op)
        self.writer.call("link", obj.path, join(op.d.path, op.name))

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
