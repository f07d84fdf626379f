"""Where blocking disk calls run: the one place that decides.

A page-cache hit is cheaper inline than a hop to the thread pool; fsync and
large transfers are not, and must never stall other clients' requests.
"""

from .nfs3.const import UNSTABLE

INLINE_IO_MAX = 65536          # READ data always served on the event loop
INLINE_WRITE_MAX = 262144      # UNSTABLE WRITE data copied into the page cache inline


def read_inline(count: int) -> bool:
    """Small reads inline; larger ones try the page cache inline (RWF_NOWAIT) first."""
    return count <= INLINE_IO_MAX


def write_inline(count: int, stable: int) -> bool:
    """Unstable writes up to 256 KiB inline; stable and larger ones in the pool."""
    return stable == UNSTABLE and count <= INLINE_WRITE_MAX
