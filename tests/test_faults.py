"""Faults: clients that vanish mid-call, a server killed with SIGKILL, and a
filesystem underneath that is full, read-only, forbidding or failing.

Every test runs `fastnfs serve` as a user would (conftest.FastnfsProcess) and
talks to it through tests/rpcclient.py or raw sockets; what lands on disk is
checked by reading the export directly.  The kernel-client test boots one qemu
guest (marked ``vm``).

What is asserted, and why:

* A record that never completes is never executed: a torn WRITE leaves the
  file exactly as the acknowledged writes made it.
* After ``kill -9`` and a restart on the same port: every FILE_SYNC or
  COMMITted write is on disk, every virtfs metadata file parses completely,
  no temporary file is visible to clients, and handles issued before the kill
  still resolve (no NFS3ERR_STALE).
* errno from the filesystem reaches the client as the matching nfsstat3:
  ENOSPC -> NOSPC (28), EROFS -> ROFS (30), EACCES -> ACCES (13), EIO -> IO (5).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from xdrlib3 import Packer

from conftest import require_vm, NOBODY, start_servers_as_nobody, FastnfsProcess
from rpcclient import (FILE_SYNC, GUARDED, NF3CHR, NF3FIFO, NFS3_OK,
                       NFS3ERR_ACCES, NFS3ERR_IO, NFS3ERR_NOSPC, NFS3ERR_ROFS, NFS3ERR_STALE,
                       NFS_PROGRAM, NFS_V3, READ, UNSTABLE, WRITE, AuthSys, Nfs3, RpcClient,
                       call_header, new_xid)

ROOT = AuthSys(0, 0, machine=b"faults")
META = ".virtfs_metadata"
META_ROOT = ".virtfs_metadata_root"
TEMP_META = re.compile(r"^\..*\.tmp[0-9a-f]{8}$")   # virtfs/store.py _temp_name()
META_LINE = re.compile(rb"^virtfs\.(uid|gid|mode|rdev)=[0-9]+$")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, chown)")


# ---------------------------------------------------------------- helpers
def connect(srv, cred=ROOT) -> Nfs3:
    return Nfs3.connect(srv.port, cred=cred, timeout=10.0)


def write_record(fh: bytes, offset: int, data: bytes, stable=FILE_SYNC, sizes=None) -> bytes:
    """A whole record-marked NFSv3 WRITE call (built here, sent raw)."""
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(offset)
    p.pack_uint(len(data))
    p.pack_enum(stable)
    p.pack_opaque(data)
    msg = call_header(new_xid(), NFS_PROGRAM, NFS_V3, WRITE, ROOT) + p.get_buffer()
    return RpcClient.frame(msg, sizes)


def read_record(fh: bytes, offset: int, count: int) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(offset)
    p.pack_uint(count)
    return RpcClient.frame(call_header(new_xid(), NFS_PROGRAM, NFS_V3, READ, ROOT)
                           + p.get_buffer())


def raw_socket(srv, rst: bool = False) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    if rst:  # close with a reset instead of a FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return s


def server_fds(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


def assert_alive_and_serving(srv, fh_root: bytes) -> None:
    assert srv.proc.poll() is None, srv.log()[-3000:]
    n = connect(srv)
    try:
        assert n.getattr(fh_root)[0] == NFS3_OK
        assert n.null()[0] == NFS3_OK
    finally:
        n.close()


def no_traceback(srv) -> None:
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


def lookup_fh(n: Nfs3, root_fh: bytes, rel: str) -> bytes:
    fh = root_fh
    for comp in rel.split("/"):
        st, r = n.lookup(fh, comp)
        assert st == NFS3_OK, (rel, st)
        fh = r["fh"]
    return fh


@pytest.fixture
def server(fastnfs):
    """conftest's fastnfs (one worker; a logged traceback fails the test)."""
    return fastnfs


