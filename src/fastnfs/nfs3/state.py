"""What every NFSv3 procedure shares: exports, access checks, credentials.

Every procedure starts by resolving a filehandle through ``NFS3State.resolve``,
which is where the export's rules are applied, so they hold on every procedure:
the client must be allowed by the export (and come from a privileged port when
the export is ``secure``) and its credentials are squashed as the export says.
The export's backend then gets those credentials with every call (the plain
backend, when the server may act as any user, takes them on the calling thread
so the kernel checks permissions; a backend with owners of its own checks them itself).
"""

from __future__ import annotations

import logging
import os
import struct
import time

from .. import creds, rpc
from ..exports import squash
from ..fs import NFSError, Obj
from ..handles import FH_HEAD, FH_VERSION, Export, export_id_in
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
        for e in exports:
            boards = getattr(e, "boards", None)
            if boards is not None:
                self._by_id.update((b.export_id, b) for b in boards.exports.values())
        self._admitted = {}

    @property
    def by_id(self) -> dict:
        """export id -> Export (a new dict after each set_exports)."""
        return self._by_id

    def add_export(self, e: Export) -> None:
        """A board's export (BASE@NAME): its handles resolve, EXPORT does not list it."""
        self._by_id[e.export_id] = e

    def _board_export(self, eid: int):
        """A board export not made yet in this process (after a restart), or None."""
        for base in self.exports:
            boards = getattr(base, "boards", None)
            if boards is not None:
                e = boards.by_id(eid)
                if e is not None:
                    self._by_id[eid] = e
                    return e
        return None

    # -- handles and access -------------------------------------------------
    def export_of(self, fh: bytes) -> Export:
        if len(fh) < FH_HEAD.size:
            raise NFSError(C.NFS3ERR_BADHANDLE)
        eid = export_id_in(fh)
        e = self._by_id.get(eid)
        if e is None:
            e = self._board_export(eid)
        if e is None:
            raise NFSError(C.NFS3ERR_STALE if fh[0] == FH_VERSION else C.NFS3ERR_BADHANDLE)
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
        """(export, object) for a handle, after the export admitted the caller.

        The export's backend may take the caller's credentials on this thread
        for the calls that follow (the plain backend does when privileged)."""
        e = self.export_of(fh)
        self.admit(call, e)
        return e, e.resolve(fh, call.ucred)

    def in_caller_creds(self, call, e: Export, work):
        """Wrap off-loop work so that it runs as the caller (the backend's way)."""
        return e.backend.run_as(call.ucred, work)

    def check_writable(self, call, export: Export) -> None:
        if call.opts is None or not call.opts.rw:
            raise NFSError(C.NFS3ERR_ROFS)

    def read_only(self, call) -> bool:
        return call.opts is None or not call.opts.rw

    def cred(self, call, export: Export):
        """The caller's credentials after squashing."""
        return call.ucred or call.cred
