"""`fastnfs virtfs import` and `fastnfs virtfs check` (src/fastnfs/virtfs/tools.py)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from conftest import FastnfsProcess
from rpcclient import NF3CHR, NF3FIFO, NF3LNK, NF3REG, NFS3_OK, Nfs3

from fastnfs.virtfs.store import make_rdev
from fastnfs.virtfs.tools import check_tree, main

NOBODY = 65534
META = ".virtfs_metadata"
ROOT_META = ".virtfs_metadata_root"
SRC_ROOT = Path(__file__).resolve().parent.parent / "src"


def meta_of(path: Path) -> dict:
    """The keys of the metadata file of path (without the 'virtfs.' prefix)."""
    text = (path.parent / META / path.name).read_text()
    return {k.split(".", 1)[1]: int(v) for k, v in
            (line.split("=", 1) for line in text.splitlines() if line)}


def root_meta(root: Path) -> dict:
    text = (root / ROOT_META).read_text()
    return {k.split(".", 1)[1]: int(v) for k, v in
            (line.split("=", 1) for line in text.splitlines() if line)}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")


# ================================================================ directory import

@needs_root
def test_import_directory_as_root(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "dev").mkdir()
    os.chmod(src, 0o755)
    (src / "bin" / "su").write_bytes(b"\x7fELF fake")
    os.chown(src / "bin" / "su", 0, 0)
    os.chmod(src / "bin" / "su", 0o4755)
    (src / "home").mkdir()
    os.chown(src / "home", 1000, 1001)
    os.chmod(src / "home", 0o1770)
    (src / "home" / "notes").write_bytes(b"x" * 10000)
    os.chown(src / "home" / "notes", 1000, 1001)
    os.chmod(src / "home" / "notes", 0o640)
    os.mknod(src / "dev" / "ttyX", stat.S_IFCHR | 0o620, os.makedev(240, 300))
    os.chown(src / "dev" / "ttyX", 0, 5)
    os.mknod(src / "dev" / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mkfifo(src / "dev" / "initctl", 0o600)
    for n, m in (("ttyX", 0o620), ("sda", 0o660), ("initctl", 0o600)):
        os.chmod(src / "dev" / n, m)                       # whatever the umask
    os.symlink("../bin/su", src / "dev" / "link")
    os.lchown(src / "dev" / "link", 7, 8)
    os.link(src / "home" / "notes", src / "bin" / "notes-link")
    os.chown(src, 0, 0)

    dst = tmp_path / "dst"
    assert main(["import", str(src), str(dst), "--owner", "4242:4343"]) == 0
    err = capsys.readouterr().err
    assert "refused" not in err

    # the metadata
    assert root_meta(dst) == {"uid": 0, "gid": 0, "mode": stat.S_IFDIR | 0o755}
    assert meta_of(dst / "bin" / "su") == {"uid": 0, "gid": 0, "mode": stat.S_IFREG | 0o4755}
    assert meta_of(dst / "home") == {"uid": 1000, "gid": 1001, "mode": stat.S_IFDIR | 0o1770}
    assert meta_of(dst / "home" / "notes") == {"uid": 1000, "gid": 1001,
                                               "mode": stat.S_IFREG | 0o640}
    assert meta_of(dst / "dev" / "ttyX") == {"uid": 0, "gid": 5, "mode": stat.S_IFCHR | 0o620,
                                             "rdev": make_rdev(240, 300)}
    assert meta_of(dst / "dev" / "sda")["rdev"] == make_rdev(8, 0) == 2048
    assert meta_of(dst / "dev" / "initctl")["mode"] == stat.S_IFIFO | 0o600
    assert meta_of(dst / "dev" / "link") == {"uid": 7, "gid": 8, "mode": stat.S_IFLNK | 0o777}
    # what is on disk: plain files, dirs, symlinks, all owned by --owner
    for n in ("ttyX", "sda", "initctl"):
        st = os.lstat(dst / "dev" / n)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0, n
    assert os.readlink(dst / "dev" / "link") == "../bin/su"
    assert (dst / "home" / "notes").read_bytes() == b"x" * 10000
    a, b = os.lstat(dst / "home" / "notes"), os.lstat(dst / "bin" / "notes-link")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (os.lstat(dst / "home" / META / "notes").st_ino
            == os.lstat(dst / "bin" / META / "notes-link").st_ino)
    assert stat.S_IMODE(os.lstat(dst / "bin" / "su").st_mode) & 0o7000 == 0
    for dirpath, dirnames, filenames in os.walk(dst):
        for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
            st = os.lstat(n)
            assert (st.st_uid, st.st_gid) == (4242, 4343), n
    assert check_tree(dst) == []

    # and through the server
    srv = FastnfsProcess(dst, ["--virtfs"]).start()
    try:
        n = Nfs3.connect(srv.port)
        try:
            root = n.mount(str(dst))

            def attrs(*path):
                fh = root
                for c in path:
                    st, out = n.lookup(fh, c)
                    assert st == NFS3_OK, (path, st)
                    fh = out["fh"]
                st, out = n.getattr(fh)
                assert st == NFS3_OK
                return out["attrs"]

            a = attrs("dev", "ttyX")
            assert (a["type"], a["uid"], a["gid"], a["mode"], a["rdev"]) == (
                NF3CHR, 0, 5, 0o620, (240, 300))
            a = attrs("dev", "initctl")
            assert (a["type"], a["mode"]) == (NF3FIFO, 0o600)
            a = attrs("dev", "link")
            assert (a["type"], a["uid"], a["gid"]) == (NF3LNK, 7, 8)
            a = attrs("bin", "su")
            assert (a["type"], a["uid"], a["mode"]) == (NF3REG, 0, 0o4755)
            a = attrs("home", "notes")
            assert (a["uid"], a["gid"], a["mode"], a["size"], a["nlink"]) == (
                1000, 1001, 0o640, 10000, 2)
            a = attrs("home")
            assert (a["uid"], a["gid"], a["mode"]) == (1000, 1001, 0o1770)
        finally:
            n.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_import_refuses_nonempty_dst(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "x").write_bytes(b"")
    assert main(["import", str(tmp_path / "src"), str(tmp_path / "dst")]) == 2
    assert "not empty" in capsys.readouterr().err


# ================================================================ tar import

def _add(tf, name, type_=tarfile.REGTYPE, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mtime = 1700000000
    for k, v in kw.items():
        setattr(ti, k, v)
    if type_ == tarfile.REGTYPE:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


def make_rootfs_tar(path: Path, compression: str = "gz") -> None:
    with tarfile.open(path, "w:" + compression) as tf:
        _add(tf, ".", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0)
        _add(tf, "./bin", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0)
        _add(tf, "./bin/busybox", data=b"#!busybox\n", mode=0o4755, uid=0, gid=0)
        _add(tf, "./bin/sh", tarfile.SYMTYPE, linkname="busybox", uid=0, gid=0, mode=0o777)
        _add(tf, "./bin/ash", tarfile.LNKTYPE, linkname="./bin/busybox", mode=0o4755)
        _add(tf, "./dev", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0)
        _add(tf, "./dev/console", tarfile.CHRTYPE, mode=0o600, uid=0, gid=5,
             devmajor=5, devminor=1)
        _add(tf, "./dev/ttyX", tarfile.CHRTYPE, mode=0o660, devmajor=240, devminor=300)
        _add(tf, "./dev/mmcblk0", tarfile.BLKTYPE, mode=0o660, uid=0, gid=6,
             devmajor=179, devminor=0)
        _add(tf, "./dev/fifo", tarfile.FIFOTYPE, mode=0o620)
        _add(tf, "./home/user/.profile", data=b"PS1=$\n", mode=0o644, uid=1000, gid=1000)
        _add(tf, "./tmp", tarfile.DIRTYPE, mode=0o1777, uid=0, gid=0)


def _python_as_nobody():
    """A command prefix running our Python as uid/gid 65534, or None (with the reason)."""
    if os.geteuid() != 0:
        return [], "already an ordinary user"
    if not shutil.which("setpriv"):
        return None, "no setpriv"
    cmd = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    probe = subprocess.run(cmd + [sys.executable, "-c", "import fastnfs"], capture_output=True,
                           env=_env())
    if probe.returncode != 0:
        return None, "this Python or its fastnfs is not readable by uid %d" % NOBODY
    return cmd, ""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def world_dir():
    """A directory under /tmp that uid 65534 can write in (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="fastnfs-virtfs-tools-", dir="/tmp"))
    os.chmod(base, 0o755)
    work = base / "work"
    work.mkdir()
    if os.geteuid() == 0:
        os.chown(work, NOBODY, NOBODY)
    yield work
    shutil.rmtree(base, ignore_errors=True)


