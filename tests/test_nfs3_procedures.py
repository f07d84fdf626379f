"""NFSv3 procedure semantics (RFC 1813 section 3.3) through the socket client.

Most tests share one server per module and work in their own subdirectory;
tests that restart the server use the function-scoped ``fastnfs`` fixture.
"""

from __future__ import annotations

import os
import re
import stat
import time

import pytest

from conftest import FastnfsProcess
from rpcclient import (ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND, ACCESS3_LOOKUP,
                       ACCESS3_MODIFY, ACCESS3_READ, DATA_SYNC, EXCLUSIVE, FILE_SYNC, GUARDED,
                       NF3BLK, NF3CHR, NF3DIR, NF3FIFO, NF3LNK, NF3REG, NF3SOCK, NFS3_OK,
                       NFS3ERR_BADHANDLE, NFS3ERR_BADTYPE, NFS3ERR_EXIST, NFS3ERR_INVAL,
                       NFS3ERR_ISDIR, NFS3ERR_NOENT, NFS3ERR_NOT_SYNC, NFS3ERR_NOTDIR,
                       NFS3ERR_NOTEMPTY, NFS3ERR_STALE, NFS3ERR_TOOSMALL, UNCHECKED, UNSTABLE,
                       AuthSys, Nfs3)

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    export = tmp_path_factory.mktemp("nfs3") / "export"
    export.mkdir()
    srv = FastnfsProcess(export).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


@pytest.fixture(scope="module")
def nfs(server):
    n = Nfs3.connect(server.port)
    n.root = n.mount(str(server.export))
    yield n
    n.close()


class WorkDir:
    def __init__(self, nfs, fh, path):
        self.nfs, self.fh, self.path = nfs, fh, path

    def lookup(self, name):
        st, r = self.nfs.lookup(self.fh, name)
        assert st == NFS3_OK, (name, st)
        return r["fh"]

    def file(self, name, data=b"", mode=0o644):
        p = self.path / name
        p.write_bytes(data)
        os.chmod(p, mode)
        return self.lookup(name)


