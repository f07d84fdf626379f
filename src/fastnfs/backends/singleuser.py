"""unfsd -s: plain host storage, seen as one user's.

The server runs as an ordinary user and never switches credentials; what
that user owns is shown as the caller's, everything else as root's, so a
client's tools see their own files as theirs.
"""

from __future__ import annotations

import os
import threading

from ..virtfs.overlay import VStat
from ..virtfs.store import Meta
from .plain import PlainBackend

CALLER = threading.local()  # .ids = (uid, gid) of the call being served on this thread


class SingleUserBackend(PlainBackend):
    """PlainBackend with unfsd -s ownership."""

    # READDIRPLUS entries carry the disk's owners, as they always did here
    # (and as the fast lane's twin of that loop does): only the virtfs view
    # is applied to them
    overlays = False
    lane = True   # the lane declines these exports' calls itself (per_caller_view)
    per_caller_view = True

    def __init__(self, path, *, fhcache_size: int = 262144, dircache_size: int = 64,
                 owner: tuple | None = None):
        PlainBackend.__init__(self, path, fhcache_size=fhcache_size,
                              dircache_size=dircache_size, switch_creds=False)
        self.single_user = owner if owner is not None else (os.geteuid(), os.getegid())

    def view(self, path: bytes, st):
        """What the server's user owns looks the caller's, the rest root's."""
        caller = getattr(CALLER, "ids", None)
        if caller is None:
            return st
        suid, sgid = self.single_user
        return VStat(st, Meta(caller[0] if st.st_uid == suid else 0,
                              caller[1] if st.st_gid == sgid else 0, -1, -1))

    def find(self, cred, ino: int, dev: int, gen: int, anc: tuple):
        if cred is not None:
            CALLER.ids = (cred.uid, cred.gid)
        return self.find_any(ino, dev, gen, anc)

    def run_as(self, cred, work):
        ids = (cred.uid, cred.gid)

        def keep_ids():
            CALLER.ids = ids  # unfsd -s ownership for post-op attributes
            return work()
        return keep_ids
