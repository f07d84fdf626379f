"""The TCP transport reads records in place and sends READ data from the file
(transport.RpcStreamProtocol).  Every test runs on both twins: the pure-Python
class and the compiled one (fastnfs._transport).

Records are received straight into the connection's buffer (asyncio's
BufferedProtocol) and handed on as views of it; a big fragment moves to a big
buffer and is read up to its end; a call answered later keeps its bytes while
the connection reads on in another buffer.  A reply whose data is lent from a
file goes out as its head, the file's bytes by sendfile and the padding, in
order behind whatever the transport still holds.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading

import pytest

from conftest import cython_twin
from fastnfs import transport
from fastnfs.stats import Stats
from fastnfs.xdr import Packer

_cx, _ = cython_twin("fastnfs._transport")
TWINS = [transport.PyRpcStreamProtocol] + ([_cx.RpcStreamProtocol] if _cx else [])
_cls = TWINS[0]


@pytest.fixture(autouse=True, params=TWINS, ids=lambda c: c.__module__)
def twin(request):
    """Run the test on this twin (make() builds one)."""
    global _cls
    _cls = request.param
    yield request.param


class FakeTransport:
    def __init__(self):
        self.writes = []
        self.aborted = False

    def write(self, data):
        self.writes.append(bytes(data))

    def abort(self):
        self.aborted = True

    close = abort

    def is_closing(self):
        return self.aborted

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 999) if name == "peername" else default


class Recorder:
    """Keeps each record as handed over; answers later the calls named 'later'."""

    def __init__(self):
        self.stats = Stats()
        self.seen = []       # (the object handed over, its bytes then)
        self.later = []      # views held by calls answered later, with the bytes they had

    def dispatch(self, data, peer, proto):
        self.seen.append((data, bytes(data)))
        if bytes(data[:5]) == b"later":
            self.later.append((data, bytes(data)))

            async def done():
                await asyncio.sleep(0)
                return None
            return done()
        p = Packer(4)
        p.raw(bytes(data[:4]))
        return p


def record(body: bytes) -> bytes:
    return struct.pack(">I", 0x80000000 | len(body)) + body


def feed(proto, stream: bytes, step: int) -> None:
    """What the event loop does: get_buffer, read at most step bytes into it, buffer_updated."""
    pos = 0
    while pos < len(stream):
        b = memoryview(proto.get_buffer(-1))     # (any object with the buffer protocol)
        k = min(len(b), step, len(stream) - pos)
        assert k > 0
        b[:k] = stream[pos:pos + k]
        proto.buffer_updated(k)
        pos += k


def make(max_record=(1 << 20) + 4096):
    d = Recorder()
    p = _cls(d, max_record)
    t = FakeTransport()
    p.connection_made(t)
    return p, d, t


def test_big_record_is_received_in_place_and_read_to_its_end():
    p, d, t = make()
    big = b"W" * 8 + bytes(range(256)) * 4096        # 1 MiB + 8: a WRITE's size
    small = b"GETATTR-"
    feed(p, record(big) + record(small), 65536)
    assert [s for _, s in d.seen] == [big, small]
    view = d.seen[0][0]
    # handed over as a view of the buffer the socket was read into: no copy
    assert isinstance(view, memoryview) and len(view.obj) > transport.RECV_SIZE
    # the read stopped at the big record's end: the next record came in a small buffer
    assert len(d.seen[1][0].obj) == transport.RECV_SIZE and p.buffered == 0
    assert len(p._rb) == transport.RECV_SIZE
    assert len(t.writes) == 2


def test_a_call_answered_later_keeps_its_bytes():
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        p, d, t = make()
        first = b"later" + b"A" * 200000
        then = [b"B" * 300000, b"C" * 100, b"D" * 70000, b"E" * 10]
        stream = record(first) + b"".join(record(x) for x in then)
        for step in (7, 4096, 65536, len(stream)):
            d.seen.clear()
            d.later.clear()
            feed(p, stream, step)
            assert [s for _, s in d.seen] == [first] + then
            # the later call's view still holds its record after the others were read
            (view, was), = d.later
            assert bytes(view) == was == first
            loop.run_until_complete(asyncio.sleep(0.01))
        assert not t.aborted
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_big_buffers_are_reused_not_kept_per_connection():
    transport._spares.clear()
    p, d, _ = make()
    big = b"W" * (512 * 1024)
    feed(p, record(big), 100000)
    feed(p, record(big), 100000)
    assert [s for _, s in d.seen] == [big, big]
    assert d.seen[0][0].obj is d.seen[1][0].obj       # one big buffer, used twice
    assert len(p._rb) == 0                             # not held by the idle connection
    assert len(transport._spares) == 1


def test_idle_connections_give_their_receive_buffers_back(monkeypatch):
    """A connection idle for BUFFER_IDLE gives its buffer back at the tick
    (Connections.shed_buffers), unless a record of it is half received; the
    next read takes one from the pool.  1000 idle clients cost no buffers."""
    transport._small.clear()
    conns = transport.Connections(Stats())
    protos = []
    for i in range(64):
        p = transport.RpcStreamProtocol(Recorder(), 1 << 20, connections=conns)
        p.connection_made(FakeTransport())
        feed(p, record(b"call %d" % i), 65536)
        assert len(p._rb) == transport.RECV_SIZE      # busy: it keeps its buffer
        protos.append(p)
    whole = record(b"X" * 1000)
    feed(protos[0], whole[:300], 65536)               # half a record
    assert conns.shed_buffers() == 0                  # none idle long enough yet
    monkeypatch.setattr(transport, "BUFFER_IDLE", -1.0)
    assert conns.shed_buffers() == 63 and conns.released == 63
    assert all(len(p._rb) == 0 for p in protos[1:])
    assert len(transport._small) == transport.MAX_SMALL   # the pool stays bounded
    p = protos[0]                                     # its bytes kept until the end
    assert len(p._rb) == transport.RECV_SIZE and p.buffered == 300
    feed(p, whole[300:], 65536)
    assert p.dispatcher.seen[-1][1] == b"X" * 1000
    q = protos[1]                                     # the next read takes one again
    feed(q, record(b"again"), 65536)
    assert q.dispatcher.seen[-1][1] == b"again" and len(q._rb) == transport.RECV_SIZE
    assert len(transport._small) == transport.MAX_SMALL - 1
    q.connection_lost(None)                           # a closed one's goes back too
    assert len(q._rb) == 0 and len(transport._small) == transport.MAX_SMALL


def test_fragmented_record_and_split_marks():
    p, d, _ = make()
    body = bytes(range(256)) * 600
    stream = (struct.pack(">I", 100000) + body[:100000]
              + struct.pack(">I", 0x80000000 | (len(body) - 100000)) + body[100000:]
              + record(b"next"))
    for step in (1, 3, 5, 1000, len(stream)):
        d.seen.clear()
        feed(p, stream, step)
        assert [s for _, s in d.seen] == [body, b"next"]


class SocketTransport(FakeTransport):
    """Queues writes like an event loop's transport that could not send yet."""

    def __init__(self, sock, queued=b""):
        super().__init__()
        self.sock = sock
        self.queued = [queued] if queued else []

    def write(self, data):
        self.queued.append(bytes(data))

    def get_write_buffer_size(self):
        return sum(len(b) for b in self.queued)

    def get_extra_info(self, name, default=None):
        if name == "socket":
            return self.sock
        return super().get_extra_info(name, default)

    def flush(self):
        self.sock.setblocking(True)
        for b in self.queued:
            self.sock.sendall(b)
        self.sock.close()


