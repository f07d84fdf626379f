"""virtfs end to end: `fastnfs serve --virtfs` against mapped-file metadata trees.

For an entry NAME of DIR, ``DIR/.virtfs_metadata/NAME`` holds ``virtfs.uid=``,
``virtfs.gid=``, ``virtfs.mode=`` (whole st_mode, decimal) and ``virtfs.rdev=``
(glibc makedev encoding) lines; the export root's are in
``ROOT/.virtfs_metadata_root`` (QEMU 9p security_model=mapped-file, ptxdist).

Three clients look at the same server behaviour:

* tests/rpcclient.py (most tests; one server per module, each test in its own
  directory), with AUTH_UNIX credentials of root, "alice" (1000, groups 1000
  and 50) and "bob" (2000);
* libnfs's ``nfs-ls`` (a client nobody here wrote);
* the Linux kernel client in one qemu guest (mount mode), and optionally one
  nfsroot boot of a busybox virtfs root filesystem.

Since the server with --virtfs never switches credentials, every file it
makes on disk belongs to the server's own user (root when the tests run as
root); owners and modes exist only in the metadata.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import NOBODY, start_servers_as_nobody, FastnfsProcess, require
from rpcclient import (ACCESS3_ALL, ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND,
                       ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ, GUARDED, MNT3_OK, NF3BLK,
                       NF3CHR, NF3DIR, NF3FIFO, NF3LNK, NF3REG, NF3SOCK, NFS3_OK, NFS3ERR_ACCES,
                       NFS3ERR_INVAL, NFS3ERR_NOENT, NFS3ERR_NOTEMPTY, NFS3ERR_PERM, AuthSys, Nfs3)

META = ".virtfs_metadata"
META_ROOT = ".virtfs_metadata_root"
HIDDEN = (META, META_ROOT)

ROOT = AuthSys(0, 0)
ALICE = AuthSys(1000, 1000, gids=(1000, 50))
BOB = AuthSys(2000, 2000, gids=(2000,))

SERVER_UID = os.getuid()  # who owns what the server creates on disk


# ---------------------------------------------------------------- tree helpers
def makedev(major: int, minor: int) -> int:
    """glibc's makedev() (what QEMU writes as virtfs.rdev)."""
    return (((major & 0xFFF) << 8) | ((major & 0xFFFFF000) << 32)
            | (minor & 0xFF) | ((minor & 0xFFFFFF00) << 12))


def put_meta(d: Path, name: str, uid=None, gid=None, mode=None, rdev=None, raw=None) -> Path:
    """Write DIR/.virtfs_metadata/NAME (or the root file for name=None) as QEMU would."""
    if raw is None:
        raw = "".join("virtfs.%s=%d\n" % (k, v) for k, v in
                      (("uid", uid), ("gid", gid), ("mode", mode), ("rdev", rdev))
                      if v is not None)
    if isinstance(raw, str):
        raw = raw.encode()
    if name is None:
        p = d / META_ROOT
    else:
        (d / META).mkdir(exist_ok=True)
        p = d / META / name
    tmp = p.with_name(p.name + ".writing")
    tmp.write_bytes(raw)
    os.replace(tmp, p)
    return p


def get_meta(d: Path, name: str) -> dict:
    """The metadata file of DIR/NAME as a dict of ints (keys uid, gid, mode, rdev)."""
    p = d / META_ROOT if name is None else d / META / name
    out = {}
    for line in p.read_text().splitlines():
        if line.strip():
            k, v = line.split("=", 1)
            out[k.strip().replace("virtfs.", "")] = int(v)
    return out


def mkdir_meta(parent: Path, name: str, uid: int, gid: int, perm: int) -> Path:
    """A directory made on the host whose metadata gives it owner and mode."""
    d = parent / name
    d.mkdir()
    put_meta(parent, name, uid, gid, stat.S_IFDIR | perm)
    return d


def file_meta(parent: Path, name: str, uid: int, gid: int, perm: int, data: bytes = b"") -> Path:
    f = parent / name
    f.write_bytes(data)
    os.chmod(f, 0o644)
    put_meta(parent, name, uid, gid, stat.S_IFREG | perm)
    return f


def build_ptxdist_tree(root: Path, disk_owner=(1000, 1000)) -> None:
    """A small root filesystem as ptxdist leaves it: every file on disk belongs to
    the build user, the metadata says root; devices are empty files; the root's
    own attributes are in .virtfs_metadata_root; bin/sh is a QEMU-style
    symlink-as-file and bin/ls a real symlink (with metadata)."""
    put_meta(root, None, 0, 0, stat.S_IFDIR | 0o755)
    for d in ("bin", "dev", "etc", "tmp"):
        (root / d).mkdir()
        put_meta(root, d, 0, 0, stat.S_IFDIR | (0o1777 if d == "tmp" else 0o755))
    (root / "bin" / "busybox").write_bytes(b"\x7fELF fake busybox\n")
    put_meta(root / "bin", "busybox", 0, 0, stat.S_IFREG | 0o4755)
    (root / "bin" / "sh").write_bytes(b"busybox")          # QEMU mapped-file symlink
    put_meta(root / "bin", "sh", 0, 0, stat.S_IFLNK | 0o777)
    os.symlink("busybox", root / "bin" / "ls")            # a real one, with metadata
    put_meta(root / "bin", "ls", 0, 0, stat.S_IFLNK | 0o777)
    for name, fmt, perm, rdev in (("console", stat.S_IFCHR, 0o600, 5 << 8 | 1),   # ptxdist
                                  ("null", stat.S_IFCHR, 0o666, 1 << 8 | 3),
                                  ("x240", stat.S_IFCHR, 0o620, makedev(240, 300)),  # QEMU
                                  ("sda1", stat.S_IFBLK, 0o660, makedev(8, 1))):
        (root / "dev" / name).write_bytes(b"")
        put_meta(root / "dev", name, 0, 6 if fmt == stat.S_IFBLK else 0, fmt | perm, rdev)
    (root / "dev" / "initctl").write_bytes(b"")
    put_meta(root / "dev", "initctl", 0, 0, stat.S_IFIFO | 0o600)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    put_meta(root / "etc", "passwd", 0, 0, stat.S_IFREG | 0o644)
    (root / "etc" / "shadow").write_text("root::1:0:99999:7:::\n")
    put_meta(root / "etc", "shadow", 0, 0, stat.S_IFREG | 0o600)
    (root / "etc" / "hostname").write_text("ptx\n")   # no metadata: on-disk attributes
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), *disk_owner)
    os.chown(root, *disk_owner)


# ---------------------------------------------------------------- server and clients
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    export = tmp_path_factory.mktemp("virtfs") / "export"
    export.mkdir()
    # the root on disk: someone else's and closed; the metadata says root, 0755
    os.chown(export, 4321, 4321)
    os.chmod(export, 0o700)
    put_meta(export, None, 0, 0, stat.S_IFDIR | 0o755)
    # one worker: "warned once" is checked across connections here (several
    # workers: test_malformed_metadata_warns_once_with_several_workers)
    srv = FastnfsProcess(export, ["--virtfs", "--workers", "1"]).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


def connect(srv, cred) -> Nfs3:
    n = Nfs3.connect(srv.port, cred=cred)
    n.root = n.mount(str(srv.export))
    return n


@pytest.fixture(scope="module")
def root(server):
    n = connect(server, ROOT)
    yield n
    n.close()


@pytest.fixture(scope="module")
def alice(server):
    n = connect(server, ALICE)
    yield n
    n.close()


@pytest.fixture(scope="module")
def bob(server):
    n = connect(server, BOB)
    yield n
    n.close()


