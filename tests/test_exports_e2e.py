"""Exports, access control and credentials like unfsd, through real clients.

Every test here starts `fastnfs serve -e EXPORTS` as a user would and talks to
it with clients that fastnfs did not write: the xdrlib3 client in
rpcclient.py (bound to chosen source addresses and ports), libnfs's nfs-ls,
and the Linux kernel client in qemu.  The server runs as root, so it switches
to the caller's (squashed) credentials and the kernel checks permissions.

Loopback addresses stand in for hosts: 127.0.0.1 and 127.0.0.2 are both
local, and a socket bound to one of them reaches the server from that
address.  Source ports below 1024 need root (we are).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from xdrlib3 import Packer

from conftest import end_session, require, require_vm
from fastnfs.exports import DEFAULT_ANONGID, DEFAULT_ANONUID
from rpcclient import (CREATE, EXCLUSIVE, FILE_SYNC, GUARDED, MNT3_OK, MOUNT_PROGRAM, NF3CHR,
                       NF3FIFO, NFS3_OK, NFS3ERR_ACCES, NFS3ERR_BADHANDLE, NFS3ERR_PERM,
                       NFS3ERR_ROFS, NFS3ERR_STALE, NFS_PROGRAM, NFS_V3, UNCHECKED, AuthSys,
                       Nfs3, RpcClient, RpcError, fh_fields, pack_diropargs, pack_sattr)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (privileged ports, "
                                "file ownership, credential switching)")

MNT3ERR_ACCES = 13
MOUNTPROC_EXPORT = 5
BAD_HANDLE = {NFS3ERR_BADHANDLE, NFS3ERR_STALE}
ROOT = AuthSys(0, 0, machine=b"e2e-root")
USER = AuthSys(1000, 1000, [1000], machine=b"e2e-user")


# ---------------------------------------------------------------------------
# a server process started from an exports file (or any fastnfs command line)

class ServerProcess:
    """A fastnfs command in a child process; started when its banner and
    "ready:" appear in the log.  ``log()`` is everything it wrote."""

    def __init__(self, cmd, log_path: Path, env=None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.port = self.mount_port = 0

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        env = dict(os.environ)
        env.update(self.env or {})
        self._log = open(self.log_path, "ab")
        self._start = self._log.tell()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            m = re.search(r"NFS port (\d+), MOUNT port (\d+)", text)
            if m and "ready:" in text:
                self.port, self.mount_port = int(m.group(1)), int(m.group(2))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s"
                                   % (" ".join(self.cmd), self.proc.returncode, text))
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_bytes()[self._start:].decode(errors="replace")

    def mark(self) -> int:
        return len(self.log())

    def wait_log(self, pattern: str, since: int = 0, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()[since:]
            if re.search(pattern, text):
                return text
            time.sleep(0.05)
        raise AssertionError("%r not logged within %.0fs:\n%s" % (pattern, timeout, text))

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def processes(self) -> int:
        """How many processes answer calls (worker processes, if the server forks them)."""
        return max(1, len(set(re.findall(r"worker (\d+) started", self.log()))))

    def reload(self, expect: str = "exports reloaded", timeout: float = 10.0) -> str:
        """SIGHUP, then wait until every serving process logged `expect`; the new log text."""
        mark = self.mark()
        self.hup()
        want = self.processes()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()[mark:]
            done = len(re.findall(r"exports reloaded|exports not reloaded", text))
            if done >= want:
                assert len(re.findall(expect, text)) >= want, text
                return text
            time.sleep(0.05)
        raise AssertionError("SIGHUP not handled by %d processes within %.0fs:\n%s"
                             % (want, timeout, self.log()[mark:]))

    def stop(self, timeout: float = 10.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        end_session(self.proc.pid)
        rc, self.proc = self.proc.returncode, None
        self._log.close()
        return rc


def serve_cmd(exports_file, *extra):
    return [sys.executable, "-m", "fastnfs", "serve", "-e", str(exports_file), "-n", "0",
            "-p", "-d", "--log-level", "debug", *extra]


def _check_no_traceback(srv: ServerProcess) -> None:
    text = srv.log()
    assert "Traceback" not in text, "the server logged a traceback:\n" + text[-4000:]


@pytest.fixture
def serve(tmp_path):
    """serve(exports_text) -> a running `fastnfs serve -e FILE` (stopped after the test)."""
    started = []

    def start(text: str, *extra, name: str = "exports") -> ServerProcess:
        f = tmp_path / name
        f.write_text(text)
        srv = ServerProcess(serve_cmd(f, *extra), tmp_path / (name + ".log")).start()
        srv.exports_file = f
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
    for srv in started:
        _check_no_traceback(srv)


# ---------------------------------------------------------------------------
# clients from a chosen source address and port

def bound_socket(dest_port: int, *, src: str = "127.0.0.1", privileged: bool = False,
                 proto: str = "tcp", timeout: float = 5.0, dest: str = "127.0.0.1"):
    """A TCP connection (or UDP socket) to dest:dest_port from src, from a random
    port in 600-999 when privileged (retrying ports that are taken)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    ports = random.sample(range(600, 1000), 400) if privileged else [0]
    last = None
    for p in ports:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(timeout)
        try:
            s.bind((src, p))
            if proto == "tcp":
                s.connect((dest, dest_port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError as e:
            s.close()
            last = e
            if privileged and e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                continue
            raise
    raise last


class BoundRpcClient(RpcClient):
    """rpcclient.RpcClient whose socket is bound to a source address and port."""

    def __init__(self, port: int, *, src: str = "127.0.0.1", privileged: bool = False,
                 proto: str = "tcp", timeout: float = 5.0, cred=ROOT):
        self.host, self.port, self.proto, self.timeout = "127.0.0.1", port, proto, timeout
        self.addr = (self.host, port)
        self.cred = cred
        self._buf = b""
        self._pending = {}
        self.sock = bound_socket(port, src=src, privileged=privileged, proto=proto,
                                 timeout=timeout)
        self.src = self.sock.getsockname()


def connect(port: int, **kw) -> Nfs3:
    """An Nfs3 client; keywords as BoundRpcClient (src=, privileged=, proto=, cred=)."""
    return Nfs3(BoundRpcClient(port, **kw))


def export_list(nfs: Nfs3) -> list:
    """MOUNTPROC3_EXPORT: [(path, [group, ...]), ...] in the server's order."""
    r = nfs.c.call(MOUNT_PROGRAM, 3, MOUNTPROC_EXPORT, b"")
    if not r.ok:
        raise RpcError(r)
    u = r.body
    out = []
    while u.unpack_bool():
        path = u.unpack_string()
        groups = []
        while u.unpack_bool():
            groups.append(u.unpack_string())
        out.append((path, groups))
    u.done()
    return out


def lookup_path(nfs: Nfs3, fh: bytes, *names) -> bytes:
    for n in names:
        st, r = nfs.lookup(fh, n)
        assert st == NFS3_OK, (n, st)
        fh = r["fh"]
    return fh


def owner(path) -> tuple:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def snapshot(root) -> dict:
    """Everything about a tree that a modifying procedure could change (not atime)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in [""] + dirs + files:
            p = os.path.join(d, n) if n else d
            st = os.lstat(p)
            info = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_ino)
            if stat.S_ISREG(st.st_mode):
                info += (hashlib.md5(Path(p).read_bytes()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                info += (os.readlink(p),)
            out[os.path.relpath(p, root)] = info
    return out


def libnfs_url(port: int, path) -> str:
    return "nfs://127.0.0.1%s?nfsport=%d&mountport=%d&version=3" % (path, port, port)


def nfs_ls(port: int, path) -> subprocess.CompletedProcess:
    require("nfs-ls")
    return subprocess.run(["nfs-ls", libnfs_url(port, path)], capture_output=True, text=True,
                          timeout=60)


def mkexport(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


# ---------------------------------------------------------------------------
# allowed and refused hosts

HOST_CASES = {
    # client spec: (sources that get in, sources that are refused)
    "127.0.0.2": (["127.0.0.2"], ["127.0.0.1", "127.0.0.3"]),
    "127.0.0.0/8": (["127.0.0.1", "127.0.0.2", "127.0.0.77"], []),
    "127.0.0.2/255.255.255.254": (["127.0.0.2", "127.0.0.3"], ["127.0.0.1", "127.0.0.4"]),
    "localhost": (["127.0.0.1"], ["127.0.0.2"]),
}


@pytest.mark.parametrize("spec", list(HOST_CASES))
def test_allowed_and_refused_hosts(serve, tmp_path, spec):
    e = mkexport(tmp_path / "e")
    (e / "f").write_bytes(b"for the allowed host\n")
    srv = serve("%s %s(rw,insecure)\n" % (e, spec))
    allowed, refused = HOST_CASES[spec]
    for src in allowed:
        n = connect(srv.port, src=src)
        try:
            st, r = n.mnt(str(e))
            assert st == MNT3_OK, (src, st)
            st, a = n.getattr(r["fh"])
            assert st == NFS3_OK and a["attrs"]["fileid"] == os.stat(e).st_ino
            fh = lookup_path(n, r["fh"], "f")
            st, rd = n.read(fh, 0, 100)
            assert st == NFS3_OK and rd["data"] == b"for the allowed host\n"
        finally:
            n.close()
    for src in refused:
        for proto in ("tcp", "udp"):
            n = connect(srv.port, src=src, proto=proto)
            try:
                assert n.mnt(str(e)) == (MNT3ERR_ACCES, {}), (src, proto)
                assert n.mnt(str(e) + "/", vers=1)[0] == MNT3ERR_ACCES
            finally:
                n.close()
    if "127.0.0.1" in refused:
        assert "refused 127.0.0.1" in srv.log()
    # libnfs always comes from 127.0.0.1
    r = nfs_ls(srv.port, e)
    if "127.0.0.1" in allowed:
        assert r.returncode == 0 and "f" in r.stdout.split(), r.stderr
    else:
        assert r.returncode != 0, r.stdout


def test_handle_from_another_host_is_useless(serve, tmp_path):
    e = mkexport(tmp_path / "e")
    (e / "f").write_bytes(b"secret of 127.0.0.2\n")
    before = snapshot(e)
    srv = serve("%s 127.0.0.2(rw,no_root_squash,insecure)\n" % e)
    good = connect(srv.port, src="127.0.0.2")
    evil = connect(srv.port, src="127.0.0.1")
    evil_udp = connect(srv.port, src="127.0.0.1", proto="udp")
    try:
        root = good.mount(str(e))
        fh = lookup_path(good, root, "f")
        assert good.getattr(fh)[0] == NFS3_OK
        for n in (evil, evil_udp):
            assert n.getattr(root)[0] == NFS3ERR_ACCES
            assert n.getattr(fh)[0] == NFS3ERR_ACCES
            st, r = n.read(fh, 0, 100)
            assert st == NFS3ERR_ACCES and "data" not in r
            assert n.write(fh, 0, b"overwritten")[0] == NFS3ERR_ACCES
            assert n.lookup(root, "f")[0] == NFS3ERR_ACCES
            assert n.create(root, "planted")[0] == NFS3ERR_ACCES
            assert n.setattr(fh, mode=0o777)[0] == NFS3ERR_ACCES
            assert n.remove(root, "f")[0] == NFS3ERR_ACCES
            assert n.readdir(root)[0] == NFS3ERR_ACCES
            assert n.fsstat(root)[0] == NFS3ERR_ACCES
        assert snapshot(e) == before
        # the rightful host still gets in on the same server
        assert good.read(fh, 0, 100)[1]["data"] == b"secret of 127.0.0.2\n"
    finally:
        good.close()
        evil.close()
        evil_udp.close()


def test_export_list_is_the_exports_file(serve, tmp_path):
    a = mkexport(tmp_path / "a")
    inner = mkexport(a / "inner")
    spaced = mkexport(tmp_path / "with space")
    everyone = mkexport(tmp_path / "everyone")
    text = ("# the EXPORT procedure lists these\n"
            "%s 127.0.0.2(rw,insecure) 10.0.0.0/8(ro) localhost\n"
            "%s/ 192.168.1.0/255.255.255.0(rw,insecure)\n"
            "\"%s\" (ro,insecure)\n"
            "%s\n" % (a, inner, spaced, everyone))
    srv = serve(text)
    n = connect(srv.port)
    try:
        got = export_list(n)
    finally:
        n.close()
    assert got == [
        (str(a).encode(), [b"127.0.0.2", b"10.0.0.0/8", b"localhost"]),
        (str(inner).encode(), [b"192.168.1.0/255.255.255.0"]),
        (str(spaced).encode(), []),
        (str(everyone).encode(), []),
    ]


# ---------------------------------------------------------------------------
# secure and insecure

def test_secure_export_needs_a_privileged_port(serve, tmp_path):
    e = mkexport(tmp_path / "e")
    (e / "f").write_bytes(b"behind a secure export\n")
    srv = serve("%s (rw,no_root_squash)\n" % e)     # secure is the default
    priv = connect(srv.port, privileged=True)
    unpriv = connect(srv.port)
    priv_udp = connect(srv.port, privileged=True, proto="udp")
    unpriv_udp = connect(srv.port, proto="udp")
    try:
        assert priv.c.src[1] < 1024 <= unpriv.c.src[1]
        root = priv.mount(str(e))
        fh = lookup_path(priv, root, "f")
        assert priv.read(fh, 0, 100)[1]["data"] == b"behind a secure export\n"
        assert priv.write(fh, 0, b"B")[0] == NFS3_OK
        assert priv_udp.mnt(str(e))[0] == MNT3_OK
        assert priv_udp.getattr(fh)[0] == NFS3_OK
        for n in (unpriv, unpriv_udp):
            assert n.mnt(str(e))[0] == MNT3ERR_ACCES
            assert n.getattr(root)[0] == NFS3ERR_ACCES
            assert n.read(fh, 0, 10)[0] == NFS3ERR_ACCES
            assert n.write(fh, 0, b"X")[0] == NFS3ERR_ACCES
        assert (e / "f").read_bytes() == b"Behind a secure export\n"
        assert "not privileged" in srv.log()
    finally:
        for n in (priv, unpriv, priv_udp, unpriv_udp):
            n.close()
    # libnfs run as root binds a reserved port, as the kernel client does
    r = nfs_ls(srv.port, e)
    assert r.returncode == 0 and "f" in r.stdout.split(), r.stderr


def test_insecure_export_takes_any_port(serve, tmp_path):
    e = mkexport(tmp_path / "e")
    srv = serve("%s (rw,no_root_squash,insecure)\n" % e)
    for kw in ({}, {"privileged": True}, {"proto": "udp"}, {"proto": "udp", "privileged": True}):
        n = connect(srv.port, **kw)
        try:
            root = n.mount(str(e))
            name = "f-%d" % n.c.src[1]
            assert n.create(root, name)[0] == NFS3_OK, kw
            assert (e / name).exists()
        finally:
            n.close()
    r = nfs_ls(srv.port, e)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------
# ro

def _ro_tree(e: Path) -> None:
    (e / "f").write_bytes(b"read-only data\n")
    (e / "d").mkdir()
    (e / "d" / "sub").mkdir()
    (e / "d" / "g").write_bytes(b"g")
    os.symlink("f", e / "lnk")
    os.chmod(e, 0o777)


def test_ro_refuses_every_modifying_procedure(serve, tmp_path):
    e = tmp_path / "ro"
    e.mkdir()
    _ro_tree(e)
    before = snapshot(e)
    srv = serve("%s (ro,no_root_squash,insecure)\n" % e)
    for cred in (ROOT, USER):
        n = connect(srv.port, cred=cred)
        try:
            root = n.mount(str(e))
            f = lookup_path(n, root, "f")
            d = lookup_path(n, root, "d")
            results = {
                "SETATTR mode": n.setattr(f, mode=0o600)[0],
                "SETATTR size": n.setattr(f, size=0)[0],
                "SETATTR mtime": n.setattr(f, mtime="server")[0],
                "SETATTR uid": n.setattr(f, uid=1234)[0],
                "WRITE": n.write(f, 0, b"X")[0],
                "WRITE unstable": n.write(f, 100, b"X", stable=0)[0],
                "CREATE unchecked": n.create(root, "new", UNCHECKED, mode=0o644)[0],
                "CREATE guarded": n.create(root, "new", GUARDED, mode=0o644)[0],
                "CREATE exclusive": n.create(root, "new", EXCLUSIVE, verf=b"12345678")[0],
                "CREATE over existing": n.create(root, "f", UNCHECKED, size=0)[0],
                "MKDIR": n.mkdir(root, "newdir", mode=0o755)[0],
                "SYMLINK": n.symlink(root, "newlink", "f")[0],
                "MKNOD fifo": n.mknod(root, "fifo", NF3FIFO, mode=0o644)[0],
                "MKNOD chr": n.mknod(root, "chr", NF3CHR, rdev=(1, 3), mode=0o644)[0],
                "REMOVE": n.remove(root, "f")[0],
                "REMOVE link": n.remove(root, "lnk")[0],
                "RMDIR": n.rmdir(d, "sub")[0],
                "RENAME": n.rename(root, "f", root, "f2")[0],
                "RENAME dir": n.rename(root, "d", root, "d2")[0],
                "LINK": n.link(f, root, "hard")[0],
            }
            wrong = {k: v for k, v in results.items() if v != NFS3ERR_ROFS}
            assert not wrong, "expected NFS3ERR_ROFS (30) for %s: %s" % (cred.uid, wrong)
            # reading is fine, and COMMIT (nothing to flush) too
            st, r = n.read(f, 0, 100)
            assert st == NFS3_OK and r["data"] == b"read-only data\n"
            assert n.commit(f)[0] == NFS3_OK
            assert n.readdir(root)[0] == NFS3_OK
            assert n.readlink(lookup_path(n, root, "lnk"))[1]["data"] == b"f"
            # ACCESS grants nothing that would modify
            st, a = n.access(root)
            assert st == NFS3_OK and a["access"] & 0x1C == 0, a
            st, a = n.access(f)
            assert st == NFS3_OK and a["access"] & 0x1C == 0 and a["access"] & 0x01, a
        finally:
            n.close()
    assert snapshot(e) == before


# ---------------------------------------------------------------------------
# squashing and credentials over AUTH_SYS (rpcclient)

def test_squashing_over_auth_sys(serve, tmp_path):
    sq = mkexport(tmp_path / "sq", 0o777)
    allsq = mkexport(tmp_path / "all", 0o777)
    nrs = mkexport(tmp_path / "nrs", 0o777)
    srv = serve("%s (rw,root_squash,insecure)\n"
                "%s (rw,all_squash,anonuid=1234,anongid=5678,insecure)\n"
                "%s (rw,no_root_squash,insecure)\n" % (sq, allsq, nrs))
    want = {
        (sq, 0): (DEFAULT_ANONUID, DEFAULT_ANONGID), (sq, 1000): (1000, 1000),
        (allsq, 0): (1234, 5678), (allsq, 1000): (1234, 5678),
        (nrs, 0): (0, 0), (nrs, 1000): (1000, 1000),
    }
    for (e, uid), ids in want.items():
        cred = AuthSys(uid, uid, [uid], machine=b"sq")
        n = connect(srv.port, cred=cred)
        try:
            root = n.mount(str(e))
            st, r = n.create(root, "file-%d" % uid, mode=0o644)
            assert st == NFS3_OK, (e, uid, st)
            assert (r["attrs"]["uid"], r["attrs"]["gid"]) == ids
            assert n.mkdir(root, "dir-%d" % uid, mode=0o755)[0] == NFS3_OK
            assert n.symlink(root, "link-%d" % uid, "x")[0] == NFS3_OK
        finally:
            n.close()
        for name in ("file", "dir", "link"):
            assert owner(e / ("%s-%d" % (name, uid))) == ids, (e, uid, name)
    # gid 0 alone is squashed too on a root_squash export (uid stays)
    n = connect(srv.port, cred=AuthSys(1000, 0, [0]))
    try:
        st, r = n.create(n.mount(str(sq)), "gid0", mode=0o644)
        assert st == NFS3_OK
    finally:
        n.close()
    assert owner(sq / "gid0") == (1000, DEFAULT_ANONGID)
    # ... and a supplementary group 0 grants nothing there (it does with no_root_squash)
    for e, want in ((sq, NFS3ERR_ACCES), (nrs, NFS3_OK)):
        (e / "group0").write_bytes(b"root group may write\n")
        os.chmod(e / "group0", 0o660)
        n = connect(srv.port, cred=AuthSys(1000, 1000, [1000, 0]))
        try:
            fh = lookup_path(n, n.mount(str(e)), "group0")
            assert n.write(fh, 0, b"R")[0] == want, e
        finally:
            n.close()


@pytest.fixture
def cred_export(serve, tmp_path):
    """An rw, no_root_squash export with root-owned and shared corners."""
    e = mkexport(tmp_path / "c", 0o755)
    (e / "rootfile").write_bytes(b"root's\n")
    os.chmod(e / "rootfile", 0o644)
    mkexport(e / "rootdir", 0o755)
    mkexport(e / "open", 0o777)
    (e / "groupfile").write_bytes(b"group 2000 may write\n")
    os.chown(e / "groupfile", 0, 2000)
    os.chmod(e / "groupfile", 0o664)
    (e / "users").write_bytes(b"owned by 1001\n")
    os.chown(e / "users", 1001, 1001)
    os.chmod(e / "users", 0o644)
    srv = serve("%s (rw,no_root_squash,insecure)\n" % e)
    return srv, e


def test_kernel_checks_permissions_as_the_caller(cred_export):
    srv, e = cred_export
    user = connect(srv.port, cred=AuthSys(1000, 1000, [1000]))
    grouped = connect(srv.port, cred=AuthSys(1000, 1000, [1000, 2000]))
    try:
        root = user.mount(str(e))
        rootfile = lookup_path(user, root, "rootfile")
        rootdir = lookup_path(user, root, "rootdir")
        opendir = lookup_path(user, root, "open")
        groupfile = lookup_path(user, root, "groupfile")
        users = lookup_path(user, root, "users")

        assert user.write(rootfile, 0, b"X")[0] == NFS3ERR_ACCES
        assert user.setattr(rootfile, size=0)[0] == NFS3ERR_ACCES
        assert user.create(rootdir, "nope", mode=0o644)[0] == NFS3ERR_ACCES
        assert user.mkdir(rootdir, "nope", mode=0o755)[0] == NFS3ERR_ACCES
        assert user.remove(root, "rootfile")[0] == NFS3ERR_ACCES
        assert user.rename(root, "rootfile", opendir, "stolen")[0] == NFS3ERR_ACCES
        assert not (e / "rootdir" / "nope").exists()
        assert (e / "rootfile").read_bytes() == b"root's\n"

        st, r = user.create(opendir, "mine", mode=0o640)
        assert st == NFS3_OK
        assert owner(e / "open" / "mine") == (1000, 1000)
        assert stat.S_IMODE(os.lstat(e / "open" / "mine").st_mode) == 0o640
        assert user.mkdir(opendir, "mydir", mode=0o700)[0] == NFS3_OK
        assert owner(e / "open" / "mydir") == (1000, 1000)

        # group write through a supplementary group only
        assert user.write(groupfile, 0, b"X")[0] == NFS3ERR_ACCES
        assert grouped.write(groupfile, 0, b"G")[0] == NFS3_OK
        assert (e / "groupfile").read_bytes().startswith(b"Group 2000")

        # chmod / chown / utimes of someone else's file: EPERM
        assert user.setattr(rootfile, mode=0o666)[0] == NFS3ERR_PERM
        assert user.setattr(users, mode=0o666)[0] == NFS3ERR_PERM
        assert user.setattr(rootfile, uid=1000)[0] == NFS3ERR_PERM
        assert user.setattr(rootfile, mtime=(1000000, 0))[0] == NFS3ERR_PERM
        assert stat.S_IMODE(os.lstat(e / "rootfile").st_mode) == 0o644
        # giving one's own file away is not allowed either; chmod of it is
        mine = lookup_path(user, opendir, "mine")
        assert user.setattr(mine, uid=0)[0] == NFS3ERR_PERM
        assert user.setattr(mine, mode=0o600)[0] == NFS3_OK
        assert stat.S_IMODE(os.lstat(e / "open" / "mine").st_mode) == 0o600
    finally:
        user.close()
        grouped.close()
    # root (not squashed here) may do all of it
    n = connect(srv.port, cred=ROOT)
    try:
        root = n.mount(str(e))
        assert n.write(lookup_path(n, root, "rootfile"), 0, b"R")[0] == NFS3_OK
        assert n.setattr(lookup_path(n, root, "users"), mode=0o600)[0] == NFS3_OK
    finally:
        n.close()


def _create_call(nfs: Nfs3, dfh: bytes, name: str, cred: AuthSys) -> int:
    p = Packer()
    pack_diropargs(p, dfh, name)
    p.pack_enum(UNCHECKED)
    pack_sattr(p, mode=0o644)
    return nfs.c.send_call(NFS_PROGRAM, NFS_V3, CREATE, p.get_buffer(), cred=cred)


def test_identities_never_leak_between_calls(cred_export):
    srv, e = cred_export
    opend = e / "open"
    n = connect(srv.port, cred=ROOT)
    try:
        root = n.mount(str(e))
        dfh = lookup_path(n, root, "open")
        rootfile = lookup_path(n, root, "rootfile")
        # one connection, alternating callers, one call at a time
        for i in range(50):
            for who, cred in (("r", ROOT), ("u", USER)):
                n.c.cred = cred
                st, r = n.create(dfh, "seq-%s%02d" % (who, i), mode=0o644)
                assert st == NFS3_OK, (who, i, st)
            # a user never writes root's file, right after root did
            n.c.cred = ROOT
            assert n.write(rootfile, 0, b"r")[0] == NFS3_OK
            n.c.cred = USER
            assert n.write(rootfile, 0, b"u")[0] == NFS3ERR_ACCES
        # the same, pipelined: 100 calls in flight on one connection
        xids = {}
        for i in range(50):
            for who, cred in (("r", ROOT), ("u", USER)):
                xids[_create_call(n, dfh, "pipe-%s%02d" % (who, i), cred)] = who
        for xid in xids:
            r = n.c.recv_reply(xid)
            assert r.ok and r.body.unpack_uint() == NFS3_OK
    finally:
        n.close()

    # two connections in two threads at once, big writes (off-loop) mixed in
    errors = []

    def worker(cred: AuthSys, who: str):
        c = connect(srv.port, cred=cred)
        try:
            root = c.mount(str(e))
            dfh = lookup_path(c, root, "open")
            big = b"x" * (200 * 1024)
            for i in range(50):
                st, r = c.create(dfh, "thr-%s%02d" % (who, i), mode=0o644)
                if st != NFS3_OK:
                    errors.append((who, i, "create", st))
                    continue
                st, _ = c.write(r["fh"], 0, big, stable=FILE_SYNC)
                if st != NFS3_OK:
                    errors.append((who, i, "write", st))
        except Exception as ex:      # reported below
            errors.append((who, repr(ex)))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(ROOT, "r")),
               threading.Thread(target=worker, args=(USER, "u"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    counts = {"r": 0, "u": 0}
    for name in os.listdir(opend):
        m = re.fullmatch(r"(seq|pipe|thr)-([ru])\d\d", name)
        if not m:
            continue
        counts[m.group(2)] += 1
        want = (0, 0) if m.group(2) == "r" else (1000, 1000)
        assert owner(opend / name) == want, name
    assert counts == {"r": 150, "u": 150}


# ---------------------------------------------------------------------------
# SIGHUP

def test_sighup_reload(serve, tmp_path):
    e = mkexport(tmp_path / "e", 0o777)
    (e / "f").write_bytes(b"before\n")
    srv = serve("%s 127.0.0.2(ro,no_root_squash,insecure)\n" % e)
    f = srv.exports_file
    a = connect(srv.port, src="127.0.0.2")
    b = connect(srv.port, src="127.0.0.1")
    try:
        root = a.mount(str(e))
        fh = lookup_path(a, root, "f")
        assert a.write(fh, 0, b"B")[0] == NFS3ERR_ROFS
        assert b.mnt(str(e))[0] == MNT3ERR_ACCES
        assert b.getattr(fh)[0] == NFS3ERR_ACCES

        # ro -> rw for .2, and 127.0.0.1 added
        f.write_text("%s 127.0.0.2(rw,no_root_squash,insecure) 127.0.0.1(rw,no_root_squash,"
                     "insecure)\n" % e)
        srv.reload()
        assert a.write(fh, 0, b"B")[0] == NFS3_OK          # same connection, old handle
        assert (e / "f").read_bytes() == b"Before\n"
        st, r = b.mnt(str(e))                               # same connection as the refusal
        assert st == MNT3_OK and r["fh"] == root
        assert b.getattr(fh)[0] == NFS3_OK

        # a broken file: an error naming file:line, the previous rules stay
        f.write_text("# broken\n%s 127.0.0.1(rw,anonuid=abc)\n" % e)
        text = srv.reload(expect=re.escape(str(f)) + r":2:\d+: anonuid needs a number")
        assert "previous ones stay in force" in text
        assert srv.proc.poll() is None
        assert a.write(fh, 1, b"E")[0] == NFS3_OK
        assert b.getattr(fh)[0] == NFS3_OK
        c = connect(srv.port, src="127.0.0.1")
        try:
            assert c.mnt(str(e))[0] == MNT3_OK              # new connections too
        finally:
            c.close()

        # and back: 127.0.0.1 removed, .2 read-only again
        f.write_text("%s 127.0.0.2(ro,insecure)\n" % e)
        srv.reload()
        assert b.getattr(fh)[0] == NFS3ERR_ACCES
        assert b.mnt(str(e))[0] == MNT3ERR_ACCES
        assert a.write(fh, 0, b"b")[0] == NFS3ERR_ROFS
        assert a.read(fh, 0, 100)[1]["data"] == b"BEfore\n"
    finally:
        a.close()
        b.close()


def test_sighup_after_a_squashed_call(serve, tmp_path):
    """The reload runs as the server, not as whoever the loop thread last served
    (creds.switch is per thread; the loop thread keeps the last inline caller's ids)."""
    # the exports file sits in pytest's 0700 root-owned tmp_path: only root can read it
    e = mkexport(tmp_path / "e", 0o777)
    srv = serve("%s (rw,root_squash,insecure)\n" % e)
    f = srv.exports_file
    clients = [connect(srv.port, cred=ROOT) for _ in range(8)]   # reach every worker
    try:
        for n in clients:
            root = n.mount(str(e))
            assert n.getattr(root)[0] == NFS3_OK    # answered inline, as nobody
        f.write_text("%s (ro,root_squash,insecure)\n" % e)
        text = srv.reload()
        assert "not reloaded" not in text, text
        for n in clients:
            assert n.create(root, "x", mode=0o644)[0] == NFS3ERR_ROFS
    finally:
        for n in clients:
            n.close()


# ---------------------------------------------------------------------------
# nested exports and handles across exports

def test_nested_exports_have_their_own_space_and_options(serve, tmp_path):
    x = mkexport(tmp_path / "x", 0o777)
    inner = mkexport(x / "inner", 0o777)
    (x / "outer-secret").write_bytes(b"only through /x\n")
    (inner / "in").write_bytes(b"inside inner\n")
    mkexport(inner / "sub", 0o777)
    srv = serve("%s (rw,no_root_squash,insecure)\n"
                "%s (ro,insecure)\n" % (x, inner))
    n = connect(srv.port, cred=ROOT)
    try:
        outer_root = n.mount(str(x))
        inner_root = n.mount(str(inner))
        sub_root = n.mount(str(inner) + "/sub")
        eid_outer = fh_fields(outer_root)["export_id"]
        eid_inner = fh_fields(inner_root)["export_id"]
        assert eid_outer != eid_inner
        assert fh_fields(sub_root)["export_id"] == eid_inner   # longest export wins
        # each with its own options
        assert n.create(outer_root, "o-new", mode=0o644)[0] == NFS3_OK
        assert n.create(inner_root, "i-new", mode=0o644)[0] == NFS3ERR_ROFS
        assert n.create(sub_root, "s-new", mode=0o644)[0] == NFS3ERR_ROFS
        assert n.write(lookup_path(n, inner_root, "in"), 0, b"X")[0] == NFS3ERR_ROFS
        assert not (inner / "i-new").exists()
        # root squashed on the inner export only
        assert owner(x / "o-new") == (0, 0)
        # '..' at the inner export's root stays there (not the outer directory)
        st, r = n.lookup(inner_root, "..")
        assert st == NFS3_OK and r["attrs"]["fileid"] == os.stat(inner).st_ino
        assert fh_fields(r["fh"])["export_id"] == eid_inner
        # a handle of the outer export with the inner export's id names nothing in inner
        secret = lookup_path(n, outer_root, "outer-secret")
        forged = secret[:4] + struct.pack(">I", eid_inner) + secret[8:]
        assert n.getattr(forged)[0] in BAD_HANDLE
        st, r = n.read(forged, 0, 100)
        assert st in BAD_HANDLE and "data" not in r
        # the outer root's handle with the inner id: not the outer directory
        forged_root = outer_root[:4] + struct.pack(">I", eid_inner) + outer_root[8:]
        st, r = n.getattr(forged_root)
        assert st in BAD_HANDLE or r["attrs"]["fileid"] != os.stat(x).st_ino
    finally:
        n.close()


def test_nested_export_for_another_host_falls_back_to_the_outer(serve, tmp_path):
    """As in unfsd, MNT takes the longest export that admits the client."""
    x = mkexport(tmp_path / "x", 0o777)
    inner = mkexport(x / "inner", 0o777)
    srv = serve("%s (ro,insecure)\n%s 127.0.0.2(rw,no_root_squash,insecure)\n" % (x, inner))
    one = connect(srv.port, src="127.0.0.1")
    two = connect(srv.port, src="127.0.0.2")
    try:
        fh1 = one.mount(str(inner))
        fh2 = two.mount(str(inner))
        assert fh_fields(fh1)["export_id"] == fh_fields(one.mount(str(x)))["export_id"]
        assert fh_fields(fh1)["export_id"] != fh_fields(fh2)["export_id"]
        assert one.create(fh1, "from1", mode=0o644)[0] == NFS3ERR_ROFS   # outer's ro
        assert two.create(fh2, "from2", mode=0o644)[0] == NFS3_OK
        assert one.getattr(fh2)[0] == NFS3ERR_ACCES         # inner's handle: host refused
    finally:
        one.close()
        two.close()


def test_handle_patched_to_another_export_reads_nothing(serve, tmp_path):
    a = mkexport(tmp_path / "a")
    b = mkexport(tmp_path / "b")
    (a / "secret").write_bytes(b"A's secret\n")
    (a / "dir").mkdir()
    (a / "dir" / "deep").write_bytes(b"A's deep secret\n")
    (b / "public").write_bytes(b"B's public file\n")
    srv = serve("%s 127.0.0.2(rw,insecure)\n%s (rw,insecure)\n" % (a, b))
    owner_a = connect(srv.port, src="127.0.0.2")
    other = connect(srv.port, src="127.0.0.1")
    try:
        ra = owner_a.mount(str(a))
        rb = other.mount(str(b))
        eid_b = fh_fields(rb)["export_id"]
        assert fh_fields(ra)["export_id"] != eid_b
        for fh in (ra, lookup_path(owner_a, ra, "secret"), lookup_path(owner_a, ra, "dir"),
                   lookup_path(owner_a, ra, "dir", "deep")):
            forged = fh[:4] + struct.pack(">I", eid_b) + fh[8:]
            for n in (other, owner_a):
                st, r = n.getattr(forged)
                assert st in BAD_HANDLE, (fh.hex(), st)
                st, r = n.read(forged, 0, 100)
                assert st in BAD_HANDLE and "data" not in r
                assert n.lookup(forged, "deep")[0] in BAD_HANDLE
                assert n.write(forged, 0, b"X")[0] in BAD_HANDLE
        assert (a / "secret").read_bytes() == b"A's secret\n"
        # a symlink in B pointing at A does not get a client of B into A either
        os.symlink(str(a), b / "to_a")
        for path in (str(b) + "/to_a", str(b) + "/to_a/dir"):
            assert other.mnt(path)[0] != MNT3_OK, path
        st, r = other.lookup(rb, "to_a")
        assert st == NFS3_OK and r["attrs"]["type"] == 5     # the link itself
        assert other.lookup(r["fh"], "secret")[0] != NFS3_OK
    finally:
        owner_a.close()
        other.close()


def test_mnt_through_a_symlink_to_root_is_refused(serve, tmp_path):
    e = mkexport(tmp_path / "e")
    os.symlink("/", e / "link")
    other = mkexport(tmp_path / "other")
    srv = serve("%s (rw,no_root_squash,insecure)\n%s 127.0.0.2(rw,insecure)\n" % (e, other))
    n = connect(srv.port)
    try:
        for path in ("link", "link/", "link/etc", "link/tmp", "link" + str(other)):
            st, r = n.mnt(str(e) + "/" + path)
            assert st != MNT3_OK, (path, st)
        # the other export is not reachable from 127.0.0.1 by any spelling
        for path in (str(other), str(other) + "/", str(e) + "/../other",
                     str(e) + "/link" + str(other)):
            assert n.mnt(path)[0] != MNT3_OK, path
    finally:
        n.close()


# ---------------------------------------------------------------------------
# a bad exports file on the command line

def test_bad_exports_file_exit_status_2(tmp_path):
    e = mkexport(tmp_path / "e")
    f = tmp_path / "exports"
    f.write_text("# fine\n%s (rw)\n%s 10.0.0.0/33(rw)\n" % (e, e))
    r = subprocess.run(serve_cmd(f), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert re.search(re.escape(str(f)) + r":3:\d+: ", r.stderr), r.stderr
    assert "prefix length" in r.stderr
    assert "ready:" not in r.stderr
    missing = tmp_path / "no-such-exports"
    r = subprocess.run(serve_cmd(missing), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and str(missing) in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# the Linux kernel client (one boot for squashing and ro)

KERNEL_SCRIPT = r'''
. /fnfs/env
echo 'u:x:1000:1000:u:/tmp:/bin/sh' >> /etc/passwd
echo 'root:x:0:0:root:/root:/bin/sh' >> /etc/passwd
echo 'u:x:1000:' >> /etc/group
for m in all nrs ro; do
    mkdir -p /m/$m
    mount -t nfs -o "$FNFS_OPTS" "$FNFS_SERVER:@BASE@/$m" /m/$m; echo "rc mount_$m $?"
done
echo root > /mnt/by_root; echo "rc sq_root $?"
su u -c 'echo user > /mnt/by_user'; echo "rc sq_user $?"
echo root > /m/all/by_root; echo "rc all_root $?"
su u -c 'echo user > /m/all/by_user'; echo "rc all_user $?"
mkdir /m/all/dir_by_root; echo "rc all_mkdir $?"
echo root > /m/nrs/by_root; echo "rc nrs_root $?"
su u -c 'echo user > /m/nrs/by_user'; echo "rc nrs_user $?"
su u -c 'echo user > /m/nrs/rootdir/x'; echo "rc nrs_user_rootdir $?"
chown 4321:8765 /m/nrs/by_root; echo "rc nrs_chown $?"
echo "ro_cat $(cat /m/ro/pre.txt)"
touch /m/ro/x; echo "rc ro_touch $?"
mkdir /m/ro/d; echo "rc ro_mkdir $?"
rm /m/ro/pre.txt; echo "rc ro_rm $?"
ls -ln /mnt /m/all /m/nrs
for m in all nrs ro; do umount /m/$m; done
exit 0
'''


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory):
    from vm import guest
    require_vm()
    base = tmp_path_factory.mktemp("kexp")
    for m in ("sq", "all", "nrs"):
        mkexport(base / m, 0o777)
    mkexport(base / "nrs" / "rootdir", 0o755)
    ro = mkexport(base / "ro", 0o777)
    (ro / "pre.txt").write_text("read only content")
    f = base / "exports"
    f.write_text("%s/sq (rw,root_squash,insecure)\n"
                 "%s/all (rw,all_squash,anonuid=1234,anongid=5678,insecure)\n"
                 "%s/nrs (rw,no_root_squash,insecure)\n"
                 "%s/ro (ro,no_root_squash,insecure)\n" % (base, base, base, base))
    before_ro = snapshot(ro)
    srv = ServerProcess(serve_cmd(f), base / "server.log").start()
    try:
        res = guest.run(KERNEL_SCRIPT.replace("@BASE@", str(base)), nfs_port=srv.port,
                        export=str(base / "sq"), timeout=600, mem=384)
    finally:
        srv.stop()
    _check_no_traceback(srv)
    rcs = dict(re.findall(r"^rc (\S+) (\d+)$", res.output, re.M))
    return res, base, {k: int(v) for k, v in rcs.items()}, before_ro


@pytest.mark.vm
def test_kernel_mounts_every_export(kernel_run):
    res, base, rcs, _ = kernel_run
    assert res.rc == 0 and res.failure is None, res.describe()
    for m in ("all", "nrs", "ro"):
        assert rcs.get("mount_" + m) == 0, res.describe()


@pytest.mark.vm
def test_kernel_root_squash(kernel_run):
    res, base, rcs, _ = kernel_run
    assert rcs.get("sq_root") == 0 and rcs.get("sq_user") == 0, res.describe()
    assert owner(base / "sq" / "by_root") == (DEFAULT_ANONUID, DEFAULT_ANONGID)
    assert owner(base / "sq" / "by_user") == (1000, 1000)


@pytest.mark.vm
def test_kernel_all_squash(kernel_run):
    res, base, rcs, _ = kernel_run
    assert rcs.get("all_root") == 0 and rcs.get("all_user") == 0, res.describe()
    assert rcs.get("all_mkdir") == 0, res.describe()
    for name in ("by_root", "by_user", "dir_by_root"):
        assert owner(base / "all" / name) == (1234, 5678), name


@pytest.mark.vm
def test_kernel_no_root_squash(kernel_run):
    res, base, rcs, _ = kernel_run
    assert rcs.get("nrs_root") == 0 and rcs.get("nrs_user") == 0, res.describe()
    assert rcs.get("nrs_chown") == 0, res.describe()
    assert owner(base / "nrs" / "by_root") == (4321, 8765)
    assert owner(base / "nrs" / "by_user") == (1000, 1000)
    # the guest user cannot write into a root-owned 0755 directory
    assert rcs.get("nrs_user_rootdir") not in (None, 0), res.describe()
    assert not (base / "nrs" / "rootdir" / "x").exists()


@pytest.mark.vm
def test_kernel_read_only_export(kernel_run):
    res, base, rcs, before = kernel_run
    assert "ro_cat read only content" in res.output, res.describe()
    for op in ("ro_touch", "ro_mkdir", "ro_rm"):
        assert rcs.get(op) not in (None, 0), res.describe()
    assert "Read-only file system" in res.output, res.describe()
    assert snapshot(base / "ro") == before
