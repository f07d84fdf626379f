"""Board farms: a private copy-on-write layer per board over one read-only base.

`fastnfs serve BASE --boards DIR` in a child process; clients over real
sockets (tests/rpcclient.py) mount BASE@b1, BASE@b2 and BASE itself.
"""

from __future__ import annotations

import hashlib
import os
import stat as S
import subprocess
import sys

import pytest

from conftest import FastnfsProcess
from rpcclient import (FILE_SYNC, GUARDED, NF3CHR, NFS3_OK, NFS3ERR_EXIST,
                       NFS3ERR_NOENT, NFS3ERR_NOTEMPTY, NFS3ERR_ROFS, NFS3ERR_STALE, AuthSys,
                       Nfs3)

MNT3ERR_INVAL = 22


def tree_digest(root) -> dict:
    """path -> (type, mode, uid, gid, size, mtime, ino, nlink, content hash or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in sorted(dirs + files) + ["."]:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if S.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()
            elif S.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            else:
                extra = None
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                             st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                             st.st_nlink, extra)
    return out


def make_base(base):
    base.mkdir()
    (base / "etc").mkdir()
    (base / "etc" / "hostname").write_text("base\n")
    (base / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (base / "bin").mkdir()
    (base / "bin" / "busybox").write_bytes(b"\x7fELF" + b"x" * 5000)
    os.link(base / "bin" / "busybox", base / "bin" / "sh")
    (base / "opt").mkdir()
    (base / "opt" / "app").mkdir()
    (base / "opt" / "app" / "main.py").write_text("print('hi')\n")
    (base / "opt" / "app" / "data").mkdir()
    (base / "opt" / "app" / "data" / "x").write_text("x")
    (base / "var").mkdir()
    (base / "var" / "log").mkdir()
    (base / "var" / "log" / "old.log").write_text("old\n")
    (base / "many").mkdir()
    for i in range(120):
        (base / "many" / ("file-%03d-with-a-long-name" % i)).write_text(str(i))
    os.symlink("busybox", base / "bin" / "ls")


def new_farm(top) -> dict:
    """A populated base under top, the boards directory beside it, the base's digest."""
    base = top / "rootfs"
    make_base(base)
    return {"base": base, "boards": top / "boards", "before": tree_digest(base), "top": top}


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    f = new_farm(tmp_path_factory.mktemp("farm"))
    f["srv"] = FastnfsProcess(f["base"], ["--boards", str(f["boards"])]).start()
    yield f
    f["srv"].stop()


def connect(farm, what, cred=None):
    n = Nfs3.connect(farm["srv"].port, cred=cred or AuthSys(uid=0, gid=0))
    n.root = n.mount("%s%s" % (farm["base"], what))
    return n


def lookup(n, path):
    fh = n.root
    for c in path.split("/"):
        st, r = n.lookup(fh, c)
        if st != NFS3_OK:
            return st, None
        fh = r["fh"]
    return NFS3_OK, fh


def attrs(n, fh):
    st, r = n.getattr(fh)
    assert st == NFS3_OK, st
    return r["attrs"]


def read_all(n, fh):
    st, r = n.read(fh, 0, 1 << 16)
    assert st == NFS3_OK, st
    return r["data"]


def names(n, fh, count=4096, plus=False):
    return sorted(e["name"] for e in n.readdir_all(fh, count=count, plus=plus)
                  if e["name"] not in (b".", b".."))


def boards_cli(farm, *args):
    return subprocess.run([sys.executable, "-m", "fastnfs", "boards", *args,
                           "--boards", str(farm["boards"])],
                          capture_output=True, text=True, timeout=60)


# -- isolation -------------------------------------------------------------------------

