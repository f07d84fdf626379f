"""FASTNFS_SHADOW=1: the fast lane's answers checked against the general path on
live traffic (the end-to-end suites run once in this mode: tests/run.sh)."""

from __future__ import annotations

import logging
import os

import pytest
import xdrlib3

from conftest import FastnfsProcess, cython_twin
from rpcclient import ACCESS3_ALL, AuthSys, Nfs3, call_header, GETATTR, NFS_PROGRAM, NFS_V3

from fastnfs.exports import single_export
from fastnfs.server import Config, Server
from fastnfs.shadow import MARK, ShadowLane

_cx, _why = cython_twin("fastnfs._fastpath")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

ROOT = AuthSys(0, 0, machine=b"board")


def _tree(root):
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n" * 50)
    os.symlink("passwd", root / "etc" / "pw")


def _shadow_and_root_getattr(root):
    """An in-process shadow-mode server of root, and a GETATTR call of root's
    handle (from MNT)."""
    srv = Server(Config(exports=[single_export(str(root))]))
    shadow = srv.dispatcher.fast
    assert isinstance(shadow, ShadowLane)
    p = xdrlib3.Packer()
    p.pack_string(str(root).encode())
    rec = call_header(7, 100005, 3, 1, ROOT) + p.get_buffer()
    reply = bytes(srv.dispatcher.dispatch(rec, ("127.0.0.1", 800), "tcp").getbuffer()[4:])
    u = xdrlib3.Unpacker(reply[24:])
    assert u.unpack_uint() == 0
    p = xdrlib3.Packer()
    p.pack_opaque(u.unpack_opaque())
    return shadow, call_header(9, NFS_PROGRAM, NFS_V3, GETATTR, ROOT) + p.get_buffer()


def test_live_calls_agree_in_shadow_mode(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    _tree(export)
    srv = FastnfsProcess(export, env={"FASTNFS_SHADOW": "1"}).start()
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(export))
        for _ in range(3):
            st, out = n.lookup(root, "etc")
            assert st == 0
            etc = out["fh"]
            pw = n.lookup(etc, "passwd")[1]["fh"]
            link = n.lookup(etc, "pw")[1]["fh"]
            assert n.getattr(pw)[0] == 0 and n.access(pw, ACCESS3_ALL)[0] == 0
            assert n.readlink(link)[0] == 0
            assert n.read(pw, 0, 4096)[0] == 0
            assert n.lookup(etc, "missing")[0] != 0
            # UNSTABLE WRITEs the lane answers, done again by the shadow
            assert n.write(pw, 100, b"w" * 3000, stable=0)[0] == 0
        n.close()
    finally:
        srv.stop()      # raises if the log holds a mismatch
    log = srv.log()
    assert "FASTNFS_SHADOW=1" in log and MARK not in log
    assert (export / "etc/passwd").read_bytes()[100:3100] == b"w" * 3000


def test_a_write_compared_without_what_it_moved():
    """comparable: a WRITE3resok without its before and its after's times;
    every other reply whole."""
    from fastnfs.shadow import comparable
    call = call_header(1, NFS_PROGRAM, NFS_V3, 7, ROOT)
    reply = bytes(range(24)) + b"\0" * 4 + b"\0\0\0\1" + b"B" * 24 + b"\0\0\0\1" \
        + b"A" * 60 + b"T" * 24 + b"c" * 16
    assert len(reply) == 160
    other = reply[:32] + b"b" * 24 + reply[56:120] + b"t" * 24 + reply[144:]
    assert comparable(call, reply) == comparable(call, other)
    assert comparable(call, reply) != comparable(call, reply[:60] + b"a" + reply[61:])
    getattr_call = call_header(1, NFS_PROGRAM, NFS_V3, GETATTR, ROOT)
    assert comparable(getattr_call, reply) == reply


def test_a_drifting_lane_is_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FASTNFS_SHADOW", "1")
    _tree(tmp_path)
    shadow, rec = _shadow_and_root_getattr(tmp_path)
    peer = ("127.0.0.1", 800)
    with caplog.at_level(logging.ERROR, logger="fastnfs.shadow"):
        assert shadow.answer(rec, peer) is not None
        assert shadow.mismatches == 0 and shadow.compared >= 1

        class Drifting:      # a lane that forgot a rule: one byte of the reply differs
            def answer(self, record, peer, offset=0, mark=False):
                r = bytearray(_real.answer(record, peer, offset, mark))
                r[-1] ^= 1
                return bytes(r)
        _real = shadow.lane
        shadow.lane = Drifting()
        assert shadow.answer(rec, peer) is not None
    assert shadow.mismatches == 1
    assert any(MARK in r.getMessage() for r in caplog.records)


def test_a_lane_that_declines_the_retry_is_not_reported(tmp_path, monkeypatch, caplog):
    """Another process changed the object between the two answers and the lane,
    asked again, declines (a board layer's generation moved): the first answer
    raced with the change and there is nothing left to compare, not a drift."""
    monkeypatch.setenv("FASTNFS_SHADOW", "1")
    _tree(tmp_path)
    shadow, rec = _shadow_and_root_getattr(tmp_path)
    _real = shadow.lane

    class Raced:          # answers from before the change, then sees it and declines
        calls = 0

        def answer(self, record, peer, offset=0, mark=False):
            self.calls += 1
            if self.calls > 1:
                return None
            r = bytearray(_real.answer(record, peer, offset, mark))
            r[-1] ^= 1
            return bytes(r)
    shadow.lane = Raced()
    with caplog.at_level(logging.ERROR, logger="fastnfs.shadow"):
        assert shadow.answer(rec, ("127.0.0.1", 800)) is not None
    assert shadow.lane.calls == 2 and shadow.mismatches == 0
    assert not any(MARK in r.getMessage() for r in caplog.records)
