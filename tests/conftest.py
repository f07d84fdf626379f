"""Shared fixtures: a real fastnfs process serving a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def end_session(sid: int, grace: float = 10.0) -> None:
    """SIGTERM whatever is left of the process group sid, then SIGKILL after grace s."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        try:
            os.killpg(sid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if sig == signal.SIGKILL:
            return
        time.sleep(0.05)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL


def wait_for(pred, timeout: float = 15.0):
    """pred()'s first true value within timeout seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


class FastnfsProcess:
    """`fastnfs serve` in a child process, as a user would start it."""

    def __init__(self, export: Path, extra_args=(), env=None, log_path: Path | None = None,
                 exports_file: Path | None = None):
        self.export = export
        self.exports_file = exports_file   # serve -e FILE instead of the export path
        self.extra_args = list(extra_args)
        self.env = env
        self.port = 0
        self.proc = None
        self.log_path = log_path or export.parent / ("fastnfs-%s.log" % export.name)

    def start(self, port: int | None = None, timeout: float = 20.0) -> "FastnfsProcess":
        port = self.port if port is None else port
        env = dict(os.environ)
        env.update(self.env or {})
        workers = [] if "--workers" in self.extra_args else ["--workers", "1"]
        what = ["-e", str(self.exports_file)] if self.exports_file else [str(self.export)]
        cmd = [sys.executable, "-m", "fastnfs", "serve", *what, "-n", str(port),
               "-p", "-d", "--log-level", "debug", *workers, *self.extra_args]
        self._log = open(self.log_path, "ab")
        start = self._log.tell()
        # a session of its own: stop() also ends what it leaves behind (a fakeroot
        # wrapper's server and faked, a detached worker)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[start:].decode(errors="replace")
            m = re.search(r"NFS port (\d+)", text)
            if m and "ready:" in text:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("fastnfs exited with %s:\n%s" % (self.proc.returncode, text))
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("fastnfs did not start:\n" + self.log())

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        end_session(self.proc.pid)
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        if os.environ.get("FASTNFS_SHADOW") == "1":
            from fastnfs.shadow import MARK
            bad = [ln for ln in self.log().splitlines() if MARK in ln]
            assert not bad, "the fast lane and the general path differ:\n" + "\n".join(bad[:5])
        return rc

    def restart(self) -> "FastnfsProcess":
        self.stop()
        return self.start(self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, rel: str = "") -> str:
        """A libnfs URL for a path inside the export."""
        path = str(self.export) + ("/" + rel.lstrip("/") if rel else "")
        return "nfs://127.0.0.1%s?nfsport=%d&mountport=%d&version=3" % (path, self.port, self.port)


@pytest.fixture
def export_dir(tmp_path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    return d


@pytest.fixture
def fastnfs(export_dir):
    srv = FastnfsProcess(export_dir).start()
    yield srv
    srv.stop()
    if "Traceback" in srv.log():
        pytest.fail("the server logged a traceback:\n" + srv.log()[-4000:])


def pytest_sessionstart(session):
    """Under FASTNFS_REQUIRE_ALL=1 (CI) a Cython extension that does not import is an
    error, not a quiet run of the pure-Python twins (FASTNFS_PURE=1 asks for those)."""
    from fastnfs import _accel
    gone = _accel.missing()
    if gone and os.environ.get("FASTNFS_REQUIRE_ALL") == "1":
        pytest.exit("Cython extensions do not import (FASTNFS_REQUIRE_ALL=1): %s"
                    % "; ".join("%s: %s" % kv for kv in sorted(gone.items())), returncode=3)


def cython_twin(name: str):
    """(module, None) for a built Cython twin, or (None, why) to skip its tests
    (never skipped under FASTNFS_REQUIRE_ALL=1: the session refuses to start)."""
    import importlib
    if os.environ.get("FASTNFS_PURE"):
        return None, "FASTNFS_PURE=1"
    try:
        return importlib.import_module(name), None
    except ImportError as e:  # pragma: no cover - extension not built
        return None, "%s not built: %s" % (name, e)


def require_vm(udp: bool = False, ipv6: bool = False):
    """The qemu kernel-client kit (tests/vm/guest.py), built or taken from the cache;
    skip without qemu, but fail under FASTNFS_REQUIRE_ALL=1 (CI).  ipv6=True also
    needs the host's ::1, where slirp delivers an IPv6 guest's connections."""
    from vm import guest
    ok, why = guest.available()
    if ok and ipv6 and not ipv6_loopback():
        ok, why = False, "no IPv6 loopback (::1) on this host for an IPv6 guest"
    if not ok:
        if os.environ.get("FASTNFS_REQUIRE_ALL") == "1":
            pytest.fail("qemu kernel client unavailable: " + why)
        pytest.skip("qemu kernel client unavailable: " + why)
    return guest.prepare(udp=udp)


def ipv6_loopback() -> bool:
    """True if a socket can bind the host's ::1."""
    import socket
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kit():
    return require_vm()


@pytest.fixture(scope="session")
def kit_udp():
    return require_vm(udp=True)


@pytest.fixture(scope="session")
def kit_ipv6():
    return require_vm(ipv6=True)


NOBODY = 65534


def start_servers_as_nobody(monkeypatch, tmp_path, prefix=()) -> None:
    """Make FastnfsProcess start its server as uid/gid 65534: a setpriv wrapper takes
    sys.executable's place. Skips where that is impossible (not root, no setpriv,
    or an interpreter other users cannot read, such as a pyenv under /root;
    tests/run.sh uses a venv of Debian's /usr/bin/python3 for this).  prefix goes
    between setpriv and the interpreter (["fakeroot", "--"], say)."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to start a server as another user")
    ids = ["--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    probe = subprocess.run(["setpriv", *ids, sys.executable, "-c", "import fastnfs"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this Python or its fastnfs is not readable by uid %d" % NOBODY)
    wrapper = tmp_path / "python-as-nobody"
    wrapper.write_text("#!/bin/sh\nexec setpriv %s %s %s \"$@\"\n"
                       % (" ".join(ids), " ".join(prefix), sys.executable))
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))


@pytest.fixture
def public_dir():
    """A scratch directory under /tmp that other users can reach (pytest's own
    tmp_path is private to root), removed afterwards."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="fastnfs-public-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


def require(cmd: str) -> str:
    """The path of a client tool; skip without it, but fail under FASTNFS_REQUIRE_ALL=1 (CI)."""
    path = shutil.which(cmd)
    if path is None:
        if os.environ.get("FASTNFS_REQUIRE_ALL") == "1":
            pytest.fail("%s is not installed (run tests/install-deps.sh)" % cmd)
        pytest.skip("%s is not installed (run tests/install-deps.sh)" % cmd)
    return path