def test_changes_in_one_board_are_invisible_elsewhere(farm):
    b1, b2, base = connect(farm, "@b1"), connect(farm, "@b2"), connect(farm, "")
    try:
        # write to a base file
        st, fh = lookup(b1, "etc/hostname")
        fid = attrs(b1, fh)["fileid"]
        assert b1.write(fh, 0, b"board1\n", stable=FILE_SYNC)[0] == NFS3_OK
        assert read_all(b1, fh) == b"board1\n"
        # chmod and chown of a base file (metadata only)
        _, pw = lookup(b1, "etc/passwd")
        assert b1.setattr(pw, mode=0o600, uid=1234, gid=99)[0] == NFS3_OK
        a = attrs(b1, pw)
        assert (a["mode"] & 0o7777, a["uid"], a["gid"]) == (0o600, 1234, 99)
        # mknod of a device node, unprivileged server
        _, etc = lookup(b1, "etc")
        st, r = b1.mknod(b1.root, "console", NF3CHR, rdev=(5, 1), mode=0o620)
        assert st == NFS3_OK, st
        assert r["attrs"]["type"] == NF3CHR and r["attrs"]["rdev"] == (5, 1)
        # rename, unlink, rmdir
        _, log = lookup(b1, "var/log")
        assert b1.rename(log, "old.log", log, "old.log.1")[0] == NFS3_OK
        _, app = lookup(b1, "opt/app")
        assert b1.remove(app, "main.py")[0] == NFS3_OK
        _, data = lookup(b1, "opt/app/data")
        assert b1.remove(data, "x")[0] == NFS3_OK
        assert b1.rmdir(app, "data")[0] == NFS3_OK
        # what board 1 sees
        assert lookup(b1, "etc/hostname")[1] is not None
        assert names(b1, log) == [b"old.log.1"]
        assert names(b1, app) == []
        assert lookup(b1, "opt/app/main.py")[0] == NFS3ERR_NOENT
        assert b"console" in names(b1, b1.root)
        # the handle and fileid did not change by the copy-up
        assert attrs(b1, fh)["fileid"] == fid
        assert lookup(b1, "etc/hostname")[1] == fh
        # board 2 and the base see none of it
        for other in (b2, base):
            _, h = lookup(other, "etc/hostname")
            assert read_all(other, h) == b"base\n"
            _, p = lookup(other, "etc/passwd")
            assert attrs(other, p)["uid"] == os.getuid()
            assert lookup(other, "console")[0] == NFS3ERR_NOENT
            _, ol = lookup(other, "var/log")
            assert names(other, ol) == [b"old.log"]
            _, oa = lookup(other, "opt/app")
            assert names(other, oa) == [b"data", b"main.py"]
            assert names(other, lookup(other, "opt/app/data")[1]) == [b"x"]
        # the base export itself is read-only
        _, bh = lookup(base, "etc/hostname")
        assert base.write(bh, 0, b"no")[0] == NFS3ERR_ROFS
        assert base.create(base.root, "nope", how=GUARDED)[0] == NFS3ERR_ROFS
        # and different boards have different fsids
        assert attrs(b1, b1.root)["fsid"] != attrs(b2, b2.root)["fsid"]
    finally:
        b1.close()
        b2.close()
        base.close()
    assert tree_digest(farm["base"]) == farm["before"]


def test_hard_links_stay_one_object(farm):
    b = connect(farm, "@hl")
    try:
        _, bb = lookup(b, "bin/busybox")
        _, sh = lookup(b, "bin/sh")
        fid = attrs(b, bb)["fileid"]
        assert attrs(b, sh)["fileid"] == fid
        assert b.write(bb, 0, b"NEW!", stable=FILE_SYNC)[0] == NFS3_OK
        assert read_all(b, sh)[:4] == b"NEW!"
        assert attrs(b, sh)["fileid"] == fid == attrs(b, bb)["fileid"]
        assert attrs(b, sh)["nlink"] == 2
        assert b.write(sh, 4, b"more", stable=FILE_SYNC)[0] == NFS3_OK
        assert read_all(b, bb)[:8] == b"NEW!more"
    finally:
        b.close()
    assert tree_digest(farm["base"]) == farm["before"]


