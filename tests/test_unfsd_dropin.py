"""`fastnfs-unfsd` as a drop-in for unfsd: the exact command lines ptxdist and Yocto use.

* ptxdist (scripts/lib/ptxd_make_nfsd.sh, `ptxdist nfsroot`) writes
  ``/ (rw,no_root_squash)`` (older releases: ``/<basename> (rw,no_root_squash)``)
  into a temporary exports file and runs, through PATH,
  ``UNFS_BASE="$(dirname NFSROOT)" unfsd -e EXPORTS -n PORT -m PORT -p -d`` (plus
  ``-V`` with PTXCONF_SETUP_NFS_VIRTFS); boards mount ``/<basename of NFSROOT>``.
  No ``insecure``: the export is secure, clients come from reserved ports.
* Yocto (scripts/runqemu-export-rootfs) writes
  ``DIR (rw,no_root_squash,no_all_squash,insecure)`` and runs
  ``$OECORE_NATIVE_SYSROOT/usr/bin/unfsd -p -i PIDFILE -e EXPORTS -n NFSD_PORT -m MOUNTD_PORT``
  (it detaches), and stops it with ``kill $(cat PIDFILE)``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
from pathlib import Path

import pytest

from conftest import require, wait_for
from rpcclient import MNT3_OK, NFS3_OK, AuthSys
from test_exports_e2e import (MNT3ERR_ACCES, ROOT, ServerProcess, _check_no_traceback, connect,
                              lookup_path, owner)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (reserved ports)")


def unfsd_program() -> str:
    """The installed console script of this interpreter (not a pyenv shim)."""
    name = "fastnfs-unfsd"
    cand = os.path.join(sysconfig.get_path("scripts"), name)
    if os.access(cand, os.X_OK):
        return cand
    found = shutil.which(name)
    if found is None:
        pytest.skip("fastnfs-unfsd is not installed (pip install -e .)")
    return found


@pytest.fixture
def unfsd_on_path(tmp_path):
    """A PATH whose first directory holds a symlink named `unfsd` to fastnfs-unfsd."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(unfsd_program(), bindir / "unfsd")
    return str(bindir) + os.pathsep + os.environ.get("PATH", "")


