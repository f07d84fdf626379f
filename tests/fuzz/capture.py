"""Capture real client RPC traffic into the fuzzing seed corpus.

    python3 tests/fuzz/capture.py [--out tests/fuzz/corpus] [--no-vm] [--no-libnfs]

Starts fastnfs (``python -m fastnfs serve DIR -n 0 -p -d --workers 1``) on a
scratch export at ``CAPTURE_EXPORT``, puts a small TCP proxy in front of it that
saves every call record it forwards (record marks stripped, fragments joined),
and drives real clients through the proxy:

* libnfs-utils: ``nfs-ls -R``, ``nfs-cat``, ``nfs-cp`` in both directions
  (URL ``nfs://127.0.0.1/DIR?nfsport=P&mountport=P&version=3``);
* the Linux kernel client in qemu (tests/vm/guest.py): ``ls -laR``, ``cat``,
  writes, ``mkdir``, ``rm``, ``mv``, ``ln``, ``ln -s``, ``touch``, ``chmod``,
  ``mknod``, ``stat``, ``df``, ``sync``...

The records are then deduplicated by (program, version, procedure, size), at
most ``--per-proc`` per procedure with sizes spread over the range, records
over 64 KiB dropped, and written as ``<prog>-v<vers>-<proc>-<name>-<size>-<sha8>.bin``.
The export path is fixed so that tests/fuzz/harness.py can map the captured
MNT paths and filehandles onto its own export.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS))

CAPTURE_EXPORT = "/tmp/fnfs-capture/export"
MAX_SEED = 64 * 1024

NFS_PROCS = ["NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ", "WRITE",
             "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK",
             "READDIR", "READDIRPLUS", "FSSTAT", "FSINFO", "PATHCONF", "COMMIT"]
MOUNT_PROCS = ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"]


def describe(record: bytes):
    """(prog name, vers, proc, proc name) of a call record, or None."""
    if len(record) < 24:
        return None
    xid, mtype, rpcvers, prog, vers, proc = (int.from_bytes(record[i:i + 4], "big")
                                             for i in range(0, 24, 4))
    if mtype != 0:
        return None
    if prog == 100003:
        name = NFS_PROCS[proc] if proc < len(NFS_PROCS) else "P%d" % proc
        return "nfs", vers, proc, name
    if prog == 100005:
        name = MOUNT_PROCS[proc] if proc < len(MOUNT_PROCS) else "P%d" % proc
        return "mount", vers, proc, name
    return "prog%d" % prog, vers, proc, "P%d" % proc


class RecordProxy:
    """TCP proxy that keeps every complete RPC record sent client -> server."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("0.0.0.0", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.records: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._stop = True
        self.lsock.close()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.upstream)
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src, dst, parse: bool):
        buf = bytearray()
        frags: list = []
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                if not parse:
                    continue
                buf += data
                while len(buf) >= 4:
                    mark = int.from_bytes(buf[:4], "big")
                    n = mark & 0x7FFFFFFF
                    if len(buf) < 4 + n:
                        break
                    frags.append(bytes(buf[4:4 + n]))
                    del buf[:4 + n]
                    if mark & 0x80000000:
                        with self._lock:
                            self.records.append(b"".join(frags))
                        frags = []
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()


def populate(export: Path) -> None:
    if export.exists():
        shutil.rmtree(export)
    export.mkdir(parents=True)
    (export / "hello.txt").write_bytes(b"hello, world\n")
    (export / "small.bin").write_bytes(os.urandom(3000))
    (export / "medium.bin").write_bytes(os.urandom(20000))
    d = export / "dir" / "sub"
    d.mkdir(parents=True)
    (d / "deep.txt").write_text("deep\n")
    (export / "dir" / "a").write_text("a\n")
    os.symlink("hello.txt", export / "link")
    os.symlink("dir/sub", export / "dirlink")
    os.mkfifo(export / "fifo")
    for i in range(40):  # enough entries for READDIR paging with small counts
        (export / "dir" / ("entry-%02d-%s" % (i, "x" * (i % 17)))).write_text(str(i))


def run(cmd, timeout=120, **kw):
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    tag = "ok" if r.returncode == 0 else "rc=%d %s" % (r.returncode, r.stderr[-300:])
    print("  %-60s %s" % (" ".join(map(str, cmd))[:60], tag))
    return r


def drive_libnfs(port: int, export: Path, scratch: Path) -> None:
    def url(rel=""):
        return "nfs://127.0.0.1%s%s?nfsport=%d&mountport=%d&version=3" % (
            export, "/" + rel if rel else "", port, port)
    if not shutil.which("nfs-ls"):
        print("libnfs-utils not installed: skipping libnfs")
        return
    run(["nfs-ls", "-R", url()])
    run(["nfs-ls", url("dir")])
    run(["nfs-cat", url("hello.txt")])
    run(["nfs-cat", url("dir/sub/deep.txt")])
    run(["nfs-cp", url("medium.bin"), str(scratch / "medium.copy")])
    run(["nfs-cp", url("small.bin"), str(scratch / "small.copy")])
    (scratch / "up.bin").write_bytes(os.urandom(9000))
    run(["nfs-cp", str(scratch / "up.bin"), url("uploaded.bin")])
    run(["nfs-cp", str(scratch / "up.bin"), url("dir/uploaded2.bin")])
    if shutil.which("nfs-stat"):
        run(["nfs-stat", url("hello.txt")])


