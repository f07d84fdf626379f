"""Read and write mapped-file ("virtfs") metadata next to the files it describes.

The write side the virtfs backend calls.  Every call is relative to a directory file
descriptor (an ``O_PATH`` one is fine), takes single path components only,
never follows a symlink (the metadata directory is opened with
``O_DIRECTORY|O_NOFOLLOW``, files with ``O_NOFOLLOW``, stat calls use
``AT_SYMLINK_NOFOLLOW``).

Layout: the metadata of entry NAME in directory DIR is ``DIR/.virtfs_metadata/NAME``;
the export root's own is ``ROOT/.virtfs_metadata_root``.  Both names are in
``HIDDEN``: the server must not list them, look them up or let clients create them.

Reading is not here: the server reads metadata through ``virtfs.overlay``
(the fast lane too, through the blocks of ``virtfs._meta``), with its own
stamp-checked cache.  The writers take an
optional ``cache=`` (a ``MetaCache`` keyed by ``(dir_key, name)``, where
``dir_key`` defaults to ``(st_dev, st_ino)`` of ``fstat(dir_fd)``) and keep
it current: what they write is remembered under the new file's stamp
``(st_ino, st_size, st_mtime_ns, st_ctime_ns)``, what they remove is dropped.

Writes are atomic: a temporary ``.NAME.tmpXXXXXXXX`` (O_EXCL, 0600) in the
metadata directory is written completely, optionally fsynced, then renamed
over the target; on any error it is removed and the error re-raised, so a
full disk never leaves an empty or truncated metadata file.  A consequence:
if two hard links share one metadata file (``link_meta``), a later
``write_meta`` on one name gives that name a new file and the other keeps the
old attributes.

Ordering for the namespace calls: call ``remove_meta``/``rename_meta``/
``link_meta`` after the operation on the entry itself succeeded.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

from .meta import KEYS, LIMITS, MetaCache

__all__ = ["META_DIR", "META_ROOT", "HIDDEN", "MAX_META_SIZE", "Meta", "NO_META", "write_meta", "write_root_meta", "remove_meta", "rename_meta",
           "link_meta", "meta_dir_only", "rmdir_meta_dir", "split_rdev", "make_rdev",
           "format_meta", "MetaCache"]

META_DIR = b".virtfs_metadata"
META_ROOT = b".virtfs_metadata_root"
HIDDEN = frozenset({META_DIR, META_ROOT})
MAX_META_SIZE = 4096

_O_CLOEXEC = os.O_CLOEXEC
_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
_FILE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC
_TMP_TRIES = 100
_NAME_KEEP = 240        # "." + 240 + ".tmp" + 8 hex = 253 <= NAME_MAX
_NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)


class Meta(NamedTuple):
    """Attributes from a metadata file; -1 for a key the file does not give."""
    uid: int
    gid: int
    mode: int
    rdev: int


#: what a metadata file that gives no key (or no file at all) says: nothing
NO_META = Meta(-1, -1, -1, -1)


# ------------------------------------------------------------------ helpers

def _check_name(name: bytes) -> None:
    if not isinstance(name, bytes):
        raise TypeError("name must be bytes, not %s" % type(name).__name__)
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise ValueError("not a single path component: %r" % (name,))
    if name in HIDDEN:
        raise ValueError("%r is reserved for virtfs metadata" % (name,))


def _stamp(st) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _dir_key(fd: int) -> tuple:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _shown(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) reports errors, never 0 for n > 0
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def _temp_name(name: bytes) -> bytes:
    return b"." + name[:_NAME_KEEP] + b".tmp" + os.urandom(4).hex().encode()


def _open_meta_dir(dir_fd: int):
    """O_PATH fd of DIR/.virtfs_metadata, or None if there is none (or it is unusable)."""
    try:
        return os.open(META_DIR, _DIR_PATH, dir_fd=dir_fd)
    except OSError:
        return None


def _fsync_dir(dir_fd: int) -> None:
    """fsync a directory given by any fd (an O_PATH one cannot be fsynced itself)."""
    fd = os.open(b".", os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ writing

def format_meta(meta) -> bytes:
    """The file contents for meta: its keys that are not -1, in the order uid, gid, mode, rdev."""
    if len(meta) != 4:
        raise ValueError("need (uid, gid, mode, rdev), got %r" % (meta,))
    out = []
    for key, limit, v in zip(KEYS, LIMITS, meta):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("%s must be an int, not %r" % (key.decode(), v))
        if v == -1:
            continue
        if not 0 <= v <= limit:
            raise ValueError("%s=%d out of range (0 .. %d, or -1 for absent)"
                             % (key.decode(), v, limit))
        out.append(b"%s=%d\n" % (key, v))
    return b"".join(out)


def _ensure_meta_dir(dir_fd: int, fsync: bool) -> int:
    """A readable fd of DIR/.virtfs_metadata, made (0700) if missing; refuses a non-directory."""
    try:
        os.mkdir(META_DIR, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass
    else:
        if fsync:
            _fsync_dir(dir_fd)
    try:
        return os.open(META_DIR, _DIR_RD, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in _NOT_A_DIR:
            raise NotADirectoryError(
                e.errno, "%s exists and is not a directory (or is a symlink); refusing to "
                "write metadata" % _shown(META_DIR)) from None
        raise


def _rewrite_linked(mfd: int, name: bytes, data: bytes, fsync: bool):
    """Rewrite a hard-linked metadata file in place (its st_ino), else None.

    LINK links the metadata too; replacing one name by rename would split the
    links, so that two names of one inode showed different owners.  In place,
    as QEMU does: the new bytes first, then the length, so an interrupted
    write leaves at worst a trailing partial line, which the parser reports.
    """
    try:
        st = os.stat(name, dir_fd=mfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
        return None
    fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC, dir_fd=mfd)
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
        if fsync:
            os.fsync(fd)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _atomic_write(parent_fd: int, tmp_fd: int, name: bytes, data: bytes, fsync: bool) -> int:
    """Write data to a new temporary file in tmp_fd, rename it to parent_fd/name; its st_ino."""
    for _ in range(_TMP_TRIES):
        tmp = _temp_name(name)
        try:
            fd = os.open(tmp, _FILE_NEW, 0o600, dir_fd=tmp_fd)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(errno.EEXIST, "no free temporary name", _shown(name))
    try:
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
            ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=parent_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=tmp_fd)
        except OSError:
            pass
        raise
    if fsync:
        os.fsync(parent_fd)
        if tmp_fd != parent_fd:
            os.fsync(tmp_fd)
    return ino


def _remember(cache, key, parent_fd: int, name: bytes, ino: int, meta: Meta) -> None:
    """After a write: cache what we wrote, unless someone replaced the file already."""
    if cache is None:
        return
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        st = None
    if st is not None and st.st_ino == ino and stat.S_ISREG(st.st_mode):
        cache.put(key, _stamp(st), meta)
    else:
        cache.discard(key)


def write_meta(dir_fd: int, name: bytes, meta, *, fsync: bool = False, cache=None,
               dir_key=None) -> None:
    """Atomically set the metadata of entry ``name`` of ``dir_fd`` (keys that are -1 are left out).

    Makes ``.virtfs_metadata`` (0700) if needed and refuses (NotADirectoryError)
    if that name is a symlink or not a directory.  With ``fsync``, the file and
    the directories are synced before returning.  If ``cache`` is given the
    entry is updated to what was written.
    """
    _check_name(name)
    meta = Meta(*meta)
    data = format_meta(meta)
    for attempt in range(3):
        mfd = _ensure_meta_dir(dir_fd, fsync)
        try:
            ino = _rewrite_linked(mfd, name, data, fsync)
            if ino is None:
                ino = _atomic_write(mfd, mfd, name, data, fsync)
        except FileNotFoundError:
            # the (empty) metadata directory was removed under us by remove_meta
            if attempt == 2:
                raise
            continue
        except BaseException:
            _rmdir_if_empty(dir_fd)  # do not leave a directory we may just have made
            raise
        else:
            if cache is not None:
                _remember(cache, ((_dir_key(dir_fd) if dir_key is None else dir_key), name),
                          mfd, name, ino, meta)
            return
        finally:
            os.close(mfd)


def write_root_meta(root_fd: int, meta, *, fsync: bool = False, cache=None,
                    root_key=None) -> None:
    """Atomically set the export root's metadata (``ROOT/.virtfs_metadata_root``).

    The temporary file is made in ``ROOT/.virtfs_metadata`` (hidden from
    clients, created if needed and removed again if it stays empty) and renamed
    across, so no temporary name ever shows in the export root.
    """
    meta = Meta(*meta)
    data = format_meta(meta)
    rfd = os.open(b".", _DIR_RD, dir_fd=root_fd)  # fsync-able even if root_fd is O_PATH
    try:
        for attempt in range(3):
            mfd = _ensure_meta_dir(rfd, fsync)
            try:
                ino = _atomic_write(rfd, mfd, META_ROOT, data, fsync)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            finally:
                os.close(mfd)
            break
        if cache is not None:
            _remember(cache, ((_dir_key(rfd) if root_key is None else root_key), META_ROOT),
                      rfd, META_ROOT, ino, meta)
    finally:
        try:
            _rmdir_if_empty(rfd)
        finally:
            os.close(rfd)


# ------------------------------------------------------------------ namespace

def _rmdir_if_empty(dir_fd: int) -> None:
    try:
        os.rmdir(META_DIR, dir_fd=dir_fd)  # rmdir never follows a symlink
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR,
                           errno.EBUSY):
            raise


def _regular_in(mfd, name: bytes) -> bool:
    if mfd is None:
        return False
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=mfd, follow_symlinks=False).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _discard(cache, dir_fd: int, dir_key, name: bytes) -> None:
    if cache is not None:
        cache.discard(((_dir_key(dir_fd) if dir_key is None else dir_key), name))


def remove_meta(dir_fd: int, name: bytes, *, cache=None, dir_key=None) -> bool:
    """Remove the metadata of ``name`` (after the entry was removed); True if there was some.

    Removes ``.virtfs_metadata`` too when that leaves it empty.  No metadata
    (or a metadata directory that is a symlink or not a directory, which is
    never touched) is not an error.
    """
    _check_name(name)
    _discard(cache, dir_fd, dir_key, name)
    mfd = _open_meta_dir(dir_fd)
    if mfd is None:
        return False
    try:
        try:
            os.unlink(name, dir_fd=mfd)
            removed = True
        except (FileNotFoundError, IsADirectoryError):  # a directory there is not ours to remove
            removed = False
    finally:
        os.close(mfd)
    _rmdir_if_empty(dir_fd)
    return removed


def _same_entry(a_fd: int, a_name: bytes, b_fd: int, b_name: bytes) -> bool:
    if a_name != b_name:
        return False
    return a_fd == b_fd or _dir_key(a_fd) == _dir_key(b_fd)


def rename_meta(src_dir_fd: int, src_name: bytes, dst_dir_fd: int, dst_name: bytes, *,
                cache=None, src_key=None, dst_key=None) -> bool:
    """Move the metadata along with a renamed entry (call after the rename); True if moved.

    The source's metadata replaces the target's (atomically, by rename); if the
    source has none, the target's is removed.  If the source name still exists
    (rename(2) of one hard link onto another of the same file does nothing),
    or source and target are the same name, nothing changes.
    """
    _check_name(src_name)
    _check_name(dst_name)
    if _same_entry(src_dir_fd, src_name, dst_dir_fd, dst_name):
        return False
    try:
        os.stat(src_name, dir_fd=src_dir_fd, follow_symlinks=False)
        return False  # the entry rename was a no-op: leave both metadata files alone
    except FileNotFoundError:
        pass
    _discard(cache, src_dir_fd, src_key, src_name)
    _discard(cache, dst_dir_fd, dst_key, dst_name)
    smfd = _open_meta_dir(src_dir_fd)
    try:
        if not _regular_in(smfd, src_name):
            remove_meta(dst_dir_fd, dst_name)
            return False
        dmfd = _ensure_meta_dir(dst_dir_fd, False)
        try:
            os.rename(src_name, dst_name, src_dir_fd=smfd, dst_dir_fd=dmfd)
        finally:
            os.close(dmfd)
    finally:
        if smfd is not None:
            os.close(smfd)
    _rmdir_if_empty(src_dir_fd)
    return True


def link_meta(src_dir_fd: int, src_name: bytes, dst_dir_fd: int, dst_name: bytes, *,
              cache=None, dst_key=None) -> bool:
    """Hard-link the metadata of a newly hard-linked entry (call after the link); True if linked.

    If the source has no metadata the new name gets none either: a stale
    metadata file left under the new name (whose entry did not exist) is removed.
    """
    _check_name(src_name)
    _check_name(dst_name)
    _discard(cache, dst_dir_fd, dst_key, dst_name)
    smfd = _open_meta_dir(src_dir_fd)
    try:
        if not _regular_in(smfd, src_name):
            remove_meta(dst_dir_fd, dst_name)
            return False
        dmfd = _ensure_meta_dir(dst_dir_fd, False)
        try:
            for _ in range(_TMP_TRIES):
                tmp = _temp_name(dst_name)
                try:
                    os.link(src_name, tmp, src_dir_fd=smfd, dst_dir_fd=dmfd,
                            follow_symlinks=False)
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover
                raise FileExistsError(errno.EEXIST, "no free temporary name", _shown(dst_name))
            try:
                os.rename(tmp, dst_name, src_dir_fd=dmfd, dst_dir_fd=dmfd)
            finally:
                # gone after a normal rename; still there if dst_name already was
                # a link to the same file (then rename(2) does nothing)
                try:
                    os.unlink(tmp, dir_fd=dmfd)
                except FileNotFoundError:
                    pass
        finally:
            os.close(dmfd)
    finally:
        if smfd is not None:
            os.close(smfd)
    return True


def meta_dir_only(dir_fd: int) -> bool:
    """True if the directory holds nothing but a ``.virtfs_metadata`` directory.

    RMDIR of such a directory first removes it (``rmdir_meta_dir``).  An empty
    directory gives False (nothing to remove first).  Stops at the first other entry.
    """
    fd = os.open(b".", os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC, dir_fd=dir_fd)
    try:
        found = False
        with os.scandir(fd) as it:
            for e in it:
                if os.fsencode(e.name) == META_DIR and e.is_dir(follow_symlinks=False):
                    found = True
                else:
                    return False
        return found
    finally:
        os.close(fd)


def rmdir_meta_dir(dir_fd: int, name: bytes) -> bool:
    """Remove ``DIR/name/.virtfs_metadata`` and the files in it; True if it was there.

    Refuses (ENOTEMPTY, removing nothing) if it holds a subdirectory, which
    the format never makes.  Does not remove ``name`` itself nor its metadata.
    """
    _check_name(name)
    try:
        sub = os.open(name, _DIR_RD, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:  # name is a symlink: not a directory of ours
            return False
        raise
    try:
        try:
            mfd = os.open(META_DIR, _DIR_RD, dir_fd=sub)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno in _NOT_A_DIR:
                return False
            raise
        try:
            with os.scandir(mfd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for n, is_dir in entries:
                if is_dir:
                    raise OSError(errno.ENOTEMPTY, "%s/%s holds a directory %r"
                                  % (_shown(name), _shown(META_DIR), n))
            for n, _ in entries:
                try:
                    os.unlink(n, dir_fd=mfd)
                except FileNotFoundError:
                    pass
        finally:
            os.close(mfd)
        os.rmdir(META_DIR, dir_fd=sub)
        return True
    finally:
        os.close(sub)


# ------------------------------------------------------------------ device numbers

def split_rdev(rdev: int) -> tuple:
    """(major, minor) of a dev_t as glibc's major()/minor() decode it (64-bit dev_t).

    ``c 240,300`` is 1110060, and ptxdist's ``major << 8 | minor`` decodes the
    same for minor < 256.  (Computed here rather than with os.major/os.minor,
    which agree on Linux but take a C int on some Python versions.)
    """
    if not 0 <= rdev <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError("rdev out of range: %r" % (rdev,))
    major = ((rdev & 0x00000000000FFF00) >> 8) | ((rdev & 0xFFFFF00000000000) >> 32)
    minor = (rdev & 0x00000000000000FF) | ((rdev & 0x00000FFFFFF00000) >> 12)
    return major, minor


def make_rdev(major: int, minor: int) -> int:
    """The dev_t glibc's makedev() makes (inverse of split_rdev); 32-bit major and minor."""
    if not (0 <= major <= 0xFFFFFFFF and 0 <= minor <= 0xFFFFFFFF):
        raise ValueError("major/minor out of range: %r, %r" % (major, minor))
    return (((major & 0x00000FFF) << 8) | ((major & 0xFFFFF000) << 32)
            | (minor & 0x000000FF) | ((minor & 0xFFFFFF00) << 12))