def test_rename_base_directory_with_content(farm):
    b = connect(farm, "@ren")
    try:
        _, opt = lookup(b, "opt")
        _, app = lookup(b, "opt/app")
        fid = attrs(b, app)["fileid"]
        assert b.rename(opt, "app", b.root, "app2")[0] == NFS3_OK
        assert lookup(b, "opt/app")[0] == NFS3ERR_NOENT
        st, app2 = lookup(b, "app2")
        assert st == NFS3_OK and attrs(b, app2)["fileid"] == fid
        assert names(b, app2) == [b"data", b"main.py"]
        _, main = lookup(b, "app2/main.py")
        assert read_all(b, main) == b"print('hi')\n"
        assert names(b, lookup(b, "app2/data")[1]) == [b"x"]
        # the old handle of the directory still names it
        assert names(b, app) == [b"data", b"main.py"]
        # a new directory where the old one was is empty (opaque)
        assert b.mkdir(opt, "app")[0] == NFS3_OK
        assert names(b, lookup(b, "opt/app")[1]) == []
        # and a rename of a base file
        _, etc = lookup(b, "etc")
        assert b.rename(etc, "passwd", b.root, "passwd.moved")[0] == NFS3_OK
        assert read_all(b, lookup(b, "passwd.moved")[1]).startswith(b"root:")
    finally:
        b.close()
    assert tree_digest(farm["base"]) == farm["before"]


def test_rmdir_of_merged_directory(farm):
    b = connect(farm, "@rm")
    try:
        _, opt = lookup(b, "opt")
        _, app = lookup(b, "opt/app")
        assert b.rmdir(opt, "app")[0] == NFS3ERR_NOTEMPTY
        assert b.mkdir(app, "newdir")[0] == NFS3_OK
        assert b.rmdir(opt, "app")[0] == NFS3ERR_NOTEMPTY
        _, data = lookup(b, "opt/app/data")
        assert b.remove(data, "x")[0] == NFS3_OK
        assert b.rmdir(app, "data")[0] == NFS3_OK
        assert b.remove(app, "main.py")[0] == NFS3_OK
        assert b.rmdir(opt, "app")[0] == NFS3ERR_NOTEMPTY
        assert b.rmdir(app, "newdir")[0] == NFS3_OK
        assert b.rmdir(opt, "app")[0] == NFS3_OK
        assert lookup(b, "opt/app")[0] == NFS3ERR_NOENT
        assert names(b, opt) == []
        # a directory made again in its place does not show the base's content
        assert b.mkdir(opt, "app")[0] == NFS3_OK
        assert names(b, lookup(b, "opt/app")[1]) == []
    finally:
        b.close()


def test_merged_readdir_paging(farm):
    b = connect(farm, "@page")
    try:
        _, many = lookup(b, "many")
        for i in range(0, 120, 3):
            assert b.remove(many, "file-%03d-with-a-long-name" % i)[0] == NFS3_OK
        for i in range(30):
            assert b.create(many, "new-%02d" % i, how=GUARDED)[0] == NFS3_OK
        want = sorted([("file-%03d-with-a-long-name" % i).encode() for i in range(120)
                       if i % 3] + [("new-%02d" % i).encode() for i in range(30)])
        for plus in (False, True):
            entries = [e for e in b.readdir_all(many, count=512, plus=plus)
                       if e["name"] not in (b".", b"..")]
            assert sorted(e["name"] for e in entries) == want
            assert len(entries) == len(want)       # no repeats across pages
            for e in entries[::17]:
                st, fh = lookup(b, "many/" + e["name"].decode())
                assert attrs(b, fh)["fileid"] == e["fileid"]
    finally:
        b.close()


def test_fileids_unique_within_board(farm):
    b = connect(farm, "@ids")
    try:
        _, etc = lookup(b, "etc")
        seen = {}
        for i in range(20):
            st, r = b.create(etc, "n%d" % i, how=GUARDED)
            assert st == NFS3_OK
            seen[r["attrs"]["fileid"]] = i
        for e in b.readdir_all(b.root):
            pass
        base_ids = {e["fileid"] for e in b.readdir_all(etc) if e["name"] not in (b".", b"..")}
        assert len(base_ids) == 22
    finally:
        b.close()


# -- names and security ------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", ".trash", "b@c", "x" * 65, "é",
                                 "../../etc", ".new-x"])
def test_bad_board_names_refused(farm, bad):
    n = Nfs3.connect(farm["srv"].port)
    try:
        st, _ = n.mnt("%s@%s" % (farm["base"], bad))
        assert st != NFS3_OK
        if "/" not in bad:
            assert st == MNT3ERR_INVAL
    finally:
        n.close()
    assert "refused mount" in farm["srv"].log()


