"""The worker processes' start (fastnfs.workers)."""

from __future__ import annotations

import os
import signal

from fastnfs import workers


class _Server:
    sockets = []


def test_a_sighup_before_the_worker_serves_waits_for_its_handler():
    """The parent forwards SIGHUP (reload the exports) to every worker; one that
    arrives while a new worker is still starting must wait for the worker's
    handler, not kill the worker with SIGHUP's default action."""
    signal.pthread_sigmask(signal.SIG_BLOCK, workers._SIGNALS)   # as supervise does
    try:
        pid = os.fork()
        if pid == 0:
            def serve(server, register):
                os.kill(os.getpid(), signal.SIGHUP)     # the forwarded reload, too early
                pending = signal.sigpending()
                raise SystemExit(0 if signal.SIGHUP in pending else 3)
            workers._child(_Server(), [[]], 0, serve)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, workers._SIGNALS)
    assert not os.WIFSIGNALED(status), "the worker was killed by signal %d" % os.WTERMSIG(status)
    assert os.waitstatus_to_exitcode(status) == 0
