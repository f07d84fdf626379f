"""What every NFSv3 procedure shares: the exports, the write verifier, helpers."""

from __future__ import annotations

import os
import struct
import time

from ..fs import Export, NFSError, Obj
from . import const as C
from .types import get_fh3


class NFS3State:
    """Server-wide state for the NFS and MOUNT programs."""

    def __init__(self, exports: list[Export], *, write_verifier: bytes | None = None):
        self.exports = exports
        self._by_id = {e.export_id: e for e in exports}
        # RFC 1813 section 3.3.7: the verifier changes whenever the server restarts
        self.write_verifier = write_verifier or struct.pack(">Q", time.time_ns())
        self.running_as_root = os.geteuid() == 0

    # -- handles and access -------------------------------------------------
    def export_of(self, fh: bytes) -> Export:
        if len(fh) < 24:
            raise NFSError(C.NFS3ERR_BADHANDLE)
        e = self._by_id.get(int.from_bytes(fh[4:8], "big"))
        if e is None:
            raise NFSError(C.NFS3ERR_STALE if fh[0] == 1 else C.NFS3ERR_BADHANDLE)
        return e

    def resolve(self, call, fh: bytes) -> tuple[Export, Obj]:
        e = self.export_of(fh)
        return e, e.resolve(fh)

    def get_obj(self, call, u) -> tuple[Export, Obj]:
        return self.resolve(call, get_fh3(u))

    def check_writable(self, call, export: Export) -> None:
        if export.ro:
            raise NFSError(C.NFS3ERR_ROFS)

    def cred(self, call, export: Export):
        """The caller's credentials as this export maps them (squashing: see exports)."""
        return call.cred

    def give_to_caller(self, call, export: Export, dfd: int, name: bytes, dir_st) -> None:
        """Make a new object belong to the caller, as a local create would.

        The group is the caller's, or the directory's when it is set-group-ID.
        """
        if not self.running_as_root:
            return
        cred = self.cred(call, export)
        gid = dir_st.st_gid if dir_st.st_mode & 0o2000 else cred.gid
        try:
            os.chown(name, cred.uid, gid, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            pass
