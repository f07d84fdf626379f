"""The owner override (RFC 1813 section 4.4: NFSv3 has no open; knfsd's
NFSD_MAY_OWNER_OVERRIDE): READ, WRITE, COMMIT and a new size by the file's
owner succeed whatever its mode says now, while ACCESS keeps reporting the
mode's truth.  cthon04's special/op_chmod does exactly this: open a file,
chmod it 000, write, close.  Over a real socket, with the server as root
(credentials switched per caller) and as an ordinary user (it owns the files
on disk and grants itself the owner's bit for the open only)."""

from __future__ import annotations

import os
import stat as S

import pytest

from conftest import NOBODY, FastnfsProcess, start_servers_as_nobody
from rpcclient import AuthSys, Nfs3
from test_pseudo import yocto  # noqa: F401  (fixture)

NFS3_OK, NFS3ERR_ACCES = 0, 13
UNSTABLE = 0


def _op_chmod(n, root_fh, name: str, mode=0o644):
    """Create, write, chmod 000, write again, commit, read back, new size:
    every data call answers OK for the owner."""
    st, out = n.create(root_fh, name, mode=mode)
    assert st == NFS3_OK, st
    fh = out["fh"]
    assert n.write(fh, 0, b"before ")[0] == NFS3_OK
    assert n.setattr(fh, mode=0)[0] == NFS3_OK
    st, out = n.write(fh, 7, b"after chmod 000", stable=UNSTABLE)
    assert st == NFS3_OK, "WRITE by the owner of a 000 file: %d" % st
    assert n.commit(fh)[0] == NFS3_OK
    st, out = n.read(fh, 0, 100)
    assert st == NFS3_OK, "READ by the owner of a 000 file: %d" % st
    assert out["data"] == b"before after chmod 000"
    assert n.setattr(fh, size=6)[0] == NFS3_OK
    assert n.getattr(fh)[1]["attrs"]["size"] == 6
    return fh


def _modes(path):
    return S.S_IMODE(os.lstat(path).st_mode)


def test_owner_override_unprivileged_plain(monkeypatch, tmp_path, public_dir):
    start_servers_as_nobody(monkeypatch, tmp_path)
    export = public_dir / "export"
    export.mkdir()
    os.chown(export, NOBODY, NOBODY)
    (export / "roots").write_bytes(b"not the server's")
    os.chmod(export / "roots", 0)
    srv = FastnfsProcess(export).start()
    try:
        n = Nfs3.connect(srv.port, cred=AuthSys(NOBODY, NOBODY))
        root = n.mount(str(export))
        fh = _op_chmod(n, root, "opchmod")
        # ACCESS tells the mode's truth; the disk keeps the owner's mode
        st, out = n.access(fh)
        assert st == NFS3_OK and out["access"] == 0
        assert _modes(export / "opchmod") == 0
        assert os.lstat(export / "opchmod").st_uid == NOBODY
        # a file the server does not own stays closed to it
        st, out = n.lookup(root, "roots")
        assert st == NFS3_OK
        assert n.read(out["fh"], 0, 10)[0] == NFS3ERR_ACCES
        assert _modes(export / "roots") == 0
        n.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_owner_override_privileged_plain(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to take callers' credentials")
    export = tmp_path / "export"
    export.mkdir()
    os.chmod(export, 0o1777)
    srv = FastnfsProcess(export).start()
    try:
        owner = Nfs3.connect(srv.port, cred=AuthSys(1000, 100))
        root = owner.mount(str(export))
        fh = _op_chmod(owner, root, "opchmod")
        assert os.lstat(export / "opchmod").st_uid == 1000
        # someone else is refused, by the mode bits as the kernel reads them
        other = Nfs3.connect(srv.port, cred=AuthSys(1001, 100))
        assert other.read(fh, 0, 10)[0] == NFS3ERR_ACCES
        assert other.write(fh, 0, b"x")[0] == NFS3ERR_ACCES
        # and the owner, after the override, is the caller again on that thread
        st, out = owner.create(root, "after", mode=0o644)
        assert st == NFS3_OK and out["attrs"]["uid"] == 1000
        owner.close()
        other.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_owner_override_virtfs_tree_with_a_000_file_on_disk(monkeypatch, tmp_path,
                                                             public_dir):
    """virtfs checks the owner itself; a file 000 on disk (no metadata) still opens."""
    start_servers_as_nobody(monkeypatch, tmp_path)
    export = public_dir / "export"
    export.mkdir()
    (export / "locked").write_bytes(b"on disk 000")
    os.chmod(export / "locked", 0)
    for p in (export, export / "locked"):
        os.chown(p, NOBODY, NOBODY)
    srv = FastnfsProcess(export, ["--virtfs"]).start()
    try:
        n = Nfs3.connect(srv.port, cred=AuthSys(NOBODY, NOBODY))
        root = n.mount(str(export))
        st, out = n.lookup(root, "locked")
        assert st == NFS3_OK
        st, got = n.read(out["fh"], 0, 100)
        assert st == NFS3_OK and got["data"] == b"on disk 000"
        _op_chmod(n, root, "opchmod")
        n.close()
    finally:
        srv.stop()
    assert _modes(export / "locked") == 0
    assert "Traceback" not in srv.log()


def test_owner_override_pseudo_database(yocto):  # noqa: F811
    """--pseudo: the owners are pseudo's; root's file chmod'ed 000 stays root's to use."""
    rootfs, state = yocto
    srv = FastnfsProcess(rootfs, ["--pseudo", str(state)]).start()
    try:
        n = Nfs3.connect(srv.port, cred=AuthSys(0, 0))
        root = n.mount(str(rootfs))
        _op_chmod(n, root, "opchmod")
        user = Nfs3.connect(srv.port, cred=AuthSys(1000, 1000))
        st, out = user.lookup(root, "opchmod")
        assert st == NFS3_OK
        assert user.read(out["fh"], 0, 10)[0] == NFS3ERR_ACCES
        n.close()
        user.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
