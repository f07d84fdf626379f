"""Many connections: an idle crowd, the idle timeout, the connection limit.

The server runs as users start it (conftest.FastnfsProcess, one worker); the
busy clients are tests/rpcclient.py threads, the idle ones bare TCP sockets
that made one NULL call (so they are real RPC clients, then silent).

Speeds are printed, never asserted (the machine is shared): the tests assert
that every busy client finishes, that the idle crowd is still connected (or
closed by the timeout as configured), and that the limit refuses with a log
line instead of running out of descriptors.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import threading
import time

import pytest

from conftest import FastnfsProcess
from rpcclient import (LAST_FRAGMENT, NFS3_OK, NFS_PROGRAM, NFS_V3, AuthSys, Nfs3, Reply,
                       RpcClient, call_header, new_xid)

ROOT = AuthSys(0, 0, machine=b"conns")


@pytest.fixture(autouse=True, scope="module")
def enough_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 2200:
        pytest.skip("RLIMIT_NOFILE hard limit %d is too low for 1000+ connections" % hard)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start(export, *args) -> FastnfsProcess:
    return FastnfsProcess(export, list(args)).start()


def null_record() -> bytes:
    return RpcClient.frame(call_header(new_xid(), NFS_PROGRAM, NFS_V3, 0, None))


def recv_reply(s: socket.socket) -> Reply:
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("EOF")
            buf += chunk
        return buf
    (mark,) = struct.unpack(">I", exact(4))
    assert mark & LAST_FRAGMENT
    return Reply(exact(mark & 0x7FFFFFFF))


def idle_client(port: int) -> socket.socket:
    """A TCP connection that made one NULL call and then says nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(null_record())
    assert recv_reply(s).ok
    return s


def still_open(s: socket.socket) -> bool:
    """No EOF or reset pending on s (non-blocking peek)."""
    s.setblocking(False)
    try:
        data = s.recv(1, socket.MSG_PEEK)
        return bool(data)       # b"" is EOF
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def busy_round(port: int, root: bytes, fh: bytes, clients: int = 16, ops: int = 400):
    """clients threads, each ops GETATTR/READ calls on its own connection: (ops/s, errors)."""
    errors = []
    barrier = threading.Barrier(clients + 1)
    conns = [Nfs3.connect(port, cred=ROOT, timeout=30) for _ in range(clients)]

    def work(n: Nfs3):
        barrier.wait()
        try:
            for i in range(ops):
                if i % 2:
                    st, r = n.read(fh, 0, 4096)
                    if st != NFS3_OK or len(r["data"]) != 4096:
                        errors.append(("READ", st))
                else:
                    st, _ = n.getattr(root)
                    if st != NFS3_OK:
                        errors.append(("GETATTR", st))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(120)
    dt = time.perf_counter() - t0
    for c in conns:
        c.close()
    return clients * ops / dt, errors


def server_fds(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


def test_1000_idle_connections_do_not_slow_16_busy_ones(export_dir):
    (export_dir / "f").write_bytes(os.urandom(65536))
    srv = start(export_dir)
    idle = []
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(export_dir))
        fh = n.lookup(root, "f")[1]["fh"]
        n.close()
        busy_round(srv.port, root, fh, ops=50)              # warm up
        alone, errs = busy_round(srv.port, root, fh)
        assert not errs, errs
        time.sleep(0.5)                     # the busy connections are closed by now
        fds0 = server_fds(srv.proc.pid)
        t0 = time.monotonic()
        for _ in range(1000):
            idle.append(idle_client(srv.port))
        opened = time.monotonic() - t0
        fds1 = server_fds(srv.proc.pid)
        assert fds1 >= fds0 + 1000          # the server holds them all
        crowded, errs = busy_round(srv.port, root, fh)
        assert not errs, errs
        # the crowd is still there and still answered
        assert all(still_open(s) for s in idle)
        for s in idle[::50]:
            s.sendall(null_record())
            assert recv_reply(s).ok
        print("\nbusy ops/s: %.0f alone, %.0f with 1000 idle connections (ratio %.2f); "
              "1000 connections opened in %.1f s; server fds %d -> %d"
              % (alone, crowded, crowded / alone, opened, fds0, fds1))
    finally:
        for s in idle:
            s.close()
        srv.stop()
    assert "Traceback" not in srv.log()


def test_idle_timeout_closes_idle_connections_not_busy_ones(export_dir):
    srv = start(export_dir, "--idle-timeout", "2")
    try:
        busy = Nfs3.connect(srv.port, cred=ROOT)
        root = busy.mount(str(export_dir))
        t0 = time.monotonic()
        idle = [idle_client(srv.port) for _ in range(20)]
        silent = socket.create_connection(("127.0.0.1", srv.port))   # never says anything
        closed_at = {}
        calls = 0
        while time.monotonic() - t0 < 7:
            assert busy.getattr(root)[0] == NFS3_OK     # every 0.2 s: never idle for 2 s
            calls += 1
            for i, s in enumerate(idle + [silent]):
                if i not in closed_at and not still_open(s):
                    closed_at[i] = time.monotonic() - t0
            time.sleep(0.2)
        assert sorted(closed_at) == list(range(21)), closed_at
        times = sorted(closed_at.values())
        assert 1.8 <= times[0] and times[-1] <= 5.0, times
        assert busy.null()[0] == NFS3_OK and busy.getattr(root)[0] == NFS3_OK
        busy.close()
        for s in idle + [silent]:
            s.close()
        print("\nidle connections closed after %.1f..%.1f s; the busy one made %d calls meanwhile"
              % (times[0], times[-1], calls))
        # a closed client simply reconnects
        again = Nfs3.connect(srv.port, cred=ROOT)
        assert again.getattr(root)[0] == NFS3_OK
        again.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
    assert "closing idle connection from 127.0.0.1" in srv.log()


def test_max_connections_refuses_with_a_log_line_and_recovers(export_dir):
    srv = start(export_dir, "--max-connections", "50")
    held = []
    try:
        for _ in range(50):
            held.append(idle_client(srv.port))
        fds_full = server_fds(srv.proc.pid)
        # the 51st (and 200 more) are closed at once, without an answer
        refused = 0
        for _ in range(201):
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            except OSError:
                refused += 1
                continue
            try:
                s.sendall(null_record())
                recv_reply(s)
            except (ConnectionError, OSError):
                refused += 1
            finally:
                s.close()
        assert refused == 201
        assert server_fds(srv.proc.pid) <= fds_full + 5
        assert all(still_open(s) for s in held)
        log = srv.log()
        assert "connection limit (50) reached: refusing 127.0.0.1" in log, log[-2000:]
        # one line, not 201 (rate-limited)
        assert log.count("connection limit") == 1
        # room again once others leave
        for s in held[:5]:
            s.close()
        del held[:5]
        deadline = time.monotonic() + 5
        n = None
        while n is None:
            try:
                c = Nfs3.connect(srv.port, cred=ROOT)
                c.null()
                n = c
            except (ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        root = n.mount(str(export_dir))
        assert n.getattr(root)[0] == NFS3_OK
        n.close()
        for s in held[:10]:       # the ones still held work as before
            s.sendall(null_record())
            assert recv_reply(s).ok
    finally:
        for s in held:
            s.close()
        srv.stop()
    assert "Traceback" not in srv.log()
