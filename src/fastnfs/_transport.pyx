# cython: language_level=3
"""TCP record marking in C (RFC 5531 section 11): the compiled twin of
transport.PyRpcStreamProtocol, with the same behaviour (tests/test_transport_twins.py).

The event loop reads the socket into the connection's buffer through a window
object this class keeps (get_buffer allocates nothing), the records are
framed here in C, and a call the fast lane answers goes from the buffer to
FastPath.answer_at as a pointer: the only object this layer makes per
answered call is the reply.  Replies the lane gives for calls that arrived in one read are gathered
and written together, one write (one syscall) for all.  Whatever the lane
declines goes to the dispatcher as a view of the buffer, as in the twin.
"""

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint32_t
from libc.string cimport memcpy, memmove, memset
from posix.types cimport off_t
from posix.unistd cimport close, pread, write
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from fastnfs._fastpath cimport FastPath

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count)

cdef uint32_t LAST_FRAGMENT = 0x80000000U
# replies gathered for one write at most (past this they go out at once)
cdef Py_ssize_t GATHER_MAX = 65536

# what this module shares with its twin: fastnfs.transport hands it over
# (bind) when it loads this module, so imports point one way only
cdef object _t = None
cdef object _PY = None           # transport.PyRpcStreamProtocol
cdef Py_ssize_t RECV_SIZE = 0
cdef Py_ssize_t MAX_SPARES = 0
cdef Py_ssize_t MAX_SMALL = 0
cdef list _spares = None
cdef list _small = None
cdef bytearray _EMPTY = bytearray()


def bind(transport):
    """Share the pools, sizes and the not-per-call code of the pure twin's
    module (fastnfs.transport calls this when it selects this class)."""
    global _t, _PY, RECV_SIZE, MAX_SPARES, MAX_SMALL, _spares, _small
    _t = transport
    _PY = transport.PyRpcStreamProtocol
    RECV_SIZE = transport.RECV_SIZE
    MAX_SPARES = transport.MAX_SPARES
    _spares = transport._spares
    _small = transport._small
    MAX_SMALL = transport.MAX_SMALL


cdef inline uint32_t _be32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)     # (time.monotonic's clock)
    return ts.tv_sec + ts.tv_nsec * 1e-9


@cython.final
cdef class _Window:
    """Where the next read goes: a part of the connection's buffer, exported
    by the buffer protocol (the object get_buffer returns, made once)."""

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, PyByteArray_AS_STRING(self.rb) + self.off, self.n,
                          0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self.exports -= 1

    def __len__(self):
        return self.n


