"""The virtfs view of an export: attributes as the metadata files say.

For an entry NAME of DIR the attributes come from DIR/.virtfs_metadata/NAME
(the export root's from ROOT/.virtfs_metadata_root); a key the file lacks
keeps the on-disk value.  An empty regular file whose metadata says character
or block device, fifo or socket is served as that type; a regular file whose
metadata says symlink (QEMU's mapped-file way) is served as a symlink whose
target is the file's content.

Reads cost one lstat of the metadata file on a cache hit: the cache is keyed
by the metadata file's inode and checked against its stamp (size, mtime,
ctime), so a file rewritten by anyone (a ptxdist rebuild) is read again.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as S

from ..fsstat import fstat, lstatat
from .meta import MetaCache, parse_meta
from .store import HIDDEN, MAX_META_SIZE, META_DIR, META_ROOT, Meta

log = logging.getLogger("fastnfs.virtfs")

_SPECIAL = frozenset({S.S_IFCHR, S.S_IFBLK, S.S_IFIFO, S.S_IFSOCK, S.S_IFLNK})
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NONE = Meta(-1, -1, -1, -1)


class VStat:
    """A stat result with the virtual owner, mode, type and device number."""

    __slots__ = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                 "st_blocks", "st_rdev", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                 "btime_ns", "gen", "real_mode")

    def __init__(self, st, meta: Meta):
        self.st_ino = st.st_ino
        self.st_dev = st.st_dev
        self.st_nlink = st.st_nlink
        self.st_size = st.st_size
        self.st_blocks = st.st_blocks
        self.st_atime_ns = st.st_atime_ns
        self.st_mtime_ns = st.st_mtime_ns
        self.st_ctime_ns = st.st_ctime_ns
        self.btime_ns = st.btime_ns
        self.gen = st.gen
        real = st.st_mode
        self.real_mode = real
        self.st_uid = st.st_uid if meta.uid < 0 else meta.uid
        self.st_gid = st.st_gid if meta.gid < 0 else meta.gid
        self.st_rdev = st.st_rdev
        mode = real
        if meta.mode >= 0:
            vfmt = S.S_IFMT(meta.mode)
            rfmt = S.S_IFMT(real)
            if rfmt == S.S_IFREG and vfmt in _SPECIAL and (st.st_size == 0 or vfmt == S.S_IFLNK):
                mode = meta.mode          # a device, fifo, socket or symlink stored as a file
                if vfmt in (S.S_IFCHR, S.S_IFBLK):
                    self.st_rdev = 0 if meta.rdev < 0 else meta.rdev
                    self.st_size = 0
            else:
                mode = rfmt | (meta.mode & 0o7777)
        self.st_mode = mode

    @property
    def stored_as_file(self) -> bool:
        """True for a device, fifo, socket or symlink kept as a regular file."""
        return S.S_ISREG(self.real_mode) and not S.S_ISREG(self.st_mode)

    @property
    def st_mtime(self):
        return self.st_mtime_ns / 1e9

    @property
    def st_atime(self):
        return self.st_atime_ns / 1e9


def meta_path(path: bytes) -> bytes:
    """Where the metadata of the object at path (relative to the root) lives."""
    if path == b".":
        return META_ROOT
    i = path.rfind(b"/")
    if i < 0:
        return META_DIR + b"/" + path
    return path[:i] + b"/" + META_DIR + path[i:]


class Virtfs:
    """Metadata reading for one export (writes go through virtfs.store)."""

    hidden = HIDDEN

    def __init__(self, root_fd: int, cache_size: int = 65536):
        self.root_fd = root_fd
        self.cache = MetaCache(cache_size)
        self._warned: dict = {}

    shared_dir: str | None = None  # where worker processes agree who warned

    def _warn(self, key, stamp, msg: str) -> None:
        if self._warned.get(key) == stamp:
            return
        if len(self._warned) > 65536:
            self._warned.clear()
        self._warned[key] = stamp
        if self.shared_dir is not None and not self._first_to_warn(key, stamp):
            return  # another worker already reported this version of the file
        log.warning("malformed metadata %s", msg)

    def _first_to_warn(self, key, stamp) -> bool:
        """One warning per file version across processes: the first O_EXCL create wins."""
        name = "%x-%x-%x-%x-%x" % (key + stamp)
        try:
            os.makedirs(self.shared_dir, mode=0o700, exist_ok=True)  # under the stats dir
            os.close(os.open(os.path.join(self.shared_dir, name),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            return False
        except OSError:
            return True
        return True

    def meta(self, path: bytes) -> Meta | None:
        """The metadata of the object at path, or None when it has none."""
        mp = meta_path(path)
        try:
            st = lstatat(self.root_fd, mp)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self.cache.get(key, stamp)
        if hit is not None:
            return hit if hit is not _NONE else None
        shown = os.fsdecode(mp)
        if not S.S_ISREG(st.st_mode):
            self._warn(key, stamp, "%s: not a regular file; ignored" % shown)
            self.cache.put(key, stamp, _NONE)
            return None
        if st.st_size > MAX_META_SIZE:
            self._warn(key, stamp, "%s: %d bytes, over the %d-byte limit; ignored"
                       % (shown, st.st_size, MAX_META_SIZE))
            self.cache.put(key, stamp, _NONE)
            return None
        try:
            fd = self._open_meta(mp)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                self._warn(key, stamp, "%s: reached through a symlink; ignored" % shown)
                self.cache.put(key, stamp, _NONE)
            else:
                self._warn(key, stamp, "%s: %s" % (shown, e.strerror))
            return None
        try:
            if fstat(fd).st_ino != st.st_ino:
                return None  # replaced between stat and open: read it next time
            data = os.read(fd, MAX_META_SIZE + 1)
        except OSError as e:
            self._warn(key, stamp, "%s: %s" % (shown, e.strerror))
            return None
        finally:
            os.close(fd)
        uid, gid, mode, rdev, problems = parse_meta(data)
        if problems:
            lineno, what = problems[0]
            more = "" if len(problems) == 1 else " (and %d more problems)" % (len(problems) - 1)
            self._warn(key, stamp, "%s:%d: %s%s" % (shown, lineno, what, more))
        meta = Meta(uid, gid, mode, rdev)
        if meta == _NONE:
            self.cache.put(key, stamp, _NONE)
            return None
        self.cache.put(key, stamp, meta)
        return meta

    def _open_meta(self, mp: bytes) -> int:
        """Open a metadata file with no symlink in its last two components.

        A .virtfs_metadata that is a symlink would otherwise lend attributes
        from outside the export (the directory above it is the entry's own
        directory, already reached by the verified path of the object).
        """
        i = mp.rfind(b"/")
        if i < 0:  # the root's own file
            return os.open(mp, _READ_FLAGS, dir_fd=self.root_fd)
        j = mp.rfind(b"/", 0, i)
        parent = mp[:j] if j >= 0 else b"."
        pfd = os.open(parent, _DIR_PATH, dir_fd=self.root_fd)
        try:
            mfd = os.open(META_DIR, _DIR_PATH, dir_fd=pfd)
        finally:
            os.close(pfd)
        try:
            return os.open(mp[i + 1:], _READ_FLAGS, dir_fd=mfd)
        finally:
            os.close(mfd)

    def view(self, path: bytes, st):
        """st as clients see it: overlaid with the metadata when there is some."""
        meta = self.meta(path)
        if meta is None:
            return st
        return VStat(st, meta)