class WorkDir:
    """This test's directory: made on the host, its metadata says alice, 0755."""

    def __init__(self, server, path: Path):
        self.server, self.path = server, path
        self.rel = path.relative_to(server.export).as_posix()

    def fh(self, n: Nfs3, *names) -> bytes:
        fh = n.root
        for name in [self.rel, *names]:
            for comp in name.split("/"):
                st, r = n.lookup(fh, comp)
                assert st == NFS3_OK, (name, comp, st)
                fh = r["fh"]
        return fh

    def attrs(self, n: Nfs3, *names) -> dict:
        st, r = n.getattr(self.fh(n, *names))
        assert st == NFS3_OK, st
        return r["attrs"]


@pytest.fixture
def wd(server, request):
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    return WorkDir(server, mkdir_meta(server.export, name, 1000, 1000, 0o755))


def warnings_about(srv, needle: str) -> list:
    return [line for line in srv.log().splitlines() if "WARNING" in line and needle in line]


# ================================================================ reading
def test_attributes_come_from_the_metadata(wd, root):
    f = file_meta(wd.path, "f", 0, 0, 0o4711, b"hello")
    os.chown(f, 1234, 1235)
    a = wd.attrs(root, "f")
    assert (a["type"], a["mode"], a["uid"], a["gid"], a["size"]) == (NF3REG, 0o4711, 0, 0, 5)
    assert a["fileid"] == os.lstat(f).st_ino


def test_missing_key_keeps_the_disk_value(wd, root):
    f = wd.path / "only_mode"
    f.write_bytes(b"x")
    os.chown(f, 1234, 1235)
    os.chmod(f, 0o600)
    put_meta(wd.path, "only_mode", mode=stat.S_IFREG | 0o751)
    a = wd.attrs(root, "only_mode")
    assert (a["mode"], a["uid"], a["gid"]) == (0o751, 1234, 1235)
    put_meta(wd.path, "only_gid", gid=77)
    (wd.path / "only_gid").write_bytes(b"")
    os.chmod(wd.path / "only_gid", 0o640)
    a = wd.attrs(root, "only_gid")
    assert (a["mode"], a["uid"], a["gid"]) == (0o640, SERVER_UID, 77)


def test_no_metadata_file_means_disk_attributes(wd, root):
    f = wd.path / "plain"
    f.write_bytes(b"abc")
    os.chown(f, 1234, 1235)
    os.chmod(f, 0o640)
    a = wd.attrs(root, "plain")
    assert (a["type"], a["mode"], a["uid"], a["gid"]) == (NF3REG, 0o640, 1234, 1235)


def test_root_attributes_from_metadata_root(server, root):
    st = os.stat(server.export)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (4321, 0o700)
    st_, r = root.getattr(root.root)
    assert st_ == NFS3_OK
    a = r["attrs"]
    assert (a["type"], a["mode"], a["uid"], a["gid"]) == (NF3DIR, 0o755, 0, 0)
    try:
        put_meta(server.export, None, 5, 6, stat.S_IFDIR | 0o1777)
        a = root.getattr(root.root)[1]["attrs"]
        assert (a["mode"], a["uid"], a["gid"]) == (0o1777, 5, 6)
    finally:
        put_meta(server.export, None, 0, 0, stat.S_IFDIR | 0o755)
    assert root.getattr(root.root)[1]["attrs"]["mode"] == 0o755


@pytest.mark.parametrize("name,fmt,ftype,rdev,want", [
    ("qemu_c_240_300", stat.S_IFCHR, NF3CHR, 1110060, (240, 300)),
    ("ptxdist_console", stat.S_IFCHR, NF3CHR, 5 << 8 | 1, (5, 1)),
    ("ptxdist_null", stat.S_IFCHR, NF3CHR, 1 << 8 | 3, (1, 3)),
    ("blk_8_1", stat.S_IFBLK, NF3BLK, makedev(8, 1), (8, 1)),
    ("big_major_minor", stat.S_IFCHR, NF3CHR, makedev(4095 + 4096, 70000), (8191, 70000)),
    ("no_rdev_key", stat.S_IFCHR, NF3CHR, None, (0, 0)),
    ("fifo", stat.S_IFIFO, NF3FIFO, None, (0, 0)),
    ("socket", stat.S_IFSOCK, NF3SOCK, None, (0, 0)),
])
def test_special_files_stored_as_empty_files(wd, root, name, fmt, ftype, rdev, want):
    assert makedev(240, 300) == 1110060
    (wd.path / name).write_bytes(b"")
    put_meta(wd.path, name, 0, 6, fmt | 0o640, rdev)
    a = wd.attrs(root, name)
    assert (a["type"], a["mode"], a["uid"], a["gid"], a["rdev"], a["size"]) == \
        (ftype, 0o640, 0, 6, want, 0)
    # READDIRPLUS says the same
    ent = {e["name"]: e for e in root.readdir_all(wd.fh(root), plus=True)}
    b = ent[name.encode()]["attrs"]
    assert (b["type"], b["rdev"]) == (ftype, want)
    # and it is no regular file for READ
    st, _ = root.read(wd.fh(root, name), 0, 10)
    assert st != NFS3_OK


def test_device_metadata_on_a_nonempty_file_keeps_it_regular(wd, root):
    (wd.path / "notempty").write_bytes(b"data")
    put_meta(wd.path, "notempty", 0, 0, stat.S_IFCHR | 0o600, makedev(1, 3))
    a = wd.attrs(root, "notempty")
    assert (a["type"], a["mode"], a["size"]) == (NF3REG, 0o600, 4)


def test_symlink_stored_as_file_is_served_as_symlink(wd, root):
    (wd.path / "sh").write_bytes(b"../bin/busybox")
    put_meta(wd.path, "sh", 0, 0, stat.S_IFLNK | 0o777)
    a = wd.attrs(root, "sh")
    assert (a["type"], a["uid"], a["size"]) == (NF3LNK, 0, len(b"../bin/busybox"))
    st, r = root.readlink(wd.fh(root, "sh"))
    assert (st, r["data"]) == (NFS3_OK, b"../bin/busybox")
    st, _ = root.read(wd.fh(root, "sh"), 0, 100)
    assert st == NFS3ERR_INVAL
    st, _ = root.write(wd.fh(root, "sh"), 0, b"evil")
    assert st == NFS3ERR_INVAL
    assert (wd.path / "sh").read_bytes() == b"../bin/busybox"


def test_real_symlink_with_metadata_keeps_working(wd, root):
    os.symlink("target/path", wd.path / "ln")
    put_meta(wd.path, "ln", 7, 8, stat.S_IFLNK | 0o777)
    a = wd.attrs(root, "ln")
    assert (a["type"], a["uid"], a["gid"]) == (NF3LNK, 7, 8)
    st, r = root.readlink(wd.fh(root, "ln"))
    assert (st, r["data"]) == (NFS3_OK, b"target/path")


def test_edited_metadata_shows_through_at_once(wd, root):
    f = file_meta(wd.path, "m", 1, 1, 0o644)
    fh = wd.fh(root, "m")
    assert root.getattr(fh)[1]["attrs"]["uid"] == 1
    put_meta(wd.path, "m", 2, 2, stat.S_IFREG | 0o600)          # replaced (new inode)
    a = root.getattr(fh)[1]["attrs"]
    assert (a["uid"], a["mode"]) == (2, 0o600)
    p = wd.path / META / "m"
    p.write_text("virtfs.uid=333\nvirtfs.gid=2\nvirtfs.mode=33152\n")  # in place, longer
    assert root.getattr(fh)[1]["attrs"]["uid"] == 333
    time.sleep(0.02)
    p.write_text("virtfs.uid=444\nvirtfs.gid=2\nvirtfs.mode=33152\n")  # in place, same size
    assert root.getattr(fh)[1]["attrs"]["uid"] == 444
    p.unlink()
    a = root.getattr(fh)[1]["attrs"]
    assert (a["uid"], a["mode"]) == (SERVER_UID, 0o644)
    put_meta(wd.path, "m", 5, 5, stat.S_IFREG | 0o640)
    assert root.getattr(fh)[1]["attrs"]["uid"] == 5
    # READDIRPLUS and LOOKUP see it too
    ent = {e["name"]: e for e in root.readdir_all(wd.fh(root), plus=True)}
    assert ent[b"m"]["attrs"]["uid"] == 5
    assert f.exists()


