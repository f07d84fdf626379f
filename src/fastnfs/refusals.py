"""Refused calls: every one counted by reason, at most one log line per client and
reason a minute, so that a misbehaving or hostile client cannot flood the log.

The line that ends a quiet spell says how many were suppressed before it;
``fastnfs stats`` and the metrics keep the full counts.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

INTERVAL = 60.0      # seconds between two lines for the same client and reason
MAX_KEYS = 4096      # (client, reason) pairs remembered; the oldest are forgotten


class Refusals:
    """Counts by reason and a rate limit per (client, reason) for the log lines."""

    __slots__ = ("counts", "_last", "interval", "max_keys")

    def __init__(self, interval: float = INTERVAL, max_keys: int = MAX_KEYS):
        self.counts: dict[str, int] = {}
        self._last: OrderedDict = OrderedDict()   # (host, reason) -> [time logged, suppressed]
        self.interval = interval
        self.max_keys = max_keys

    def note(self, log: logging.Logger, level: int, host: str, reason: str,
             msg: str, *args) -> bool:
        """Count one refusal; log msg % args unless this client had a line for this
        reason within the interval.  True if a line was written."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        key = (host, reason)
        now = time.monotonic()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            msg += " (%d more like it from %s suppressed in the last %.0f s)"
            args += (seen[1], host, now - seen[0])
        self._last[key] = [now, 0]
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        log.log(level, msg, *args)
        return True
