"""TCP record marking and UDP datagrams (RFC 5531 section 11).

The stream protocol reassembles fragments into records, hands each record to
the dispatcher, and writes replies in whatever order they finish.  Memory per
connection is bounded: a record larger than ``max_record`` closes the
connection, and reading pauses while ``max_inflight`` calls are unanswered or
the socket's send buffer is full.  A connection that has been idle for a
second with nothing half received gives its receive buffer back, so idle
connections cost no buffer at all.  ``RpcStreamProtocol`` is the compiled
class of ``_transport.pyx`` when it is built (see ``_accel``), else
``PyRpcStreamProtocol``, its twin here, which also holds the code both run
for what is not per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import sys
import time
from types import CoroutineType

from . import heap
from ._accel import load

log = logging.getLogger("fastnfs.transport")

LAST_FRAGMENT = 0x80000000
RECV_SIZE = 16384     # a connection's receive buffer; bigger fragments get a big one
MAX_SPARES = 2        # big receive buffers a process keeps for the next big record
MAX_SMALL = 4         # small receive buffers a process keeps for the next reads
BUFFER_IDLE = 1.0     # seconds without a read after which a connection gives its buffer back
_spares: list = []
_small: list = []     # (bytearray, its memoryview) of RECV_SIZE, free for any connection
_EMPTY = bytearray()
_EMPTY_VIEW = memoryview(_EMPTY)
_u32 = struct.Struct(">I").unpack_from
_monotonic = time.monotonic


def _take_spare(need: int):
    """A big receive buffer of at least need bytes from the spares, or None."""
    for i, b in enumerate(_spares):
        if len(b) >= need:
            return _spares.pop(i)
    return None


def _send_size(p) -> int:
    return len(p) - 4


def client_host(host: str) -> str:
    """A peer's address as the rest of the server sees it: an IPv4 client of a
    dual-stack socket arrives as ``::ffff:a.b.c.d`` and is named ``a.b.c.d``,
    so exports matching, logs, the duplicate-request cache and per-client
    statistics treat it as the IPv4 host it is."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


class Connections:
    """The open TCP connections of one process: a limit and an idle timeout.

    At the limit a new connection is closed at once with a log line, so a
    flood of clients cannot exhaust file descriptors; a connection that has
    sent nothing for idle_timeout seconds (and has no call in progress) is
    closed, as knfsd does with idle clients, who reconnect when they need to.
    Every tick, connections idle for BUFFER_IDLE give their receive buffers
    back (shed_buffers); what ended connections and shed buffers leave free in
    the heap goes back to the system when the last connection closes, or at
    the next tick (give_back).
    """

    def __init__(self, stats, limit: int = 4096, idle_timeout: float = 360.0):
        self.stats = stats
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.open: set = set()
        self.released = 0     # connections closed, buffers shed since the heap was trimmed
        self._last_refusal_log = 0.0

    def admit(self, proto) -> bool:
        if len(self.open) >= self.limit:
            self.stats.connections_refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log > 10:
                self._last_refusal_log = now
                log.warning("connection limit (%d) reached: refusing %s (raise --max-connections)",
                            self.limit, proto.peer[0])
            return False
        self.open.add(proto)
        self.stats.connections = len(self.open)
        self.stats.connections_total += 1
        return True

    def gone(self, proto) -> None:
        self.open.discard(proto)
        self.stats.connections = len(self.open)
        self.released += 1
        if not self.open:    # all gone: the heap goes back now, not at the next tick
            self.give_back(heap.LAST_INTERVAL)

    def shed_buffers(self) -> int:
        """Idle connections give their receive buffers back; how many did."""
        cutoff = time.monotonic() - BUFFER_IDLE
        n = 0
        for c in self.open:
            if c.last_active < cutoff and c.release_buffer():
                n += 1
        self.released += n
        return n

    def give_back(self, interval: float = heap.MIN_INTERVAL) -> None:
        """Return the heap's free pages to the system if connections ended or
        buffers were shed since the last time (at most once per interval:
        heap.trim_soon)."""
        if self.released and heap.trim_soon(interval):
            self.released = 0

    def reap_idle(self) -> int:
        """Close connections idle for longer than the timeout; how many were closed."""
        if self.idle_timeout <= 0:
            return 0
        cutoff = time.monotonic() - self.idle_timeout
        idle = [c for c in self.open if c.last_active < cutoff and not c.busy]
        for c in idle:
            log.debug("closing idle connection from %s", c.peer[0])
            c.transport.close()
        return len(idle)


