"""backends.pseudowriter: the helper under the real pseudo that makes the changes
of `serve --pseudo` so that pseudo records them."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

from test_pseudodb import pseudo_env, stop_pseudo

from fastnfs.backends.pseudowriter import PseudoWriter, server_alive, stop_server

pytestmark = pytest.mark.skipif(not shutil.which("pseudo"), reason="pseudo is not installed")


def _view(state, path) -> tuple:
    code = "import os,sys; st=os.lstat(sys.argv[1]); print(st.st_mode, st.st_uid, st.st_gid)"
    r = subprocess.run(["pseudo", sys.executable, "-c", code, str(path)],
                       env=pseudo_env(state), capture_output=True, text=True, timeout=60)
    stop_pseudo(state)
    assert r.returncode == 0, r.stderr
    return tuple(int(x) for x in r.stdout.split())


def test_changes_are_pseudos_and_symlinks_on_the_way_are_never_followed(tmp_path):
    root, outside, state = tmp_path / "root", tmp_path / "outside", tmp_path / "state"
    for d in (root / "d", outside, state):
        d.mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"")
    (outside / "f").write_bytes(b"")
    os.symlink(str(outside), root / "lnk")
    w = PseudoWriter(os.fsencode(root), str(state), "/usr")
    try:
        w.call("chown", b"d/f", 1234, 567)
        w.call("chmod", b"d/f", 0o4750)
        for bad in (b"lnk/f", b"d/../lnk/f"):
            with pytest.raises(OSError) as e:
                w.call("chown", bad, 1, 1)
            assert e.value.errno in (errno.ENOTDIR, errno.ELOOP)
        with pytest.raises(OSError) as e:
            w.call("unlink", b"d/nothing")
        assert e.value.errno == errno.ENOENT
        with pytest.raises(OSError) as e:
            w.call("frobnicate", b"d/f")
        assert e.value.errno == errno.EINVAL
        w.call("rename", b"d/f", b"g")
        assert server_alive(str(state)) is not None       # the helper's pseudo server
    finally:
        w.close()
    assert server_alive(str(state)) is None               # stopped, files.db saved
    mode, uid, gid = _view(state, root / "g")
    assert (mode & 0o7777, uid, gid) == (0o4750, 1234, 567)
    assert _view(state, outside / "f")[1:] == (os.getuid(), os.getgid())


def test_stop_server_without_one_is_quick(tmp_path):
    assert stop_server(str(tmp_path), "/usr") is True
