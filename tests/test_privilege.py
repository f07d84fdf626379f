"""Whether fastnfs switches to each caller's ids is decided by its capabilities,
not by geteuid(): under fakeroot (ptxdist) or pseudo's preload (Yocto) geteuid()
is 0 but the process may not change ids, and a raw setfsuid would fail."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import NOBODY
from fastnfs import creds

ALL = (1 << 41) - 1


@pytest.mark.parametrize("caps,want", [
    (0, False),
    (ALL, True),
    ((1 << creds.CAP_SETUID) | (1 << creds.CAP_SETGID), False),          # no DAC override
    ((1 << creds.CAP_SETUID) | (1 << creds.CAP_SETGID) | (1 << creds.CAP_DAC_OVERRIDE), True),
])
def test_privilege_is_read_from_capabilities(caps, want):
    assert creds.privileged(caps) is want


def test_capabilities_come_from_proc(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t00000000000000c2\n")
    assert creds.effective_capabilities(str(status)) == 0xC2
    assert creds.effective_capabilities(str(tmp_path / "missing")) == 0


def test_under_fakeroot_euid_is_0_but_ids_are_not_switched():
    if os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("fakeroot"):
        if os.environ.get("FASTNFS_REQUIRE_ALL") == "1":
            pytest.fail("needs root, setpriv and fakeroot (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("needs root, setpriv and fakeroot")
    code = "import os; from fastnfs import creds; print(os.geteuid(), creds.ENABLED)"
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", "fakeroot", "--", sys.executable, "-c", code],
                       capture_output=True, text=True, cwd="/")
    if r.returncode != 0 and "Permission denied" in r.stderr:
        pytest.skip("this Python is not readable by uid %d" % NOBODY)
    assert r.stdout.split() == ["0", "False"], r.stdout + r.stderr


def test_a_server_under_fakeroot_answers_mnt_and_creates(monkeypatch, tmp_path, public_dir):
    """ptxdist's default nfsroot runs unfsd inside `fakeroot --` as the build user."""
    if not shutil.which("fakeroot"):
        if os.environ.get("FASTNFS_REQUIRE_ALL") == "1":
            pytest.fail("fakeroot is not installed (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("fakeroot is not installed")
    from conftest import FastnfsProcess, start_servers_as_nobody
    from rpcclient import AuthSys, Nfs3
    start_servers_as_nobody(monkeypatch, tmp_path, prefix=["fakeroot", "--"])
    export = public_dir / "export"
    export.mkdir()
    os.chown(export, NOBODY, NOBODY)
    srv = FastnfsProcess(export).start()
    try:
        n = Nfs3.connect(srv.port, cred=AuthSys(0, 0))
        st, out = n.mnt(str(export))
        assert st == 0, "MNT answered %d" % st
        st, _ = n.create(out["fh"], "made-by-root")
        assert st == 0
        n.close()
    finally:
        # Ctrl-C to the group: fakeroot's trap stops its faked daemon too
        os.killpg(srv.proc.pid, signal.SIGINT)
        srv.proc.wait(20)
        srv.stop()
    assert (export / "made-by-root").exists()
    assert "Traceback" not in srv.log()
