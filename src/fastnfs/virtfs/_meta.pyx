# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of fastnfs.virtfs.meta: mapped-file metadata parser and MetaCache.

Same API, results and problem messages as ``py_parse_meta``/``PyMetaCache``;
the rules are documented in fastnfs/virtfs/meta.py.

* ``parse_meta`` scans the bytes through a C pointer with memchr, one line at
  a time; the position only moves forward, so it terminates for any input.
  Values are accumulated in a uint64 with an overflow check; Python objects
  are only made for the result and for problem messages.
* ``MetaCache`` is a dict of nodes on an intrusive circular doubly linked
  list (most recently used at the tail), each node holding key, stamp, value.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_DelItem, PyDict_SetItem
from cpython.object cimport Py_EQ, PyObject, PyObject_RichCompareBool
from libc.stdint cimport UINT64_MAX, uint64_t
from libc.string cimport memchr, memcmp

from fastnfs._fhcache cimport FHCache, _Node

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

cdef enum:
    SHOW_MAX = 40

cdef int MAX_PROBLEMS = 100
cdef str TOO_MANY = "too many problems, the rest are not reported"
cdef tuple NAMES = ("virtfs.uid", "virtfs.gid", "virtfs.mode", "virtfs.rdev")
cdef uint64_t[4] LIMITS
LIMITS[0] = 0xFFFFFFFFULL
LIMITS[1] = 0xFFFFFFFFULL
LIMITS[2] = 0o177777
LIMITS[3] = UINT64_MAX


cdef inline bint _isspace(unsigned char c) noexcept nogil:
    # exactly the set bytes.strip() removes
    return c == 32 or (9 <= c <= 13)


cdef str _show(const unsigned char* s, Py_ssize_t n):
    # quoted, at most SHOW_MAX bytes, printable ASCII or \xNN (error path only)
    cdef list out = ["'"]
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n if n < SHOW_MAX else SHOW_MAX):
        c = s[i]
        out.append(chr(c) if 32 <= c < 127 else "\\x%02x" % c)
    out.append("...'" if n > SHOW_MAX else "'")
    return "".join(out)


cdef inline int _key_index(const unsigned char* k, Py_ssize_t n) noexcept nogil:
    # "virtfs.uid" "virtfs.gid" "virtfs.mode" "virtfs.rdev"; -1 for anything else
    if (n != 10 and n != 11) or memcmp(k, b"virtfs.", 7) != 0:
        return -1
    if n == 10:
        if memcmp(k + 7, b"uid", 3) == 0:
            return 0
        if memcmp(k + 7, b"gid", 3) == 0:
            return 1
        return -1
    if memcmp(k + 7, b"mode", 4) == 0:
        return 2
    if memcmp(k + 7, b"rdev", 4) == 0:
        return 3
    return -1


cdef class _Problems:
    cdef list items
    cdef int count

    def __cinit__(self):
        self.items = []
        self.count = 0

    cdef int add(self, Py_ssize_t lineno, str msg) except -1:
        self.count += 1
        if self.count <= MAX_PROBLEMS:
            self.items.append((lineno, msg))
        elif self.count == MAX_PROBLEMS + 1:
            self.items.append((lineno, TOO_MANY))
        return 0


