# C-level interface of fastnfs._xdr, for other Cython modules to cimport:
#     from fastnfs._xdr cimport Unpacker, Packer
# The read_*/write_* methods skip Python argument parsing and int boxing.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


# the largest offset a file may have (off_t; FSINFO's maxfilesize, nfs3/io.py
# MAX_OFFSET): READ returns nothing past it, WRITE past it is NFS3ERR_FBIG
cdef extern from *:
    """
    #define FASTNFS_MAX_OFFSET 0x7FFFFFFFFFFFFFFFULL
    """
    const unsigned long long MAX_OFFSET "FASTNFS_MAX_OFFSET"


# big-endian loads and stores (XDR's byte order, RFC 4506 section 4.1), for
# every Cython module that reads or writes wire bytes itself
cdef inline uint32_t get_be32(const unsigned char* d) noexcept nogil:
    return (<uint32_t>d[0] << 24) | (<uint32_t>d[1] << 16) | (<uint32_t>d[2] << 8) | d[3]


cdef inline uint64_t get_be64(const unsigned char* d) noexcept nogil:
    return (<uint64_t>get_be32(d) << 32) | get_be32(d + 4)


cdef inline void put_be32(unsigned char* d, uint32_t v) noexcept nogil:
    d[0] = v >> 24
    d[1] = (v >> 16) & 0xFF
    d[2] = (v >> 8) & 0xFF
    d[3] = v & 0xFF


cdef inline void put_be64(unsigned char* d, uint64_t v) noexcept nogil:
    put_be32(d, <uint32_t>(v >> 32))
    put_be32(d + 4, <uint32_t>v)


# ftype3 (RFC 1813 section 2.6) of a mode's file type bits; anything unknown
# reads as a regular file (nfs3.types.put_fattr3's table is the Python twin)
cdef inline uint32_t ftype3(uint32_t mode) noexcept nogil:
    cdef uint32_t t = mode & 0o170000
    if t == 0o040000:
        return 2                    # NF3DIR
    if t == 0o060000:
        return 3                    # NF3BLK
    if t == 0o020000:
        return 4                    # NF3CHR
    if t == 0o120000:
        return 5                    # NF3LNK
    if t == 0o140000:
        return 6                    # NF3SOCK
    if t == 0o010000:
        return 7                    # NF3FIFO
    return 1                        # NF3REG


# READ's data into w (RFC 1813 section 3.3.6), from the page cache only when nowait:
# the bytes read, -1 with errno, -2 when not all of it is in memory
cdef Py_ssize_t read_data(int fd, unsigned char* w, Py_ssize_t count, unsigned long long offset,
                          unsigned long long size, bint nowait) noexcept nogil


cdef class Unpacker:
    cdef Py_buffer _view            # held for the Unpacker's lifetime
    cdef bint _have_view
    cdef const unsigned char* _data
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _end
    cdef object _src                # the object passed in
    cdef object _mv                 # memoryview(_src).cast("B"), made on demand

    cdef Py_ssize_t take(self, uint64_t n) except -1   # offset of n consumed bytes
    cdef uint32_t read_u32(self) except? 0xFFFFFFFF
    cdef int32_t read_i32(self) except? -1
    cdef uint64_t read_u64(self) except? 0xFFFFFFFFFFFFFFFF
    cdef int64_t read_i64(self) except? -1
    cdef int read_bool(self) except -1
    cdef bytes read_fixed(self, Py_ssize_t n)
    cdef bytes read_opaque(self, uint64_t maxlen)
    cdef object read_opaque_view(self, uint64_t maxlen)


cdef class Packer:
    cdef unsigned char* _data       # PyMem_Malloc'd, _cap bytes
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _exports        # live buffer exports (getbuffer views)

    cdef Py_ssize_t size(self) noexcept                   # bytes packed so far
    cdef const unsigned char* bytes_at(self) noexcept     # where they are (valid until the next write)
    cdef int restart(self) except -1                      # truncate(0)
    cdef unsigned char* extend(self, Py_ssize_t n) except NULL  # n bytes appended, uninitialised
    cdef int write_u32(self, uint32_t v) except -1
    cdef int write_i32(self, int32_t v) except -1
    cdef int write_u64(self, uint64_t v) except -1
    cdef int write_i64(self, int64_t v) except -1
    cdef int write_raw(self, const unsigned char* p, Py_ssize_t n) except -1
    cdef int write_fixed(self, const unsigned char* p, Py_ssize_t n) except -1
    cdef int write_opaque(self, const unsigned char* p, Py_ssize_t n) except -1
    # READ's data as an opaque (read_data); -1 with errno set, -2: not all in memory
    cdef Py_ssize_t write_read(self, int fd, Py_ssize_t count, unsigned long long offset,
                               unsigned long long size, bint nowait) except -3
    # wcc_attr (RFC 1813 section 2.6): size, mtime, ctime
    cdef int write_wcc_attr(self, uint64_t size, int64_t mtime_ns, int64_t ctime_ns) except -1
    cdef int write_fattr3(self, uint32_t ftype, uint32_t mode, uint32_t nlink,
                          uint32_t uid, uint32_t gid, uint64_t size, uint64_t used,
                          uint32_t specmajor, uint32_t specminor, uint64_t fsid,
                          uint64_t fileid, int64_t atime_ns, int64_t mtime_ns,
                          int64_t ctime_ns) except -1
