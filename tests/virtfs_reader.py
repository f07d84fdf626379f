"""A reference reader of mapped-file metadata, for tests of the writers.

This was the read side of ``fastnfs.virtfs.store``; the server reads metadata
through ``fastnfs.virtfs.overlay`` (and the fast lane), so only tests use it
now: to see what ``write_meta`` and friends left behind, with the cache and
warning rules described in the store's docstring.
"""

from __future__ import annotations

import errno
import os
import stat

from fastnfs.virtfs.meta import MetaCache, parse_meta
from fastnfs.virtfs.store import (MAX_META_SIZE, META_DIR, META_ROOT, Meta, _check_name,
                                  _dir_key, _shown, _stamp, _DIR_PATH, _O_CLOEXEC)

_FILE_RD = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _O_CLOEXEC
_SHOW_PROBLEMS = 5
_NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)


class _Unusable:
    """Cached result for a metadata file that yields nothing (already warned)."""
    __slots__ = ()

    def __repr__(self):
        return "UNUSABLE"


_UNUSABLE = _Unusable()


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "of unknown type"


def _join(msgs: list) -> str:
    text = "; ".join(msgs[:_SHOW_PROBLEMS])
    if len(msgs) > _SHOW_PROBLEMS:
        text += " (and %d more)" % (len(msgs) - _SHOW_PROBLEMS)
    return text


def _read_all(fd: int, limit: int) -> bytes:
    """Up to limit bytes (fewer only at end of file)."""
    chunks = []
    left = limit
    while left > 0:
        b = os.read(fd, left)
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _warn_once(cache, key, stamp, warn, message) -> None:
    """Warn about a problem that has no parse result, once per (key, stamp)."""
    if cache.get(key, stamp) is None:
        cache.put(key, stamp, _UNUSABLE)
        if warn is not None:
            warn(message)


def _open_meta_dir(dir_fd: int, dir_key, cache, warn):
    """O_PATH fd of DIR/.virtfs_metadata, or None if there is none (or it is unusable)."""
    try:
        return os.open(META_DIR, _DIR_PATH, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if cache is None:
            return None
        if dir_key is None:
            dir_key = _dir_key(dir_fd)
        try:
            st = os.stat(META_DIR, dir_fd=dir_fd, follow_symlinks=False)
            stamp, what = _stamp(st), _kind(st.st_mode)
        except OSError as e2:
            stamp, what = ("error", e2.errno), None
        if e.errno in _NOT_A_DIR and what is not None:
            msg = "%s: is %s, not a directory; metadata in it ignored" % (_shown(META_DIR), what)
        else:
            msg = "%s: cannot open: %s" % (_shown(META_DIR), e.strerror)
        _warn_once(cache, (dir_key, META_DIR), stamp, warn, msg)
        return None


def _load(parent_fd: int, fname: bytes, shown: bytes, key, cache, warn):
    """The Meta in parent/fname (cached by stamp), None if absent or unusable."""
    try:
        st = os.stat(fname, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn_once(cache, key, ("error", e.errno), warn,
                   "%s: cannot stat: %s" % (_shown(shown), e.strerror))
        return None
    stamp = _stamp(st)
    v = cache.get(key, stamp)
    if v is not None:
        return None if v is _UNUSABLE else v

    msgs = []
    value = _UNUSABLE
    if not stat.S_ISREG(st.st_mode):
        msgs.append("%s: is %s, ignored" % (_shown(shown), _kind(st.st_mode)))
    elif st.st_size > MAX_META_SIZE:
        msgs.append("%s: larger than %d bytes, ignored" % (_shown(shown), MAX_META_SIZE))
    else:
        try:
            fd = os.open(fname, _FILE_RD, dir_fd=parent_fd)
        except FileNotFoundError:  # removed since the stat
            return None
        except OSError as e:  # EACCES; ELOOP if a symlink replaced it since the stat
            msgs.append("%s: cannot open: %s" % (_shown(shown), e.strerror))
        else:
            try:
                fst = os.fstat(fd)
                stamp = _stamp(fst)  # describes exactly what we read
                if not stat.S_ISREG(fst.st_mode):  # swapped in since the stat
                    msgs.append("%s: is %s, ignored" % (_shown(shown), _kind(fst.st_mode)))
                else:
                    data = _read_all(fd, MAX_META_SIZE + 1)
                    if len(data) > MAX_META_SIZE:
                        msgs.append("%s: larger than %d bytes, ignored"
                                    % (_shown(shown), MAX_META_SIZE))
                    else:
                        uid, gid, mode, rdev, problems = parse_meta(data)
                        value = Meta(uid, gid, mode, rdev)
                        msgs.extend("%s:%d: %s" % (_shown(shown), ln, m) for ln, m in problems)
            except OSError as e:  # EIO
                msgs.append("%s: cannot read: %s" % (_shown(shown), e.strerror))
            finally:
                os.close(fd)
    cache.put(key, stamp, value)
    if msgs and warn is not None:
        warn(_join(msgs))
    return None if value is _UNUSABLE else value


# ------------------------------------------------------------------ reading

def read_meta(dir_fd: int, name: bytes, cache: MetaCache, warn, *, dir_key=None) -> Meta | None:
    """The metadata of entry ``name`` of the directory ``dir_fd``, or None.

    ``warn(message)`` (may be None) is told about a malformed or unusable file
    once per (file, stamp).  ``dir_key``: see the module docstring.
    """
    _check_name(name)
    if dir_key is None:
        dir_key = _dir_key(dir_fd)
    mfd = _open_meta_dir(dir_fd, dir_key, cache, warn)
    if mfd is None:
        return None
    try:
        return _load(mfd, name, META_DIR + b"/" + name, (dir_key, name), cache, warn)
    finally:
        os.close(mfd)


def read_root_meta(root_fd: int, cache: MetaCache, warn, *, root_key=None) -> Meta | None:
    """The export root's own metadata, from ``ROOT/.virtfs_metadata_root``, or None."""
    if root_key is None:
        root_key = _dir_key(root_fd)
    return _load(root_fd, META_ROOT, META_ROOT, (root_key, META_ROOT), cache, warn)