def test_bookkeeping_names_hidden(farm):
    b = connect(farm, "@hid")
    try:
        assert b.mkdir(b.root, "d")[0] == NFS3_OK
        for name in (".virtfs_metadata", ".virtfs_metadata_root"):
            assert lookup(b, name)[0] != NFS3_OK
            assert lookup(b, "d/" + name)[0] != NFS3_OK
            assert b.create(b.root, name, how=GUARDED)[0] != NFS3_OK
        assert not [x for x in names(b, b.root) if x.startswith(b".virtfs")]
        st, r = b.lookup(b.root, "..")
        assert st == NFS3_OK and attrs(b, r["fh"])["fileid"] == attrs(b, b.root)["fileid"]
    finally:
        b.close()


def test_handles_of_one_board_do_not_work_in_another(farm):
    b1, b2 = connect(farm, "@x1"), connect(farm, "@x2")
    try:
        st, r = b1.create(b1.root, "mine", how=GUARDED)
        fh = r["fh"]
        # the same bytes with board 2's export id
        forged = fh[:4] + b2.root[4:8] + fh[8:]
        assert b2.getattr(forged)[0] == NFS3ERR_STALE
        assert lookup(b2, "mine")[0] == NFS3ERR_NOENT
    finally:
        b1.close()
        b2.close()


# -- management ---------------------------------------------------------------------------

def test_reset_while_mounted(farm):
    b = connect(farm, "@rst")
    try:
        _, hn = lookup(b, "etc/hostname")
        b.write(hn, 0, b"changed\n", stable=FILE_SYNC)
        st, r = b.create(b.root, "created", how=GUARDED)
        created = r["fh"]
        assert read_all(b, created) == b""
        r = boards_cli(farm, "reset", "rst")
        assert r.returncode == 0, r.stderr
        assert read_all(b, hn) == b"base\n"            # the base again, same handle
        assert b.getattr(created)[0] == NFS3ERR_STALE   # gone with the layer
        assert lookup(b, "created")[0] == NFS3ERR_NOENT
        assert b.create(b.root, "again", how=GUARDED)[0] == NFS3_OK
    finally:
        b.close()


def test_diff_and_list(farm):
    b = connect(farm, "@dif")
    try:
        _, hn = lookup(b, "etc/hostname")
        b.write(hn, 0, b"dif\n", stable=FILE_SYNC)
        _, pw = lookup(b, "etc/passwd")
        b.setattr(pw, mode=0o640)
        _, etc = lookup(b, "etc")
        b.create(etc, "added", how=GUARDED)
        _, log = lookup(b, "var/log")
        b.remove(log, "old.log")
    finally:
        b.close()
    r = boards_cli(farm, "diff", "dif")
    assert r.returncode == 0, r.stderr
    lines = sorted(" ".join(ln.split()) for ln in r.stdout.splitlines())
    assert lines == sorted(["added /etc/added", "modified /etc/hostname",
                            "metadata /etc/passwd", "deleted /var/log/old.log"])
    r = boards_cli(farm, "list")
    assert r.returncode == 0, r.stderr
    row = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("dif ")][0]
    assert row[2:5] == ["2", "1", "1"], r.stdout
    r = boards_cli(farm, "rm", "dif")
    assert r.returncode == 0
    assert "dif " not in boards_cli(farm, "list").stdout


def test_restart_keeps_handles(farm):
    b = connect(farm, "@rs")
    st, r = b.create(b.root, "kept", how=GUARDED)
    kept = r["fh"]
    b.write(kept, 0, b"kept", stable=FILE_SYNC)
    _, hn = lookup(b, "etc/hostname")
    b.write(hn, 0, b"rs\n", stable=FILE_SYNC)
    root = b.root
    b.close()
    farm["srv"].restart()
    n = Nfs3.connect(farm["srv"].port, cred=AuthSys(uid=0, gid=0))
    try:
        assert read_all(n, kept) == b"kept"
        assert read_all(n, hn) == b"rs\ne\n"   # "base\n" overwritten from 0
        assert n.getattr(root)[0] == NFS3_OK
    finally:
        n.close()


def test_base_unchanged_on_disk(farm):
    assert tree_digest(farm["base"]) == farm["before"]


# -- a virtfs base served by an unprivileged server ------------------------------------