cpdef tuple parse_meta(object data):
    """Parse a metadata file: ``(uid, gid, mode, rdev, problems)``, -1 for an absent key."""
    cdef bytes b = data if PyBytes_CheckExact(data) else bytes(data)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(b)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    cdef Py_ssize_t pos = 0, end, s, e, eq, vs, j, lineno = 0
    cdef const unsigned char* hit
    cdef uint64_t v, d
    cdef uint64_t[4] vals
    cdef bint[4] have
    cdef Py_ssize_t[4] seen
    cdef bint over, digits
    cdef int i
    cdef _Problems probs = _Problems()
    cdef str name
    for i in range(4):
        have[i] = False
        seen[i] = 0
        vals[i] = 0

    while pos < n:
        lineno += 1
        hit = <const unsigned char*>memchr(p + pos, b'\n', <size_t>(n - pos))
        end = (hit - p) if hit != NULL else n
        s = pos
        e = end
        pos = end + 1                     # always advances
        while s < e and _isspace(p[s]):
            s += 1
        while e > s and _isspace(p[e - 1]):
            e -= 1
        if s == e:
            continue
        hit = <const unsigned char*>memchr(p + s, b'=', <size_t>(e - s))
        if hit == NULL:
            probs.add(lineno, "line without '='")
            continue
        eq = hit - p
        j = eq
        while j > s and _isspace(p[j - 1]):
            j -= 1
        i = _key_index(p + s, j - s)
        if i < 0:
            probs.add(lineno, "unknown key " + _show(p + s, j - s))
            continue
        name = <str>NAMES[i]
        vs = eq + 1
        while vs < e and _isspace(p[vs]):
            vs += 1
        if vs == e:
            probs.add(lineno, name + ": empty value")
            continue
        v = 0
        over = False
        digits = True
        for j in range(vs, e):
            d = p[j] - 48
            if d > 9:                      # unsigned: also catches bytes below '0'
                digits = False
                break
            if not over:
                if v > (UINT64_MAX - d) // 10:
                    over = True
                else:
                    v = v * 10 + d
        if not digits:
            probs.add(lineno, "%s: not a decimal unsigned integer: %s"
                      % (name, _show(p + vs, e - vs)))
            continue
        if over or v > LIMITS[i]:
            probs.add(lineno, "%s: out of range (max %d)" % (name, LIMITS[i]))
            continue
        if have[i]:
            probs.add(lineno, "%s: duplicate key, overrides line %d" % (name, seen[i]))
        vals[i] = v
        have[i] = True
        seen[i] = lineno

    return (vals[0] if have[0] else -1, vals[1] if have[1] else -1,
            vals[2] if have[2] else -1, vals[3] if have[3] else -1, probs.items)


# ------------------------------------------------------------------ MetaCache

cdef class MetaCache(FHCache):
    """Bounded LRU map key -> (stamp, value) (see fastnfs.virtfs.meta).

    The LRU list is FHCache's; an entry is the pair (stamp, value), and a get
    whose stamp differs drops the entry (the metadata file changed).
    """

    def get(self, key, stamp):
        """The value stored for key under this stamp (now most recent), else None."""
        return self.lookup_stamped(key, stamp)

    def put(self, key, stamp, value):
        if value is None:
            raise TypeError("MetaCache values must not be None")
        self.store(key, (stamp, value))

    cdef object lookup_stamp3(self, object key, long long a, long long b, long long c):
        """lookup_stamped with a stamp of three integers given in C (no tuple made)."""
        cdef PyObject* p = PyDict_GetItemWithError(self._map, key)
        if p == NULL:
            self.misses += 1
            return None
        entry = (<_Node>p).value
        old = (<tuple>entry)[0]
        if not (type(old) is tuple and len(<tuple>old) == 3
                and <long long>(<tuple>old)[0] == a and <long long>(<tuple>old)[1] == b
                and <long long>(<tuple>old)[2] == c):
            self.discard(key)   # stale: the file changed
            self.misses += 1
            return None
        return (<tuple>self.lookup(key))[1]   # refreshes the entry and counts the hit

    cdef object lookup_stamped(self, object key, object stamp):
        cdef PyObject* p = PyDict_GetItemWithError(self._map, key)
        cdef tuple entry
        if p == NULL:
            self.misses += 1
            return None
        entry = <tuple>(<_Node>p).value
        old = entry[0]
        if old is not stamp and not PyObject_RichCompareBool(old, stamp, Py_EQ):
            self.discard(key)   # stale: the file changed
            self.misses += 1
            return None
        return (<tuple>self.lookup(key))[1]   # refreshes the entry and counts the hit
