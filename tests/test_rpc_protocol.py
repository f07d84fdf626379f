"""ONC RPC version 2 (RFC 5531) behaviour of the server over real sockets.

Every call is encoded by tests/rpcclient.py (xdrlib3), independently of
fastnfs's own XDR code.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest

from conftest import FastnfsProcess
from rpcclient import (AUTH_BADCRED, AUTH_BADVERF, AUTH_DH, AUTH_ERROR, AUTH_NONE, AUTH_SYS,
                       AUTH_TOOWEAK, CALL, GARBAGE_ARGS, GETATTR, GUARDED, MOUNT_PROGRAM,
                       MSG_ACCEPTED, MSG_DENIED, NFS3_OK, NFS3ERR_EXIST, NFS3ERR_NOENT,
                       NFS_PROGRAM, NFS_V3, PROC_UNAVAIL, PROG_MISMATCH, PROG_UNAVAIL, REMOVE,
                       REPLY, RPC_MISMATCH, SUCCESS, AuthSys, Nfs3, Reply, RpcClient, Timeout,
                       call_header, new_xid)
from xdrlib3 import Packer

MAX_RECORD = (1 << 20) + 4096  # server.Config.max_record


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module: these tests only need a live endpoint."""
    export = tmp_path_factory.mktemp("rpc") / "export"
    export.mkdir()
    srv = FastnfsProcess(export).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


@pytest.fixture
def client(server):
    c = RpcClient(server.port)
    yield c
    c.close()


@pytest.fixture
def root(server):
    n = Nfs3.connect(server.port)
    fh = n.mount(str(server.export))
    n.close()
    return fh


def fh_args(fh: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    return p.get_buffer()


def assert_alive(c: RpcClient, prog=NFS_PROGRAM, vers=NFS_V3) -> None:
    """The connection still answers a NULL call (and any earlier reply is skipped)."""
    r = c.call(prog, vers, 0)
    assert r.ok, r
    assert r.body.get_position() == len(r.raw)  # NULL returns void


def assert_accept(r: Reply, stat: int) -> None:
    assert r.reply_stat == MSG_ACCEPTED, r
    assert r.accept_stat == stat, r


def assert_auth_error(r: Reply, stat: int) -> None:
    assert r.reply_stat == MSG_DENIED, r
    assert r.reject_stat == AUTH_ERROR, r
    assert r.auth_stat == stat, r


# -- NULL and the happy path ---------------------------------------------------
def test_null_tcp_both_programs(client):
    for prog, vers in ((NFS_PROGRAM, 3), (MOUNT_PROGRAM, 1), (MOUNT_PROGRAM, 3)):
        r = client.call(prog, vers, 0, cred=None)  # NULL needs no credentials
        assert r.ok, r
        assert r.verf == (AUTH_NONE, b"")
        assert r.body.get_position() == len(r.raw)


# -- MSG_DENIED ----------------------------------------------------------------
def test_rpc_mismatch(client):
    # RFC 5531 section 9: rpcvers must be 2; the reply names the range 2..2
    r = client.call(NFS_PROGRAM, NFS_V3, 0, rpcvers=3)
    assert r.reply_stat == MSG_DENIED
    assert r.reject_stat == RPC_MISMATCH
    assert (r.low, r.high) == (2, 2)
    assert_alive(client)


def _authsys_raw(stamp=0, machine=b"m", uid=0, gid=0, gids=(), ngids=None, extra=b""):
    p = Packer()
    p.pack_uint(stamp)
    p.pack_string(machine)
    p.pack_uint(uid)
    p.pack_uint(gid)
    p.pack_uint(len(gids) if ngids is None else ngids)
    for g in gids:
        p.pack_uint(g)
    return p.get_buffer() + extra


@pytest.mark.parametrize("cred", [
    pytest.param((99, b""), id="unknown-flavor"),
    pytest.param((AUTH_DH, b"\0" * 8), id="auth-dh"),
    pytest.param((AUTH_SYS, b"\0\0\0\0\0\0"), id="authsys-truncated"),
    pytest.param((AUTH_SYS, _authsys_raw(ngids=5, gids=(1, 2))), id="authsys-short-gids"),
    pytest.param((AUTH_SYS, _authsys_raw(gids=range(17))), id="authsys-17-gids"),
    pytest.param((AUTH_SYS, _authsys_raw(machine=b"x" * 256)), id="authsys-machine-256"),
    pytest.param((AUTH_SYS, _authsys_raw(extra=b"\0\0\0\0")), id="authsys-trailing"),
])
def test_auth_badcred(client, root, cred):
    # RFC 5531 section 9 / appendix A: an unusable credential is AUTH_BADCRED
    r = client.call(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root), cred=cred)
    assert_auth_error(r, AUTH_BADCRED)
    assert_alive(client)