cdef class RpcStreamProtocol:
    """Records of one TCP connection, received in place (RFC 5531 section 11);
    see transport.PyRpcStreamProtocol, whose behaviour this is."""

    def __init__(self, dispatcher, Py_ssize_t max_record, Py_ssize_t max_inflight=32,
                 connections=None):
        if _t is None:
            raise RuntimeError("fastnfs._transport is used through fastnfs.transport")
        self.dispatcher = dispatcher
        self.fast = getattr(dispatcher, "fast", None)
        self.cfast = self.fast if isinstance(self.fast, FastPath) else None
        self.connections = connections
        self.last_active = _monotonic()
        self.max_record = max_record
        self.max_inflight = max_inflight
        self.transport = None
        self.peer = ("?", 0)
        self._sock = -1
        self._set_buffer(_EMPTY)     # no buffer until the first read
        self._frags = []
        self._win = _Window.__new__(_Window)

    cdef int _set_buffer(self, bytearray rb, object rv=None) except -1:
        self._rb = rb
        self._rv = memoryview(rb) if rv is None else rv
        self._p = PyByteArray_AS_STRING(rb)
        self._cap = len(rb)
        return 0

    cdef int _take_small(self) except -1:
        """A small buffer from the pool (or a new one) for a connection that has none."""
        if _small:
            rb, rv = _small.pop()
            self._set_buffer(rb, rv)
        else:
            self._set_buffer(bytearray(RECV_SIZE))
        return 0

    @property
    def buffered(self):
        """Bytes received and not yet parsed."""
        return self._hi - self._lo

    @property
    def busy(self):
        return self._inflight > 0

    # -- asyncio callbacks (what is not per call is the twin's own code) --
    def connection_made(self, transport):
        _PY.connection_made(self, transport)
        # the lane may leave large cached READ data in the file (send_file's way)
        self._lend = self._sock >= 0 and self.cfast is not None \
            and bool(getattr(self.dispatcher, "lend_files", False))

    def connection_lost(self, exc):
        self._drop_buffer()
        self._frags = []
        self._out = None
        if self.connections is not None:
            self.connections.gone(self)

    def eof_received(self):
        return None             # close the transport (asyncio.BaseProtocol's answer)

    def pause_writing(self):
        _PY.pause_writing(self)

    def resume_writing(self):
        _PY.resume_writing(self)

    def get_buffer(self, sizehint):
        return self._window()

    cdef _Window _window(self):
        """The window of the buffer the next read goes into."""
        cdef Py_ssize_t hi = self._hi
        if hi == self._cap:
            if hi == 0:         # no buffer: a new connection, or one idle a while
                self._take_small()
            else:
                # full: a record mark split at the end, or records waiting while paused
                self._move(max(self._cap, 2 * (hi - self._lo)) if self._lo == 0 else self._cap)
            hi = self._hi
        cdef _Window w = self._win
        if w.exports:           # the last read's buffer is still held: it keeps that window
            w = self._win = _Window.__new__(_Window)
        w.rb = self._rb
        w.off = hi
        w.n = (self._want if self._want > hi else self._cap) - hi
        return w

    def buffer_updated(self, Py_ssize_t nbytes):
        self._updated(nbytes)

    cdef int _updated(self, Py_ssize_t nbytes) except -1:
        self.last_active = _monotonic()
        self._hi += nbytes
        if not self._paused_reading:
            self._parse()
        return 0

    def data_received(self, data):
        """The same as a read into the buffer (for callers holding bytes)."""
        cdef const unsigned char[::1] v = bytes(data) if not isinstance(data, bytes) else data
        cdef Py_ssize_t pos = 0, k
        cdef _Window w
        while pos < v.shape[0]:
            w = self._window()
            k = min(w.n, v.shape[0] - pos)
            if k <= 0:
                return          # (no buffer: the connection is gone)
            memcpy(PyByteArray_AS_STRING(w.rb) + w.off, &v[pos], k)
            self._updated(k)
            pos += k
            if self.transport is not None and self.transport.is_closing():
                return

    # -- the receive buffer ------------------------------------------------
    cdef int _move(self, Py_ssize_t need) except -1:
        """Put the unparsed bytes at the front of a buffer of at least need bytes."""
        cdef Py_ssize_t lo = self._lo, hi = self._hi
        cdef bytearray old
        if need <= self._cap and not self._held:
            if lo:
                memmove(self._p, self._p + lo, hi - lo)
        else:
            old = self._rb          # (kept alive while its bytes are copied)
            self._drop_buffer()
            self._held = False
            if need > RECV_SIZE:
                self._set_buffer(_t._take_spare(need) or bytearray(max(need, self.max_record)))
            else:
                self._take_small()
            memcpy(self._p, PyByteArray_AS_STRING(old) + lo, hi - lo)
        self._lo = 0
        self._hi = hi - lo
        return 0

    def release_buffer(self):
        """Give the receive buffer back if nothing in it waits to be parsed;
        whether there was one to give (the next read takes one again)."""
        if not self._cap or self._hi != self._lo or self._paused_reading:
            return False
        self._lo = self._hi = 0
        self._drop_buffer()
        self._held = False     # a call answered later keeps its view; nothing else is held
        return True

    cdef int _drop_buffer(self) except -1:
        """Give up the buffer: one no call holds goes back to the pool it came from."""
        if not self._held:
            if self._cap == RECV_SIZE:
                if len(_small) < MAX_SMALL:
                    _small.append((self._rb, self._rv))
            elif self._cap > RECV_SIZE and len(_spares) < MAX_SPARES:
                _spares.append(self._rb)
        self._set_buffer(_EMPTY)
        return 0

    cdef int _parse(self) except -1:
        """Hand every complete record in the buffer on, until the connection
        is paused (too many calls in flight): the rest waits here."""
        cdef Py_ssize_t lo = self._lo, hi = self._hi, n, end
        cdef uint32_t mark
        self._want = 0
        while hi - lo >= 4 and not self._paused_reading:
            mark = _be32(<unsigned char*>self._p + lo)
            n = mark & 0x7FFFFFFF
            # each fragment costs its header too, so endless empty fragments hit the limit
            if self._fraglen + n + 4 > self.max_record:
                self._flush()
                _PY._too_large(self, self._fraglen + n)
                return 0
            end = lo + 4 + n
            if end > hi:
                # a fragment still arriving: room for all of it, read up to its end
                if end > self._cap:
                    self._lo = lo
                    self._move(4 + n)
                    lo = 0
                    hi = self._hi
                    end = 4 + n
                self._want = end
                break
            if mark & LAST_FRAGMENT and not self._frags:
                # the common case: a whole record in one fragment, answered in place
                self._lo = end
                if not self._handle(lo + 4, end):
                    lo = end
                    continue        # (the lane closes nothing: no need to ask the transport)
                if self._held:
                    self._move(RECV_SIZE if hi - end <= RECV_SIZE else hi - end)
                    lo = 0
                    hi = self._hi
                else:
                    lo = end
            else:
                lo = end
                whole = _PY._fragment(self, PyBytes_FromStringAndSize(self._p + end - n, n),
                                      bool(mark & LAST_FRAGMENT))
                if whole is not None:
                    self._lo = lo
                    self._handle_bytes(whole)
                    self._held = False    # it holds its own copy
            if self.transport.is_closing():
                self._out = None
                return 0
        self._flush()
        if lo == hi:
            self._lo = self._hi = 0
            if self._cap > RECV_SIZE:     # the big record is done: the next read takes a small one
                self._drop_buffer()
        else:
            self._lo = lo
        return 0

    # -- calls and replies -------------------------------------------------
    cdef int _handle(self, Py_ssize_t start, Py_ssize_t end) except -1:
        """Answer the call in the buffer at [start, end): the fast lane (0), else
        the general path (1)."""
        if self.cfast is not None:
            r = self.cfast.answer_at(<unsigned char*>self._p + start, end - start, self.peer, True,
                                     self._lend)
            if r is not None and self.cfast.lent_fd >= 0:
                self._send_file(r, self.cfast.take_lent(), <off_t>self.cfast.lent_offset,
                                self.cfast.lent_count)
                return 0
        elif self.fast is not None:
            r = self.fast.answer(self._rv[:end], self.peer, start, True)
        else:
            r = None
        if r is not None:
            self._gather(r)
            return 0
        self._flush()
        _PY._general(self, self._rv[start:end])
        return 1

    cdef int _handle_bytes(self, bytes record) except -1:
        """Answer the call of a record of several fragments (joined)."""
        if self.cfast is not None:
            r = self.cfast.answer_at(<unsigned char*>PyBytes_AS_STRING(record),
                                     PyBytes_GET_SIZE(record), self.peer, True)
        elif self.fast is not None:
            r = self.fast.answer(record, self.peer, 0, True)
        else:
            r = None
        if r is not None:
            return self._gather(r)
        self._flush()
        _PY._general(self, record)
        return 0

    cdef int _gather(self, bytes r) except -1:
        """Keep a reply of the lane to write with the others of this read."""
        cdef object out = self._out
        if out is None:
            self._out = r
        elif type(out) is list:
            (<list>out).append(r)
        else:
            self._out = [out, r]
        self._outn += PyBytes_GET_SIZE(r)
        if self._outn >= GATHER_MAX:
            self._flush()
        return 0

    cdef int _flush(self) except -1:
        """Write the replies gathered: one write for all of them."""
        out = self._out
        if out is None:
            return 0
        self._out = None
        self._outn = 0
        if self.transport.is_closing():
            return 0            # (uvloop refuses writes to a closed handle)
        if type(out) is list:
            out = b"".join(out)
        self.transport.write(out)
        return 0

    cdef int _send_file(self, bytes head, int fd, off_t offset, Py_ssize_t count) except -1:
        """The record head (its mark counting what follows), then count bytes
        of the file fd from offset and their XDR padding; fd closed after.
        The replies gathered before it go first; when nothing waits in the
        transport, the head goes straight to the socket and the data by
        sendfile, from the page cache without a copy; what the socket does
        not take is read from the file and queued behind.  A file that
        shrank meanwhile gives zeros (the mark promised the length).  The
        lane's large READs and the general path's (send_file) leave this way."""
        cdef Py_ssize_t sent = 0, k = 0, hn = len(head)
        cdef Py_ssize_t pad = (-count) & 3
        cdef ssize_t n
        cdef const char* h = PyBytes_AS_STRING(head)
        try:
            self._flush()
            t = self.transport
            if t is None or t.is_closing():
                return 0
            if self._sock >= 0 and not t.get_write_buffer_size():
                k = write(self._sock, h, hn)
                if k < 0:
                    if errno != EAGAIN and errno != EINTR:
                        t.abort()          # the connection is gone
                        return 0
                    k = 0
                while k == hn and sent < count:
                    n = sendfile(self._sock, fd, &offset, count - sent)
                    if n > 0:
                        sent += n
                        continue
                    if n < 0 and errno != EAGAIN and errno != EINTR:
                        t.abort()
                        return 0
                    break                  # full, or the file ended early
            if k < hn:
                t.write(head[k:])
            if sent < count:
                rest = PyBytes_FromStringAndSize(NULL, count - sent)
                n = pread(fd, PyBytes_AS_STRING(rest), count - sent, offset)
                if n < 0:
                    n = 0
                if n < count - sent:       # (zeros)
                    memset(PyBytes_AS_STRING(rest) + n, 0, count - sent - n)
                t.write(rest)
            if pad:
                t.write(b"\0\0\0"[:pad])
        finally:
            close(fd)
        return 0

    def _general(self, record):
        _PY._general(self, record)

    def _reply_done(self, fut):
        _PY._reply_done(self, fut)

    def _send(self, p):
        _PY._send(self, p)

    def send_file(self, p, tail):
        """The reply p with count bytes of a file (tail is (fd, offset, count)),
        as transport.PyRpcStreamProtocol.send_file sends it."""
        fd, offset, count = tail
        try:
            p.put_u32_at(0, LAST_FRAGMENT | (_t._send_size(p) + count + (-count & 3)))
            head = bytes(p.getbuffer())
        except BaseException:
            close(fd)
            raise
        self._send_file(head, fd, offset, count)

    def _update_reading(self):
        _PY._update_reading(self)

    def _resume_parse(self):
        if not self._paused_reading and self.transport is not None \
                and not self.transport.is_closing():
            self._parse()
