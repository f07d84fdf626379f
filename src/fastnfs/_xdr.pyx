# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of fastnfs.xdr.PyUnpacker / PyPacker (XDR, RFC 4506).

Same Python API and exceptions as the reference classes; see fastnfs/xdr.py.

* ``Unpacker`` holds a buffer export of its input (bytes, bytearray,
  memoryview, ...) and reads big-endian integers straight from the C pointer.
  Every length is checked against the bytes present before anything is
  allocated.
* ``Packer`` appends into a PyMem buffer grown geometrically.  ``getbuffer()``
  returns a writable **memoryview** of the packed bytes (zero copy; the
  reference returns its bytearray).  Like a bytearray with a live memoryview,
  the Packer refuses to change size (BufferError) while such a view exists;
  ``put_u32_at`` still works.  ``getvalue()`` returns an independent bytes.
* Bad argument values to Packer methods raise ``struct.error``, as the
  reference (which packs with ``struct``) does.
"""

import struct

cimport cython
from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE, PyBUF_STRIDES,
                             PyBuffer_Release, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.stdint cimport (INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, UINT32_MAX, UINT64_MAX,
                          int32_t, int64_t, uint32_t, uint64_t)
from libc.string cimport memcpy, memset

# circular import is fine: fastnfs.xdr defines XdrError before importing us
from fastnfs.errors import XdrError

cdef extern from "Python.h":
    # Declared noexcept: callers test for the error value themselves.
    bint PyLong_Check(object o) noexcept
    unsigned long PyLong_AsUnsignedLong(object o) noexcept
    long PyLong_AsLongAndOverflow(object o, int* overflow) noexcept
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) noexcept
    unsigned long long PyLong_AsUnsignedLongLongMask(object o) noexcept
    unsigned long long PyLong_AsUnsignedLongLong(object o) noexcept
    object PyNumber_Index(object o)
    object PyMemoryView_FromObject(object o)
    Py_ssize_t PY_SSIZE_T_MAX

cdef object StructError = struct.error
cdef Py_ssize_t INITIAL_CAPACITY = 256
cdef char* FORMAT_B = "B"


# byte order: get_be32/64, put_be32/64 (_xdr.pxd)

# ------------------------------------------------ Python int -> C, as struct

cdef int _not_integer(object v) except -1:
    raise StructError("required argument is not an integer")

cdef int _out_of_range() except -1:
    PyErr_Clear()
    raise StructError("argument out of range")

cdef inline int _arg_u(object v, uint64_t maxv, uint64_t* out) except -1:
    """v as an unsigned C value <= maxv; struct.error like struct.pack."""
    cdef uint64_t x
    if not PyLong_Check(v):
        try:
            v = PyNumber_Index(v)
        except TypeError:
            _not_integer(v)
    if sizeof(unsigned long) >= 8:
        x = PyLong_AsUnsignedLong(v)
        if x == <unsigned long>-1 and PyErr_Occurred() != NULL:
            _out_of_range()
    else:
        x = PyLong_AsUnsignedLongLong(v)
        if x == <unsigned long long>-1 and PyErr_Occurred() != NULL:
            _out_of_range()
    if x > maxv:
        _out_of_range()
    out[0] = x
    return 0

cdef inline int _arg_i(object v, int64_t lo, int64_t hi, int64_t* out) except -1:
    """v as a signed C value in [lo, hi]; struct.error like struct.pack."""
    cdef int overflow = 0
    cdef int64_t x
    if not PyLong_Check(v):
        try:
            v = PyNumber_Index(v)
        except TypeError:
            _not_integer(v)
    if sizeof(long) >= 8:
        x = PyLong_AsLongAndOverflow(v, &overflow)
    else:
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x < lo or x > hi:
        _out_of_range()
    out[0] = x
    return 0

cdef inline uint64_t _arg_mask(object v) except? 0xFFFFFFFF:
    """Low 64 bits of int v (two's complement), i.e. what ``v & mask`` keeps."""
    cdef unsigned long long x
    if not PyLong_Check(v):
        v = PyNumber_Index(v)   # TypeError for floats, as ``float & int``
    x = PyLong_AsUnsignedLongLongMask(v)
    return x

cdef int _split_ns(object v, uint32_t* sec, uint32_t* nsec) except -1:
    """nfstime3 from nanoseconds: floor division, seconds kept mod 2**32."""
    cdef int overflow = 0
    cdef long long x
    cdef uint64_t t
    if PyLong_Check(v):
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if not overflow:
            # Python (floor) semantics: cdivision is off in this module
            sec[0] = <uint32_t><uint64_t>(x // 1000000000)
            nsec[0] = <uint32_t>(x % 1000000000)
            return 0
    # anything unusual: the reference's own arithmetic
    _arg_u((v // 1000000000) & 0xFFFFFFFF, 0xFFFFFFFF, &t)
    sec[0] = <uint32_t>t
    _arg_u(v % 1000000000, 0xFFFFFFFF, &t)
    nsec[0] = <uint32_t>t
    return 0


# ------------------------------------------------------------------ Unpacker

cdef int _truncated(object need, Py_ssize_t pos) except -1:
    raise XdrError("truncated: need %d bytes at offset %d" % (need, pos))

cdef inline Py_ssize_t _take(Unpacker u, uint64_t n) except -1:
    cdef Py_ssize_t p = u._pos
    if n > <uint64_t>(u._end - p):
        _truncated(n, p)
    u._pos = p + <Py_ssize_t>n
    return p

cdef inline uint32_t _get_u32(Unpacker u) except? 0xFFFFFFFF:
    return get_be32(u._data + _take(u, 4))

cdef inline uint64_t _get_u64(Unpacker u) except? 0xFFFFFFFFFFFFFFFF:
    return get_be64(u._data + _take(u, 8))

cdef inline int _get_bool(Unpacker u) except -1:
    cdef uint32_t v = _get_u32(u)
    if v > 1:
        raise XdrError("bool out of range: %d" % v)
    return <int>v

cdef Py_ssize_t _length_arg(Unpacker u, object n) except -1:
    """A caller-supplied length (fixed, skip) as for the reference."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_Check(n):
        n = PyNumber_Index(n)
    x = PyLong_AsLongLongAndOverflow(n, &overflow)
    if overflow < 0 or (not overflow and x < 0):
        raise XdrError("negative length %d" % n)
    if overflow > 0 or <unsigned long long>x > <unsigned long long>PY_SSIZE_T_MAX - 3:
        _truncated((n + 3) & ~3, u._pos)
    return <Py_ssize_t>x

cdef inline int _over_limit(uint32_t n, object maxlen) except -1:
    """1 when n > maxlen; maxlen is any int (or anything comparable)."""
    cdef int overflow = 0
    cdef long long m
    if PyLong_Check(maxlen):
        m = PyLong_AsLongLongAndOverflow(maxlen, &overflow)
        if overflow:
            return overflow < 0
        return <long long>n > m
    return bool(n > maxlen)

cdef inline uint32_t _get_len(Unpacker u, object maxlen) except? 0xFFFFFFFF:
    cdef uint32_t n = _get_u32(u)
    if _over_limit(n, maxlen):
        raise XdrError("opaque length %d over limit %d" % (n, maxlen))
    return n


from posix.types cimport off_t
from cpython.exc cimport PyErr_SetFromErrno
from libc.errno cimport EAGAIN, EOPNOTSUPP, errno

cdef extern from "<sys/uio.h>" nogil:
    int RWF_NOWAIT
    struct iovec:
        void* iov_base
        size_t iov_len
    ssize_t preadv2(int fd, const iovec* iov, int iovcnt, off_t offset, int flags)


cdef Py_ssize_t read_data(int fd, unsigned char* w, Py_ssize_t count, unsigned long long offset,
                          unsigned long long size, bint nowait) noexcept nogil:
    """READ's data (RFC 1813 section 3.3.6): up to count bytes at offset of the
    file open at fd, whose size is size, into w; with nowait only from the page
    cache.  The bytes read; -1 with errno when the read fails; -2 with nowait
    when not all of it is in memory (a thread that may wait reads it then)."""
    if count <= 0 or offset > MAX_OFFSET:
        return 0            # nothing asked, or past any off_t: no data (and eof)
    cdef iovec iov
    iov.iov_base = <void*>w
    iov.iov_len = <size_t>count
    cdef ssize_t n = preadv2(fd, &iov, 1, <off_t>offset, RWF_NOWAIT if nowait else 0)
    if n < 0:
        if nowait and (errno == EAGAIN or errno == EOPNOTSUPP):
            return -2       # EOPNOTSUPP: a filesystem without RWF_NOWAIT
        return -1
    if nowait and n < count and offset + <unsigned long long>n < size:
        return -2           # a part: a short READ is legal, but costs the client a round trip
    return n


@cython.freelist(8)
cdef class Unpacker:
    """Decode XDR items from a bytes-like object, front to back."""

    def __init__(self, data, pos=0, end=None):
        cdef Py_ssize_t size
        if self._have_view:  # __init__ called again
            PyBuffer_Release(&self._view)
            self._have_view = False
        self._data = NULL
        self._pos = self._end = 0
        self._mv = None
        PyObject_GetBuffer(data, &self._view, PyBUF_SIMPLE)
        self._have_view = True
        self._src = data
        size = self._view.len
        if end is None and PyLong_Check(pos) and pos == 0:
            self._end = size
        else:
            if end is None:
                end = size
            if not 0 <= pos <= end <= size:
                raise XdrError("bad window [%r:%r] on %d bytes" % (pos, end, size))
            self._pos = pos
            self._end = end
        self._data = <const unsigned char*>self._view.buf

    def __dealloc__(self):
        if self._have_view:
            PyBuffer_Release(&self._view)

    @property
    def pos(self):
        return self._pos

    def remaining(self):
        return self._end - self._pos

    def u32(self):
        return _get_u32(self)

    def i32(self):
        return <int32_t>_get_u32(self)

    def u64(self):
        return _get_u64(self)

    def i64(self):
        return <int64_t>_get_u64(self)

    def boolean(self):
        return _get_bool(self) == 1

    def fixed(self, n):
        """Fixed-length opaque[n] (padded to a multiple of 4)."""
        return self.read_fixed(_length_arg(self, n))

    def opaque(self, maxlen):
        """Variable-length opaque<maxlen> as bytes."""
        cdef uint32_t n = _get_len(self, maxlen)
        cdef Py_ssize_t p = _take(self, (<uint64_t>n + 3) & ~(<uint64_t>3))
        return PyBytes_FromStringAndSize(<const char*>self._data + p, n)

    string = opaque

    def opaque_view(self, maxlen):
        """Variable-length opaque<maxlen> without copying (WRITE data)."""
        cdef uint32_t n = _get_len(self, maxlen)
        cdef Py_ssize_t p = _take(self, (<uint64_t>n + 3) & ~(<uint64_t>3))
        if self._mv is None:
            self._mv = PyMemoryView_FromObject(self._src).cast("B")
        return self._mv[p:p + n]

    def skip(self, n):
        _take(self, <uint64_t>_length_arg(self, n))

    # C-level API (see _xdr.pxd)

    cdef Py_ssize_t take(self, uint64_t n) except -1:
        return _take(self, n)

    cdef uint32_t read_u32(self) except? 0xFFFFFFFF:
        return _get_u32(self)

    cdef int32_t read_i32(self) except? -1:
        return <int32_t>_get_u32(self)

    cdef uint64_t read_u64(self) except? 0xFFFFFFFFFFFFFFFF:
        return _get_u64(self)

    cdef int64_t read_i64(self) except? -1:
        return <int64_t>_get_u64(self)

    cdef int read_bool(self) except -1:
        return _get_bool(self)

    cdef bytes read_fixed(self, Py_ssize_t n):
        if n < 0:
            raise XdrError("negative length %d" % n)
        cdef Py_ssize_t p = _take(self, (<uint64_t>n + 3) & ~(<uint64_t>3))
        return PyBytes_FromStringAndSize(<const char*>self._data + p, n)

    cdef bytes read_opaque(self, uint64_t maxlen):
        cdef uint32_t n = _get_u32(self)
        if n > maxlen:
            raise XdrError("opaque length %d over limit %d" % (n, maxlen))
        cdef Py_ssize_t p = _take(self, (<uint64_t>n + 3) & ~(<uint64_t>3))
        return PyBytes_FromStringAndSize(<const char*>self._data + p, n)

    cdef object read_opaque_view(self, uint64_t maxlen):
        cdef uint32_t n = _get_u32(self)
        if n > maxlen:
            raise XdrError("opaque length %d over limit %d" % (n, maxlen))
        cdef Py_ssize_t p = _take(self, (<uint64_t>n + 3) & ~(<uint64_t>3))
        if self._mv is None:
            self._mv = PyMemoryView_FromObject(self._src).cast("B")
        return self._mv[p:p + n]


# -------------------------------------------------------------------- Packer

cdef int _grow(Packer self, Py_ssize_t n) except -1:
    cdef Py_ssize_t need, cap
    cdef unsigned char* p
    if self._exports:
        raise BufferError("Existing exports of data: object cannot be re-sized")
    if n > PY_SSIZE_T_MAX - self._len:
        raise MemoryError()
    need = self._len + n
    cap = self._cap
    if cap > PY_SSIZE_T_MAX // 2:
        cap = PY_SSIZE_T_MAX
    else:
        cap *= 2
    if cap < need:
        cap = need
    p = <unsigned char*>PyMem_Realloc(self._data, <size_t>cap)
    if p == NULL:
        raise MemoryError()
    self._data = p
    self._cap = cap
    return 0

cdef inline unsigned char* _extend(Packer self, Py_ssize_t n) except NULL:
    """Append n uninitialised bytes; returns where they start."""
    cdef Py_ssize_t n0 = self._len
    if n > self._cap - n0 or self._exports:
        if n == 0:
            return self._data + n0
        _grow(self, n)
    self._len = n0 + n
    return self._data + n0

cdef inline int _put_fixed(Packer self, const unsigned char* src, Py_ssize_t n) except -1:
    cdef Py_ssize_t pad = (-n) & 3
    cdef unsigned char* d = _extend(self, n + pad)
    if n:
        memcpy(d, src, <size_t>n)
    memset(d + n, 0, <size_t>pad)
    return 0

cdef inline int _put_opaque(Packer self, const unsigned char* src, Py_ssize_t n) except -1:
    cdef Py_ssize_t pad = (-n) & 3
    cdef unsigned char* d
    if <uint64_t>n > 0xFFFFFFFF:
        raise StructError("argument out of range")
    d = _extend(self, 4 + n + pad)
    put_be32(d, <uint32_t>n)
    if n:
        memcpy(d + 4, src, <size_t>n)
    memset(d + 4 + n, 0, <size_t>pad)
    return 0

cdef inline void _put_fattr3(unsigned char* d, uint32_t ftype, uint32_t mode, uint32_t nlink,
                             uint32_t uid, uint32_t gid, uint64_t size, uint64_t used,
                             uint32_t specmajor, uint32_t specminor, uint64_t fsid,
                             uint64_t fileid, uint32_t asec, uint32_t ansec, uint32_t msec,
                             uint32_t mnsec, uint32_t csec, uint32_t cnsec) noexcept nogil:
    # RFC 1813 section 2.6 fattr3: 84 bytes
    put_be32(d, ftype)
    put_be32(d + 4, mode & 0o7777)
    put_be32(d + 8, nlink)
    put_be32(d + 12, uid)
    put_be32(d + 16, gid)
    put_be64(d + 20, size)
    put_be64(d + 28, used)
    put_be32(d + 36, specmajor)
    put_be32(d + 40, specminor)
    put_be64(d + 44, fsid)
    put_be64(d + 52, fileid)
    put_be32(d + 60, asec)
    put_be32(d + 64, ansec)
    put_be32(d + 68, msec)
    put_be32(d + 72, mnsec)
    put_be32(d + 76, csec)
    put_be32(d + 80, cnsec)

cdef inline void _split_c(int64_t ns, uint32_t* sec, uint32_t* nsec) noexcept:
    sec[0] = <uint32_t><uint64_t>(ns // 1000000000)
    nsec[0] = <uint32_t>(ns % 1000000000)


@cython.freelist(8)
cdef class Packer:
    """Encode XDR items into a growing buffer.

    ``reserve`` leaves that many zero bytes at the front: the TCP transport
    fills the first four with the record mark (RFC 5531 section 11).
    """

    def __cinit__(self):  # constructor arguments go to __init__ only
        self._data = <unsigned char*>PyMem_Malloc(<size_t>INITIAL_CAPACITY)
        if self._data == NULL:
            raise MemoryError()
        self._cap = INITIAL_CAPACITY
        self._len = 0
        self._exports = 0

    def __init__(self, reserve=0):
        cdef Py_ssize_t n
        cdef unsigned char* d
        if self._exports:
            raise BufferError("Existing exports of data: object cannot be re-sized")
        self._len = 0
        if PyLong_Check(reserve):
            n = reserve
            if n < 0:
                raise ValueError("negative count")
            d = _extend(self, n)
            memset(d, 0, <size_t>n)
        else:  # whatever bytearray(reserve) accepts, as the reference
            init = bytearray(reserve)
            self.write_raw(<const unsigned char*>PyByteArray_AS_STRING(init),
                           PyByteArray_GET_SIZE(init))

    def __dealloc__(self):
        PyMem_Free(self._data)
        self._data = NULL

    def __getbuffer__(self, Py_buffer* view, int flags):
        # Writable, 1-D bytes; shape/strides point into the view itself
        # (as PyBuffer_FillInfo does), _len is frozen while exported.
        view.obj = self
        view.buf = <void*>self._data
        view.len = self._len
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if (flags & PyBUF_FORMAT) == PyBUF_FORMAT:
            view.format = FORMAT_B
        view.ndim = 1
        view.shape = NULL
        if (flags & PyBUF_ND) == PyBUF_ND:
            view.shape = &view.len
        view.strides = NULL
        if (flags & PyBUF_STRIDES) == PyBUF_STRIDES:
            view.strides = &view.itemsize
        view.suboffsets = NULL
        view.internal = NULL
        self._exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self._exports -= 1

    def __len__(self):
        return self._len

    def getvalue(self):
        return PyBytes_FromStringAndSize(<const char*>self._data, self._len)

    def getbuffer(self):
        """Writable memoryview of the packed bytes, for transport.write().

        Zero copy: while the view lives the Packer cannot change size.
        """
        return PyMemoryView_FromObject(self)

    def truncate(self, n):
        cdef Py_ssize_t k
        if PyLong_Check(n) and n >= 0:
            k = self._len if n > self._len else n
        else:  # same meaning as the reference's ``del buf[n:]``
            k = slice(n, None).indices(self._len)[0]
        if k < self._len:
            if self._exports:
                raise BufferError("Existing exports of data: object cannot be re-sized")
            self._len = k

    def u32(self, v):
        cdef uint64_t x
        _arg_u(v, 0xFFFFFFFF, &x)
        put_be32(_extend(self, 4), <uint32_t>x)

    def i32(self, v):
        cdef int64_t x
        _arg_i(v, INT32_MIN, INT32_MAX, &x)
        put_be32(_extend(self, 4), <uint32_t>x)

    def u64(self, v):
        cdef uint64_t x
        _arg_u(v, UINT64_MAX, &x)
        put_be64(_extend(self, 8), x)

    def i64(self, v):
        cdef int64_t x
        _arg_i(v, INT64_MIN, INT64_MAX, &x)
        put_be64(_extend(self, 8), <uint64_t>x)

    def boolean(self, v):
        cdef bint b = v
        put_be32(_extend(self, 4), 1 if b else 0)

    def fixed(self, data, n=None):
        """Fixed-length opaque: data must be n bytes (default len(data))."""
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            if n is not None and len(<bytes>data) != n:
                raise XdrError("fixed opaque needs %d bytes, got %d" % (n, len(<bytes>data)))
            _put_fixed(self, <const unsigned char*>PyBytes_AS_STRING(data), len(<bytes>data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if n is not None and view.len != n:
                raise XdrError("fixed opaque needs %d bytes, got %d" % (n, view.len))
            _put_fixed(self, <const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def opaque(self, data):
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            _put_opaque(self, <const unsigned char*>PyBytes_AS_STRING(data), len(<bytes>data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            _put_opaque(self, <const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    string = opaque

    def raw(self, data):
        """Append bytes that are already XDR-encoded."""
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            self.write_raw(<const unsigned char*>PyBytes_AS_STRING(data), len(<bytes>data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.write_raw(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def read_data(self, int fd, Py_ssize_t count, unsigned long long offset,
                  unsigned long long size, bint nowait=False):
        """READ3resok's data (RFC 1813 section 3.3.6) as an opaque, read from fd
        (a file of size bytes) straight into the buffer, copied once, kernel to
        reply (read_data, which the fast lane calls too).  The bytes read; None
        when nowait and not all of it is in memory (nothing is appended then);
        OSError when the read fails."""
        cdef Py_ssize_t n = self.write_read(fd, count, offset, size, nowait)
        if n == -1:
            PyErr_SetFromErrno(OSError)
        return None if n < 0 else n

    def put_u32_at(self, Py_ssize_t offset, v):
        cdef uint64_t x
        cdef Py_ssize_t size = self._len
        if offset < 0:
            if offset + size < 0:
                raise StructError("offset %d out of range for %d-byte buffer" % (offset, size))
            offset += size
        if size - offset < 4:
            raise StructError(
                "pack_into requires a buffer of at least %d bytes for packing 4 bytes at "
                "offset %d (actual buffer size is %d)" % (offset + 4, offset, size))
        _arg_u(v, 0xFFFFFFFF, &x)
        put_be32(self._data + offset, <uint32_t>x)

    def fattr3(self, ftype, mode, nlink, uid, gid, size, used, specmajor, specminor,
               fsid, fileid, atime_ns, mtime_ns, ctime_ns):
        """RFC 1813 fattr3 in one call (the hottest structure of all).

        nfstime3.seconds is a uint32 (RFC 1813 section 2.5): the low 32 bits
        are sent, as Linux knfsd does.
        """
        cdef uint64_t t, a_ftype, a_nlink, a_size, a_used, a_smaj, a_smin, a_fsid, a_fileid
        cdef uint32_t a_mode, a_uid, a_gid, asec, ansec, msec, mnsec, csec, cnsec
        a_mode = <uint32_t>(_arg_mask(mode) & 0o7777)
        a_uid = <uint32_t>_arg_mask(uid)
        a_gid = <uint32_t>_arg_mask(gid)
        _split_ns(atime_ns, &asec, &ansec)
        _split_ns(mtime_ns, &msec, &mnsec)
        _split_ns(ctime_ns, &csec, &cnsec)
        _arg_u(ftype, 0xFFFFFFFF, &a_ftype)
        _arg_u(nlink, 0xFFFFFFFF, &a_nlink)
        _arg_u(size, UINT64_MAX, &a_size)
        _arg_u(used, UINT64_MAX, &a_used)
        _arg_u(specmajor, 0xFFFFFFFF, &a_smaj)
        _arg_u(specminor, 0xFFFFFFFF, &a_smin)
        _arg_u(fsid, UINT64_MAX, &a_fsid)
        _arg_u(fileid, UINT64_MAX, &a_fileid)
        _put_fattr3(_extend(self, 84), <uint32_t>a_ftype, a_mode, <uint32_t>a_nlink, a_uid,
                    a_gid, a_size, a_used, <uint32_t>a_smaj, <uint32_t>a_smin, a_fsid,
                    a_fileid, asec, ansec, msec, mnsec, csec, cnsec)

    # C-level API (see _xdr.pxd)

    cdef unsigned char* extend(self, Py_ssize_t n) except NULL:
        if n < 0:
            raise ValueError("negative size")
        return _extend(self, n)

    cdef int write_u32(self, uint32_t v) except -1:
        put_be32(_extend(self, 4), v)
        return 0

    cdef int write_i32(self, int32_t v) except -1:
        put_be32(_extend(self, 4), <uint32_t>v)
        return 0

    cdef int write_u64(self, uint64_t v) except -1:
        put_be64(_extend(self, 8), v)
        return 0

    cdef int write_i64(self, int64_t v) except -1:
        put_be64(_extend(self, 8), <uint64_t>v)
        return 0

    cdef Py_ssize_t size(self) noexcept:
        return self._len

    cdef const unsigned char* bytes_at(self) noexcept:
        return self._data

    cdef int restart(self) except -1:
        """Empty the buffer for the next reply (truncate(0) in C)."""
        if self._exports:
            raise BufferError("Existing exports of data: object cannot be re-sized")
        self._len = 0
        return 0

    cdef int write_raw(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef unsigned char* d = _extend(self, n)
        if n:
            memcpy(d, p, <size_t>n)
        return 0

    cdef int write_fixed(self, const unsigned char* p, Py_ssize_t n) except -1:
        return _put_fixed(self, p, n)

    cdef int write_opaque(self, const unsigned char* p, Py_ssize_t n) except -1:
        return _put_opaque(self, p, n)

    cdef Py_ssize_t write_read(self, int fd, Py_ssize_t count, unsigned long long offset,
                               unsigned long long size, bint nowait) except -3:
        cdef Py_ssize_t start = self._len
        if count < 0:
            raise ValueError("negative count")
        cdef unsigned char* d = _extend(self, 4 + count + 3)
        cdef Py_ssize_t n
        with nogil:
            n = read_data(fd, d + 4, count, offset, size, nowait)
        if n < 0:
            self._len = start   # errno is the caller's to read
            return n
        d = self._data + start
        put_be32(d, <uint32_t>n)
        memset(d + 4 + n, 0, <size_t>((-n) & 3))
        self._len = start + 4 + n + ((-n) & 3)
        return n

    cdef int write_wcc_attr(self, uint64_t size, int64_t mtime_ns, int64_t ctime_ns) except -1:
        """wcc_attr (RFC 1813 section 2.6), times split as write_fattr3 splits them."""
        cdef uint32_t msec, mnsec, csec, cnsec
        _split_c(mtime_ns, &msec, &mnsec)
        _split_c(ctime_ns, &csec, &cnsec)
        cdef unsigned char* w = _extend(self, 24)
        put_be64(w, size)
        put_be32(w + 8, msec)
        put_be32(w + 12, mnsec)
        put_be32(w + 16, csec)
        put_be32(w + 20, cnsec)
        return 0

    cdef int write_fattr3(self, uint32_t ftype, uint32_t mode, uint32_t nlink,
                          uint32_t uid, uint32_t gid, uint64_t size, uint64_t used,
                          uint32_t specmajor, uint32_t specminor, uint64_t fsid,
                          uint64_t fileid, int64_t atime_ns, int64_t mtime_ns,
                          int64_t ctime_ns) except -1:
        cdef uint32_t asec, ansec, msec, mnsec, csec, cnsec
        _split_c(atime_ns, &asec, &ansec)
        _split_c(mtime_ns, &msec, &mnsec)
        _split_c(ctime_ns, &csec, &cnsec)
        _put_fattr3(_extend(self, 84), ftype, mode, nlink, uid, gid, size, used,
                    specmajor, specminor, fsid, fileid, asec, ansec, msec, mnsec, csec, cnsec)
        return 0
