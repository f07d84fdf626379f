"""The Cython fast lane (fastnfs._fastpath) against the general path.

For every call the fast lane either declines (None) or produces exactly the
bytes Dispatcher.dispatch produces for the same record: the general path is
the reference.  Calls are built with xdrlib3 (tests/rpcclient.py), not with
fastnfs's own XDR code.
"""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xdrlib3 import Packer

from conftest import cython_twin
from rpcclient import (ACCESS, ACCESS3_ALL, GETATTR, LOOKUP, NFS_PROGRAM, NFS_V3, READ,
                       READLINK, AuthSys, call_header)

from fastnfs.exports import parse_exports, single_export
from fastnfs.server import Config, Server

_cx, _why = cython_twin("fastnfs._fastpath")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

ROOT = AuthSys(0, 0, machine=b"board")
USER = AuthSys(1000, 1000, gids=(1000, 24), machine=b"board")
OTHER = AuthSys(2000, 2000, machine=b"board")
LOCAL = ("127.0.0.1", 800)
UNPRIV = ("127.0.0.1", 40000)


def _tree(root):
    os.makedirs(root / "etc/init.d")
    os.makedirs(root / "usr/lib/deep/er/still/deeper/and/more")
    (root / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    (root / "etc/shadow").write_bytes(b"root:*:1::::::\n")
    (root / "etc/init.d/rcS").write_bytes(b"#!/bin/sh\n")
    (root / "usr/lib/deep/er/still/deeper/and/more/libc.so").write_bytes(b"\x7fELF" * 100)
    os.symlink("../usr/lib", root / "etc/lib")
    os.mkfifo(root / "etc/initctl")
    os.chmod(root / "etc/shadow", 0o640)
    os.chmod(root / "etc/init.d/rcS", 0o755)
    if os.geteuid() == 0:
        os.chown(root / "etc/shadow", 0, 42)
        os.chown(root / "usr", 1000, 1000)


def _server(path, entry=None, **cfg):
    entry = entry or single_export(str(path))
    return Server(Config(exports=[entry], **cfg))


def _call(proc, args: bytes, cred, xid=0x1234):
    return call_header(xid, NFS_PROGRAM, NFS_V3, proc, cred) + args


def _fh(fh: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    return p.get_buffer()


def _dirop(fh: bytes, name: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_string(name)
    return p.get_buffer()


def _access(fh: bytes, mask: int) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uint(mask)
    return p.get_buffer()


def _read(fh: bytes, offset: int, count: int) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(offset)
    p.pack_uint(count)
    return p.get_buffer()


def _general(srv, record, peer) -> bytes:
    p = srv.dispatcher.dispatch(record, peer, "tcp")
    return bytes(p.getbuffer()[4:])


def _both(srv, record, peer=LOCAL):
    """(fast reply or None, general reply); the general path runs first so that
    the thread holds the caller's credentials as it would after any call."""
    g = _general(srv, record, peer)
    if int.from_bytes(record[20:24], "big") in (READ, READLINK):
        g = _general(srv, record, peer)   # the first read may move atime (relatime)
    f = srv.dispatcher.fast.answer(record, peer)
    return f, g


def _walk(srv, path: bytes, cred=ROOT, peer=LOCAL):
    """The handles of each component of path, found with LOOKUP from the root."""
    e = srv.exports[0]
    fh = e.root_fh
    for name in path.split(b"/"):
        f, g = _both(srv, _call(LOOKUP, _dirop(fh, name), cred), peer)
        assert f is None or f == g
        status = int.from_bytes(g[24:28], "big")
        assert status == 0, (path, name, status)
        n = int.from_bytes(g[28:32], "big")
        fh = g[32:32 + n]
    return fh


@pytest.fixture(autouse=True)
def _server_identity_after():
    """The general path leaves this (the test's) thread acting as the last
    caller when run as root: give the thread back its own identity."""
    yield
    _as_server()


def _as_server():
    from fastnfs import creds
    if creds.ENABLED:
        creds.become_server()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    _tree(root)
    return root


PATHS = [b"etc", b"etc/passwd", b"etc/shadow", b"etc/init.d", b"etc/init.d/rcS", b"etc/lib",
         b"etc/initctl", b"usr/lib/deep/er/still/deeper/and/more",
         b"usr/lib/deep/er/still/deeper/and/more/libc.so"]


@pytest.mark.parametrize("cred", [ROOT, USER, OTHER], ids=["root", "user", "other"])
def test_same_bytes_for_every_object_and_caller(tree, cred):
    srv = _server(tree)
    fast = srv.dispatcher.fast
    handles = {b"": srv.exports[0].root_fh}
    for path in PATHS:
        handles[path] = _walk(srv, path, cred)
    for path, fh in handles.items():
        for rec in (_call(GETATTR, _fh(fh), cred),
                    _call(ACCESS, _access(fh, ACCESS3_ALL), cred),
                    _call(ACCESS, _access(fh, 0x01 | 0x20), cred),
                    _call(LOOKUP, _dirop(fh, b"passwd"), cred),
                    _call(LOOKUP, _dirop(fh, b"no-such-name"), cred)):
            f, g = _both(srv, rec)
            assert f is None or f == g, (path, rec[20:24])
    # the lane is not idle: most of these are answered by it
    assert fast.answered > 3 * len(handles)


def test_answers_the_ordinary_calls(tree):
    srv = _server(tree)
    fast = srv.dispatcher.fast
    fh = _walk(srv, b"etc/init.d")
    for rec in (_call(GETATTR, _fh(fh), ROOT), _call(ACCESS, _access(fh, 0x3F), ROOT),
                _call(LOOKUP, _dirop(fh, b"rcS"), ROOT),
                _call(LOOKUP, _dirop(fh, b"missing"), ROOT)):
        f, g = _both(srv, rec)
        assert f == g
    # a TCP reply carries its record mark
    rec = _call(GETATTR, _fh(fh), ROOT)
    r = fast.answer(b"\x80\x00\x00\x00" + rec, LOCAL, 4, True)
    assert r[4:] == _general(srv, rec, LOCAL)
    assert int.from_bytes(r[:4], "big") == 0x80000000 | (len(r) - 4)


def test_counts_calls_in_stats(tree):
    srv = _server(tree)
    fh = srv.exports[0].root_fh
    for _ in range(3):
        assert srv.dispatcher.fast.answer(_call(GETATTR, _fh(fh), ROOT), LOCAL) is not None
    # kept in C until a snapshot (every second in a server) brings them in
    snap = srv.stats.snapshot()
    assert snap["procs"]["nfs.GETATTR"]["calls"] == 3
    assert snap["procs"]["nfs.GETATTR"]["errors"] == 0
    assert sum(snap["procs"]["nfs.GETATTR"]["buckets"]) == 3
    assert snap["clients"]["127.0.0.1"]["calls"] == 3
    # a LOOKUP of a missing name counts as an error; flushing twice adds nothing
    fast = srv.dispatcher.fast
    assert fast.answer(_call(LOOKUP, _dirop(fh, b"missing"), ROOT), LOCAL) is not None
    srv.stats.flush()
    srv.stats.flush()
    assert srv.stats.procs[(NFS_PROGRAM, LOOKUP)][:2] == [1, 1]
    assert srv.stats.clients["127.0.0.1"][0] == 4


@pytest.mark.parametrize("name", [b".", b"..", b"a/b", b"a\0b", b"", b"x" * 256])
def test_unusual_names_take_the_general_path(tree, name):
    srv = _server(tree)
    fh = _walk(srv, b"etc")
    f, g = _both(srv, _call(LOOKUP, _dirop(fh, name), ROOT))
    assert f is None


@pytest.mark.parametrize("cred", [ROOT, USER, OTHER], ids=["root", "user", "other"])
def test_read_and_readlink_same_bytes(tree, cred):
    srv = _server(tree)
    fast = srv.dispatcher.fast
    before = fast.answered
    for path in PATHS:
        fh = _walk(srv, path)
        recs = [_call(READLINK, _fh(fh), cred)]
        for off, count in ((0, 4096), (0, 1), (3, 5), (0, 0), (399, 10), (400, 10),
                           (10 ** 6, 10), (1 << 63, 4), ((1 << 64) - 1, 4), (0, 32768)):
            recs.append(_call(READ, _read(fh, off, count), cred))
        for rec in recs:
            f, g = _both(srv, rec)
            assert f is None or f == g, (path, rec[-12:])
    assert fast.answered - before > 10
    # a TCP READ may ask for more than a datagram holds
    fh = _walk(srv, b"usr/lib/deep/er/still/deeper/and/more/libc.so")
    rec = _call(READ, _read(fh, 0, 65536), cred)
    g = _general(srv, rec, LOCAL)
    assert fast.answer(rec, LOCAL, 0, True)[4:] == g
    # more than the inline limit: the general path (and its thread pool) reads
    assert fast.answer(_call(READ, _read(fh, 0, 65537), cred), LOCAL, 0, True) is None
    srv.stats.flush()
    assert srv.stats.bytes_read > 0


def _whole(r) -> bytes:
    """A reply as it goes on the wire after its record mark: a lent READ's
    head, then the data of the file it names and the XDR padding."""
    if type(r) is not tuple:
        return bytes(r.getbuffer()[4:]) if hasattr(r, "getbuffer") else bytes(r[4:])
    head, tail = r
    head = bytes(head.getbuffer()[4:]) if hasattr(head, "getbuffer") else bytes(head[4:])
    fd, offset, count = tail
    try:
        data = os.pread(fd, count, offset)
    finally:
        os.close(fd)
    return head + data + bytes(-count & 3)


@pytest.mark.parametrize("cred", [ROOT, USER, OTHER], ids=["root", "user", "other"])
def test_large_reads_lent_same_bytes(tree, cred):
    """A cached READ over the inline limit is answered by the lane with its
    data left in the file (answer_lend, what the compiled transport sends by
    sendfile): with the file's bytes after it, the general path's reply."""
    big = tree / "usr/lib/deep/er/still/deeper/and/more/big"
    data = os.urandom(3 * 2**20 + 5)
    big.write_bytes(data)
    os.chmod(big, 0o640)
    if os.geteuid() == 0:
        # USER owns it, OTHER may not read it (cachestat(2), which says the
        # data is cached, answers only the owner or a writer of the file)
        os.chown(big, 1000, 1000)
    srv = _server(tree)
    fast = srv.dispatcher.fast
    assert srv.dispatcher.lend_files        # (cachestat: Linux 6.5)
    fh = _walk(srv, b"usr/lib/deep/er/still/deeper/and/more/big")
    big.read_bytes()
    _both(srv, _call(READ, _read(fh, 0, 10), cred))    # the thread acts as the caller
    lent = 0
    for off, count in ((0, 2**20), (1, 2**20), (2**20, 65537), (3 * 2**20 - 70001, 2**20),
                       (3 * 2**20 - 65536, 2**20), (3 * 2**20 + 1, 200000), (0, 2**21),
                       (1 << 63, 2**20), (0, 65536)):
        rec = _call(READ, _read(fh, off, count), cred)
        g = _whole(srv.dispatcher.dispatch(rec, LOCAL, "tcp"))
        r = fast.answer_lend(rec, LOCAL)
        if r is None:
            continue
        if type(r) is tuple:
            lent += 1
            head, fd, offset, n = r
            assert n > 65536 and int.from_bytes(head[:4], "big") == 0x80000000 | (
                len(head) - 4 + n + (-n & 3))
            r = (head, (fd, offset, n))
        assert _whole(r) == g, (off, count)
    # root and the owner read it; the general path refuses the others
    assert lent == (0 if cred is OTHER or os.geteuid() != 0 and cred is not USER else 6)


def test_large_reads_not_cached_are_not_lent(tree):
    """Data the page cache does not hold all of goes to the general path (its
    pool may wait for the disk), and so does a large READ from a caller
    that cannot send from a file."""
    big = tree / "big"
    big.write_bytes(os.urandom(2**20))
    srv = _server(tree)
    fast = srv.dispatcher.fast
    fh = _walk(srv, b"big")
    rec = _call(READ, _read(fh, 0, 2**20), ROOT)
    from fastnfs import fsstat
    with open(big, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)     # clean pages: dropped
        if fsstat.cache_pages(f.fileno(), 0, 2**20) != 0:
            pytest.skip("the page cache kept the pages")
        os.pread(f.fileno(), 4096, 0)      # that page (and some read ahead), not all
    assert fast.answer_lend(rec, LOCAL) is None
    big.read_bytes()
    r = fast.answer_lend(rec, LOCAL)
    assert type(r) is tuple
    os.close(r[1])
    assert fast.answer(rec, LOCAL, 0, True) is None      # no lending asked
    udp = fast.answer(rec, LOCAL)                        # UDP: a datagram's worth, inline
    assert udp is not None and 32768 < len(udp) < 33000


def _write(fh: bytes, offset: int, data: bytes, stable: int = 0, count=None) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(offset)
    p.pack_uint(len(data) if count is None else count)
    p.pack_uint(stable)
    p.pack_opaque(data)
    return p.get_buffer()


def _write_reply(r: bytes):
    """A WRITE reply's parts, the times apart (each write moves them):
    (status, before's size, after's fattr3 without times, count, committed, verf,
    before's and after's times)."""
    status = int.from_bytes(r[24:28], "big")
    if status != 0:
        return status, r[28:]
    assert r[28:32] == b"\0\0\0\1" and r[56:60] == b"\0\0\0\1"
    before_size, before_times = r[32:40], r[40:56]
    post = r[60:144]
    assert len(r) == 160
    return (status, before_size, post[:60], r[144:], before_times, post[60:])


@pytest.mark.parametrize("cred", [ROOT, USER, OTHER], ids=["root", "user", "other"])
def test_unstable_write_same_bytes(tree, cred):
    """An UNSTABLE WRITE answered by the lane: the file holds what the general
    path would have written, and the reply is the general path's but for the
    times the write itself moved (the general path writes the same bytes
    again, after, and its before is the lane's after)."""
    f = tree / "usr/lib/deep/er/still/deeper/and/more/w"
    f.write_bytes(b"")
    os.chmod(f, 0o664)
    if os.geteuid() == 0:
        os.chown(f, 0, 24)                 # USER may write it by its group, OTHER may not
    srv = _server(tree)
    fast = srv.dispatcher.fast
    fh = _walk(srv, b"usr/lib/deep/er/still/deeper/and/more/w")
    want = bytearray()
    answered = 0
    for off, data in ((0, b"abc"), (3, b"x" * 5000), (100000, b"tail!"), (1, b""),
                      (4096, os.urandom(65536 + 3)), (7, b"q")):
        rec = _call(7, _write(fh, off, data), cred)
        _as_server()
        before = os.stat(f)
        _general(srv, _call(GETATTR, _fh(fh), cred), LOCAL)   # the thread acts as the caller
        r = fast.answer(rec, LOCAL, 0, True)
        g = _general(srv, rec, LOCAL)
        _as_server()
        if r is None:
            assert _write_reply(g)[0] != 0 or os.geteuid() != 0 or cred is OTHER
            continue
        answered += 1
        r = r[4:]
        end = max(len(want), off + len(data))
        want.extend(bytes(end - len(want)))
        want[off:off + len(data)] = data
        assert f.read_bytes() == bytes(want)
        lane, gen = _write_reply(r), _write_reply(g)
        # the same status, attributes after, count, committed and verifier
        assert (lane[0], lane[2], lane[3]) == (gen[0], gen[2], gen[3])
        # before: the file as it was, and for the general path as the lane left it
        assert lane[1] == before.st_size.to_bytes(8, "big")
        assert gen[1] == lane[2][20:28] == len(want).to_bytes(8, "big")
        assert lane[4] == b"".join(
            int(t).to_bytes(4, "big") for t in (before.st_mtime_ns // 10**9,
                                                 before.st_mtime_ns % 10**9,
                                                 before.st_ctime_ns // 10**9,
                                                 before.st_ctime_ns % 10**9))
    if cred is OTHER and os.geteuid() == 0:
        assert answered == 0 and f.read_bytes() == b""
    else:
        assert answered == 6
    srv.stats.flush()
    assert srv.stats.bytes_written >= 2 * (3 + 5000 + 5 + 65539 + 1) * (answered > 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 70000), st.binary(max_size=9000)), min_size=1,
                max_size=8))