class PyRpcStreamProtocol(asyncio.BufferedProtocol):
    """Records of one TCP connection, received in place (RFC 5531 section 11).

    The socket is read straight into the connection's buffer (a
    BufferedProtocol) and every whole record is handed on as a view of it, so
    a call's bytes are never copied in user space: a big WRITE's data goes
    from the socket into the buffer and from there by pwrite into the page
    cache.  A fragment too big for the small buffer moves, with what has
    arrived of it, into a big one of this process's spares, and the socket
    then reads exactly up to its end.  A call answered later (off the event
    loop) keeps its view: the connection leaves that buffer to it and goes on
    in a new one.  A big buffer goes back to the spares as soon as its record
    is handed on, the small one when the connection has been idle for a while
    (release_buffer); the next read takes one again.
    """

    def __init__(self, dispatcher, max_record: int, max_inflight: int = 32,
                 connections: Connections | None = None):
        self.dispatcher = dispatcher
        self.fast = getattr(dispatcher, "fast", None)
        self.connections = connections
        self.last_active = time.monotonic()
        self.max_record = max_record
        self.max_inflight = max_inflight
        self.transport = None
        self.peer = ("?", 0)
        self._sock = -1       # the socket's fd, for replies sent from a file
        self._rb = _EMPTY     # no buffer until the first read
        self._rv = _EMPTY_VIEW
        self._lo = 0          # the first byte not yet parsed
        self._hi = 0          # the end of the bytes received
        self._want = 0        # the end of the fragment being received, when it is known
        self._held = False    # a call answered later holds a view of the buffer
        self._frags: list = []
        self._fraglen = 0
        self._inflight = 0
        self._paused_reading = False
        self._write_blocked = False

    def _set_buffer(self, rb: bytearray) -> None:
        self._rb = rb
        self._rv = memoryview(rb)

    def _take_small(self) -> None:
        """A small buffer from the pool (or a new one) for a connection that has none."""
        if _small:
            self._rb, self._rv = _small.pop()
        else:
            self._set_buffer(bytearray(RECV_SIZE))

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return self._hi - self._lo

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (client_host(peer[0]), peer[1])  # IPv6 gives (host, port, flow, scope)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._sock = sock.fileno()
        if self.connections is not None and not self.connections.admit(self):
            self.connections = None
            transport.abort()

    def connection_lost(self, exc):
        self._drop_buffer()
        self._frags = []
        if self.connections is not None:
            self.connections.gone(self)

    @property
    def busy(self) -> bool:
        return self._inflight > 0

    def pause_writing(self):
        self._write_blocked = True
        self._update_reading()

    def resume_writing(self):
        self._write_blocked = False
        self._update_reading()

    def get_buffer(self, sizehint):
        rb = self._rb
        hi = self._hi
        if hi == len(rb):
            if hi == 0:   # no buffer: a new connection, or one idle a while
                self._take_small()
            else:
                # full: a record mark split at the end, or records waiting while paused
                self._move(max(len(rb), 2 * (hi - self._lo)) if self._lo == 0 else len(rb))
            rb = self._rb
            hi = self._hi
        want = self._want
        return self._rv[hi:want if want > hi else len(rb)]

    def buffer_updated(self, nbytes):
        self.last_active = _monotonic()
        self._hi += nbytes
        if not self._paused_reading:
            self._parse()

    def data_received(self, data):
        """The same as a read into the buffer (for callers holding bytes)."""
        v = memoryview(data)
        while len(v):
            b = self.get_buffer(len(v))
            k = min(len(b), len(v))
            b[:k] = v[:k]
            self.buffer_updated(k)
            v = v[k:]
            if self.transport is not None and self.transport.is_closing():
                return

    # -- the receive buffer ------------------------------------------------
    def _move(self, need: int) -> None:
        """Put the unparsed bytes at the front of a buffer of at least need bytes."""
        rb, lo, hi = self._rb, self._lo, self._hi
        if need <= len(rb) and not self._held:
            if lo:
                rb[:hi - lo] = rb[lo:hi]
        else:
            self._drop_buffer()
            self._held = False
            if need > RECV_SIZE:
                self._set_buffer(_take_spare(need) or bytearray(max(need, self.max_record)))
            else:
                self._take_small()
            self._rb[:hi - lo] = rb[lo:hi]
        self._lo = 0
        self._hi = hi - lo

    def release_buffer(self) -> bool:
        """Give the receive buffer back if nothing in it waits to be parsed;
        whether there was one to give (the next read takes one again)."""
        if not len(self._rb) or self._hi != self._lo or self._paused_reading:
            return False
        self._lo = self._hi = 0
        self._drop_buffer()
        self._held = False     # a call answered later keeps its view; nothing else is held
        return True

    def _drop_buffer(self) -> None:
        """Give up the buffer: one no call holds goes back to the pool it came from."""
        rb = self._rb
        if not self._held:
            n = len(rb)
            if n == RECV_SIZE:
                if len(_small) < MAX_SMALL:
                    _small.append((rb, self._rv))
            elif n > RECV_SIZE and len(_spares) < MAX_SPARES:
                _spares.append(rb)
        self._rb = _EMPTY
        self._rv = _EMPTY_VIEW

    def _parse(self):
        """Hand every complete record in the buffer to the dispatcher, until the
        connection is paused (too many calls in flight): the rest waits here."""
        rb = self._rb
        lo = self._lo
        hi = self._hi
        self._want = 0
        while hi - lo >= 4 and not self._paused_reading:
            mark = _u32(rb, lo)[0]
            n = mark & 0x7FFFFFFF
            # each fragment costs its header too, so endless empty fragments hit the limit
            if self._fraglen + n + 4 > self.max_record:
                self._too_large(self._fraglen + n)
                return
            end = lo + 4 + n
            if end > hi:
                # a fragment still arriving: room for all of it, read up to its end
                if end > len(rb):
                    self._lo = lo
                    self._move(4 + n)
                    rb, lo, hi = self._rb, 0, self._hi
                    end = 4 + n
                self._want = end
                break
            if mark & LAST_FRAGMENT and not self._frags:
                # the common case: a whole record in one fragment, handed over in place
                self._lo = end
                self._handle(self._rv[:end], lo + 4)
                if self._held:
                    self._move(RECV_SIZE if hi - end <= RECV_SIZE else hi - end)
                    rb, lo, hi = self._rb, 0, self._hi
                else:
                    lo = end
            else:
                lo = end
                whole = self._fragment(bytes(self._rv[end - n:end]), mark & LAST_FRAGMENT)
                if whole is not None:
                    self._lo = lo
                    self._handle(whole)
                    self._held = False    # it holds its own copy
            if self.transport.is_closing():
                return
        if lo == hi:
            self._lo = self._hi = 0
            if len(rb) > RECV_SIZE:       # the big record is done: the next read takes a small one
                self._drop_buffer()
        else:
            self._lo = lo

    def _fragment(self, frag: bytes, last) -> bytes | None:
        """Keep a fragment of a record of several: the whole record after its last one."""
        self._frags.append(frag)
        if not last:
            self._fraglen += len(frag) + 4
            return None
        whole = b"".join(self._frags)
        self._frags = []
        self._fraglen = 0
        return whole

    def _too_large(self, size: int) -> None:
        """Refuse a record of size bytes (over max_record): log it, close the connection."""
        self.dispatcher.stats.refusals.note(
            log, logging.WARNING, self.peer[0], "record too large",
            "%s: record of %d bytes exceeds the limit of %d; closing",
            self.peer[0], size, self.max_record)
        self._lo = self._hi = 0
        self._frags = []
        self.transport.abort()

    # -- calls and replies -------------------------------------------------
    def _handle(self, record, offset=0):
        """Answer the call at record[offset:]: the fast lane, else the general path."""
        fast = self.fast
        if fast is not None:
            r = fast.answer(record, self.peer, offset, True)
            if r is not None:
                self.transport.write(r)
                return
        self._general(memoryview(record)[offset:] if offset else record)

    def _general(self, record):
        r = self.dispatcher.dispatch(record, self.peer, "tcp")
        if r is None:
            return
        if type(r) is CoroutineType:
            self._held = True      # it may read the record until it is done
            self._inflight += 1
            self._update_reading()
            asyncio.ensure_future(r).add_done_callback(self._reply_done)
        elif type(r) is tuple:
            self.send_file(*r)
        else:
            self._send(r)

    def _reply_done(self, fut):
        self._inflight -= 1
        if not fut.cancelled() and fut.exception() is None and fut.result() is not None:
            self._send(fut.result())
        self._update_reading()

    def _send(self, p):
        t = self.transport
        if t is None or t.is_closing():
            return
        p.put_u32_at(0, LAST_FRAGMENT | _send_size(p))
        t.write(p.getbuffer())

    def send_file(self, p, tail) -> None:
        """Send the reply p followed by count bytes of the file fd from offset
        and the XDR padding, then close fd (tail is (fd, offset, count)).

        When nothing waits in the transport's buffer, the head goes to the
        socket at once and the data by sendfile, from the page cache without a
        copy; what the socket does not take then (it is full) is read from the
        file and queued behind it.  The record's length was promised in its
        mark: a file that shrank meanwhile gives zeros for the missing bytes.
        """
        fd, offset, count = tail
        pad = -count & 3
        try:
            t = self.transport
            if t is None or t.is_closing():
                return
            p.put_u32_at(0, LAST_FRAGMENT | (_send_size(p) + count + pad))
            head = p.getbuffer()
            sent = 0
            if self._sock >= 0 and not t.get_write_buffer_size():
                try:
                    k = os.write(self._sock, head)
                    head = head[k:]
                    while not len(head) and sent < count:
                        k = os.sendfile(self._sock, fd, offset + sent, count - sent)
                        if k == 0:
                            break                # the file ended early
                        sent += k
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    t.abort()                    # the connection is gone
                    return
            if len(head):
                t.write(head)
            if sent < count:
                rest = os.pread(fd, count - sent, offset + sent)
                t.write(rest)
                if len(rest) < count - sent:
                    t.write(bytes(count - sent - len(rest)))
            if pad:
                t.write(bytes(pad))
        finally:
            os.close(fd)

    def _update_reading(self):
        t = self.transport
        if t is None or t.is_closing():
            return
        want_pause = self._write_blocked or self._inflight >= self.max_inflight
        if want_pause and not self._paused_reading:
            self._paused_reading = True
            t.pause_reading()
        elif not want_pause and self._paused_reading:
            self._paused_reading = False
            t.resume_reading()
            if self._hi - self._lo >= 4:
                asyncio.get_running_loop().call_soon(self._resume_parse)

    def _resume_parse(self):
        if not self._paused_reading and self.transport is not None \
                and not self.transport.is_closing():
            self._parse()


