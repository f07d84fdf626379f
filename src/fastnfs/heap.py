"""Giving the heap's free memory back to the system.

glibc keeps memory that Python frees inside its heap: after a burst of
connections (their transports, buffers and calls) the pages stay in the
process's resident set until something asks malloc to return them.  trim()
does (``malloc_trim(0)`` releases every whole free page, not only the top of
the heap); the server calls it before forking its workers, when its last
connection ends (at most ten times a second) and once a second while
connections come and go.  A trim takes 30-350 us.  Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import time

from .proc import trim_heap

MIN_INTERVAL = 1.0     # seconds between two trims asked for by the once-a-second tick
LAST_INTERVAL = 0.1    # ... asked for by the last connection ending

_last = 0.0


def trim() -> bool:
    """Return the heap's free pages to the system now; whether malloc_trim ran."""
    global _last
    _last = time.monotonic()
    return trim_heap() >= 0


def trim_soon(interval: float = MIN_INTERVAL) -> bool:
    """trim(), unless the last trim was less than interval seconds ago."""
    if time.monotonic() - _last < interval:
        return False
    return trim()
