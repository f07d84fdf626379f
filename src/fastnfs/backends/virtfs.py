"""virtfs: plain host storage with ownership from mapped-file metadata.

Owners, groups, modes and device numbers live in ``.virtfs_metadata`` files
(``fastnfs.virtfs``: the reader and its cache in ``virtfs.overlay``, the
atomic writes in ``virtfs.store``); the files on disk keep modes that let
the unprivileged server read and write them.  Because the kernel cannot
know the virtual owners, this backend checks permissions itself, with a
local filesystem's rules (``fastnfs.perm``): mode bits against the virtual
ids, the sticky-directory rule, chown only by root, chmod only by the owner.
A device, fifo or socket is an empty regular file that the metadata calls
one (the device-as-file rule, ``virtfs.overlay.VStat``); a symlink may be a
file holding its target (QEMU's way).  New symlinks are written in the style
the export already uses (``virtfs.style``: decided once, at start), so that a
tree QEMU wrote stays readable by QEMU's guests.  Storage itself is
``PlainBackend``'s.
"""

from __future__ import annotations

import logging
import os
import stat as S

from .. import perm
from ..fs import NFSError, join
from ..nfs3 import const as C
from ..nfs3.types import Sattr3
from ..virtfs.ops import changed_meta, disk_mode, new_meta, open_parent, write_obj_meta
from ..virtfs.overlay import Virtfs
from ..virtfs.style import QEMU, symlink_style
from ..virtfs.store import (link_meta, make_rdev, meta_dir_only, remove_meta, rename_meta,
                            rmdir_meta_dir, write_meta)
from . import ServerChecks
from .hostpaths import DIR_FLAGS
from .plain import PlainBackend, _sattr

log = logging.getLogger("fastnfs.virtfs")