def test_unstable_writes_leave_what_the_general_path_leaves(tree, writes):
    """Any sequence of UNSTABLE WRITEs: one file written by the lane, its twin
    by the general path, end with the same bytes, and every reply but the
    file's identity and times is the same."""
    for name in ("lane", "general"):
        (tree / name).write_bytes(b"")
        os.chmod(tree / name, 0o666)
    srv = _server(tree)
    fast = srv.dispatcher.fast
    fl, fg = _walk(srv, b"lane"), _walk(srv, b"general")
    for off, data in writes:
        r = fast.answer(_call(7, _write(fl, off, data), ROOT), LOCAL, 0, True)
        g = _general(srv, _call(7, _write(fg, off, data), ROOT), LOCAL)
        assert r is not None
        lane, gen = _write_reply(r[4:]), _write_reply(g)
        assert lane[0] == gen[0] == 0 and lane[1] == gen[1] and lane[3] == gen[3]
        # the after's type, mode, nlink, uid, gid, size and rdev (not the blocks
        # used, which the file system decides, nor fsid and fileid)
        assert lane[2][:28] + lane[2][36:44] == gen[2][:28] + gen[2][36:44]
    _as_server()
    assert (tree / "lane").read_bytes() == (tree / "general").read_bytes()


def test_writes_the_lane_leaves(tree):
    """Stable writes (they sync: the pool), a count other than the data's, a
    read-only export, more than a datagram holds over UDP, a FIFO and past
    off_t all go to the general path."""
    f = tree / "f"
    f.write_bytes(b"")
    os.chmod(f, 0o666)
    srv = _server(tree)
    fast = srv.dispatcher.fast
    fh = _walk(srv, b"f")
    assert fast.answer(_call(7, _write(fh, 0, b""), ROOT), LOCAL, 0, True) is not None
    for stable in (1, 2):
        assert fast.answer(_call(7, _write(fh, 0, b"x", stable), ROOT), LOCAL, 0, True) is None
    assert fast.answer(_call(7, _write(fh, 0, b"xy", count=1), ROOT), LOCAL, 0, True) is None
    assert fast.answer(_call(7, _write(fh, 0, b"y" * 40000), ROOT), LOCAL) is None     # UDP
    assert fast.answer(_call(7, _write(fh, (1 << 63) - 2, b"zz"), ROOT), LOCAL, 0, True) is None
    fifo = _walk(srv, b"etc/initctl")
    assert fast.answer(_call(7, _write(fifo, 0, b"x"), ROOT), LOCAL, 0, True) is None
    _as_server()
    assert f.read_bytes() == b""
    entries, _ = parse_exports("%s 127.0.0.1(ro)\n" % tree)
    ro = _server(tree, entries[0])
    fh = _walk(ro, b"f")
    assert ro.dispatcher.fast.answer(_call(7, _write(fh, 0, b"x"), ROOT), LOCAL, 0, True) is None
    _as_server()
    assert f.read_bytes() == b""


