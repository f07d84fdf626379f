"""``fastnfs virtfs check DIR``: find what is wrong with a virtfs tree.

``check DIR`` lists, one line each: orphaned metadata (a metadata file whose
entry does not exist), entries without metadata (the root included:
``.virtfs_metadata_root``), malformed metadata (parse problems, not a regular
file, too large, unreadable, a ``.virtfs_metadata`` that is not a directory)
and metadata whose file type contradicts the entry's (a directory with a
regular-file mode; a non-empty file said to be a device; an empty file said to
be a symlink, which has no target).  Symlinks may be
stored in either style (``virtfs.style``): QEMU's (a regular file holding the
target, metadata ``S_IFLNK``) or the host's (a real symlink); a tree that
holds both gets one ``mixed`` line at its root, with the counts and a few
examples of each, since whichever style a writer picks, part of the tree is
unreadable for the other kind of reader (QEMU's guests cannot read a real
symlink, host tools see a QEMU-style one as a file).  Exit status 1 if
anything was found, else 0.
"""

from __future__ import annotations

import os
import stat as S
from typing import NamedTuple

from .meta import parse_meta
from .store import HIDDEN, MAX_META_SIZE, META_DIR, META_ROOT
from .style import survey

__all__ = ["check_tree", "Finding"]

_CX = os.O_CLOEXEC
_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CX
_SRC_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Finding(NamedTuple):
    path: str          # the path the line is about (DIR joined with the relative path)
    kind: str          # "orphan", "missing", "malformed", "mismatch", "mixed"
    message: str

    def __str__(self):
        return "%s: %s" % (self.path, self.message)



def _shown(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, what in ((S.S_ISREG, "a regular file"), (S.S_ISDIR, "a directory"),
                       (S.S_ISLNK, "a symlink"), (S.S_ISFIFO, "a fifo"),
                       (S.S_ISSOCK, "a socket"), (S.S_ISCHR, "a character device"),
                       (S.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "of unknown type"


_STORABLE_AS_FILE = frozenset({S.S_IFCHR, S.S_IFBLK, S.S_IFIFO, S.S_IFSOCK, S.S_IFLNK})


def _check_file(out: list, parent_fd: int, fname: bytes, shown: str, entry_st, entry_shown):
    """Check one metadata file; entry_st is the entry's lstat (None: root-less check)."""
    try:
        st = os.stat(fname, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        out.append(Finding(entry_shown, "missing", "no metadata"))
        return
    if not S.S_ISREG(st.st_mode):
        out.append(Finding(shown, "malformed", "malformed metadata: is %s" % _kind(st.st_mode)))
        return
    if st.st_size > MAX_META_SIZE:
        out.append(Finding(shown, "malformed", "malformed metadata: larger than %d bytes"
                           % MAX_META_SIZE))
        return
    try:
        fd = os.open(fname, _SRC_FILE, dir_fd=parent_fd)
        try:
            data = os.read(fd, MAX_META_SIZE + 1)
        finally:
            os.close(fd)
    except OSError as e:
        out.append(Finding(shown, "malformed", "malformed metadata: cannot read: %s"
                           % e.strerror))
        return
    uid, gid, mode, rdev, problems = parse_meta(data)
    if problems:
        out.append(Finding(shown, "malformed", "malformed metadata: " + "; ".join(
            "line %d: %s" % p for p in problems)))
        return
    if mode >= 0 and entry_st is not None:
        real, virt = S.S_IFMT(entry_st.st_mode), S.S_IFMT(mode)
        ok = (real == virt or (real == S.S_IFREG and virt in _STORABLE_AS_FILE and (
            entry_st.st_size == 0 or virt == S.S_IFLNK)))
        if not ok:
            out.append(Finding(shown, "mismatch", "metadata says %s but %s is %s"
                               % (_kind(mode), entry_shown, _kind(entry_st.st_mode))))
        elif real == S.S_IFREG and virt == S.S_IFLNK and entry_st.st_size == 0:
            out.append(Finding(shown, "mismatch", "metadata says a symlink but %s is an "
                               "empty file: a QEMU-style symlink with no target" % entry_shown))


def check_tree(root) -> list:
    """The Findings for the virtfs tree at root, in directory order (names sorted)."""
    root_b = os.fsencode(root)
    out: list = []
    fd = os.open(root_b, os.O_RDONLY | os.O_DIRECTORY | _CX)
    try:
        _check_file(out, fd, META_ROOT, _shown(os.path.join(root_b, META_ROOT)),
                    os.fstat(fd), _shown(root_b))
        _check_dir(out, fd, root_b)
        s = survey(fd, limit=None)
        if s.qemu and s.host:
            out.append(Finding(_shown(root_b), "mixed", (
                "mixes symlink styles: %d QEMU-style (a file holding the target, S_IFLNK "
                "metadata; e.g. %s) and %d real symlinks (e.g. %s)") % (
                s.qemu, ", ".join(_shown(p) for p in s.qemu_paths), s.host,
                ", ".join(_shown(p) for p in s.host_paths))))
    finally:
        os.close(fd)
    return out


def _check_dir(out: list, dfd: int, path: bytes) -> None:
    with os.scandir(dfd) as it:
        names = sorted(os.fsencode(e.name) for e in it)
    entries = {}
    for n in names:
        if n in HIDDEN:
            continue
        try:
            entries[n] = os.stat(n, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            pass
    mpath = os.path.join(path, META_DIR)
    mfd = None
    try:
        mfd = os.open(META_DIR, _DIR_RD, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except OSError as e:
        try:
            what = "is " + _kind(os.stat(META_DIR, dir_fd=dfd, follow_symlinks=False).st_mode)
        except OSError:
            what = "cannot open: " + e.strerror
        out.append(Finding(_shown(mpath), "malformed", "malformed metadata directory: " + what))
    try:
        if mfd is not None:
            for n in sorted(os.fsencode(x) for x in os.listdir(mfd)):
                if n not in entries:
                    out.append(Finding(_shown(os.path.join(mpath, n)), "orphan",
                                       "orphaned metadata: no entry %s"
                                       % _shown(os.path.join(path, n))))
        for n, st in entries.items():
            ep = _shown(os.path.join(path, n))
            if mfd is None:
                out.append(Finding(ep, "missing", "no metadata"))
            else:
                _check_file(out, mfd, n, _shown(os.path.join(mpath, n)), st, ep)
            if S.S_ISDIR(st.st_mode):
                try:
                    cfd = os.open(n, _DIR_RD, dir_fd=dfd)
                except OSError as e:
                    out.append(Finding(ep, "malformed", "cannot open directory: %s"
                                       % e.strerror))
                    continue
                try:
                    _check_dir(out, cfd, os.path.join(path, n))
                finally:
                    os.close(cfd)
    finally:
        if mfd is not None:
            os.close(mfd)