class VirtfsBackend(PlainBackend):
    """PlainBackend storage seen and guarded through virtfs metadata."""

    hidden = Virtfs.hidden
    overlays = True

    def __init__(self, path, *, fhcache_size: int = 262144, dircache_size: int = 64,
                 metacache_size: int = 65536, symlinks: str = "auto"):
        PlainBackend.__init__(self, path, fhcache_size=fhcache_size,
                              dircache_size=dircache_size, switch_creds=False)
        self.overlay = Virtfs(self.root_fd, metacache_size)
        self.view = self.overlay.view
        style, mixed, why = symlink_style(self.root_fd, symlinks)
        self.symlink_style = style
        shown = os.fsdecode(path)
        if mixed:
            log.warning("%s mixes QEMU-style and real symlinks (%s); new symlinks are "
                        "written %s-style (--virtfs-symlinks sets it; 'fastnfs virtfs check' "
                        "lists the tree)", shown, why, style)
        else:
            log.info("%s: new symlinks are written %s-style: %s", shown, style, why)

    # -- permission rules: the server's own, on the virtual attributes ---------------
    check, check_io = ServerChecks.check, ServerChecks.check_io

    def _victim(self, cred, op, name: bytes):
        st = PlainBackend._victim(self, cred, op, name)
        self.check_delete(cred, op.d.st, self.view(join(op.d.path, name), st))
        return st

    def _check_move(self, cred, src, dst, st) -> None:
        if S.S_ISDIR(st.st_mode) and src.d.ino != dst.d.ino:
            # rename(2): moving a directory rewrites its "..", which needs write access
            self.check(cred, self.view(join(src.d.path, src.name), st), perm.W)

    def _check_replace(self, cred, dst) -> None:
        self._victim(cred, dst, dst.name)

    # -- attributes ------------------------------------------------------------------
    def setattr(self, cred, obj, a: Sattr3) -> None:
        """Owner, group and mode go to the metadata, size and times to the file."""
        st = obj.st
        if a.size is not None:
            self.check_io(cred, st, perm.W)
        if a.atime is not None or a.mtime is not None:
            explicit = (a.atime not in (None, Sattr3.SERVER_TIME)
                        or a.mtime not in (None, Sattr3.SERVER_TIME))
            if cred.uid not in (0, st.st_uid):
                if explicit:
                    raise NFSError(C.NFS3ERR_PERM)   # utimes(2): only owner or root set a time
                self.check(cred, st, perm.W)
        if a.mode is not None or a.uid is not None or a.gid is not None:
            self._write_meta(obj, changed_meta(cred, st, a.uid, a.gid, a.mode))
        disk = _sattr(size=a.size, atime=a.atime, mtime=a.mtime)
        if getattr(st, "stored_as_file", False) and disk.size is not None:
            raise NFSError(C.NFS3ERR_INVAL)
        self._set_disk(obj, disk, S.S_IFMT(getattr(st, "real_mode", st.st_mode)), cred)

    def _read_link(self, obj) -> bytes:
        if getattr(obj.st, "stored_as_file", False):
            # QEMU mapped-file keeps a symlink as a file holding the target
            fd = self.open_obj(obj, os.O_RDONLY | os.O_NONBLOCK)
            try:
                return os.read(fd, C.NFS3_MAXPATHLEN)
            finally:
                os.close(fd)
        return os.readlink(obj.path, dir_fd=self.root_fd)

    # -- where the ownership is kept: mapped-file metadata (other sources override) --
    def _write_meta(self, obj, meta) -> None:
        """Store the owner, group, mode and device number of an existing object."""
        write_obj_meta(self, obj, meta)

    def _record_new(self, op, meta) -> None:
        """Store them for the entry just made at op.name."""
        write_meta(op.dfd, op.name, meta)

    # -- new entries: the caller's ids and the requested mode go to the metadata --
    def _created_meta(self, cred, op, attrs, vmeta):
        if attrs is not None and cred.uid == 0 and (
                attrs.uid is not None or attrs.gid is not None):
            vmeta = vmeta._replace(uid=vmeta.uid if attrs.uid is None else attrs.uid,
                                   gid=vmeta.gid if attrs.gid is None else attrs.gid)
        try:
            self._record_new(op, vmeta)
        except BaseException:
            self._undo_create(op)  # never leave an entry without the owner the client asked for
            raise
        if attrs is not None:
            attrs = _sattr(size=attrs.size, atime=attrs.atime, mtime=attrs.mtime)
        return self._created(cred, op, attrs)

    def create(self, cred, op, how: int, attrs, verf):
        if how == C.EXCLUSIVE:
            return PlainBackend.create(self, cred, op, how, attrs, verf)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        if self._open_new(op, how, disk_mode(S.S_IFREG, mode), mode):
            return self._created_meta(cred, op, attrs,
                                      new_meta(cred, op.before, S.S_IFREG, mode))
        return self._created(cred, op, attrs)

    def _created_exclusive(self, cred, op):
        return self._created_meta(cred, op, None, new_meta(cred, op.before, S.S_IFREG, 0o600))

    def mkdir(self, cred, op, attrs):
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        os.mkdir(op.name, disk_mode(S.S_IFDIR, mode), dir_fd=op.dfd)
        return self._created_meta(cred, op, attrs, new_meta(cred, op.before, S.S_IFDIR, mode))

    def symlink(self, cred, op, target: bytes, attrs):
        if not target or b"\0" in target:
            raise NFSError(C.NFS3ERR_INVAL)
        if len(target) > C.NFS3_MAXPATHLEN:
            raise NFSError(C.NFS3ERR_NAMETOOLONG)
        if self.symlink_style == QEMU:
            self._file_symlink(op, target)
        else:
            os.symlink(target, op.name, dir_fd=op.dfd)
        attrs.mode = None
        return self._created_meta(cred, op, attrs, new_meta(cred, op.before, S.S_IFLNK, 0o777))

    @staticmethod
    def _file_symlink(op, target: bytes) -> None:
        """QEMU mapped-file's symlink: a regular file (0600 on disk) holding the target."""
        fd = os.open(op.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=op.dfd)
        try:
            view = memoryview(target)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            try:
                os.unlink(op.name, dir_fd=op.dfd)
            except OSError:
                pass
            raise
        os.close(fd)

    def mknod(self, cred, op, fmt: int, attrs, major: int, minor: int):
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        # no privilege needed: an empty regular file that the metadata calls a device
        fd = os.open(op.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=op.dfd)
        os.close(fd)
        vmeta = new_meta(cred, op.before, fmt, mode, make_rdev(major, minor))
        attrs.mode = None
        return self._created_meta(cred, op, attrs, vmeta)

    # -- removals, renames, links: the metadata follows the entry ------------------
    def _removed(self, op) -> None:
        remove_meta(op.dfd, op.name)

    def _only_bookkeeping(self, op) -> bool:
        """A directory holding only its own .virtfs_metadata is empty."""
        fd = os.open(op.name, DIR_FLAGS, dir_fd=op.dfd)
        try:
            only_meta = meta_dir_only(fd)
        finally:
            os.close(fd)
        return only_meta and rmdir_meta_dir(op.dfd, op.name)

    def _renamed(self, src, dst) -> None:
        rename_meta(src.dfd, src.name, dst.dfd, dst.name)

    def _linked(self, obj, op) -> None:
        if obj.path != b".":
            pfd, sname = open_parent(self, obj)
            try:
                link_meta(pfd, sname, op.dfd, op.name)
            finally:
                os.close(pfd)