def test_authsys_16_gids_accepted(client, root):
    r = client.call(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root),
                    cred=AuthSys(0, 0, gids=range(16), machine=b"x" * 255))
    assert r.ok, r
    assert r.body.unpack_uint() == NFS3_OK


@pytest.mark.parametrize("verf", [(AUTH_SYS, _authsys_raw()), (7, b"abcd")])
def test_auth_badverf(client, root, verf):
    # AUTH_NONE/AUTH_SYS calls carry an AUTH_NONE verifier (RFC 5531 section 10)
    r = client.call(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root), verf=verf)
    assert_auth_error(r, AUTH_BADVERF)
    assert_alive(client)


def test_oversized_credential_refused(client, root):
    # opaque_auth body<400>: a 404-byte body does not decode
    r = client.call(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root), cred=(AUTH_SYS, b"\0" * 404))
    assert (r.reply_stat, r.reject_stat, r.auth_stat) == (MSG_DENIED, AUTH_ERROR, AUTH_BADCRED) \
        or (r.reply_stat, r.accept_stat) == (MSG_ACCEPTED, GARBAGE_ARGS), r
    assert_alive(client)


def test_auth_tooweak_for_nfs(client, root):
    # NFS procedures other than NULL need AUTH_SYS (RFC 1813 section 4.4 / RFC 5531 9)
    r = client.call(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root), cred=None)
    assert_auth_error(r, AUTH_TOOWEAK)
    r = client.call(NFS_PROGRAM, NFS_V3, 0, cred=None)
    assert r.ok
    assert_alive(client)


# -- MSG_ACCEPTED errors ---------------------------------------------------------
def test_prog_unavail(client):
    r = client.call(100004, 2, 0)
    assert_accept(r, PROG_UNAVAIL)
    assert_alive(client)


@pytest.mark.parametrize("prog,vers,low,high", [
    (NFS_PROGRAM, 2, 3, 3), (NFS_PROGRAM, 4, 3, 3), (MOUNT_PROGRAM, 2, 1, 3),
    (MOUNT_PROGRAM, 4, 1, 3),
])
def test_prog_mismatch(client, prog, vers, low, high):
    r = client.call(prog, vers, 0)
    assert_accept(r, PROG_MISMATCH)
    assert (r.low, r.high) == (low, high)
    assert_alive(client)


@pytest.mark.parametrize("prog,vers,proc", [
    (NFS_PROGRAM, 3, 22), (NFS_PROGRAM, 3, 1000), (MOUNT_PROGRAM, 3, 6), (MOUNT_PROGRAM, 1, 6),
])
def test_proc_unavail(client, prog, vers, proc):
    r = client.call(prog, vers, proc)
    assert_accept(r, PROC_UNAVAIL)
    assert_alive(client)


