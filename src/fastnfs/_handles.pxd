# C-level interface of fastnfs._handles: the filehandle layout (handles.py
# documents it), cimported by the fast lane so both paths pack one layout.

from libc.stdint cimport uint32_t, uint64_t

cdef enum:
    FH_VERSION = 1
    FH_HEAD = 24            # the fixed part
    FH_MAX_ANC = 5          # fs.MAX_ANCESTORS
    FH_MAX = 64             # FH_HEAD + 8 * FH_MAX_ANC

cdef struct fh_t:
    uint32_t export_id
    uint64_t ino
    uint32_t dev
    uint32_t gen
    uint32_t nanc
    const unsigned char* anc    # nanc big-endian u64 ancestors, inside the handle

cdef int fh_unpack(const unsigned char* fh, Py_ssize_t n, fh_t* out) noexcept nogil
cdef Py_ssize_t fh_pack(unsigned char* w, uint32_t export_id, uint64_t ino, uint64_t dev,
                        uint32_t gen, const unsigned char* anc_be, uint32_t nanc) noexcept nogil
cdef uint32_t fh_child_anc(unsigned char* anc_be, uint64_t dir_ino,
                           const fh_t* dir_fh) noexcept nogil
cdef uint32_t fh_put_anc(unsigned char* anc_be, tuple anc) except? 0xFFFFFFFF
