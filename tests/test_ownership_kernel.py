"""The kernel client in qemu on trees whose owners live in fakeroot or pseudo:
the board sees exactly what `fakeroot ls -ln` (or pseudo) shows, and what the
board changes is what fakeroot (or pseudo) records."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import NOBODY, require_vm
from test_fakeroot import ptx, start_ptxdist_nfsroot, stop  # noqa: F401  (fixture)
from test_pseudo import yocto  # noqa: F401  (fixture)
from vm import guest

pytestmark = pytest.mark.vm

# one line per entry: name, raw mode (hex), uid, gid, device major:minor (hex)
LIST = "find . | sort | while read -r f; do stat -c '%n %f %u %g %t:%T' \"$f\"; done"

BOARD_CHANGES = r'''
set -e
mknod dev/ttyUSB7 c 188 300
chown 1000:100 etc/hostname
chmod 4711 bin/sh
mkdir -m 700 root-only
echo board > root-only/file
ln -s ../etc/hostname bin/hostname-link
mkfifo dev/fifo2
'''


def listing(text: str) -> list:
    return sorted(line for line in text.splitlines() if line.startswith(("./", ". ")))


def test_ptxdist_fakeroot_nfsroot_with_the_kernel_client(ptx):  # noqa: F811
    require_vm()
    platform, nfsroot, bindir, tmp = ptx
    state = tmp / "fakeroot.state"
    srv = start_ptxdist_nfsroot(platform, nfsroot, bindir, tmp, state)
    try:
        res = guest.run("echo BEFORE; %s; echo CHANGES; %s; echo AFTER; %s"
                        % (LIST, BOARD_CHANGES.replace("\n", ";").strip(";"), LIST),
                        nfs_port=srv.port, export="/root", timeout=300)
    finally:
        stop(srv, state)
    assert res.rc == 0, res.describe()
    out = res.output
    before = listing(out.split("BEFORE", 1)[1].split("CHANGES", 1)[0])
    after = listing(out.split("AFTER", 1)[1])
    # the permission script's records, as the board saw them
    assert ". 41ed 0 0 0:0" in before
    assert "./dev/console 2180 0 5 5:1" in before         # c 0600
    assert "./dev/big 61a4 0 0 f0:12c" in before          # block 240:300, not cut to 8 bits
    assert "./etc/shadow 81a0 0 42 0:0" in before
    assert "./bin/busybox 89ed 0 0 0:0" in before        # 04755
    # what fakeroot recorded of the board's changes: exactly the board's view
    code = ("import subprocess,sys; sys.exit(subprocess.call(['sh','-c',%r], cwd=%r))"
            % (LIST, str(nfsroot)))
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", "fakeroot", "-i", str(state), "--",
                        sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert listing(r.stdout) == after
    assert "./dev/ttyUSB7 21a4 0 0 bc:12c" in after
    assert "./etc/hostname 81a4 1000 100 0:0" in after
    assert os.lstat(nfsroot / "etc" / "hostname").st_uid == NOBODY   # the disk is the user's


def test_pseudo_database_with_the_kernel_client(yocto):  # noqa: F811
    """`fastnfs serve ROOTFS --pseudo STATEDIR` against what pseudo itself reports."""
    require_vm()
    from conftest import FastnfsProcess
    rootfs, state = yocto
    srv = FastnfsProcess(rootfs, ["--pseudo", str(state)]).start()
    try:
        res = guest.run("echo LIST; " + LIST, nfs_port=srv.port, export=str(rootfs),
                        timeout=300)
    finally:
        srv.stop()
    assert res.rc == 0, res.describe()
    seen = listing(res.output.split("LIST", 1)[1])
    from test_pseudodb import pseudo_env
    r = subprocess.run(["pseudo", "sh", "-c", LIST], cwd=str(rootfs), env=pseudo_env(state),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert listing(r.stdout) == seen
    assert "./bin/su 89ed 0 0 0:0" in seen and "./dev/big 2180 0 0 f0:12c" in seen


# every entry in one process (a stat per entry would fork thousands of times in the guest)
LIST_ALL = ("find . -print0 | xargs -0 stat -c '%n %f %u %g %t:%T'")


def test_runqemu_on_a_debian_tree_with_the_kernel_client(public_dir):
    """runqemu-export-rootfs's exact invocation, as an ordinary user, on the Debian
    minbase tree unpacked by `pseudo tar -x` (runqemu-extract-sdk): the kernel
    client sees exactly pseudo's view of every entry, and what guest root
    changes is pseudo's view after the server stops."""
    require_vm()
    if os.geteuid() != 0 or not shutil.which("pseudo") or not shutil.which("setpriv"):
        if os.environ.get("FASTNFS_REQUIRE_ALL") == "1":
            pytest.fail("needs root, pseudo and setpriv (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("needs root, pseudo and setpriv")
    from test_debian_boot import rootfs_tar
    from test_pseudodb import pseudo_env
    from test_unfsd_dropin import _pid_alive, _wait_for, free_port, unfsd_program
    from fastnfs.backends.pseudowriter import server_alive
    tar, _ = rootfs_tar()
    rootfs = public_dir / "qemux86-64"
    state = public_dir / "qemux86-64.pseudo_state"      # runqemu-extract-sdk's choice
    sdk = public_dir / ".runqemu-sdk"
    bindir = public_dir / "native-sysroot" / "usr" / "bin"
    for d in (rootfs, state, sdk, bindir):
        d.mkdir(parents=True)
    os.symlink(unfsd_program(), bindir / "unfsd")
    exports = sdk / "exports0"
    exports.write_text('"%s" (rw,no_root_squash,no_all_squash,insecure)\n' % rootfs)
    subprocess.run(["chown", "-R", "%d:%d" % (NOBODY, NOBODY), str(public_dir)], check=True)
    as_user = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    env = dict(pseudo_env(state), HOME=str(public_dir),
               PATH="%s:%s:/usr/sbin:/usr/bin:/sbin:/bin" % (bindir,
                                                             os.path.dirname(sys.executable)))

    def pseudo_stop():
        subprocess.run(as_user + ["pseudo", "-S"], env=env, cwd="/", capture_output=True)
        assert _wait_for(lambda: server_alive(str(state)) is None, 60), "pseudo did not stop"

    with open(tar, "rb") as f:
        r = subprocess.run(as_user + ["pseudo", "tar", "-C", str(rootfs), "--numeric-owner",
                                      "-xpf", "-"], stdin=f, env=env, cwd="/",
                           capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    pseudo_stop()
    port = free_port()
    pidfile = sdk / "nfs0.pid"
    log = public_dir / "unfsd.log"
    with open(log, "wb") as out:        # not a pipe: pseudo's server keeps its stderr
        r = subprocess.run(as_user + ["pseudo", "-P", "/usr", str(bindir / "unfsd"), "-p",
                                      "-i", str(pidfile), "-e", str(exports), "-n", str(port),
                                      "-m", str(port)],
                           env=env, cwd="/", stdout=out, stderr=out, timeout=60)
    assert r.returncode == 0, log.read_text()
    assert _wait_for(pidfile.exists), log.read_text()
    pid = int(pidfile.read_text())
    try:
        res = guest.run("echo =BEFORE=; %s; echo =CHANGES=; %s; echo =AFTER=; %s"
                        % (LIST_ALL, BOARD_CHANGES.replace("\n", ";").strip(";"), LIST_ALL),
                        nfs_port=port, export=str(rootfs), timeout=900)
    finally:
        os.kill(pid, signal.SIGTERM)          # runqemu-export-rootfs stop
        assert _wait_for(lambda: not _pid_alive(pid), 15)
    assert res.rc == 0, res.describe()
    pseudo_stop()
    out = res.output
    # marker lines of their own: bash's doc has a file named CHANGES.gz
    lines = [line.strip() for line in out.splitlines()]
    b, c, a = (lines.index(m) for m in ("=BEFORE=", "=CHANGES=", "=AFTER="))
    before = listing("\n".join(lines[b:c]))
    after = listing("\n".join(lines[a:]))
    assert len(before) > 7000
    assert "./etc/shadow 81a0 0 42 0:0" in before          # 0640 root:shadow, as in the tarball
    r = subprocess.run(as_user + ["pseudo", "sh", "-c", LIST_ALL], cwd=str(rootfs), env=env,
                       capture_output=True, text=True)
    pseudo_stop()
    assert r.returncode == 0, r.stderr[-3000:]
    assert listing(r.stdout) == after
    assert "./dev/ttyUSB7 21a4 0 0 bc:12c" in after
    assert "./etc/hostname 81ed 1000 100 0:0" in after      # 0755 in the tarball
    assert os.lstat(rootfs / "etc" / "hostname").st_uid == NOBODY   # the disk is the user's