def test_virtfs_write_by_metadata_permissions(tmp_path):
    """virtfs: the metadata's owner and mode say who may write (the general
    path's check_io); the reply shows the file as clients see it."""
    root = tmp_path / "root"
    _virtfs_tree(root)
    (root / "etc/motd").write_bytes(b"")
    _meta(root / "etc", "motd", uid=1000, gid=1000, mode=0o100600)
    srv = _server(root, virtfs=True)
    fast = srv.dispatcher.fast
    fh = _walk(srv, b"etc/motd")
    for cred, ok in ((USER, True), (OTHER, False)):
        _both(srv, _call(GETATTR, _fh(fh), cred))
        r = fast.answer(_call(7, _write(fh, 0, b"hello"), cred), LOCAL, 0, True)
        _as_server()
        if not ok:
            assert r is None
            continue
        assert r is not None
        lane = _write_reply(r[4:])
        assert lane[0] == 0
        mode, uid = (int.from_bytes(lane[2][i:i + 4], "big") for i in (4, 12))
        assert (mode, uid) == (0o600, 1000)
    assert (root / "etc/motd").read_bytes() == b"hello"


def test_other_procedures_and_programs_decline(tree):
    srv = _server(tree)
    fh = _walk(srv, b"etc/lib")
    fast = srv.dispatcher.fast
    assert fast.answer(_call(2, _fh(fh) + b"\0" * 32, ROOT), LOCAL) is None   # SETATTR
    assert fast.answer(_call(7, _fh(fh) + b"\0" * 20, ROOT), LOCAL) is None   # WRITE
    assert fast.answer(call_header(1, 100005, 3, 1, ROOT) + _fh(fh), LOCAL) is None
    assert fast.answer(call_header(1, NFS_PROGRAM, 2, 1, ROOT) + _fh(fh), LOCAL) is None
    assert fast.answer(call_header(1, NFS_PROGRAM, 3, GETATTR, None) + _fh(fh), LOCAL) is None


