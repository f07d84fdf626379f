"""Directory listings: cookies, the sorted (cookie, name, inode) lists, their cache.

Cookies are hashes of the entry names (``fs.name_cookie``) and entries are
sent in cookie order, so paging stays correct while the directory changes
and the cookie verifier never has to invalidate a client's cookie.  A
listing is cached per directory version (mtime, ctime, size, link count).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict


def listing_version(st) -> tuple:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_nlink)


def listing_start(cookies: list, cookie: int) -> int:
    """Index of the first entry after cookie (cookie 0, 1, 2: the start)."""
    if cookie <= 2:
        return 0
    return bisect_right(cookies, cookie)


class ListingCache:
    """The newest listing of the most recently listed directories."""

    __slots__ = ("_d", "maxsize")

    def __init__(self, maxsize: int = 64):
        self._d: OrderedDict = OrderedDict()
        self.maxsize = maxsize

    def has(self, key, st) -> bool:
        hit = self._d.get(key)
        return hit is not None and hit[0] == listing_version(st)

    def get(self, key, st):
        """The cached listing of this version of the directory, or None."""
        hit = self._d.get(key)
        if hit is not None and hit[0] == listing_version(st):
            self._d.move_to_end(key)
            return hit[1]
        return None

    def put(self, key, st, listing) -> None:
        self._d[key] = (listing_version(st), listing)
        if len(self._d) > self.maxsize:
            self._d.popitem(last=False)
