"""Where blocking disk calls run: the one place that decides.

A page-cache hit is cheaper inline than a hop to the thread pool; fsync and
large transfers are not, and must never stall other clients' requests.
"""

from .nfs3.const import UNSTABLE

INLINE_IO_MAX = 65536  # bytes of READ/WRITE data served on the event loop


def read_inline(count: int) -> bool:
    return count <= INLINE_IO_MAX


def write_inline(count: int, stable: int) -> bool:
    return stable == UNSTABLE and count <= INLINE_IO_MAX
