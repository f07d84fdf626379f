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
from rpcclient import (FILE_SYNC, GUARDED, NF3CHR, NF3DIR, NFS3_OK, NFS3ERR_EXIST,
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


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    top = tmp_path_factory.mktemp("farm")
    base = top / "rootfs"
    make_base(base)
    boards = top / "boards"
    before = tree_digest(base)
    srv = FastnfsProcess(base, ["--boards", str(boards)]).start()
    yield {"srv": srv, "base": base, "boards": boards, "before": before, "top": top}
    srv.stop()


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
