"""The `fastnfs serve` command line as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import FastnfsProcess, require
from rpcclient import Nfs3


def fastnfs_cmd(*args):
    return [sys.executable, "-m", "fastnfs", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_help_lists_every_option():
    out = subprocess.run(fastnfs_cmd("serve", "--help"), capture_output=True, text=True).stdout
    for opt in ("--port", "-n", "--mount-port", "-m", "--bind", "-l", "--tcp-only", "-t",
                "--no-portmap", "-p", "--foreground", "-d", "--pid-file", "-i", "--log-level", "--ro"):
        assert opt in out


def test_banner_gives_kernel_argument_and_mount_line(export_dir):
    srv = FastnfsProcess(export_dir).start()
    try:
        log = srv.log()
        path = str(export_dir)
        assert "nfsroot=" in log and ":%s,v3,tcp,port=%d,mountport=%d" % (path, srv.port, srv.port) in log
        assert "mount -t nfs -o vers=3,proto=tcp,port=%d,mountport=%d,nolock" % (srv.port, srv.port) in log
    finally:
        srv.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(export_dir, sig):
    srv = FastnfsProcess(export_dir).start()
    rc = srv.stop(sig)
    assert rc == 0
    assert "stopping" in srv.log() and "Traceback" not in srv.log()


def test_separate_mount_port_and_tcp_only(export_dir):
    port, mport = free_port(), free_port()
    srv = FastnfsProcess(export_dir, ["-m", str(mport), "-t"])
    srv.start(port)
    try:
        m = Nfs3.connect(mport)
        fh = m.mount(str(export_dir))
        n = Nfs3.connect(port)
        assert n.getattr(fh)[0] == 0
        m.close()
        n.close()
        # -t: nothing listens on UDP, so binding the same UDP port succeeds
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("0.0.0.0", port))
    finally:
        srv.stop()


def test_stays_in_the_foreground_by_default_and_stops_on_ctrl_c(export_dir, tmp_path):
    pidfile = tmp_path / "fastnfs.pid"
    port = free_port()
    p = subprocess.Popen(fastnfs_cmd("serve", str(export_dir), "-n", str(port), "-p",
                                     "--workers", "2", "-i", str(pidfile)),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _answers(port))
        assert p.poll() is None                       # still ours: not detached
        assert int(pidfile.read_text()) == p.pid
        p.send_signal(signal.SIGINT)                  # what Ctrl-C sends
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read()
    assert "nfsroot=" in err and "Traceback" not in err
    assert not pidfile.exists()


def test_detaches_and_writes_pid_file(export_dir, tmp_path):
    pidfile = tmp_path / "fastnfs.pid"
    port = free_port()
    r = subprocess.run(fastnfs_cmd("serve", str(export_dir), "-n", str(port), "-p", "--detach",
                                   "-i", str(pidfile)), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "nfsroot=" in r.stderr
    assert wait_for(pidfile.exists)
    pid = int(pidfile.read_text())
    try:
        assert wait_for(lambda: _answers(port))
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not pidfile.exists())


def _answers(port):
    try:
        c = Nfs3.connect(port, timeout=1.0)
    except OSError:
        return False
    try:
        return c.null()[0] == 0
    except Exception:
        return False
    finally:
        c.close()


def test_port_in_use_is_a_clear_error(export_dir):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run(fastnfs_cmd("serve", str(export_dir), "-n", str(port), "-p", "-d"),
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_not_a_directory(tmp_path):
    r = subprocess.run(fastnfs_cmd("serve", str(tmp_path / "missing"), "-d", "-p"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a directory" in r.stderr


def _mapped(rpcinfo_out: str, prog: int, vers: int, proto: str, port: int) -> bool:
    return any(line.split()[:4] == [str(prog), str(vers), proto, str(port)]
               for line in rpcinfo_out.splitlines())


def test_registers_with_rpcbind_and_unregisters(export_dir):
    require("rpcinfo")
    rpcbind = require("rpcbind")
    started = None
    if subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True).returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("no rpcbind running and not root to start one")
        started = subprocess.Popen([rpcbind, "-f", "-w"])
        assert wait_for(lambda: subprocess.run(["rpcinfo", "-p", "127.0.0.1"],
                                               capture_output=True).returncode == 0)
    try:
        # without -p (FastnfsProcess always passes it), so run the command directly
        port = free_port()
        proc = subprocess.Popen(fastnfs_cmd("serve", str(export_dir), "-n", str(port), "-d"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def registered():
                out = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True,
                                     text=True).stdout
                return _mapped(out, 100003, 3, "tcp", port) and _mapped(out, 100005, 3, "tcp", port)
            assert wait_for(registered), subprocess.run(["rpcinfo", "-p"], capture_output=True,
                                                        text=True).stdout
            out = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True).stdout
            assert _mapped(out, 100005, 3, "udp", port) and _mapped(out, 100005, 1, "tcp", port)
            assert _mapped(out, 100003, 3, "udp", port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        out = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True).stdout
        assert "100003" not in out and "100005" not in out
    finally:
        if started is not None:
            started.terminate()
            started.wait(10)


def test_without_rpcbind_is_only_a_notice(export_dir):
    if subprocess.run(["sh", "-c", "command -v rpcinfo && rpcinfo -p 127.0.0.1"],
                      capture_output=True).returncode == 0:
        pytest.skip("an rpcbind is running here")
    port = free_port()
    proc = subprocess.Popen(fastnfs_cmd("serve", str(export_dir), "-n", str(port), "-d"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _answers(port))
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "no rpcbind" in err and "Traceback" not in err


def test_a_stop_signal_while_the_workers_start_still_cleans_up(export_dir, tmp_path):
    """SIGTERM as soon as the pid file is there (the workers may still be forking):
    the server stops as asked and removes its pid file, every time."""
    for i in range(5):
        pidfile = tmp_path / ("fastnfs-%d.pid" % i)
        proc = subprocess.Popen(fastnfs_cmd("serve", str(export_dir), "-n", str(free_port()),
                                            "-p", "--workers", "2", "-i", str(pidfile)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(pidfile.exists)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert not pidfile.exists(), "round %d: the pid file was left behind" % i
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