def _bad_noeq(p):
    p.write_bytes(b"virtfs.uid=7\ngarbage line\nvirtfs.gid=8\n")


def _bad_nonnumber(p):
    p.write_bytes(b"virtfs.gid=8\nvirtfs.uid=12abc\n")


def _bad_unknown(p):
    p.write_bytes(b"virtfs.uid=7\nvirtfs.gid=8\nvirtfs.colour=blue\n")


def _bad_huge(p):
    p.write_bytes(b"virtfs.uid=7\n" + b"#" * 5000 + b"\n")


def _bad_dir(p):
    p.mkdir()


def _bad_fifo(p):
    os.mkfifo(p)


@pytest.mark.parametrize("make,want_ids,needle", [
    (_bad_noeq, (7, 8), ":2: line without '='"),
    (_bad_nonnumber, (None, 8), ":2: virtfs.uid: not a decimal"),
    (_bad_unknown, (7, 8), ":3: unknown key"),
    (_bad_huge, (None, None), "4096"),
    (_bad_dir, (None, None), ""),
    (_bad_fifo, (None, None), ""),
], ids=["no_equals", "not_a_number", "unknown_key", "huge", "directory", "fifo"])
def test_malformed_metadata_warns_once_and_applies_what_parses(server, wd, root, make,
                                                               want_ids, needle):
    name = "bad_" + make.__name__[5:]
    f = wd.path / name
    f.write_bytes(b"content")
    os.chown(f, 1234, 1235)
    (wd.path / META).mkdir(exist_ok=True)
    make(wd.path / META / name)
    t0 = time.monotonic()
    for _ in range(3):
        a = wd.attrs(root, name)                      # LOOKUP + GETATTR
        root.readdir_all(wd.fh(root), plus=True)      # READDIRPLUS
    assert time.monotonic() - t0 < 10                 # never a hang
    uid = 1234 if want_ids[0] is None else want_ids[0]
    gid = 1235 if want_ids[1] is None else want_ids[1]
    assert (a["type"], a["uid"], a["gid"]) == (NF3REG, uid, gid)
    shown = "%s/%s/%s" % (wd.rel, META, name)
    lines = warnings_about(server, shown)
    assert len(lines) == 1, "\n".join(lines) or server.log()[-3000:]
    assert needle in lines[0], lines[0]
    # a second connection (another client) does not warn again either
    n2 = connect(server, ROOT)
    try:
        n2.getattr(wd.fh(n2, name))
    finally:
        n2.close()
    assert len(warnings_about(server, shown)) == 1


def test_metadata_dir_that_is_a_file_is_ignored(server, wd, root):
    (wd.path / "x").write_bytes(b"")
    (wd.path / META).write_bytes(b"virtfs.uid=7\n")
    a = wd.attrs(root, "x")
    assert a["uid"] == SERVER_UID
    names = {e["name"] for e in root.readdir_all(wd.fh(root))}
    assert names == {b".", b"..", b"x"}


def test_metadata_dir_symlinked_out_of_the_export_is_not_followed(server, wd, root, tmp_path):
    """DIR/.virtfs_metadata as a symlink must not be followed (store.py promises
    never to follow one): metadata outside the export must not apply."""
    outside = tmp_path / "outside_meta"
    outside.mkdir()
    (outside / "victim").write_text("virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=%d\n"
                                    % (stat.S_IFREG | 0o4777))
    (wd.path / "victim").write_bytes(b"")
    os.chmod(wd.path / "victim", 0o644)
    os.symlink(outside, wd.path / META)
    a = wd.attrs(root, "victim")
    assert a["mode"] == 0o644, "metadata read through a symlink outside the export"


# ================================================================ writing
def test_create_records_caller_ids_and_mode(wd, alice, root):
    st, r = alice.create(wd.fh(alice), "f", how=GUARDED, mode=0o640)
    assert st == NFS3_OK
    assert (r["attrs"]["uid"], r["attrs"]["gid"], r["attrs"]["mode"]) == (1000, 1000, 0o640)
    assert get_meta(wd.path, "f") == {"uid": 1000, "gid": 1000, "mode": stat.S_IFREG | 0o640}
    d = os.lstat(wd.path / "f")
    assert stat.S_ISREG(d.st_mode) and d.st_uid == SERVER_UID
    # root (no_root_squash by default) records 0:0
    st, r = root.create(wd.fh(root), "byroot", how=GUARDED, mode=0o600)
    assert st == NFS3_OK
    assert get_meta(wd.path, "byroot") == {"uid": 0, "gid": 0, "mode": stat.S_IFREG | 0o600}
    # the new file is the caller's to write
    st, _ = alice.write(wd.fh(alice, "f"), 0, b"alice was here")
    assert st == NFS3_OK
    assert (wd.path / "f").read_bytes() == b"alice was here"


def test_mkdir_symlink_record_caller(wd, alice):
    st, r = alice.mkdir(wd.fh(alice), "sub", mode=0o750)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3DIR
    assert get_meta(wd.path, "sub") == {"uid": 1000, "gid": 1000, "mode": stat.S_IFDIR | 0o750}
    assert stat.S_ISDIR(os.lstat(wd.path / "sub").st_mode)
    st, r = alice.symlink(wd.fh(alice), "ln", "sub/x")
    assert st == NFS3_OK
    m = get_meta(wd.path, "ln")
    assert (m["uid"], m["gid"], stat.S_IFMT(m["mode"])) == (1000, 1000, stat.S_IFLNK)
    assert os.readlink(wd.path / "ln") == "sub/x"
    a = wd.attrs(alice, "ln")
    assert (a["type"], a["uid"]) == (NF3LNK, 1000)


def test_setgid_directory_passes_its_group_on(server, alice):
    d = mkdir_meta(server.export, "sgid", 1000, 50, 0o2775)
    w = WorkDir(server, d)
    st, r = alice.create(w.fh(alice), "f", how=GUARDED, mode=0o644)
    assert st == NFS3_OK and r["attrs"]["gid"] == 50
    st, r = alice.mkdir(w.fh(alice), "sub", mode=0o755)
    assert st == NFS3_OK
    m = get_meta(d, "sub")
    assert m["gid"] == 50 and m["mode"] & stat.S_ISGID


@pytest.mark.parametrize("ftype,fmt,rdev", [
    (NF3CHR, stat.S_IFCHR, (240, 300)),
    (NF3BLK, stat.S_IFBLK, (8, 1)),
    (NF3FIFO, stat.S_IFIFO, None),
    (NF3SOCK, stat.S_IFSOCK, None),
])
def test_mknod_makes_an_empty_file_and_metadata(wd, alice, ftype, fmt, rdev):
    # alice is no root: no privilege is needed for a device that is only metadata
    st, r = alice.mknod(wd.fh(alice), "node", ftype, rdev=rdev or (0, 0), mode=0o620)
    assert st == NFS3_OK, st
    a = r["attrs"]
    assert (a["type"], a["mode"], a["uid"], a["gid"]) == (ftype, 0o620, 1000, 1000)
    if rdev:
        assert a["rdev"] == rdev
    d = os.lstat(wd.path / "node")
    assert stat.S_ISREG(d.st_mode) and d.st_size == 0 and d.st_uid == SERVER_UID
    m = get_meta(wd.path, "node")
    assert (m["uid"], m["gid"], m["mode"]) == (1000, 1000, fmt | 0o620)
    if rdev:
        assert m["rdev"] == makedev(*rdev)
    if rdev == (240, 300):
        assert m["rdev"] == 1110060
    assert wd.attrs(alice, "node")["type"] == ftype