def test_unknown_or_forged_handles_decline(tree):
    srv = _server(tree)
    e = srv.exports[0]
    fh = _walk(srv, b"etc/passwd")
    fast = srv.dispatcher.fast
    # a handle the cache does not place: the general path searches
    e.backend.cache.clear()
    assert fast.answer(_call(GETATTR, _fh(fh), ROOT), LOCAL) is None
    _both(srv, _call(GETATTR, _fh(fh), ROOT))
    assert fast.answer(_call(GETATTR, _fh(fh), ROOT), LOCAL) is not None
    # a different generation or device: never answered from the cached path
    for off in (16, 20):
        forged = bytearray(fh)
        forged[off] ^= 0xFF
        f, g = _both(srv, _call(GETATTR, _fh(bytes(forged)), ROOT))
        assert f is None
        assert int.from_bytes(g[24:28], "big") != 0
    # the inode of another object with this object's cached path
    other = bytearray(_walk(srv, b"etc/shadow"))
    other[8:16] = fh[8:16]
    f, g = _both(srv, _call(GETATTR, _fh(bytes(other)), ROOT))
    assert f is None or f == g


def test_root_handle_survives_cache_eviction(tree):
    """(Found by the test above: the general path's search never found the
    root itself once the LRU had evicted it.)"""
    srv = _server(tree, fhcache_size=2)
    fh = srv.exports[0].root_fh
    _walk(srv, b"usr/lib/deep/er")          # pushes the root out of a 2-entry cache
    assert srv.exports[0].backend.root_ino not in srv.exports[0].backend.cache
    g = _general(srv, _call(GETATTR, _fh(fh), ROOT), LOCAL)
    assert int.from_bytes(g[24:28], "big") == 0