GUEST_SCRIPT = r"""
set -x
ls -laR . >/dev/null
cat hello.txt dir/sub/deep.txt >/dev/null
cat small.bin medium.bin >/dev/null
readlink link; ls -l dirlink/
echo "new data" > newfile
dd if=/dev/zero of=zeros bs=4096 count=5 2>/dev/null
dd if=/dev/zero of=zeros bs=1000 count=1 seek=7 conv=notrunc 2>/dev/null
sync
mkdir -p newdir/inner
echo x > newdir/inner/f
touch -t 202001010101 newfile
touch newdir
chmod 600 newfile; chmod 0755 newdir; chmod u+s newfile
ln newfile hardlink
ln -s newfile symlink2
mv newfile renamed; mv renamed newdir/
mknod newdir/fifo2 p
mknod newdir/cdev c 1 3 2>/dev/null
stat newdir/cdev renamed 2>/dev/null
truncate -s 100 zeros 2>/dev/null || dd if=/dev/null of=zeros bs=1 seek=100 2>/dev/null
df . >/dev/null
rm hardlink symlink2 zeros
rm -r newdir
rmdir nosuchdir 2>/dev/null
ls -la nosuchfile 2>/dev/null
cat dir/entry-05* >/dev/null
find . -type f | head -5 >/dev/null
sync
"""


def drive_kernel(port: int, export: Path) -> None:
    try:
        from vm import guest
    except ImportError as e:
        print("tests/vm not importable (%s): skipping the kernel client" % e)
        return
    ok, why = guest.available()
    if not ok:
        print("kernel client unavailable: %s" % why)
        return
    r = guest.run(GUEST_SCRIPT, nfs_port=port, export=str(export), timeout=240)
    print("  kernel client: rc=%s, %d output lines" % (r.rc, len(r.output)))
    # READDIR (not READDIRPLUS), small pages
    r = guest.run("ls -laR . >/dev/null; ls dir | wc -l", nfs_port=port, export=str(export),
                  mount_opts="nordirplus,rsize=4096,wsize=4096", timeout=240)
    print("  kernel client (nordirplus): rc=%s" % r.rc)


def drive_synthetic(port: int, export: Path) -> None:
    """The calls no real client above makes: MOUNT v1, DUMP, UMNT, UMNTALL, small READDIR."""
    from xdrlib3 import Packer
    import rpcclient as rc
    n = rc.Nfs3.connect(port)
    try:
        fh = n.mount(str(export))
        n.mnt(str(export), vers=1)
        n.mnt(str(export) + "/dir/sub")
        n.mnt("/nonexistent")
        n.readdir(fh, count=512)
        n.readdir(fh, count=4096)
        for proc in (2, 5):  # DUMP, EXPORT
            n.c.call(rc.MOUNT_PROGRAM, 3, proc)
        p = Packer()
        p.pack_string(str(export).encode())
        n.c.call(rc.MOUNT_PROGRAM, 3, 3, p.get_buffer())   # UMNT
        n.c.call(rc.MOUNT_PROGRAM, 1, 4)                   # UMNTALL
        n.c.call(rc.NFS_PROGRAM, 3, 0, cred=None)          # NULL with AUTH_NONE
    finally:
        n.close()
    print("  synthetic MOUNT/READDIR calls: ok")


def select(records, per_proc: int):
    groups = collections.defaultdict(dict)
    for rec in records:
        d = describe(rec)
        if d is None or len(rec) > MAX_SEED:
            continue
        groups[d].setdefault(len(rec), rec)
    out = []
    for d, by_size in sorted(groups.items()):
        sizes = sorted(by_size)
        if len(sizes) > per_proc:
            step = (len(sizes) - 1) / (per_proc - 1)
            sizes = sorted({sizes[round(i * step)] for i in range(per_proc)})
        for s in sizes:
            out.append((d, by_size[s]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "corpus"))
    ap.add_argument("--per-proc", type=int, default=10)
    ap.add_argument("--no-vm", action="store_true")
    ap.add_argument("--no-libnfs", action="store_true")
    ap.add_argument("--keep", action="store_true", help="add to --out instead of replacing it")
    a = ap.parse_args(argv)

    from conftest import FastnfsProcess

    export = Path(CAPTURE_EXPORT)
    populate(export)
    scratch = export.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    srv = FastnfsProcess(export, log_path=export.parent / "server.log").start()
    proxy = RecordProxy(srv.port)
    print("fastnfs on %d, proxy on %d" % (srv.port, proxy.port))
    try:
        if not a.no_libnfs:
            drive_libnfs(proxy.port, export, scratch)
        drive_synthetic(proxy.port, export)
        if not a.no_vm:
            drive_kernel(proxy.port, export)
        time.sleep(0.5)
    finally:
        proxy.close()
        srv.stop()
    records = list(proxy.records)
    chosen = select(records, a.per_proc)
    out = Path(a.out)
    if out.exists() and not a.keep:
        for f in out.glob("*.bin"):
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for (prog, vers, proc, name), rec in chosen:
        h = hashlib.sha1(rec).hexdigest()[:8]
        (out / ("%s-v%d-%02d-%s-%d-%s.bin" % (prog, vers, proc, name, len(rec), h))).write_bytes(rec)
        total += len(rec)
    seen = collections.Counter("%s.%s" % (d[0], d[3]) for d, _ in chosen)
    print("captured %d records; kept %d (%d bytes) in %s" % (len(records), len(chosen), total, out))
    print("  " + ", ".join("%s:%d" % kv for kv in sorted(seen.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