def test_virtfs_base_unprivileged(monkeypatch, tmp_path, public_dir):
    from conftest import NOBODY, start_servers_as_nobody
    from fastnfs.virtfs.store import Meta, make_rdev, write_meta
    start_servers_as_nobody(monkeypatch, tmp_path)
    base = public_dir / "rootfs"
    base.mkdir()
    for d in ("etc", "dev", "bin"):
        (base / d).mkdir()
    (base / "etc" / "shadow").write_text("root:*:1:0:::::\n")
    (base / "dev" / "console").write_bytes(b"")
    (base / "bin" / "su").write_bytes(b"\x7fELF-su")
    fd = os.open(base / "etc", os.O_RDONLY | os.O_DIRECTORY)
    write_meta(fd, b"shadow", Meta(0, 42, S.S_IFREG | 0o640, -1))
    os.close(fd)
    fd = os.open(base / "dev", os.O_RDONLY | os.O_DIRECTORY)
    write_meta(fd, b"console", Meta(0, 5, S.S_IFCHR | 0o600, make_rdev(5, 1)))
    os.close(fd)
    fd = os.open(base / "bin", os.O_RDONLY | os.O_DIRECTORY)
    write_meta(fd, b"su", Meta(0, 0, S.S_IFREG | 0o755, -1))
    os.close(fd)
    os.system("chmod -R a+rX %s" % base)
    boards = public_dir / "boards"
    boards.mkdir()
    os.chown(boards, NOBODY, NOBODY)
    before = tree_digest(base)
    srv = FastnfsProcess(base, ["--virtfs", "--boards", str(boards)],
                         log_path=public_dir / "srv.log").start()
    farm = {"srv": srv, "base": base}
    try:
        b1, b2 = connect(farm, "@v1"), connect(farm, "@v2")
        user = connect(farm, "@v1", cred=AuthSys(uid=1000, gid=1000))
        _, sh = lookup(b1, "etc/shadow")
        a = attrs(b1, sh)
        assert (a["uid"], a["gid"], a["mode"] & 0o7777) == (0, 42, 0o640)
        _, con = lookup(b1, "dev/console")
        a = attrs(b1, con)
        assert a["type"] == NF3CHR and a["rdev"] == (5, 1)
        # the board's root changes owners, makes devices, sets set-id bits
        assert b1.write(sh, 0, b"ROOT", stable=FILE_SYNC)[0] == NFS3_OK
        a = attrs(b1, sh)
        assert (a["uid"], a["gid"], a["mode"] & 0o7777) == (0, 42, 0o640)
        assert b1.setattr(sh, uid=7, gid=8)[0] == NFS3_OK
        _, dev = lookup(b1, "dev")
        st, r = b1.mknod(dev, "ttyS0", NF3CHR, rdev=(4, 64), mode=0o660, uid=0, gid=5)
        assert st == NFS3_OK and r["attrs"]["rdev"] == (4, 64)
        _, su = lookup(b1, "bin/su")
        assert b1.setattr(su, mode=0o4755)[0] == NFS3_OK
        assert attrs(b1, su)["mode"] & 0o7777 == 0o4755
        assert b1.write(su, 0, b"\x7fELF-SU", stable=FILE_SYNC)[0] == NFS3_OK
        a = attrs(b1, su)
        assert (a["uid"], a["mode"] & 0o7777) == (0, 0o4755)
        # a user of the board may not read what is not theirs
        _, ush = lookup(user, "etc/shadow")
        assert user.read(ush, 0, 10)[0] != NFS3_OK
        a = attrs(b1, sh)
        assert (a["uid"], a["gid"]) == (7, 8)
        # board 2 sees the base's owners
        _, sh2 = lookup(b2, "etc/shadow")
        a = attrs(b2, sh2)
        assert (a["uid"], a["gid"]) == (0, 42) and read_all(b2, sh2).startswith(b"root:*")
        assert lookup(b2, "dev/ttyS0")[0] == NFS3ERR_NOENT
        assert attrs(b2, lookup(b2, "bin/su")[1])["mode"] & 0o7777 == 0o755
        # the layer keeps ownership in the mapped-file format
        assert (boards / "v1" / "upper" / "etc" / ".virtfs_metadata" / "shadow").is_file()
        for c in (b1, b2, user):
            c.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-3000:]
    assert tree_digest(base) == before


# -- the base changes on disk --------------------------------------------------------

