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

The rules (where the metadata lives, the reader with its cache, the overlay
with the device-as-file rule) are in C in ``virtfs._meta``, which the fast
lane cimports; the ``py_*`` functions here are their pure-Python twins
(tests/test_virtfs_twins.py holds them equal).  A file with a flaw is left
by both paths to ``Virtfs.meta``, which reads it leniently and warns once.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as S

from .._accel import load
from ..fsstat import fstat, lstatat
from .meta import MetaCache, parse_meta
from .store import HIDDEN, MAX_META_SIZE, META_DIR, META_ROOT, NO_META, Meta

log = logging.getLogger("fastnfs.virtfs")

_SPECIAL = frozenset({S.S_IFCHR, S.S_IFBLK, S.S_IFIFO, S.S_IFSOCK})
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def py_overlay_fields(st_mode: int, st_uid: int, st_gid: int, st_size: int, st_rdev: int,
                      meta: Meta) -> tuple:
    """(mode, uid, gid, size, rdev) as clients see them: a key the metadata
    gives replaces the disk's owner or group; its mode's permission bits
    replace the disk's, and its type too where the file stands for another
    (the device-as-file rule: an empty regular file whose metadata says
    device, fifo or socket, or a regular file whose metadata says symlink,
    QEMU's mapped-file way)."""
    uid = st_uid if meta.uid < 0 else meta.uid
    gid = st_gid if meta.gid < 0 else meta.gid
    mode = st_mode
    if meta.mode >= 0:
        vfmt = S.S_IFMT(meta.mode)
        if S.S_ISREG(st_mode) and (vfmt == S.S_IFLNK or (vfmt in _SPECIAL and st_size == 0)):
            mode = meta.mode
            if vfmt in (S.S_IFCHR, S.S_IFBLK):
                st_rdev = 0 if meta.rdev < 0 else meta.rdev
                st_size = 0
        else:
            mode = S.S_IFMT(st_mode) | (meta.mode & 0o7777)
    return mode, uid, gid, st_size, st_rdev


def py_meta_path(path: bytes) -> bytes:
    """Where the metadata of the object at path (relative to the root) lives."""
    if path == b".":
        return META_ROOT
    i = path.rfind(b"/")
    if i < 0:
        return META_DIR + b"/" + path
    return path[:i] + b"/" + META_DIR + path[i:]


def py_meta_at(cache, dirfd: int, mp: bytes, absent):
    """The metadata in the file mp beneath dirfd: absent when there is no such
    file; from the cache when its stamp still holds; else read, parsed and
    cached when the file is clean; None for a file with any flaw (not a
    regular file, too big, a symlink on the way, a problem in its lines),
    which Virtfs.meta reads and warns about.  absent is store.NO_META."""
    try:
        st = lstatat(dirfd, mp)
    except OSError:
        return absent
    key = (st.st_dev, st.st_ino)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    m = cache.get(key, stamp)
    if m is not None:
        return m
    if not S.S_ISREG(st.st_mode) or st.st_size > MAX_META_SIZE:
        return None
    try:
        fd = _open_beneath(dirfd, mp)
    except OSError:
        return None
    try:
        if fstat(fd).st_ino != st.st_ino:
            return None
        data = os.read(fd, MAX_META_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_META_SIZE:
        return None
    uid, gid, mode, rdev, problems = parse_meta(data)
    if problems:
        return None
    m = Meta(uid, gid, mode, rdev)
    if m == absent:
        m = absent
    cache.put(key, stamp, m)
    return m


def _open_beneath(dirfd: int, path: bytes) -> int:
    """Open path beneath dirfd with no symlink anywhere on the way (openat2's
    RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, one component at a time)."""
    *dirs, last = path.split(b"/")
    fd = dirfd
    try:
        for c in dirs:
            if c in (b"", b".", b".."):
                raise OSError(errno.EXDEV, "not beneath")
            nfd = os.open(c, _DIR_PATH, dir_fd=fd)
            if fd != dirfd:
                os.close(fd)
            fd = nfd
        return os.open(last, _READ_FLAGS, dir_fd=fd)
    finally:
        if fd != dirfd:
            os.close(fd)


overlay_fields, meta_path, meta_at = py_overlay_fields, py_meta_path, py_meta_at
_cx = load("virtfs._meta")
if _cx is not None and MetaCache is _cx.MetaCache:  # the Cython twins, which the lane cimports
    overlay_fields, meta_path, meta_at = _cx.overlay_fields, _cx.meta_path, _cx.meta_at_py


class VStat:
    """A stat result with the virtual owner, mode, type and device number."""

    __slots__ = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                 "st_blocks", "st_rdev", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                 "btime_ns", "gen", "real_mode")

    def __init__(self, st, meta: Meta):
        self.st_ino = st.st_ino
        self.st_dev = st.st_dev
        self.st_nlink = st.st_nlink
        self.st_blocks = st.st_blocks
        self.st_atime_ns = st.st_atime_ns
        self.st_mtime_ns = st.st_mtime_ns
        self.st_ctime_ns = st.st_ctime_ns
        self.btime_ns = st.btime_ns
        self.gen = st.gen
        real = st.st_mode
        self.real_mode = real
        (self.st_mode, self.st_uid, self.st_gid, self.st_size,
         self.st_rdev) = overlay_fields(real, st.st_uid, st.st_gid, st.st_size, st.st_rdev, meta)

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
        m = meta_at(self.cache, self.root_fd, mp, NO_META)
        if m is None:
            m = self._read(mp)   # a flaw: read it the lenient way, and warn
        return None if m is NO_META else m

    def _read(self, mp: bytes) -> Meta:
        """Read, check and cache a metadata file meta_at found a flaw in (a
        symlink above the entry's directory is allowed here); the warning
        names the flaw.  NO_META for one that says nothing or cannot be used."""
        try:
            st = lstatat(self.root_fd, mp)
        except OSError:
            return NO_META
        key = (st.st_dev, st.st_ino)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        shown = os.fsdecode(mp)
        if not S.S_ISREG(st.st_mode):
            self._warn(key, stamp, "%s: not a regular file; ignored" % shown)
            self.cache.put(key, stamp, NO_META)
            return NO_META
        if st.st_size > MAX_META_SIZE:
            self._warn(key, stamp, "%s: %d bytes, over the %d-byte limit; ignored"
                       % (shown, st.st_size, MAX_META_SIZE))
            self.cache.put(key, stamp, NO_META)
            return NO_META
        try:
            fd = self._open_meta(mp)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                self._warn(key, stamp, "%s: reached through a symlink; ignored" % shown)
                self.cache.put(key, stamp, NO_META)
            else:
                self._warn(key, stamp, "%s: %s" % (shown, e.strerror))
            return NO_META
        try:
            if fstat(fd).st_ino != st.st_ino:
                return NO_META  # replaced between stat and open: read it next time
            data = os.read(fd, MAX_META_SIZE + 1)
        except OSError as e:
            self._warn(key, stamp, "%s: %s" % (shown, e.strerror))
            return NO_META
        finally:
            os.close(fd)
        uid, gid, mode, rdev, problems = parse_meta(data)
        if problems:
            lineno, what = problems[0]
            more = "" if len(problems) == 1 else " (and %d more problems)" % (len(problems) - 1)
            self._warn(key, stamp, "%s:%d: %s%s" % (shown, lineno, what, more))
        meta = Meta(uid, gid, mode, rdev)
        if meta == NO_META:
            meta = NO_META
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
