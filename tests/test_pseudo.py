"""Yocto: a rootfs extracted under pseudo (runqemu-extract-sdk), served by
`pseudo unfsd ...` as runqemu-export-rootfs starts it, and by
`fastnfs serve ROOTFS --pseudo STATEDIR` reading pseudo's files.db directly."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import FastnfsProcess
from rpcclient import NF3BLK, NF3CHR, NFS3_OK, NFS3ERR_ACCES, AuthSys, Nfs3
from test_exports_e2e import lookup_path
from test_pseudodb import pseudo_env, stop_pseudo
from test_unfsd_dropin import _pid_alive, _wait_for, free_port, unfsd_program

from fastnfs.pseudodb import PseudoDB, rdev_split

REQUIRE_ALL = os.environ.get("FASTNFS_REQUIRE_ALL") == "1"
ROOT = AuthSys(0, 0, machine=b"qemu")
USER = AuthSys(1000, 1000, machine=b"qemu")


def _tarball() -> bytes:
    """An image tarball as bitbake makes it: root-owned, devices, a setuid binary."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, data=b"", **kw):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.size = kind, mode, uid, gid, len(data)
            for k, v in kw.items():
                setattr(ti, k, v)
            tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        for d in ("etc", "dev", "bin", "home"):
            add(d, tarfile.DIRTYPE, 0o755)
        add("home/user", tarfile.DIRTYPE, 0o700, uid=1000, gid=1000)
        add("etc/hostname", data=b"qemux86-64\n")
        add("etc/shadow", mode=0o600, data=b"root::1::::::\n")
        add("bin/su", mode=0o4755, data=b"\x7fELF su\n")
        add("dev/console", tarfile.CHRTYPE, 0o600, gid=5, devmajor=5, devminor=1)
        add("dev/sda", tarfile.BLKTYPE, 0o660, gid=6, devmajor=8, devminor=0)
        add("dev/big", tarfile.CHRTYPE, 0o600, devmajor=240, devminor=300)
    return buf.getvalue()


