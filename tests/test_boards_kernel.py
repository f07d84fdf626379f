"""Board farms with the real Linux NFS client: EXPORT@b1 and EXPORT@b2 in a qemu guest.

One guest mounts board b1 (on /mnt) and board b2 (on /mnt2), changes b1 the
way a booted root is changed (write, append, chmod, chown, mknod, rename,
unlink, rmdir, hard links, a renamed base directory) and checks that b2 and
the base see none of it, then reads both back after the server (two workers)
was killed with SIGKILL and started again on its ports; a second guest mounts b1 again after a server
restart, and a third after `boards reset`; another guest keeps a board
mounted while it is reset.  The last test boots two Debians (systemd) at once
from one virtfs base, each board as its own NFS root.
"""

from __future__ import annotations

import os
import signal
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
# the server is killed (SIGKILL) and started again on its ports, both boards mounted
dd if=/dev/urandom of=/tmp/blob bs=1k count=700 2>/dev/null
sum=$(md5sum < /tmp/blob | cut -d' ' -f1)
cp /tmp/blob /mnt/blob1
cp /tmp/blob /mnt2/blob2
echo acked1 > /mnt/acked
echo acked2 > /mnt2/acked
sync
exec 4</mnt/etc/hostname
echo "READY-FOR-KILL"
sleep 8
check test "$(md5sum < /mnt/blob1 | cut -d' ' -f1)" = "$sum"
check test "$(md5sum < /mnt2/blob2 | cut -d' ' -f1)" = "$sum"
check test "$(cat /mnt/acked)" = acked1
check test "$(cat /mnt2/acked)" = acked2
check test "$(cat <&4)" = board1
exec 4<&-
echo after1 >> /mnt/acked 2>>/tmp/err
echo after2 > /mnt2/new-after 2>>/tmp/err
check mv /mnt/blob1 /mnt/blob1.moved
check mkdir /mnt2/dir-after
sync
check test "$(cat /mnt/acked)" = "$(printf 'acked1\nafter1')"
check test "$(cat /mnt2/new-after)" = after2
check test "$(ls /mnt/many | wc -l)" = 120
ls -la /mnt /mnt2 /mnt/app2 /mnt2/opt/app >/dev/null 2>>/tmp/err
check test "$(cat /mnt/etc/hostname)" = board1
check test "$(cat /mnt2/etc/hostname)" = b2
check test ! -s /tmp/err
cat /tmp/err 2>/dev/null
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
    """... with two workers, and a server killed and restarted in the middle."""
    base = tmp_path / "rootfs"
    make_base(base)
    before = tree_digest(base)
    srv = FastnfsProcess(base, ["--boards", str(tmp_path / "boards"), "--workers", "2"]).start()
    killed = []

    def echo(line):
        if "READY-FOR-KILL" in line and not killed:
            srv.stop(sig=signal.SIGKILL)
            srv.start(srv.port)
            killed.append(True)

    try:
        script = (BOARD_OPS.replace("@PORT@", str(srv.port))
                  .replace("@ADDR@", guest.SERVER_ADDR).replace("@BASE@", str(base)))
        res = guest.run(script, nfs_port=srv.port, export="%s@b1" % base, timeout=600,
                        mem=384, echo=echo)
        fails = [ln for ln in res.output.splitlines() if ln.startswith("FAIL")]
        assert killed and res.rc == 0 and not fails, res.describe()
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
    assert (tmp_path / "boards" / "b2" / "upper" / "new-after").read_text() == "after2\n"


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


