"""Parser for one mapped-file metadata file, and a stamp-checked LRU cache.

Plain-Python twin of the Cython module ``fastnfs.virtfs._meta``; the names
``parse_meta`` and ``MetaCache`` exported here are the Cython ones unless
``FASTNFS_PURE=1`` is set or the extension is not built.  Tests hold the two
against each other (same results, same problem messages).

File format (QEMU 9p mapped-file, ptxdist)::

    virtfs.uid=0
    virtfs.gid=0
    virtfs.mode=8630        <- the whole st_mode in decimal (here S_IFCHR|0666)
    virtfs.rdev=1283        <- dev_t as glibc's makedev() encodes it

Parsing rules (``parse_meta``):

* Lines are separated by ``\\n``; a ``\\r`` before it (CRLF), surrounding
  whitespace (space, ``\\t``, ``\\v``, ``\\f``, ``\\r``) and a missing final
  newline are tolerated; blank lines are skipped.  Lines are numbered from 1.
* A line is ``key=value``, split at the first ``=``; whitespace around the
  key and around the value is ignored.  Keys are case-sensitive.
* Known keys: ``virtfs.uid``, ``virtfs.gid`` (0 .. 2**32-1), ``virtfs.mode``
  (0 .. 0o177777) and ``virtfs.rdev`` (0 .. 2**64-1).  A value is ASCII
  decimal digits only (no sign, no ``_``, no ``0x``; leading zeros are allowed
  and still mean decimal).
* Problems are reported as ``(lineno, message)`` and the offending line is
  ignored; everything else still applies:

  - ``line without '='``
  - ``unknown key 'K'`` (any other key, ``virtfs.*`` or not, or an empty key)
  - ``virtfs.X: empty value``
  - ``virtfs.X: not a decimal unsigned integer: 'V'``
  - ``virtfs.X: out of range (max M)``
  - ``virtfs.X: duplicate key, overrides line L``: a key given a valid value
    again; the LAST valid value wins (a later invalid value does not clear an
    earlier valid one).  QEMU and ptxdist rewrite the whole file, so a
    duplicate means a hand edit or a corrupt file, which is worth a warning.

  Keys and values in messages are shown as at most 40 bytes, bytes other
  than printable ASCII as ``\\xNN`` (no control characters reach a log).
  At most ``MAX_PROBLEMS`` problems are listed; the next one is replaced by
  ``(lineno, "too many problems, the rest are not reported")`` and later
  ones are dropped (the values still parse).
* The scan moves forward by at least one byte per step, so it terminates for
  any input, in time linear in its length.

``MetaCache(maxsize)`` is a bounded LRU map, key -> (stamp, value).  The store
uses ``((st_dev, st_ino) of the directory, name)`` as key and the metadata
file's ``(st_ino, st_size, st_mtime_ns, st_ctime_ns)`` as stamp, so an edited
or replaced file is a miss.  ``get(key, stamp)`` returns the value only when
the stored stamp equals ``stamp`` (a hit, and the entry becomes the most
recently used); otherwise it is a miss, returns None and drops a stale entry.
``None`` is not a storable value (it means "miss").
"""

from __future__ import annotations

from collections import OrderedDict

from .._accel import load

__all__ = ["parse_meta", "MetaCache", "py_parse_meta", "PyMetaCache", "KEYS", "LIMITS",
           "MAX_PROBLEMS", "IMPLEMENTATION"]

KEYS = (b"virtfs.uid", b"virtfs.gid", b"virtfs.mode", b"virtfs.rdev")
LIMITS = (2**32 - 1, 2**32 - 1, 0o177777, 2**64 - 1)
MAX_PROBLEMS = 100
_INDEX = {k: i for i, k in enumerate(KEYS)}
_NAMES = tuple(k.decode() for k in KEYS)
_TOO_MANY = "too many problems, the rest are not reported"
_SHOW_MAX = 40


def _show(b: bytes) -> str:
    """A key or value for a message: quoted, at most 40 bytes, printable ASCII or \\xNN."""
    s = "".join(chr(c) if 32 <= c < 127 else "\\x%02x" % c for c in b[:_SHOW_MAX])
    return "'" + s + ("...'" if len(b) > _SHOW_MAX else "'")


def py_parse_meta(data) -> tuple:
    """Parse a metadata file: ``(uid, gid, mode, rdev, problems)``, -1 for an absent key."""
    if not isinstance(data, bytes):
        data = bytes(data)
    vals = [-1, -1, -1, -1]
    seen = [0, 0, 0, 0]  # line of the value in vals, 0 = none yet
    problems: list = []
    nprob = 0

    def problem(lineno, msg):
        nonlocal nprob
        nprob += 1
        if nprob <= MAX_PROBLEMS:
            problems.append((lineno, msg))
        elif nprob == MAX_PROBLEMS + 1:
            problems.append((lineno, _TOO_MANY))

    for lineno, line in enumerate(data.split(b"\n"), 1):
        line = line.strip()
        if not line:
            continue
        key, eq, value = line.partition(b"=")
        if not eq:
            problem(lineno, "line without '='")
            continue
        key = key.rstrip()
        i = _INDEX.get(key)
        if i is None:
            problem(lineno, "unknown key " + _show(key))
            continue
        value = value.lstrip()
        name = _NAMES[i]
        if not value:
            problem(lineno, name + ": empty value")
            continue
        if not value.isdigit():  # bytes.isdigit(): ASCII 0-9 only
            problem(lineno, "%s: not a decimal unsigned integer: %s" % (name, _show(value)))
            continue
        digits = value.lstrip(b"0")
        # 2**64-1 has 20 digits: never hand a huge digit string to int()
        v = int(digits) if digits and len(digits) <= 20 else (0 if not digits else -1)
        if v < 0 or v > LIMITS[i]:
            problem(lineno, "%s: out of range (max %d)" % (name, LIMITS[i]))
            continue
        if seen[i]:
            problem(lineno, "%s: duplicate key, overrides line %d" % (name, seen[i]))
        vals[i] = v
        seen[i] = lineno
    return vals[0], vals[1], vals[2], vals[3], problems


class PyMetaCache:
    """Bounded LRU map key -> (stamp, value); a get with another stamp is a miss."""

    __slots__ = ("_d", "maxsize", "hits", "misses")

    def __init__(self, maxsize: int = 65536):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._d: OrderedDict = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key) -> bool:
        return key in self._d

    def get(self, key, stamp):
        """The value stored for key under this stamp (now most recent), else None."""
        e = self._d.get(key)
        if e is None:
            self.misses += 1
            return None
        if e[0] != stamp:
            del self._d[key]  # stale: the file changed
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return e[1]

    def put(self, key, stamp, value) -> None:
        if value is None:
            raise TypeError("MetaCache values must not be None")
        d = self._d
        if key in d:
            d.move_to_end(key)
        d[key] = (stamp, value)
        if len(d) > self.maxsize:
            d.popitem(last=False)

    def discard(self, key) -> None:
        self._d.pop(key, None)

    def clear(self) -> None:
        self._d.clear()


parse_meta = py_parse_meta
MetaCache = PyMetaCache
IMPLEMENTATION = "python"
_cx = load("virtfs._meta")
if _cx is not None:  # the Cython twin
    MetaCache, parse_meta = _cx.MetaCache, _cx.parse_meta
    IMPLEMENTATION = "cython"
