"""Board farms with the real Linux NFS client: EXPORT@b1 and EXPORT@b2 in a qemu guest.

One guest mounts board b1 (on /mnt) and board b2 (on /mnt2), changes b1 the
way a booted root is changed (write, append, chmod, chown, mknod, rename,
unlink, rmdir, hard links, a renamed base directory) and checks that b2 and
the base see none of it; a second guest mounts b1 again after a server
restart, and a third after `boards reset`; another guest keeps a board
mounted while it is reset.  The last test boots two Debians (systemd) at once
from one virtfs base, each board as its own NFS root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from conftest import FastnfsProcess
from test_boards import make_base, tree_digest
from test_debian_boot import vm_ok  # noqa: F401  (a fixture)
from vm import guest

pytestmark = pytest.mark.vm

CHECK_FN = r'''
fails=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fails=$((fails+1)); fi; }
'''

BOARD_OPS = CHECK_FN + r'''
mkdir -p /mnt2
check mount -t nfs -o vers=3,proto=tcp,port=@PORT@,mountport=@PORT@,nolock,addr=@ADDR@ @ADDR@:@BASE@@b2 /mnt2
cd /mnt
ino=$(stat -c %i etc/hostname)
echo board1 > etc/hostname
check test "$(cat etc/hostname)" = board1
check test "$(stat -c %i etc/hostname)" = "$ino"
echo more >> etc/passwd
check chmod 0600 etc/passwd
check chown 1234:99 etc/passwd
check test "$(stat -c %u:%g:%a etc/passwd)" = 1234:99:600
check mknod dev-console c 5 1
check test -c dev-console
check mv var/log/old.log var/log/old.log.1
check rm opt/app/data/x
check rmdir opt/app/data
check mv opt/app app2
check test "$(cat app2/main.py)" = "print('hi')"
check test ! -e opt/app
echo x >> bin/busybox
check test "$(stat -c %i bin/busybox)" = "$(stat -c %i bin/sh)"
check test "$(tail -c 2 bin/sh)" = x
mkdir -p new/dir && echo n > new/dir/f
check test "$(cat new/dir/f)" = n
check test "$(ls many | wc -l)" = 120
ls -la / >/dev/null
sync
cd /mnt2
check test "$(cat etc/hostname)" = base
check test "$(stat -c %a etc/passwd)" != 600
check test ! -e dev-console
check test -e var/log/old.log
check test -e opt/app/data/x
check test ! -e app2
check test ! -e new
echo b2 > etc/hostname
check test "$(cat /mnt/etc/hostname)" = board1
cd /
umount /mnt2
echo "failures: $fails"
exit $fails
'''

AGAIN = CHECK_FN + r'''
check test "$(cat etc/hostname)" = board1
check test -c dev-console
check test "$(cat app2/main.py)" = "print('hi')"
check test "$(cat new/dir/f)" = n
check test ! -e opt/app
echo "failures: $fails"
exit $fails
'''

AFTER_RESET = CHECK_FN + r'''
check test "$(cat etc/hostname)" = base
check test ! -e dev-console
check test -e opt/app/main.py
check test ! -e app2
check test ! -e new
echo "failures: $fails"
exit $fails
'''


def test_two_boards_from_a_guest(kit, tmp_path):
    base = tmp_path / "rootfs"
    make_base(base)
    before = tree_digest(base)
    srv = FastnfsProcess(base, ["--boards", str(tmp_path / "boards")]).start()
    try:
        script = (BOARD_OPS.replace("@PORT@", str(srv.port))
                  .replace("@ADDR@", guest.SERVER_ADDR).replace("@BASE@", str(base)))
        res = guest.run(script, nfs_port=srv.port, export="%s@b1" % base, timeout=600,
                        mem=384)
        fails = [ln for ln in res.output.splitlines() if ln.startswith("FAIL")]
        assert res.rc == 0 and not fails, res.describe()
        srv.restart()
        res = guest.run(AGAIN, nfs_port=srv.port, export="%s@b1" % base, timeout=600,
                        mem=384)
        fails = [ln for ln in res.output.splitlines() if ln.startswith("FAIL")]
        assert res.rc == 0 and not fails, res.describe()
        # reset while the server runs: the board boots the base again
        r = subprocess.run([sys.executable, "-m", "fastnfs", "boards", "reset", "b1",
                            "--boards", str(tmp_path / "boards")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        res = guest.run(AFTER_RESET, nfs_port=srv.port, export="%s@b1" % base, timeout=600,
                        mem=384)
        fails = [ln for ln in res.output.splitlines() if ln.startswith("FAIL")]
        assert res.rc == 0 and not fails, res.describe()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]
    assert tree_digest(base) == before
    assert os.path.isdir(tmp_path / "boards" / "b1" / "upper")


def test_two_debian_boards_boot_from_one_base(vm_ok, tmp_path):
    """The farm's case: two real Debians (systemd) boot at once with BASE@deb1
    and BASE@deb2 as their NFS roots over one virtfs base, served by an
    ordinary user; what each writes lands in its own layer, the base is
    unchanged."""
    import tempfile
    from pathlib import Path

    import test_debian_boot as deb

    tar, _built = deb.rootfs_tar()
    run_as, run_env, note = deb.unprivileged_python()
    owner = (deb.NOBODY, deb.NOBODY)
    top = Path(tempfile.mkdtemp(prefix="fastnfs-boards-debian-", dir="/tmp"))
    os.chmod(top, 0o755)
    os.chown(top, *owner)
    base = top / "root"
    boards = top / "boards"
    srv = None
    try:
        cmd = (run_as or [sys.executable]) + ["-m", "fastnfs", "virtfs", "import", "-q"] + (
            [] if run_as else ["--owner", "%d:%d" % owner]) + [str(tar), str(base)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd="/",
                           env=dict(os.environ, **run_env))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        deb.add_file(base, "usr/local/sbin/fnfs-check", deb.CHECK_SCRIPT, 0o755, owner)
        deb.add_file(base, "etc/systemd/system/fnfs-check.service", deb.CHECK_UNIT, 0o644,
                     owner)
        deb.add_dirs(base / "etc/systemd/system/multi-user.target.wants", owner)
        deb.add_symlink(base, "etc/systemd/system/multi-user.target.wants/fnfs-check.service",
                        "/etc/systemd/system/fnfs-check.service", owner)
        boards.mkdir()
        os.chown(boards, *owner)
        before = tree_digest(base)
        args = ["--virtfs", "--boards", str(boards)]
        srv = deb.serve_as(run_as, run_env, base, args, tmp_path)
        # two boards boot at once from the same base, each into its own layer
        results = {}

        def boot(i):
            results[i] = guest.run(
                "exec /sbin/init", nfs_port=srv.port, export="%s@deb%d" % (base, i),
                mode="nfsroot", timeout=900, mem=512, until=deb.DONE, vm_id=i,
                kernel_args="systemd.show_status=1 systemd.mask=serial-getty@ttyS0.service")

        threads = [threading.Thread(target=boot, args=(i,)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in (1, 2):
            res = results[i]
            console = deb._ANSI.sub("", res.console)
            assert res.ok, "guest %d did not get to the check:\n%s\n%s" % (
                i, res.failure, "\n".join(console.splitlines()[-60:]))
            for needle in ("Kernel panic", "Stale file handle", "Input/output error"):
                assert needle not in console, "\n".join(
                    ln for ln in console.splitlines() if needle in ln)
        srv.stop()
        assert "Traceback" not in srv.log(), srv.log()[-4000:]
        # what each board wrote is in its layer, not in the base
        for i in (1, 2):
            assert (boards / ("deb%d" % i) / "upper" / deb.LIST).is_file()
        assert not (base / deb.LIST).exists()
        id1 = (boards / "deb1" / "upper" / "etc" / "machine-id")
        id2 = (boards / "deb2" / "upper" / "etc" / "machine-id")
        if id1.exists() and id2.exists():
            assert id1.read_text() != id2.read_text()   # each board its own identity
        assert tree_digest(base) == before
        print("board layer after a systemd boot: %d entries" % sum(
            len(fs) + len(ds) for _d, ds, fs in os.walk(boards / "deb1" / "upper")))
    finally:
        if srv is not None:
            srv.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", str(top)])


RESET_WHILE_MOUNTED = CHECK_FN + r'''
echo made > made-by-board
echo board > etc/hostname
mkdir newdir
check test "$(cat etc/hostname)" = board
exec 3<made-by-board
echo "READY-FOR-RESET"
i=0
while [ "$(cat etc/hostname 2>/dev/null)" != base ] && [ $i -lt 100 ]; do
    sleep 0.3; i=$((i+1))
done
check test "$(cat etc/hostname)" = base
check test ! -e made-by-board
check test ! -e newdir
# the board's handle of a file that went with the layer is stale now
if cat <&3 >/dev/null 2>/tmp/err; then echo "FAIL read of a reset file succeeded"; fi
check grep -qi stale /tmp/err
exec 3<&-
echo again > made-by-board
check test "$(cat made-by-board)" = again
echo "failures: $fails"
exit $fails
'''


def test_reset_while_the_kernel_has_it_mounted(kit, tmp_path):
    base = tmp_path / "rootfs"
    make_base(base)
    boards = tmp_path / "boards"
    srv = FastnfsProcess(base, ["--boards", str(boards)]).start()
    done = []

    def echo(line):
        if "READY-FOR-RESET" in line and not done:
            r = subprocess.run([sys.executable, "-m", "fastnfs", "boards", "reset", "r1",
                                "--boards", str(boards)], capture_output=True, text=True,
                               timeout=60)
            done.append(r)

    try:
        res = guest.run(RESET_WHILE_MOUNTED, nfs_port=srv.port, export="%s@r1" % base,
                        mount_opts="noac,lookupcache=none", timeout=600, mem=384, echo=echo)
        assert done and done[0].returncode == 0, done
        fails = [ln for ln in res.output.splitlines() if ln.startswith("FAIL")]
        assert res.rc == 0 and not fails, res.describe()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]
