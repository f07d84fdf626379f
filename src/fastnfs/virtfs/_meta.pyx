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

Also the virtfs rules in C, cimported by the fast lane (_meta.pxd) and used
by the general path through the Python wrappers below; their pure-Python
twins are in virtfs/store.py and virtfs/overlay.py:

* ``hidden_name`` / ``is_hidden``: store.HIDDEN, the metadata's own names;
* ``meta_path_into`` / ``meta_path``: overlay.py_meta_path;
* ``meta_at``: overlay.py_meta_at, the metadata reader with its cache (the
  file's stat checked against the stamp; a clean file read, parsed and
  cached); a file with a flaw is left to ``overlay.Virtfs.meta``, which warns;
* ``overlay_statx`` / ``overlay_fields``: overlay.py_overlay_fields, the
  metadata laid over the disk's attributes with the device-as-file rule.
"""

cimport cython
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.dict cimport PyDict_DelItem, PyDict_SetItem
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.object cimport Py_EQ, PyObject, PyObject_RichCompareBool
from libc.stdint cimport UINT64_MAX, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset
from posix.unistd cimport close

from fastnfs._fhcache cimport LRUMap, _Node
from fastnfs._fsstat cimport (AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, c_statx,
                              makedev, statx)

cdef extern from "<fcntl.h>" nogil:
    int O_RDONLY
    int O_NONBLOCK
    int O_NOCTTY
    int O_NOFOLLOW
    int O_CLOEXEC

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_openat2
    long syscall(long number, ...)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void* buf, size_t count)

cdef struct open_how:              # <linux/openat2.h>
    unsigned long long flags
    unsigned long long mode
    unsigned long long resolve

cdef extern from "<sys/sysmacros.h>" nogil:
    unsigned int c_major "major"(unsigned long long dev)
    unsigned int c_minor "minor"(unsigned long long dev)

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

cdef enum:
    SHOW_MAX = 40
    S_IFMT = 0o170000
    S_IFREG = 0o100000
    S_IFLNK = 0o120000
    S_IFCHR = 0o020000
    S_IFBLK = 0o060000
    S_IFIFO = 0o010000
    S_IFSOCK = 0o140000
    MAX_META_SIZE = 4096            # store.MAX_META_SIZE (tests/test_virtfs_twins.py checks)
    RESOLVE_NO_MAGICLINKS = 0x02
    RESOLVE_NO_SYMLINKS = 0x04
    RESOLVE_BENEATH = 0x08

# store.META_DIR and store.META_ROOT (with their lengths)
cdef const char* META_DIR = b".virtfs_metadata"
cdef const char* META_ROOT = b".virtfs_metadata_root"
cdef enum:
    META_DIR_LEN = 16
    META_ROOT_LEN = 21

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

cdef class MetaCache(LRUMap):
    """Bounded LRU map key -> (stamp, value) (see fastnfs.virtfs.meta).

    The LRU list is LRUMap's; an entry is the pair (stamp, value), and a get
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


# ------------------------------------------------------------------ the virtfs rules

cdef bint hidden_name(const unsigned char* name, Py_ssize_t n) noexcept nogil:
    """Is name one of the metadata's own (store.HIDDEN)?"""
    if n == META_DIR_LEN:
        return memcmp(name, META_DIR, META_DIR_LEN) == 0
    if n == META_ROOT_LEN:
        return memcmp(name, META_ROOT, META_ROOT_LEN) == 0
    return False


def is_hidden(bytes name):
    """hidden_name for Python: name in store.HIDDEN."""
    return hidden_name(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))


