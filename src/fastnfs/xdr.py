"""XDR (RFC 4506) reader and writer.

This file is the plain-Python reference ("twin") of the Cython module
``fastnfs._xdr``.  Both expose the same ``Unpacker`` and ``Packer`` API; the
names ``Unpacker``/``Packer`` exported here are the Cython classes unless
``FASTNFS_PURE=1`` is set or the extension is not built.  Property tests hold
the two against each other and against an independent XDR library.

Every length taken from the wire is checked against the bytes that are
actually present *before* anything is allocated, so a 4-byte "length 4 GiB"
costs nothing (RFC 4506 section 4.10 gives no upper bound; we always pass one).
"""

from __future__ import annotations

import errno
import os
import struct

__all__ = ["XdrError", "Unpacker", "Packer", "PyUnpacker", "PyPacker", "IMPLEMENTATION"]


from ._accel import load
from .errors import XdrError


_MAX_OFFSET = (1 << 63) - 1  # off_t
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_u32 = struct.Struct(">I")
_i32 = struct.Struct(">i")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")
_fattr3 = struct.Struct(">IIIIIQQIIQQIIIIII")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class PyUnpacker:
    """Decode XDR items from a bytes-like object, front to back."""

    __slots__ = ("_buf", "_pos", "_end")

    def __init__(self, data, pos: int = 0, end: int | None = None):
        buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        if end is None:
            end = len(buf)  # bytes, not items, for a memoryview of a wider format
        if not 0 <= pos <= end <= len(buf):
            raise XdrError("bad window [%r:%r] on %d bytes" % (pos, end, len(buf)))
        self._buf = buf
        self._pos = pos
        self._end = end

    @property
    def pos(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def _take(self, n: int) -> int:
        p = self._pos
        if n > self._end - p:
            raise XdrError("truncated: need %d bytes at offset %d" % (n, p))
        self._pos = p + n
        return p

    def u32(self) -> int:
        p = self._take(4)
        return _u32.unpack_from(self._buf, p)[0]

    def i32(self) -> int:
        p = self._take(4)
        return _i32.unpack_from(self._buf, p)[0]

    def u64(self) -> int:
        p = self._take(8)
        return _u64.unpack_from(self._buf, p)[0]

    def i64(self) -> int:
        p = self._take(8)
        return _i64.unpack_from(self._buf, p)[0]

    def boolean(self) -> bool:
        v = self.u32()
        if v > 1:
            raise XdrError("bool out of range: %d" % v)
        return v == 1

    def fixed(self, n: int) -> bytes:
        """Fixed-length opaque[n] (padded to a multiple of 4)."""
        if n < 0:
            raise XdrError("negative length %d" % n)
        p = self._take((n + 3) & ~3)
        return bytes(self._buf[p:p + n])

    def opaque(self, maxlen: int) -> bytes:
        """Variable-length opaque<maxlen> as bytes."""
        n = self.u32()
        if n > maxlen:
            raise XdrError("opaque length %d over limit %d" % (n, maxlen))
        p = self._take((n + 3) & ~3)
        return bytes(self._buf[p:p + n])

    string = opaque

    def opaque_view(self, maxlen: int) -> memoryview:
        """Variable-length opaque<maxlen> without copying (WRITE data)."""
        n = self.u32()
        if n > maxlen:
            raise XdrError("opaque length %d over limit %d" % (n, maxlen))
        p = self._take((n + 3) & ~3)
        return memoryview(self._buf)[p:p + n]

    def skip(self, n: int) -> None:
        if n < 0:
            raise XdrError("negative length %d" % n)
        self._take(n)


class PyPacker:
    """Encode XDR items into a growing buffer.

    ``reserve`` leaves that many zero bytes at the front: the TCP transport
    fills the first four with the record mark (RFC 5531 section 11).
    """

    __slots__ = ("_buf",)

    def __init__(self, reserve: int = 0):
        self._buf = bytearray(reserve)

    def __len__(self) -> int:
        return len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def getbuffer(self) -> bytearray:
        return self._buf

    def truncate(self, n: int) -> None:
        del self._buf[n:]

    def u32(self, v: int) -> None:
        self._buf += _u32.pack(v)

    def i32(self, v: int) -> None:
        self._buf += _i32.pack(v)

    def u64(self, v: int) -> None:
        self._buf += _u64.pack(v)

    def i64(self, v: int) -> None:
        self._buf += _i64.pack(v)

    def boolean(self, v) -> None:
        self._buf += _u32.pack(1 if v else 0)

    def fixed(self, data, n: int | None = None) -> None:
        """Fixed-length opaque: data must be n bytes (default len(data))."""
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        if n is not None and size != n:
            raise XdrError("fixed opaque needs %d bytes, got %d" % (n, size))
        self._buf += data
        self._buf += _PAD[size & 3]

    def opaque(self, data) -> None:
        n = len(data) if type(data) is bytes else memoryview(data).nbytes
        self._buf += _u32.pack(n)
        self._buf += data
        self._buf += _PAD[n & 3]

    string = opaque

    def raw(self, data) -> None:
        """Append bytes that are already XDR-encoded."""
        self._buf += data

    def read_data(self, fd: int, count: int, offset: int, size: int, nowait: bool = False):
        """READ3resok's data (RFC 1813 section 3.3.6) as an opaque read from fd (a
        file of size bytes) straight into the buffer; with nowait only from the
        page cache.  The bytes read; None when nowait and not all of it is in
        memory (nothing is appended then); OSError when the read fails."""
        buf = self._buf
        start = len(buf)
        if count <= 0 or offset > _MAX_OFFSET:
            buf += bytes(4)  # nothing asked, or past any off_t: no data (and eof)
            return 0
        buf += bytes(4 + count)
        try:
            with memoryview(buf) as mv:
                n = os.preadv(fd, [mv[start + 4:start + 4 + count]], offset,
                              _RWF_NOWAIT if nowait else 0)
        except OSError as e:
            del buf[start:]
            if nowait and e.errno in (errno.EAGAIN, errno.EOPNOTSUPP):
                return None  # EOPNOTSUPP: a filesystem without RWF_NOWAIT
            raise
        except BaseException:
            del buf[start:]
            raise
        if nowait and n < count and offset + n < size:
            del buf[start:]  # a part: a short READ is legal, but costs a round trip
            return None
        del buf[start + 4 + n:]
        _u32.pack_into(buf, start, n)
        buf += _PAD[n & 3]
        return n

    def put_u32_at(self, offset: int, v: int) -> None:
        _u32.pack_into(self._buf, offset, v)

    def fattr3(self, ftype, mode, nlink, uid, gid, size, used, specmajor, specminor,
               fsid, fileid, atime_ns, mtime_ns, ctime_ns) -> None:
        """RFC 1813 fattr3 in one call (the hottest structure of all).

        nfstime3.seconds is a uint32 (RFC 1813 section 2.5): like Linux knfsd
        we send the low 32 bits, so pre-1970 times do not fail the reply.
        """
        self._buf += _fattr3.pack(
            ftype, mode & 0o7777, nlink, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF,
            size, used, specmajor, specminor, fsid, fileid,
            (atime_ns // 1_000_000_000) & 0xFFFFFFFF, atime_ns % 1_000_000_000,
            (mtime_ns // 1_000_000_000) & 0xFFFFFFFF, mtime_ns % 1_000_000_000,
            (ctime_ns // 1_000_000_000) & 0xFFFFFFFF, ctime_ns % 1_000_000_000)


Unpacker = PyUnpacker
Packer = PyPacker
IMPLEMENTATION = "python"

_cx = load("_xdr")
if _cx is not None:
    Packer, Unpacker = _cx.Packer, _cx.Unpacker  # noqa: F811  (Cython twin)
    IMPLEMENTATION = "cython"
