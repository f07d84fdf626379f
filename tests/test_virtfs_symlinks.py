"""Symlink styles of a virtfs tree (issue #14): QEMU's and the host's.

QEMU's 9p mapped-file backend keeps a symlink as a regular file holding the
target with ``S_IFLNK|0777`` in its metadata; ptxdist and ``fastnfs virtfs
import`` make real symlinks.  The server writes new symlinks in the style the
export already uses (``fastnfs.virtfs.style``), or as ``--virtfs-symlinks``
says; ``import --symlinks`` writes either; ``check`` reports a mixed tree.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from conftest import FastnfsProcess
from rpcclient import NF3LNK, NFS3_OK, AuthSys, Nfs3
from test_virtfs_e2e import META, META_ROOT, get_meta, put_meta

from fastnfs.virtfs import style
from fastnfs.virtfs.check import check_tree
from fastnfs.virtfs.tools import main as tool_main

ROOT = AuthSys(0, 0)
LNK = stat.S_IFLNK | 0o777


def qemu_link(d: Path, name: str, target: str, uid=0, gid=0) -> None:
    """A symlink as QEMU's mapped-file backend writes it."""
    (d / name).write_bytes(target.encode())
    os.chmod(d / name, 0o600)
    put_meta(d, name, uid, gid, LNK)


def host_link(d: Path, name: str, target: str, uid=0, gid=0) -> None:
    os.symlink(target, d / name)
    put_meta(d, name, uid, gid, LNK)


def tree(tmp_path, kind: str, root_meta: bool = True) -> Path:
    t = tmp_path / ("tree-" + kind)
    (t / "bin").mkdir(parents=True)
    (t / "bin" / "busybox").write_bytes(b"\x7fELF")
    put_meta(t / "bin", "busybox", 0, 0, stat.S_IFREG | 0o755)
    put_meta(t, "bin", 0, 0, stat.S_IFDIR | 0o755)
    if root_meta:
        put_meta(t, None, 0, 0, stat.S_IFDIR | 0o755)
    if kind in ("qemu", "mixed", "mostly-qemu"):
        qemu_link(t / "bin", "sh", "busybox")
    if kind in ("host", "mixed", "mostly-qemu"):
        host_link(t / "bin", "ls", "busybox")
    if kind == "mostly-qemu":
        qemu_link(t / "bin", "cat", "busybox")
    return t