def test_replaced_path_is_not_trusted(tree):
    """The cached path now names another file: the inode check declines."""
    srv = _server(tree)
    fh = _walk(srv, b"etc/passwd")
    os.rename(tree / "etc/passwd", tree / "etc/passwd.old")
    (tree / "etc/passwd").write_bytes(b"new\n")
    rec = _call(GETATTR, _fh(fh), ROOT)
    assert srv.dispatcher.fast.answer(rec, LOCAL) is None
    # the general path finds it again under its new name; then the lane agrees
    f, g = _both(srv, rec)
    assert f == g
    assert srv.exports[0].backend.cache.get(int.from_bytes(fh[8:16], "big")) == b"etc/passwd.old"


def test_directory_swapped_for_symlink_is_not_followed(tree, tmp_path):
    """A cached directory path that became a symlink to outside the export."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"x")
    srv = _server(tree)
    fh = _walk(srv, b"etc/init.d")
    os.rename(tree / "etc/init.d", tree / "etc/init.d.old")
    os.symlink(str(outside), tree / "etc/init.d")
    f = srv.dispatcher.fast.answer(_call(LOOKUP, _dirop(fh, b"secret"), ROOT), LOCAL)
    assert f is None
    g = _general(srv, _call(LOOKUP, _dirop(fh, b"secret"), ROOT), LOCAL)
    assert int.from_bytes(g[24:28], "big") != 0


def test_export_rules_hold(tree):
    entries, _ = parse_exports("%s 10.0.0.0/8(rw) 127.0.0.1(ro,root_squash,secure)\n" % tree)
    srv = _server(tree, entries[0])
    fast = srv.dispatcher.fast
    fh = srv.exports[0].root_fh
    # a host the export does not name, and an unprivileged port on a secure export
    assert fast.answer(_call(GETATTR, _fh(fh), ROOT), ("192.168.1.1", 800)) is None
    assert fast.answer(_call(GETATTR, _fh(fh), ROOT), UNPRIV) is None
    # read-only and squashed: ACCESS grants no modify bits, same as the general path
    f, g = _both(srv, _call(ACCESS, _access(fh, ACCESS3_ALL), ROOT))
    assert f is None or f == g
    status, granted = int.from_bytes(g[24:28], "big"), int.from_bytes(g[-4:], "big")
    assert status == 0 and granted & 0x1C == 0


def test_exports_reload_takes_effect(tree, tmp_path):
    exports = tmp_path / "exports"
    exports.write_text("%s 127.0.0.1(rw,no_root_squash)\n" % tree)
    from fastnfs.exports import load_exports
    entries, _ = load_exports(str(exports))
    srv = _server(tree, entries[0], exports_file=str(exports), port=0, bind="127.0.0.1",
                  portmap=False)
    srv.bind()   # a reload shares its warnings in the stats directory of the port
    fast = srv.dispatcher.fast
    fh = srv.exports[0].root_fh
    rec = _call(ACCESS, _access(fh, ACCESS3_ALL), ROOT)
    f, g = _both(srv, rec)
    assert f == g and int.from_bytes(g[-4:], "big") & 0x04
    exports.write_text("%s 127.0.0.1(ro)\n" % tree)
    assert srv.reload_exports()
    f, g = _both(srv, rec)
    assert f is None or f == g
    assert int.from_bytes(g[-4:], "big") & 0x1C == 0
    _as_server()   # this thread acted as the squashed caller
    exports.write_text("%s 10.0.0.1(rw)\n" % tree)
    assert srv.reload_exports()
    assert fast.answer(rec, LOCAL) is None
    for _, sock in srv.sockets:
        sock.close()


def _meta(dirpath, name, **kv):
    d = dirpath / ".virtfs_metadata"
    d.mkdir(exist_ok=True)
    (d / name).write_text("".join("virtfs.%s=%d\n" % kv_ for kv_ in kv.items()))


def _virtfs_tree(root):
    """A rootfs as ptxdist leaves it: owners, modes and device nodes in metadata."""
    _tree(root)
    (root / ".virtfs_metadata_root").write_text("virtfs.uid=0\nvirtfs.gid=0\n"
                                                "virtfs.mode=16877\n")
    _meta(root, "etc", uid=0, gid=0, mode=0o40755)
    _meta(root, "usr", uid=0, gid=0, mode=0o40700)
    _meta(root / "etc", "shadow", uid=0, gid=42, mode=0o100640)
    (root / "dev").mkdir()
    _meta(root, "dev", uid=0, gid=0, mode=0o40755)
    (root / "dev/console").write_bytes(b"")
    _meta(root / "dev", "console", uid=0, gid=5, mode=0o20620, rdev=(5 << 8) | 1)
    (root / "dev/sda").write_bytes(b"")
    _meta(root / "dev", "sda", uid=0, gid=6, mode=0o60660, rdev=(8 << 8))
    (root / "dev/initctl").write_bytes(b"")
    _meta(root / "dev", "initctl", mode=0o10600)
    (root / "dev/sh").write_bytes(b"/bin/busybox")
    _meta(root / "dev", "sh", mode=0o120777)
    (root / "dev/broken").write_bytes(b"")
    (root / "dev/.virtfs_metadata/broken").write_text("virtfs.uid=oops\n")


VIRTFS_PATHS = [b"etc", b"etc/passwd", b"etc/shadow", b"usr", b"usr/lib", b"dev",
                b"dev/console", b"dev/sda", b"dev/initctl", b"dev/sh", b"dev/broken"]


@pytest.mark.parametrize("cred", [ROOT, USER, OTHER], ids=["root", "user", "other"])
def test_virtfs_same_bytes(tmp_path, cred):
    root = tmp_path / "root"
    _virtfs_tree(root)
    srv = _server(root, virtfs=True)
    fast = srv.dispatcher.fast
    handles = {b"": srv.exports[0].root_fh}
    for path in VIRTFS_PATHS:
        f, g = None, None
        fh = srv.exports[0].root_fh
        for name in path.split(b"/"):
            f, g = _both(srv, _call(LOOKUP, _dirop(fh, name), ROOT))
            assert f is None or f == g, path
            fh = g[32:32 + int.from_bytes(g[28:32], "big")]
        handles[path] = fh
    before = fast.answered
    for path, fh in handles.items():
        for rec in (_call(GETATTR, _fh(fh), cred),
                    _call(ACCESS, _access(fh, ACCESS3_ALL), cred),
                    _call(LOOKUP, _dirop(fh, b"console"), cred),
                    _call(LOOKUP, _dirop(fh, b".virtfs_metadata"), cred),
                    _call(LOOKUP, _dirop(fh, b".virtfs_metadata_root"), cred),
                    _call(LOOKUP, _dirop(fh, b"missing"), cred),
                    _call(READLINK, _fh(fh), cred),
                    _call(READ, _read(fh, 0, 4096), cred)):
            f, g = _both(srv, rec)
            assert f is None or f == g, (path, rec[20:24])
    assert fast.answered - before > 2 * len(handles)
    # a symlink kept as a file: its target is the file's content, the general path's job
    rec = _call(READLINK, _fh(handles[b"dev/sh"]), ROOT)
    assert fast.answer(rec, LOCAL) is None
    assert _general(srv, rec, LOCAL).endswith(b"/bin/busybox")
    # the served type and device numbers are the metadata's
    f, _ = _both(srv, _call(GETATTR, _fh(handles[b"dev/sda"]), ROOT))
    assert int.from_bytes(f[28:32], "big") == 3            # NF3BLK
    # fattr3: type mode nlink uid gid (4 bytes each), size used (8), rdev major minor
    assert (int.from_bytes(f[64:68], "big"), int.from_bytes(f[68:72], "big")) == (8, 0)
    assert (int.from_bytes(f[32:36], "big"), int.from_bytes(f[40:44], "big"),
            int.from_bytes(f[44:48], "big")) == (0o660, 0, 6)


def test_virtfs_metadata_change_is_seen(tmp_path):
    root = tmp_path / "root"
    _virtfs_tree(root)
    srv = _server(root, virtfs=True)
    fh = _walk(srv, b"etc/shadow")
    rec = _call(GETATTR, _fh(fh), ROOT)
    f, g = _both(srv, rec)
    assert f == g
    _meta(root / "etc", "shadow", uid=7, gid=42, mode=0o100600)
    # the stamp of the metadata file changed: the lane reads it again itself
    f = srv.dispatcher.fast.answer(rec, LOCAL)
    assert int.from_bytes(f[40:44], "big") == 7
    assert f == _general(srv, rec, LOCAL)


def test_virtfs_cold_metadata_read_by_the_lane(tmp_path, caplog):
    """A metadata file not cached yet is read for the lane by the backend's
    one reader; a malformed one too, which warns once for both paths."""
    root = tmp_path / "root"
    _virtfs_tree(root)
    srv = _server(root, virtfs=True)
    fast = srv.dispatcher.fast
    dfh = _walk(srv, b"dev")
    srv.exports[0].backend.overlay.cache.clear()
    caplog.clear()
    for name in (b"console", b"sda", b"broken"):
        rec = _call(LOOKUP, _dirop(dfh, name), ROOT)
        f = fast.answer(rec, LOCAL)
        assert f is not None, name
        g = _general(srv, rec, LOCAL)
        assert f == g
    assert sum("malformed metadata" in r.getMessage() for r in caplog.records) == 1
    # a metadata directory that is a symlink never lends attributes
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("virtfs.uid=4242\n")
    (root / "etc/.virtfs_metadata").mkdir(exist_ok=True)
    os.rename(root / "etc/.virtfs_metadata", root / "etc/.virtfs_metadata.old")
    os.symlink(str(outside), root / "etc/.virtfs_metadata")
    efh = _walk(srv, b"etc")
    rec = _call(LOOKUP, _dirop(efh, b"passwd"), ROOT)
    f = fast.answer(rec, LOCAL)
    g = _general(srv, rec, LOCAL)
    assert f is None or f == g
    assert int.from_bytes(g[-84 - 4 - 84 + 12:-84 - 4 - 84 + 16], "big") != 4242


def test_virtfs_hidden_names_never_answered(tmp_path):
    root = tmp_path / "root"
    _virtfs_tree(root)
    srv = _server(root, virtfs=True)
    for dfh in (srv.exports[0].root_fh, _walk(srv, b"dev")):
        for name in (b".virtfs_metadata", b".virtfs_metadata_root"):
            rec = _call(LOOKUP, _dirop(dfh, name), ROOT)
            assert srv.dispatcher.fast.answer(rec, LOCAL) is None
            g = _general(srv, rec, LOCAL)
            assert int.from_bytes(g[24:28], "big") == 2    # NFS3ERR_NOENT


@pytest.mark.skipif(os.geteuid() != 0, reason="switching credentials needs root")
def test_caller_credentials_decide(tree):
    """Running as root, the lane answers only when the thread already acts as
    the caller, so the kernel's permission checks are the caller's."""
    os.chmod(tree / "etc", 0o700)
    srv = _server(tree)
    fh = _walk(srv, b"etc")
    rec = _call(LOOKUP, _dirop(fh, b"passwd"), OTHER)
    f, g = _both(srv, rec)
    assert f is None or f == g
    assert int.from_bytes(g[24:28], "big") == 13   # NFS3ERR_ACCES: not searchable by 2000
    # after a root call the thread is root again: the lane declines for OTHER
    _general(srv, _call(GETATTR, _fh(fh), ROOT), LOCAL)
    assert srv.dispatcher.fast.answer(rec, LOCAL) is None


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_calls_never_differ(tree, data):
    """Flip, cut or extend ordinary calls: the lane declines or agrees."""
    srv = _cached_server(tree)
    fh = srv._fh_etc
    base = data.draw(st.sampled_from([
        _call(GETATTR, _fh(fh), USER), _call(ACCESS, _access(fh, 0x3F), ROOT),
        _call(LOOKUP, _dirop(fh, b"passwd"), ROOT), _call(LOOKUP, _dirop(fh, b"x"), USER)]))
    rec = bytearray(base)
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(rec) - 1))
        rec[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(rec)))
    rec = bytes(rec[:cut]) + data.draw(st.binary(max_size=8))
    f = srv.dispatcher.fast.answer(rec, LOCAL)
    if f is not None:
        assert f == _general(srv, rec, LOCAL)


_SERVERS: dict = {}


def _cached_server(tree):
    srv = _SERVERS.get(str(tree))
    if srv is None:
        _SERVERS.clear()
        srv = _SERVERS[str(tree)] = _server(tree)
        srv._fh_etc = _walk(srv, b"etc")
    return srv


def test_ftypes_match(tree):
    srv = _server(tree)
    for path in (b"etc", b"etc/passwd", b"etc/lib", b"etc/initctl"):
        fh = _walk(srv, path)
        f, g = _both(srv, _call(GETATTR, _fh(fh), ROOT))
        assert f == g
        ftype = int.from_bytes(f[28:32], "big")
        mode = os.lstat(tree / path.decode()).st_mode
        assert ftype == {stat.S_IFDIR: 2, stat.S_IFREG: 1, stat.S_IFLNK: 5,
                         stat.S_IFIFO: 7}[stat.S_IFMT(mode)]


@pytest.mark.parametrize("virtfs", [False, True], ids=["plain", "virtfs"])
@pytest.mark.parametrize("budget,dirbudget", [(100000, 100000), (1000, 100000), (100000, 90),
                                              (300, 40), (0, 0)])
def test_readdirplus_entries_twins(tmp_path, virtfs, budget, dirbudget):
    """READDIRPLUS entries: the Cython loop gives the Python loop's bytes."""
    from fastnfs.backends import plain as readdir  # put_entries_plus lives with the plain backend
    from fastnfs.xdr import Packer as XPacker
    root = tmp_path / "root"
    _virtfs_tree(root)
    for i in range(30):
        (root / "dev" / ("n%02d" % i)).write_bytes(b"x" * i)
    os.symlink("gone", root / "dev/dangling")
    srv = _server(root, virtfs=virtfs)
    e = srv.exports[0]
    for path in (b"", b"dev", b"etc/init.d"):
        d = e.resolve(_walk(srv, path) if path else e.root_fh)
        cookies, names, inos = e.backend.listing(d)
        names = list(names) + [b"vanished"]          # listed, then removed: no attributes
        cookies = list(cookies) + [cookies[-1] + 1 if cookies else 3]
        inos = list(inos) + [12345]
        dfd = e.backend.open_dir(d)
        try:
            out = []
            for fn in (readdir.py_put_entries_plus, _cx.put_entries_plus):
                if virtfs:
                    e.backend.overlay.cache.clear()
                p = XPacker() if fn is readdir.py_put_entries_plus else _cxdr_packer()
                r = fn(p, e, dfd, d.path, d.child_anc(), cookies, names, inos, 0, budget,
                       dirbudget, 0)
                out.append((r, bytes(p.getbuffer())))
        finally:
            e.backend.close_fd(dfd)
        assert out[0] == out[1], path