def test_root_squash_is_recorded(tmp_path):
    export = tmp_path / "sq"
    export.mkdir()
    put_meta(export, None, 0, 0, stat.S_IFDIR | 0o777)
    srv = FastnfsProcess(export, ["--virtfs", "--root-squash", "--anonuid", "65534",
                                  "--anongid", "65533"]).start()
    try:
        n = connect(srv, ROOT)
        try:
            st, _ = n.create(n.root, "f", how=GUARDED, mode=0o644)
            assert st == NFS3_OK
            st, _ = n.mknod(n.root, "c", NF3CHR, rdev=(1, 3), mode=0o666)
            assert st == NFS3_OK
        finally:
            n.close()
        assert get_meta(export, "f")["uid"] == 65534
        assert (get_meta(export, "c")["uid"], get_meta(export, "c")["gid"]) == (65534, 65533)
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_setattr_owner_and_mode_go_to_metadata_only(wd, root):
    f = file_meta(wd.path, "f", 1000, 1000, 0o644, b"0123456789")
    disk = os.lstat(f)
    fh = wd.fh(root, "f")
    st, r = root.setattr(fh, uid=123, gid=456)
    assert st == NFS3_OK and (r["wcc"]["after"]["uid"], r["wcc"]["after"]["gid"]) == (123, 456)
    st, r = root.setattr(fh, mode=0o4755)
    assert st == NFS3_OK and r["wcc"]["after"]["mode"] == 0o4755
    assert get_meta(wd.path, "f") == {"uid": 123, "gid": 456, "mode": stat.S_IFREG | 0o4755}
    now = os.lstat(f)
    assert (now.st_uid, now.st_gid, now.st_mode) == (disk.st_uid, disk.st_gid, disk.st_mode)
    # size and times go to the file
    st, _ = root.setattr(fh, size=3, mtime=(1_000_000_000, 0))
    assert st == NFS3_OK
    now = os.lstat(f)
    assert now.st_size == 3 and int(now.st_mtime) == 1_000_000_000
    a = root.getattr(fh)[1]["attrs"]
    assert (a["size"], a["mtime"][0], a["uid"], a["mode"]) == (3, 1_000_000_000, 123, 0o4755)
    # a change of owner clears set-user-ID, as chown(2) does
    st, _ = root.setattr(fh, uid=124)
    assert st == NFS3_OK
    assert get_meta(wd.path, "f")["mode"] == stat.S_IFREG | 0o755


def test_chmod_and_chown_rules(wd, alice, bob):
    file_meta(wd.path, "f", 1000, 1000, 0o644)
    fa, fb = wd.fh(alice, "f"), wd.fh(bob, "f")
    assert bob.setattr(fb, mode=0o777)[0] == NFS3ERR_PERM        # chmod by non-owner
    assert alice.setattr(fa, uid=2000)[0] == NFS3ERR_PERM        # chown by non-root
    assert bob.setattr(fb, uid=2000)[0] == NFS3ERR_PERM
    assert alice.setattr(fa, gid=777)[0] == NFS3ERR_PERM         # not her group
    assert get_meta(wd.path, "f") == {"uid": 1000, "gid": 1000, "mode": stat.S_IFREG | 0o644}
    assert alice.setattr(fa, gid=50)[0] == NFS3_OK               # a supplementary group
    assert alice.setattr(fa, mode=0o600)[0] == NFS3_OK           # the owner's chmod
    assert get_meta(wd.path, "f") == {"uid": 1000, "gid": 50, "mode": stat.S_IFREG | 0o600}
    # times: only the owner (or root) sets an explicit time
    assert bob.setattr(fb, mtime=(1, 0))[0] == NFS3ERR_PERM


def test_setattr_of_the_root_goes_to_metadata_root(server, root, alice):
    try:
        st, _ = alice.setattr(alice.root, mode=0o777)
        assert st == NFS3ERR_PERM
        st, _ = root.setattr(root.root, mode=0o711)
        assert st == NFS3_OK
        assert get_meta(server.export, None)["mode"] == stat.S_IFDIR | 0o711
        assert stat.S_IMODE(os.stat(server.export).st_mode) == 0o700
        # the temporary file went through ROOT/.virtfs_metadata, which is gone again
        assert not (server.export / META).exists() or \
            not [n for n in os.listdir(server.export / META) if ".tmp" in n]
    finally:
        put_meta(server.export, None, 0, 0, stat.S_IFDIR | 0o755)


def test_rename_moves_metadata(server, wd, root):
    file_meta(wd.path, "a", 5, 6, 0o640)
    d1 = wd.fh(root)
    assert root.rename(d1, "a", d1, "b")[0] == NFS3_OK
    assert get_meta(wd.path, "b") == {"uid": 5, "gid": 6, "mode": stat.S_IFREG | 0o640}
    assert not (wd.path / META / "a").exists()
    assert wd.attrs(root, "b")["uid"] == 5
    # across directories: the source's then-empty metadata dir goes
    d2path = mkdir_meta(wd.path, "other", 0, 0, 0o755)
    src = mkdir_meta(wd.path, "src", 0, 0, 0o755)
    file_meta(src, "x", 9, 9, 0o600)
    assert root.rename(wd.fh(root, "src"), "x", wd.fh(root, "other"), "y")[0] == NFS3_OK
    assert get_meta(d2path, "y")["uid"] == 9
    assert not (src / META).exists()
    # replacing a target that has metadata of its own
    file_meta(wd.path, "t", 77, 77, 0o600)
    assert root.rename(d1, "b", d1, "t")[0] == NFS3_OK
    assert get_meta(wd.path, "t")["uid"] == 5
    assert wd.attrs(root, "t")["uid"] == 5
    # a source without metadata over a target with: the target's metadata goes
    (wd.path / "nometa").write_bytes(b"")
    assert root.rename(d1, "nometa", d1, "t")[0] == NFS3_OK
    assert not (wd.path / META / "t").exists()
    assert wd.attrs(root, "t")["uid"] == SERVER_UID


def test_rename_of_a_directory_moves_its_metadata(wd, root):
    d = mkdir_meta(wd.path, "dir", 3, 4, 0o700)
    file_meta(d, "inner", 8, 8, 0o600)
    mkdir_meta(wd.path, "dest", 0, 0, 0o755)
    assert root.rename(wd.fh(root), "dir", wd.fh(root, "dest"), "moved")[0] == NFS3_OK
    assert get_meta(wd.path / "dest", "moved")["uid"] == 3
    assert get_meta(wd.path / "dest" / "moved", "inner")["uid"] == 8
    assert wd.attrs(root, "dest/moved/inner")["uid"] == 8


def test_link_links_metadata(wd, root):
    file_meta(wd.path, "f", 5, 6, 0o751, b"x")
    other = mkdir_meta(wd.path, "o", 0, 0, 0o755)
    st, r = root.link(wd.fh(root, "f"), wd.fh(root, "o"), "hard")
    assert st == NFS3_OK
    assert get_meta(other, "hard") == get_meta(wd.path, "f")
    a = wd.attrs(root, "o/hard")
    assert (a["uid"], a["gid"], a["mode"], a["nlink"]) == (5, 6, 0o751, 2)
    assert os.lstat(other / "hard").st_ino == os.lstat(wd.path / "f").st_ino


def test_remove_removes_metadata_and_empty_metadata_dir(wd, root):
    file_meta(wd.path, "a", 1, 1, 0o644)
    file_meta(wd.path, "b", 1, 1, 0o644)
    d = wd.fh(root)
    assert root.remove(d, "a")[0] == NFS3_OK
    assert sorted(os.listdir(wd.path / META)) == ["b"]
    assert root.remove(d, "b")[0] == NFS3_OK
    assert not (wd.path / META).exists()
    assert os.listdir(wd.path) == []


