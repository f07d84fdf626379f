"""pseudo records what clients change: a helper process under pseudo's preload.

``serve --pseudo STATEDIR`` reads pseudo's ``files.db`` directly and never
writes it (``fastnfs.pseudodb``): only pseudo may, or a pseudo server's
in-memory copy would be lost or the file damaged.  So every change of
ownership, mode, device or name a client makes is also done by a small Python
process started as ``pseudo python -c WRITER`` with the same
``PSEUDO_LOCALSTATEDIR`` (and ``PSEUDO_PREFIX``): its libc calls (lchown,
chmod, mknod, rename, unlink, rmdir, link) are pseudo's, which records them
exactly as for a local program; pseudo saves them to files.db when its server
stops, which ``close`` asks for (``pseudo -S``).  ``pseudo ls -ln`` then agrees
with what the board saw, and the next fastnfs start reads them back.

Before files.db is read, a pseudo server still alive for STATEDIR is asked to
save and stop (``stop_server``), so the rows read are pseudo's latest.

The protocol on the helper's stdin/stdout: one request a line, fields separated
by tabs, paths relative to the export root and hex-encoded (they are bytes),
walked by the helper one directory at a time without following symlinks; the
answer is ``0`` or an errno.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

log = logging.getLogger("fastnfs.pseudo")

# runs under pseudo's preload: each request one libc call, which pseudo records
WRITER = r'''
import os, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
root = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def at(rel, fds):
    """(directory fd, name) of a path relative to the root, walked one component
    at a time without following a symlink (a client may swap one in meanwhile)."""
    *dirs, name = bytes.fromhex(rel.decode()).split(b"/")
    fd = root
    for d in dirs:
        fd = os.open(d, DIR, dir_fd=fd)
        fds.append(fd)
    return fd, name


def run(op, args, fds):
    if op == b"chown":
        fd, n = at(args[0], fds)
        os.chown(n, int(args[1]), int(args[2]), dir_fd=fd, follow_symlinks=False)
    elif op == b"chmod":
        fd, n = at(args[0], fds)
        os.chmod(n, int(args[1]), dir_fd=fd, follow_symlinks=False)
    elif op == b"mknod":
        fd, n = at(args[0], fds)
        os.mknod(n, int(args[1]), int(args[2]), dir_fd=fd)
    elif op == b"unlink":
        fd, n = at(args[0], fds)
        os.unlink(n, dir_fd=fd)
    elif op == b"rmdir":
        fd, n = at(args[0], fds)
        os.rmdir(n, dir_fd=fd)
    elif op in (b"rename", b"link"):
        (fa, a), (fb, b) = at(args[0], fds), at(args[1], fds)
        if op == b"rename":
            os.rename(a, b, src_dir_fd=fa, dst_dir_fd=fb)
        else:
            os.link(a, b, src_dir_fd=fa, dst_dir_fd=fb, follow_symlinks=False)
    else:
        raise OSError(22, "unknown request")


out.write(b"ready\n")
out.flush()
for line in inp:
    op, *args = line.rstrip(b"\n").split(b"\t")
    fds = []
    try:
        run(op, args, fds)
        out.write(b"0\n")
    except OSError as e:
        out.write(b"%d\n" % (e.errno or 5))
    finally:
        for fd in fds:
            os.close(fd)
    out.flush()
'''


def pseudo_prefix() -> str | None:
    """PSEUDO_PREFIX: from the environment (runqemu sets it), else the prefix the
    `pseudo` on PATH was installed under (Debian: /usr); None without pseudo."""
    prefix = os.environ.get("PSEUDO_PREFIX")
    if prefix:
        return prefix
    exe = shutil.which("pseudo")
    if exe is None:
        return None
    return os.path.dirname(os.path.dirname(os.path.realpath(exe)))


def _env(statedir: str, prefix: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "PSEUDO_UNLOAD", "PSEUDO_DISABLED")}
    env.update(PSEUDO_PREFIX=prefix, PSEUDO_LOCALSTATEDIR=statedir)
    return env


def server_alive(statedir: str) -> int | None:
    """The pid of a live pseudo server for statedir (its pseudo.pid), or None."""
    try:
        with open(os.path.join(statedir, "pseudo.pid")) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return None     # exited, not yet reaped by its parent
    except (OSError, IndexError):
        pass
    return pid


def stop_server(statedir: str, prefix: str | None, timeout: float = 30.0) -> bool:
    """Ask a live pseudo server for statedir to save files.db and stop (`pseudo
    -S`), and wait until it is gone.  True when none is alive any more."""
    pid = server_alive(statedir)
    if pid is None:
        return True
    if prefix is None:
        log.warning("a pseudo server (pid %d) holds %s/files.db, and no pseudo is on PATH to "
                    "stop it: its latest changes are not in the file yet", pid, statedir)
        return False
    log.info("asking the pseudo server (pid %d) of %s to save files.db and stop", pid,
             statedir)
    for _attempt in range(2):     # asked again if still there (busy with clients?)
        try:
            subprocess.run(["pseudo", "-S"], env=_env(statedir, prefix), capture_output=True,
                           timeout=timeout / 2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        end = time.monotonic() + timeout / 2
        while time.monotonic() < end:
            if server_alive(statedir) is None:
                return True
            time.sleep(0.05)
    log.warning("the pseudo server (pid %d) of %s did not stop; files.db may be older than "
                "what pseudo shows", pid, statedir)
    return False


class PseudoWriter:
    """The helper under pseudo, started at the first change; one request at a time."""

    def __init__(self, root: bytes, statedir: str, prefix: str):
        self.root = root
        self.statedir = statedir
        self.prefix = prefix
        self._proc = None
        self._lock = threading.Lock()

    def _start(self):
        proc = subprocess.Popen(["pseudo", sys.executable, "-c", WRITER, self.root],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=_env(self.statedir, self.prefix), cwd="/",
                                start_new_session=True)
        if proc.stdout.readline() != b"ready\n":
            proc.kill()
            proc.wait()
            raise OSError(errno.EIO, "pseudo's helper did not start")
        return proc

    def call(self, op: str, *args) -> None:
        """One libc call under pseudo (paths relative to the root); OSError as
        the call raised it."""
        fields = [op.encode()] + [a.hex().encode() if isinstance(a, bytes) else b"%d" % a
                                  for a in args]
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            try:
                self._proc.stdin.write(b"\t".join(fields) + b"\n")
                self._proc.stdin.flush()
                answer = self._proc.stdout.readline()
            except OSError:
                answer = b""
            if not answer:
                self._proc = None
                raise OSError(errno.EIO, "pseudo's helper went away")
        code = int(answer)
        if code:
            raise OSError(code, os.strerror(code))

    def close(self) -> None:
        """End the helper and let pseudo save what it recorded (`pseudo -S`)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        stop_server(self.statedir, self.prefix)
