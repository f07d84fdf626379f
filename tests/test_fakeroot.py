"""ptxdist's default nfsroot: the permission script and then unfsd, all piped into
`fakeroot --` as the unprivileged build user (scripts/lib/ptxd_make_nfsd.sh).

fastnfs-unfsd runs inside that fakeroot session: the board must see what the
permission script recorded (owners, set-id bits, devices with numbers above 8
bits), and what the board does must be recorded by fakeroot as if done locally.
`fakeroot -s STATE` (which ptxdist does not pass; it changes nothing else) lets
the test read fakeroot's records afterwards with `fakeroot -i STATE`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import NOBODY
from rpcclient import (NF3CHR, NF3FIFO, NFS3_OK, NFS3ERR_ACCES, AuthSys)
from test_exports_e2e import ServerProcess, connect, lookup_path
from test_unfsd_dropin import free_port, make_rootfs, unfsd_program

REQUIRE_ALL = os.environ.get("FASTNFS_REQUIRE_ALL") == "1"
ROOT = AuthSys(0, 0, machine=b"board")
USER = AuthSys(1000, 100, machine=b"board")

# what ptxd_dopermissions pipes into fakeroot for a few permission-file lines
PERMISSIONS = """\
chown 0:0 .
chown -R 0:0 etc bin dev
chown 0:42 etc/shadow
chmod 0640 etc/shadow
chmod 4755 bin/busybox
mknod dev/console c 5 1
chown 0:5 dev/console
chmod 0600 dev/console
mknod dev/big b 240 300
mknod dev/initctl p
"""


@pytest.fixture
def ptx(public_dir, monkeypatch):
    if os.geteuid() != 0 or not shutil.which("fakeroot") or not shutil.which("setpriv"):
        if REQUIRE_ALL:
            pytest.fail("needs root, fakeroot and setpriv (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("needs root, fakeroot and setpriv")
    probe = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                            "--clear-groups", sys.executable, "-c", "import fastnfs"],
                           capture_output=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip("this Python is not readable by uid %d" % NOBODY)
    platform = public_dir / "platform-board"
    nfsroot = platform / "root"
    make_rootfs(nfsroot)
    (nfsroot / "etc" / "shadow").write_text("root:*:1::::::\n")
    (nfsroot / "bin" / "busybox").write_bytes(b"\x7fELF busybox\n")
    (nfsroot / "dev").mkdir()
    bindir = public_dir / "bin"
    bindir.mkdir()
    os.symlink(unfsd_program(), bindir / "unfsd")
    tmp = public_dir / "ptxdist-tmp"
    tmp.mkdir()
    (tmp / "exports").write_text("/ (rw,no_root_squash,insecure)\n")
    subprocess.run(["chown", "-R", "%d:%d" % (NOBODY, NOBODY), str(public_dir)], check=True)
    return platform, nfsroot, bindir, tmp


def start_ptxdist_nfsroot(platform, nfsroot, bindir, tmp, state, workers=2) -> ServerProcess:
    port = free_port()
    # ptxd_make_nfsd: { permissions; exec unfsd } | fakeroot --  (as the build user)
    inner = "cd %s && %s && UNFS_BASE=\"$(dirname %s)\" exec unfsd -e %s -n %d -m %d -p -d" % (
        nfsroot, PERMISSIONS.replace("\n", " && ").rstrip(" &"), nfsroot, tmp / "exports",
        port, port)
    cmd = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
           "sh", "-c", "echo '%s' | fakeroot -s %s --" % (inner, state)]
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.path.dirname(sys.executable))
               + ":/usr/sbin:/usr/bin:/sbin:/bin", HOME=str(tmp))
    if workers != 2:
        env["FASTNFS_TEST_WORKERS"] = str(workers)
    srv = ServerProcess(cmd, tmp / "unfsd.log", env=env)
    return srv.start(timeout=30)


def fakeroot_listing(state, nfsroot) -> dict:
    """name -> (mode, uid, gid, major, minor) as `fakeroot -i STATE` reports them."""
    code = ("import os,sys\nroot=sys.argv[1]\n"
            "for d,ds,fs in os.walk(root):\n"
            "  for n in ds+fs:\n"
            "    p=os.path.join(d,n); st=os.lstat(p)\n"
            "    print(os.path.relpath(p,root), st.st_mode, st.st_uid, st.st_gid,"
            " os.major(st.st_rdev), os.minor(st.st_rdev))\n")
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", "fakeroot", "-i", str(state), "--",
                        sys.executable, "-c", code, str(nfsroot)],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        name, *nums = line.rsplit(" ", 5)
        out[name] = tuple(int(x) for x in nums)
    return out


def stop(srv, state) -> None:
    """Ctrl-C, as a ptxdist user stops `ptxdist nfsroot`: SIGINT to the whole
    foreground group; fakeroot's trap then stops faked, which saves STATE."""
    os.killpg(srv.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 20
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.stop()
    assert state.exists(), "faked saved no state:\n" + srv.log()


def test_board_sees_fakeroot_records_and_its_changes_are_recorded(ptx):
    platform, nfsroot, bindir, tmp = ptx
    state = tmp / "fakeroot.state"
    srv = start_ptxdist_nfsroot(platform, nfsroot, bindir, tmp, state)
    try:
        n = connect(srv.port, privileged=True, cred=ROOT)
        root = n.mount("/root")
        attrs = lambda fh: n.getattr(fh)[1]["attrs"]   # noqa: E731
        # what the permission script recorded, as the board sees it
        sh = attrs(lookup_path(n, root, "etc", "shadow"))
        assert (sh["uid"], sh["gid"], sh["mode"] & 0o7777) == (0, 42, 0o640)
        bb = attrs(lookup_path(n, root, "bin", "busybox"))
        assert (bb["uid"], bb["mode"] & 0o7777) == (0, 0o4755)
        con = attrs(lookup_path(n, root, "dev", "console"))
        assert (con["type"], con["rdev"], con["gid"], con["mode"] & 0o777) == \
            (NF3CHR, (5, 1), 5, 0o600)
        big = attrs(lookup_path(n, root, "dev", "big"))
        assert big["rdev"] == (240, 300)                 # unfsd would cut these to 8 bits
        assert attrs(lookup_path(n, root, "dev", "initctl"))["type"] == NF3FIFO
        assert attrs(root)["uid"] == 0
        # what the board does
        etc = lookup_path(n, root, "etc")
        dev = lookup_path(n, root, "dev")
        st, out = n.create(etc, "machine-id", mode=0o444)
        assert st == NFS3_OK and (out["attrs"]["uid"], out["attrs"]["gid"]) == (0, 0)
        mid = out["fh"]
        assert n.setattr(mid, uid=1000, gid=100)[0] == NFS3_OK
        assert n.setattr(mid, mode=0o2755)[0] == NFS3_OK
        st, out = n.mknod(dev, "ttyUSB9", NF3CHR, rdev=(188, 1000), mode=0o660)
        assert st == NFS3_OK, st
        assert n.mkdir(etc, "dir-by-root", mode=0o700)[0] == NFS3_OK
        assert n.symlink(etc, "link", "machine-id")[0] == NFS3_OK
        assert n.rename(etc, "hostname", etc, "hostname.renamed")[0] == NFS3_OK
        assert n.link(lookup_path(n, root, "bin", "busybox"), lookup_path(n, root, "bin"),
                      "sh.hard")[0] == NFS3_OK
        # permission checks against the recorded owners, not the disk's
        u = connect(srv.port, privileged=True, cred=USER)
        try:
            shadow = lookup_path(u, u.mount("/root"), "etc", "shadow")
            assert u.read(shadow, 0, 10)[0] == NFS3ERR_ACCES
            assert u.write(shadow, 0, b"x")[0] == NFS3ERR_ACCES
            assert u.create(lookup_path(u, u.mount("/root"), "etc", "dir-by-root"),
                            "nope")[0] == NFS3ERR_ACCES
        finally:
            u.close()
        n.close()
    finally:
        stop(srv, state)
    assert "Traceback" not in srv.log(), srv.log()
    assert "running under fakeroot's LD_PRELOAD" in srv.log()
    faked = fakeroot_listing(state, nfsroot)
    S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG = 0o020000, 0o040000, 0o120000, 0o100000
    assert faked["etc/machine-id"][:3] == (S_IFREG | 0o2755, 1000, 100)
    assert faked["dev/ttyUSB9"] == (S_IFCHR | 0o660, 0, 0, 188, 1000)
    assert faked["etc/dir-by-root"][:3] == (S_IFDIR | 0o700, 0, 0)
    assert faked["etc/link"][0] & 0o170000 == S_IFLNK and faked["etc/link"][1] == 0
    assert faked["etc/hostname.renamed"][1] == 0 and "etc/hostname" not in faked
    assert faked["bin/sh.hard"][:2] == (S_IFREG | 0o4755, 0)
    # on disk everything still belongs to the build user
    assert os.lstat(nfsroot / "etc" / "machine-id").st_uid == NOBODY
    assert not (nfsroot / "dev" / "ttyUSB9").is_char_device()
