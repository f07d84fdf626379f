"""Opening a path below a directory without following any symlink and without
leaving it: openat2(2) with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the
kernel has it (one system call), else one no-follow open per component."""

from __future__ import annotations

import ctypes
import errno
import os

DIRP = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437   # the same number on every architecture (a syscall of 5.6)
_RESOLVE = 0x04 | 0x08   # RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH
_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long
_HOW: dict = {}
openat2_ok = [True]


def openat2(root_fd: int, path: bytes, flags: int):
    """openat2(2) of path below root_fd that follows no symlink and never leaves
    root_fd: one call where a walk takes one open per component; None where the
    kernel has no openat2."""
    how = _HOW.get(flags)
    if how is None:
        how = _HOW[flags] = _OpenHow(flags, 0, _RESOLVE)
    fd = _syscall(_SYS_OPENAT2, root_fd, path, ctypes.byref(how), 24)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        openat2_ok[0] = False
        return None
    raise OSError(err, os.strerror(err), path)


def open_dir(root_fd: int, path: bytes, flags: int = DIRP) -> int:
    """An fd of the directory at path under root_fd; no symlink followed on the way."""
    if path == b".":
        return os.open(b".", flags, dir_fd=root_fd)
    if openat2_ok[0]:
        fd = openat2(root_fd, path, flags)
        if fd is not None:
            return fd
    fd = os.open(b".", DIRP, dir_fd=root_fd)
    try:
        comps = path.split(b"/")
        for i, comp in enumerate(comps):
            # search rights suffice on the way (O_PATH); the last one opened as asked
            nfd = os.open(comp, flags if i == len(comps) - 1 else DIRP, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd
