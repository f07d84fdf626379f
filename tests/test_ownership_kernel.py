"""The kernel client in qemu on trees whose owners live in fakeroot or pseudo:
the board sees exactly what `fakeroot ls -ln` (or pseudo) shows, and what the
board changes is what fakeroot records."""

from __future__ import annotations

import os
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