def test_rmdir_removes_metadata(wd, root):
    st, _ = root.mkdir(wd.fh(root), "sub", mode=0o755)
    assert st == NFS3_OK and (wd.path / META / "sub").exists()
    assert root.rmdir(wd.fh(root), "sub")[0] == NFS3_OK
    assert not (wd.path / "sub").exists() and not (wd.path / META).exists()


def test_rmdir_of_a_dir_holding_only_its_metadata_dir(wd, root):
    d = mkdir_meta(wd.path, "stale", 0, 0, 0o755)
    put_meta(d, "gone-long-ago", 1, 1, stat.S_IFREG | 0o644)   # stale metadata only
    assert root.readdir_all(wd.fh(root, "stale")) is not None
    assert root.rmdir(wd.fh(root), "stale")[0] == NFS3_OK
    assert not d.exists() and not (wd.path / META).exists()
    # but a directory with a real entry stays, metadata and all
    d = mkdir_meta(wd.path, "full", 0, 0, 0o755)
    file_meta(d, "keep", 1, 1, 0o644)
    assert root.rmdir(wd.fh(root), "full")[0] == NFS3ERR_NOTEMPTY
    assert (d / META / "keep").exists() and (wd.path / META / "full").exists()


def test_metadata_writes_leave_no_temporary_files(wd, root, alice):
    d = wd.fh(root)
    for i in range(5):
        assert root.create(d, "f%d" % i, how=GUARDED, mode=0o644)[0] == NFS3_OK
    fh = wd.fh(root, "f0")
    for i in range(20):
        assert root.setattr(fh, mode=0o600 + (i % 8), uid=i)[0] == NFS3_OK
    assert alice.mknod(wd.fh(alice), "c", NF3CHR, rdev=(1, 3), mode=0o666)[0] == NFS3_OK
    assert root.rename(d, "f1", d, "f2")[0] == NFS3_OK
    assert root.link(wd.fh(root, "f3"), d, "f3link")[0] == NFS3_OK
    assert sorted(os.listdir(wd.path / META)) == ["c", "f0", "f2", "f3", "f3link", "f4"]
    assert get_meta(wd.path, "f0") == {"uid": 19, "gid": 0, "mode": stat.S_IFREG | 0o603}
    # every metadata file is complete
    for n in os.listdir(wd.path / META):
        assert (wd.path / META / n).read_text().endswith("\n")


# ================================================================ hidden names
def test_metadata_names_never_listed(server, wd, root):
    file_meta(wd.path, "a", 1, 1, 0o644)
    for fh in (root.root, wd.fh(root)):
        for plus in (False, True):
            names = {e["name"] for e in root.readdir_all(fh, plus=plus)}
            assert not names & {b".virtfs_metadata", b".virtfs_metadata_root"}, names
    assert (server.export / META_ROOT).exists() and (wd.path / META).is_dir()
    assert {e["name"] for e in root.readdir_all(wd.fh(root))} == {b".", b"..", b"a"}


def test_metadata_names_refused_by_every_procedure(server, wd, root):
    file_meta(wd.path, "a", 1, 1, 0o644)
    empty = wd.path / "empty"
    empty.mkdir()
    d, e, r = wd.fh(root), wd.fh(root, "empty"), root.root
    a = wd.fh(root, "a")
    for dfh, name in ((r, META), (r, META_ROOT), (d, META), (e, META)):
        assert root.lookup(dfh, name)[0] == NFS3ERR_NOENT, name
    attempts = {
        "create": lambda dfh, n: root.create(dfh, n, mode=0o644),
        "create_guarded": lambda dfh, n: root.create(dfh, n, how=GUARDED, mode=0o644),
        "mkdir": lambda dfh, n: root.mkdir(dfh, n, mode=0o755),
        "mknod": lambda dfh, n: root.mknod(dfh, n, NF3FIFO, mode=0o644),
        "symlink": lambda dfh, n: root.symlink(dfh, n, "a"),
        "link": lambda dfh, n: root.link(a, dfh, n),
        "remove": lambda dfh, n: root.remove(dfh, n),
        "rmdir": lambda dfh, n: root.rmdir(dfh, n),
        "rename_from": lambda dfh, n: root.rename(dfh, n, e, "stolen"),
        "rename_to": lambda dfh, n: root.rename(d, "a", dfh, n),
    }
    for what, fn in attempts.items():
        for dfh, name in ((r, META), (r, META_ROOT), (d, META), (e, META), (e, META_ROOT)):
            st, _ = fn(dfh, name)
            assert st != NFS3_OK, (what, name)
    assert os.listdir(empty) == []
    assert (wd.path / "a").exists() and (wd.path / META / "a").exists()
    assert (server.export / META_ROOT).is_file()
    assert get_meta(server.export, None) == {"uid": 0, "gid": 0, "mode": stat.S_IFDIR | 0o755}


def test_mnt_through_metadata_dir_refused(server, wd, root):
    file_meta(wd.path, "a", 1, 1, 0o644)
    for path in ("%s/%s" % (server.export, META), "%s/%s/%s" % (server.export, wd.rel, META),
                 "%s/%s" % (server.export, META_ROOT)):
        st, _ = root.mnt(path)
        assert st != MNT3_OK, path
    st, _ = root.mnt("%s/%s" % (server.export, wd.rel))
    assert st == MNT3_OK


# ================================================================ permissions
def _access(n: Nfs3, fh) -> int:
    st, r = n.access(fh, ACCESS3_ALL)
    assert st == NFS3_OK
    return r["access"]


W3 = ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE


@pytest.mark.parametrize("uid,gid,perm,who,want", [
    (1000, 1000, 0o600, "alice", ACCESS3_READ | W3),
    (1000, 1000, 0o600, "bob", 0),
    (0, 50, 0o640, "alice", ACCESS3_READ),                  # via a supplementary group
    (0, 50, 0o640, "bob", 0),
    (0, 0, 0o604, "bob", ACCESS3_READ),                     # other bits
    (1000, 1000, 0o070, "alice", 0),                        # owner bits rule the owner
    (0, 1000, 0o070, "alice", ACCESS3_READ | W3 | ACCESS3_EXECUTE),
    (0, 0, 0o000, "root", ACCESS3_READ | W3),               # root: everything but x
    (0, 0, 0o644, "root", ACCESS3_READ | W3),
    (5, 5, 0o001, "root", ACCESS3_READ | W3 | ACCESS3_EXECUTE),
    (0, 0, 0o755, "alice", ACCESS3_READ | ACCESS3_EXECUTE),
])
def test_access_uses_virtual_attributes(wd, request, uid, gid, perm, who, want):
    n = request.getfixturevalue(who)
    file_meta(wd.path, "f", uid, gid, perm)
    os.chmod(wd.path / "f", 0o644)  # the disk mode must not matter
    assert _access(n, wd.fh(n, "f")) == want


def test_access_of_directories(wd, root, alice, bob):
    mkdir_meta(wd.path, "d711", 0, 0, 0o711)
    mkdir_meta(wd.path, "d770", 0, 50, 0o770)
    assert _access(alice, wd.fh(alice, "d711")) == ACCESS3_LOOKUP
    assert _access(alice, wd.fh(alice, "d770")) == ACCESS3_READ | ACCESS3_LOOKUP | W3
    assert _access(bob, wd.fh(bob, "d770")) == 0
    assert _access(root, wd.fh(root, "d770")) == ACCESS3_READ | ACCESS3_LOOKUP | W3


