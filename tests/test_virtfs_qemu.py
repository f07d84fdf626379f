"""One rootfs for QEMU and for NFS (issue #14): a tree QEMU wrote, changed over NFS,
read back by QEMU.

1. A qemu guest with ``-fsdev local,security_model=mapped-file`` on an empty
   directory builds a small rootfs: that is a tree QEMU wrote (its symlinks
   are files holding the target, with S_IFLNK metadata).
2. The tree is backed up with tar, restored by an ordinary user (nobody)
   and served by ``fastnfs serve --virtfs`` running as nobody; a second
   guest mounts it with the kernel NFS client and, as root, makes devices, a
   fifo, symlinks, a setuid file, a setgid directory owned by 1000:100, hard
   links, renames across directories and removals, then lists the tree.
3. fastnfs stops; a third guest mounts the tree over 9p (mapped-file again)
   and lists it the same way.  The two listings must agree line by line:
   type and mode, owner, group, link count, size, device numbers, symlink
   target.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from conftest import NOBODY, FastnfsProcess, start_servers_as_nobody
from fastnfs.virtfs.check import check_tree
from test_virtfs_e2e import META, get_meta

pytestmark = pytest.mark.vm

# what QEMU's guest writes first (as root, on a fresh mapped-file share)
QEMU_BUILD = r'''
set -e
chown 0:0 .
chmod 755 .
mkdir bin etc dev var tmp
chmod 1777 tmp
echo '#!/bin/sh' > bin/busybox
chmod 755 bin/busybox
ln -s busybox bin/sh
ln -s ../proc/mounts etc/mtab
echo vm > etc/hostname
echo passwd > etc/passwd
echo move-me > etc/moveme
echo remove-me > etc/removeme
echo old > etc/replaced
mkdir etc/conf.d etc/gone
echo c > etc/conf.d/c
echo g > etc/gone/g
mknod dev/null c 1 3
chmod 666 dev/null
mknod dev/console c 5 1
chown 0:5 dev/console
chmod 620 dev/console
echo done
'''

# what the kernel NFS client does, as root, while fastnfs serves the tree
NFS_CHANGES = r'''
set -e
chown 0:0 .
chmod 755 .
mknod dev/ttyX c 240 300
chmod 600 dev/ttyX
chown 0:5 dev/ttyX
(set -C; echo excl > etc/excl)
mknod dev/sda b 8 0
chmod 660 dev/sda
chown 0:6 dev/sda
mkfifo var/fifo
ln -s ../bin/busybox bin/ls
ln -s /etc/hostname etc/hn
echo suid > bin/suid
chmod 4755 bin/suid
mkdir srv
chown 1000:100 srv
chmod 2775 srv
echo in-sgid > srv/file
mkdir srv/sub
ln etc/passwd etc/passwd.hard
ln bin/sh bin/sh.hard
chown -h 1000:100 etc/hn
mv etc/moveme var/moved
mv etc/conf.d var/conf.d
echo new > tmp/new
mv tmp/new etc/replaced
rm etc/removeme
rm -r etc/gone
test "$(readlink bin/ls)" = ../bin/busybox
test "$(readlink bin/sh)" = busybox
echo changed
'''

# the listing both guests print: one line per entry, sorted
LISTING = r'''
echo "== listing"
find . | sort | while read -r p; do
    s=$(stat -c '%f %u %g %h %s %t %T' "$p")
    if [ -L "$p" ]; then t=$(readlink "$p" 2>/dev/null) || t="READLINK-FAILED"; else t=-; fi
    echo "$p $s $t"
done
echo "== end"
'''


def listing(res) -> list:
    out = res.output
    assert "== listing" in out and "== end" in out, res.describe()
    return out.split("== listing\n", 1)[1].split("== end", 1)[0].splitlines()


@pytest.fixture
def kit_9p():
    from conftest import require_vm
    from vm import guest
    require_vm()
    return guest.prepare(virtfs=True)


def test_tree_qemu_wrote_changed_over_nfs_reads_the_same_in_qemu(kit_9p, public_dir,
                                                                   monkeypatch, tmp_path):
    from vm import guest
    if os.getuid() != 0:
        pytest.skip("needs root: qemu writes the tree as root, fastnfs then serves it as nobody")
    if not shutil.which("tar"):
        pytest.skip("no tar to restore the tree with")
    wrote = public_dir / "qemu-wrote"
    wrote.mkdir()
    # 1. QEMU writes the tree
    r = guest.run(QEMU_BUILD, virtfs=str(wrote), timeout=240)
    assert r.rc == 0 and "done" in r.output, r.describe()
    st = os.lstat(wrote / "bin" / "sh")
    assert stat.S_ISREG(st.st_mode) and (wrote / "bin" / "sh").read_bytes() == b"busybox"
    assert stat.S_IFMT(get_meta(wrote / "bin", "sh")["mode"]) == stat.S_IFLNK
    # 2. backed up, restored by an ordinary user, served by fastnfs as that user
    archive = public_dir / "backup.tar"
    subprocess.run(["tar", "-C", str(wrote), "-cf", str(archive), "."], check=True)
    os.chmod(archive, 0o644)
    tree = public_dir / "rootfs"
    tree.mkdir()
    os.chown(tree, NOBODY, NOBODY)
    subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                    "tar", "-C", str(tree), "-xpf", str(archive)], check=True)
    assert os.lstat(tree / "bin" / "sh").st_uid == NOBODY
    start_servers_as_nobody(monkeypatch, tmp_path)
    srv = FastnfsProcess(tree, ["--virtfs"], log_path=public_dir / "fastnfs.log").start()
    try:
        nfs = guest.run(NFS_CHANGES + LISTING, nfs_port=srv.port, export=str(tree),
                        timeout=300)
    finally:
        srv.stop()
    log = srv.log()
    assert "new symlinks are written qemu-style" in log, log[-3000:]
    assert "Traceback" not in log and "WARNING" not in log, log[-3000:]
    assert nfs.rc == 0 and "changed" in nfs.output, nfs.describe()
    # 3. QEMU reads it back
    ninep = guest.run(LISTING, virtfs=str(tree), timeout=240)
    assert ninep.rc == 0, ninep.describe()
    a, b = listing(nfs), listing(ninep)
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(a) == len(b) and not diff, (
        "NFS view != QEMU view:\n" + "\n".join("nfs:  %s\n9p:   %s" % d for d in diff)
        + "\n--- nfs\n" + "\n".join(a) + "\n--- 9p\n" + "\n".join(b))
    assert "READLINK-FAILED" not in "\n".join(a + b)
    # on disk: everything QEMU needs
    for d, name in ((tree / "bin", "ls"), (tree / "etc", "hn")):
        st = os.lstat(d / name)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == NOBODY, name
        assert get_meta(d, name)["mode"] == stat.S_IFLNK | 0o777
    assert get_meta(tree / "dev", "ttyX")["rdev"] == os.makedev(240, 300) == 1110060
    assert get_meta(tree / "dev", "sda") == {"uid": 0, "gid": 6, "mode": stat.S_IFBLK | 0o660,
                                             "rdev": os.makedev(8, 0)}
    assert os.lstat(tree / "etc" / META / "passwd.hard").st_ino == \
        os.lstat(tree / "etc" / META / "passwd").st_ino
    assert not (tree / "etc" / META / "moveme").exists()
    assert not (tree / "etc" / META / "removeme").exists()
    assert not (tree / "etc" / META / "gone").exists() and not (tree / "etc" / "gone").exists()
    assert get_meta(tree / "var" / "conf.d", "c")["mode"] == stat.S_IFREG | 0o644
    assert os.lstat(tree / "bin" / META / "sh.hard").st_ino == \
        os.lstat(tree / "bin" / META / "sh").st_ino
    assert get_meta(tree, "srv") == {"uid": 1000, "gid": 100, "mode": stat.S_IFDIR | 0o2775}
    assert get_meta(tree, None) == {"uid": 0, "gid": 0, "mode": stat.S_IFDIR | 0o755}
    assert check_tree(tree) == []
    # the objects the issue names, as both saw them
    lines = {ln.split()[0]: ln.split()[1:] for ln in a}
    assert lines["."][:3] == ["41ed", "0", "0"]
    assert lines["./dev/ttyX"][:3] == ["2180", "0", "5"]             # S_IFCHR|0600
    assert lines["./dev/ttyX"][5:7] == ["f0", "12c"]                 # 240, 300 after chmod
    assert lines["./etc/excl"][0] == "81a4" and lines["./etc/excl"][4] == "5"
    assert lines["./dev/sda"][0] == "61b0" and lines["./dev/sda"][5:7] == ["8", "0"]
    assert lines["./bin/ls"][-1] == "../bin/busybox" and lines["./bin/sh"][-1] == "busybox"
    assert lines["./etc/hn"][-1] == "/etc/hostname" and lines["./etc/hn"][1:3] == ["1000", "100"]
    assert lines["./bin/sh.hard"][-1] == "busybox" and lines["./bin/sh.hard"][3] == "2"
    assert lines["./etc/replaced"][4] == "4" and "./var/conf.d/c" in lines
    assert lines["./bin/suid"][0] == "89ed"                       # S_IFREG|04755
    assert lines["./srv"][:3] == ["45fd", "1000", "100"]          # S_IFDIR|02775
    assert lines["./srv/file"][2] == "100" and lines["./srv/sub"][0] == "45ed"
    assert lines["./etc/passwd"][3] == "2" == lines["./etc/passwd.hard"][3]
    assert "./var/moved" in lines and "./etc/moveme" not in lines
    assert "./etc/removeme" not in lines and "./etc/gone" not in lines
    assert lines["./var/fifo"][0] == "11a4"