@pytest.fixture
def wd(server, nfs, request):
    """A fresh directory for this test, created through NFS."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    st, r = nfs.mkdir(nfs.root, name, mode=0o755)
    assert st == NFS3_OK, st
    return WorkDir(nfs, r["fh"], server.export / name)


def mount_fresh(srv) -> Nfs3:
    n = Nfs3.connect(srv.port)
    n.root = n.mount(str(srv.export))
    return n


def ns(t) -> int:
    return t[0] * 1_000_000_000 + t[1]


# -- NULL, GETATTR ------------------------------------------------------------
def test_null(nfs):
    assert nfs.null() == (NFS3_OK, {})


def test_getattr_regular_file(wd):
    fh = wd.file("f", b"x" * 1234, 0o4751)
    os.link(wd.path / "f", wd.path / "f2")
    st, r = wd.nfs.getattr(fh)
    assert st == NFS3_OK
    a, s = r["attrs"], os.lstat(wd.path / "f")
    assert a["type"] == NF3REG
    assert a["mode"] == 0o4751  # permission bits only: no S_IFMT (section 2.6 fattr3)
    assert a["size"] == 1234
    assert a["fileid"] == s.st_ino
    assert a["nlink"] == 2
    assert (a["uid"], a["gid"]) == (s.st_uid, s.st_gid)
    assert ns(a["mtime"]) == s.st_mtime_ns and ns(a["ctime"]) == s.st_ctime_ns
    assert a["used"] >= 1234


def test_getattr_directory(wd):
    os.mkdir(wd.path / "sub")
    os.chmod(wd.path / "sub", 0o1777)
    st, r = wd.nfs.getattr(wd.lookup("sub"))
    a = r["attrs"]
    assert a["type"] == NF3DIR and a["mode"] == 0o1777 and a["nlink"] == 2
    assert a["fileid"] == os.stat(wd.path / "sub").st_ino


# -- SETATTR ------------------------------------------------------------------
def test_setattr_mode(wd):
    fh = wd.file("f", b"abc")
    st, r = wd.nfs.setattr(fh, mode=0o600)
    assert st == NFS3_OK
    assert stat.S_IMODE(os.stat(wd.path / "f").st_mode) == 0o600
    wcc = r["wcc"]
    assert wcc["before"] is not None and wcc["before"]["size"] == 3
    assert wcc["after"]["mode"] == 0o600


def test_setattr_size_truncate_and_extend(wd):
    fh = wd.file("f", b"0123456789" * 10)
    st, r = wd.nfs.setattr(fh, size=10)
    assert st == NFS3_OK and r["wcc"]["after"]["size"] == 10
    assert (wd.path / "f").read_bytes() == b"0123456789"
    st, r = wd.nfs.setattr(fh, size=5000)
    assert st == NFS3_OK and r["wcc"]["after"]["size"] == 5000
    assert (wd.path / "f").read_bytes() == b"0123456789" + b"\0" * 4990


def test_setattr_times(wd):
    fh = wd.file("f", b"abc")
    st, _ = wd.nfs.setattr(fh, atime=(1_000_000_000, 5), mtime=(1_200_000_000, 7))
    assert st == NFS3_OK
    s = os.stat(wd.path / "f")
    assert s.st_atime_ns == 1_000_000_000 * 10**9 + 5
    assert s.st_mtime_ns == 1_200_000_000 * 10**9 + 7
    before = time.time()
    st, r = wd.nfs.setattr(fh, mtime="server")  # SET_TO_SERVER_TIME; atime unchanged
    assert st == NFS3_OK
    s = os.stat(wd.path / "f")
    assert abs(s.st_mtime - before) < 5
    assert s.st_atime_ns == 1_000_000_000 * 10**9 + 5
    assert r["wcc"]["after"]["mtime"][0] == int(s.st_mtime)


def test_setattr_guard(wd):
    fh = wd.file("f", b"abc", 0o644)
    _, r = wd.nfs.getattr(fh)
    ctime = r["attrs"]["ctime"]
    # section 3.3.2: a guard ctime that differs -> NFS3ERR_NOT_SYNC, nothing changed
    st, r = wd.nfs.setattr(fh, guard=(ctime[0] + 1, ctime[1]), mode=0o600)
    assert st == NFS3ERR_NOT_SYNC
    assert stat.S_IMODE(os.stat(wd.path / "f").st_mode) == 0o644
    assert r["wcc"]["before"] is not None and r["wcc"]["after"] is not None
    st, r = wd.nfs.setattr(fh, guard=ctime, mode=0o600)
    assert st == NFS3_OK
    assert stat.S_IMODE(os.stat(wd.path / "f").st_mode) == 0o600


# -- LOOKUP -------------------------------------------------------------------
def test_lookup(wd, server):
    wd.file("f", b"hi")
    st, r = wd.nfs.lookup(wd.fh, "f")
    assert st == NFS3_OK and r["attrs"]["fileid"] == os.stat(wd.path / "f").st_ino
    assert r["dir_attrs"]["fileid"] == os.stat(wd.path).st_ino
    st, r = wd.nfs.lookup(wd.fh, "missing")
    assert st == NFS3ERR_NOENT and r["dir_attrs"]["type"] == NF3DIR  # dir attrs on failure
    st, r = wd.nfs.lookup(wd.fh, ".")
    assert st == NFS3_OK and r["attrs"]["fileid"] == os.stat(wd.path).st_ino
    os.mkdir(wd.path / "sub")
    sub = wd.lookup("sub")
    st, r = wd.nfs.lookup(sub, "..")
    assert st == NFS3_OK and r["attrs"]["fileid"] == os.stat(wd.path).st_ino
    st, r = wd.nfs.getattr(r["fh"])
    assert st == NFS3_OK and r["attrs"]["fileid"] == os.stat(wd.path).st_ino
    st, r = wd.nfs.lookup(wd.nfs.lookup(wd.fh, "f")[1]["fh"], "x")
    assert st == NFS3ERR_NOTDIR


def test_lookup_dotdot_at_root(nfs, server):
    st, r = nfs.lookup(nfs.root, "..")
    assert st == NFS3_OK
    assert r["attrs"]["fileid"] == os.stat(server.export).st_ino
    assert r["fh"] == nfs.root


# -- ACCESS -------------------------------------------------------------------
def test_access(wd, server):
    fh = wd.file("f", b"x", 0o644)
    st, r = wd.nfs.access(fh)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3REG
    rw = ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND
    assert r["access"] & rw == rw
    assert not r["access"] & ACCESS3_EXECUTE  # no x bit at all: not even for root
    other = Nfs3.connect(server.port, cred=AuthSys(12345, 12345))
    try:
        st, r = other.access(fh)
        assert st == NFS3_OK
        assert r["access"] & ACCESS3_READ
        assert not r["access"] & (ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_EXECUTE)
        st, r = other.access(wd.fh, ACCESS3_LOOKUP | ACCESS3_DELETE | ACCESS3_MODIFY)
        assert st == NFS3_OK and r["access"] == ACCESS3_LOOKUP  # 0o755 dir, not the owner
    finally:
        other.close()
    st, r = wd.nfs.access(fh, ACCESS3_READ)
    assert r["access"] == ACCESS3_READ  # never more than asked for


# -- READLINK -----------------------------------------------------------------
def test_readlink(wd):
    os.symlink("some/where/../else", wd.path / "l")
    st, r = wd.nfs.readlink(wd.lookup("l"))
    assert st == NFS3_OK and r["data"] == b"some/where/../else"
    assert r["attrs"]["type"] == NF3LNK
    st, r = wd.nfs.readlink(wd.file("f"))
    assert st == NFS3ERR_INVAL


# -- READ ---------------------------------------------------------------------
def test_read(wd):
    data = os.urandom(100)
    fh = wd.file("f", data)
    st, r = wd.nfs.read(fh, 0, 50)
    assert st == NFS3_OK and r["data"] == data[:50] and r["count"] == 50 and not r["eof"]
    st, r = wd.nfs.read(fh, 50, 50)
    assert r["data"] == data[50:] and r["eof"]
    st, r = wd.nfs.read(fh, 10, 1000)
    assert r["data"] == data[10:] and r["count"] == 90 and r["eof"]
    st, r = wd.nfs.read(fh, 5000, 10)
    assert st == NFS3_OK and r["count"] == 0 and r["data"] == b"" and r["eof"]
    assert r["attrs"]["size"] == 100
    st, r = wd.nfs.read(wd.fh, 0, 10)
    assert st == NFS3ERR_ISDIR


def test_read_count_clamped_to_rtmax(wd):
    fh = wd.file("big", os.urandom(2 * MiB + 7))
    st, r = wd.nfs.read(fh, 0, 4 * MiB)
    assert st == NFS3_OK
    assert r["count"] == len(r["data"]) == MiB and not r["eof"]
    assert r["data"] == (wd.path / "big").read_bytes()[:MiB]


def test_big_reads_sent_from_the_file(wd):
    """READs over 64 KiB of a cached file go by sendfile (transport.send_file):
    the same bytes, counts, eof and padding as any READ."""
    data = os.urandom(3 * MiB + 5)
    fh = wd.file("sent", data)
    (wd.path / "sent").read_bytes()                   # in the page cache
    for off, n in ((0, MiB), (1, MiB), (MiB, 65537), (3 * MiB - 70001, MiB),
                   (3 * MiB + 1, 200000), (3 * MiB + 5, 100000)):
        st, r = wd.nfs.read(fh, off, n)
        want = data[off:off + n]
        assert st == NFS3_OK
        assert r["data"] == want and r["count"] == len(want), (off, n)
        assert r["eof"] == (off + len(want) >= len(data)), (off, n)


def test_read_over_udp_clamped(wd, server):
    fh = wd.file("f", os.urandom(100_000))
    u = Nfs3.connect(server.port, proto="udp")
    try:
        st, r = u.read(fh, 0, 100_000)
        assert st == NFS3_OK and r["count"] == 32768
        st, r = u.fsinfo(fh)
        assert r["rtmax"] == 32768 and r["wtmax"] == 32768
    finally:
        u.close()


# -- WRITE, COMMIT --------------------------------------------------------------
def test_write_stability_and_commit(wd):
    fh = wd.file("f")
    verfs = set()
    for i, how in enumerate((UNSTABLE, DATA_SYNC, FILE_SYNC)):
        st, r = wd.nfs.write(fh, i * 4, b"abcd", stable=how)
        assert st == NFS3_OK and r["count"] == 4
        assert r["committed"] >= how  # section 3.3.7: at least as stable as asked
        assert r["wcc"]["after"]["size"] == (i + 1) * 4
        verfs.add(r["verf"])
    assert len(verfs) == 1  # constant while the server runs
    st, r = wd.nfs.commit(fh, 0, 0)
    assert st == NFS3_OK and r["verf"] in verfs
    assert r["wcc"]["after"]["size"] == 12
    assert (wd.path / "f").read_bytes() == b"abcd" * 3
    # a write past the end leaves a hole
    st, r = wd.nfs.write(fh, 100, b"z", stable=FILE_SYNC)
    assert (wd.path / "f").read_bytes() == b"abcd" * 3 + b"\0" * 88 + b"z"
    st, r = wd.nfs.write(wd.fh, 0, b"x")
    assert st == NFS3ERR_ISDIR


def test_write_verifier_changes_on_restart(fastnfs):
    n = mount_fresh(fastnfs)
    st, r = n.create(n.root, "f", mode=0o644)
    fh = r["fh"]
    st, w1 = n.write(fh, 0, b"one", stable=UNSTABLE)
    _, c1 = n.commit(fh)
    assert w1["verf"] == c1["verf"]
    n.close()
    time.sleep(0.01)
    fastnfs.restart()
    n = mount_fresh(fastnfs)
    try:
        st, w2 = n.write(fh, 0, b"two", stable=UNSTABLE)
        assert st == NFS3_OK
        # section 3.3.7: a new verifier tells the client to resend uncommitted data
        assert w2["verf"] != w1["verf"]
        _, c2 = n.commit(fh)
        assert c2["verf"] == w2["verf"]
    finally:
        n.close()


# -- CREATE -------------------------------------------------------------------
def test_create_unchecked_and_guarded(wd):
    st, r = wd.nfs.create(wd.fh, "f", UNCHECKED, mode=0o640)
    assert st == NFS3_OK and r["fh"] and r["attrs"]["type"] == NF3REG
    assert r["attrs"]["mode"] == 0o640
    assert stat.S_IMODE(os.stat(wd.path / "f").st_mode) == 0o640
    assert r["dir_wcc"]["after"]["fileid"] == os.stat(wd.path).st_ino
    (wd.path / "f").write_bytes(b"keep")
    st, r2 = wd.nfs.create(wd.fh, "f", UNCHECKED, mode=0o600)
    assert st == NFS3_OK and r2["attrs"]["fileid"] == r["attrs"]["fileid"]
    assert (wd.path / "f").read_bytes() == b"keep"  # UNCHECKED without size: data kept
    st, r3 = wd.nfs.create(wd.fh, "f", GUARDED, mode=0o600)
    assert st == NFS3ERR_EXIST and r3["dir_wcc"]["after"] is not None
    st, _ = wd.nfs.create(wd.fh, "g", GUARDED, mode=0o600, size=0)
    assert st == NFS3_OK


def test_create_exclusive(wd):
    st, r = wd.nfs.create(wd.fh, "x", EXCLUSIVE, verf=b"verifier")
    assert st == NFS3_OK and r["fh"]
    # section 3.3.8: a retransmission (same verifier) succeeds with the same file
    st, r2 = wd.nfs.create(wd.fh, "x", EXCLUSIVE, verf=b"verifier")
    assert st == NFS3_OK
    assert wd.nfs.getattr(r2["fh"])[1]["attrs"]["fileid"] == r["attrs"]["fileid"]
    st, _ = wd.nfs.create(wd.fh, "x", EXCLUSIVE, verf=b"VERIFIER")
    assert st == NFS3ERR_EXIST
    # the client's follow-up SETATTR sets real attributes
    st, _ = wd.nfs.setattr(r["fh"], mode=0o644, atime="server", mtime="server")
    assert st == NFS3_OK


# -- MKDIR, SYMLINK, MKNOD ---------------------------------------------------------
def test_mkdir(wd):
    st, r = wd.nfs.mkdir(wd.fh, "d", mode=0o750)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3DIR and r["attrs"]["mode"] == 0o750
    assert os.path.isdir(wd.path / "d")
    assert r["dir_wcc"]["after"]["nlink"] == 3
    st, _ = wd.nfs.mkdir(wd.fh, "d", mode=0o750)
    assert st == NFS3ERR_EXIST


def test_symlink(wd):
    st, r = wd.nfs.symlink(wd.fh, "l", "../target")
    assert st == NFS3_OK and r["attrs"]["type"] == NF3LNK
    assert os.readlink(wd.path / "l") == "../target"
    st, r2 = wd.nfs.readlink(r["fh"])
    assert r2["data"] == b"../target"
    st, _ = wd.nfs.symlink(wd.fh, "l", "other")
    assert st == NFS3ERR_EXIST


@pytest.mark.parametrize("ftype,fmt", [(NF3FIFO, stat.S_IFIFO), (NF3SOCK, stat.S_IFSOCK),
                                       (NF3CHR, stat.S_IFCHR), (NF3BLK, stat.S_IFBLK)])
def test_mknod(wd, ftype, fmt):
    if ftype in (NF3CHR, NF3BLK) and os.geteuid() != 0:
        pytest.skip("device nodes need root")
    st, r = wd.nfs.mknod(wd.fh, "n", ftype, rdev=(1, 3), mode=0o640)
    assert st == NFS3_OK, st
    a = r["attrs"]
    assert a["type"] == ftype and a["mode"] == 0o640
    s = os.lstat(wd.path / "n")
    assert stat.S_IFMT(s.st_mode) == fmt
    if ftype in (NF3CHR, NF3BLK):
        assert (os.major(s.st_rdev), os.minor(s.st_rdev)) == (1, 3) == a["rdev"]


@pytest.mark.parametrize("ftype", [NF3REG, NF3DIR, NF3LNK])
def test_mknod_badtype(wd, ftype):
    # section 3.3.11: MKNOD is for special files only
    st, r = wd.nfs.mknod(wd.fh, "n", ftype)
    assert st == NFS3ERR_BADTYPE
    assert not os.path.lexists(wd.path / "n")


# -- REMOVE, RMDIR ----------------------------------------------------------------
def test_remove(wd):
    wd.file("f")
    st, r = wd.nfs.remove(wd.fh, "f")
    assert st == NFS3_OK and not os.path.lexists(wd.path / "f")
    assert r["dir_wcc"]["before"] is not None and r["dir_wcc"]["after"] is not None
    st, _ = wd.nfs.remove(wd.fh, "f")
    assert st == NFS3ERR_NOENT
    os.mkdir(wd.path / "d")
    st, _ = wd.nfs.remove(wd.fh, "d")
    assert st != NFS3_OK and os.path.isdir(wd.path / "d")


def test_rmdir(wd):
    os.mkdir(wd.path / "d")
    os.mkdir(wd.path / "full")
    (wd.path / "full" / "x").write_bytes(b"")
    wd.file("f")
    assert wd.nfs.rmdir(wd.fh, "d")[0] == NFS3_OK and not (wd.path / "d").exists()
    assert wd.nfs.rmdir(wd.fh, "full")[0] == NFS3ERR_NOTEMPTY
    assert wd.nfs.rmdir(wd.fh, ".")[0] == NFS3ERR_INVAL
    assert wd.nfs.rmdir(wd.fh, "f")[0] == NFS3ERR_NOTDIR
    assert wd.nfs.rmdir(wd.fh, "nope")[0] == NFS3ERR_NOENT
    assert (wd.path / "full").is_dir() and wd.path.is_dir()


# -- RENAME -------------------------------------------------------------------
def test_rename_across_directories_and_over_existing(wd):
    os.mkdir(wd.path / "a")
    os.mkdir(wd.path / "b")
    a, b = wd.lookup("a"), wd.lookup("b")
    (wd.path / "a" / "f").write_bytes(b"moving")
    (wd.path / "b" / "g").write_bytes(b"replaced")
    st_, r = wd.nfs.lookup(a, "f")
    ffh = r["fh"]
    st, r = wd.nfs.rename(a, "f", b, "g")
    assert st == NFS3_OK
    assert r["from_wcc"]["after"]["fileid"] == os.stat(wd.path / "a").st_ino
    assert r["to_wcc"]["after"]["fileid"] == os.stat(wd.path / "b").st_ino
    assert (wd.path / "b" / "g").read_bytes() == b"moving"
    assert not (wd.path / "a" / "f").exists()
    # the handle names the object, not the path: still valid after the rename
    st, r = wd.nfs.read(ffh, 0, 100)
    assert st == NFS3_OK and r["data"] == b"moving"
    # and after renaming its parent directory
    st, _ = wd.nfs.rename(wd.fh, "b", wd.fh, "b2")
    assert st == NFS3_OK
    st, r = wd.nfs.read(ffh, 0, 100)
    assert st == NFS3_OK and r["data"] == b"moving"
    st, r = wd.nfs.getattr(b)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3DIR
    assert wd.nfs.rename(wd.fh, "missing", wd.fh, "x")[0] == NFS3ERR_NOENT


def test_rename_handle_survives_restart(fastnfs):
    n = mount_fresh(fastnfs)
    n.mkdir(n.root, "p", mode=0o755)
    _, r = n.lookup(n.root, "p")
    pfh = r["fh"]
    _, r = n.create(pfh, "f", mode=0o644)
    ffh = r["fh"]
    n.write(ffh, 0, b"data")
    assert n.rename(n.root, "p", n.root, "q")[0] == NFS3_OK
    n.close()
    fastnfs.restart()
    n = mount_fresh(fastnfs)
    try:
        st, r = n.read(ffh, 0, 10)
        assert st == NFS3_OK and r["data"] == b"data"
        st, r = n.getattr(pfh)
        assert st == NFS3_OK and r["attrs"]["fileid"] == os.stat(fastnfs.export / "q").st_ino
        assert n.rename(pfh, "f", n.root, "top")[0] == NFS3_OK
        assert n.read(ffh, 0, 10)[1]["data"] == b"data"
    finally:
        n.close()


# -- LINK ---------------------------------------------------------------------
def test_link(wd):
    fh = wd.file("f", b"x")
    st, r = wd.nfs.link(fh, wd.fh, "hard")
    assert st == NFS3_OK and r["attrs"]["nlink"] == 2
    assert os.stat(wd.path / "hard").st_ino == os.stat(wd.path / "f").st_ino
    assert r["dir_wcc"]["after"] is not None
    assert wd.nfs.link(fh, wd.fh, "hard")[0] == NFS3ERR_EXIST
    st, _ = wd.nfs.link(wd.fh, wd.fh, "dirlink")
    assert st != NFS3_OK and not os.path.lexists(wd.path / "dirlink")


# -- READDIR / READDIRPLUS ------------------------------------------------------------
def _names(entries):
    return [e["name"] for e in entries]


@pytest.mark.parametrize("plus", [False, True])
def test_readdir_1000_entries_paged(wd, plus):
    names = {b"file%04d" % i for i in range(1000)}
    for n in names:
        (wd.path / n.decode()).write_bytes(b"")
    entries = wd.nfs.readdir_all(wd.fh, count=1024, plus=plus)
    got = _names(entries)
    assert len(got) == len(set(got))  # every name exactly once
    assert set(got) == names | {b".", b".."}
    ino = {e["name"]: e["fileid"] for e in entries}
    assert ino[b"file0007"] == os.stat(wd.path / "file0007").st_ino
    assert ino[b"."] == os.stat(wd.path).st_ino


@pytest.mark.parametrize("plus", [False, True])
def test_readdir_cookies_while_directory_changes(wd, plus):
    keep = {b"keep%03d" % i for i in range(300)}
    gone = [b"gone%03d" % i for i in range(300)]
    for n in list(keep) + gone:
        (wd.path / n.decode()).write_bytes(b"")
    added = []

    def between(page):
        # entries come and go between pages (section 3.3.16: cookies stay usable)
        for j in range(5):
            name = "new%03d_%d" % (page, j)
            (wd.path / name).write_bytes(b"")
            added.append(name.encode())
        for n in gone[page * 5:page * 5 + 5]:
            os.unlink(wd.path / n.decode())

    got = _names(wd.nfs.readdir_all(wd.fh, count=700, plus=plus, between=between))
    assert len(got) == len(set(got)), "duplicated entries"
    assert keep <= set(got), "skipped: %r" % sorted(keep - set(got))[:5]
    assert set(got) <= keep | set(gone) | set(added) | {b".", b".."}


def test_readdir_sees_new_entry_immediately(wd):
    # a client's CREATE followed at once by READDIR must list the new name
    for i in range(30):
        name = "n%d" % i
        assert wd.nfs.create(wd.fh, name, UNCHECKED, mode=0o644)[0] == NFS3_OK
        got = _names(wd.nfs.readdir_all(wd.fh, count=8192))
        assert name.encode() in got
        assert wd.nfs.remove(wd.fh, "n%d" % i)[0] == NFS3_OK
        got = _names(wd.nfs.readdir_all(wd.fh, count=8192))
        assert name.encode() not in got


def test_readdir_toosmall(wd):
    wd.file("f")
    st, r = wd.nfs.readdir(wd.fh, count=40)
    assert st == NFS3ERR_TOOSMALL and r["dir_attrs"] is not None
    st, r = wd.nfs.readdirplus(wd.fh, dircount=40, maxcount=60)
    assert st == NFS3ERR_TOOSMALL
    st, r = wd.nfs.readdir(wd.file("g"))
    assert st == NFS3ERR_NOTDIR


def test_readdirplus_attributes_and_handles(wd):
    wd.file("f", b"12345", 0o600)
    os.mkdir(wd.path / "d")
    os.symlink("f", wd.path / "l")
    os.mkfifo(wd.path / "p")
    entries = wd.nfs.readdir_all(wd.fh, count=4096, plus=True)
    by = {e["name"]: e for e in entries}
    assert set(by) == {b".", b"..", b"f", b"d", b"l", b"p"}
    types = {b"f": NF3REG, b"d": NF3DIR, b"l": NF3LNK, b"p": NF3FIFO, b".": NF3DIR}
    for name, t in types.items():
        e = by[name]
        assert e["attrs"] is not None and e["fh"] is not None, name
        assert e["attrs"]["type"] == t and e["attrs"]["fileid"] == e["fileid"]
        st, r = wd.nfs.getattr(e["fh"])
        assert st == NFS3_OK and r["attrs"]["fileid"] == e["fileid"]
    assert by[b"f"]["attrs"]["size"] == 5 and by[b"f"]["attrs"]["mode"] == 0o600
    st, r = wd.nfs.read(by[b"f"]["fh"], 0, 10)
    assert r["data"] == b"12345"


# -- FSSTAT, FSINFO, PATHCONF -------------------------------------------------------
def test_fsstat(nfs):
    st, r = nfs.fsstat(nfs.root)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3DIR
    assert r["tbytes"] >= r["fbytes"] >= r["abytes"]
    assert r["tfiles"] >= r["ffiles"] >= r["afiles"]
    assert r["tbytes"] > 0


def test_fsinfo(nfs):
    st, r = nfs.fsinfo(nfs.root)
    assert st == NFS3_OK
    assert r["rtmax"] == MiB and r["wtmax"] == MiB
    assert r["rtpref"] <= r["rtmax"] and r["wtpref"] <= r["wtmax"]
    assert r["properties"] & 0x13 == 0x13  # FSF3_LINK | FSF3_SYMLINK | FSF3_CANSETTIME
    assert r["maxfilesize"] > 1 << 40


def test_pathconf(nfs):
    st, r = nfs.pathconf(nfs.root)
    assert st == NFS3_OK
    assert r["name_max"] == 255 and r["no_trunc"] and r["linkmax"] >= 1
    assert not r["case_insensitive"] and r["case_preserving"]


# -- filehandles --------------------------------------------------------------
def test_handles_survive_restart(fastnfs):
    (fastnfs.export / "d1" / "d2").mkdir(parents=True)
    (fastnfs.export / "d1" / "d2" / "f").write_bytes(b"deep")
    n = mount_fresh(fastnfs)
    d1 = n.lookup(n.root, "d1")[1]["fh"]
    d2 = n.lookup(d1, "d2")[1]["fh"]
    f = n.lookup(d2, "f")[1]["fh"]
    root = n.root
    n.close()
    fastnfs.restart()
    n = mount_fresh(fastnfs)
    try:
        assert n.root == root
        assert n.read(f, 0, 10)[1]["data"] == b"deep"
        assert n.getattr(d2)[1]["attrs"]["type"] == NF3DIR
        assert n.lookup(d1, "d2")[1]["fh"] == d2
    finally:
        n.close()


def test_stale_after_delete(wd):
    fh = wd.file("f", b"x")
    dfh = (os.mkdir(wd.path / "d"), wd.lookup("d"))[1]
    os.unlink(wd.path / "f")
    os.rmdir(wd.path / "d")
    assert wd.nfs.getattr(fh)[0] == NFS3ERR_STALE
    assert wd.nfs.read(fh, 0, 1)[0] == NFS3ERR_STALE
    assert wd.nfs.lookup(dfh, "x")[0] == NFS3ERR_STALE
    assert wd.nfs.create(dfh, "x", UNCHECKED)[0] == NFS3ERR_STALE


def test_stale_after_delete_when_inode_is_reused(wd):
    # RFC 1813 section 2.3.3 / 3.3.1: a handle must never come to name another object
    fh = wd.file("old", b"old data")
    ino = os.stat(wd.path / "old").st_ino
    st, r = wd.nfs.remove(wd.fh, "old")
    assert st == NFS3_OK
    for i in range(50):  # ext4 hands a freed inode number to the next file in the group
        p = wd.path / ("new%d" % i)
        p.write_bytes(b"someone else's data")
        if os.stat(p).st_ino == ino:
            break
    else:
        pytest.skip("the filesystem did not reuse the inode number")
    st, r = wd.nfs.read(fh, 0, 100)
    assert st == NFS3ERR_STALE, r


@pytest.mark.parametrize("fh", [os.urandom(10), b"", b"\0" * 8, b"\x02" + b"\0" * 23],
                         ids=["random10", "empty", "zeros8", "version2"])
def test_badhandle(nfs, fh):
    assert nfs.getattr(fh)[0] == NFS3ERR_BADHANDLE
    assert nfs.lookup(fh, "x")[0] == NFS3ERR_BADHANDLE
    assert nfs.read(fh, 0, 1)[0] == NFS3ERR_BADHANDLE


# -- 64-bit offsets and sizes ----------------------------------------------------------
@pytest.fixture
def own_server(tmp_path):
    """A private server whose log the test itself checks (for xfail tests)."""
    export = tmp_path / "own"
    export.mkdir()
    srv = FastnfsProcess(export).start()
    yield srv
    srv.stop()


def _no_traceback(srv):
    assert "Traceback" not in srv.log(), srv.log()[-2000:]


def test_large_offsets_that_work(nfs, wd):
    fh = wd.file("f", b"abc")
    st, r = wd.nfs.readdir(wd.fh, cookie=2**64 - 1)  # a cookie past every entry
    assert st == NFS3_OK and r["entries"] == [] and r["eof"]
    assert wd.nfs.commit(fh, 2**64 - 1, 0xFFFFFFFF)[0] == NFS3_OK
    st, r = wd.nfs.read(fh, 2**62, 10)
    assert st == NFS3_OK and r["count"] == 0 and r["eof"]


def test_read_at_offset_beyond_off_t(own_server):
    n = mount_fresh(own_server)
    try:
        _, r = n.create(n.root, "f", mode=0o644)
        # section 3.3.6: reading past the end of file is eof with no data
        st, r = n.read(r["fh"], 2**64 - 1, 10)
        assert st == NFS3_OK and r["count"] == 0 and r["eof"]
    finally:
        n.close()
    _no_traceback(own_server)


@pytest.mark.parametrize("stable", [UNSTABLE, FILE_SYNC])
def test_write_beyond_maxfilesize_is_fbig(own_server, stable):
    n = mount_fresh(own_server)
    try:
        _, r = n.create(n.root, "f", mode=0o644)
        st, _ = n.write(r["fh"], 2**63, b"x", stable=stable)
        assert st == 27  # NFS3ERR_FBIG: past FSINFO maxfilesize (2**63 - 1)
    finally:
        n.close()
    _no_traceback(own_server)


def test_setattr_size_beyond_maxfilesize_is_fbig(own_server):
    n = mount_fresh(own_server)
    try:
        _, r = n.create(n.root, "f", mode=0o644)
        st, _ = n.setattr(r["fh"], size=2**63)
        assert st == 27  # NFS3ERR_FBIG
    finally:
        n.close()
    _no_traceback(own_server)


def test_mknod_device_number_out_of_range(own_server):
    n = mount_fresh(own_server)
    try:
        st, _ = n.mknod(n.root, "dev", NF3CHR, rdev=(0xFFFFFFFF, 0xFFFFFFFF), mode=0o600)
        assert st in (NFS3ERR_INVAL, 19)  # INVAL or NODEV
    finally:
        n.close()
    _no_traceback(own_server)
