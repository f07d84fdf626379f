"""Board farms with the real Linux NFS client: EXPORT@b1 and EXPORT@b2 in a qemu guest.

One guest mounts board b1 (on /mnt) and board b2 (on /mnt2), changes b1 the
way a booted root is changed (write, append, chmod, chown, mknod, rename,
unlink, rmdir, hard links, a renamed base directory) and checks that b2 and
the base see none of it; a second guest mounts b1 again after a server
restart.
"""

from __future__ import annotations

import os

import pytest

from conftest import FastnfsProcess
from test_boards import make_base, tree_digest
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
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]
    assert tree_digest(base) == before
    assert os.path.isdir(tmp_path / "boards" / "b1" / "upper")