def run_tool(prefix, *args):
    return subprocess.run(prefix + [sys.executable, "-m", "fastnfs.virtfs.tools", *args],
                          capture_output=True, text=True, env=_env(), timeout=60)


def test_import_tar_as_ordinary_user(world_dir):
    prefix, why = _python_as_nobody()
    if prefix is None:  # still test the import, as root; the report says so
        prefix = []
        print("NOTE: tar import run as root: %s" % why)
    tar = world_dir / "rootfs.tar.gz"
    make_rootfs_tar(tar)
    os.chmod(tar, 0o644)
    dst = world_dir / "rootfs"
    r = run_tool(prefix, "import", str(tar), str(dst))
    assert r.returncode == 0, r.stderr
    if prefix:
        assert os.lstat(dst / "bin" / "busybox").st_uid == NOBODY
        assert os.lstat(dst / "dev" / META / "console").st_uid == NOBODY

    assert root_meta(dst) == {"uid": 0, "gid": 0, "mode": stat.S_IFDIR | 0o755}
    assert meta_of(dst / "bin" / "busybox") == {"uid": 0, "gid": 0,
                                                "mode": stat.S_IFREG | 0o4755}
    assert (dst / "bin" / "busybox").read_bytes() == b"#!busybox\n"
    assert os.readlink(dst / "bin" / "sh") == "busybox"
    assert meta_of(dst / "bin" / "sh") == {"uid": 0, "gid": 0, "mode": stat.S_IFLNK | 0o777}
    assert os.lstat(dst / "bin" / "ash").st_ino == os.lstat(dst / "bin" / "busybox").st_ino
    assert meta_of(dst / "bin" / "ash") == meta_of(dst / "bin" / "busybox")
    assert meta_of(dst / "dev" / "console") == {"uid": 0, "gid": 5, "mode": stat.S_IFCHR | 0o600,
                                                "rdev": make_rdev(5, 1)}
    assert meta_of(dst / "dev" / "ttyX")["rdev"] == 1110060
    assert meta_of(dst / "dev" / "mmcblk0") == {"uid": 0, "gid": 6, "mode": stat.S_IFBLK | 0o660,
                                                "rdev": make_rdev(179, 0)}
    assert meta_of(dst / "dev" / "fifo")["mode"] == stat.S_IFIFO | 0o620
    for n in ("console", "ttyX", "mmcblk0", "fifo"):
        st = os.lstat(dst / "dev" / n)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert meta_of(dst / "home" / "user" / ".profile")["uid"] == 1000
    assert meta_of(dst / "home")["mode"] == stat.S_IFDIR | 0o755   # made implicitly
    assert meta_of(dst / "tmp")["mode"] == stat.S_IFDIR | 0o1777
    assert os.lstat(dst / "bin" / "busybox").st_mtime == 1700000000
    assert check_tree(dst) == []


