"""What every NFSv3 procedure shares: exports, access checks, credentials.

Every procedure starts by resolving a filehandle through ``NFS3State.resolve``,
which is where the export's rules are applied, so they hold on every procedure:
the client must be allowed by the export (and come from a privileged port when
the export is ``secure``), its credentials are squashed as the export says, and
when the server runs as root the calling thread takes those credentials for
the filesystem calls that follow, so the kernel checks permissions.
"""

from __future__ import annotations

import logging
import os
import struct
import time

import stat as S

from .. import creds, perm, rpc
from ..exports import squash
from ..fs import SINGLE_USER_CALLER, Export, NFSError, Obj
from ..rpc import Cred
from ..stats import Stats
from . import const as C

log = logging.getLogger("fastnfs.access")
_NO_ID = 0xFFFFFFFF


class NFS3State:
    """Server-wide state for the NFS and MOUNT programs."""

    def __init__(self, exports: list[Export], *, write_verifier: bytes | None = None,
                 switch_creds: bool | None = None):
        self.exports: list[Export] = []
        self._by_id: dict = {}
        self.set_exports(exports)
        # RFC 1813 section 3.3.7: the verifier changes whenever the server restarts
        self.write_verifier = write_verifier or struct.pack(">Q", time.time_ns())
        self.switch_creds = creds.ENABLED if switch_creds is None else switch_creds
        self._admitted: dict = {}
        # the server puts its own here: bytes read and written, refusals are counted in it
        self.stats = Stats()

    def set_exports(self, exports: list[Export]) -> None:
        self.exports = list(exports)
        self._by_id = {e.export_id: e for e in exports}
        self._admitted = {}

    # -- handles and access -------------------------------------------------
    def export_of(self, fh: bytes) -> Export:
        if len(fh) < 24:
            raise NFSError(C.NFS3ERR_BADHANDLE)
        e = self._by_id.get(int.from_bytes(fh[4:8], "big"))
        if e is None:
            raise NFSError(C.NFS3ERR_STALE if fh[0] == 1 else C.NFS3ERR_BADHANDLE)
        return e

    def admit(self, call, e: Export):
        """The export's options for this caller (and its mapped credentials), or refuse.

        The answer depends only on (export, host, privileged port, credentials),
        so it is memoized: most calls cost one dictionary lookup here.
        """
        host, port = call.peer[0], call.peer[1]
        cred = call.cred
        key = (e.export_id, host, port < 1024, cred.flavor, cred.uid, cred.gid, cred.gids)
        hit = self._admitted.get(key)
        if hit is not None and hit[0] is e.entry:
            call.opts = hit[1]
            call.ucred = hit[2]
            return hit[1]
        opts = e.options_for(host)
        if opts is None:
            self._refused(host, e, "host not allowed", "host not allowed by the exports")
            raise NFSError(C.NFS3ERR_ACCES)
        if opts.secure and port >= 1024:
            self._refused(host, e, "insecure port", "source port %d is not privileged (export is secure)" % port)
            raise NFSError(C.NFS3ERR_ACCES)
        call.opts = opts
        if cred.flavor == rpc.AUTH_SYS:
            uid, gid, gids = squash(opts, cred.uid, cred.gid, cred.gids)
            # (uid_t)-1 means "no change" to setfsuid(2) and chown(2): such ids
            # are anonymous, as in knfsd, never the server's own identity
            if uid == _NO_ID:
                uid = opts.anonuid
            if gid == _NO_ID:
                gid = opts.anongid
            if _NO_ID in gids:
                gids = tuple(g for g in gids if g != _NO_ID)
        else:
            uid, gid, gids = opts.anonuid, opts.anongid, ()
        call.ucred = Cred(cred.flavor, uid, gid, gids, cred.machine)
        if len(self._admitted) > 65536:
            self._admitted.clear()
        self._admitted[key] = (e.entry, opts, call.ucred)
        return opts

    def _refused(self, host: str, e: Export, reason: str, why: str) -> None:
        self.stats.refusals.note(log, logging.WARNING, host, reason,
                                 "refused %s for export %s: %s", host, os.fsdecode(e.name), why)

    def resolve(self, call, fh: bytes) -> tuple[Export, Obj]:
        e = self.export_of(fh)
        self.admit(call, e)
        if e.single_user is not None:
            SINGLE_USER_CALLER.ids = (call.ucred.uid, call.ucred.gid)
        if not self.switch_creds:
            return e, e.resolve(fh)
        u = call.ucred
        want = (u.uid, u.gid, u.gids)
        if creds.current() == want:
            # the same caller as the last call on this thread: a cache hit needs
            # no switch; anything more (a search) runs as the server, below
            obj = e.resolve_cached(fh)
            if obj is not None:
                return e, obj
        creds.become_server()
        obj = e.resolve(fh)
        creds.switch(*want)
        return e, obj

    def in_caller_creds(self, call, work):
        """Wrap off-loop work so that it runs with the caller's credentials."""
        if not self.switch_creds:
            ids = (call.ucred.uid, call.ucred.gid)

            def keep_ids():
                SINGLE_USER_CALLER.ids = ids  # unfsd -s ownership for post-op attributes
                return work()
            return keep_ids
        u = call.ucred

        def run():
            creds.switch(u.uid, u.gid, u.gids)
            return work()
        return run

    def check_writable(self, call, export: Export) -> None:
        if call.opts is None or not call.opts.rw:
            raise NFSError(C.NFS3ERR_ROFS)

    def read_only(self, call) -> bool:
        return call.opts is None or not call.opts.rw

    def cred(self, call, export: Export):
        """The caller's credentials after squashing."""
        return call.ucred or call.cred

    # -- virtfs permission checks (otherwise the kernel checks, see resolve) --
    def check(self, call, e: Export, st, want: int) -> None:
        """Refuse unless the caller has every bit of want (perm.R/W/X) on st."""
        if e.virtfs is None:
            return
        c = call.ucred
        if not perm.allowed(c, st.st_uid, st.st_gid, st.st_mode, want):
            raise NFSError(C.NFS3ERR_ACCES)

    def check_io(self, call, e: Export, st, want: int) -> None:
        """READ/WRITE: the owner may always (a file created 0444 stays writable
        through the open that created it); others need the mode bits; a file
        that may be executed may be read."""
        if e.virtfs is None or call.ucred.uid == st.st_uid:
            return
        c = call.ucred
        if want == perm.R and perm.allowed(c, st.st_uid, st.st_gid, st.st_mode, perm.X):
            return
        self.check(call, e, st, want)

    def check_delete(self, call, e: Export, dir_st, victim_st) -> None:
        """Removing or renaming an entry: sticky directories protect others' files."""
        if e.virtfs is None:
            return
        uid = call.ucred.uid
        if (dir_st.st_mode & S.S_ISVTX and uid != 0 and uid != dir_st.st_uid
                and uid != victim_st.st_uid):
            raise NFSError(C.NFS3ERR_PERM)
