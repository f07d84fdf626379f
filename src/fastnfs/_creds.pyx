# cython: language_level=3
"""Per-thread filesystem credentials through raw syscalls.

glibc's setgroups() and setfsuid() wrappers broadcast to every thread of the
process (nptl's setxid signal dance); the raw syscalls change only the calling
thread, so each request can run with its caller's identity while the other
threads keep theirs.  Plain-Python twin: creds.py.
"""

import os
import threading

from libc.errno cimport errno

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_setfsuid
    long SYS_setfsgid
    long SYS_setgroups

cdef extern from "<sys/types.h>":
    ctypedef unsigned int gid_t

_state = threading.local()
_server = None


def _server_identity():
    global _server
    if _server is None:
        _server = (os.geteuid(), os.getegid(), tuple(os.getgroups()))
    return _server


cpdef void switch(unsigned int uid, unsigned int gid, tuple groups) except *:
    """Make this thread act on files as uid/gid/groups (no-op when already so)."""
    cur = getattr(_state, "cur", None)
    want = (uid, gid, groups)
    if cur == want:
        return
    cdef gid_t gl[32]
    cdef int n = len(groups)
    cdef int i
    if n > 32:
        n = 32
    for i in range(n):
        gl[i] = groups[i]
    # groups first, then gid, then uid: dropping fsuid 0 drops the capabilities
    if syscall(SYS_setgroups, n, gl) != 0:
        raise OSError(errno, os.strerror(errno))
    syscall(SYS_setfsgid, gid)
    syscall(SYS_setfsuid, uid)
    # the calls report no errors: a second call returns the value now in force
    if <unsigned int>syscall(SYS_setfsgid, gid) != gid or \
            <unsigned int>syscall(SYS_setfsuid, uid) != uid:
        _state.cur = None
        raise PermissionError(1, "setfsuid/setfsgid to %d/%d did not take effect" % (uid, gid))
    _state.cur = want


def become_server():
    """Back to the server process's own identity on this thread."""
    uid, gid, groups = _server_identity()
    switch(uid, gid, groups)


def current():
    return getattr(_state, "cur", None) or _server_identity()