def _garbage_getattr_args(root):
    return {
        "empty": b"",
        "truncated": fh_args(root)[:10],
        "fh-65": fh_args(b"\x01" * 65),
        "fh-len-4G": b"\xff\xff\xff\xff" + b"\0" * 12,
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "fh-65", "fh-len-4G"])
def test_garbage_args(client, root, kind):
    r = client.call(NFS_PROGRAM, NFS_V3, GETATTR, _garbage_getattr_args(root)[kind])
    assert_accept(r, GARBAGE_ARGS)
    assert_alive(client)


def test_garbage_mount_args(client):
    p = Packer()
    p.pack_uint(5000)  # dirpath<1024> claiming 5000 bytes
    r = client.call(MOUNT_PROGRAM, 3, 1, p.get_buffer() + b"x" * 64)
    assert_accept(r, GARBAGE_ARGS)
    assert_alive(client, MOUNT_PROGRAM, 3)


# -- record marking (RFC 5531 section 11) -------------------------------------------
def test_multi_fragment_records(client, root):
    # one call split into three fragments, the middle one empty
    xid, msg = client.build(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root))
    client.send_msg(msg, sizes=[7, 0])
    r = client.recv_reply(xid)
    assert r.ok and r.body.unpack_uint() == NFS3_OK
    # a fragment per byte for the header, then the rest
    xid, msg = client.build(NFS_PROGRAM, NFS_V3, 0)
    client.send_msg(msg, sizes=[1] * 12 + [0, 0])
    assert client.recv_reply(xid).ok
    # a fragment boundary that is split over two TCP segments
    xid, msg = client.build(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root))
    data = client.frame(msg, sizes=[20, 0])
    for i in range(0, len(data), 3):
        client.send_raw(data[i:i + 3])
    r = client.recv_reply(xid)
    assert r.ok and r.body.unpack_uint() == NFS3_OK
    assert_alive(client)


def test_pipelined_calls(client, root):
    msgs, xids = [], []
    for i in range(50):
        if i % 2:
            xid, msg = client.build(NFS_PROGRAM, NFS_V3, GETATTR, fh_args(root))
        else:
            xid, msg = client.build(NFS_PROGRAM, NFS_V3, 0)
        xids.append(xid)
        msgs.append(client.frame(msg))
    client.send_raw(b"".join(msgs))
    got = {}
    for _ in range(50):
        data, _addr = client.recv_msg()
        r = Reply(data)
        assert r.ok, r
        got[r.xid] = r
    assert sorted(got) == sorted(xids)
    for i, xid in enumerate(xids):
        if i % 2:
            assert got[xid].body.unpack_uint() == NFS3_OK


@pytest.mark.parametrize("last", [True, False])
def test_oversized_record_closes_only_that_connection(server, client, last):
    other = RpcClient(server.port)
    try:
        mark = (1 << 21) | (0x80000000 if last else 0)  # claims 2 MiB > 1 MiB + 4 KiB
        client.send_raw(struct.pack(">I", mark) + b"\0" * 64)
        assert client.is_closed(5.0)
        assert_alive(other)
    finally:
        other.close()


