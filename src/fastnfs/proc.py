"""This process's own settings that the os module lacks: the signal it gets
when its parent ends (prctl PR_SET_PDEATHSIG) and giving the heap's free pages
back to the system (glibc's malloc_trim).

Plain-Python twin of ``fastnfs._proc`` through ctypes, imported at the first
call: with the Cython twin a server process does not load ctypes at all.
"""

from __future__ import annotations

from ._accel import load

__all__ = ["die_with_parent", "parent_death_signal", "trim_heap"]

_PR_SET_PDEATHSIG, _PR_GET_PDEATHSIG = 1, 2
_libc = None


def libc():
    """The C library through ctypes (loaded once, on first use): for the
    pure-Python twins' system calls."""
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def die_with_parent(sig: int) -> bool:
    """Have the kernel send sig to this process when its parent ends; whether it took."""
    return libc().prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def parent_death_signal() -> int:
    """The signal this process gets when its parent ends (0: none; -1: unknown)."""
    import ctypes
    sig = ctypes.c_int(0)
    if libc().prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0) != 0:
        return -1
    return sig.value


def trim_heap() -> int:
    """malloc_trim(0): 1 if pages went back, 0 if none could, -1 without glibc."""
    try:
        trim = libc().malloc_trim
    except AttributeError:
        return -1
    return trim(0)


_cx = load("_proc")
if _cx is not None:  # the Cython twin
    die_with_parent, parent_death_signal, trim_heap = (
        _cx.die_with_parent, _cx.parent_death_signal, _cx.trim_heap)