@pytest.mark.parametrize("compression", ["", "xz", "bz2"])
def test_import_tar_compressions(tmp_path, compression):
    tar = tmp_path / "r.tar"
    make_rootfs_tar(tar, compression)
    assert main(["import", str(tar), str(tmp_path / "d"), "-q"]) == 0
    assert meta_of(tmp_path / "d" / "dev" / "console")["rdev"] == make_rdev(5, 1)


def test_import_tar_zstd(tmp_path, capsys):
    if not shutil.which("zstd"):
        pytest.skip("no zstd command")
    tar = tmp_path / "r.tar"
    make_rootfs_tar(tar, "")
    subprocess.run(["zstd", "-q", str(tar), "-o", str(tar) + ".zst"], check=True)
    rc = main(["import", str(tar) + ".zst", str(tmp_path / "d"), "-q"])
    try:
        from compression import zstd  # noqa: F401
        have = True
    except ImportError:
        try:
            import zstandard  # noqa: F401
            have = True
        except ImportError:
            have = False
    if have:
        assert rc == 0
        assert meta_of(tmp_path / "d" / "bin" / "busybox")["mode"] == stat.S_IFREG | 0o4755
    else:
        assert rc == 2
        assert "zstd -dc" in capsys.readouterr().err


def test_tar_path_traversal_refused(world_dir):
    outside = world_dir / "outside"
    outside.mkdir()
    victim = outside / "passwd"
    victim.write_bytes(b"original\n")
    tar = world_dir / "evil.tar"
    with tarfile.open(tar, "w") as tf:
        _add(tf, "ok", data=b"fine")
        _add(tf, str(world_dir / "outside" / "abs"), data=b"abs")          # absolute
        _add(tf, "../outside/dotdot", data=b"dotdot")                        # ..
        _add(tf, "a/../../outside/dotdot2", data=b"dotdot")
        _add(tf, "x", tarfile.SYMTYPE, linkname=str(outside))                # symlink out
        _add(tf, "x/passwd", data=b"pwned\n")                               # ... then through it
        _add(tf, "x/sub", tarfile.DIRTYPE)
        _add(tf, "y", tarfile.LNKTYPE, linkname=str(victim))                 # hard link out
        _add(tf, "z", tarfile.LNKTYPE, linkname="x/passwd")                  # hard link through
        _add(tf, "w", tarfile.LNKTYPE, linkname="../outside/passwd")
        _add(tf, ".virtfs_metadata/ok", data=b"virtfs.uid=0\n")              # reserved names
        _add(tf, "d/.virtfs_metadata_root", data=b"")
        _add(tf, "ok2", data=b"fine too")
    os.chmod(tar, 0o644)
    dst = world_dir / "dst"
    prefix, _ = _python_as_nobody()
    r = run_tool(prefix or [], "import", str(tar), str(dst))
    assert r.returncode == 1, r.stderr
    refused = [line for line in r.stderr.splitlines() if ": refused: " in line]
    assert len(refused) == 10, r.stderr
    assert sum("symlink" in line for line in refused) == 3, r.stderr
    assert victim.read_bytes() == b"original\n"
    assert sorted(p.name for p in outside.iterdir()) == ["passwd"]
    assert os.readlink(dst / "x") == str(outside)
    assert (dst / "ok").read_bytes() == b"fine" and (dst / "ok2").read_bytes() == b"fine too"
    assert not (dst / "y").exists() and not (dst / "z").exists()
    assert meta_of(dst / "ok")["mode"] == stat.S_IFREG | 0o644
    assert sorted(os.listdir(dst / META)) == ["ok", "ok2", "x"]


