# cython: language_level=3
"""The filehandle layout in C: the one place it is packed and unpacked.

handles.py documents the layout and keeps the pure-Python twin
(``py_encode_fh``, ``py_unpack_fh``); it uses ``encode_fh`` and
``unpack_fh`` from here unless FASTNFS_PURE=1.  The fast lane cimports the
``fh_*`` functions (_handles.pxd).  tests/test_handles_twins.py holds the two
to the same bytes and the same verdicts.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from fastnfs._xdr cimport get_be32, get_be64, put_be32, put_be64


cdef int fh_unpack(const unsigned char* fh, Py_ssize_t n, fh_t* out) noexcept nogil:
    """The fields of a well-formed handle into out: 0, or -1 for a malformed
    one (NFS3ERR_BADHANDLE).  The export id is the caller's to check."""
    if n < FH_HEAD:
        return -1
    cdef uint32_t nanc = fh[1]
    if fh[0] != FH_VERSION or nanc > FH_MAX_ANC or fh[2] or fh[3] or n != FH_HEAD + 8 * nanc:
        return -1
    out.export_id = get_be32(fh + 4)
    out.ino = get_be64(fh + 8)
    out.dev = get_be32(fh + 16)
    out.gen = get_be32(fh + 20)
    out.nanc = nanc
    out.anc = fh + FH_HEAD
    return 0


cdef Py_ssize_t fh_pack(unsigned char* w, uint32_t export_id, uint64_t ino, uint64_t dev,
                        uint32_t gen, const unsigned char* anc_be, uint32_t nanc) noexcept nogil:
    """A handle into w (room for FH_MAX bytes); its length.  dev is the
    whole st_dev: the handle keeps its low 32 bits."""
    w[0] = FH_VERSION
    w[1] = nanc
    w[2] = 0
    w[3] = 0
    put_be32(w + 4, export_id)
    put_be64(w + 8, ino)
    put_be32(w + 16, <uint32_t>(dev & 0xFFFFFFFFULL))
    put_be32(w + 20, gen)
    if nanc:
        memcpy(w + FH_HEAD, anc_be, 8 * nanc)
    return FH_HEAD + 8 * nanc


cdef uint32_t fh_child_anc(unsigned char* anc_be, uint64_t dir_ino,
                           const fh_t* dir_fh) noexcept nogil:
    """The ancestors of a directory's child (fs.Obj.child_anc): the directory,
    then its own first ones; their number."""
    cdef uint32_t nanc = dir_fh.nanc + 1 if dir_fh.nanc < FH_MAX_ANC else FH_MAX_ANC
    put_be64(anc_be, dir_ino)
    if nanc > 1:
        memcpy(anc_be + 8, dir_fh.anc, 8 * (nanc - 1))
    return nanc


cdef uint32_t fh_put_anc(unsigned char* anc_be, tuple anc) except? 0xFFFFFFFF:
    """A tuple of ancestor inodes as a handle carries them (room for
    FH_MAX_ANC); their number.  ValueError for too many."""
    cdef Py_ssize_t i, nanc = len(anc)
    if nanc > FH_MAX_ANC:
        raise ValueError("too many ancestors")
    for i in range(nanc):
        put_be64(anc_be + 8 * i, <uint64_t>anc[i])
    return <uint32_t>nanc


def encode_fh(uint32_t export_id, uint64_t ino, dev, uint32_t gen, tuple anc):
    """handles.py_encode_fh: the handle of an object (dev: any st_dev, its low 32 bits kept)."""
    cdef unsigned char anc_be[8 * FH_MAX_ANC]
    cdef unsigned char w[FH_MAX]
    cdef uint32_t nanc = fh_put_anc(anc_be, anc)
    cdef Py_ssize_t n = fh_pack(w, export_id, ino, <uint64_t>(dev & 0xFFFFFFFFFFFFFFFF), gen,
                                anc_be, nanc)
    return PyBytes_FromStringAndSize(<const char*>w, n)


def unpack_fh(bytes fh):
    """handles.py_unpack_fh: (export id, ino, dev, gen, ancestors), or None when malformed."""
    cdef fh_t f
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(fh)
    if fh_unpack(d, len(fh), &f) < 0:
        return None
    cdef uint32_t i
    anc = tuple([get_be64(f.anc + 8 * i) for i in range(f.nanc)])
    return f.export_id, f.ino, f.dev, f.gen, anc