def decided(t: Path):
    fd = os.open(t, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return style.decide(style.survey(fd))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize("kind,root_meta,want,mixed", [
    ("qemu", True, "qemu", False),
    ("host", True, "host", False),
    ("mixed", True, "host", True),          # a tie: the host's
    ("mostly-qemu", True, "qemu", True),    # the majority
    ("none", True, "host", False),          # no symlinks, made for NFS (import writes the root's)
    ("none", False, "qemu", False),         # no symlinks, metadata as QEMU leaves it
])
def test_detection(tmp_path, kind, root_meta, want, mixed):
    got, got_mixed, why = decided(tree(tmp_path, kind, root_meta))
    assert (got, got_mixed) == (want, mixed), why


def test_detection_of_a_tree_without_metadata_is_host(tmp_path):
    (tmp_path / "t").mkdir()
    assert decided(tmp_path / "t")[0] == "host"


def test_detection_looks_at_a_bounded_number_of_entries(tmp_path):
    t = tmp_path / "big"
    t.mkdir()
    for i in range(50):
        (t / ("f%02d" % i)).write_bytes(b"")
    sub = t / "z"
    sub.mkdir()
    qemu_link(sub, "late", "x")
    fd = os.open(t, os.O_RDONLY | os.O_DIRECTORY)
    try:
        s = style.survey(fd, limit=20)
        assert (s.qemu, s.host, s.complete) == (0, 0, False)
        s = style.survey(fd, limit=None)
        assert (s.qemu, s.complete, s.qemu_paths) == (1, True, (b"z/late",))
    finally:
        os.close(fd)


def test_forced_style_and_bad_style(tmp_path):
    fd = os.open(tree(tmp_path, "host"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert style.symlink_style(fd, "qemu")[0] == "qemu"
        assert style.symlink_style(fd, "auto")[0] == "host"
        with pytest.raises(ValueError):
            style.symlink_style(fd, "both")
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the server
def serve(t: Path, *extra):
    return FastnfsProcess(t, ["--virtfs", *extra]).start()


def make_link(srv, name="new", target="../bin/busybox"):
    n = Nfs3.connect(srv.port, cred=ROOT)
    try:
        root = n.mount(str(srv.export))
        st, bin_ = n.lookup(root, "bin")
        assert st == NFS3_OK
        st, r = n.symlink(bin_["fh"], name, target)
        assert st == NFS3_OK, st
        fh = r["fh"]
        st, rl = n.readlink(fh)
        assert (st, rl["data"]) == (NFS3_OK, target.encode())
        st, a = n.getattr(fh)
        assert (a["attrs"]["type"], a["attrs"]["mode"], a["attrs"]["size"]) == (
            NF3LNK, 0o777, len(target))
        st, ls = n.readdirplus(bin_["fh"])
        assert st == NFS3_OK
        ent = {e["name"]: e for e in ls["entries"]}
        ea = ent[name.encode() if isinstance(next(iter(ent)), bytes) else name]["attrs"]
        assert (ea["type"], ea["size"]) == (NF3LNK, len(target))
    finally:
        n.close()


@pytest.mark.parametrize("kind,flag,want", [
    ("qemu", (), "qemu"),
    ("host", (), "host"),
    ("qemu", ("--virtfs-symlinks=host",), "host"),
    ("host", ("--virtfs-symlinks", "qemu"), "qemu"),
])
def test_symlink_written_in_the_trees_style(tmp_path, kind, flag, want):
    t = tree(tmp_path, kind)
    srv = serve(t, *flag)
    try:
        make_link(srv)
    finally:
        srv.stop()
    p = t / "bin" / "new"
    st = os.lstat(p)
    if want == "qemu":
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert p.read_bytes() == b"../bin/busybox"
    else:
        assert stat.S_ISLNK(st.st_mode) and os.readlink(p) == "../bin/busybox"
    assert get_meta(t / "bin", "new") == {"uid": 0, "gid": 0, "mode": LNK}
    assert "new symlinks are written %s-style" % want in srv.log(), srv.log()[-2000:]
    assert "Traceback" not in srv.log()
    # forced against the tree's style: the tree is mixed now, and check says so
    assert [f.kind for f in check_tree(t)] == ([] if kind == want else ["mixed"])


def test_mixed_tree_warns_at_start(tmp_path):
    t = tree(tmp_path, "mostly-qemu")
    srv = serve(t)
    try:
        make_link(srv)
    finally:
        srv.stop()
    warn = [ln for ln in srv.log().splitlines() if "WARNING" in ln and "mixes" in ln]
    assert warn, srv.log()[-2000:]
    assert stat.S_ISREG(os.lstat(t / "bin" / "new").st_mode)


def test_qemu_style_link_hard_link_rename_remove(tmp_path):
    """The metadata of a QEMU-style symlink follows it like any file's."""
    t = tree(tmp_path, "qemu")
    (t / "etc").mkdir()
    put_meta(t, "etc", 0, 0, stat.S_IFDIR | 0o755)
    srv = serve(t)
    try:
        make_link(srv, "ln", "busybox")
        n = Nfs3.connect(srv.port, cred=ROOT)
        try:
            root = n.mount(str(srv.export))
            b = n.lookup(root, "bin")[1]["fh"]
            e = n.lookup(root, "etc")[1]["fh"]
            lfh = n.lookup(b, "ln")[1]["fh"]
            assert n.link(lfh, e, "hard")[0] == NFS3_OK
            assert n.rename(b, "ln", e, "moved")[0] == NFS3_OK
            assert n.readlink(n.lookup(e, "moved")[1]["fh"])[1]["data"] == b"busybox"
            assert n.getattr(n.lookup(e, "hard")[1]["fh"])[1]["attrs"]["nlink"] == 2
            assert n.remove(e, "hard")[0] == NFS3_OK
        finally:
            n.close()
    finally:
        srv.stop()
    assert not (t / "bin" / META / "ln").exists()
    assert not (t / "etc" / META / "hard").exists()
    assert get_meta(t / "etc", "moved")["mode"] == LNK
    assert (t / "etc" / "moved").read_bytes() == b"busybox"
    assert check_tree(t) == []


# ---------------------------------------------------------------- import and check
def test_check_reports_a_mixed_tree(tmp_path, capsys):
    t = tree(tmp_path, "mixed")
    found = check_tree(t)
    assert [f.kind for f in found] == ["mixed"], found
    assert "1 QEMU-style" in found[0].message and "bin/sh" in found[0].message
    assert "1 real symlinks" in found[0].message and "bin/ls" in found[0].message
    assert tool_main(["check", str(t)]) == 1
    assert "mixes symlink styles" in capsys.readouterr().out
    for kind in ("qemu", "host"):
        assert check_tree(tree(tmp_path, kind)) == []


@pytest.mark.parametrize("how", ["tar", "dir"])
@pytest.mark.parametrize("symlinks", ["qemu", "host"])
def test_import_writes_either_style(tmp_path, how, symlinks):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "busybox").write_bytes(b"bb")
    os.symlink("busybox", src / "bin" / "sh")
    if how == "tar":
        arch = tmp_path / "r.tar"
        with tarfile.open(arch, "w") as tf:
            tf.add(src, arcname=".")
        src = arch
    dst = tmp_path / "dst"
    assert tool_main(["import", "-q", "--symlinks", symlinks, str(src), str(dst)]) == 0
    p = dst / "bin" / "sh"
    assert get_meta(dst / "bin", "sh")["mode"] == LNK
    if symlinks == "qemu":
        assert stat.S_ISREG(os.lstat(p).st_mode) and p.read_bytes() == b"busybox"
    else:
        assert os.readlink(p) == "busybox"
    assert check_tree(dst) == []
    assert decided(dst)[0] == symlinks
    assert (dst / META_ROOT).exists()


def test_whole_tree_survey_holds_few_descriptors(tmp_path):
    """check surveys the whole tree: directories wait as names, not open fds."""
    import resource
    t = tmp_path / "wide"
    t.mkdir()
    for i in range(300):
        (t / ("d%03d" % i)).mkdir()
    qemu_link(t / "d299", "l", "x")
    fd = os.open(t, os.O_RDONLY | os.O_DIRECTORY)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 16, hard))
        s = style.survey(fd, limit=None)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(fd)
    assert (s.qemu, s.host, s.complete) == (1, 0, True)


def test_check_reports_a_qemu_style_symlink_without_target(tmp_path):
    t = tree(tmp_path, "qemu")
    qemu_link(t / "bin", "empty", "")
    found = check_tree(t)
    assert [(f.kind, "no target" in f.message) for f in found] == [("mismatch", True)], found


def test_cli_refuses_an_unknown_style(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "fastnfs", "serve", "--virtfs",
                        "--virtfs-symlinks=both", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "--virtfs-symlinks" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "fastnfs", "virtfs", "import", "--symlinks=both",
                        str(tmp_path), str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "--symlinks" in r.stderr, r.stderr