# The basic and special operations of a connectathon-style run, written here,
# on a fresh board over a populated base (tests/test_boards.make_base).
CTHON_STYLE = CHECK_FN + r'''
cd /mnt
# create and remove many files; remove base files
mkdir t1
i=0; while [ $i -lt 300 ]; do : > t1/f$i; i=$((i+1)); done
check test "$(ls t1 | wc -l)" = 300
rm t1/f*
check test "$(ls t1 | wc -l)" = 0
check rmdir t1
for f in many/file-00*; do rm "$f"; done
check test "$(ls many | wc -l)" = 110
check test ! -e many/file-005-with-a-long-name
# mkdir/rmdir trees, new and base
i=0; while [ $i -lt 5 ]; do j=0; while [ $j -lt 5 ]; do
    mkdir -p tree/d$i/d$j; echo $i$j > tree/d$i/d$j/f; j=$((j+1)); done; i=$((i+1)); done
check test "$(find tree -type d | wc -l)" = 31
check test "$(cat tree/d3/d4/f)" = 34
check rm -r tree
check test ! -e tree
if rmdir var 2>/dev/null; then echo "FAIL rmdir of a non-empty base directory"; fi
check rm -r opt
check test ! -e opt
check mkdir opt
check test "$(ls opt | wc -l)" = 0
# lookups across the mount point
cd /mnt/var/log
check test "$(cd ../.. && pwd)" = /mnt
check test "$(cd ../../.. && pwd)" = /
check test -d ../../etc
cd /mnt
# setattr and getattr, new and base files
: > sa
for m in 0 600 644 755 4755 2755 1777 444 7777; do
    chmod $m sa; check test "$(stat -c %a sa)" = $m
done
check chmod 640 etc/passwd
check test "$(stat -c %a etc/passwd)" = 640
check chown 12:34 etc/hostname
check test "$(stat -c %u:%g etc/hostname)" = 12:34
check touch -t 200001010000 sa
check test "$(stat -c %Y sa)" = 946684800
check touch -t 200101010000 bin/busybox
check test "$(stat -c %Y bin/busybox)" = 978307200
check dd if=/dev/zero of=etc/hostname bs=1 seek=100 count=0 2>/dev/null
check test "$(stat -c %s etc/hostname)" = 100
# read and write large files, verified (also over a copied-up base file)
dd if=/dev/urandom of=/tmp/big bs=1M count=12 2>/dev/null
sum=$(md5sum < /tmp/big | cut -d' ' -f1)
check cp /tmp/big big
sync; echo 3 > /proc/sys/vm/drop_caches
check test "$(md5sum < big | cut -d' ' -f1)" = "$sum"
check dd if=/tmp/big of=bin/sh bs=4k seek=1 count=64 conv=notrunc 2>/dev/null
sync; echo 3 > /proc/sys/vm/drop_caches
check test "$(dd if=bin/sh bs=4k skip=1 count=64 2>/dev/null | md5sum | cut -d' ' -f1)" = "$(dd if=/tmp/big bs=4k count=64 2>/dev/null | md5sum | cut -d' ' -f1)"
check test "$(stat -c %i bin/sh)" = "$(stat -c %i bin/busybox)"
# readdir of a big directory, new and merged
mkdir bigdir
i=0; while [ $i -lt 700 ]; do : > bigdir/a-rather-long-file-name-number-$i; i=$((i+1)); done
check test "$(ls bigdir | wc -l)" = 700
check test "$(ls bigdir | sort -u | wc -l)" = 700
rm bigdir/a-rather-long-file-name-number-1*
check test "$(ls bigdir | wc -l)" = 589
i=0; while [ $i -lt 300 ]; do : > many/new-$i; i=$((i+1)); done
check test "$(ls many | wc -l)" = 410
check test "$(ls -i many | awk '{print $1}' | sort -u | wc -l)" = 410
# link and rename
echo a > l1
check ln l1 l2
check test "$(stat -c %h l1)" = 2
check mv l2 l3
check test "$(stat -c %h l1)" = 2
rm l1
check test "$(cat l3)" = a
check test "$(stat -c %h l3)" = 1
check ln etc/passwd pw-link
check test "$(stat -c %i pw-link)" = "$(stat -c %i etc/passwd)"
check mkdir ren
check mv var/log/old.log ren/old
check test "$(cat ren/old)" = old
check test ! -e var/log/old.log
# symlink and readlink
check ln -s /some/where/far sl
check test "$(readlink sl)" = /some/where/far
check test "$(readlink bin/ls)" = busybox
check ln -sfn etc sl
check test "$(readlink sl)" = etc
check test -f sl/passwd
# statfs
check test "$(stat -f -c %b /mnt)" -gt 0
check df /mnt
# special: a file removed while open stays readable (the client's silly rename)
echo silly > s1
exec 5<s1
rm s1
check test ! -e s1
check test "$(cat <&5)" = silly
exec 5<&-
exec 5<etc/hostname
rm etc/hostname
check test "$(head -c 0 <&5; wc -c <&5)" = 100
exec 5<&-
sleep 1
check test "$(ls -a | grep -c '^\.nfs')" = 0
check test "$(ls -a etc | grep -c '^\.nfs')" = 0
# special: chmod 000 of an open file, then write and close
exec 6>w0
check chmod 000 w0
echo data >&6
exec 6>&-
chmod 644 w0
check test "$(cat w0)" = data
# special: exclusive create
check sh -c 'set -C; echo x > excl'
if sh -c 'set -C; echo y > excl' 2>/dev/null; then echo "FAIL exclusive create of an existing file"; fi
check test "$(cat excl)" = x
# special: big offsets (past 4 GiB and 1 TiB)
check dd if=/dev/urandom of=sparse bs=1 count=1 seek=4294967296 2>/dev/null
check test "$(stat -c %s sparse)" = 4294967297
check dd if=/dev/zero of=sparse bs=1 count=1 seek=1099511627776 conv=notrunc 2>/dev/null
check test "$(stat -c %s sparse)" = 1099511627777
check test "$(dd if=sparse bs=1 skip=4294967200 count=16 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 00000000000000000000000000000000
# special: rename over an existing file, new and base
echo 1 > ra; echo 2 > rb
check mv ra rb
check test "$(cat rb)" = 1
check test ! -e ra
check mv rb etc/passwd
check test "$(cat etc/passwd)" = 1
check test "$(ls etc | grep -c passwd)" = 1
sync
echo "failures: $fails"
exit $fails
'''


def test_cthon_style_operations_on_a_board(kit, tmp_path):
    """Basic and special operations through the kernel client on a fresh board
    layer over a populated base: all pass, the base is unchanged."""
    base = tmp_path / "rootfs"
    make_base(base)
    before = tree_digest(base)
    srv = FastnfsProcess(base, ["--boards", str(tmp_path / "boards")]).start()
    try:
        res = guest.run(CTHON_STYLE, nfs_port=srv.port, export="%s@ct" % base, timeout=900,
                        mem=384)
        fails = [ln for ln in res.output.splitlines() if ln.startswith("FAIL")]
        assert res.rc == 0 and not fails, res.describe()
        # every check ran (the chmod loop's once per mode)
        oks = [ln for ln in res.output.splitlines() if ln.startswith("ok ")]
        assert len(oks) == CTHON_STYLE.count("\ncheck ") + 9, res.describe()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]
    assert tree_digest(base) == before
