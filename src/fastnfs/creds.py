"""Per-thread filesystem credentials (setfsuid, setfsgid, setgroups).

Plain-Python twin of ``fastnfs._creds`` through ctypes.  The raw syscalls
change only the calling thread; glibc's wrappers would change every thread.
Only meaningful when the process may act as any user (``ENABLED``).
"""

from __future__ import annotations

import os
import threading

from ._accel import load
from .proc import libc

__all__ = ["ENABLED", "switch", "become_server", "current"]

# capability bits (linux/capability.h) that switching to a caller's ids needs
CAP_DAC_OVERRIDE, CAP_SETGID, CAP_SETUID = 1, 6, 7
_NEEDED = (1 << CAP_DAC_OVERRIDE) | (1 << CAP_SETGID) | (1 << CAP_SETUID)


def effective_capabilities(status: str = "/proc/self/status") -> int:
    """The effective capability set of this process (0 if it cannot be read)."""
    try:
        with open(status, "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def privileged(caps: int | None = None) -> bool:
    """May this process take a caller's ids?  Decided by the effective capabilities,
    never by geteuid(): under fakeroot or pseudo's preload geteuid() says 0 while
    the process has no capability, and the raw setfsuid would fail."""
    caps = effective_capabilities() if caps is None else caps
    return caps & _NEEDED == _NEEDED


ENABLED = privileged()

# x86_64 and aarch64 syscall numbers, from <asm/unistd.h>
_NR = {"x86_64": (122, 123, 116), "aarch64": (151, 152, 159)}
_state = threading.local()
_server = None


def _nr():
    return _NR.get(os.uname().machine, _NR["x86_64"])


def _server_identity():
    global _server
    if _server is None:
        _server = (os.geteuid(), os.getegid(), tuple(os.getgroups()))
    return _server


def switch(uid: int, gid: int, groups: tuple) -> None:
    want = (uid, gid, groups)
    if getattr(_state, "cur", None) == want:
        return
    import ctypes
    setfsuid, setfsgid, setgroups = _nr()
    groups = groups[:32]
    arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
    c = libc()
    if c.syscall(setgroups, len(groups), arr) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    c.syscall(setfsgid, gid)
    c.syscall(setfsuid, uid)
    # the calls report no errors: a second call returns the value now in force
    if (c.syscall(setfsgid, gid) & 0xFFFFFFFF) != gid or \
            (c.syscall(setfsuid, uid) & 0xFFFFFFFF) != uid:
        _state.cur = None
        raise PermissionError(1, "setfsuid/setfsgid to %d/%d did not take effect" % (uid, gid))
    _state.cur = want


def become_server() -> None:
    uid, gid, groups = _server_identity()
    switch(uid, gid, groups)


def current():
    return getattr(_state, "cur", None) or _server_identity()


_cx = load("_creds")
if _cx is not None:  # the Cython twin
    become_server, current, switch = _cx.become_server, _cx.current, _cx.switch