def _cxdr_packer():
    from fastnfs._xdr import Packer as CPacker
    return CPacker()


@pytest.mark.parametrize("plus", [False, True], ids=["READDIR", "READDIRPLUS"])
def test_big_directory_first_listed_off_the_loop(tmp_path, plus):
    """The first listing of a big directory runs in the pool; a small one, or
    one already listed, inline (offload.scan_inline)."""
    import asyncio
    from fastnfs import offload
    root = tmp_path / "root"
    (root / "big").mkdir(parents=True)
    (root / "small").mkdir()
    for i in range(1500):
        (root / "big" / ("entry-with-a-longish-name-%05d" % i)).write_bytes(b"")
    assert os.stat(root / "big").st_size >= offload.BIG_DIR
    srv = _server(root)
    p = Packer()
    p.pack_uhyper(0)
    p.pack_fopaque(8, b"\0" * 8)
    p.pack_uint(8192)
    if plus:
        p.pack_uint(32768)
    args = p.get_buffer()
    proc = 17 if plus else 16
    loop = asyncio.new_event_loop()
    from concurrent.futures import ThreadPoolExecutor
    srv.dispatcher.executor = ThreadPoolExecutor(max_workers=2)
    try:
        for name, later in ((b"big", True), (b"big", False), (b"small", False)):
            rec = _call(proc, _fh(_walk(srv, name)) + args, ROOT)
            r = srv.dispatcher.dispatch(rec, LOCAL, "tcp")
            assert asyncio.iscoroutine(r) == later, name
            if later:
                r = loop.run_until_complete(r)
            reply = bytes(r.getbuffer()[4:])
            assert int.from_bytes(reply[24:28], "big") == 0
            _as_server()
    finally:
        srv.dispatcher.executor.shutdown()
        loop.close()