def test_oversized_record_from_fragments(server, client):
    # fragments that are each small but add up to more than the limit
    frag = 256 * 1024
    with RpcClient(server.port) as other:
        try:
            for _ in range(MAX_RECORD // frag + 2):
                client.send_raw(struct.pack(">I", frag) + b"\0" * frag)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert client.is_closed(5.0)
        assert_alive(other)


def test_largest_record_accepted(server, root):
    # a WRITE of 1 MiB (the advertised wtmax) fits in one record
    n = Nfs3.connect(server.port)
    try:
        st, r = n.create(root, "big", mode=0o644)
        assert st == NFS3_OK
        data = os.urandom(1 << 20)
        st, w = n.write(r["fh"], 0, data, stable=0)
        assert st == NFS3_OK and w["count"] == len(data)
        assert (server.export / "big").read_bytes() == data
    finally:
        n.close()


def test_truncated_record_then_close(server, client):
    # half a record, then the client's FIN: the server must close too, not hang
    xid, msg = client.build(NFS_PROGRAM, NFS_V3, 0)
    data = client.frame(msg)
    client.send_raw(data[:len(data) // 2])
    client.sock.shutdown(socket.SHUT_WR)
    assert client.is_closed(5.0)
    with RpcClient(server.port) as other:
        assert_alive(other)


def test_truncated_record_mark_then_close(server, client):
    client.send_raw(b"\x80\x00")  # half a record mark
    client.sock.shutdown(socket.SHUT_WR)
    assert client.is_closed(5.0)
    with RpcClient(server.port) as other:
        assert_alive(other)


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty-record"),
    pytest.param(b"\x01\x02\x03", id="3-bytes"),
    pytest.param(b"\xde\xad\xbe\xef" * 8, id="deadbeef"),
    pytest.param(struct.pack(">III", 77, CALL, 2) + b"\xff" * 5, id="call-header-truncated"),
    pytest.param(struct.pack(">II", 78, 9) + b"\0" * 40, id="bad-msg-type"),
])
def test_garbage_record_then_null(client, payload):
    # a record that is no call: ignored, or GARBAGE_ARGS for a call header that
    # does not decode; either way the connection keeps working
    client.send_raw(client.frame(payload))
    xid = client.send_call(NFS_PROGRAM, NFS_V3, 0)
    while True:
        data, _ = client.recv_msg()
        r = Reply(data)
        if r.xid == xid:
            assert r.ok
            break
        assert r.xid == 77 and r.reply_stat == MSG_ACCEPTED and r.accept_stat == GARBAGE_ARGS, r


def test_reply_message_is_ignored_tcp(client):
    # RFC 5531 section 9: a server only answers CALL messages
    p = Packer()
    p.pack_uint(4242)
    p.pack_enum(REPLY)
    p.pack_enum(MSG_ACCEPTED)
    p.pack_enum(AUTH_NONE)
    p.pack_opaque(b"")
    p.pack_enum(SUCCESS)
    client.send_msg(p.get_buffer())
    xid = client.send_call(NFS_PROGRAM, NFS_V3, 0)
    data, _ = client.recv_msg()
    assert Reply(data).xid == xid


# -- UDP ---------------------------------------------------------------------------
@pytest.fixture
def udp(server):
    c = RpcClient(server.port, proto="udp", timeout=3.0)
    yield c
    c.close()


def test_udp_null_and_getattr(server, udp):
    r = udp.call(NFS_PROGRAM, NFS_V3, 0)
    assert r.ok
    assert r.addr == ("127.0.0.1", server.port)
    n = Nfs3(udp)
    root = n.mount(str(server.export))
    st, a = n.getattr(root)
    assert st == NFS3_OK and a["attrs"]["fileid"] == os.stat(server.export).st_ino


def test_udp_reply_goes_to_each_sender(server):
    a = RpcClient(server.port, proto="udp", timeout=3.0)
    b = RpcClient(server.port, proto="udp", timeout=3.0)
    try:
        xa = a.send_call(NFS_PROGRAM, NFS_V3, 0)
        xb = b.send_call(MOUNT_PROGRAM, 3, 0)
        assert b.recv_reply().xid == xb
        assert a.recv_reply().xid == xa
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("payload", [
    b"", b"\x01", b"\xff" * 7, os.urandom(64),
    struct.pack(">II", 77, CALL) + b"\x00\x00\x00\x02\x00",
])
def test_udp_garbage_datagram(udp, payload):
    udp.send_raw(payload)
    xid = udp.send_call(NFS_PROGRAM, NFS_V3, 0)
    while True:
        r = udp.recv_reply()
        if r.xid == xid:
            assert r.ok
            break
        assert r.reply_stat == MSG_ACCEPTED and r.accept_stat == GARBAGE_ARGS, r


def test_udp_reply_message_ignored(udp):
    p = Packer()
    p.pack_uint(4243)
    p.pack_enum(REPLY)
    p.pack_enum(MSG_DENIED)
    p.pack_enum(RPC_MISMATCH)
    p.pack_uint(2)
    p.pack_uint(2)
    udp.send_raw(p.get_buffer())
    xid = udp.send_call(NFS_PROGRAM, NFS_V3, 0)
    assert udp.recv_reply().xid == xid


def test_udp_errors(udp, server):
    assert udp.call(NFS_PROGRAM, 3, 0, rpcvers=5).reject_stat == RPC_MISMATCH
    assert_accept(udp.call(NFS_PROGRAM, 2, 0), PROG_MISMATCH)
    assert_accept(udp.call(NFS_PROGRAM, 3, 22), PROC_UNAVAIL)
    assert_accept(udp.call(NFS_PROGRAM, 3, GETATTR, b"\0\0"), GARBAGE_ARGS)
    assert_auth_error(udp.call(NFS_PROGRAM, 3, GETATTR, fh_args(b"\0" * 24), cred=None),
                      AUTH_TOOWEAK)


# -- duplicate request cache ---------------------------------------------------------
def _raw_call(c: RpcClient, xid: int, proc: int, args: bytes) -> Reply:
    c.send_msg(call_header(xid, NFS_PROGRAM, NFS_V3, proc, c.cred) + args)
    return c.recv_reply(xid)


def _diropargs(dfh, name: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(dfh)
    p.pack_string(name)
    return p.get_buffer()


def test_drc_create_guarded_retransmission(server, client, root):
    n = Nfs3(client)
    args = n.create_args(root, "drc", GUARDED, mode=0o600)
    xid = new_xid()
    r1 = _raw_call(client, xid, 8, args)
    r2 = _raw_call(client, xid, 8, args)
    assert r1.ok and r1.body.unpack_uint() == NFS3_OK
    assert r2.raw == r1.raw  # the cached reply, not NFS3ERR_EXIST
    # the same retransmission over a new connection (a reconnecting client)
    with RpcClient(server.port) as c2:
        assert _raw_call(c2, xid, 8, args).raw == r1.raw
    # a new xid is a new request: now the file exists
    r3 = _raw_call(client, new_xid(), 8, args)
    assert r3.ok and r3.body.unpack_uint() == NFS3ERR_EXIST


def test_drc_remove_retransmission(server, client, root):
    (server.export / "victim").write_bytes(b"x")
    args = _diropargs(root, b"victim")
    xid = new_xid()
    r1 = _raw_call(client, xid, REMOVE, args)
    r2 = _raw_call(client, xid, REMOVE, args)
    assert r1.ok and r1.body.unpack_uint() == NFS3_OK
    assert r2.raw == r1.raw
    assert not (server.export / "victim").exists()
    r3 = _raw_call(client, new_xid(), REMOVE, args)
    assert r3.body.unpack_uint() == NFS3ERR_NOENT


def test_drc_same_xid_different_call_not_confused(server, client, root):
    # an unrelated call that reuses an xid is not answered from the cache
    xid = new_xid()
    (server.export / "one").write_bytes(b"1")
    (server.export / "two").write_bytes(b"2")
    r1 = _raw_call(client, xid, REMOVE, _diropargs(root, b"one"))
    r2 = _raw_call(client, xid, REMOVE, _diropargs(root, b"two"))
    assert r1.body.unpack_uint() == NFS3_OK and r2.body.unpack_uint() == NFS3_OK
    assert not (server.export / "one").exists() and not (server.export / "two").exists()


def test_udp_empty_datagram_gets_no_reply(udp):
    # nothing to answer: the server stays silent (and the client times out)
    udp.timeout = 0.3
    udp.sock.settimeout(0.3)
    udp.send_raw(b"")
    with pytest.raises(Timeout):
        udp.recv_msg()
