"""--workers N: the server process is worker 0 and starts N-1 fresh workers.

Each test runs `fastnfs serve --workers 2` as a user would (conftest's
FastnfsProcess, debug logs) and tells the processes apart by the pid in their
log lines: every MNT logs "fastnfs[PID] ... mounted PATH", and the kernel
spreads connections over the processes (SO_REUSEPORT), so a handful of
connections reaches both.
"""

from __future__ import annotations

import os
import re
import signal
import time

from conftest import FastnfsProcess, wait_for
from rpcclient import FILE_SYNC, MNT3_OK, NFS3_OK, AuthSys, Nfs3

ROOT = AuthSys(0, 0, machine=b"workers")


def children(pid: int) -> set:
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return {int(p) for p in f.read().split()}


def mounting_pids(srv, path: str, start: int) -> set:
    """The pids that logged a mount of path after byte start of the log."""
    return {int(p) for p in re.findall(r"fastnfs\[(\d+)\] INFO \S+ mounted %s\n" % re.escape(path),
                                       srv.log()[start:])}


def mount_many(srv, path: str, n: int = 24) -> tuple:
    """MNT path over n connections and WRITE a byte through each: (set of
    mounting pids, set of write verifiers)."""
    start = len(srv.log())
    verfs = set()
    for k in range(n):
        c = Nfs3.connect(srv.port, cred=ROOT)
        try:
            st, r = c.mnt(path)
            assert st == MNT3_OK
            st, w = c.write(c.lookup(r["fh"], "f")[1]["fh"], k, b"x", stable=FILE_SYNC)
            assert st == NFS3_OK
            verfs.add(w["verf"])
        finally:
            c.close()
    assert wait_for(lambda: len(mounting_pids(srv, path, start)) >= 1)
    time.sleep(0.2)   # the other process's log lines
    return mounting_pids(srv, path, start), verfs


def test_the_server_process_is_worker_0(export_dir):
    (export_dir / "f").write_bytes(b"")
    srv = FastnfsProcess(export_dir, ["--workers", "2"]).start()
    try:
        kids = wait_for(lambda: children(srv.proc.pid))
        assert len(kids) == 1                       # N-1 processes started
        assert "worker 0 started (pid %d, this process)" % srv.proc.pid in srv.log()
        pids, verfs = mount_many(srv, str(export_dir))
        assert pids == {srv.proc.pid} | kids        # both answer calls
        assert len(verfs) == 1                      # with one write verifier
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log()


def test_a_dead_worker_is_replaced_with_the_same_verifier(export_dir):
    (export_dir / "f").write_bytes(b"")
    srv = FastnfsProcess(export_dir, ["--workers", "2"]).start()
    try:
        (old,) = wait_for(lambda: children(srv.proc.pid))
        _, verfs = mount_many(srv, str(export_dir), 4)
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: re.search(r"worker 1 \(pid %d\) died \(killed by signal 9\); "
                                          r"starting a new one" % old, srv.log()))
        kids = wait_for(lambda: children(srv.proc.pid) - {old})
        assert len(kids) == 1
        assert wait_for(lambda: srv.log().count("ready:") == 3)
        pids, verfs2 = mount_many(srv, str(export_dir))
        assert pids == {srv.proc.pid} | kids
        assert verfs2 == verfs                      # clients need not resend writes
    finally:
        assert srv.stop() == 0
    assert not any(os.path.exists("/proc/%d" % p) for p in kids)


def test_a_new_worker_serves_the_reloaded_exports(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f").write_bytes(b"")
    exports = tmp_path / "exports"
    exports.write_text("%s (rw,no_root_squash,insecure)\n" % a)
    srv = FastnfsProcess(a, ["--workers", "2"], exports_file=exports).start()
    try:
        (old,) = wait_for(lambda: children(srv.proc.pid))
        exports.write_text("%s (rw,no_root_squash,insecure)\n%s (rw,no_root_squash,insecure)\n"
                           % (a, b))
        srv.proc.send_signal(signal.SIGHUP)          # forwarded to worker 1
        assert wait_for(lambda: srv.log().count("exports reloaded") == 2)
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: srv.log().count("ready:") == 3)
        (new,) = wait_for(lambda: children(srv.proc.pid) - {old})
        pids, _ = mount_many(srv, str(b))
        assert new in pids                           # not the exports it was started with
    finally:
        assert srv.stop() == 0


def mapped(pid: int, what: str) -> bool:
    with open("/proc/%d/maps" % pid) as f:
        return what in f.read()


def test_no_server_process_loads_openssl_or_sqlite(export_dir):
    """fastnfs serves no TLS: asyncio and uvloop are imported without ssl
    (fastnfs.notls), which saves OpenSSL's ~4-5 MB in every process; SQLite
    is loaded only where boards are served."""
    (export_dir / "f").write_bytes(b"")
    srv = FastnfsProcess(export_dir, ["--workers", "2"]).start()
    try:
        (old,) = wait_for(lambda: children(srv.proc.pid))
        os.kill(old, signal.SIGKILL)                 # a replacement starts fresh
        assert wait_for(lambda: srv.log().count("ready:") == 3)
        (new,) = wait_for(lambda: children(srv.proc.pid) - {old})
        mount_many(srv, str(export_dir), 8)
        for pid in (srv.proc.pid, new):
            assert mapped(pid, "uvloop/loop.cpython")
            assert not mapped(pid, "libssl") and not mapped(pid, "libcrypto")
            assert not mapped(pid, "libsqlite3")
    finally:
        assert srv.stop() == 0


def test_a_sighup_before_a_forked_worker_serves_waits_for_its_handler():
    """The server forwards SIGHUP (reload the exports) to every worker; one that
    arrives while a new worker is still starting must wait for the worker's
    handler, not kill the worker with SIGHUP's default action."""
    import signal
    from fastnfs import workers
    with workers._sighup_blocked():          # as around the fork of a worker
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGHUP)     # the forwarded reload, too early
            os._exit(0 if signal.SIGHUP in signal.sigpending() else 3)
    _, status = os.waitpid(pid, 0)
    assert not os.WIFSIGNALED(status), "the worker was killed by signal %d" % os.WTERMSIG(status)
    assert os.waitstatus_to_exitcode(status) == 0
