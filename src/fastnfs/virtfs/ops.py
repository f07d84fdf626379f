"""virtfs bookkeeping for the backend's creates, changes and removals of entries.

Ownership and modes live only in the metadata files; the files on disk keep
modes that let the (unprivileged) server read and write them.
"""

from __future__ import annotations

import os
import stat as S

from ..fs import NFSError, basename, dirname
from ..fsstat import lstatat
from ..nfs3 import const as C
from .store import Meta, write_meta, write_root_meta

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def disk_mode(fmt: int, mode: int) -> int:
    """Mode bits for the file on disk: what was asked, but always usable by the server."""
    return (mode & 0o777) | (0o700 if fmt == S.S_IFDIR else 0o600)


def new_meta(cred, dir_st, fmt: int, mode: int, rdev: int = -1) -> Meta:
    """Metadata for an entry the caller creates in a directory with attributes dir_st."""
    gid = cred.gid
    mode &= 0o7777
    if dir_st.st_mode & S.S_ISGID:
        gid = dir_st.st_gid           # BSD group semantics of a set-group-ID directory
        if fmt == S.S_IFDIR:
            mode |= S.S_ISGID
    elif mode & S.S_ISGID and cred.uid != 0 and gid not in cred.gids and gid != cred.gid:
        mode &= ~S.S_ISGID
    return Meta(cred.uid, gid, fmt | mode, rdev if fmt in (S.S_IFCHR, S.S_IFBLK) else -1)


def changed_meta(cred, st, uid, gid, mode) -> Meta:
    """Apply a SETATTR of owner, group and mode with a local filesystem's rules."""
    is_root = cred.uid == 0
    new_uid = st.st_uid if uid is None else uid
    new_gid = st.st_gid if gid is None else gid
    vmode = st.st_mode
    if new_uid != st.st_uid and not is_root:
        raise NFSError(C.NFS3ERR_PERM)          # only root gives files away
    if new_gid != st.st_gid and not is_root:
        if cred.uid != st.st_uid or (new_gid != cred.gid and new_gid not in cred.gids):
            raise NFSError(C.NFS3ERR_PERM)
    if mode is not None:
        if not is_root and cred.uid != st.st_uid:
            raise NFSError(C.NFS3ERR_PERM)      # chmod: owner or root
        perm = mode & 0o7777
        if (not is_root and not S.S_ISDIR(vmode) and perm & S.S_ISGID
                and new_gid != cred.gid and new_gid not in cred.gids):
            perm &= ~S.S_ISGID
        vmode = S.S_IFMT(vmode) | perm
    if (uid is not None or gid is not None) and not S.S_ISDIR(vmode):
        # a change of owner clears set-user-ID (and set-group-ID with group execute)
        if (new_uid != st.st_uid or new_gid != st.st_gid) and vmode & 0o111:
            vmode &= ~S.S_ISUID
            if vmode & S.S_IXGRP:
                vmode &= ~S.S_ISGID
    rdev = st.st_rdev if S.S_ISCHR(vmode) or S.S_ISBLK(vmode) else -1
    return Meta(new_uid, new_gid, vmode, rdev)


def write_obj_meta(b, obj, meta: Meta) -> None:
    """Store meta for an existing object, found again through its parent directory
    (b: the backend, for its export root fd)."""
    if obj.path == b".":
        write_root_meta(b.root_fd, meta)
        return
    pfd = os.open(dirname(obj.path), _DIR_FLAGS, dir_fd=b.root_fd)
    try:
        name = basename(obj.path)
        if lstatat(pfd, name).st_ino != obj.ino:
            raise NFSError(C.NFS3ERR_STALE)
        write_meta(pfd, name, meta)
    finally:
        os.close(pfd)


def open_parent(b, obj) -> tuple[int, bytes]:
    """(O_PATH fd of obj's directory, obj's name there), verified by inode."""
    pfd = os.open(dirname(obj.path), _DIR_FLAGS, dir_fd=b.root_fd)
    name = basename(obj.path)
    try:
        if lstatat(pfd, name).st_ino != obj.ino:
            raise NFSError(C.NFS3ERR_STALE)
    except BaseException:
        os.close(pfd)
        raise
    return pfd, name
