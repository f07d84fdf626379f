#!/usr/bin/env python3
"""An NFSv3/MOUNT load generator that is not the bottleneck.

Its own ONC RPC client: raw TCP sockets, record marking, requests built from
pre-encoded call headers (one bytes object per procedure, the xid patched in),
replies parsed with int.from_bytes/struct at fixed offsets.  No xdrlib, no
libnfs, nothing of fastnfs: the same client for fastnfs, unfsd and nfs-ganesha
(whose MOUNT has a port of its own: --mount-port).

Workloads (each prints one JSON object on stdout; bench/run.py drives them):

  getattr    one connection, one outstanding GETATTR at a time (blocking socket)
  getattr-all  the same, but over every filehandle of the tree in a shuffled order
  bootstorm  C clients, one TCP connection each, walking the tree like a booting board
             (--engine c: the same walk done by bench/bootgen.c, compiled)
  stream     one connection, D outstanding READs or WRITEs of the largest size offered
             (--engine c: the same calls made by bench/streamgen.c, compiled)
  loopback-send, loopback  the two ends of a plain TCP stream (no RPC): the loopback
             limit run.py measures next to stream's READ

Every result carries the generator's own CPU time (getrusage), so the
benchmark can show how much of a core the generator used per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import time
from array import array

LAST = 0x80000000
NFS_PROG, NFS_VERS = 100003, 3
MNT_PROG, MNT_VERS = 100005, 3

# NFSv3 procedures
GETATTR, LOOKUP, ACCESS, READLINK, READ, WRITE, CREATE = 1, 3, 4, 5, 6, 7, 8
READDIR, READDIRPLUS, FSINFO, COMMIT = 16, 17, 19, 21
NF3REG, NF3DIR, NF3LNK = 1, 2, 5
NFS3ERR_NOTSUPP = 10004
UNSTABLE = 0
ACCESS_ALL = 0x3F
ZERO8 = bytes(8)

_u32 = struct.Struct(">I")
_II = struct.Struct(">II")


class RpcError(Exception):
    pass


def opaque(b: bytes) -> bytes:
    n = len(b)
    return _u32.pack(n) + b + b"\0" * (-n & 3)


def _cred(uid: int = 0, gid: int = 0) -> bytes:
    machine = b"bench"
    body = struct.pack(">I", 0) + opaque(machine) + struct.pack(">III", uid, gid, 0)
    return struct.pack(">II", 1, len(body)) + body + struct.pack(">II", 0, 0)  # + AUTH_NONE verf


_CRED = _cred()
_HDR: dict = {}


def header(prog: int, vers: int, proc: int) -> bytes:
    """The call header after the xid: msg_type .. verifier (cached per procedure)."""
    k = (prog, vers, proc)
    h = _HDR.get(k)
    if h is None:
        h = _HDR[k] = struct.pack(">IIIII", 0, 2, prog, vers, proc) + _CRED
    return h


def reply_body(rec) -> int:
    """Offset of the results in a reply record (after accept_stat); raises on a rejection."""
    if int.from_bytes(rec[8:12], "big") != 0:
        raise RpcError("call denied")
    vl = int.from_bytes(rec[16:20], "big")
    off = 20 + ((vl + 3) & ~3)
    st = int.from_bytes(rec[off:off + 4], "big")
    if st != 0:
        raise RpcError("accept_stat %d" % st)
    return off + 4


# ---------------------------------------------------------------- reply parsing
def skip_post_op_attr(rec, off: int) -> int:
    return off + 4 + (84 if rec[off + 3] else 0)


def parse_lookup(rec, off):
    """(status, fh, ftype, size) of a LOOKUP reply."""
    st = int.from_bytes(rec[off:off + 4], "big")
    if st:
        return st, None, 0, 0
    n = int.from_bytes(rec[off + 4:off + 8], "big")
    fh = bytes(rec[off + 8:off + 8 + n])
    a = off + 8 + ((n + 3) & ~3)
    if rec[a + 3]:
        ftype = int.from_bytes(rec[a + 4:a + 8], "big")
        size = int.from_bytes(rec[a + 24:a + 32], "big")
    else:
        ftype, size = 0, 0
    return 0, fh, ftype, size


def parse_readdir(rec, off, plus: bool):
    """(status, entries, eof, cookieverf); entries are (name, cookie, ftype, fh)."""
    st = int.from_bytes(rec[off:off + 4], "big")
    if st:
        return st, [], True, b"\0" * 8
    off = skip_post_op_attr(rec, off + 4)
    verf = bytes(rec[off:off + 8])
    off += 8
    out = []
    while int.from_bytes(rec[off:off + 4], "big"):
        n = int.from_bytes(rec[off + 12:off + 16], "big")
        name = bytes(rec[off + 16:off + 16 + n])
        off += 16 + ((n + 3) & ~3)
        cookie = int.from_bytes(rec[off:off + 8], "big")
        off += 8
        ftype, fh = 0, None
        if plus:
            if rec[off + 3]:
                ftype = int.from_bytes(rec[off + 4:off + 8], "big")
                off += 88
            else:
                off += 4
            if rec[off + 3]:
                m = int.from_bytes(rec[off + 4:off + 8], "big")
                fh = bytes(rec[off + 8:off + 8 + m])
                off += 8 + ((m + 3) & ~3)
            else:
                off += 4
        out.append((name, cookie, ftype, fh))
    eof = int.from_bytes(rec[off + 4:off + 8], "big")
    return 0, out, bool(eof), verf


# ---------------------------------------------------------------- blocking client
class SyncConn:
    """One blocking TCP connection, one call at a time (setup and the latency test)."""

    def __init__(self, host: str, port: int):
        self.s = socket.create_connection((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.xid = int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF
        self.buf = bytearray(4 << 20)
        self.view = memoryview(self.buf)

    def close(self):
        self.s.close()

    def recv_record(self) -> bytes:
        frags = []
        while True:
            mark = _u32.unpack(self._recv_exact(4))[0]
            frags.append(self._recv_exact(mark & 0x7FFFFFFF))
            if mark & LAST:
                return b"".join(frags)

    def _recv_exact(self, n: int) -> bytes:
        got = 0
        v = self.view
        while got < n:
            k = self.s.recv_into(v[got:n], n - got)
            if not k:
                raise ConnectionError("server closed the connection")
            got += k
        return bytes(v[:n])

    def call(self, prog, vers, proc, body: bytes = b""):
        self.xid += 1
        msg = _u32.pack(self.xid) + header(prog, vers, proc) + body
        self.s.sendall(_u32.pack(LAST | len(msg)) + msg)
        while True:
            rec = self.recv_record()
            if int.from_bytes(rec[:4], "big") == self.xid:
                return rec, reply_body(rec)

    def nfs(self, proc, body=b""):
        return self.call(NFS_PROG, NFS_VERS, proc, body)

    # -- helpers used for setup
    def mount(self, path: bytes) -> bytes:
        rec, off = self.call(MNT_PROG, MNT_VERS, 1, opaque(path))
        st = int.from_bytes(rec[off:off + 4], "big")
        if st:
            raise RpcError("MNT %r: mountstat3 %d" % (path, st))
        n = int.from_bytes(rec[off + 4:off + 8], "big")
        return bytes(rec[off + 8:off + 8 + n])

    def fsinfo(self, fh: bytes) -> dict:
        rec, off = self.nfs(FSINFO, opaque(fh))
        st = int.from_bytes(rec[off:off + 4], "big")
        if st:
            raise RpcError("FSINFO: nfsstat3 %d" % st)
        off = skip_post_op_attr(rec, off + 4)
        v = struct.unpack_from(">IIIIIII", rec, off)
        return dict(rtmax=v[0], rtpref=v[1], wtmax=v[3], wtpref=v[4], dtpref=v[6])

    def lookup_path(self, root: bytes, path: bytes):
        fh = root
        for comp in [c for c in path.split(b"/") if c]:
            rec, off = self.nfs(LOOKUP, opaque(fh) + opaque(comp))
            st, fh, _t, _s = parse_lookup(rec, off)
            if st:
                raise RpcError("LOOKUP %r: nfsstat3 %d" % (comp, st))
        return fh


def mount_root(a, c: SyncConn, path: str | None = None) -> bytes:
    """The root handle of the export (or of path): MNT on c's connection when MOUNT
    shares the NFS port (fastnfs, unfsd -m PORT), else on a connection of its own to
    --mount-port (nfs-ganesha serves MOUNT on a port of its own)."""
    path = a.export if path is None else path
    if not a.mount_port or a.mount_port == a.port:
        return c.mount(path.encode())
    m = SyncConn(a.host, a.mount_port)
    try:
        return m.mount(path.encode())
    finally:
        m.close()


# ---------------------------------------------------------------- asyncio client
class AsyncConn(asyncio.Protocol):
    """One TCP connection with any number of outstanding calls."""

    def __init__(self):
        self.buf = bytearray()
        self.frags: list = []
        self.pending: dict = {}
        self.xid = int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF
        self.t = None
        self.loop = asyncio.get_event_loop()
        self.lost = None

    @classmethod
    async def open(cls, host, port):
        loop = asyncio.get_running_loop()
        _t, p = await loop.create_connection(cls, host, port)
        return p

    def connection_made(self, t):
        self.t = t
        s = t.get_extra_info("socket")
        if s is not None:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc):
        self.lost = exc or ConnectionError("connection closed")
        for f in self.pending.values():
            if not f.done():
                f.set_exception(self.lost)
        self.pending.clear()

    def close(self):
        if self.t is not None:
            self.t.close()

    def data_received(self, data):
        b = self.buf
        b += data
        pos = 0
        n = len(b)
        while n - pos >= 4:
            mark = int.from_bytes(b[pos:pos + 4], "big")
            end = pos + 4 + (mark & 0x7FFFFFFF)
            if end > n:
                break
            frag = bytes(b[pos + 4:end])
            pos = end
            if not mark & LAST:
                self.frags.append(frag)
                continue
            if self.frags:
                self.frags.append(frag)
                frag = b"".join(self.frags)
                self.frags = []
            fut = self.pending.pop(int.from_bytes(frag[:4], "big"), None)
            if fut is not None and not fut.done():
                fut.set_result(frag)
        if pos:
            del b[:pos]

    def send(self, hdr: bytes, body: bytes, data=None):
        """Send one call (hdr from header()); returns a future for the reply record."""
        self.xid = xid = (self.xid + 1) & 0xFFFFFFFF
        n = 4 + len(hdr) + len(body) + (len(data) if data is not None else 0)
        fut = self.loop.create_future()
        self.pending[xid] = fut
        if data is None:
            self.t.write(_II.pack(LAST | n, xid) + hdr + body)
        else:
            self.t.writelines((_II.pack(LAST | n, xid) + hdr + body, data))
        return fut


H_GETATTR = header(NFS_PROG, NFS_VERS, GETATTR)
H_LOOKUP = header(NFS_PROG, NFS_VERS, LOOKUP)
H_ACCESS = header(NFS_PROG, NFS_VERS, ACCESS)
H_READLINK = header(NFS_PROG, NFS_VERS, READLINK)
H_READ = header(NFS_PROG, NFS_VERS, READ)
H_WRITE = header(NFS_PROG, NFS_VERS, WRITE)
H_READDIR = header(NFS_PROG, NFS_VERS, READDIR)
H_READDIRPLUS = header(NFS_PROG, NFS_VERS, READDIRPLUS)
H_COMMIT = header(NFS_PROG, NFS_VERS, COMMIT)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pcts(lat) -> dict:
    if not len(lat):
        return dict(p50_us=0.0, p99_us=0.0)
    s = sorted(lat)
    return dict(p50_us=s[len(s) // 2] / 1000, p99_us=s[min(len(s) - 1, int(len(s) * 0.99))] / 1000)


# ---------------------------------------------------------------- workloads
def _round_trip(sock, req: bytearray, xid: int, buf: bytearray, view) -> int:
    """Send the pre-built call req with xid patched in, read the whole reply into
    buf (one recv_into, usually); the round trip in ns."""
    struct.pack_into(">I", req, 4, xid)
    s = time.perf_counter_ns()
    sock.sendall(req)
    got = sock.recv_into(buf)
    need = 4 + (int.from_bytes(buf[:4], "big") & 0x7FFFFFFF) if got >= 4 else 1 << 30
    while got < need:  # rare: a reply in pieces
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("closed")
        got += k
        if got >= 4:
            need = 4 + (int.from_bytes(buf[:4], "big") & 0x7FFFFFFF)
    return time.perf_counter_ns() - s


def run_getattr(a) -> dict:
    """One outstanding GETATTR on one connection: the round-trip cost of the server."""
    c = SyncConn(a.host, a.port)
    root = mount_root(a, c)
    fh = c.lookup_path(root, a.path.encode()) if a.path else root
    msg = bytearray(_u32.pack(0) + header(NFS_PROG, NFS_VERS, GETATTR) + opaque(fh))
    req = bytearray(_u32.pack(LAST | len(msg))) + msg
    sock = c.s
    buf = c.buf
    view = c.view
    lat = array("q")
    xid = c.xid
    for _ in range(200):  # warm-up
        xid = (xid + 1) & 0xFFFFFFFF
        struct.pack_into(">I", req, 4, xid)
        sock.sendall(req)
        c.recv_record()
    cpu0 = _cpu()
    t_end = time.monotonic() + a.duration
    t0 = time.perf_counter()
    n = 0
    while True:
        xid = (xid + 1) & 0xFFFFFFFF
        lat.append(_round_trip(sock, req, xid, buf, view))
        # xid, then accept_stat and nfsstat3 (AUTH_NONE verifier: fixed offsets)
        if int.from_bytes(buf[4:8], "big") != xid or buf[24:32] != ZERO8:
            raise RpcError("unexpected reply to GETATTR")
        n += 1
        if (n & 255) == 0 and time.monotonic() >= t_end:
            break
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    c.close()
    r = dict(workload="getattr", ops=n, seconds=wall, ops_per_s=n / wall,
             gen_cpu_s=cpu, gen_cpu_us_per_op=cpu / n * 1e6)
    r.update(_pcts(lat))
    return r


def collect_handles(c: SyncConn, root: bytes, stats: dict) -> list:
    """Every filehandle of the export (the root included), breadth-first.

    READDIRPLUS where the server offers it (a LOOKUP for an entry it sent no
    handle for), else READDIR and one LOOKUP per entry, like the Linux client."""
    out = [root]
    todo = [root]
    plus = True
    while todo:
        d = todo.pop()
        od = opaque(d)
        cookie, verf = 0, ZERO8
        while True:
            if plus:
                rec, off = c.nfs(READDIRPLUS, od + struct.pack(">Q", cookie) + verf
                                 + struct.pack(">II", 8192, 65536))
                st, ents, eof, verf = parse_readdir(rec, off, True)
                stats["READDIRPLUS"] = stats.get("READDIRPLUS", 0) + 1
                if st == NFS3ERR_NOTSUPP:
                    plus = False
                    stats["readdirplus_notsupp"] = 1
                    continue
            else:
                rec, off = c.nfs(READDIR, od + struct.pack(">Q", cookie) + verf
                                 + _u32.pack(8192))
                st, ents, eof, verf = parse_readdir(rec, off, False)
                stats["READDIR"] = stats.get("READDIR", 0) + 1
            if st:
                raise RpcError("READDIR%s: nfsstat3 %d" % ("PLUS" if plus else "", st))
            for name, _cookie, ftype, fh in ents:
                if name in (b".", b"..") or name.startswith(b".fastnfs-bench"):
                    continue
                if fh is None:
                    rec2, off2 = c.nfs(LOOKUP, od + opaque(name))
                    st2, fh, ftype, _size = parse_lookup(rec2, off2)
                    stats["LOOKUP"] = stats.get("LOOKUP", 0) + 1
                    if st2:
                        raise RpcError("LOOKUP %r: nfsstat3 %d" % (name, st2))
                out.append(fh)
                if ftype == NF3DIR:
                    todo.append(fh)
            if ents:
                cookie = ents[-1][1]
            if eof or not ents:
                break
    return out


def run_getattr_all(a) -> dict:
    """GETATTR over every handle of the tree, shuffled, one outstanding, for a.duration s."""
    import random
    c = SyncConn(a.host, a.port)
    root = mount_root(a, c)
    stats: dict = {}
    t = time.perf_counter()
    fhs = collect_handles(c, root, stats)
    collect_s = time.perf_counter() - t
    random.Random(a.seed).shuffle(fhs)
    if a.handles:   # a control: only the first N (e.g. fewer than unfsd's cache holds)
        fhs = fhs[:a.handles]
    if a.sync:  # let the driver sample the server's CPU time around the timed part only
        print("collected", flush=True)
        sys.stdin.readline()
    hdr = header(NFS_PROG, NFS_VERS, GETATTR)
    reqs = []
    for fh in fhs:
        msg = _u32.pack(0) + hdr + opaque(fh)
        reqs.append(bytearray(_u32.pack(LAST | len(msg)) + msg))
    sock = c.s
    buf = c.buf
    view = c.view
    lat = array("q")
    xid = c.xid
    errors = 0
    nreq = len(reqs)
    cpu0 = _cpu()
    t_end = time.monotonic() + a.duration
    t0 = time.perf_counter()
    n = 0
    while True:
        req = reqs[n % nreq]
        xid = (xid + 1) & 0xFFFFFFFF
        lat.append(_round_trip(sock, req, xid, buf, view))
        if int.from_bytes(buf[4:8], "big") != xid or buf[24:28] != ZERO8[:4]:
            raise RpcError("unexpected reply to GETATTR")
        if buf[28:32] != ZERO8[:4]:
            errors += 1   # nfsstat3 != OK (e.g. a handle the server cannot resolve)
        n += 1
        if (n & 63) == 0 and time.monotonic() >= t_end:
            break
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    if a.sync:
        print("timed", flush=True)
        sys.stdin.readline()
    c.close()
    r = dict(workload="getattr-all", handles=nreq, collect_s=collect_s, collect_calls=stats,
             passes=n / nreq, ops=n, errors=errors, seconds=wall, ops_per_s=n / wall,
             gen_cpu_s=cpu, gen_cpu_us_per_op=cpu / n * 1e6)
    r.update(_pcts(lat))
    return r


class BootClient:
    """One booting board: one connection, one call at a time, like an init process."""

    def __init__(self, conn: AsyncConn, root: bytes, rsize: int, lat: array, stats: dict):
        self.c = conn
        self.root = root
        self.rsize = rsize
        self.lat = lat
        self.stats = stats
        self.plus = True   # READDIRPLUS until the server says NOTSUPP

    async def call(self, hdr, body, name):
        s = time.perf_counter_ns()
        rec = await self.c.send(hdr, body)
        self.lat.append(time.perf_counter_ns() - s)
        st = self.stats
        st[name] = st.get(name, 0) + 1
        return rec, reply_body(rec)

    async def boot(self, paths):
        for path in paths:
            await self.visit(path)

    async def visit(self, path: bytes):
        """One walk: everything a booting client does for one path."""
        await self._visit(path)
        self.stats["walks"] = self.stats.get("walks", 0) + 1

    async def _visit(self, path: bytes):
        fh, ftype, size = self.root, NF3DIR, 0
        for comp in path.split(b"/"):
            rec, off = await self.call(H_LOOKUP, opaque(fh) + opaque(comp), "LOOKUP")
            st, fh, ftype, size = parse_lookup(rec, off)
            if st:
                self.stats["errors"] = self.stats.get("errors", 0) + 1
                return
        ofh = opaque(fh)
        await self.call(H_GETATTR, ofh, "GETATTR")
        await self.call(H_ACCESS, ofh + _u32.pack(ACCESS_ALL), "ACCESS")
        if ftype == NF3LNK:
            await self.call(H_READLINK, ofh, "READLINK")
        elif ftype == NF3REG:
            off = 0
            while True:
                rec, o = await self.call(H_READ, ofh + struct.pack(">QI", off, self.rsize), "READ")
                if int.from_bytes(rec[o:o + 4], "big"):
                    self.stats["errors"] = self.stats.get("errors", 0) + 1
                    return
                o = skip_post_op_attr(rec, o + 4)
                n = int.from_bytes(rec[o:o + 4], "big")
                off += n
                self.stats["bytes"] = self.stats.get("bytes", 0) + n
                if int.from_bytes(rec[o + 4:o + 8], "big") or n == 0:
                    break
        elif ftype == NF3DIR:
            await self.listdir(fh, ofh)

    async def listdir(self, fh, ofh):
        cookie, verf = 0, b"\0" * 8
        while True:
            if self.plus:
                rec, off = await self.call(
                    H_READDIRPLUS, ofh + struct.pack(">Q", cookie) + verf
                    + struct.pack(">II", 8192, 32768), "READDIRPLUS")
                st, ents, eof, verf = parse_readdir(rec, off, True)
                if st == NFS3ERR_NOTSUPP:
                    self.plus = False
                    self.stats["readdirplus_notsupp"] = 1
                    continue
            else:
                rec, off = await self.call(
                    H_READDIR, ofh + struct.pack(">Q", cookie) + verf + _u32.pack(8192), "READDIR")
                st, ents, eof, verf = parse_readdir(rec, off, False)
                for name, _c, _t, _f in ents:   # what READDIRPLUS would have given
                    if name not in (b".", b".."):
                        await self.call(H_LOOKUP, ofh + opaque(name), "LOOKUP")
            if st:
                self.stats["errors"] = self.stats.get("errors", 0) + 1
                return
            if ents:
                cookie = ents[-1][1]
            if eof or not ents:
                return


def tree_paths(tree: str) -> list:
    """Every entry of the tree, depth-first in sorted order, as export-relative paths."""
    out = []
    hidden = (".virtfs_metadata", ".virtfs_metadata_root")  # never served by --virtfs
    for dirpath, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d not in hidden)
        rel = os.path.relpath(dirpath, tree)
        for name in sorted(dirs + files):
            if name.startswith(".fastnfs-bench") or name in hidden:
                continue
            p = name if rel == "." else rel + "/" + name
            out.append(os.fsencode(p))
    return out


def client_paths(paths: list, client: int, clients: int, per_client: int) -> list:
    """Client i walks per_client consecutive paths starting at an offset of its own."""
    n = len(paths)
    start = (client * n) // clients
    return [paths[(start + k) % n] for k in range(min(per_client, n))]


def board_name(client: int) -> str:
    """The board client i mounts with --boards: EXPORT@b<i>."""
    return "b%d" % client


def _boot_setup(a) -> tuple:
    """What every bootstorm engine starts from: the root handle (MNT), the READ
    size (capped by FSINFO's rtmax), the tree's paths, and with --boards each
    client's own root handle (client id -> handle of EXPORT@b<id>), else {}."""
    setup = SyncConn(a.host, a.port)
    root = mount_root(a, setup)
    info = setup.fsinfo(root)
    own = {i: mount_root(a, setup, "%s@%s" % (a.export, board_name(i)))
           for i in range(a.first, a.first + a.count)} if a.boards else {}
    setup.close()
    return root, min(a.rsize, info["rtmax"]), tree_paths(a.tree), own


async def _bootstorm(a) -> dict:
    root, rsize, paths, own = _boot_setup(a)
    ids = range(a.first, a.first + a.count)
    conns = [await AsyncConn.open(a.host, a.port) for _ in ids]
    lat = array("q")
    stats: dict = {}
    clients = [BootClient(c, own.get(i, root), rsize, lat, stats) for i, c in zip(ids, conns)]
    work = [client_paths(paths, i, a.clients, a.per_client) for i in ids]
    if a.start_at:
        await asyncio.sleep(max(0.0, a.start_at - time.time()))
    cpu0 = _cpu()
    t0 = time.perf_counter()
    t0_wall = time.time()
    ends = []

    async def one(cl, w):
        await cl.boot(w)
        ends.append(time.perf_counter() - t0)

    await asyncio.gather(*[one(cl, w) for cl, w in zip(clients, work)])
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    for c in conns:
        c.close()
    if a.lat_out:
        with open(a.lat_out, "wb") as f:
            lat.tofile(f)
    ops = len(lat)
    r = dict(workload="bootstorm", clients=a.count, ops=ops, seconds=wall, start=t0_wall,
             end=t0_wall + wall, ops_per_s=ops / wall, gen_cpu_s=cpu,
             gen_cpu_us_per_op=cpu / max(ops, 1) * 1e6, rsize=rsize, stats=stats,
             slowest_client_s=max(ends) if ends else 0.0)
    r.update(_pcts(lat))
    return r


def c_client(path: str | None, name: str, flag: str) -> str:
    """The compiled bench/NAME.c to run (--engine c): PATH, else the one run.py
    builds in /tmp/fastnfs-bench; exits with how to build it when there is none."""
    import tempfile
    exe = path or os.path.join(tempfile.gettempdir(), "fastnfs-bench", name)
    if not os.access(exe, os.X_OK):
        raise SystemExit("loadgen: no %s binary at %s (build it with cc -O2 -pthread -o %s "
                         "bench/%s.c, or pass %s)" % (name, exe, exe, name, flag))
    return exe


def bootstorm_c(a) -> str:
    """The bootstorm walked by bench/bootgen.c (--engine c): the same setup (MNT,
    FSINFO, the same paths per client) here, the storm in C; returns its JSON line."""
    import subprocess
    import tempfile
    bootgen = c_client(a.bootgen, "bootgen", "--bootgen")
    root, rsize, paths, own = _boot_setup(a)
    fd, work = tempfile.mkstemp(prefix="bootgen-", suffix=".work")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(root.hex().encode() + b"\n")
            for i in range(a.first, a.first + a.count):
                w = client_paths(paths, i, a.clients, a.per_client)
                if any(b"\n" in p for p in w):   # one path a line in the work file
                    raise SystemExit("loadgen: --engine c cannot walk a name with a newline")
                f.write(b"C %d %s\n" % (len(w), own[i].hex().encode()) if i in own
                        else b"C %d\n" % len(w))
                f.writelines(p + b"\n" for p in w)
        out = subprocess.run([bootgen, a.host, str(a.port), work, str(rsize),
                              repr(a.start_at), a.lat_out or "-"],
                             stdout=subprocess.PIPE, stderr=sys.stderr)
    finally:
        os.unlink(work)
    if out.returncode != 0:
        raise SystemExit("loadgen: %s exited with %d" % (bootgen, out.returncode))
    return out.stdout.decode()


def _stream_setup(a) -> tuple:
    """What both stream clients start from: the file's handle (MNT, FSINFO, a
    LOOKUP per component of --path) and the I/O size (rtmax or wtmax, capped)."""
    setup = SyncConn(a.host, a.port)
    root = mount_root(a, setup)
    info = setup.fsinfo(root)
    fh = setup.lookup_path(root, a.path.encode())
    setup.close()
    return fh, min(info["rtmax" if a.mode == "read" else "wtmax"], a.max_io)


def stream_c(a) -> str:
    """The stream run by bench/streamgen.c (--engine c): the same setup here, the
    READs or WRITEs and the COMMIT in C; returns its JSON line."""
    import subprocess
    exe = c_client(a.streamgen, "streamgen", "--streamgen")
    fh, io = _stream_setup(a)
    out = subprocess.run([exe, a.mode, a.host, str(a.port), fh.hex(), str(a.size), str(io),
                          str(a.depth)], stdout=subprocess.PIPE, stderr=sys.stderr)
    if out.returncode != 0:
        raise SystemExit("loadgen: %s exited with %d" % (exe, out.returncode))
    return out.stdout.decode()


async def _stream(a) -> dict:
    fh, io = _stream_setup(a)
    size = a.size
    c = await AsyncConn.open(a.host, a.port)
    ofh = opaque(fh)
    data = os.urandom(io) if a.mode == "write" else None
    lat = array("q")
    cpu0 = _cpu()
    t0 = time.perf_counter()
    offsets = iter(range(0, size, io))
    done_bytes = 0
    errors = 0
    calls: dict = {}
    proc = "READ" if a.mode == "read" else "WRITE"

    async def worker():
        nonlocal done_bytes, errors
        pc = time.perf_counter_ns
        for off in offsets:
            n = min(io, size - off)
            s = pc()
            calls[proc] = calls.get(proc, 0) + 1
            if a.mode == "read":
                rec = await c.send(H_READ, ofh + struct.pack(">QI", off, n))
                o = reply_body(rec)
                if int.from_bytes(rec[o:o + 4], "big"):
                    errors += 1
                    continue
                o = skip_post_op_attr(rec, o + 4)
                done_bytes += int.from_bytes(rec[o:o + 4], "big")
            else:
                d = data if n == io else data[:n] + bytes(-n & 3)   # XDR padding
                rec = await c.send(H_WRITE, ofh + struct.pack(">QIII", off, n, UNSTABLE, n), d)
                o = reply_body(rec)
                if int.from_bytes(rec[o:o + 4], "big"):
                    errors += 1
                    continue
                done_bytes += n
            lat.append(pc() - s)

    await asyncio.gather(*[worker() for _ in range(a.depth)])
    t1 = time.perf_counter()
    commit_s = 0.0
    if a.mode == "write":
        rec = await c.send(H_COMMIT, ofh + struct.pack(">QI", 0, 0))
        reply_body(rec)
        commit_s = time.perf_counter() - t1
        calls["COMMIT"] = 1
    cpu = _cpu() - cpu0
    c.close()
    wall = t1 - t0
    r = dict(workload="stream", mode=a.mode, io_size=io, depth=a.depth, bytes=done_bytes,
             seconds=wall, mb_per_s=done_bytes / wall / 1e6, commit_s=commit_s,
             errors=errors, ops=len(lat), gen_cpu_s=cpu,
             gen_cpu_us_per_op=cpu / max(len(lat), 1) * 1e6, calls=calls)
    r.update(_pcts(lat))
    return r


def run_loopback_send(a) -> dict:
    """The sender of the loopback limit: accept one connection on 127.0.0.1:--port, wait
    for the receiver's 4-byte go, then write --size bytes in --io-sized sends and close.
    Prints "listening" (flushed) once it accepts, then its JSON line at the end."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.host, a.port))
    ls.listen(1)
    print("listening", flush=True)
    s, _ = ls.accept()
    ls.close()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as the NFS connections
    data = os.urandom(a.io)
    view = memoryview(data)
    go = s.recv(4)
    if len(go) != 4:
        raise ConnectionError("no go from the receiver")
    cpu0 = _cpu()
    left = a.size
    while left > 0:
        s.sendall(view[:min(left, a.io)])
        left -= a.io
    cpu = _cpu() - cpu0
    s.close()
    return dict(workload="loopback-send", bytes=a.size, io_size=a.io, send_cpu_s=cpu)


def run_loopback(a) -> dict:
    """The receiver of the loopback limit: connect to the sender, send go, read --size
    bytes with recv_into an --io-sized buffer; timed from the go to the last byte."""
    s = socket.create_connection((a.host, a.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(a.io)
    view = memoryview(buf)
    got = 0
    cpu0 = _cpu()
    t0 = time.perf_counter()
    s.sendall(b"go!\n")
    while got < a.size:
        k = s.recv_into(view, a.io)
        if not k:
            break
        got += k
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    s.close()
    return dict(workload="loopback", io_size=a.io, bytes=got, seconds=wall,
                mb_per_s=got / wall / 1e6, gen_cpu_s=cpu)


def _loop_run(coro):
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="NFSv3 load generator (see bench/README.md)")
    ap.add_argument("workload", choices=["getattr", "getattr-all", "bootstorm", "stream",
                                         "loopback", "loopback-send"],
                    help="loopback(-send): the two ends of a plain TCP stream of --size "
                         "bytes in --io-sized sends (run.py's loopback limit for stream)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--export", help="path to MNT (every workload but loopback)")
    ap.add_argument("--mount-port", type=int, default=0,
                    help="MOUNT's port if not --port's (e.g. nfs-ganesha's MNT_Port)")
    ap.add_argument("--path", default="", help="file below the export (getattr, stream)")
    ap.add_argument("--duration", type=float, default=4.0, help="getattr(-all): seconds")
    ap.add_argument("--seed", type=int, default=1, help="getattr-all: shuffle seed")
    ap.add_argument("--handles", type=int, default=0,
                    help="getattr-all: use only N of the handles (default: all)")
    ap.add_argument("--sync", action="store_true",
                    help="getattr-all: print a line and wait for one on stdin before and "
                         "after the timed part")
    ap.add_argument("--tree", help="bootstorm: the exported tree (to list the paths to walk)")
    ap.add_argument("--clients", type=int, default=16, help="bootstorm: clients in total")
    ap.add_argument("--first", type=int, default=0, help="bootstorm: first client id run here")
    ap.add_argument("--count", type=int, default=None, help="bootstorm: clients run here")
    ap.add_argument("--per-client", type=int, default=1000, help="bootstorm: paths per client")
    ap.add_argument("--rsize", type=int, default=65536, help="bootstorm: READ size")
    ap.add_argument("--start-at", type=float, default=0.0, help="bootstorm: epoch time to start")
    ap.add_argument("--boards", action="store_true",
                    help="bootstorm: client i mounts EXPORT@b<i>, its own board layer "
                         "(fastnfs serve EXPORT --boards DIR)")
    ap.add_argument("--lat-out", help="bootstorm: write the latencies (ns, int64) here")
    ap.add_argument("--engine", choices=["python", "c"], default="python",
                    help="bootstorm, stream: this client (c: the bootgen or streamgen binary)")
    ap.add_argument("--bootgen", metavar="PATH",
                    help="bootstorm --engine c: the compiled bench/bootgen.c "
                         "(default /tmp/fastnfs-bench/bootgen)")
    ap.add_argument("--streamgen", metavar="PATH",
                    help="stream --engine c: the compiled bench/streamgen.c "
                         "(default /tmp/fastnfs-bench/streamgen)")
    ap.add_argument("--mode", choices=["read", "write"], default="read", help="stream")
    ap.add_argument("--size", type=int, default=256 << 20, help="stream: bytes")
    ap.add_argument("--depth", type=int, default=4, help="stream: outstanding requests")
    ap.add_argument("--max-io", type=int, default=1 << 20, help="stream: cap on the I/O size")
    ap.add_argument("--io", type=int, default=1 << 20, help="loopback: bytes per send")
    a = ap.parse_args(argv)
    if a.export is None and not a.workload.startswith("loopback"):
        ap.error("--export is required for %s" % a.workload)
    if a.count is None:
        a.count = a.clients
    if a.workload == "getattr":
        r = run_getattr(a)
    elif a.workload == "loopback":
        r = run_loopback(a)
    elif a.workload == "loopback-send":
        r = run_loopback_send(a)
    elif a.workload == "getattr-all":
        r = run_getattr_all(a)
    elif a.workload == "bootstorm" and a.engine == "c":
        sys.stdout.write(bootstorm_c(a))   # bootgen's JSON line, as it is
        return 0
    elif a.workload == "bootstorm":
        r = _loop_run(_bootstorm(a))
    elif a.engine == "c":
        sys.stdout.write(stream_c(a))   # streamgen's JSON line, as it is
        return 0
    else:
        r = _loop_run(_stream(a))
    json.dump(r, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