def test_read_write_checked_against_virtual_mode(wd, alice, bob):
    file_meta(wd.path, "g640", 0, 50, 0o640, b"secret")
    file_meta(wd.path, "g660", 0, 50, 0o660, b"shared")
    assert alice.read(wd.fh(alice, "g640"), 0, 10)[1]["data"] == b"secret"
    assert bob.read(wd.fh(bob, "g640"), 0, 10)[0] == NFS3ERR_ACCES
    assert alice.write(wd.fh(alice, "g640"), 0, b"X")[0] == NFS3ERR_ACCES
    assert alice.write(wd.fh(alice, "g660"), 0, b"S")[0] == NFS3_OK
    assert bob.write(wd.fh(bob, "g660"), 0, b"X")[0] == NFS3ERR_ACCES
    assert bob.setattr(wd.fh(bob, "g660"), size=0)[0] == NFS3ERR_ACCES
    assert (wd.path / "g640").read_bytes() == b"secret"
    assert (wd.path / "g660").read_bytes() == b"Shared"


def test_directory_permissions_checked(wd, root, alice, bob):
    mkdir_meta(wd.path, "closed", 0, 0, 0o700)
    file_meta(wd.path / "closed", "inside", 0, 0, 0o644)
    mkdir_meta(wd.path, "xonly", 0, 0, 0o711)
    file_meta(wd.path / "xonly", "known", 0, 0, 0o644)
    mkdir_meta(wd.path, "ro", 0, 0, 0o755)
    file_meta(wd.path / "ro", "victim", 1000, 1000, 0o644)
    mkdir_meta(wd.path, "group", 0, 50, 0o775)
    closed = wd.fh(root, "closed")
    assert alice.lookup(closed, "inside")[0] == NFS3ERR_ACCES
    assert root.lookup(closed, "inside")[0] == NFS3_OK
    assert alice.readdir(wd.fh(alice, "xonly"))[0] == NFS3ERR_ACCES
    assert alice.readdirplus(wd.fh(alice, "xonly"))[0] == NFS3ERR_ACCES
    assert alice.lookup(wd.fh(alice, "xonly"), "known")[0] == NFS3_OK
    ro = wd.fh(alice, "ro")
    assert alice.create(ro, "new", how=GUARDED, mode=0o644)[0] == NFS3ERR_ACCES
    assert alice.mkdir(ro, "new", mode=0o755)[0] == NFS3ERR_ACCES
    assert alice.mknod(ro, "new", NF3FIFO, mode=0o644)[0] == NFS3ERR_ACCES
    assert alice.symlink(ro, "new", "x")[0] == NFS3ERR_ACCES
    assert alice.remove(ro, "victim")[0] == NFS3ERR_ACCES      # her file, but not her dir
    assert alice.rename(ro, "victim", wd.fh(alice), "v")[0] == NFS3ERR_ACCES
    assert alice.link(wd.fh(alice, "ro/victim"), ro, "l")[0] == NFS3ERR_ACCES
    mkdir_meta(wd.path / "ro", "emptydir", 1000, 1000, 0o777)
    assert alice.rmdir(ro, "emptydir")[0] == NFS3ERR_ACCES
    assert alice.setattr(wd.fh(alice, "ro"), mode=0o777)[0] == NFS3ERR_PERM
    assert sorted(os.listdir(wd.path / "ro")) == [META, "emptydir", "victim"]
    g = wd.fh(alice, "group")
    assert alice.create(g, "ok", how=GUARDED, mode=0o644)[0] == NFS3_OK
    assert bob.create(wd.fh(bob, "group"), "no", how=GUARDED, mode=0o644)[0] == NFS3ERR_ACCES


def test_sticky_directory(server, root, alice, bob):
    d = mkdir_meta(server.export, "sticky", 0, 0, 0o1777)
    w = WorkDir(server, d)
    file_meta(d, "bobs", 2000, 2000, 0o666)
    file_meta(d, "alices", 1000, 1000, 0o666)
    file_meta(d, "alices2", 1000, 1000, 0o666)
    ad = w.fh(alice)
    assert alice.remove(ad, "bobs")[0] == NFS3ERR_PERM
    assert alice.rename(ad, "bobs", ad, "mine")[0] == NFS3ERR_PERM
    assert alice.rename(ad, "alices", ad, "bobs")[0] == NFS3ERR_PERM   # would replace bob's
    assert (d / "bobs").exists() and (d / "alices").exists()
    assert alice.rename(ad, "alices", ad, "renamed")[0] == NFS3_OK
    assert alice.remove(ad, "renamed")[0] == NFS3_OK
    assert root.remove(w.fh(root), "bobs")[0] == NFS3_OK
    # the directory's owner may remove anything in it
    d2 = mkdir_meta(server.export, "sticky_bob", 2000, 2000, 0o1777)
    file_meta(d2, "alices", 1000, 1000, 0o644)
    assert bob.remove(WorkDir(server, d2).fh(bob), "alices")[0] == NFS3_OK


def test_moving_a_directory_to_another_parent_needs_write_on_it(wd, alice):
    """rename(2) of a directory into another parent rewrites its '..': Linux
    (fs/namei.c vfs_rename) asks for write permission on the directory moved."""
    p1 = mkdir_meta(wd.path, "p1", 1000, 1000, 0o755)
    mkdir_meta(wd.path, "p2", 1000, 1000, 0o755)
    mkdir_meta(p1, "rootsdir", 0, 0, 0o755)
    st, _ = alice.rename(wd.fh(alice, "p1"), "rootsdir", wd.fh(alice, "p2"), "rootsdir")
    assert st == NFS3ERR_ACCES
    assert (p1 / "rootsdir").is_dir()


def test_malformed_metadata_warns_once_with_several_workers(tmp_path):
    """With several worker processes (--workers, each with its own cache) the
    warning about a malformed file must still be logged once, whichever
    worker reads it."""
    from fastnfs.cli import build_parser
    try:
        build_parser().parse_args(["serve", "/", "--workers", "2"])
    except SystemExit:
        pytest.skip("this fastnfs has no --workers option")
    export = tmp_path / "mw"
    export.mkdir()
    (export / "f").write_bytes(b"")
    put_meta(export, "f", raw="virtfs.uid=7\nnonsense\n")
    srv = FastnfsProcess(export, ["--virtfs", "--workers", "2"]).start()
    try:
        for _ in range(12):
            n = connect(srv, ROOT)
            try:
                st, r = n.lookup(n.root, "f")
                assert st == NFS3_OK and r["attrs"]["uid"] == 7
            finally:
                n.close()
    finally:
        srv.stop()
    lines = warnings_about(srv, "%s/f:2" % META)
    assert len(lines) == 1, "\n".join(lines)


def test_chmod_through_one_hard_link_shows_through_the_other(wd, root):
    """Two names of one file are one inode: a SETATTR through either must show
    through both (QEMU rewrites a linked metadata file in place for this)."""
    file_meta(wd.path, "f", 5, 6, 0o644, b"x")
    d = wd.fh(root)
    assert root.link(wd.fh(root, "f"), d, "hard")[0] == NFS3_OK
    assert root.setattr(wd.fh(root, "f"), mode=0o600, uid=7)[0] == NFS3_OK
    a_f = wd.attrs(root, "f")
    a_h = wd.attrs(root, "hard")
    assert (a_h["mode"], a_h["uid"]) == (a_f["mode"], a_f["uid"]) == (0o600, 7)


def test_failed_metadata_write_leaves_no_entry_behind(wd, alice):
    """CREATE/MKDIR/MKNOD where the metadata cannot be written (here DIR/.virtfs_metadata
    is a regular file) must fail without leaving an entry that has no metadata
    (it would show the server's own owner, root, to every client)."""
    (wd.path / META).write_bytes(b"")
    d = wd.fh(alice)
    results = {
        "create": alice.create(d, "c", how=GUARDED, mode=0o644)[0],
        "mkdir": alice.mkdir(d, "m", mode=0o755)[0],
        "mknod": alice.mknod(d, "n", NF3CHR, rdev=(1, 3), mode=0o600)[0],
        "symlink": alice.symlink(d, "s", "t")[0],
    }
    left = sorted(set(os.listdir(wd.path)) - {META})
    assert all(st != NFS3_OK for st in results.values()) and left == [], (results, left)