cdef Py_ssize_t meta_path_into(const char* path, Py_ssize_t n, char* out,
                               Py_ssize_t cap) noexcept nogil:
    """overlay.py_meta_path into out: DIR/.virtfs_metadata/NAME, or the root's file."""
    cdef Py_ssize_t i = n - 1, k
    if n == 1 and path[0] == b'.':
        if cap <= META_ROOT_LEN:
            return -1
        memcpy(out, META_ROOT, META_ROOT_LEN + 1)
        return META_ROOT_LEN
    if n + META_DIR_LEN + 1 >= cap:
        return -1
    while i >= 0 and path[i] != b'/':
        i -= 1
    k = i + 1                          # the directory part with its slash
    memcpy(out, path, k)
    memcpy(out + k, META_DIR, META_DIR_LEN)
    out[k + META_DIR_LEN] = b'/'
    memcpy(out + k + META_DIR_LEN + 1, path + k, n - k)
    out[n + META_DIR_LEN + 1] = 0
    return n + META_DIR_LEN + 1


cdef Py_ssize_t child_meta_path_into(const unsigned char* name, Py_ssize_t n, char* out,
                                     Py_ssize_t cap) noexcept nogil:
    """Where the metadata of entry name lives, relative to its directory."""
    if n + META_DIR_LEN + 1 >= cap:
        return -1
    memcpy(out, META_DIR, META_DIR_LEN)
    out[META_DIR_LEN] = b'/'
    memcpy(out + META_DIR_LEN + 1, name, n)
    out[n + META_DIR_LEN + 1] = 0
    return n + META_DIR_LEN + 1