def test_import_directory_refuses_reserved_names(tmp_path, capsys):
    src = tmp_path / "src"
    (src / META).mkdir(parents=True)
    (src / META / "f").write_bytes(b"virtfs.uid=0\n")
    (src / "f").write_bytes(b"data")
    assert main(["import", str(src), str(tmp_path / "dst"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and META in err
    assert meta_of(tmp_path / "dst" / "f")["uid"] == os.lstat(src / "f").st_uid


# ================================================================ check

def _clean_tree(root: Path) -> None:
    with tarfile.open(root.parent / "t.tar", "w") as tf:
        _add(tf, ".", tarfile.DIRTYPE, mode=0o755)
        _add(tf, "etc/passwd", data=b"root:x:0:0\n", mode=0o644)
        _add(tf, "dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
    assert main(["import", str(root.parent / "t.tar"), str(root), "-q"]) == 0


def test_check_clean_tree(tmp_path, capsys):
    root = tmp_path / "root"
    _clean_tree(root)
    assert main(["check", str(root)]) == 0
    assert capsys.readouterr().out == ""


def test_check_finds_problems(tmp_path, capsys):
    root = tmp_path / "root"
    _clean_tree(root)
    (root / "etc" / META / "gone").write_bytes(b"virtfs.uid=0\n")            # orphan
    (root / "etc" / "new").write_bytes(b"")                                  # missing
    (root / "dev" / META / "null").write_bytes(b"virtfs.uid=0\nbogus\n")     # malformed
    assert main(["check", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(str(root / "dev" / META / "null") + ": malformed")
    assert "line 2" in lines[0]
    assert lines[1].startswith(str(root / "etc" / META / "gone") + ": orphaned")
    assert lines[2] == str(root / "etc" / "new") + ": no metadata"
    assert main(["check", "--quiet", str(root)]) == 1
    assert capsys.readouterr().out == ""


def test_check_non_regular_and_mismatch(tmp_path, capsys):
    root = tmp_path / "root"
    _clean_tree(root)
    os.unlink(root / "etc" / META / "passwd")
    os.mkdir(root / "etc" / META / "passwd")                                 # not a file
    (root / "dev" / "null").write_bytes(b"not empty")                        # device with data
    os.unlink(root / ROOT_META)                                             # root: missing
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[0] == str(root) + ": no metadata"
    assert "metadata says a character device" in lines[1]
    assert lines[2] == str(root / "etc" / META / "passwd") + ": malformed metadata: is a directory"