def test_malformed_root_metadata_warns_once(tmp_path):
    export = tmp_path / "badroot"
    export.mkdir()
    os.chmod(export, 0o700)
    put_meta(export, None, raw="virtfs.uid=3\nvirtfs.mode=16877\nvirtfs.gid=x\n")
    srv = FastnfsProcess(export, ["--virtfs"]).start()
    try:
        n = connect(srv, ROOT)
        try:
            for _ in range(3):
                a = n.getattr(n.root)[1]["attrs"]
                n.readdir_all(n.root, plus=True)
            names = {e["name"] for e in n.readdir_all(n.root)}
        finally:
            n.close()
    finally:
        srv.stop()
    assert (a["uid"], a["gid"], a["mode"]) == (3, os.stat(export).st_gid, 0o755)
    assert names == {b".", b".."}
    lines = warnings_about(srv, META_ROOT + ":3")
    assert len(lines) == 1, srv.log()[-2000:]
    assert "Traceback" not in srv.log()


# ================================================================ unprivileged server


@pytest.fixture
def as_nobody(monkeypatch, tmp_path, public_dir):
    """Make FastnfsProcess start the server as uid/gid 65534 (as ptxdist runs unfsd:
    an ordinary user), through a wrapper in place of sys.executable."""
    start_servers_as_nobody(monkeypatch, tmp_path)
    export = public_dir / "export"
    export.mkdir()
    return export


def test_unprivileged_server(as_nobody):
    export = as_nobody
    build_ptxdist_tree(export, disk_owner=(NOBODY, NOBODY))
    (export / "etc" / "locked").write_bytes(b"")
    put_meta(export / "etc", "locked", 0, 0, stat.S_IFREG | 0o644)
    os.chmod(export / "etc" / META / "locked", 0)            # unreadable for the server
    for dirpath, dirnames, filenames in os.walk(export):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), NOBODY, NOBODY)
    srv = FastnfsProcess(export, ["--virtfs"]).start()
    try:
        assert int(re.search(r"fastnfs\[(\d+)\]", srv.log()).group(1)) > 0
        r = connect(srv, ROOT)
        a = connect(srv, ALICE)
        w = WorkDir(srv, export / "dev")
        try:
            assert w.attrs(r, "console")["rdev"] == (5, 1)
            for _ in range(2):
                att = WorkDir(srv, export / "etc").attrs(r, "locked")
            assert (att["uid"], att["mode"]) == (NOBODY, stat.S_IMODE(
                os.lstat(export / "etc" / "locked").st_mode))
            # root's chown and mknod work although the server holds no privilege
            tmpd = WorkDir(srv, export / "tmp")
            assert r.mknod(tmpd.fh(r), "c", NF3CHR, rdev=(240, 300), mode=0o600)[0] == NFS3_OK
            assert a.create(tmpd.fh(a), "mine", how=GUARDED, mode=0o600)[0] == NFS3_OK
            assert r.setattr(tmpd.fh(r, "mine"), uid=123, gid=456)[0] == NFS3_OK
            assert get_meta(export / "tmp", "c")["rdev"] == 1110060
            assert get_meta(export / "tmp", "mine")["uid"] == 123
            for n in ("c", "mine"):
                st = os.lstat(export / "tmp" / n)
                assert stat.S_ISREG(st.st_mode) and st.st_uid == NOBODY
            # the permission checks are the metadata's, not the server's own
            assert a.read(WorkDir(srv, export / "etc").fh(a, "shadow"), 0, 10)[0] == NFS3ERR_ACCES
        finally:
            r.close()
            a.close()
    finally:
        srv.stop()
    log = srv.log()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "WARNING" in line and "etc/%s/locked" % META in line]
    assert len(lines) == 1, log[-3000:]


# ================================================================ libnfs
@pytest.fixture
def ptx(tmp_path):
    """A ptxdist-like virtfs tree (disk owner 1000:1000, metadata root) and its server."""
    export = tmp_path / "rootfs"
    export.mkdir()
    build_ptxdist_tree(export)
    # ptxdist's style: its one QEMU-style symlink is there to be read, and a
    # mixed tree would get a warning at start (test_virtfs_symlinks.py)
    srv = FastnfsProcess(export, ["--virtfs", "--virtfs-symlinks=host"]).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


def _nfs_ls(srv, rel="", recursive=False) -> dict:
    """nfs-ls's long listing: name -> (mode string, uid, gid)."""
    cmd = ["nfs-ls"] + (["-R"] if recursive else []) + [srv.url(rel)]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) >= 6:
            out[parts[-1]] = (parts[0], int(parts[2]), int(parts[3]))
    return out


@pytest.mark.libnfs
def test_libnfs_lists_a_virtfs_tree(ptx):
    require("nfs-ls")
    top = _nfs_ls(ptx)
    assert set(top) == {"bin", "dev", "etc", "tmp"}, top
    assert all(uid == 0 and gid == 0 for _m, uid, gid in top.values()), top
    dev = _nfs_ls(ptx, "dev")
    assert dev["console"] == ("crw-------", 0, 0)
    assert dev["null"] == ("crw-rw-rw-", 0, 0)
    assert dev["x240"][0].startswith("c") and dev["sda1"] == ("brw-rw----", 0, 6)
    bins = _nfs_ls(ptx, "bin")
    assert bins["sh"][0].startswith("l") and bins["ls"][0].startswith("l")
    assert bins["busybox"][1:] == (0, 0)
    etc = _nfs_ls(ptx, "etc")
    assert etc["shadow"] == ("-rw-------", 0, 0)
    assert etc["hostname"][1:] == (1000, 1000)            # no metadata: the disk's owner
    everything = _nfs_ls(ptx, recursive=True)
    assert not [n for n in everything if "virtfs" in n], everything
    assert "dev/console" in everything or "console" in everything


# ================================================================ Linux kernel client
GUEST_CHECK = r'''
fails=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fails=$((fails+1)); fi; }
'''