@pytest.fixture
def yocto(tmp_path):
    if not shutil.which("pseudo"):
        if REQUIRE_ALL:
            pytest.fail("pseudo is not installed (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("pseudo is not installed")
    tarball = tmp_path / "core-image-minimal-qemux86-64.tar"
    tarball.write_bytes(_tarball())
    rootfs = tmp_path / "qemux86-64-nfsroot"
    rootfs.mkdir()
    state = tmp_path / "qemux86-64-nfsroot.pseudo_state"    # runqemu-extract-sdk's choice
    state.mkdir()
    r = subprocess.run(["pseudo", "tar", "-C", str(rootfs), "--numeric-owner", "-xf",
                        str(tarball)], env=pseudo_env(state), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stop_pseudo(state)
    return rootfs, state


def check_image_attrs(n: Nfs3, root: bytes) -> None:
    attrs = lambda *names: n.getattr(lookup_path(n, root, *names))[1]["attrs"]  # noqa: E731
    su = attrs("bin", "su")
    assert (su["uid"], su["gid"], su["mode"]) == (0, 0, 0o4755)
    con = attrs("dev", "console")
    assert (con["type"], con["rdev"], con["gid"], con["mode"]) == (NF3CHR, (5, 1), 5, 0o600)
    assert attrs("dev", "sda")["type"] == NF3BLK and attrs("dev", "sda")["rdev"] == (8, 0)
    assert attrs("dev", "big")["rdev"] == (240, 300)
    home = attrs("home", "user")
    assert (home["uid"], home["gid"], home["mode"]) == (1000, 1000, 0o700)


def test_runqemu_export_rootfs_under_pseudo(yocto, tmp_path):
    """`pseudo -P PREFIX unfsd -p -i PIDFILE -e EXPORTS -n P -m P`: the preload route;
    what the board changes is recorded in pseudo's database."""
    rootfs, state = yocto
    sdk = tmp_path / ".runqemu-sdk"
    sdk.mkdir()
    exports = sdk / "exports0"
    exports.write_text('"%s" (rw,no_root_squash,no_all_squash,insecure)\n' % rootfs)
    pidfile = sdk / "nfs0.pid"
    port = free_port()
    bindir = tmp_path / "native-sysroot" / "usr" / "bin"
    bindir.mkdir(parents=True)
    os.symlink(unfsd_program(), bindir / "unfsd")
    log = tmp_path / "unfsd.log"
    with open(log, "wb") as out:        # not a pipe: pseudo's server keeps its stderr
        r = subprocess.run(["pseudo", "-P", "/usr", str(bindir / "unfsd"), "-p", "-i",
                            str(pidfile), "-e", str(exports), "-n", str(port), "-m", str(port)],
                           env=pseudo_env(state), stdout=out, stderr=out, timeout=60)
    assert r.returncode == 0, log.read_text()
    assert "running under pseudo's LD_PRELOAD" in log.read_text()
    assert _wait_for(pidfile.exists)
    pid = int(pidfile.read_text())
    try:
        n = Nfs3.connect(port, cred=ROOT)
        root = n.mount(str(rootfs))
        check_image_attrs(n, root)
        etc = lookup_path(n, root, "etc")
        st, out = n.create(etc, "machine-id", mode=0o444)
        assert st == NFS3_OK and out["attrs"]["uid"] == 0
        assert n.setattr(out["fh"], uid=1000, gid=100)[0] == NFS3_OK
        assert n.mknod(lookup_path(n, root, "dev"), "ttyS9", NF3CHR, rdev=(4, 73),
                       mode=0o620)[0] == NFS3_OK
        u = Nfs3.connect(port, cred=USER)
        try:
            shadow = lookup_path(u, u.mount(str(rootfs)), "etc", "shadow")
            assert u.read(shadow, 0, 10)[0] == NFS3ERR_ACCES
        finally:
            u.close()
        n.close()
    finally:
        os.kill(pid, signal.SIGTERM)          # runqemu-export-rootfs stop
        assert _wait_for(lambda: not _pid_alive(pid), 15)
    stop_pseudo(state)
    db = PseudoDB(str(state))
    mid = rootfs / "etc" / "machine-id"
    row = db.row(os.fsencode(mid), os.lstat(mid).st_dev, os.lstat(mid).st_ino,
                 os.lstat(mid).st_mode)
    assert row is not None and (row.uid, row.gid, row.mode & 0o7777) == (1000, 100, 0o444)
    tty = rootfs / "dev" / "ttyS9"
    row = db.row(os.fsencode(tty), os.lstat(tty).st_dev, os.lstat(tty).st_ino,
                 os.lstat(tty).st_mode)
    assert row is not None and rdev_split(row.rdev) == (4, 73) and row.mode == 0o20620


PSEUDO_VIEW = r"""
import os, sys
root = sys.argv[1]
for d, dirs, files in os.walk(root):
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        st = os.lstat(p)
        print(os.path.relpath(p, root), oct(st.st_mode), st.st_uid, st.st_gid,
              os.major(st.st_rdev), os.minor(st.st_rdev), st.st_ino)
"""


def pseudo_view(rootfs, state) -> dict:
    """name -> (mode, uid, gid, major, minor, inode) as a program under pseudo sees it
    (what `pseudo ls -ln` shows); pseudo's server is stopped again afterwards."""
    r = subprocess.run(["pseudo", sys.executable, "-c", PSEUDO_VIEW, str(rootfs)],
                       env=pseudo_env(state), capture_output=True, text=True, timeout=60)
    stop_pseudo(state)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        name, mode, *nums = line.split()
        out[name] = (int(mode, 8), *(int(x) for x in nums))
    return out


def db_integrity(db) -> str:
    """PRAGMA integrity_check of a files.db, opened without a lock."""
    import sqlite3
    con = sqlite3.connect("file:%s?immutable=1" % db, uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def test_serve_pseudo_database_directly(yocto, tmp_path):
    """--pseudo STATEDIR: no preload; what the board changes is made through pseudo,
    so that after fastnfs stops pseudo's own view agrees with the board's, and a
    fastnfs started again serves it."""
    rootfs, state = yocto
    srv = FastnfsProcess(rootfs, ["--pseudo", str(state)]).start()
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(rootfs))
        check_image_attrs(n, root)
        etc, dev = lookup_path(n, root, "etc"), lookup_path(n, root, "dev")
        st, out = n.create(etc, "machine-id", mode=0o444)
        assert st == NFS3_OK and out["attrs"]["uid"] == 0
        fh = out["fh"]
        assert n.setattr(fh, uid=1000, gid=100)[0] == NFS3_OK
        assert n.getattr(fh)[1]["attrs"]["uid"] == 1000
        st, out = n.mknod(dev, "ttyS9", NF3CHR, rdev=(4, 73), mode=0o620)
        assert st == NFS3_OK and out["attrs"]["rdev"] == (4, 73)
        assert n.mknod(dev, "loop9", NF3BLK, rdev=(7, 9), mode=0o660)[0] == NFS3_OK
        assert n.setattr(lookup_path(n, root, "etc", "hostname"), mode=0o600)[0] == NFS3_OK
        assert n.rename(lookup_path(n, root, "bin"), "su", etc, "su.moved")[0] == NFS3_OK
        moved = n.getattr(lookup_path(n, root, "etc", "su.moved"))[1]["attrs"]
        assert (moved["uid"], moved["mode"]) == (0, 0o4755)
        assert n.remove(etc, "shadow")[0] == NFS3_OK
        assert n.link(lookup_path(n, root, "etc", "hostname"), etc, "hostname.link")[0] \
            == NFS3_OK
        assert n.rmdir(lookup_path(n, root, "home"), "user")[0] == NFS3_OK
        st, out = n.mkdir(root, "data", mode=0o750)
        assert st == NFS3_OK and out["attrs"]["uid"] == 0
        assert n.symlink(root, "data-link", "data")[0] == NFS3_OK
        seen = {name: n.getattr(lookup_path(n, root, *name.split("/")))[1]["attrs"]
                for name in ("etc/machine-id", "dev/ttyS9", "dev/loop9", "etc/hostname",
                             "etc/su.moved", "etc/hostname.link", "data", "data-link")}
        n.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
    assert db_integrity(state / "files.db") == "ok"
    # pseudo's own view, after fastnfs stopped: what the board saw
    view = pseudo_view(rootfs, state)
    for name, a in seen.items():
        mode, uid, gid, major, minor, _ino = view[name]
        assert (mode & 0o7777, uid, gid) == (a["mode"], a["uid"], a["gid"]), name
        assert (major, minor) == a["rdev"], name
    assert view["etc/machine-id"][:3] == (0o100444, 1000, 100)
    assert view["dev/ttyS9"][:5] == (0o20620, 0, 0, 4, 73)
    assert view["dev/loop9"][:5] == (0o60660, 0, 0, 7, 9)
    assert view["etc/hostname"][:3] == (0o100600, 0, 0)
    assert view["etc/hostname.link"][:3] == (0o100600, 0, 0)
    assert view["etc/su.moved"][:3] == (0o104755, 0, 0)
    assert view["data"][:3] == (0o40750, 0, 0)
    for gone in ("etc/shadow", "bin/su", "home/user"):
        assert gone not in view
    # a fastnfs started again serves the same
    srv2 = FastnfsProcess(rootfs, ["--pseudo", str(state)],
                          log_path=tmp_path / "fastnfs-again.log").start()
    try:
        n = Nfs3.connect(srv2.port, cred=ROOT)
        root = n.mount(str(rootfs))
        for name, a in seen.items():
            again = n.getattr(lookup_path(n, root, *name.split("/")))[1]["attrs"]
            assert (again["mode"], again["uid"], again["gid"], again["rdev"], again["type"]) \
                == (a["mode"], a["uid"], a["gid"], a["rdev"], a["type"]), name
        n.close()
    finally:
        srv2.stop()
    assert "Traceback" not in srv2.log()


def test_a_live_pseudo_server_is_stopped_before_files_db_is_read(yocto):
    """A pseudo server still holding files.db (in memory, unsaved) at fastnfs's
    start is asked to save and stop first: its latest owners are served."""
    rootfs, state = yocto
    r = subprocess.run(["pseudo", sys.executable, "-c",
                        "import os; os.chown(%r, 4343, 4343)" % str(rootfs / "etc" / "hostname")],
                       env=pseudo_env(state), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pid = int((state / "pseudo.pid").read_text().split()[0])
    assert _pid_alive(pid)               # the server lingers, files.db not saved yet
    srv = FastnfsProcess(rootfs, ["--pseudo", str(state)]).start()
    try:
        assert not _pid_alive(pid)
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(rootfs))
        assert n.getattr(lookup_path(n, root, "etc", "hostname"))[1]["attrs"]["uid"] == 4343
        n.close()
    finally:
        srv.stop()
    assert db_integrity(state / "files.db") == "ok"


def test_pseudo_database_rewritten_by_pseudo_is_seen(yocto):
    """A pseudo session (an opkg install, say) changes owners while fastnfs serves."""
    rootfs, state = yocto
    srv = FastnfsProcess(rootfs, ["--pseudo", str(state)]).start()
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(rootfs))
        fh = lookup_path(n, root, "etc", "hostname")
        assert n.getattr(fh)[1]["attrs"]["uid"] == 0
        r = subprocess.run(["pseudo", sys.executable, "-c",
                            "import os; os.chown(%r, 4242, 4242)" % str(rootfs / "etc" / "hostname")],
                           env=pseudo_env(state), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        stop_pseudo(state)
        deadline = time.monotonic() + 10
        while n.getattr(fh)[1]["attrs"]["uid"] != 4242:
            assert time.monotonic() < deadline, "the new owner never showed"
            time.sleep(0.2)
        n.close()
    finally:
        srv.stop()


def test_pseudo_changes_are_seen_by_every_connection_with_workers(yocto):
    """What one client changes under --pseudo lives in the server's memory until
    pseudo records it: every connection must see it, whichever worker took it
    (--pseudo serves from one process whatever --workers says)."""
    rootfs, state = yocto
    srv = FastnfsProcess(rootfs, ["--pseudo", str(state), "--workers", "2"]).start()
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(rootfs))
        hostname = lookup_path(n, root, "etc", "hostname")
        assert n.setattr(hostname, uid=1000, gid=100, mode=0o640)[0] == NFS3_OK
        seen = set()
        for _ in range(12):     # SO_REUSEPORT spreads new connections over the workers
            m = Nfs3.connect(srv.port, cred=ROOT)
            a = m.getattr(hostname)[1]["attrs"]
            seen.add((a["uid"], a["gid"], a["mode"]))
            m.close()
        assert seen == {(1000, 100, 0o640)}
        n.close()
    finally:
        srv.stop()