def meta_path(bytes path):
    """overlay.py_meta_path: where the metadata of the object at path lives."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + META_DIR_LEN + META_ROOT_LEN + 2)
    cdef Py_ssize_t k = meta_path_into(PyBytes_AS_STRING(path), n, PyBytes_AS_STRING(out),
                                       PyBytes_GET_SIZE(out))
    return out[:k]


cdef object meta_at(MetaCache cache, int dirfd, const char* mp, object absent):
    """The metadata in the file mp beneath dirfd (overlay.py_meta_at's twin):
    absent when there is no such file; from the cache when its stamp still
    holds; else read, parsed and cached when the file is clean; None for a
    file with any flaw (not a regular file, too big, a symlink on the way, a
    problem in its lines), which overlay.Virtfs.meta reads and warns about.
    absent is store.NO_META, and its type the one a Meta is made of."""
    cdef statx ms, fs
    cdef int rc, fd
    cdef open_how how
    cdef char buf[MAX_META_SIZE + 1]
    cdef ssize_t k = -1
    with nogil:
        rc = c_statx(dirfd, mp, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &ms)
    if rc != 0:
        return absent
    key = (makedev(ms.stx_dev_major, ms.stx_dev_minor), ms.stx_ino)
    cdef long long mtime = ms.stx_mtime.tv_sec * 1000000000 + ms.stx_mtime.tv_nsec
    cdef long long ctime = ms.stx_ctime.tv_sec * 1000000000 + ms.stx_ctime.tv_nsec
    m = cache.lookup_stamp3(key, ms.stx_size, mtime, ctime)
    if m is not None:
        return m
    if (ms.stx_mode & S_IFMT) != S_IFREG or ms.stx_size > MAX_META_SIZE:
        return None
    memset(&how, 0, sizeof(how))
    how.flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
    with nogil:
        fd = <int>syscall(SYS_openat2, dirfd, mp, &how, sizeof(how))
        if fd >= 0:
            if c_statx(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &fs) == 0 \
                    and fs.stx_ino == ms.stx_ino:
                k = c_read(fd, buf, MAX_META_SIZE + 1)
            close(fd)
    if k < 0 or k > MAX_META_SIZE:
        return None
    uid, gid, mode, rdev, problems = parse_meta(PyBytes_FromStringAndSize(buf, k))
    if problems:
        return None
    if uid < 0 and gid < 0 and mode < 0 and rdev < 0:
        m = absent
    else:
        m = type(absent)(uid, gid, mode, rdev)
    cache.store(key, ((ms.stx_size, mtime, ctime), m))
    return m


def meta_at_py(MetaCache cache, int dirfd, bytes mp, absent):
    """meta_at for Python (overlay uses it as ``meta_at``)."""
    return meta_at(cache, dirfd, PyBytes_AS_STRING(mp), absent)


cdef inline bint _stored_as_file(unsigned int real, unsigned long long size,
                                 long long vmode) noexcept nogil:
    """The device-as-file rule: an empty regular file whose metadata says
    device, fifo or socket, or a regular file whose metadata says symlink
    (QEMU's mapped-file way), is served as that."""
    cdef long long vfmt = vmode & S_IFMT
    if (real & S_IFMT) != S_IFREG:
        return False
    if vfmt == S_IFLNK:
        return True
    return size == 0 and (vfmt == S_IFCHR or vfmt == S_IFBLK or vfmt == S_IFIFO
                          or vfmt == S_IFSOCK)


cdef struct attrs_t:
    unsigned int mode, uid, gid
    unsigned long long size, rdev
    bint rdev_set              # rdev is the metadata's


cdef void _overlay(attrs_t* a, long long uid, long long gid, long long mode,
                   bint has_rdev, unsigned long long rdev) noexcept nogil:
    """The one overlay rule: a key the metadata gives replaces the disk's
    owner or group; its mode's permission bits replace the disk's, and its
    type too where the file stands for a device, fifo, socket or symlink."""
    if uid >= 0:
        a.uid = <unsigned int>uid
    if gid >= 0:
        a.gid = <unsigned int>gid
    if mode < 0:
        return
    if not _stored_as_file(a.mode, a.size, mode):
        a.mode = (a.mode & S_IFMT) | (mode & 0o7777)
        return
    a.mode = <unsigned int>mode
    if (mode & S_IFMT) == S_IFCHR or (mode & S_IFMT) == S_IFBLK:
        a.rdev = rdev if has_rdev else 0
        a.rdev_set = True
        a.size = 0


cdef int _overlay_meta(attrs_t* a, object meta) except -1:
    # a store.Meta: a tuple subclass of four integers
    if not PyTuple_Check(meta) or PyTuple_GET_SIZE(meta) != 4:
        raise TypeError("not a Meta: %r" % (meta,))
    cdef object r = <object>PyTuple_GET_ITEM(meta, 3)
    cdef int over = 0
    cdef long long rdev = PyLong_AsLongLongAndOverflow(r, &over)   # -1: no key
    _overlay(a, <object>PyTuple_GET_ITEM(meta, 0), <object>PyTuple_GET_ITEM(meta, 1),
             <object>PyTuple_GET_ITEM(meta, 2), over > 0 or rdev >= 0,
             <unsigned long long>r if over > 0 else <unsigned long long>rdev)
    return 0


cdef int overlay_statx(statx* sx, object meta) except -1:
    """A Meta (uid, gid, mode, rdev; -1 for a key the file lacks) laid over sx."""
    cdef attrs_t a = attrs_t(sx.stx_mode, sx.stx_uid, sx.stx_gid, sx.stx_size, 0, False)
    _overlay_meta(&a, meta)
    sx.stx_mode = <unsigned short>a.mode
    sx.stx_uid = a.uid
    sx.stx_gid = a.gid
    sx.stx_size = a.size
    if a.rdev_set:
        sx.stx_rdev_major = c_major(a.rdev)
        sx.stx_rdev_minor = c_minor(a.rdev)
    return 0


def overlay_fields(unsigned int st_mode, unsigned int st_uid, unsigned int st_gid,
                   unsigned long long st_size, unsigned long long st_rdev, meta):
    """_overlay on the fields of a stat result: (mode, uid, gid, size, rdev)
    as clients see them (overlay.py_overlay_fields's twin)."""
    cdef attrs_t a = attrs_t(st_mode, st_uid, st_gid, st_size, st_rdev, False)
    _overlay_meta(&a, meta)
    return a.mode, a.uid, a.gid, a.size, a.rdev