RpcStreamProtocol = PyRpcStreamProtocol
_cx = load("_transport")
if _cx is not None:
    _cx.bind(sys.modules[__name__])
    # the same in C; it also gathers the lane's replies to the calls of one read in one write
    RpcStreamProtocol = _cx.RpcStreamProtocol  # noqa: F811  (Cython twin)


class RpcDatagramProtocol(asyncio.DatagramProtocol):
    """One call per datagram; the reply goes to the sender (RFC 5531 section 11 n/a)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        # the reply goes to addr as the socket gave it; the server sees the peer as
        # (host, port), an IPv4-mapped host in its IPv4 form
        peer = addr if len(addr) == 2 else (client_host(addr[0]), addr[1])
        fast = self.dispatcher.fast
        if fast is not None:
            r = fast.answer(data, peer)
            if r is not None:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.sendto(r, addr)
                return
        r = self.dispatcher.dispatch(data, peer, "udp")
        if r is None:
            return
        if type(r) is CoroutineType:
            asyncio.ensure_future(r).add_done_callback(lambda f: self._reply_done(f, addr))
        else:
            self._sendto(r, addr)

    def _reply_done(self, fut, addr):
        if not fut.cancelled() and fut.exception() is None and fut.result() is not None:
            self._sendto(fut.result(), addr)

    def _sendto(self, p, addr):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(memoryview(p.getbuffer())[4:], addr)

    def error_received(self, exc):
        log.debug("udp error: %s", exc)
