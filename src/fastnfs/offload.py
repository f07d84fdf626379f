"""Where blocking disk calls run: the one place that decides.

A page-cache hit is cheaper inline than a hop to the thread pool; fsync and
large transfers are not, and must never stall other clients' requests.
"""

import os

from .fsstat import all_cached, cache_pages
from .nfs3.const import UNSTABLE

HAVE_NOWAIT = hasattr(os, "RWF_NOWAIT")  # preadv2 can answer "not in the page cache"

# READ: whatever the page cache holds is read inline (preadv2 RWF_NOWAIT), the
# rest in the pool; without RWF_NOWAIT, reads up to this size stay inline.  The
# fast lane (_fastpath) serves cached reads up to this size.
INLINE_IO_MAX = 65536
# UNSTABLE WRITE data up to wtmax is copied into the page cache inline: it is a
# memory copy, not a disk wait (that comes with COMMIT, in the pool). Measured
# with bench/loadgen.py stream --mode write: the thread hop doubled the server's
# CPU per GB (GIL hand-offs) and halved the throughput.
INLINE_WRITE_MAX = 1048576


# READ data from this size on (what the fast lane leaves) is sent by the kernel
# from the page cache to the socket (sendfile) when all of it is cached: not
# copied into the reply and from there into the socket.
LEND_MIN = INLINE_IO_MAX + 1


# Are all pages of fd's [offset, offset + count) in the page cache? (cachestat;
# the fast lane asks the same compiled rule for its large READs)
cached = all_cached


def can_lend() -> bool:
    """Can READ data go by sendfile here (sendfile, and cachestat to know it will not wait)?"""
    if not hasattr(os, "sendfile"):
        return False
    fd = os.open("/proc/self/exe", os.O_RDONLY)
    try:
        return cache_pages(fd, 0, 1) >= 0        # -1: the kernel cannot say
    finally:
        os.close(fd)


def lend_read(count: int) -> bool:
    """Is a READ this big worth sending from the file itself?"""
    return count >= LEND_MIN


# READDIR/READDIRPLUS of a directory whose listing is not cached and whose size
# says it is big (st_size; on ext4 800 names take 20 KiB) are answered in the
# pool: the first scan of an 800-entry directory takes ~3 ms (scandir, a hash
# per name, the sort), and on a cold cache it waits for the disk.
BIG_DIR = 16384


def scan_inline(cached: bool, dir_size: int) -> bool:
    """A listing already cached, or a small directory's, is read inline."""
    return cached or dir_size < BIG_DIR


def read_inline(count: int) -> bool:
    """Without RWF_NOWAIT: small reads inline, larger ones in the pool."""
    return count <= INLINE_IO_MAX


def write_inline(count: int, stable: int) -> bool:
    """Unstable writes inline; stable ones (they fsync) in the pool."""
    return stable == UNSTABLE and count <= INLINE_WRITE_MAX
