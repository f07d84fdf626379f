"""pseudo's files.db read directly (fastnfs.pseudodb), against databases written by
Debian's real pseudo, including while a pseudo server is running."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from fastnfs.pseudodb import PseudoDB, rdev_split

REQUIRE_ALL = os.environ.get("FASTNFS_REQUIRE_ALL") == "1"


def need_pseudo() -> str:
    path = shutil.which("pseudo")
    if path is None:
        if REQUIRE_ALL:
            pytest.fail("pseudo is not installed (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("pseudo is not installed")
    return path


def pseudo_env(statedir) -> dict:
    return dict(os.environ, PSEUDO_PREFIX="/usr", PSEUDO_LOCALSTATEDIR=str(statedir))


def under_pseudo(statedir, code: str, cwd) -> str:
    r = subprocess.run(["pseudo", sys.executable, "-c", code], env=pseudo_env(statedir),
                       cwd=str(cwd), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def stop_pseudo(statedir) -> None:
    """`pseudo -S`: the server saves files.db and exits (its socket file stays)."""
    try:
        pid = int((statedir / "pseudo.pid").read_text().strip())
    except (OSError, ValueError):
        return
    subprocess.run(["pseudo", "-S"], env=pseudo_env(statedir), capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("pseudo server %d did not stop" % pid)


MAKE_TREE = """
import os
os.umask(0)
os.makedirs("rootfs/dev"); os.makedirs("rootfs/usr/bin")
os.mknod("rootfs/dev/console", 0o20600, os.makedev(5, 1))
os.mknod("rootfs/dev/big", 0o60660, os.makedev(240, 300))
os.chown("rootfs/dev/big", 0, 6)
open("rootfs/usr/bin/su", "w").close()
os.chown("rootfs/usr/bin/su", 0, 0); os.chmod("rootfs/usr/bin/su", 0o4755)
os.symlink("su", "rootfs/usr/bin/link")
os.chown("rootfs/usr/bin/link", 0, 0, follow_symlinks=False)
os.chown("rootfs/usr", 0, 0)
open("rootfs/usr/bin/user", "w").close()
os.chown("rootfs/usr/bin/user", 1000, 100)
"""


@pytest.fixture
def tree(tmp_path):
    need_pseudo()
    state = tmp_path / "rootfs.pseudo_state"
    state.mkdir()
    under_pseudo(state, MAKE_TREE, tmp_path)
    stop_pseudo(state)
    return tmp_path / "rootfs", state


def _row(db, path):
    st = os.lstat(path)
    return db.row(os.fsencode(path), st.st_dev, st.st_ino, st.st_mode)


def test_rows_written_by_pseudo(tree):
    root, state = tree
    db = PseudoDB(str(state))
    con = _row(db, root / "dev" / "console")
    assert stat.S_ISCHR(con.mode) and rdev_split(con.rdev) == (5, 1)
    big = _row(db, root / "dev" / "big")
    assert stat.S_ISBLK(big.mode) and rdev_split(big.rdev) == (240, 300)    # not cut to 8 bits
    assert (big.uid, big.gid, big.mode & 0o7777) == (0, 6, 0o660)
    su = _row(db, root / "usr" / "bin" / "su")
    assert su.mode == stat.S_IFREG | 0o4755 and (su.uid, su.gid) == (0, 0)
    assert stat.S_ISLNK(_row(db, root / "usr" / "bin" / "link").mode)
    assert (_row(db, root / "usr" / "bin" / "user").uid) == 1000
    # on disk: empty regular files owned by the build user, no setuid bit
    assert stat.S_ISREG(os.lstat(root / "dev" / "big").st_mode)


def test_unlisted_file_and_type_mismatch_keep_host_values(tree):
    root, state = tree
    (root / "new").write_bytes(b"x")
    db = PseudoDB(str(state))
    assert _row(db, root / "new") is None
    os.unlink(root / "usr" / "bin" / "user")      # now a directory where a file row says file
    os.mkdir(root / "usr" / "bin" / "user")
    assert _row(db, root / "usr" / "bin" / "user") is None


def test_malformed_rows_warn_once_each_and_the_rest_applies(tree, caplog):
    root, state = tree
    con = sqlite3.connect(state / "files.db")
    con.execute("INSERT INTO files (path, dev, ino, uid, gid, mode, rdev, deleting) "
                "VALUES ('/x/bad', 1, 2, 'root', 0, 33188, 0, 0)")
    con.execute("INSERT INTO files (path, dev, ino, uid, gid, mode, rdev, deleting) "
                "VALUES ('/x/notype', 1, 3, 0, 0, 420, 0, 0)")
    con.commit()
    con.close()
    with caplog.at_level(logging.WARNING, logger="fastnfs.pseudo"):
        db = PseudoDB(str(state))
        db.refresh(force=True)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2, msgs
    assert any("/x/bad" in m and "malformed" in m for m in msgs)
    assert any("/x/notype" in m for m in msgs)
    assert _row(db, root / "usr" / "bin" / "su").mode & stat.S_ISUID


def test_garbage_file_is_one_warning_and_no_rows(tmp_path, caplog):
    (tmp_path / "files.db").write_bytes(b"this is not sqlite" * 100)
    with caplog.at_level(logging.WARNING, logger="fastnfs.pseudo"):
        db = PseudoDB(str(tmp_path))
        db.refresh(force=True)
    assert db.by_path == {} and len(caplog.records) == 1


def test_reading_while_pseudo_runs_loses_none_of_its_changes(tree):
    """The reader never locks files.db, so pseudo's own save at exit succeeds."""
    root, state = tree
    # a pseudo session that changes owners while we keep reading the database
    proc = subprocess.Popen(
        ["pseudo", sys.executable, "-c",
         "import os, time\n"
         "for i in range(30):\n"
         "    p = 'rootfs/f%d' % i\n"
         "    open(p, 'w').close(); os.chown(p, 4000 + i, 4000); time.sleep(0.02)\n"],
        env=pseudo_env(state), cwd=str(root.parent))
    db = PseudoDB(str(state))
    while proc.poll() is None:
        db.refresh(force=True)
        time.sleep(0.01)
    assert proc.returncode == 0
    stop_pseudo(state)
    db.refresh(force=True)
    for i in range(30):
        row = _row(db, root / ("f%d" % i))
        assert row is not None and row.uid == 4000 + i, i
    assert db.loads >= 2


def test_reused_inode_of_another_live_path_warns_and_keeps_host_values(tree, caplog):
    """pseudo aborts its client on such a "path mismatch"; fastnfs warns once."""
    root, state = tree
    su = root / "usr" / "bin" / "su"
    st = os.lstat(su)
    # a file made outside pseudo, under a name without a row, carrying su's inode
    # (as an inode reused after a replacement looks): simulate with a hard link
    other = root / "usr" / "bin" / "other"
    os.link(su, other)
    db = PseudoDB(str(state))
    with caplog.at_level(logging.WARNING, logger="fastnfs.pseudo"):
        for _ in range(3):
            assert db.row(os.fsencode(other), st.st_dev, st.st_ino, st.st_mode) is None
    assert len(caplog.records) == 1 and "other" in caplog.records[0].getMessage()
    # the row's own path still gets it; a moved file (old path gone) keeps its row
    assert _row(db, su).mode & stat.S_ISUID
    os.unlink(su)
    assert _row(db, other).mode & stat.S_ISUID