# ---------------------------------------------------------------- clients that vanish
def test_disconnect_mid_write_leaves_only_acknowledged_writes(server):
    """FILE_SYNC writes, each acknowledged, then torn records of every kind:
    half of a 1 MiB WRITE, a record mark alone, half a mark, a complete first
    fragment whose last fragment never comes.  None of them is applied."""
    n = connect(server)
    root = n.mount(str(server.export))
    st, r = n.create(root, "data", how=GUARDED, mode=0o644)
    assert st == NFS3_OK
    fh = r["fh"]
    chunk = 64 * 1024
    want = bytearray()
    for k in range(8):
        piece = bytes([0x41 + k]) * chunk
        st, r = n.write(fh, k * chunk, piece, stable=FILE_SYNC)
        assert st == NFS3_OK and r["count"] == chunk and r["committed"] == FILE_SYNC
        want += piece
    fds_before = server_fds(server.proc.pid)

    torn = b"\xee" * (1 << 20)        # overlaps the acknowledged data and extends it
    rec = write_record(fh, 4096, torn)
    cases = [
        ("half of a 1 MiB WRITE record", rec[:len(rec) // 2], False),
        ("all but the last byte", rec[:-1], False),
        ("half of a 1 MiB WRITE record, reset", rec[:len(rec) // 2], True),
        ("record mark only", rec[:4], False),
        ("half a record mark", rec[:2], False),
        ("call header only", rec[:60], False),
    ]
    frag = write_record(fh, 0, torn, sizes=[512 * 1024])   # first fragment: 512 KiB, not last
    cases.append(("first fragment whole, last fragment missing", frag[:4 + 512 * 1024 + 100],
                  False))
    for what, data, rst in cases:
        s = raw_socket(server, rst=rst)
        s.sendall(data)
        s.close()
    # a second client works all along, and the first one too
    other = connect(server)
    st, r = other.read(fh, 0, len(want))
    assert st == NFS3_OK and r["data"] == bytes(want)
    assert n.getattr(fh)[1]["attrs"]["size"] == len(want)
    other.close()
    n.close()
    time.sleep(0.5)
    assert (server.export / "data").read_bytes() == bytes(want)
    assert_alive_and_serving(server, root)
    # the torn connections are gone: no descriptors kept for them
    deadline = time.monotonic() + 5
    while server_fds(server.proc.pid) > fds_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_fds(server.proc.pid) <= fds_before, (fds_before, server_fds(server.proc.pid))


def test_disconnect_before_reading_the_reply(server):
    """A client asks for 1 MiB and hangs up before reading the answer; another
    sends a pipelined burst of 32 such READs and 8 FILE_SYNC WRITEs and hangs
    up (FIN and RST).  The server carries on; the burst's WRITEs (never
    acknowledged) are each applied whole or not at all, nothing else changes."""
    big = os.urandom(4 << 20)
    (server.export / "big").write_bytes(big)
    n = connect(server)
    root = n.mount(str(server.export))
    fh = lookup_fh(n, root, "big")
    st, r = n.create(root, "burst", how=GUARDED, mode=0o644)
    wfh = r["fh"]
    fds_before = server_fds(server.proc.pid)
    for rst in (False, True):
        s = raw_socket(server, rst=rst)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(read_record(fh, 0, 1 << 20))
        s.close()
        s = raw_socket(server, rst=rst)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = b"".join(read_record(fh, (i % 4) << 20, 1 << 20) for i in range(32))
        burst += b"".join(write_record(wfh, i * 4096, bytes([i]) * 4096) for i in range(8))
        s.sendall(burst)
        s.close()
    for _ in range(3):  # and everybody else is served meanwhile
        for off in (0, 1 << 20, 3 << 20):
            st, r = n.read(fh, off, 1 << 20)
            assert st == NFS3_OK and r["data"] == big[off:off + (1 << 20)]
    n.close()
    # the burst's WRITEs were never acknowledged: the server may have read and
    # applied them or dropped them with the connection, but each one whole or not at all
    time.sleep(1.0)
    got = (server.export / "burst").read_bytes()
    assert len(got) % 4096 == 0 and len(got) <= 8 * 4096, len(got)
    applied = []
    for i in range(len(got) // 4096):
        block = got[i * 4096:(i + 1) * 4096]
        assert block in (bytes([i]) * 4096, b"\0" * 4096), (i, block[:16])
        applied.append(block == bytes([i]) * 4096)
    print("\nburst WRITE blocks (unacknowledged) applied: %d of %d" % (sum(applied), 8))
    assert (server.export / "big").read_bytes() == big
    assert_alive_and_serving(server, root)
    deadline = time.monotonic() + 10
    while server_fds(server.proc.pid) > fds_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_fds(server.proc.pid) <= fds_before


# ---------------------------------------------------------------- kill -9 under load
def check_metadata_tree(export: Path) -> dict:
    """Parse every metadata file under the export; return what was found.

    Temporary files (.NAME.tmpXXXXXXXX) are listed apart: they live inside the
    hidden metadata directory, where no client can see them."""
    out = {"files": 0, "bad": [], "temps": [], "orphans": []}
    for dirpath, dirnames, filenames in os.walk(export):
        d = Path(dirpath)
        metas = []
        if d.name == META:
            metas = [(d / f, f) for f in filenames]
        elif META_ROOT in filenames:
            metas = [(d / META_ROOT, None)]
        for p, name in metas:
            if name is not None and TEMP_META.match(name):
                out["temps"].append(str(p))
                continue
            out["files"] += 1
            data = p.read_bytes()
            lines = [ln.strip() for ln in data.split(b"\n") if ln.strip()]
            if not data or not lines or not all(META_LINE.match(ln) for ln in lines):
                out["bad"].append((str(p), data[:200]))
            if name is not None and not os.path.lexists(d.parent / name):
                out["orphans"].append(str(p))
    return out


def client_visible_names(n: Nfs3, fh: bytes, prefix: str = "") -> list:
    names = []
    for e in n.readdir_all(fh, plus=True):
        name = e["name"].decode()
        if name in (".", ".."):
            continue
        names.append(prefix + name)
        a = e.get("attrs")
        if a is not None and a["type"] == 2 and e.get("fh"):
            names += client_visible_names(n, e["fh"], prefix + name + "/")
    return names


class Writer(threading.Thread):
    """One client: FILE_SYNC writes (even i) or UNSTABLE writes + COMMIT (odd i)
    of known patterns into its own file, with SETATTR mode/uid and CREATE/MKNOD
    mixed in; it records what the server acknowledged as stable."""

    CHUNK = 8192

    def __init__(self, port: int, i: int, dir_fh: bytes, file_fh: bytes, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.i, self.dir_fh, self.fh, self.stop = port, i, dir_fh, file_fh, stop
        self.stable: dict = {}     # chunk number -> data, acknowledged stable
        self.handles: dict = {}    # name -> fh, acknowledged creations
        self.mode_acked = 0o644
        self.mode_pending = None
        self.uid_acked = 0
        self.uid_pending = None
        self.errors: list = []
        self.ops = 0

    def pattern(self, k: int) -> bytes:
        head = b"writer %02d chunk %06d|" % (self.i, k)
        return (head * (self.CHUNK // len(head) + 1))[:self.CHUNK]

    def run(self):
        try:
            n = Nfs3.connect(self.port, cred=ROOT, timeout=10.0)
        except OSError as e:
            self.errors.append("connect: %s" % e)
            return
        k = 0
        try:
            while not self.stop.is_set():
                if self.i % 2 == 0:
                    st, r = n.write(self.fh, k * self.CHUNK, self.pattern(k), stable=FILE_SYNC)
                    self._ok("WRITE", st)
                    assert r["committed"] == FILE_SYNC
                    self.stable[k] = self.pattern(k)
                    k += 1
                else:
                    batch = range(k, k + 4)
                    for j in batch:
                        st, _ = n.write(self.fh, j * self.CHUNK, self.pattern(j), stable=UNSTABLE)
                        self._ok("WRITE", st)
                    st, _ = n.commit(self.fh)
                    self._ok("COMMIT", st)
                    for j in batch:
                        self.stable[j] = self.pattern(j)
                    k += 4
                self.ops += 1
                if self.ops % 2 == 0:
                    mode = 0o600 | (self.ops % 64)
                    self.mode_pending = mode
                    st, _ = n.setattr(self.fh, mode=mode)
                    self._ok("SETATTR mode", st)
                    self.mode_acked, self.mode_pending = mode, None
                    uid = 1000 + self.ops
                    self.uid_pending = uid
                    st, _ = n.setattr(self.fh, uid=uid, gid=uid)
                    self._ok("SETATTR uid", st)
                    self.uid_acked, self.uid_pending = uid, None
                if self.ops % 3 == 0:
                    name = "n%d" % self.ops
                    st, r = n.create(self.dir_fh, name, how=GUARDED, mode=0o640)
                    self._ok("CREATE", st)
                    self.handles[name] = r["fh"]
                if self.ops % 5 == 0:
                    name = "m%d" % self.ops
                    if self.ops % 10 == 0:
                        st, r = n.mknod(self.dir_fh, name, NF3CHR, rdev=(240, self.ops), mode=0o600)
                    else:
                        st, r = n.mknod(self.dir_fh, name, NF3FIFO, mode=0o600)
                    self._ok("MKNOD", st)
                    self.handles[name] = r["fh"]
        except (OSError, ConnectionError, EOFError) as e:
            if not self.stop.is_set():
                self.stop_reason = repr(e)   # the kill: expected
        except Exception as e:  # noqa: BLE001 - a decoding error is a failure
            if not self.stop.is_set():
                self.stop_reason = repr(e)
                if not isinstance(e.__class__, type) or "Timeout" not in type(e).__name__:
                    self.errors.append(repr(e))
        finally:
            n.close()

    def _ok(self, what: str, st: int) -> None:
        if st != NFS3_OK:
            self.errors.append("%s -> %d" % (what, st))
            raise AssertionError("%s -> %d" % (what, st))


@needs_root
def test_kill9_during_16_writers_then_restart(export_dir):
    srv = FastnfsProcess(export_dir, ["--virtfs"]).start()
    try:
        n = connect(srv)
        root = n.mount(str(export_dir))
        stop = threading.Event()
        writers = []
        dir_fhs = {}
        for i in range(16):
            st, r = n.mkdir(root, "t%02d" % i, mode=0o755)
            assert st == NFS3_OK
            dfh = r["fh"]
            st, r = n.create(dfh, "file", how=GUARDED, mode=0o644)
            assert st == NFS3_OK
            dir_fhs[i] = dfh
            writers.append(Writer(srv.port, i, dfh, r["fh"], stop))
        n.close()
        for w in writers:
            w.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(w.ops for w in writers) < 6:
            time.sleep(0.05)
        ops_at_kill = sum(w.ops for w in writers)
        srv.stop(signal.SIGKILL)
        for w in writers:
            w.join(15)
        stop.set()
        errors = [(w.i, e) for w in writers for e in w.errors if "connection" not in e.lower()
                  and "closed" not in e.lower()]
        assert not errors, errors
        assert all(w.ops >= 6 for w in writers), [w.ops for w in writers]

        # on disk, before the restart: what was acknowledged as stable is there
        for w in writers:
            data = (export_dir / ("t%02d" % w.i) / "file").read_bytes()
            for k, piece in w.stable.items():
                assert data[k * w.CHUNK:(k + 1) * w.CHUNK] == piece, (w.i, k)
        meta = check_metadata_tree(export_dir)
        assert not meta["bad"], meta["bad"]
        assert meta["files"] > 16

        srv.start(srv.port)
        n = connect(srv)
        root2 = n.mount(str(export_dir))
        assert root2 == root
        for w in writers:
            st, r = n.getattr(w.fh)
            assert st == NFS3_OK, ("file handle of writer %d after restart" % w.i, st)
            a = r["attrs"]
            assert a["mode"] & 0o7777 in (w.mode_acked, w.mode_pending), (w.i, oct(a["mode"]))
            assert a["uid"] in (w.uid_acked, w.uid_pending), (w.i, a["uid"])
            assert n.getattr(dir_fhs[w.i])[0] == NFS3_OK
            for name, fh in w.handles.items():
                st, r = n.getattr(fh)
                assert st != NFS3ERR_STALE and st == NFS3_OK, (w.i, name, st)
            # and the data reads back through the server
            for k in sorted(w.stable)[-3:]:
                st, r = n.read(w.fh, k * w.CHUNK, w.CHUNK)
                assert st == NFS3_OK and r["data"] == w.stable[k]
        names = client_visible_names(n, root)
        n.close()
        assert not [x for x in names if META in x or ".tmp" in x], names
        assert "malformed metadata" not in srv.log(), srv.log()[-3000:]
        print("\nkill -9 after %d client operations; %d metadata files, %d temporary files "
              "left inside hidden metadata directories, %d orphan metadata files"
              % (ops_at_kill, meta["files"], len(meta["temps"]), len(meta["orphans"])))
    finally:
        srv.stop()
    no_traceback(srv)


# ---------------------------------------------------------------- the kernel client carries on
GUEST_LOOP = r'''
i=1
while [ $i -le 30 ]; do
  yes "fastnfs file $i" | head -c 131072 > /tmp/pat
  dd if=/tmp/pat of=f$i bs=65536 conv=fsync 2>/dev/null || { echo "FAIL dd $i"; exit 1; }
  cmp /tmp/pat f$i || { echo "FAIL cmp $i"; exit 1; }
  [ $i = 6 ] && touch /mnt/kill-now
  i=$((i+1))
done
echo "loop done"
'''


@pytest.mark.vm
@needs_root
def test_kernel_client_loop_survives_kill9_and_restart(export_dir):
    from vm import guest
    require_vm()
    srv = FastnfsProcess(export_dir).start()
    done = threading.Event()
    killed = {}

    def killer():
        deadline = time.monotonic() + 600
        while not (export_dir / "kill-now").exists():
            if time.monotonic() > deadline or done.is_set():
                return
            time.sleep(0.1)
        killed["pid"] = srv.proc.pid
        srv.stop(signal.SIGKILL)
        time.sleep(3)
        srv.start(srv.port)
        killed["restarted"] = time.monotonic()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        res = guest.run(GUEST_LOOP, nfs_port=srv.port, export=str(export_dir),
                        mount_opts="hard,timeo=50", timeout=600, mem=256)
    finally:
        done.set()
        t.join(30)
        srv.stop()
    assert "restarted" in killed, "the guest never reached the kill point:\n" + res.describe()
    assert res.rc == 0 and "loop done" in res.output and "FAIL" not in res.output, res.describe()
    for i in range(1, 31):
        line = b"fastnfs file %d\n" % i
        want = (line * (131072 // len(line) + 1))[:131072]
        assert (export_dir / ("f%d" % i)).read_bytes() == want, i
    no_traceback(srv)


# ---------------------------------------------------------------- disk full
@pytest.fixture
def tmpfs_export(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: " + r.stderr)
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill_from_host(path: Path) -> int:
    """Write until ENOSPC; the number of bytes that fit."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 65536, 4096, 512, 1):
            while True:
                try:
                    f.write(b"\xff" * size)
                    n += size
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    return n


def test_nospc_then_writes_succeed_once_space_is_freed(tmpfs_export):
    srv = FastnfsProcess(tmpfs_export).start()
    try:
        n = connect(srv)
        root = n.mount(str(tmpfs_export))
        st, r = n.create(root, "fill", how=GUARDED, mode=0o644)
        fh = r["fh"]
        chunk = 256 * 1024
        statuses = []
        for k in range(40):                     # 10 MiB into a 4 MiB filesystem
            st, r = n.write(fh, k * chunk, b"\x5a" * chunk, stable=FILE_SYNC)
            statuses.append(st)
            if st != NFS3_OK:
                break
        assert statuses[-1] == NFS3ERR_NOSPC, statuses
        assert statuses.count(NFS3_OK) >= 10, statuses
        # UNSTABLE writes fail as well (tmpfs allocates at write time), big and small
        for stable, size in ((UNSTABLE, chunk), (UNSTABLE, 4096), (FILE_SYNC, 4096)):
            st, _ = n.write(fh, 100 * chunk, b"\x5b" * size, stable=stable)
            assert st == NFS3ERR_NOSPC, (stable, size, st)
        st, r = n.create(root, "second", how=GUARDED, mode=0o644)
        assert st == NFS3_OK   # an empty file needs no blocks
        fh2 = r["fh"]
        assert n.write(fh2, 0, b"y" * 8192, stable=FILE_SYNC)[0] == NFS3ERR_NOSPC
        # free the space: the same handle writes again
        assert n.remove(root, "fill")[0] == NFS3_OK
        st, r = n.write(fh2, 0, b"y" * chunk, stable=FILE_SYNC)
        assert st == NFS3_OK and r["count"] == chunk
        assert n.write(fh2, chunk, b"z" * chunk, stable=UNSTABLE)[0] == NFS3_OK
        assert n.commit(fh2)[0] == NFS3_OK
        n.close()
        assert (tmpfs_export / "second").read_bytes() == b"y" * chunk + b"z" * chunk
    finally:
        srv.stop()
    no_traceback(srv)


def test_nospc_leaves_virtfs_metadata_whole(tmpfs_export):
    srv = FastnfsProcess(tmpfs_export, ["--virtfs"]).start()
    try:
        n = connect(srv)
        root = n.mount(str(tmpfs_export))
        st, r = n.create(root, "keep", how=GUARDED, mode=0o640)
        assert st == NFS3_OK
        keep = r["fh"]
        assert n.setattr(keep, uid=1234, gid=4321)[0] == NFS3_OK
        before = (tmpfs_export / META / "keep").read_bytes()
        fill_from_host(tmpfs_export / "ballast")
        # metadata writes now fail: the old metadata stays whole
        st, _ = n.setattr(keep, mode=0o600, uid=77)
        assert st == NFS3ERR_NOSPC, st
        assert (tmpfs_export / META / "keep").read_bytes() == before
        a = n.getattr(keep)[1]["attrs"]
        assert (a["mode"] & 0o7777, a["uid"], a["gid"]) == (0o640, 1234, 4321)
        results = {}
        for name in ("new1", "new2"):
            results[name] = n.create(root, name, how=GUARDED, mode=0o600)[0]
        results["dev"] = n.mknod(root, "dev", NF3CHR, rdev=(1, 3), mode=0o666)[0]
        results["dir"] = n.mkdir(root, "dir", mode=0o700)[0]
        for name, st in results.items():
            # either refused with NOSPC and gone, or made with its metadata
            assert st in (NFS3ERR_NOSPC, NFS3_OK), (name, st)
            if st == NFS3ERR_NOSPC:
                assert not os.path.lexists(tmpfs_export / name), name
        meta = check_metadata_tree(tmpfs_export)
        assert not meta["bad"], meta["bad"]
        assert not meta["temps"], meta["temps"]
        # space again: everything works
        os.unlink(tmpfs_export / "ballast")
        assert n.setattr(keep, mode=0o600, uid=77)[0] == NFS3_OK
        assert n.create(root, "after", how=GUARDED, mode=0o604)[0] == NFS3_OK
        a = n.getattr(keep)[1]["attrs"]
        assert (a["mode"] & 0o7777, a["uid"]) == (0o600, 77)
        meta = check_metadata_tree(tmpfs_export)
        assert not meta["bad"] and not meta["temps"], meta
        n.close()
        print("\nNOSPC results: %s" % results)
    finally:
        srv.stop()
    no_traceback(srv)


# ---------------------------------------------------------------- read-only filesystem
def test_readonly_filesystem_gives_rofs(export_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount")
    (export_dir / "file").write_bytes(b"contents")
    (export_dir / "sub").mkdir()
    r = subprocess.run("mount --bind %s %s && mount -o remount,bind,ro %s"
                       % (export_dir, export_dir, export_dir), shell=True,
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", str(export_dir)], capture_output=True)
        pytest.skip("cannot bind-mount read-only: " + r.stderr)
    srv = None
    try:
        srv = FastnfsProcess(export_dir).start()
        n = connect(srv)
        root = n.mount(str(export_dir))
        fh = lookup_fh(n, root, "file")
        sub = lookup_fh(n, root, "sub")
        assert n.read(fh, 0, 100)[1]["data"] == b"contents"
        assert n.write(fh, 0, b"x", stable=FILE_SYNC)[0] == NFS3ERR_ROFS
        assert n.write(fh, 0, b"x", stable=UNSTABLE)[0] == NFS3ERR_ROFS
        assert n.create(root, "new", how=GUARDED, mode=0o644)[0] == NFS3ERR_ROFS
        assert n.mkdir(sub, "d", mode=0o755)[0] == NFS3ERR_ROFS
        assert n.setattr(fh, mode=0o600)[0] == NFS3ERR_ROFS
        assert n.remove(root, "file")[0] == NFS3ERR_ROFS
        assert n.symlink(root, "l", "file")[0] == NFS3ERR_ROFS
        assert n.rename(root, "file", sub, "file")[0] == NFS3ERR_ROFS
        n.close()
        assert (export_dir / "file").read_bytes() == b"contents"
    finally:
        if srv is not None:
            srv.stop()
        subprocess.run(["umount", str(export_dir)], capture_output=True)
    no_traceback(srv)


# ---------------------------------------------------------------- EACCES from the filesystem


@pytest.fixture
def nobody_export(monkeypatch, tmp_path):
    """FastnfsProcess starts the server as uid/gid 65534 (setpriv wrapper in place
    of sys.executable), as in tests/test_virtfs_e2e.py."""
    start_servers_as_nobody(monkeypatch, tmp_path)
    base = Path(tempfile.mkdtemp(prefix="fastnfs-faults-nobody-", dir="/tmp"))
    os.chmod(base, 0o755)
    export = base / "export"
    export.mkdir()
    os.chown(export, NOBODY, NOBODY)
    yield export
    shutil.rmtree(base, ignore_errors=True)


def test_eacces_from_the_filesystem_gives_acces(nobody_export):
    e = nobody_export
    (e / "locked").mkdir(mode=0o755)             # root's: the server (nobody) cannot write
    (e / "locked" / "rootfile").write_bytes(b"root's")
    os.chmod(e / "locked" / "rootfile", 0o644)
    (e / "secret").write_bytes(b"secret")
    os.chmod(e / "secret", 0o600)                 # root's, unreadable for the server
    srv = FastnfsProcess(e).start()
    try:
        assert int(re.search(r"fastnfs\[(\d+)\]", srv.log()).group(1)) > 0
        assert os.stat("/proc/%d" % srv.proc.pid).st_uid == NOBODY
        n = connect(srv)                          # client root: no squashing, no own check refuses
        root = n.mount(str(e))
        locked = lookup_fh(n, root, "locked")
        rootfile = lookup_fh(n, root, "locked/rootfile")
        secret = lookup_fh(n, root, "secret")
        assert n.create(locked, "new", how=GUARDED, mode=0o644)[0] == NFS3ERR_ACCES
        assert n.mkdir(locked, "d", mode=0o755)[0] == NFS3ERR_ACCES
        assert n.write(rootfile, 0, b"x", stable=FILE_SYNC)[0] == NFS3ERR_ACCES
        assert n.write(rootfile, 0, b"x", stable=UNSTABLE)[0] == NFS3ERR_ACCES
        assert n.read(secret, 0, 10)[0] == NFS3ERR_ACCES
        assert n.remove(locked, "rootfile")[0] == NFS3ERR_ACCES
        # and where the server may write, it does
        assert n.create(root, "mine", how=GUARDED, mode=0o644)[0] == NFS3_OK
        n.close()
        assert (e / "locked" / "rootfile").read_bytes() == b"root's"
    finally:
        srv.stop()
    no_traceback(srv)


# ---------------------------------------------------------------- EIO
@pytest.fixture
def shrinkable_fs(tmp_path):
    """ext4 on a loop device whose backing file can be cut short under it."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
        pytest.skip("needs root, mkfs.ext4 and losetup")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-b", "4096",
                        "-E", "lazy_itable_init=0", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("mkfs.ext4 failed: " + r.stderr)
    r = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no loop device: " + r.stderr)
    loop = r.stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-o", "errors=continue", loop, str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["losetup", "-d", loop])
        pytest.skip("cannot mount the loop device: " + r.stderr)
    yield mnt, img, loop
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    subprocess.run(["losetup", "-d", loop], capture_output=True)


def test_eio_from_the_filesystem_gives_io(shrinkable_fs):
    """A real EIO: the file's blocks lie beyond the end of a loop device that was
    shrunk under the mounted filesystem (no device-mapper here).  READ of data
    not in the page cache and a FILE_SYNC WRITE both get NFS3ERR_IO."""
    mnt, img, loop = shrinkable_fs
    export = mnt / "export"
    export.mkdir()
    data = os.urandom(24 << 20)
    with open(export / "victim", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    srv = FastnfsProcess(export).start()
    try:
        n = connect(srv)
        root = n.mount(str(export))
        fh = lookup_fh(n, root, "victim")
        assert n.read(fh, 20 << 20, 4096)[1]["data"] == data[20 << 20:(20 << 20) + 4096]
        # cut the device to 4 MiB and drop the file's pages
        os.truncate(img, 4 << 20)
        subprocess.run(["losetup", "-c", loop], check=True)
        fd = os.open(export / "victim", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                os.pread(fd, 4096, 16 << 20)
                pytest.skip("could not produce EIO here (the read still worked)")
            except OSError as e:
                if e.errno != errno.EIO:
                    pytest.skip("the shrunk device gave %s, not EIO" % errno.errorcode[e.errno])
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        st, _ = n.read(fh, 18 << 20, 4096)           # inline read
        assert st == NFS3ERR_IO, st
        st, _ = n.read(fh, 12 << 20, 1 << 20)        # page-cache miss, then the thread pool
        assert st == NFS3ERR_IO, st
        st, _ = n.write(fh, 22 << 20, b"w" * 65536, stable=FILE_SYNC)
        assert st == NFS3ERR_IO, st
        assert n.getattr(root)[0] == NFS3_OK           # the server is fine
        n.close()
    finally:
        srv.stop()
    no_traceback(srv)


def test_errno_to_nfsstat_table():
    """The mapping itself (fs._ERRNO_TO_NFS / nfsstat_of), for the errnos the
    tests above cannot all produce on demand."""
    from fastnfs.fs import nfsstat_of
    want = {errno.EIO: NFS3ERR_IO, errno.ENOSPC: NFS3ERR_NOSPC, errno.EROFS: NFS3ERR_ROFS,
            errno.EACCES: NFS3ERR_ACCES, errno.EPERM: 1, errno.EDQUOT: 69,
            errno.EFBIG: 27, errno.ESTALE: NFS3ERR_STALE, errno.ENOENT: 2,
            errno.ENOTEMPTY: 66, errno.ENAMETOOLONG: 63, errno.EEXIST: 17,
            errno.EXDEV: 18, errno.EMLINK: 31, errno.ENXIO: 6, errno.ENODEV: 19}
    for e, st in want.items():
        assert nfsstat_of(OSError(e, os.strerror(e))) == st, errno.errorcode[e]
    # unknown errors are I/O errors, never success
    assert nfsstat_of(OSError(errno.EHOSTDOWN, "x")) == NFS3ERR_IO
    assert nfsstat_of(OSError(errno.ECONNRESET, "x")) == NFS3ERR_IO
