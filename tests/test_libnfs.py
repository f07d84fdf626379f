"""fastnfs against libnfs (Debian's libnfs-utils): a client nobody here wrote."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from conftest import require

pytestmark = pytest.mark.libnfs


def run(*args, timeout=300):
    return subprocess.run(args, capture_output=True, timeout=timeout, check=False)


def md5_of(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_ls_lists_every_entry(fastnfs):
    require("nfs-ls")
    e = fastnfs.export
    (e / "file.txt").write_text("x")
    (e / "dir").mkdir()
    os.symlink("file.txt", e / "link")
    r = run("nfs-ls", fastnfs.url())
    assert r.returncode == 0, r.stderr
    names = {line.split()[-1] for line in r.stdout.decode().splitlines() if line.strip()}
    assert {"file.txt", "dir", "link"} <= names


def test_ls_recursive_of_a_tree(fastnfs):
    require("nfs-ls")
    e = fastnfs.export
    want = set()
    for i in range(20):
        d = e / ("d%02d" % i)
        d.mkdir()
        for j in range(10):
            (d / ("f%02d" % j)).write_text(str(j))
            want.add("d%02d/f%02d" % (i, j))
    r = run("nfs-ls", "-R", fastnfs.url())
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    for name in ("d00/f00", "d19/f09", "d07/f03"):
        assert name in out


def test_cat_reads_content(fastnfs):
    require("nfs-cat")
    (fastnfs.export / "hello.txt").write_bytes(b"hello from fastnfs\n")
    r = run("nfs-cat", fastnfs.url("hello.txt"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from fastnfs\n"


def test_cp_200mb_both_ways_md5(fastnfs, tmp_path):
    require("nfs-cp")
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    want = md5_of(src)
    r = run("nfs-cp", str(src), fastnfs.url("up.bin"))
    assert r.returncode == 0, r.stderr
    assert md5_of(fastnfs.export / "up.bin") == want
    back = tmp_path / "back.bin"
    r = run("nfs-cp", fastnfs.url("up.bin"), str(back))
    assert r.returncode == 0, r.stderr
    assert md5_of(back) == want


def test_cat_of_missing_file_fails_cleanly(fastnfs):
    require("nfs-cat")
    r = run("nfs-cat", fastnfs.url("nope.txt"))
    assert r.returncode != 0
    # the server keeps answering
    (fastnfs.export / "ok.txt").write_text("ok")
    assert run("nfs-cat", fastnfs.url("ok.txt")).stdout == b"ok"
