"""The compiled TCP record layer (fastnfs._transport) against its pure-Python
twin (transport.PyRpcStreamProtocol): fed the same bytes in the same reads,
both hand the same records to the fast lane and to the dispatcher, write the
same bytes, pause and refuse alike (RFC 5531 section 11 record marking)."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from test_transport_buffer import FakeTransport
from fastnfs import transport
from fastnfs.stats import Stats
from fastnfs.xdr import Packer

_cx, _why = cython_twin("fastnfs._transport")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")
TWINS = (transport.PyRpcStreamProtocol, _cx and _cx.RpcStreamProtocol)


class Transport(FakeTransport):
    """Also notes when reading pauses and resumes, in order."""

    def __init__(self):
        super().__init__()
        self.events = []
        self.paused = False

    def pause_reading(self):
        self.paused = True
        self.events.append("pause")

    def resume_reading(self):
        self.paused = False
        self.events.append("resume")

    def get_extra_info(self, name, default=None):
        return ("::ffff:192.0.2.7", 901) if name == "peername" else default


class Lane:
    """A fast lane answering the calls that start with F (a marked reply)."""

    def __init__(self):
        self.calls = []

    def answer(self, record, peer, offset=0, mark=False):
        call = bytes(memoryview(record)[offset:])
        self.calls.append((call, peer, mark))
        if call[:1] != b"F":
            return None
        return struct.pack(">I", 0x80000000 | (len(call) + 4)) + b"fast" + call


class Dispatcher:
    """The general path: L answered later (off the loop), N never, others at once."""

    def __init__(self, lane):
        self.stats = Stats()
        self.fast = lane
        self.records = []

    def dispatch(self, data, peer, proto):
        call = bytes(data)
        self.records.append((call, peer, proto))
        p = Packer(4)
        p.raw(b"gen:" + call[:8])
        if call[:1] == b"L":
            async def later():
                await asyncio.sleep(0)
                assert bytes(data) == call      # the view still holds the call
                return p
            return later()
        return None if call[:1] == b"N" else p


def frame(body: bytes, cuts) -> bytes:
    """body as a record of fragments cut at the given offsets."""
    cuts = sorted({c for c in cuts if 0 < c < len(body)})
    parts = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])] or [b""]
    return b"".join(struct.pack(">I", (0x80000000 if i == len(parts) - 1 else 0) | len(x)) + x
                    for i, x in enumerate(parts))


def drive(cls, stream: bytes, reads, max_record: int, max_inflight: int, lane=True):
    """What each twin does with stream, read in pieces of the given sizes."""
    transport._spares.clear()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        d = Dispatcher(Lane() if lane else None)
        p = cls(d, max_record, max_inflight=max_inflight)
        t = Transport()
        p.connection_made(t)
        pos, i = 0, 0
        while pos < len(stream) and not t.aborted:
            for _ in range(100):         # the loop reads nothing while reading is paused
                if not t.paused:
                    break
                loop.run_until_complete(asyncio.sleep(0))
            assert not t.paused
            b = memoryview(p.get_buffer(-1))
            k = min(len(b), reads[i % len(reads)], len(stream) - pos)
            assert k > 0
            b[:k] = stream[pos:pos + k]
            p.buffer_updated(k)
            pos += k
            i += 1
        for _ in range(100):
            loop.run_until_complete(asyncio.sleep(0))
        p.connection_lost(None)
        return dict(records=d.records, lane=d.fast and d.fast.calls, out=b"".join(t.writes),
                    aborted=t.aborted, events=t.events, inflight=p._inflight,
                    refused=dict(d.stats.refusals.counts))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def twins_agree(stream, reads, max_record=1 << 20, max_inflight=32, lane=True):
    a, b = (drive(cls, stream, reads, max_record, max_inflight, lane) for cls in TWINS)
    assert a == b
    return a


def _body(kind: bytes, size: int, seed: int) -> bytes:
    return kind + random.Random(seed).randbytes(size)


calls = st.lists(st.tuples(st.sampled_from([b"F", b"G", b"L", b"N"]),
                           st.one_of(st.integers(0, 300), st.integers(16000, 70000)),
                           st.lists(st.integers(0, 70000), max_size=3)),
                 min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=calls, reads=st.lists(st.integers(1, 100000), min_size=1, max_size=6),
       max_record=st.sampled_from([200, 20000, 1 << 20]), max_inflight=st.integers(1, 4),
       lane=st.booleans(), garbage=st.binary(max_size=9))
def test_same_records_and_replies_for_any_fragmentation(calls, reads, max_record, max_inflight,
                                                        lane, garbage):
    bodies = [_body(k, n, i) for i, (k, n, _) in enumerate(calls)]
    stream = b"".join(frame(b, cuts) for b, (_, _, cuts) in zip(bodies, calls)) + garbage
    got = twins_agree(stream, reads, max_record, max_inflight, lane)
    if not got["aborted"]:
        handed = got["lane"] if lane else got["records"]
        assert [c for c, _, _ in handed] == bodies


def test_pipelined_calls_of_one_read():
    bodies = [_body(k.encode(), 40, i) for i, k in enumerate("FFGFLFNFF")]
    stream = b"".join(frame(b, ()) for b in bodies)
    got = twins_agree(stream, [len(stream)], max_inflight=1)
    assert got["events"] == ["pause", "resume"]
    assert [c for c, _, _ in got["lane"]] == bodies
    assert all(peer == ("192.0.2.7", 901) and mark for _, peer, mark in got["lane"])


def test_too_large_a_record_is_refused_alike():
    stream = frame(b"F" * 10, ()) + frame(b"G" * 500, (100, 200))
    got = twins_agree(stream, [7, 300], max_record=300)
    assert got["aborted"] and len(got["lane"]) == 1


def test_lane_replies_of_one_read_go_out_in_one_write():
    """Pipelined calls the lane answers cost one write, not one each."""
    bodies = [_body(b"F", 60, i) for i in range(8)]
    stream = b"".join(frame(b, ()) for b in bodies) + frame(b"G" * 20, ()) + frame(b"F" * 4, ())
    for cls in TWINS:
        d = Dispatcher(Lane())
        p = cls(d, 1 << 20)
        t = Transport()
        p.connection_made(t)
        p.data_received(stream)
        assert len(t.writes) == (10 if cls is transport.PyRpcStreamProtocol else 3)
    assert t.writes[0] == b"".join(struct.pack(">I", 0x80000000 | (len(b) + 4)) + b"fast" + b
                                   for b in bodies)


# -- the real fast lane, through its C entry point (FastPath.answer_at) -------
fp, _ = cython_twin("fastnfs._fastpath")


@pytest.mark.skipif(fp is None, reason="fastnfs._fastpath not built")
def test_real_lane_same_bytes(tmp_path):
    from rpcclient import GETATTR, LOOKUP, NFS_PROGRAM, NFS_V3, AuthSys, call_header
    from xdrlib3 import Packer as XPacker

    from fastnfs.exports import single_export
    from fastnfs.server import Config, Server

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    srv = Server(Config(exports=[single_export(str(tmp_path))]))
    assert isinstance(srv.dispatcher.fast, fp.FastPath)
    root = srv.exports[0].root_fh

    def call(xid, proc, *names):
        x = XPacker()
        x.pack_opaque(root)
        for n in names:
            x.pack_string(n)
        return call_header(xid, NFS_PROGRAM, NFS_V3, proc, AuthSys(0, 0, machine=b"b")) \
            + x.get_buffer()

    records = [call(1, GETATTR), call(2, LOOKUP, b"etc"), call(3, 19),   # FSINFO: general
               call(4, GETATTR), call(5, LOOKUP, b"nothing")]
    stream = b"".join(frame(r, ()) for r in records) + frame(call(6, GETATTR), (20, 50))
    outs = []
    for cls in TWINS:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            p = cls(srv.dispatcher, 1 << 20)
            t = Transport()
            p.connection_made(t)
            for k in (len(stream), 13):
                p.data_received(stream[:k])
                p.data_received(stream[k:])
            loop.run_until_complete(asyncio.sleep(0.01))
            outs.append(b"".join(t.writes))
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    assert outs[0] == outs[1]
    xids = []
    pos = 0
    while pos < len(outs[0]):
        n = int.from_bytes(outs[0][pos:pos + 4], "big") & 0x7FFFFFFF
        xids.append(int.from_bytes(outs[0][pos + 4:pos + 8], "big"))
        pos += 4 + n
    assert xids == [1, 2, 3, 4, 5, 6] * 2


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_over_a_socket_on_either_event_loop(loop_kind):
    """uvloop reads into the window get_buffer returns; the standard loop, which
    knows only its own BufferedProtocol class, calls data_received: the same
    records and replies either way, pipelined calls included."""
    import uvloop
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bodies = [_body(k.encode(), n, i) for i, (k, n) in
              enumerate(zip("FGLFNFG", (40, 70000, 10, 20000, 5, 0, 3)))]
    stream = b"".join(frame(b, (7,) if len(b) > 1000 else ()) for b in bodies)
    d = Dispatcher(Lane())
    try:
        srv = loop.run_until_complete(loop.create_server(
            lambda: _cx.RpcStreamProtocol(d, 1 << 20), "127.0.0.1", 0))
        port = srv.sockets[0].getsockname()[1]

        async def client():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(stream)
            want = [b for b in bodies if b[:1] in b"FGL"]
            got = []
            while len(got) < len(want):
                n = int.from_bytes(await r.readexactly(4), "big") & 0x7FFFFFFF
                got.append(await r.readexactly(n))
            w.close()
            return got
        got = loop.run_until_complete(asyncio.wait_for(client(), 30))
        srv.close()
        loop.run_until_complete(srv.wait_closed())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert [c for c, _, _ in d.fast.calls] == bodies
    assert [c for c, _, _ in d.records] == [b for b in bodies if b[:1] != b"F"]
    assert sorted(got) == sorted([b"fast" + b for b in bodies if b[:1] == b"F"]
                                 + [b"gen:" + b[:8] for b in bodies if b[:1] in b"GL"])