def free_port() -> int:
    """A port free for both TCP and UDP right now."""
    for _ in range(50):
        t = socket.socket()
        t.bind(("0.0.0.0", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("0.0.0.0", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def run_unfsd(*args, env=None, timeout=30) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([unfsd_program(), *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def libnfs_ls(path: str, nfsport: int, mountport: int) -> subprocess.CompletedProcess:
    require("nfs-ls")
    url = "nfs://127.0.0.1%s?nfsport=%d&mountport=%d&version=3" % (path, nfsport, mountport)
    return subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=60)


def libnfs_cat(path: str, nfsport: int, mountport: int) -> subprocess.CompletedProcess:
    require("nfs-cat")
    url = "nfs://127.0.0.1%s?nfsport=%d&mountport=%d&version=3" % (path, nfsport, mountport)
    return subprocess.run(["nfs-cat", url], capture_output=True, timeout=60)


def make_rootfs(nfsroot: Path) -> None:
    (nfsroot / "etc").mkdir(parents=True)
    (nfsroot / "etc" / "hostname").write_text("ptxdist-board\n")
    (nfsroot / "bin").mkdir()
    (nfsroot / "bin" / "sh").write_bytes(b"\x7fELF not really\n")
    os.chmod(nfsroot / "bin" / "sh", 0o755)
    os.symlink("/bin/sh", nfsroot / "init")


# ---------------------------------------------------------------------------
# ptxdist nfsroot

PTXDIST_LINES = {
    "current": "/ (rw,no_root_squash)\n",      # ptxdist today (client specs configurable)
    "older": "/root (rw,no_root_squash)\n",    # ptxdist before the client specifications
}


@pytest.mark.parametrize("style", list(PTXDIST_LINES))
@pytest.mark.parametrize("virtfs", [False, True], ids=["plain", "-V"])
def test_ptxdist_nfsroot(tmp_path, unfsd_on_path, style, virtfs):
    platform = tmp_path / "platform-board"
    nfsroot = platform / "root"
    make_rootfs(nfsroot)
    tempdir = tmp_path / "ptxdist-tmp"
    tempdir.mkdir()
    exports = tempdir / "exports"
    exports.write_text(PTXDIST_LINES[style])
    port = free_port()
    # ptxdist's exact shell line, `unfsd` found on PATH
    script = ('UNFS_BASE="$(dirname "$NFSROOT")" unfsd -e "$EXPORTS" -n $PORT -m $PORT -p -d'
              + (" -V" if virtfs else ""))
    env = dict(os.environ, PATH=unfsd_on_path, NFSROOT=str(nfsroot), EXPORTS=str(exports),
               PORT=str(port))
    srv = ServerProcess(["bash", "-c", script], tmp_path / "unfsd.log", env=env)
    srv.start()
    try:
        assert srv.port == port and srv.mount_port == port
        # the board mounts /root (NFSROOT's basename), as root from a reserved port
        r = libnfs_ls("/root", port, port)
        assert r.returncode == 0, r.stderr
        names = {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}
        assert {"etc", "bin", "init"} <= names, r.stdout
        r = libnfs_cat("/root/etc/hostname", port, port)
        assert r.returncode == 0 and r.stdout == b"ptxdist-board\n", r.stderr
        # the export is secure (no `insecure` in ptxdist's line), as with unfsd
        n = connect(port)
        try:
            assert n.mnt("/root")[0] == MNT3ERR_ACCES
        finally:
            n.close()
        n = connect(port, privileged=True, cred=ROOT)
        try:
            root = n.mount("/root")
            st, a = n.getattr(root)
            assert st == NFS3_OK and a["attrs"]["fileid"] == os.stat(nfsroot).st_ino
            fh = lookup_path(n, root, "etc", "hostname")
            assert n.read(fh, 0, 100)[1]["data"] == b"ptxdist-board\n"
            # no_root_squash: the board's root writes as root
            st, _ = n.create(lookup_path(n, root, "etc"), "written-by-board", mode=0o644)
            assert st == NFS3_OK
        finally:
            n.close()
        assert (nfsroot / "etc" / "written-by-board").exists()
        if not virtfs:
            assert owner(nfsroot / "etc" / "written-by-board") == (0, 0)
        # nothing outside UNFS_BASE is served: the path in the file is relative to it
        n = connect(port, privileged=True)
        try:
            assert n.mnt(str(nfsroot))[0] != MNT3_OK
        finally:
            n.close()
    finally:
        srv.stop()
    _check_no_traceback(srv)


def test_ptxdist_virtfs_ownership(tmp_path, unfsd_on_path):
    """-V: owners and modes come from .virtfs_metadata, as ptxdist writes them."""
    platform = tmp_path / "platform-board"
    nfsroot = platform / "root"
    make_rootfs(nfsroot)
    os.chown(nfsroot / "bin" / "sh", 1000, 1000)
    meta = nfsroot / "bin" / ".virtfs_metadata"
    meta.mkdir()
    (meta / "sh").write_text("virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=%d\n" % (0o104755))
    exports = tmp_path / "exports"
    exports.write_text("/ (rw,no_root_squash)\n")
    port = free_port()
    env = dict(os.environ, PATH=unfsd_on_path, UNFS_BASE=str(platform))
    srv = ServerProcess(["unfsd", "-e", exports, "-n", port, "-m", port, "-p", "-d", "-V"],
                        tmp_path / "unfsd.log", env=env)
    srv.start()
    try:
        n = connect(port, privileged=True)
        try:
            root = n.mount("/root")
            st, a = n.getattr(lookup_path(n, root, "bin", "sh"))
            assert st == NFS3_OK
            assert (a["attrs"]["uid"], a["attrs"]["gid"], a["attrs"]["mode"] & 0o7777) == \
                (0, 0, 0o4755), a["attrs"]
        finally:
            n.close()
    finally:
        srv.stop()
    _check_no_traceback(srv)


# ---------------------------------------------------------------------------
# Yocto runqemu-export-rootfs

def _wait_for(pred, timeout=20.0):
    return wait_for(pred, timeout)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours would still count; the daemon is not our child (double fork)
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _mountd_answers(port: int) -> bool:
    try:
        n = connect(port, timeout=1.0)
    except OSError:
        return False
    try:
        return n.null()[0] == 0
    except Exception:
        return False
    finally:
        n.close()


@pytest.mark.parametrize("dirname", ["qemux86-64-nfsroot", "nfs root with spaces"])
def test_yocto_runqemu_export_rootfs(tmp_path, dirname):
    export_dir = tmp_path / dirname
    make_rootfs(export_dir)
    sdk = tmp_path / ".runqemu-sdk"
    sdk.mkdir()
    exports = sdk / "exports0"
    pidfile = sdk / "nfs0.pid"
    # runqemu-export-rootfs: echo "$NFS_EXPORT_DIR (rw,no_root_squash,no_all_squash,insecure)";
    # a path with blanks needs unfsd's quotes
    path = str(export_dir)
    exports.write_text(('"%s"' % path if " " in path else path)
                       + " (rw,no_root_squash,no_all_squash,insecure)\n")
    nfsd_port, mountd_port = free_port(), free_port()
    while mountd_port == nfsd_port:
        mountd_port = free_port()
    r = run_unfsd("-p", "-i", str(pidfile), "-e", str(exports), "-n", str(nfsd_port),
                  "-m", str(mountd_port))
    pid = None
    try:
        assert r.returncode == 0, r.stderr        # detached: the command returns
        assert _wait_for(pidfile.exists), "no pid file"
        pid = int(pidfile.read_text().strip())
        assert _pid_alive(pid)
        assert _wait_for(lambda: _mountd_answers(mountd_port))
        # MOUNT on MOUNTD_PORT, NFS on NFSD_PORT, from an unprivileged port (insecure)
        m = connect(mountd_port, cred=ROOT)
        n = connect(nfsd_port, cred=ROOT)
        try:
            st, res = m.mnt(path)
            assert st == MNT3_OK, st
            root = res["fh"]
            fh = lookup_path(n, root, "etc", "hostname")
            assert n.read(fh, 0, 100)[1]["data"] == b"ptxdist-board\n"
            st, _ = n.create(root, "from-qemu", mode=0o644)
            assert st == NFS3_OK
        finally:
            m.close()
            n.close()
        assert owner(export_dir / "from-qemu") == (0, 0)     # no_root_squash
        if " " not in path:
            r = libnfs_ls(path, nfsd_port, mountd_port)
            assert r.returncode == 0 and "etc" in r.stdout.split(), r.stderr
        # runqemu-export-rootfs stop: kill `cat $NFSPID`
        os.kill(pid, signal.SIGTERM)
        assert _wait_for(lambda: not _pid_alive(pid), 15), "still running after SIGTERM"
        assert _wait_for(lambda: not pidfile.exists(), 5), "pid file left behind"
        pid = None
    finally:
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------
# the other options

def test_T_checks_the_exports_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    good = tmp_path / "good"
    good.write_text("%s (rw,no_root_squash,insecure)\n/ (rw,no_root_squash)\n" % d)
    r = run_unfsd("-T", "-e", str(good))
    assert r.returncode == 0, r.stderr
    assert "2 exports OK" in r.stdout
    bad = tmp_path / "bad"
    bad.write_text("# comment\n\n%s (rw,no_root_squash,insecure\n" % d)
    r = run_unfsd("-T", "-e", str(bad))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert re.search(re.escape(str(bad)) + r":3:\d+: ", r.stderr), r.stderr
    r = run_unfsd("-e", str(bad), "-T")           # option order does not matter
    assert r.returncode == 1
    r = run_unfsd("-T", "-e", str(tmp_path / "missing"))
    assert r.returncode == 1 and str(tmp_path / "missing") in r.stderr


def test_h_prints_usage():
    r = run_unfsd("-h")
    assert r.returncode == 0
    for opt in ("-e", "-i", "-n", "-m", "-p", "-d", "-u", "-T", "-V"):
        assert re.search(r"^\s+%s\b" % re.escape(opt), r.stdout, re.M), opt
    assert "usage" in r.stdout.lower()


@pytest.mark.parametrize("args", [["-Z"], ["--bogus"], ["-n"], ["-e"], ["stray-argument"]])
def test_bad_command_lines_are_errors(args, tmp_path):
    r = run_unfsd(*args, "-p", "-d", timeout=15)
    assert r.returncode != 0, (args, r.stdout, r.stderr)
    assert r.stderr.strip(), args
    assert "ready:" not in r.stderr


def test_bad_exports_file_when_serving(tmp_path):
    bad = tmp_path / "exports"
    bad.write_text("/tmp 10.0.0.1/99(rw)\n")
    r = run_unfsd("-e", str(bad), "-n", str(free_port()), "-p", "-d", timeout=15)
    assert r.returncode != 0
    assert re.search(re.escape(str(bad)) + r":1:\d+: ", r.stderr), r.stderr


def test_u_picks_random_ports(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("random port\n")
    exports = tmp_path / "exports"
    exports.write_text("%s (rw,insecure)\n" % d)
    seen = set()
    for i in range(2):
        srv = ServerProcess([unfsd_program(), "-u", "-p", "-d", "-e", exports],
                            tmp_path / ("u%d.log" % i))
        srv.start()
        try:
            assert srv.port not in (0, 2049) and srv.port >= 1024
            seen.add(srv.port)
            n = connect(srv.mount_port)
            try:
                root = n.mount(str(d))
            finally:
                n.close()
            n = connect(srv.port)
            try:
                assert n.read(lookup_path(n, root, "f"), 0, 100)[1]["data"] == b"random port\n"
            finally:
                n.close()
        finally:
            srv.stop()
        _check_no_traceback(srv)
    assert len(seen) == 2


def test_t_is_tcp_only_and_l_binds(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    exports = tmp_path / "exports"
    exports.write_text("%s (rw,insecure)\n" % d)
    srv = ServerProcess([unfsd_program(), "-u", "-t", "-l", "127.0.0.1", "-p", "-d",
                         "-e", exports], tmp_path / "t.log")
    srv.start()
    try:
        n = connect(srv.port)
        try:
            assert n.mnt(str(d))[0] == MNT3_OK
        finally:
            n.close()
        n = connect(srv.port, proto="udp", timeout=1.0)
        try:
            with pytest.raises(Exception):
                n.null()
        finally:
            n.close()
        # not listening on other addresses
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", srv.port), timeout=2).close()
    finally:
        srv.stop()
    _check_no_traceback(srv)


@pytest.mark.parametrize("spelling", [
    "absolute",
    "relative",
])
def test_exports_path_survives_detaching(tmp_path, spelling):
    os.chmod(tmp_path, 0o755)      # readable whoever the reloading thread runs as
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o777)
    exports = tmp_path / "exports"
    exports.write_text("%s (ro,insecure)\n" % d)
    pidfile = tmp_path / "pid"
    port = free_port()
    r = subprocess.run([unfsd_program(), "-p", "-i", str(pidfile), "-e",
                        "exports" if spelling == "relative" else str(exports),
                        "-n", str(port)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert _wait_for(pidfile.exists)
    pid = int(pidfile.read_text())
    try:
        assert _wait_for(lambda: _mountd_answers(port))
        n = connect(port, cred=AuthSys(1000, 1000))
        try:
            root = n.mount(str(d))
            assert n.create(root, "before", mode=0o644)[0] != NFS3_OK
            exports.write_text("%s (rw,insecure)\n" % d)
            os.kill(pid, signal.SIGHUP)
            ok = _wait_for(lambda: n.create(root, "after", mode=0o644)[0] == NFS3_OK, 5)
            assert ok, "the SIGHUP did not re-read the exports file"
        finally:
            n.close()
    finally:
        os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not _pid_alive(pid), 10)