def test_base_changes_show_where_the_board_did_not_change(tmp_path):
    base = tmp_path / "rootfs"
    make_base(base)
    boards = tmp_path / "boards"
    srv = FastnfsProcess(base, ["--boards", str(boards)]).start()
    try:
        b = connect({"srv": srv, "base": base}, "@chg")
        _, hn = lookup(b, "etc/hostname")
        b.write(hn, 0, b"mine\n", stable=FILE_SYNC)
        (base / "etc" / "hostname").write_text("new base\n")
        (base / "etc" / "passwd").write_text("new passwd\n")
        (base / "etc" / "added-later").write_text("later\n")
        _, pw = lookup(b, "etc/passwd")
        assert read_all(b, pw) == b"new passwd\n"
        assert read_all(b, hn) == b"mine\n"
        assert b"added-later" in names(b, lookup(b, "etc")[1])
        b.close()
        # etc changed: list says the layer was made against an older base
        r = subprocess.run([sys.executable, "-m", "fastnfs", "boards", "list", "--boards",
                            str(boards)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "older base" in r.stdout
        b = connect({"srv": srv, "base": base}, "@fresh")
        b.close()
        r = subprocess.run([sys.executable, "-m", "fastnfs", "boards", "list", "--boards",
                            str(boards), "--json"], capture_output=True, text=True, timeout=60)
        import json
        rows = {x["name"]: x for x in json.loads(r.stdout)}
        assert rows["chg"]["older_base"] is True and rows["fresh"]["older_base"] is False
    finally:
        srv.stop()


def test_board_by_address_and_exports_option(tmp_path):
    base = tmp_path / "rootfs"
    make_base(base)
    boards = tmp_path / "boards"
    exports = tmp_path / "exports"
    exports.write_text("%s (rw,no_root_squash,insecure,boards=%s,board_by_address)\n"
                       % (base, boards))
    srv = FastnfsProcess(base, exports_file=exports).start()
    try:
        n = Nfs3.connect(srv.port)
        root = n.mount(str(base))            # the client's own layer: 127.0.0.1
        st, r = n.create(root, "by-address", how=GUARDED)
        assert st == NFS3_OK
        n.close()
        assert (boards / "127.0.0.1" / "upper" / "by-address").exists()
        n = Nfs3.connect(srv.port)
        other = n.mount("%s@other" % base)
        assert n.lookup(other, "by-address")[0] == NFS3ERR_NOENT
        n.close()
        assert not (base / "by-address").exists()
    finally:
        srv.stop()


def test_creating_and_resetting_a_board_is_o1(farm):
    """A new board's layer holds nothing of the base; reset copies nothing."""
    b = connect(farm, "@cheap")
    try:
        assert names(b, lookup(b, "many")[1])[:1] == [b"file-000-with-a-long-name"]
    finally:
        b.close()
    layer = farm["boards"] / "cheap"
    files = [os.path.join(d, f) for d, _ds, fs in os.walk(layer) for f in fs]
    # the database and the root's metadata, nothing per base entry
    assert len(files) <= 4, files
    assert sum(os.lstat(f).st_size for f in files) < 200_000
    r = boards_cli(farm, "reset", "cheap")
    assert r.returncode == 0 and not (layer / "upper").exists()


def test_boards_inside_the_base_refused(tmp_path):
    base = tmp_path / "rootfs"
    make_base(base)
    r = subprocess.run([sys.executable, "-m", "fastnfs", "serve", str(base), "--boards",
                        str(base / "boards"), "-n", "0", "-p"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "must not contain one another" in r.stderr, r.stderr
    assert not (base / "boards").exists()


def test_more_union_cases(farm):
    b = connect(farm, "@edge")
    try:
        _, opt = lookup(b, "opt")
        _, app = lookup(b, "opt/app")
        # a change inside a base directory, then two renames of it (redirect kept)
        _, data = lookup(b, "opt/app/data")
        assert b.remove(data, "x")[0] == NFS3_OK
        assert b.create(app, "new.txt", how=GUARDED)[0] == NFS3_OK
        assert b.rename(opt, "app", b.root, "a1")[0] == NFS3_OK
        _, a1 = lookup(b, "a1")
        assert b.rename(b.root, "a1", opt, "a2")[0] == NFS3_OK
        st, a2 = lookup(b, "opt/a2")
        assert st == NFS3_OK
        assert names(b, a2) == [b"data", b"main.py", b"new.txt"]
        assert names(b, lookup(b, "opt/a2/data")[1]) == []     # the whiteout moved along
        assert names(b, opt) == [b"a2"]
        # LINK of a base file: one object, two names, fileid kept
        _, etc = lookup(b, "etc")
        _, pw = lookup(b, "etc/passwd")
        fid = attrs(b, pw)["fileid"]
        assert b.link(pw, b.root, "passwd.link")[0] == NFS3_OK
        _, pl = lookup(b, "passwd.link")
        assert attrs(b, pl)["fileid"] == fid and attrs(b, pl)["nlink"] == 2
        b.write(pl, 0, b"ROOT", stable=FILE_SYNC)
        assert read_all(b, pw).startswith(b"ROOT:x")
        # a symlink of the base, read and replaced
        _, ls = lookup(b, "bin/ls")
        assert b.readlink(ls)[1]["data"] == b"busybox"
        _, bin_ = lookup(b, "bin")
        assert b.remove(bin_, "ls")[0] == NFS3_OK
        assert b.symlink(bin_, "ls", "/bin/busybox")[0] == NFS3_OK
        _, ls = lookup(b, "bin/ls")
        assert b.readlink(ls)[1]["data"] == b"/bin/busybox"
        # rename of a file over a base file
        assert b.rename(etc, "hostname", etc, "passwd")[0] == NFS3_OK
        assert read_all(b, lookup(b, "etc/passwd")[1]) == b"base\n"
        assert lookup(b, "etc/hostname")[0] == NFS3ERR_NOENT
        # GUARDED create over a base name
        assert b.create(etc, "passwd", how=GUARDED)[0] == NFS3ERR_EXIST
        # rename a directory into itself
        assert b.rename(opt, "a2", a2, "inside")[0] != NFS3_OK
        # truncate of a base file copies it up
        _, bb = lookup(b, "bin/busybox")
        assert b.setattr(bb, size=3)[0] == NFS3_OK
        assert read_all(b, lookup(b, "bin/sh")[1]) == b"\x7fEL"
    finally:
        b.close()
    assert tree_digest(farm["base"]) == farm["before"]


def test_forged_handles_lead_nowhere(farm):
    from rpcclient import fh_fields
    import struct
    b1, b2 = connect(farm, "@f1"), connect(farm, "@f2")
    try:
        st, r = b2.create(b2.root, "secret-of-f2", how=GUARDED)
        assert st == NFS3_OK
        f = fh_fields(b1.root)

        def forge(ino, gen=0):
            return struct.pack(">BBHIQII", 1, 0, 0, f["export_id"], ino, f["dev"], gen)

        layer = farm["boards"] / "f2"
        outside = [os.lstat(layer / "layer.db").st_ino,
                   os.lstat(layer / "upper" / "secret-of-f2").st_ino,
                   os.lstat(layer / "upper").st_ino,
                   os.lstat(farm["boards"]).st_ino,
                   os.lstat("/etc/passwd").st_ino,
                   r["attrs"]["fileid"]]
        for ino in outside:
            assert b1.getattr(forge(ino))[0] == NFS3ERR_STALE, ino
        # a wrong device field or a junk export id never resolves either
        bad = bytearray(b1.root)
        bad[16:20] = b"\xff\xff\xff\xff"
        assert b1.getattr(bytes(bad))[0] == NFS3ERR_STALE
        assert b1.getattr(b1.root[:4] + b"\0\0\0\1" + b1.root[8:])[0] == NFS3ERR_STALE
    finally:
        b1.close()
        b2.close()


def test_exports_option_boards_checked(tmp_path):
    f = tmp_path / "exports"
    f.write_text("/srv/rootfs (rw,boards=/srv/boards)\n")
    r = subprocess.run([sys.executable, "-m", "fastnfs", "exports", "check", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for bad in ("boards", "boards=", "boards=relative/dir"):
        f.write_text("/srv/rootfs (rw,%s)\n" % bad)
        r = subprocess.run([sys.executable, "-m", "fastnfs", "exports", "check", str(f)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "boards" in (r.stdout + r.stderr), (bad, r.stdout)
