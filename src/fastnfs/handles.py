"""Filehandles: their format, and the export a handle belongs to.

Filehandle format (opaque to clients, at most 64 bytes; RFC 1813 section 2.4)::

    0   u8   version (1)
    1   u8   number of ancestor inodes that follow the fixed part (0..5)
    2   u16  reserved (0)
    4   u32  export id (crc32 of the export path)
    8   u64  inode number
    16  u32  low 32 bits of st_dev
    20  u32  generation: 32 bits of the birth time (statx btime; 0 if unknown)
    24  u64* ancestors: parent, grandparent, ... (a search hint)

A handle names an inode, so it survives a server restart and a rename; the
generation tells a reused inode number from the object that was deleted.
This module encodes and decodes handles; finding the object a decoded handle
names is the export's backend's job (``Backend.find``: the host filesystem
backends keep an inode -> path cache and search the tree on a miss).  The
fast lane (_fastpath.pyx) writes the same layout in C.
"""

from __future__ import annotations

import os
import struct
import zlib

from ._accel import load
from .fs import MAX_ANCESTORS, NFSError
from .nfs3 import const as C

FH_VERSION = 1
FH_HEAD = struct.Struct(">BBHIQII")
_ANC = [struct.Struct(">%dQ" % n) for n in range(MAX_ANCESTORS + 1)]


def export_id_of(path: bytes) -> int:
    """The export id that every handle of the export at path carries."""
    return zlib.crc32(path)


def py_encode_fh(export_id: int, ino: int, dev: int, gen: int, anc: tuple) -> bytes:
    """The handle of an object (dev: any st_dev, its low 32 bits are kept)."""
    return (FH_HEAD.pack(FH_VERSION, len(anc), 0, export_id, ino, dev & 0xFFFFFFFF, gen)
            + _ANC[len(anc)].pack(*anc))


def py_unpack_fh(fh: bytes):
    """(export id, ino, dev, gen, ancestors) of a well-formed handle, else None."""
    if len(fh) < FH_HEAD.size:
        return None
    ver, nanc, reserved, eid, ino, dev, gen = FH_HEAD.unpack_from(fh)
    if (ver != FH_VERSION or nanc > MAX_ANCESTORS or reserved
            or len(fh) != FH_HEAD.size + 8 * nanc):
        return None
    return eid, ino, dev, gen, _ANC[nanc].unpack_from(fh, FH_HEAD.size)


encode_fh, unpack_fh = py_encode_fh, py_unpack_fh
_cx = load("_handles")
if _cx is not None:  # the Cython twin, whose C functions the fast lane cimports
    encode_fh, unpack_fh = _cx.encode_fh, _cx.unpack_fh


def decode_fh(fh: bytes, export_id: int):
    """(ino, dev, gen, ancestors) of a handle of the export export_id, or NFSError."""
    f = unpack_fh(fh if type(fh) is bytes else bytes(fh))
    if f is None:
        raise NFSError(C.NFS3ERR_BADHANDLE)
    if f[0] != export_id:
        raise NFSError(C.NFS3ERR_STALE)
    return f[1:]


def export_id_in(fh: bytes) -> int:
    """The export id field of a handle (its length checked by the caller)."""
    return int.from_bytes(fh[4:8], "big")


class Export:
    """One export: its name, its exports(5) entry, its handle space and its backend.

    Everything about storage (attributes, names, data, ownership and
    permission rules) is the backend's (fastnfs.backends); the export turns
    handles into the backend's objects and back.
    """

    def __init__(self, path, backend, *, entry=None, name: bytes | None = None):
        if isinstance(path, str):
            path = os.fsencode(path)
        self.path = path
        self.name = self.path if name is None else name  # what clients MNT and EXPORT lists
        self.entry = entry
        self.backend = backend
        self._opts_memo: dict = {}
        self.export_id = export_id_of(self.path)
        self.fsid = backend.fsid
        self.root_fh = self.fh(backend.root())

    def close(self) -> None:
        self.backend.close()

    def options_for(self, addr: str):
        """ExportOptions for a client address, or None if it is not allowed."""
        try:
            return self._opts_memo[addr]
        except KeyError:
            pass
        opts = self.entry.options_for(addr)
        if len(self._opts_memo) > 4096:
            self._opts_memo.clear()
        self._opts_memo[addr] = opts
        return opts

    def set_entry(self, entry) -> None:
        """New options after an exports reload; handles stay valid."""
        self.entry = entry
        self._opts_memo = {}

    # -- handles -------------------------------------------------------------
    def fh_of(self, ino: int, dev: int, gen: int, anc: tuple) -> bytes:
        return encode_fh(self.export_id, ino, dev, gen, anc)

    def fh(self, obj) -> bytes:
        st = obj.st
        return encode_fh(self.export_id, obj.ino, st.st_dev, st.gen, obj.anc)

    def decode_fh(self, fh: bytes):
        return decode_fh(fh, self.export_id)

    def resolve(self, fh: bytes, cred=None):
        """The object a handle names, or NFSError(STALE/BADHANDLE).

        cred (the caller's, after squashing) lets a backend that serves with
        the caller's credentials take them on for what follows.
        """
        ino, dev, gen, anc = decode_fh(fh, self.export_id)
        return self.backend.find(cred, ino, dev, gen, anc)

    def lookup(self, dirobj, name: bytes):
        """One name in a directory with the server's rights (MOUNT's walk)."""
        return self.backend.walk(dirobj, name)
