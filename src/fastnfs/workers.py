"""Several processes answering on one port (--workers N).

The server process binds one set of listeners per worker on the same ports
with SO_REUSEPORT, so the kernel spreads connections and datagrams across
them.  It answers on the first set itself (it is worker 0) and starts a fresh
interpreter for each other set (``python -m fastnfs.workers``), which gets its
sockets as inherited file descriptors and the server's configuration and
write verifier through a pipe: workers share nothing at run time and agree
because handles name inodes and the verifier is the parent's.  A fresh
interpreter, not a fork, so that a worker holds only what serving needs and
the parent need not keep a second copy of everything to fork from.

The parent keeps every worker's sockets open: a worker that dies is replaced
by a new one on the same sockets, and connections queued meanwhile are not
lost.  It registers with rpcbind, forwards SIGHUP, and stops every worker on
SIGTERM or SIGINT.  A worker dies with the parent (PR_SET_PDEATHSIG), so a
parent that dies, however, takes the whole server down, as unfsd's single
process does.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

log = logging.getLogger("fastnfs.workers")

STOP_GRACE = 10.0
_ENV = "FASTNFS_WORKER_FD"   # the pipe a new worker reads its orders from


class WorkerPool:
    """Workers 1..n-1 of a server whose own process is worker 0."""

    def __init__(self, server, n: int):
        self.server = server
        self.sets = {i: server.bind_again() for i in range(1, n)}
        self.children: dict = {}   # subprocess.Popen -> (worker index, pidfd or None)
        self.stopping = False
        self.loop = None

    def start(self, loop) -> None:
        """Start every worker; the loop calls reap() when one ends (a pidfd
        turns readable: uvloop keeps SIGCHLD to itself)."""
        self.loop = loop
        _clear_warned(self.server)
        log.info("worker 0 started (pid %d, this process)", os.getpid())
        for i in self.sets:
            self._spawn(i)

    def _spawn(self, i: int) -> None:
        import pickle
        import subprocess

        s = self.server
        orders = pickle.dumps({
            "config": s.config, "verifier": s.nfs.write_verifier, "listen": s.listen,
            "sockets": [(kind, sock.fileno()) for kind, sock in self.sets[i]],
            "log": _log_setup(), "ppid": os.getpid(), "index": i})
        r, w = os.pipe()
        fds = [r] + [sock.fileno() for _kind, sock in self.sets[i]]
        # the worker inherits SIGHUP blocked: one sent before its loop handles it
        # waits for the handler (and a reload) instead of killing it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            p = subprocess.Popen([sys.executable, "-m", "fastnfs.workers"], pass_fds=fds,
                                 env=dict(os.environ, **{_ENV: str(r)}),
                                 stdin=subprocess.DEVNULL)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            os.close(r)
        with os.fdopen(w, "wb") as f:
            f.write(orders)
        pidfd = None
        try:
            pidfd = os.pidfd_open(p.pid)
            self.loop.add_reader(pidfd, self.reap)
        except (AttributeError, OSError):   # the server's once-a-second tick reaps then
            pass
        self.children[p] = (i, pidfd)
        log.info("worker %d started (pid %d)", i, p.pid)

    def reap(self) -> None:
        """Replace the workers that died."""
        for p, (i, pidfd) in list(self.children.items()):
            status = p.poll()
            if status is None:
                continue
            del self.children[p]
            if pidfd is not None:
                self.loop.remove_reader(pidfd)
                os.close(pidfd)
            if not self.stopping:
                log.error("worker %d (pid %d) died (%s); starting a new one",
                          i, p.pid, _describe(status))
                self._spawn(i)

    def signal(self, sig) -> None:
        for p in self.children:
            _kill(p.pid, sig)

    def stop(self) -> None:
        """SIGTERM every worker and wait for them; SIGKILL the late ones."""
        self.stopping = True
        if self.children:
            log.info("stopping %d workers", len(self.children))
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in list(self.children):
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except Exception:   # subprocess.TimeoutExpired
                log.warning("worker pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.wait()
        for _i, pidfd in self.children.values():
            if pidfd is not None:
                self.loop.remove_reader(pidfd)
                os.close(pidfd)
        self.children.clear()
        for socks in self.sets.values():
            for _kind, sock in socks:
                sock.close()


def worker_main() -> int:
    """A worker started by WorkerPool: serve the inherited sockets until told to stop."""
    import pickle
    import socket

    with os.fdopen(int(os.environ.pop(_ENV)), "rb") as f:
        orders = pickle.load(f)
    _die_with_parent()
    if os.getppid() != orders["ppid"]:   # the parent died before PDEATHSIG was set
        return 0
    from .cli import setup_logging
    setup_logging(*orders["log"])
    os.umask(0)   # as the parent: modes are exactly what clients ask for
    from .server import Server, raise_fd_limit, serve_in_this_process
    raise_fd_limit()
    try:
        server = Server(orders["config"], write_verifier=orders["verifier"])
    except OSError as e:
        log.error("worker %d cannot export %s: %s", orders["index"],
                  os.fsdecode(e.filename or b"?"), e.strerror)
        return 1
    server.listen = orders["listen"]
    server.sockets = [(kind, socket.socket(fileno=fd)) for kind, fd in orders["sockets"]]
    try:
        serve_in_this_process(server, register=False)
    finally:
        for e in server.exports:
            e.close()
    return 0


def _log_setup() -> tuple:
    """(level, format) of this process's logging, for setup_logging in a worker."""
    root = logging.getLogger()
    fmt = "text"
    for h in root.handlers:
        if type(h.formatter).__name__ == "JsonFormatter":
            fmt = "json"
    return logging.getLevelName(root.level).lower(), fmt


def _clear_warned(server) -> None:
    """A new server run warns afresh about malformed metadata."""
    import shutil

    from .stats import stats_dir
    shutil.rmtree(os.path.join(stats_dir(server.port), "warned"), ignore_errors=True)


def _die_with_parent() -> None:
    """A worker must not outlive a parent killed with SIGKILL (it would hold the port)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if status < 0:
        return "killed by signal %d" % -status
    return "exit status %d" % status


if __name__ == "__main__":
    sys.exit(worker_main())