def send_file_case(tmp_path, file_bytes: bytes, offset: int, count: int, queued=b""):
    """What the peer receives for a reply head b"HEAD" lent count bytes of a file."""
    f = tmp_path / "data"
    f.write_bytes(file_bytes)
    a, b = socket.socketpair()
    a.setblocking(False)
    p, _, _ = make()
    t = SocketTransport(a, queued)
    p.connection_made(t)
    reply = Packer(4)
    reply.raw(b"HEAD")
    got = []
    reader = threading.Thread(target=lambda: got.append(_read_all(b)))
    reply_fd = os.open(f, os.O_RDONLY)
    p.send_file(reply, (reply_fd, offset, count))
    reader.start()
    t.flush()
    reader.join(30)
    b.close()
    try:
        os.fstat(reply_fd)
        raise AssertionError("send_file left the file open")
    except OSError:
        pass
    return got[0]


def _read_all(sock) -> bytes:
    out = bytearray()
    while True:
        k = sock.recv(1 << 20)
        if not k:
            return bytes(out)
        out += k


def test_send_file_head_data_padding(tmp_path):
    data = os.urandom(100003)
    out = send_file_case(tmp_path, data, 7, 70001)
    pad = -70001 & 3
    assert out == struct.pack(">I", 0x80000000 | (4 + 70001 + pad)) + b"HEAD" \
        + data[7:7 + 70001] + bytes(pad)


def test_send_file_more_than_the_socket_takes(tmp_path):
    data = os.urandom(16 << 20)        # the peer reads nothing until all was handed over
    out = send_file_case(tmp_path, data, 0, len(data))
    assert out == struct.pack(">I", 0x80000000 | (4 + len(data))) + b"HEAD" + data


def test_send_file_behind_queued_bytes(tmp_path):
    data = os.urandom(200000)
    out = send_file_case(tmp_path, data, 0, len(data), queued=b"EARLIER")
    assert out == b"EARLIER" + struct.pack(">I", 0x80000000 | (4 + len(data))) + b"HEAD" + data


def test_send_file_of_a_file_that_shrank_keeps_the_record(tmp_path):
    data = os.urandom(100000)
    out = send_file_case(tmp_path, data, 0, 150000)    # promised more than is left
    assert out == struct.pack(">I", 0x80000000 | (4 + 150000)) + b"HEAD" + data + bytes(50000)


def test_ended_connections_give_the_heap_back(monkeypatch):
    """The heap is trimmed when the last connection ends (unless it was a
    tenth of a second ago); while others stay open, at the next tick
    (give_back), at most once a second."""
    from fastnfs import heap
    trims = []
    monkeypatch.setattr(heap, "trim_heap", lambda: trims.append(0) or 1)
    monkeypatch.setattr(heap, "_last", 0.0)
    conns = transport.Connections(Stats())
    protos = [transport.RpcStreamProtocol(Recorder(), 1 << 20, connections=conns)
              for _ in range(3)]
    for p in protos:
        p.connection_made(FakeTransport())
    protos[0].connection_lost(None)
    assert trims == []                     # two still open: left to the tick
    conns.give_back()
    assert trims == [0] and conns.released == 0
    conns.give_back()
    assert trims == [0]                    # nothing ended since
    protos[1].connection_lost(None)
    conns.give_back()
    assert trims == [0]                    # ended, but trimmed less than a second ago
    monkeypatch.setattr(heap, "_last", heap._last - 0.5)
    protos[2].connection_lost(None)        # the last one: at once (half a second later)
    assert trims == [0, 0] and conns.released == 0
