"""The NFS procedures over a backend that is not the host filesystem.

tests/memfs.py keeps a whole tree in memory; a server process built with it
answers the ordinary procedures through tests/rpcclient.py over a real
socket, and no filesystem call of that process names an entry the client
made (Python audit events), so the procedures reach storage only through
the backend interface.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rpcclient import (ACCESS3_MODIFY, ACCESS3_READ, EXCLUSIVE, FILE_SYNC, GUARDED, NF3DIR,
                       NF3FIFO, NF3LNK, NF3REG, NFS3_OK, NFS3ERR_ACCES, NFS3ERR_EXIST,
                       NFS3ERR_ISDIR, NFS3ERR_NOENT, NFS3ERR_NOTEMPTY, AuthSys, Nfs3)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def memserver(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("memfs")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, str(HERE / "memfs.py")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    if "ready" not in line:
        proc.kill()
        pytest.fail("memfs server did not start: %r %s" % (line, proc.stderr.read().decode()))
    port = int(line.split()[3])

    def stop() -> str:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        return out.decode() + err.decode()

    yield {"port": port, "stop": stop}
    if proc.poll() is None:
        stop()


@pytest.fixture(scope="module")
def nfs(memserver):
    n = Nfs3.connect(memserver["port"])
    n.root = n.mount("/mem")
    yield n
    n.close()


def test_root_attributes(nfs):
    st, r = nfs.getattr(nfs.root)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3DIR


def test_create_write_read(nfs):
    st, r = nfs.create(nfs.root, "mem-file", how=GUARDED, mode=0o640)
    assert st == NFS3_OK
    fh = r["fh"]
    assert r["attrs"]["type"] == NF3REG and r["attrs"]["mode"] == 0o640
    st, w = nfs.write(fh, 0, b"hello, memory", stable=FILE_SYNC)
    assert st == NFS3_OK and w["count"] == 13
    st, rd = nfs.read(fh, 7, 100)
    assert st == NFS3_OK and rd["data"] == b"memory" and rd["eof"]
    assert nfs.getattr(fh)[1]["attrs"]["size"] == 13
    assert nfs.create(nfs.root, "mem-file", how=GUARDED)[0] == NFS3ERR_EXIST


def test_lookup_and_setattr(nfs):
    st, r = nfs.create(nfs.root, "mem-attrs", how=GUARDED)
    fh = r["fh"]
    st, found = nfs.lookup(nfs.root, "mem-attrs")
    assert st == NFS3_OK and found["fh"] == fh
    assert nfs.lookup(nfs.root, "mem-none")[0] == NFS3ERR_NOENT
    st, _ = nfs.setattr(fh, mode=0o600, size=5)
    assert st == NFS3_OK
    a = nfs.getattr(fh)[1]["attrs"]
    assert a["mode"] == 0o600 and a["size"] == 5
    assert nfs.read(fh, 0, 10)[1]["data"] == b"\0" * 5


def test_mkdir_rmdir_readdir(nfs):
    st, r = nfs.mkdir(nfs.root, "mem-dir", mode=0o755)
    assert st == NFS3_OK
    d = r["fh"]
    for i in range(20):
        assert nfs.create(d, "mem-%02d" % i, how=GUARDED)[0] == NFS3_OK
    names = [e["name"] for e in nfs.readdir_all(d, count=512)]
    assert sorted(names) == sorted([b".", b".."] + [b"mem-%02d" % i for i in range(20)])
    plus = nfs.readdir_all(d, count=1024, plus=True)
    assert sorted(e["name"] for e in plus) == sorted(names)
    assert nfs.rmdir(nfs.root, "mem-dir")[0] == NFS3ERR_NOTEMPTY
    for i in range(20):
        assert nfs.remove(d, "mem-%02d" % i)[0] == NFS3_OK
    assert nfs.rmdir(nfs.root, "mem-dir")[0] == NFS3_OK
    assert nfs.lookup(nfs.root, "mem-dir")[0] == NFS3ERR_NOENT


def test_rename_and_remove(nfs):
    fh = nfs.create(nfs.root, "mem-old", how=GUARDED)[1]["fh"]
    nfs.write(fh, 0, b"x", stable=FILE_SYNC)
    d = nfs.mkdir(nfs.root, "mem-to")[1]["fh"]
    assert nfs.rename(nfs.root, "mem-old", d, "mem-new")[0] == NFS3_OK
    assert nfs.lookup(nfs.root, "mem-old")[0] == NFS3ERR_NOENT
    st, r = nfs.lookup(d, "mem-new")
    assert st == NFS3_OK and r["fh"][4:24] == fh[4:24]   # the same object (other ancestors)
    assert nfs.remove(d, "mem-new")[0] == NFS3_OK
    assert nfs.lookup(d, "mem-new")[0] == NFS3ERR_NOENT


def test_symlink_readlink(nfs):
    st, r = nfs.symlink(nfs.root, "mem-link", "some/where")
    assert st == NFS3_OK and r["attrs"]["type"] == NF3LNK
    st, t = nfs.readlink(r["fh"])
    assert st == NFS3_OK and t["data"] == b"some/where"


def test_permissions_are_the_backends(memserver, nfs):
    d = nfs.mkdir(nfs.root, "mem-private", mode=0o700)[1]["fh"]
    other = Nfs3.connect(memserver["port"], cred=AuthSys(uid=1000, gid=1000))
    try:
        assert other.create(d, "mem-intruder", how=GUARDED)[0] == NFS3ERR_ACCES
    finally:
        other.close()


def test_link_mknod_access_commit(nfs):
    fh = nfs.create(nfs.root, "mem-orig", how=GUARDED, mode=0o644)[1]["fh"]
    assert nfs.link(fh, nfs.root, "mem-hard")[0] == NFS3_OK
    assert nfs.getattr(fh)[1]["attrs"]["nlink"] == 2
    assert nfs.link(nfs.root, nfs.root, "mem-dirlink")[0] == NFS3ERR_ISDIR
    st, r = nfs.mknod(nfs.root, "mem-fifo", NF3FIFO, mode=0o600)
    assert st == NFS3_OK and r["attrs"]["type"] == NF3FIFO
    st, a = nfs.access(fh, ACCESS3_READ | ACCESS3_MODIFY)
    assert st == NFS3_OK and a["access"] == ACCESS3_READ | ACCESS3_MODIFY
    assert nfs.commit(fh)[0] == NFS3_OK
    verf = b"12345678"
    st, r = nfs.create(nfs.root, "mem-excl", how=EXCLUSIVE, verf=verf)
    assert st == NFS3_OK
    st, again = nfs.create(nfs.root, "mem-excl", how=EXCLUSIVE, verf=verf)   # a retransmission
    assert st == NFS3_OK and again["fh"] == r["fh"]


def test_filesystem_info(nfs):
    assert nfs.fsstat(nfs.root)[0] == NFS3_OK
    assert nfs.pathconf(nfs.root)[0] == NFS3_OK
    assert nfs.fsinfo(nfs.root)[0] == NFS3_OK


def test_no_filesystem_call_named_a_client_entry(memserver, nfs):
    """Last in the module: stop the server and read what its audit hook saw."""
    out = memserver["stop"]()
    assert "Traceback" not in out, out
    assert "memfs filesystem calls naming mem- entries: 0" in out, out
