"""How a mapped-file tree stores its symlinks: QEMU's way or the host's.

QEMU's 9p ``security_model=mapped-file`` keeps a symlink as a regular file
holding the target, with ``virtfs.mode`` = ``S_IFLNK|0777`` in its metadata;
its guests cannot read a real symlink (``readlink`` opens the file with
``O_NOFOLLOW``).  ptxdist and ``fastnfs virtfs import`` make real symlinks,
which host tools follow.  A tree should hold one style only, so the server
writes new symlinks in the style the tree already uses.

``survey(root_fd)`` looks at a bounded number of entries (breadth first, the
root's first): ``qemu`` counts regular files whose metadata says symlink
(only files of 1 to 4095 bytes, a target's size, have their metadata read),
``host`` counts real symlinks.  ``decide`` turns that into a style:

* only QEMU-style symlinks: ``qemu``; only real ones: ``host``;
* both (a mixed tree): the majority, ``host`` on a tie, and ``mixed`` is set
  (the server warns; ``fastnfs virtfs check`` reports such a tree);
* neither (a new or symlink-free tree): ``qemu`` if the tree has metadata but
  no ``.virtfs_metadata_root`` -- QEMU writes that file only when a guest
  changes the root's own attributes, while ``fastnfs virtfs import`` (and
  trees prepared for NFS) always have it -- otherwise ``host``.
"""

from __future__ import annotations

import os
import stat as S
from collections import deque
from typing import NamedTuple

from ..beneath import open_dir
from .meta import parse_meta
from .store import HIDDEN, MAX_META_SIZE, META_DIR, META_ROOT

__all__ = ["QEMU", "HOST", "STYLES", "Survey", "survey", "decide", "symlink_style"]

QEMU = "qemu"
HOST = "host"
STYLES = (QEMU, HOST)

#: entries looked at by the server at start (cheap: one lstat each, one small read
#: per regular file that has metadata)
SURVEY_LIMIT = 4096

_MAX_TARGET = 4095      # PATH_MAX - 1: the longest symlink target Linux stores
_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Survey(NamedTuple):
    qemu: int            # regular files whose metadata says S_IFLNK
    host: int            # real symlinks
    has_meta: bool       # some .virtfs_metadata directory was seen
    has_root_meta: bool  # ROOT/.virtfs_metadata_root exists
    complete: bool       # every entry was looked at (no limit reached)
    qemu_paths: tuple = ()   # the first few of each, relative to the root
    host_paths: tuple = ()


def _meta_mode(mfd: int, name: bytes) -> int:
    """virtfs.mode of name in the metadata directory mfd, or 0."""
    try:
        fd = os.open(name, _READ, dir_fd=mfd)
    except OSError:
        return 0
    try:
        data = os.read(fd, MAX_META_SIZE + 1)
    except OSError:
        return 0
    finally:
        os.close(fd)
    if len(data) > MAX_META_SIZE:
        return 0
    mode = parse_meta(data)[2]
    return mode if mode >= 0 else 0


def survey(root_fd: int, limit: int | None = SURVEY_LIMIT, examples: int = 3) -> Survey:
    """Count both kinds of symlink among the first ``limit`` entries (None: all)."""
    qemu = host = seen = 0
    qpaths: list = []
    hpaths: list = []
    has_meta = False
    try:
        os.stat(META_ROOT, dir_fd=root_fd, follow_symlinks=False)
        has_root_meta = True
    except OSError:
        has_root_meta = False
    # directories wait as names, not open fds: a whole-tree survey (check) of a
    # wide tree must not run out of file descriptors
    queue = deque([()])
    while queue:
        comps = queue.popleft()
        try:
            dfd = open_dir(root_fd, b"/".join(comps) or b".", _DIR_RD)
        except OSError:
            if not comps:
                raise
            continue
        path = b"".join(c + b"/" for c in comps)
        try:
            try:
                with os.scandir(dfd) as it:
                    names = sorted(os.fsencode(e.name) for e in it)
            except OSError:
                continue
            mfd = None
            if META_DIR in names:
                try:
                    mfd = os.open(META_DIR, _DIR_RD, dir_fd=dfd)
                    has_meta = True
                except OSError:
                    mfd = None
            try:
                for name in names:
                    if name in HIDDEN:
                        continue
                    if limit is not None and seen >= limit:
                        return Survey(qemu, host, has_meta, has_root_meta, False,
                                      tuple(qpaths), tuple(hpaths))
                    seen += 1
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except OSError:
                        continue
                    rel = path + name
                    if S.S_ISLNK(st.st_mode):
                        host += 1
                        if len(hpaths) < examples:
                            hpaths.append(rel)
                    elif S.S_ISREG(st.st_mode) and 0 < st.st_size <= _MAX_TARGET:
                        # only a file the size of a target can be one: the
                        # metadata of programs and data files is never read
                        if mfd is not None and _meta_mode(mfd, name) & 0o170000 \
                                == S.S_IFLNK:
                            qemu += 1
                            if len(qpaths) < examples:
                                qpaths.append(rel)
                    elif S.S_ISDIR(st.st_mode):
                        queue.append(comps + (name,))
            finally:
                if mfd is not None:
                    os.close(mfd)
        finally:
            os.close(dfd)
    return Survey(qemu, host, has_meta, has_root_meta, True, tuple(qpaths), tuple(hpaths))


def decide(s: Survey) -> tuple:
    """(style, mixed, why) for a survey (see the module docstring)."""
    if s.qemu and not s.host:
        return QEMU, False, "%d QEMU-style symlink(s) (files with S_IFLNK metadata)" % s.qemu
    if s.host and not s.qemu:
        return HOST, False, "%d real symlink(s)" % s.host
    if s.qemu and s.host:
        style = QEMU if s.qemu > s.host else HOST
        return style, True, ("a mixed tree: %d QEMU-style and %d real symlinks; the majority "
                             "wins" % (s.qemu, s.host))
    if s.has_meta and not s.has_root_meta:
        return QEMU, False, ("no symlinks; metadata without .virtfs_metadata_root, as QEMU "
                             "leaves a tree")
    return HOST, False, "no symlinks" + (" (and .virtfs_metadata_root)" if s.has_root_meta
                                          else "")


def symlink_style(root_fd: int, wanted: str = "auto"):
    """(style, mixed, why) for an export: ``wanted`` if it is qemu or host, else detected."""
    if wanted in STYLES:
        return wanted, False, "--virtfs-symlinks=%s" % wanted
    if wanted != "auto":
        raise ValueError("symlink style must be qemu, host or auto, not %r" % (wanted,))
    try:
        return decide(survey(root_fd))
    except OSError as e:
        return HOST, False, "the tree could not be surveyed (%s)" % e.strerror
