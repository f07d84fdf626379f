"""The MOUNT program, versions 1 and 3 (RFC 1813 appendix I)."""

from __future__ import annotations

import logging
import os

from .dispatch import Program
from .fs import NFSError

log = logging.getLogger("fastnfs.mount")

MOUNT_PROGRAM = 100005
MNTPATHLEN = 1024
MNTNAMLEN = 255
FHSIZE_V1 = 32

# mountstat3
MNT3_OK = 0
MNT3ERR_PERM = 1
MNT3ERR_NOENT = 2
MNT3ERR_IO = 5
MNT3ERR_ACCES = 13
MNT3ERR_NOTDIR = 20
MNT3ERR_INVAL = 22
MNT3ERR_NAMETOOLONG = 63
MNT3ERR_NOTSUPP = 10004
MNT3ERR_SERVERFAULT = 10006

AUTH_SYS = 1


class MountState:
    def __init__(self, nfs_state):
        self.nfs = nfs_state
        self.mounts: dict = {}  # (host, dirpath) -> None, in mount order

    def find(self, call, dirpath: bytes):
        """(export, obj) for a mount request's path, or a mountstat3."""
        if len(dirpath) > MNTPATHLEN:
            return MNT3ERR_NAMETOOLONG
        for e in self.nfs.exports:
            p = e.path
            if dirpath == p or dirpath.rstrip(b"/") == p:
                rest = b""
            elif dirpath.startswith(p.rstrip(b"/") + b"/"):
                rest = dirpath[len(p.rstrip(b"/")) + 1:]
            else:
                continue
            obj = e.resolve(e.root_fh)
            try:
                for comp in rest.split(b"/"):
                    if comp in (b"", b"."):
                        continue
                    if comp == b"..":
                        return MNT3ERR_ACCES
                    obj = e.lookup(obj, comp)
            except NFSError as err:
                return {2: MNT3ERR_NOENT, 20: MNT3ERR_NOTDIR, 13: MNT3ERR_ACCES}.get(err.status, MNT3ERR_IO)
            if not obj.is_dir:
                return MNT3ERR_NOTDIR
            return e, obj
        return MNT3ERR_NOENT


def mount_program(nfs_state) -> Program:
    ms = MountState(nfs_state)

    def null(call, u, p):
        return None

    def mnt(call, u, p):
        dirpath = u.string(MNTPATHLEN + 1)
        r = ms.find(call, dirpath)
        if isinstance(r, int):
            log.info("refused mount of %r by %s: mountstat3 %d", dirpath, call.peer[0], r)
            p.u32(r)
            return
        e, obj = r
        fh = e.fh(obj)
        ms.mounts[(call.peer[0], dirpath)] = None
        log.info("%s mounted %s", call.peer[0], os.fsdecode(dirpath))
        p.u32(MNT3_OK)
        if call.vers == 1:
            p.fixed(fh.ljust(FHSIZE_V1, b"\0")[:FHSIZE_V1])
        else:
            p.opaque(fh)
            p.u32(1)
            p.u32(AUTH_SYS)

    def dump(call, u, p):
        for host, d in ms.mounts:
            p.u32(1)
            p.string(host.encode() if isinstance(host, str) else host)
            p.string(d)
        p.u32(0)

    def umnt(call, u, p):
        dirpath = u.string(MNTPATHLEN + 1)
        if ms.mounts.pop((call.peer[0], dirpath), 0) is None:
            log.info("%s unmounted %s", call.peer[0], os.fsdecode(dirpath))

    def umntall(call, u, p):
        for k in [k for k in ms.mounts if k[0] == call.peer[0]]:
            del ms.mounts[k]

    def export(call, u, p):
        for e in nfs_state.exports:
            p.u32(1)
            p.string(e.path)
            for g in getattr(e, "groups", ()):
                p.u32(1)
                p.string(g)
            p.u32(0)
        p.u32(0)

    table = [null, mnt, dump, umnt, umntall, export]
    return Program(MOUNT_PROGRAM, "mount", {1: table, 3: table})
