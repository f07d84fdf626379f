# C-level interface of fastnfs._transport (see the .pyx).

cimport cython
from posix.types cimport off_t

from fastnfs._fastpath cimport FastPath


@cython.final
cdef class _Window:
    cdef bytearray rb           # held while exported, whatever the connection does meanwhile
    cdef Py_ssize_t off, n
    cdef Py_ssize_t exports


@cython.final
cdef class RpcStreamProtocol:
    cdef public object dispatcher
    cdef public object fast
    cdef FastPath cfast             # fast, when it is the compiled lane
    cdef public object connections
    cdef public double last_active
    cdef public Py_ssize_t max_record
    cdef public Py_ssize_t max_inflight
    cdef public object transport
    cdef public object peer
    cdef public int _sock
    cdef readonly bytearray _rb
    cdef object _rv                 # memoryview of _rb: what the general path is handed
    cdef char* _p                   # _rb's bytes
    cdef Py_ssize_t _cap            # len(_rb)
    cdef public Py_ssize_t _lo, _hi
    cdef readonly Py_ssize_t _want
    cdef public bint _held
    cdef public list _frags
    cdef public Py_ssize_t _fraglen
    cdef public Py_ssize_t _inflight
    cdef public bint _paused_reading
    cdef public bint _write_blocked
    cdef _Window _win
    cdef object _out                # replies waiting to be written: None, bytes or a list
    cdef Py_ssize_t _outn           # their size
    cdef bint _lend                 # large cached READs answered by the lane go by sendfile


    cdef int _set_buffer(self, bytearray rb, object rv=*) except -1
    cdef int _take_small(self) except -1
    cdef _Window _window(self)
    cdef int _updated(self, Py_ssize_t nbytes) except -1
    cdef int _move(self, Py_ssize_t need) except -1
    cdef int _drop_buffer(self) except -1
    cdef int _parse(self) except -1
    cdef int _handle(self, Py_ssize_t start, Py_ssize_t end) except -1
    cdef int _handle_bytes(self, bytes record) except -1
    cdef int _gather(self, bytes r) except -1
    cdef int _flush(self) except -1
    cdef int _send_file(self, bytes head, int fd, off_t offset, Py_ssize_t count) except -1
