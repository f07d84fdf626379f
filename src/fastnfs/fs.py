"""Host-filesystem primitives shared by the layers above: errors, names, objects.

* ``NFSError`` and the errno -> nfsstat3 map (``nfsstat_of``, ``status_of``);
* ``check_name``: one path component as a client may create or look it up;
* ``name_cookie`` and ``scan_listing``: READDIR cookies and directory scans;
* ``Obj``: a resolved object, as backends (``fastnfs.backends``) hand it out;
* path helpers for paths relative to an export root.

Filehandles are ``fastnfs.handles``; finding objects again by inode is
``fastnfs.backends.hostpaths``.
"""

from __future__ import annotations

import errno
import os
import stat as S

from ._accel import load

try:
    from _blake2 import blake2b   # hashlib's own, without loading hashlib's OpenSSL half
except ImportError:  # pragma: no cover
    from hashlib import blake2b
from .nfs3 import const as C

MAX_ANCESTORS = 5  # ancestor inodes a handle carries (handles.py)

_ERRNO_TO_NFS = {
    errno.EPERM: C.NFS3ERR_PERM,
    errno.ENOENT: C.NFS3ERR_NOENT,
    errno.EIO: C.NFS3ERR_IO,
    errno.ENXIO: C.NFS3ERR_NXIO,
    errno.EACCES: C.NFS3ERR_ACCES,
    errno.EEXIST: C.NFS3ERR_EXIST,
    errno.EXDEV: C.NFS3ERR_XDEV,
    errno.ENODEV: C.NFS3ERR_NODEV,
    errno.ENOTDIR: C.NFS3ERR_NOTDIR,
    errno.EISDIR: C.NFS3ERR_ISDIR,
    errno.EINVAL: C.NFS3ERR_INVAL,
    errno.EFBIG: C.NFS3ERR_FBIG,
    errno.ENOSPC: C.NFS3ERR_NOSPC,
    errno.EROFS: C.NFS3ERR_ROFS,
    errno.EMLINK: C.NFS3ERR_MLINK,
    errno.ENAMETOOLONG: C.NFS3ERR_NAMETOOLONG,
    errno.ENOTEMPTY: C.NFS3ERR_NOTEMPTY,
    errno.EDQUOT: C.NFS3ERR_DQUOT,
    errno.ESTALE: C.NFS3ERR_STALE,
    errno.EOPNOTSUPP: C.NFS3ERR_NOTSUPP,
    errno.ELOOP: C.NFS3ERR_ACCES,     # a symlink where the server refuses to follow one
    errno.EBADF: C.NFS3ERR_STALE,
    errno.ETXTBSY: C.NFS3ERR_ACCES,
    errno.EAGAIN: C.NFS3ERR_JUKEBOX,
    errno.EOVERFLOW: C.NFS3ERR_FBIG,
    errno.EMFILE: C.NFS3ERR_JUKEBOX,
    errno.ENFILE: C.NFS3ERR_JUKEBOX,
    errno.ENOMEM: C.NFS3ERR_JUKEBOX,
    errno.ENOTSUP: C.NFS3ERR_NOTSUPP,
    errno.ERANGE: C.NFS3ERR_INVAL,
    errno.EBUSY: C.NFS3ERR_ACCES,
}


class NFSError(Exception):
    """A procedure failure with its nfsstat3."""

    def __init__(self, status: int, msg: str = ""):
        super().__init__(status, msg)
        self.status = status


def nfsstat_of(e: OSError) -> int:
    return _ERRNO_TO_NFS.get(e.errno, C.NFS3ERR_IO)


def status_of(e: Exception) -> int:
    """The nfsstat3 of an NFSError or an OSError."""
    return e.status if isinstance(e, NFSError) else nfsstat_of(e)


def check_name(name: bytes) -> None:
    """A single path component as a client may create or look it up."""
    if not name:
        raise NFSError(C.NFS3ERR_ACCES)
    if len(name) > C.NFS3_MAXNAMLEN:
        raise NFSError(C.NFS3ERR_NAMETOOLONG)
    if b"/" in name or b"\0" in name:
        raise NFSError(C.NFS3ERR_ACCES)


def name_cookie(name: bytes) -> int:
    """A READDIR cookie stable across restarts and directory changes.

    Entries are returned in cookie order, so a client continuing from cookie
    c gets exactly the entries with a larger cookie: nothing is repeated or
    skipped when other entries come and go (RFC 1813 section 3.3.16).
    1 and 2 are "." and ".."; 0 means "from the start".
    """
    c = int.from_bytes(blake2b(name, digest_size=8).digest(), "big") >> 1
    return c if c > 2 else c + 3


def py_scan_listing(fd: int, hidden) -> tuple:
    """(cookies, names, inodes) of the directory open at fd, sorted by cookie,
    without the names in hidden; fd stays open.  Cython twin: _listing.scan_listing."""
    items = []
    with os.scandir(fd) as it:
        for e in it:
            name = os.fsencode(e.name)
            if name in hidden:
                continue
            items.append((name_cookie(name), name, e.inode()))
    items.sort()
    return [c for c, _n, _i in items], [n for _c, n, _i in items], [i for _c, _n, i in items]


scan_listing = py_scan_listing
_cx = load("_listing")
if _cx is not None:  # the Cython twin
    scan_listing = _cx.scan_listing


class Obj:
    """A resolved object: its fileid, where its backend finds it (path: the
    backend's own locator), its attributes as clients see them, its ancestors."""

    __slots__ = ("ino", "path", "st", "anc")

    def __init__(self, ino: int, path: bytes, st, anc: tuple):
        self.ino = ino
        self.path = path
        self.st = st
        self.anc = anc

    @property
    def is_dir(self) -> bool:
        return S.S_ISDIR(self.st.st_mode)

    def child_anc(self) -> tuple:
        return (self.ino,) + self.anc[:MAX_ANCESTORS - 1]


def join(parent: bytes, name: bytes) -> bytes:
    return name if parent == b"." else parent + b"/" + name


def dirname(path: bytes) -> bytes:
    i = path.rfind(b"/")
    return b"." if i < 0 else path[:i]


def basename(path: bytes) -> bytes:
    return path[path.rfind(b"/") + 1:]
