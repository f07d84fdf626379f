"""The NFS version 3 program: procedure table (RFC 1813 section 3)."""

from __future__ import annotations

from functools import partial

from ..dispatch import Program
from . import const as C
from .attrs import ACCESS, GETATTR, SETATTR
from .create import CREATE, LINK, MKDIR, MKNOD, SYMLINK
from .fsinfo import FSINFO, FSSTAT, PATHCONF
from .io import COMMIT, READ, WRITE
from .lookup import LOOKUP, READLINK
from .readdir import READDIR, READDIRPLUS
from .remove import REMOVE, RENAME, RMDIR

PROCEDURES = [
    None, GETATTR, SETATTR, LOOKUP, ACCESS, READLINK, READ, WRITE, CREATE, MKDIR, SYMLINK,
    MKNOD, REMOVE, RMDIR, RENAME, LINK, READDIR, READDIRPLUS, FSSTAT, FSINFO, PATHCONF, COMMIT,
]

# answered from the duplicate-request cache when retransmitted
NON_IDEMPOTENT = frozenset({
    C.NFSPROC3_SETATTR, C.NFSPROC3_CREATE, C.NFSPROC3_MKDIR, C.NFSPROC3_SYMLINK,
    C.NFSPROC3_MKNOD, C.NFSPROC3_REMOVE, C.NFSPROC3_RMDIR, C.NFSPROC3_RENAME, C.NFSPROC3_LINK,
})


def _null(call, u, p):
    return None


def nfs3_program(state) -> Program:
    table = [_null] + [partial(f, state) for f in PROCEDURES[1:]]
    return Program(C.NFS_PROGRAM, "nfs", {C.NFS_V3: table},
                   non_idempotent=NON_IDEMPOTENT, auth_sys_required=True)
