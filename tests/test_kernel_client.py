"""fastnfs mounted by the real Linux kernel NFS client, in a qemu guest (TCG).

Each test boots Debian's kernel with a busybox initramfs (tests/vm/guest.py),
mounts the server over slirp (the guest reaches the host's loopback as
10.0.2.2, or with ipv6=True the host's ::1 as fec0::2) and runs a shell script
as guest root; the server runs as root here (as an ordinary user for the
op_chmod test on an unprivileged plain export).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import FastnfsProcess
from vm import guest

pytestmark = pytest.mark.vm


@pytest.fixture
def fastnfs(export_dir):
    """fastnfs as users run it: several worker processes on one port."""
    srv = FastnfsProcess(export_dir, ["--workers", "2"]).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


def run_guest(srv, script, *, proto="tcp", opts="", timeout=600, mem=384, ipv6=False,
              files=None):
    res = guest.run(script, nfs_port=srv.port, export=str(srv.export), proto=proto,
                    mount_opts=opts, timeout=timeout, mem=mem, ipv6=ipv6, files=files)
    return res


def opchmod_program(tmp_path) -> dict:
    """tests/vm/opchmod.c (cthon04's special/op_chmod sequence) built static for
    the guest, as guest.run's files argument."""
    out = tmp_path / "opchmod"
    src = os.path.join(os.path.dirname(__file__), "vm", "opchmod.c")
    r = subprocess.run(["gcc", "-static", "-O2", "-o", str(out), src],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no static C toolchain for the guest's opchmod: " + r.stderr[-300:])
    return {str(out): "opchmod"}


# as uid 65534 in a world-writable directory: the caller owns the file it chmods 000
OPCHMOD = r'''
mkdir -m 1777 pub
check opchmod pub/opchmod 65534
check test "$(stat -c %a pub/opchmod)" = 0
'''


def check_lines(res):
    """Every 'FAIL' line of the guest script, with the whole output on failure."""
    fails = [line for line in res.output.splitlines() if line.startswith("FAIL")]
    assert res.rc == 0 and not fails, res.describe()


CHECK_FN = r'''
fails=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fails=$((fails+1)); fi; }
'''

BASIC_OPS = CHECK_FN + r'''
check test "$(cat pre/hello.txt)" = "hello from the host"
echo one > f && check test "$(cat f)" = one
echo two >> f && check test "$(cat f)" = "$(printf 'one\ntwo')"
truncate -s 2 f && check test "$(cat f)" = on
truncate -s 10000 f && check test "$(stat -c %s f)" = 10000
check mkdir -p a/b/c d
check rmdir a/b/c
echo moved > a/b/m && check mv a/b/m d/m2
check test "$(cat d/m2)" = moved
check test ! -e a/b/m
check ln d/m2 hard
check test "$(stat -c %h d/m2)" = 2
check test "$(stat -c %i d/m2)" = "$(stat -c %i hard)"
check ln -s d/m2 sym
check test "$(readlink sym)" = d/m2
check test "$(cat sym)" = moved
check mknod fifo p
check test -p fifo
check mknod chardev c 4 64
check test -c chardev
check test "$(stat -c %t:%T chardev)" = 4:40
check chmod 0741 f
check test "$(stat -c %a f)" = 741
check chmod 4755 d/m2
check test "$(stat -c %a d/m2)" = 4755
check chown 1234:5678 f
check test "$(stat -c %u:%g f)" = 1234:5678
check touch -d "2001-02-03 04:05:06" f
check test "$(date -r f +%Y%m%d%H%M%S)" = 20010203040506
mkdir x y && echo z > x/z && check mv x y/
check test "$(cat y/x/z)" = z
check rm hard sym fifo
check rm -r y
check df .
df -k . | tail -1
echo "failures: $fails"
exit $fails
'''


def test_basic_operations_tcp(kit, fastnfs, tmp_path):
    (fastnfs.export / "pre").mkdir()
    (fastnfs.export / "pre" / "hello.txt").write_text("hello from the host")
    script = BASIC_OPS.replace('echo "failures', OPCHMOD + 'echo "failures', 1)
    res = run_guest(fastnfs, script, files=opchmod_program(tmp_path))
    check_lines(res)
    e = fastnfs.export
    st = os.lstat(e / "chardev")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 4 and os.minor(st.st_rdev) == 64
    st = os.lstat(e / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o741)
    assert time.gmtime(st.st_mtime)[:6] == (2001, 2, 3, 4, 5, 6)
    assert (e / "d" / "m2").read_text() == "moved\n"
    assert not (e / "hard").exists()
    # the kernel's lookups and attribute reads went through the Cython fast lane;
    # its writes, creates and renames are the general path's
    lane = _fast_lane(fastnfs)
    assert lane["answered"] > 0 and lane["declined"] > 0, lane


def test_op_chmod_on_an_unprivileged_plain_export(kit, monkeypatch, tmp_path, public_dir):
    """The server is an ordinary user owning the tree (and the files the guest
    makes): cthon04's op_chmod sequence, then guest root reads the 000 file."""
    from conftest import NOBODY, start_servers_as_nobody
    files = opchmod_program(tmp_path)
    start_servers_as_nobody(monkeypatch, tmp_path)
    export = public_dir / "export"
    export.mkdir()
    os.chown(export, NOBODY, NOBODY)
    srv = FastnfsProcess(export).start()
    try:
        res = run_guest(srv, CHECK_FN + OPCHMOD + r'''
check opchmod by-root
echo 3 > /proc/sys/vm/drop_caches
check test "$(cat by-root)" = "written after chmod 000"
check test "$(stat -c %a by-root)" = 0
''' + 'test "$fails" = 0\n', files=files)
    finally:
        srv.stop()
    check_lines(res)
    assert "opchmod: ok" in res.output
    assert os.lstat(export / "by-root").st_mode & 0o7777 == 0
    assert os.lstat(export / "by-root").st_uid == NOBODY
    assert "Traceback" not in srv.log()


def _stats(srv) -> dict:
    """`fastnfs stats --json` of the server's processes (published each second)."""
    time.sleep(1.5)
    r = subprocess.run([sys.executable, "-m", "fastnfs", "stats", "-n", str(srv.port), "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _fast_lane(srv) -> dict:
    """The server's fast-lane counts from `fastnfs stats --json`."""
    return _stats(srv)["fast_lane"]


def test_basic_operations_udp(kit_udp, fastnfs):
    (fastnfs.export / "pre").mkdir()
    (fastnfs.export / "pre" / "hello.txt").write_text("hello from the host")
    res = run_guest(fastnfs, "grep ' /mnt ' /proc/mounts\n" + BASIC_OPS, proto="udp",
                    opts="mountproto=udp")
    check_lines(res)
    mounts = res.output.splitlines()[0]
    assert "proto=udp" in mounts and "mountproto=udp" in mounts, mounts


BIG_DD = CHECK_FN + r'''
dd if=/dev/urandom of=/tmp/src bs=1M count=100 2>/dev/null
src=$(md5sum < /tmp/src | cut -d' ' -f1)
dd if=/tmp/src of=big bs=1M conv=fsync 2>/dev/null
rm /tmp/src
echo 3 > /proc/sys/vm/drop_caches
got=$(md5sum < big | cut -d' ' -f1)
echo "md5 $src $got"
check test "$src" = "$got"
exit $fails
'''


def test_dd_100mb_md5(kit, fastnfs):
    res = run_guest(fastnfs, BIG_DD, mem=512)
    check_lines(res)
    import hashlib
    src = [line.split()[1] for line in res.output.splitlines() if line.startswith("md5 ")][0]
    h = hashlib.md5()
    with open(fastnfs.export / "big", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    assert h.hexdigest() == src


def _perm_bits(text: str) -> int:
    """'-rw-r-x--x' -> 0o651 (no set-id bits are used here)."""
    bits = 0
    for ch in text[1:10]:
        bits = (bits << 1) | (ch != "-")
    return bits


def test_ls_laR_of_10000_files_matches_server(kit, fastnfs):
    e = fastnfs.export
    want = {}
    for i in range(100):
        d = e / ("dir%03d" % i)
        d.mkdir()
        for j in range(100):
            f = d / ("file%03d" % j)
            f.write_bytes(b"x" * (i + j))
            os.chmod(f, 0o600 + (j % 8))
            os.chown(f, 1000 + j, 2000 + i)
            want["dir%03d/file%03d" % (i, j)] = (i + j, 0o600 + (j % 8), 1000 + j, 2000 + i)
    res = run_guest(fastnfs, "ls -lanR .", timeout=1200)
    assert res.rc == 0, res.describe()
    got = {}
    cur = None
    for line in res.output.splitlines():
        if line.endswith(":") and line.startswith("./"):
            cur = line[2:-1]
            continue
        parts = line.split()
        if cur and len(parts) >= 9 and parts[0].startswith("-"):
            got["%s/%s" % (cur, parts[-1])] = (int(parts[4]), _perm_bits(parts[0]),
                                               int(parts[2]), int(parts[3]))
    assert got == want
    # a listing walk is lookups and attributes: the fast lane answers most of it
    lane = _fast_lane(fastnfs)
    assert lane["answered"] > lane["declined"], lane


def test_directory_of_5000_entries_listed_completely(kit, fastnfs):
    d = fastnfs.export / "many"
    d.mkdir()
    for i in range(5000):
        (d / ("entry-%05d-with-a-longer-name" % i)).touch()
    res = run_guest(fastnfs, "ls many | wc -l; ls many | sort | md5sum", timeout=900)
    assert res.rc == 0, res.describe()
    lines = res.output.split("\n")
    assert lines[0].strip() == "5000", res.describe()
    import hashlib
    names = "".join("entry-%05d-with-a-longer-name\n" % i for i in range(5000))
    assert hashlib.md5(names.encode()).hexdigest() in res.output


RESTART = CHECK_FN + r'''
mkdir -p keep/sub && echo before > keep/sub/file
cd keep/sub
exec 3< file
touch /mnt/ready-for-restart
# the host kills fastnfs now and starts it again; these block until it is back
while [ ! -e /mnt/restarted ]; do sleep 1; done
check test "$(cat file)" = before
check test "$(cat <&3)" = before
echo after > file2 && check test "$(cat file2)" = after
check ls -la /mnt/keep/sub
cd /mnt && check test -d keep/sub
echo "failures: $fails"
exit $fails
'''


def test_server_killed_and_restarted_while_mounted(kit, fastnfs):
    e = fastnfs.export
    done = threading.Event()

    def restarter():
        deadline = time.monotonic() + 600
        while not (e / "ready-for-restart").exists():
            if time.monotonic() > deadline or done.is_set():
                return
            time.sleep(0.2)
        import signal as sig
        fastnfs.stop(sig.SIGKILL)
        time.sleep(2)
        fastnfs.start(fastnfs.port)
        (e / "restarted").touch()

    t = threading.Thread(target=restarter, daemon=True)
    t.start()
    res = run_guest(fastnfs, RESTART, opts="lookupcache=none,actimeo=0", timeout=900)
    done.set()
    t.join(5)
    check_lines(res)
    assert (e / "keep" / "sub" / "file2").read_text() == "after\n"


# ---------------------------------------------------------------------------
# IPv6: an IPv6-only guest (fec0::15, no IPv4 at all) mounts [fec0::2]:EXPORT
# with proto=tcp6,mountproto=tcp6; slirp opens those connections from the
# host's ::1, so the server must accept IPv6 (its dual-stack default bind).

IPV6_RW = CHECK_FN + r"""
grep ' /mnt ' /proc/mounts
echo "ipv4 addresses: $(ip -4 addr show dev eth0 | grep -c inet)"
check test "$(cat pre/hello.txt)" = "hello from the host"
dd if=/dev/urandom of=/tmp/src bs=64k count=32 2>/dev/null
src=$(md5sum < /tmp/src | cut -d' ' -f1)
check mkdir v6dir
check cp /tmp/src v6dir/data
echo "written over IPv6" > v6dir/note
sync
echo 3 > /proc/sys/vm/drop_caches
got=$(md5sum < v6dir/data | cut -d' ' -f1)
echo "md5 $src $got"
check test "$src" = "$got"
ls -ln v6dir
check test "$(ls v6dir | tr '\n' ' ')" = "data note "
echo "failures: $fails"
exit $fails
"""


def _check_ipv6_mount(res, srv) -> str:
    """The guest's checks passed over an IPv6 mount; returns the md5 it wrote."""
    check_lines(res)
    mounts = res.lines[0].split()
    assert mounts[0] == "[fec0::2]:%s" % srv.export, res.describe()
    opts = mounts[3].split(",")
    for want in ("proto=tcp6", "mountproto=tcp6", "addr=fec0::2", "mountaddr=fec0::2"):
        assert want in opts, res.describe()
    assert "ipv4 addresses: 0" in res.lines, res.describe()
    src = [line.split()[1] for line in res.lines if line.startswith("md5 ")][0]
    data = srv.export / "v6dir" / "data"
    assert data.stat().st_size == 32 * 65536
    assert hashlib.md5(data.read_bytes()).hexdigest() == src
    assert (srv.export / "v6dir" / "note").read_text() == "written over IPv6\n"
    return src


def _hello(export_dir) -> None:
    (export_dir / "pre").mkdir()
    (export_dir / "pre" / "hello.txt").write_text("hello from the host")


def test_ipv6_guest_mounts_dual_stack_default(kit_ipv6, fastnfs):
    _hello(fastnfs.export)
    res = run_guest(fastnfs, IPV6_RW, ipv6=True)
    _check_ipv6_mount(res, fastnfs)
    # slirp connects from the host's ::1: the server saw an IPv6 client (not the
    # ::ffff:127.0.0.1 of an IPv4 one), in its log and in its per-client counts
    assert "::1 mounted %s" % fastnfs.export in fastnfs.log()
    clients = _stats(fastnfs)["clients"]
    assert set(clients) == {"::1"} and clients["::1"]["calls"] > 0, clients


def test_ipv6_guest_admitted_by_ipv6_only_export(kit_ipv6, tmp_path, export_dir):
    """An exports file that lets in ::1/128 alone admits the IPv6 guest."""
    _hello(export_dir)
    os.chmod(export_dir, 0o777)          # root_squash: the guest's root is nobody
    exports = tmp_path / "exports"
    exports.write_text("%s ::1/128(rw,insecure)\n" % export_dir)
    srv = FastnfsProcess(export_dir, ["--workers", "2"], exports_file=exports).start()
    try:
        res = run_guest(srv, IPV6_RW, ipv6=True)
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]
    _check_ipv6_mount(res, srv)
    assert "::1 mounted %s" % export_dir in srv.log()
    assert "refused mount" not in srv.log(), srv.log()[-4000:]
    if os.geteuid() == 0:
        assert (export_dir / "v6dir" / "data").stat().st_uid == 65534
