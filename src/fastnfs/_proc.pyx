# cython: language_level=3
"""This process's own settings that the os module lacks, in C: the signal it
gets when its parent ends (prctl PR_SET_PDEATHSIG) and giving the heap's free
pages back to the system (glibc's malloc_trim).

Plain-Python twin: proc.py, through ctypes, which it imports only when used
(ctypes costs a server process ~0.5 MB).  tests/test_proc.py holds the two to
the same results.
"""

cdef extern from *:
    """
    #include <sys/prctl.h>
    #ifdef __GLIBC__
    #include <malloc.h>
    static int fastnfs_trim_heap(void) { return malloc_trim(0); }
    #else
    static int fastnfs_trim_heap(void) { return -1; }
    #endif
    static int fastnfs_pdeathsig(void) {
        int sig = 0;
        return prctl(PR_GET_PDEATHSIG, (unsigned long)&sig, 0, 0, 0) == 0 ? sig : -1;
    }
    """
    int PR_SET_PDEATHSIG
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
              unsigned long a5) nogil
    int fastnfs_trim_heap() nogil
    int fastnfs_pdeathsig() nogil


def die_with_parent(int sig):
    """Have the kernel send sig to this process when its parent ends; whether it took."""
    return prctl(PR_SET_PDEATHSIG, <unsigned long>sig, 0, 0, 0) == 0


def parent_death_signal():
    """The signal this process gets when its parent ends (0: none; -1: unknown)."""
    return fastnfs_pdeathsig()


def trim_heap():
    """malloc_trim(0): 1 if pages went back, 0 if none could, -1 without glibc."""
    cdef int r
    with nogil:
        r = fastnfs_trim_heap()
    return r
