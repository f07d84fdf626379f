"""The MOUNT program, versions 1 and 3 (RFC 1813 appendix I)."""

from __future__ import annotations

import logging
import os

from . import creds
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
MAX_MOUNTS = 1024        # DUMP entries kept
DUMP_BYTES = 32000       # a DUMP reply fits one UDP datagram


def normpath(dirpath: bytes) -> bytes:
    return b"/" + b"/".join(c for c in dirpath.split(b"/") if c and c != b".")


class MountState:
    def __init__(self, nfs_state):
        self.nfs = nfs_state
        self.mounts: dict = {}  # (host, normalised dirpath) -> None, in mount order

    def remember(self, host: str, dirpath: bytes) -> None:
        """Note a mount for DUMP; the list is bounded (the oldest entries go first)."""
        key = (host, normpath(dirpath))
        self.mounts.pop(key, None)
        self.mounts[key] = None
        while len(self.mounts) > MAX_MOUNTS:
            del self.mounts[next(iter(self.mounts))]

    def forget(self, host: str, dirpath: bytes) -> bool:
        return self.mounts.pop((host, normpath(dirpath)), 0) is None

    def find(self, call, dirpath: bytes):
        """(export, obj) for a mount request's path, or a mountstat3.

        The longest export path that holds dirpath and admits the client wins
        (exports may nest); a subdirectory of an export may be mounted too.
        """
        if len(dirpath) > MNTPATHLEN:
            return MNT3ERR_NAMETOOLONG
        if self.nfs.switch_creds:
            creds.become_server()  # the mount path is walked with the server's rights
        if not dirpath.startswith(b"/"):
            return MNT3ERR_NOENT
        if b"@" in dirpath:
            return self.find_board(call, dirpath)
        path = normpath(dirpath)
        if any(c == b".." for c in path.split(b"/")):
            return MNT3ERR_ACCES
        candidates = []
        for e in self.nfs.exports:
            name = e.name.rstrip(b"/")
            if path == (name or b"/") or path.startswith(name + b"/"):
                candidates.append((len(name), e, path[len(name):]))
        if not candidates:
            return MNT3ERR_NOENT
        candidates.sort(key=lambda c: -c[0])
        for _n, e, rest in candidates:
            try:
                self.nfs.admit(call, e)
            except NFSError:
                continue
            boards = getattr(e, "boards", None)
            if boards is not None and boards.by_address and not rest.strip(b"/"):
                from .boards import BoardNameError, board_name_of_address   # only with boards
                try:  # --board-by-address: BASE alone is the client's own layer
                    name = board_name_of_address(call.peer[0])
                except BoardNameError as err:
                    log.warning("refused mount of %s by %s: %s", os.fsdecode(dirpath),
                                call.peer[0], err)
                    return MNT3ERR_INVAL
                b = boards.get(name)
                b.backend.mounted()
                return b, b.resolve(b.root_fh)
            obj = e.resolve(e.root_fh)
            try:
                for comp in rest.split(b"/"):
                    if comp:
                        obj = e.lookup(obj, comp)
            except NFSError as err:
                return _MNT_OF_NFS.get(err.status, MNT3ERR_IO)
            if not obj.is_dir:
                return MNT3ERR_NOTDIR
            return e, obj
        return MNT3ERR_ACCES


def _find_board(self, call, dirpath: bytes):
    """BASE@NAME: board NAME's own view of the export BASE (fastnfs.boards)."""
    e = None
    for x in self.nfs.exports:   # BASE is an export with boards; NAME all after its "@"
        pre = x.name.rstrip(b"/") + b"@"
        if getattr(x, "boards", None) is not None and dirpath.startswith(pre):
            e, name = x, dirpath[len(pre):]
            break
    base = dirpath[:dirpath.find(b"@")]
    from .boards import BoardNameError, check_board_name   # only with boards
    if e is None:
        log.warning("refused mount of %s by %s: %s is not an export with boards",
                    os.fsdecode(dirpath), call.peer[0], os.fsdecode(base))
        return MNT3ERR_NOENT
    try:
        check_board_name(name)
    except BoardNameError as err:
        log.warning("refused mount of %s by %s: %s", os.fsdecode(dirpath), call.peer[0], err)
        return MNT3ERR_INVAL
    try:
        self.nfs.admit(call, e)
    except NFSError:
        return MNT3ERR_ACCES
    try:
        b = e.boards.get(name)
        b.backend.mounted()
        return b, b.resolve(b.root_fh)
    except (NFSError, OSError) as err:
        log.error("board %s of %s: cannot open its layer: %s", os.fsdecode(name),
                  os.fsdecode(base), err)
        return MNT3ERR_IO


MountState.find_board = _find_board

_MNT_OF_NFS = {2: MNT3ERR_NOENT, 20: MNT3ERR_NOTDIR, 13: MNT3ERR_ACCES, 63: MNT3ERR_NAMETOOLONG}


def mount_program(nfs_state) -> Program:
    ms = MountState(nfs_state)

    def null(call, u, p):
        return None

    def mnt(call, u, p):
        dirpath = u.string(MNTPATHLEN + 1)
        r = ms.find(call, dirpath)
        if isinstance(r, int):
            ms.nfs.stats.refusals.note(log, logging.INFO, call.peer[0], "mount refused",
                                       "refused mount of %s by %s: mountstat3 %d",
                                       os.fsdecode(dirpath), call.peer[0], r)
            p.u32(r)
            return
        e, obj = r
        fh = e.fh(obj)
        ms.remember(call.peer[0], dirpath)
        log.info("%s mounted %s", call.peer[0], os.fsdecode(dirpath))
        p.u32(MNT3_OK)
        if call.vers == 1:
            p.fixed(fh.ljust(FHSIZE_V1, b"\0")[:FHSIZE_V1])
        else:
            p.opaque(fh)
            p.u32(1)
            p.u32(AUTH_SYS)

    def dump(call, u, p):
        start = len(p)
        for host, d in ms.mounts:
            if len(p) - start > DUMP_BYTES:
                break  # the list is advisory (RFC 1813 appendix I): keep the reply bounded
            p.u32(1)
            p.string(host.encode() if isinstance(host, str) else host)
            p.string(d)
        p.u32(0)

    def umnt(call, u, p):
        dirpath = u.string(MNTPATHLEN + 1)
        if ms.forget(call.peer[0], dirpath):
            log.info("%s unmounted %s", call.peer[0], os.fsdecode(dirpath))

    def umntall(call, u, p):
        for k in [k for k in ms.mounts if k[0] == call.peer[0]]:
            del ms.mounts[k]

    def export(call, u, p):
        for e in nfs_state.exports:
            p.u32(1)
            p.string(e.name)
            for spec in e.entry.clients:
                if spec.text:  # an everyone-spec is an empty group list
                    p.u32(1)
                    p.string(spec.text.encode()[:MNTNAMLEN])
            p.u32(0)
        p.u32(0)

    table = [null, mnt, dump, umnt, umntall, export]
    return Program(MOUNT_PROGRAM, "mount", {1: table, 3: table})
