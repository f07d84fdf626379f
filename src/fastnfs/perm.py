"""Unix permission arithmetic on (uid, gid, mode) against a caller's credentials.

Used by the backends: for ACCESS (RFC 1813 section 3.3.4) by every one, and
for every call by those that check permissions themselves (virtfs, where the
kernel cannot know the virtual owners): the rules are those of a local
filesystem (POSIX.1 section 2.3, "file access permissions").  Cython twin:
``fastnfs._perm``, which the fast lane cimports, so both paths apply one rule.
"""

from __future__ import annotations

import stat as S

from ._accel import load
from .nfs3 import const as C

R, W, X = 4, 2, 1


def mode_bits_for(cred, uid: int, gid: int, mode: int) -> int:
    """The rwx triplet (0..7) that applies to cred for an object."""
    if cred.uid == uid:
        return (mode >> 6) & 7
    if cred.gid == gid or gid in cred.gids:
        return (mode >> 3) & 7
    return mode & 7


def allowed(cred, uid: int, gid: int, mode: int, want: int) -> bool:
    """May cred get every bit of want (R|W|X) on the object?"""
    if cred.uid == 0:
        # root passes everything but execute of a file with no x bit at all
        if want & X and not S.S_ISDIR(mode) and not (mode & 0o111):
            return False
        return True
    return (mode_bits_for(cred, uid, gid, mode) & want) == want


def io_allowed(cred, uid: int, gid: int, mode: int, want: int) -> bool:
    """May cred READ (want R) or WRITE (want W) a regular file?  NFSv3 has no
    open (RFC 1813 section 4.4): the client checked access when its program
    opened the file, so the owner may always, whatever the mode says now
    (knfsd's NFSD_MAY_OWNER_OVERRIDE: a file chmod'ed 000 while open, or
    created 0444, stays usable); a file that may be executed may be read
    (NFSD_MAY_READ_IF_EXEC); others need the mode bits."""
    if cred.uid == uid:
        return True
    if want == R and allowed(cred, uid, gid, mode, X):
        return True
    return allowed(cred, uid, gid, mode, want)


def access3(cred, st, requested: int, read_only: bool) -> int:
    """ACCESS3 bits granted to cred on an object with attributes st."""
    mode, uid, gid = st.st_mode, st.st_uid, st.st_gid
    granted = 0
    isdir = S.S_ISDIR(mode)
    if requested & C.ACCESS3_READ and allowed(cred, uid, gid, mode, R):
        granted |= C.ACCESS3_READ
    if isdir:
        if requested & C.ACCESS3_LOOKUP and allowed(cred, uid, gid, mode, X):
            granted |= C.ACCESS3_LOOKUP
        if not read_only and allowed(cred, uid, gid, mode, W | X):
            granted |= requested & (C.ACCESS3_MODIFY | C.ACCESS3_EXTEND | C.ACCESS3_DELETE)
    else:
        if not read_only and allowed(cred, uid, gid, mode, W):
            granted |= requested & (C.ACCESS3_MODIFY | C.ACCESS3_EXTEND | C.ACCESS3_DELETE)
        if requested & C.ACCESS3_EXECUTE and allowed(cred, uid, gid, mode, X):
            granted |= C.ACCESS3_EXECUTE
    return granted


py_allowed = allowed
py_access3 = access3
py_io_allowed = io_allowed
_cx = load("_perm")
if _cx is not None:  # the Cython twin, which the fast lane shares
    allowed = _cx.allowed  # noqa: F811
    access3 = _cx.access3  # noqa: F811
    io_allowed = _cx.io_allowed  # noqa: F811