KERNEL_SCRIPT = GUEST_CHECK + r'''
umask 022
ls -lna . bin dev etc tmp
# -- reading: owners, modes and devices from the metadata
check test "$(stat -c '%u %g %a' .)" = "0 0 755"
check test "$(stat -c '%u %g %a' tmp)" = "0 0 1777"
check test "$(stat -c '%u %g %a' etc/shadow)" = "0 0 600"
check test "$(stat -c '%u %g' etc/hostname)" = "1000 1000"
check test "$(stat -c '%a' bin/busybox)" = 4755
check test -c dev/console
check test "$(stat -c '%u %g %a %t %T' dev/console)" = "0 0 600 5 1"
check test "$(stat -c '%t %T' dev/null)" = "1 3"
check test "$(stat -c '%t %T' dev/x240)" = "f0 12c"
check test -b dev/sda1
check test "$(stat -c '%g %t %T' dev/sda1)" = "6 8 1"
check test -p dev/initctl
check test -L bin/sh
check test "$(readlink bin/sh)" = busybox
check test "$(readlink bin/ls)" = busybox
check test "$(ls -lnaR . | grep -c virtfs)" = 0
check test ! -e .virtfs_metadata
check test ! -e .virtfs_metadata_root
check test ! -e dev/.virtfs_metadata
# a device node served from metadata works as one in the guest
check sh -c 'echo discard > dev/null'
check test "$(head -c 4 dev/null | wc -c)" = 0
# -- writing
check mknod x c 240 300
check test -c x
check test "$(stat -c '%u %g %t %T' x)" = "0 0 f0 12c"
check mknod f p
check test -p f
echo data > file
check chown 123:456 file
check chmod 4755 file
check test "$(stat -c '%u %g %a' file)" = "123 456 4755"
check chown 123:456 etc/passwd
check chmod 4755 etc/passwd
check test "$(stat -c '%u %g %a' etc/passwd)" = "123 456 4755"
check mkdir d
check test "$(stat -c '%u %g %a' d)" = "0 0 755"
check rmdir d
check test ! -e d
echo a > a
check mv a b
check test "$(cat b)" = a
check test ! -e a
check mv b dev/moved
check ln file hard
check test "$(stat -c '%h %u %a' hard)" = "2 123 4755"
check ln -s tgt sym
check test "$(readlink sym)" = tgt
mkdir -p deep/er && echo x > deep/er/x && chown 7:7 deep/er/x
check rm -r deep
check test ! -e deep
echo rootfile > tmp/rootfile
# -- an ordinary user in the guest: the metadata says who may do what
if command -v su >/dev/null; then
    mkdir -p /etc
    printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/tmp:/bin/sh\n' > /etc/passwd
    printf 'root:x:0:\nalice:x:1000:\n' > /etc/group
    as() { su -s /bin/sh alice -c "$1"; }
    check test "$(as 'id -u')" = 1000
    check as '! cat etc/shadow'
    check as '! echo x >> etc/passwd'
    check as '! chmod 777 x'
    check as '! chown 1000 x'
    check as '! touch newfile'
    check test ! -e newfile
    check as 'echo mine > tmp/u1000'
    check test "$(stat -c '%u %g' tmp/u1000)" = "1000 1000"
    check as 'chmod 600 tmp/u1000'
    check as '! rm -f tmp/rootfile'
    check test -e tmp/rootfile
    check as '! mv tmp/rootfile tmp/stolen'
    check as 'mkfifo tmp/fifo'
    check test "$(stat -c '%u %F' tmp/fifo)" = "1000 fifo"
else
    echo "no su: user checks skipped"
fi
ls -lna . dev tmp
echo "failures: $fails"
exit $fails
'''


@pytest.mark.vm
def test_kernel_client_on_a_ptxdist_tree(kit, ptx):
    from vm import guest
    e = ptx.export
    disk_passwd = os.lstat(e / "etc" / "passwd")
    res = guest.run(KERNEL_SCRIPT, nfs_port=ptx.port, export=str(e), timeout=300, mem=384)
    fails = [line for line in res.output.splitlines() if line.startswith("FAIL")]
    assert res.rc == 0 and not fails, res.describe()
    # mknod: an empty regular file owned by the server, plus metadata
    for name, fmt in (("x", stat.S_IFCHR), ("f", stat.S_IFIFO)):
        st = os.lstat(e / name)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_uid == SERVER_UID, name
        m = get_meta(e, name)
        assert (m["uid"], m["gid"], stat.S_IFMT(m["mode"])) == (0, 0, fmt), (name, m)
    assert get_meta(e, "x")["rdev"] == 1110060
    # chown/chmod: metadata only
    assert get_meta(e, "file") == {"uid": 123, "gid": 456, "mode": stat.S_IFREG | 0o4755}
    st = os.lstat(e / "file")
    assert st.st_uid == SERVER_UID and not st.st_mode & 0o7000
    assert get_meta(e / "etc", "passwd") == {"uid": 123, "gid": 456,
                                             "mode": stat.S_IFREG | 0o4755}
    st = os.lstat(e / "etc" / "passwd")
    assert (st.st_uid, st.st_gid, st.st_mode) == (disk_passwd.st_uid, disk_passwd.st_gid,
                                                   disk_passwd.st_mode)
    # mkdir + rmdir, mv, ln, ln -s
    assert not (e / "d").exists() and not (e / META / "d").exists()
    assert not (e / META / "a").exists() and not (e / META / "b").exists()
    assert get_meta(e / "dev", "moved")["uid"] == 0
    assert get_meta(e, "hard") == get_meta(e, "file")
    assert os.lstat(e / "hard").st_ino == os.lstat(e / "file").st_ino
    assert os.readlink(e / "sym") == "tgt"
    assert stat.S_IFMT(get_meta(e, "sym")["mode"]) == stat.S_IFLNK
    assert not (e / "deep").exists()
    if "no su: user" not in res.output:
        assert get_meta(e / "tmp", "u1000")["uid"] == 1000
        assert get_meta(e / "tmp", "fifo")["uid"] == 1000
        assert get_meta(e / "tmp", "u1000") == {"uid": 1000, "gid": 1000,
                                                 "mode": stat.S_IFREG | 0o600}
        assert (e / "tmp" / "rootfile").exists() and not (e / "newfile").exists()
    # no temporary file left in any metadata directory, no warnings
    for dirpath, _dirs, files in os.walk(e):
        if os.path.basename(dirpath) == META:
            assert not [f for f in files if re.search(r"\.tmp[0-9a-f]{8}$", f)], (dirpath, files)
    assert not [line for line in ptx.log().splitlines() if "WARNING" in line], ptx.log()[-3000:]


NFSROOT_SCRIPT = r'''
umount -l /dev 2>/dev/null
echo "== ls"
ls -ln /dev
echo "== stat"
stat -c '%n %F %u:%g %a %t:%T' /dev/console /dev/null /dev/x240 /bin/sh /bin/busybox
echo "== id"
id
echo hello > /dev/null && echo "devnull-ok"
cat /etc/hostname
exit 7
'''


@pytest.mark.vm
def test_nfsroot_boot_of_a_virtfs_busybox_rootfs(kit, tmp_path):
    """The kernel boots a root filesystem whose /bin/sh is a QEMU-style
    symlink-as-file and whose device nodes are metadata only."""
    from vm import guest
    busybox = guest._busybox()
    if busybox is None:
        pytest.skip("no static busybox")
    e = tmp_path / "nfsroot"
    e.mkdir()
    build_ptxdist_tree(e)
    (e / "bin" / "busybox").write_bytes(Path(busybox).read_bytes())
    os.chmod(e / "bin" / "busybox", 0o644)    # not executable on disk: the metadata says 4755
    os.lchown(e / "bin" / "busybox", 1000, 1000)
    for applet in ("ls", "stat", "id", "cat", "umount", "echo"):
        if not (e / "bin" / applet).exists():
            os.symlink("busybox", e / "bin" / applet)
    (e / "etc" / "group").write_text("root:x:0:\n")
    srv = FastnfsProcess(e, ["--virtfs", "--virtfs-symlinks=host"]).start()
    try:
        res = guest.run(NFSROOT_SCRIPT, nfs_port=srv.port, export=str(e), mode="nfsroot",
                        timeout=300, mem=384)
    finally:
        srv.stop()
    out = res.output
    assert res.rc == 7, res.describe()
    assert re.search(r"^crw-------\s+1\s+0\s+0\s+5,\s+1 .*console$", out, re.M), out
    assert re.search(r"^crw-rw-rw-\s+1\s+0\s+0\s+1,\s+3 .*null$", out, re.M), out
    assert re.search(r"^crw--w----\s+1\s+0\s+0\s+240,\s+300 .*x240$", out, re.M), out
    assert re.search(r"^brw-rw----\s+1\s+0\s+6\s+8,\s+1 .*sda1$", out, re.M), out
    assert "virtfs" not in out.split("== ls")[1].split("== stat")[0]
    assert "/dev/console character special file 0:0 600 5:1" in out, out
    assert "/bin/sh symbolic link 0:0 777" in out, out
    assert "/bin/busybox regular file 0:0 4755" in out, out
    assert "uid=0(root) gid=0(root)" in out, out
    assert "devnull-ok" in out and "ptx" in out, out
    assert "Traceback" not in srv.log(), srv.log()[-3000:]
