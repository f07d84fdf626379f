"""`fastnfs serve -s` / `unfsd -s`: no user switching, unfsd's ownership report."""

from __future__ import annotations

import os

from conftest import FastnfsProcess
from rpcclient import AuthSys, Nfs3


def test_single_user_reports_the_callers_ownership(export_dir):
    me_uid, me_gid = os.geteuid(), os.getegid()
    (export_dir / "mine").write_text("x")
    other = export_dir / "other"
    other.write_text("y")
    os.chown(other, me_uid + 4321, me_gid + 4321)
    srv = FastnfsProcess(export_dir, ["-s"]).start()
    try:
        n = Nfs3.connect(srv.port, cred=AuthSys(uid=1000, gid=1001))
        root = n.mount(str(export_dir))
        st, mine = n.lookup(root, "mine")
        assert st == 0
        assert (mine["attrs"]["uid"], mine["attrs"]["gid"]) == (1000, 1001)
        st, oth = n.lookup(root, "other")
        assert (oth["attrs"]["uid"], oth["attrs"]["gid"]) == (0, 0)
        # a file the caller creates is the server user's on disk, the caller's in replies
        st, made = n.create(root, "new", mode=0o644)
        assert st == 0
        assert os.stat(export_dir / "new").st_uid == me_uid
        st, got = n.getattr(made["fh"])
        assert (got["attrs"]["uid"], got["attrs"]["gid"]) == (1000, 1001)
        n.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
