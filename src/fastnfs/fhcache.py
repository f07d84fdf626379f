"""Bounded LRU map from inode number to the path where the object was last seen.

Plain-Python twin of ``fastnfs._fhcache``.  A filehandle carries the inode;
this cache turns it into a path relative to the export root in O(1).  The
caller always verifies the path (lstat, compare dev+ino) before trusting it,
so a stale entry costs a search, never a wrong answer.
"""

from __future__ import annotations

from collections import OrderedDict

from ._accel import load

__all__ = ["PyFHCache", "FHCache"]


class PyFHCache:
    __slots__ = ("_d", "maxsize", "hits", "misses")

    def __init__(self, maxsize: int = 65536):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._d: OrderedDict[int, bytes] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, ino: int) -> bool:
        return ino in self._d

    def get(self, ino: int):
        """The cached path for ino (and mark it recently used), or None."""
        path = self._d.get(ino)
        if path is None:
            self.misses += 1
            return None
        self._d.move_to_end(ino)
        self.hits += 1
        return path

    def put(self, ino: int, path: bytes) -> None:
        d = self._d
        if ino in d:
            d.move_to_end(ino)
        d[ino] = path
        if len(d) > self.maxsize:
            d.popitem(last=False)

    def discard(self, ino: int) -> None:
        self._d.pop(ino, None)

    def clear(self) -> None:
        self._d.clear()


FHCache = PyFHCache
_cx = load("_fhcache")
if _cx is not None:  # the Cython twin
    FHCache = _cx.FHCache
