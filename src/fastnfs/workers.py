"""Several processes answering on one port (--workers N).

The server process binds one set of listeners per worker on the same ports
with SO_REUSEPORT, so the kernel spreads connections and datagrams across
them, and answers on the first set itself: it is worker 0.  Workers 1..N-1
are forked from it before it starts its loop or any thread, so they share
its memory copy-on-write.  Workers share nothing at run time; they agree
because handles name inodes and the write verifier is made once, before the
fork.

The parent keeps every worker's sockets open: a worker that dies is replaced
on the same sockets, so connections queued meanwhile are not lost.  The
replacement is a fresh interpreter (``python -m fastnfs.workers``: a process
with a running loop and threads must not fork) that inherits the sockets and
gets the configuration, the exports in force and the verifier through a
pipe.  The parent registers with rpcbind, forwards SIGHUP, and stops every
worker on SIGTERM or SIGINT.  A worker dies with the parent
(PR_SET_PDEATHSIG), so a parent that dies, of a crash in its own serving
too, takes the whole server down, as unfsd's single process does.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from . import heap
from .proc import die_with_parent

log = logging.getLogger("fastnfs.workers")

STOP_GRACE = 10.0
_ENV = "FASTNFS_WORKER_FD"   # the pipe a new worker reads its orders from


class WorkerPool:
    """Workers 1..n-1 of a server whose own process is worker 0."""

    def __init__(self, server, n: int):
        self.server = server
        self.sets = {i: server.bind_again() for i in range(1, n)}
        self.children: dict = {}   # pid -> [worker index, pidfd or None, Popen or None]
        self.stopping = False
        self.loop = None

    def fork(self) -> None:
        """Fork the first workers, before this process has a loop or threads:
        they share its memory copy-on-write (a replacement is a fresh one)."""
        _clear_warned(self.server)
        log.info("worker 0 started (pid %d, this process)", os.getpid())
        _trim()
        for i in self.sets:
            with _sighup_blocked():
                pid = os.fork()
            if pid == 0:
                os._exit(self._forked(i))
            self.children[pid] = [i, None, None]
            log.info("worker %d started (pid %d)", i, pid)

    def _forked(self, i: int) -> int:
        _die_with_parent()
        server = self.server
        for _kind, sock in server.sockets:
            sock.close()
        for j, socks in self.sets.items():
            if j != i:
                for _kind, sock in socks:
                    sock.close()
        server.sockets, server.pool = self.sets[i], None
        try:
            from .server import serve_in_this_process
            serve_in_this_process(server, register=False)
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 0
        except BaseException:
            log.exception("worker %d failed", i)
            return 1
        return 0

    def start(self, loop) -> None:
        """Watch the workers from loop: a pidfd turns readable when one ends
        (uvloop keeps SIGCHLD to itself), and reap() replaces it."""
        self.loop = loop
        for pid, child in self.children.items():
            child[1] = self._watch(pid)

    def _watch(self, pid: int):
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):   # the server's once-a-second tick reaps then
            return None
        self.loop.add_reader(pidfd, self.reap)
        return pidfd

    def _spawn(self, i: int) -> None:
        """A fresh worker i: python -m fastnfs.workers, told what to serve through a pipe."""
        import pickle
        import subprocess

        s = self.server
        orders = pickle.dumps({
            "config": s.config, "verifier": s.nfs.write_verifier, "listen": s.listen,
            "sockets": [(kind, sock.fileno()) for kind, sock in self.sets[i]],
            "log": _log_setup(), "ppid": os.getpid(), "index": i})
        r, w = os.pipe()
        fds = [r] + [sock.fileno() for _kind, sock in self.sets[i]]
        try:
            with _sighup_blocked():
                p = subprocess.Popen([sys.executable, "-m", "fastnfs.workers"], pass_fds=fds,
                                     env=dict(os.environ, **{_ENV: str(r)}),
                                     stdin=subprocess.DEVNULL)
        finally:
            os.close(r)
        with os.fdopen(w, "wb") as f:
            f.write(orders)
        self.children[p.pid] = [i, self._watch(p.pid), p]
        log.info("worker %d started (pid %d)", i, p.pid)

    def reap(self) -> None:
        """Replace the workers that died."""
        for pid, (i, pidfd, popen) in list(self.children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            del self.children[pid]
            if popen is not None:   # reaped here: subprocess must not wait for it again
                popen.returncode = os.waitstatus_to_exitcode(status)
            if pidfd is not None:
                self.loop.remove_reader(pidfd)
                os.close(pidfd)
            if not self.stopping:
                log.error("worker %d (pid %d) died (%s); starting a new one",
                          i, pid, _describe(status))
                self._spawn(i)

    def signal(self, sig) -> None:
        for pid in self.children:
            _kill(pid, sig)

    def stop(self) -> None:
        """SIGTERM every worker and wait for them; SIGKILL the late ones."""
        self.stopping = True
        if self.children:
            log.info("stopping %d workers", len(self.children))
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children:
            self.reap()
            if time.monotonic() > deadline:
                for pid in self.children:
                    log.warning("worker pid %d did not stop in time; killing it", pid)
                    _kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_GRACE
            time.sleep(0.01)
        for socks in self.sets.values():
            for _kind, sock in socks:
                sock.close()


class _sighup_blocked:
    """SIGHUP blocked around a fork: the worker inherits the mask, so a SIGHUP
    sent before its loop handles it waits for the handler (a reload) instead
    of killing it; Server.serve unblocks it."""

    def __enter__(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def worker_main() -> int:
    """A worker started by WorkerPool: serve the inherited sockets until told to stop."""
    import pickle
    import socket

    from .notls import import_loop_modules
    import_loop_modules()   # before the orders' classes import the server's modules
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
    from .stats import stats_dir
    warned = os.path.join(stats_dir(server.port), "warned")
    if os.path.isdir(warned):   # shutil only when there is something to remove
        import shutil
        shutil.rmtree(warned, ignore_errors=True)


def _die_with_parent() -> None:
    """A worker must not outlive a parent killed with SIGKILL (it would hold the port)."""
    die_with_parent(signal.SIGTERM)


def _trim() -> None:
    """Give the heap's free pages (what starting up, compiling and parsing left
    behind) back to the system before forking: each forked worker would
    otherwise carry them in its resident set too (~2 MB in each process).
    What is left is frozen: the collector then leaves those objects alone, so
    a worker's collections do not write to (and copy) the pages it shares
    with the parent."""
    import gc
    gc.collect()
    heap.trim()
    gc.freeze()


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(worker_main())
