"""Several worker processes answering on one port (--workers N).

The parent binds one set of listeners per worker on the same ports with
SO_REUSEPORT, so the kernel spreads connections and datagrams across them,
and keeps every set open itself: a worker that dies is replaced by a new one
on the same sockets, and connections queued meanwhile are not lost.  Workers
share nothing at run time; they agree because handles name inodes and the
write verifier is made once, here, before the fork.  The parent registers
with rpcbind, forwards SIGHUP, and stops every worker on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger("fastnfs.workers")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
STOP_GRACE = 10.0


def _child(server, sets, i, serve) -> None:
    # SIGHUP stays blocked until serve() has its handler: a reload forwarded
    # while this worker starts then waits for it instead of killing the worker
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGHUP})
    for sig in (signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _die_with_parent()
    for j, s in enumerate(sets):
        if j != i:
            for _kind, sock in s:
                sock.close()
    server.sockets = sets[i]
    code = 0
    try:
        serve(server, register=False)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        log.exception("worker %d failed", i)
        code = 1
    os._exit(code)


def supervise(server, n: int, serve) -> int:
    """Run serve(server, register=False) in n forked workers and watch over them."""
    sets = [server.sockets] + [server.bind_again() for _ in range(n - 1)]
    _clear_warned(server)
    registered = False
    if server.config.portmap:
        registered = server.registration.register(server.mappings(), server.mappings6())
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict = {}

    def spawn(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            _child(server, sets, i, serve)
        children[pid] = i
        log.info("worker %d started (pid %d)", i, pid)

    for i in range(n):
        spawn(i)
    stopping = False
    deadline = None
    try:
        while children:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if timeout is None:
                info = signal.sigwaitinfo(_SIGNALS)
                sig = info.si_signo
            else:
                info = signal.sigtimedwait(_SIGNALS, timeout)
                sig = None if info is None else info.si_signo
                if info is None:
                    for pid in children:
                        log.warning("worker pid %d did not stop in time; killing it", pid)
                        _kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + STOP_GRACE
                    continue
            if sig in (signal.SIGTERM, signal.SIGINT) and not stopping:
                stopping = True
                log.info("stopping %d workers", len(children))
                for pid in children:
                    _kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE
            elif sig == signal.SIGHUP:
                for pid in children:
                    _kill(pid, signal.SIGHUP)
            elif sig == signal.SIGCHLD:
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    i = children.pop(pid, None)
                    if i is None or stopping:
                        continue
                    log.error("worker %d (pid %d) died (%s); starting a new one",
                              i, pid, _describe(status))
                    spawn(i)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        if registered:
            server.registration.unregister()
    return 0


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
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.waitstatus_to_exitcode(status)
