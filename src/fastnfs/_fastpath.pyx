# cython: language_level=3
"""The fast lane: the commonest NFSv3 calls answered in C from bytes to reply.

A booting board sends mostly LOOKUP, GETATTR, ACCESS, READLINK and READ (RFC
1813 sections 3.3.1-3.3.6), and for them the general path (dispatch.py ->
nfs3/*.py) spends most of its time building Python objects.
``FastPath.answer`` takes the record, and when everything about the call is
ordinary (NFSv3 with AUTH_SYS, a well-formed handle the filehandle cache
places, a caller admitted before, the thread already holding the caller's
credentials, a READ of at most 64 KiB the page cache holds, well-formed
virtfs metadata) it builds the reply itself: statx(2) straight into the
reply buffer, READ data by preadv2(RWF_NOWAIT) into the bytes that are sent.
Anything else (an error other than a missing name, a cache miss, an unknown
caller, a flawed metadata file, unfsd's -s view) returns None, and the
general path answers; it is the reference, and tests/test_fastpath.py and the
fuzzer's dispatch target hold the two to the same bytes.

The checks are the general path's (nfs3/state.py, handles.py, backends/): the export admits
the host and port with the squashed credentials, a handle's inode, device and
generation must match what its cached path reaches, a name is one component,
a LOOKUP opens the directory O_PATH|O_NOFOLLOW and verifies its inode, a READ
opens the file O_NOFOLLOW and verifies inode and birth time; with virtfs the
directory must grant search by its metadata, the metadata's own names are
never looked up, and a metadata file is opened with no symlink on the way.

Also here: put_entries_plus, the Cython twin of backends.plain.py_put_entries_plus.
"""

cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset
from posix.types cimport off_t
from posix.fcntl cimport openat
from posix.unistd cimport close
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject

from fastnfs._fhcache cimport FHCache
from fastnfs._perm cimport access3_ids, allowed_ids, io_allowed_ids
from fastnfs._fsstat cimport (AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS,
                              STATX_BTIME, c_statx, generation, makedev, statx)
from fastnfs._xdr cimport Packer
from fastnfs.virtfs._meta cimport MetaCache, parse_meta

from fastnfs import creds as _creds_mod
from fastnfs.fs import NFSError
from fastnfs.rpc_msg import AUTH_SYS, Cred
from fastnfs.stats import _BUCKETS_NS

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

cdef extern from "<fcntl.h>" nogil:
    int O_PATH
    int O_RDONLY
    int O_NONBLOCK
    int O_NOCTTY
    int O_NOFOLLOW
    int O_DIRECTORY
    int O_CLOEXEC

cdef extern from "<sys/sysmacros.h>" nogil:
    unsigned int c_major "major"(unsigned long long dev)
    unsigned int c_minor "minor"(unsigned long long dev)

cdef extern from "<sys/uio.h>" nogil:
    int RWF_NOWAIT
    struct iovec:
        void* iov_base
        size_t iov_len
    ssize_t preadv2(int fd, const iovec* iov, int iovcnt, off_t offset, int flags)

cdef extern from "<unistd.h>" nogil:
    ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t size)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_openat2
    long syscall(long number, ...)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void* buf, size_t count)

cdef struct open_how:              # <linux/openat2.h>
    uint64_t flags
    uint64_t mode
    uint64_t resolve

cdef extern from "<errno.h>" nogil:
    int errno
    int ENOENT

cdef enum:
    NFS_PROGRAM = 100003
    GETATTR = 1
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    NFS3_OK = 0
    NFS3ERR_NOENT = 2
    FH_HEAD = 24           # fixed part of a handle (see handles.py)
    MAX_ANC = 5
    MAX_MACHINE = 255
    MAX_GIDS = 16
    MAX_AUTH = 400
    MAX_ADMITTED = 4096    # (export, host, port class, credential) pairs remembered
    MAXNAMLEN = 255
    MAXLINK = 4096
    NPROCS = 7             # counters for procedures 0..6
    MAX_META_SIZE = 4096   # virtfs.store.MAX_META_SIZE
    RESOLVE_NO_MAGICLINKS = 0x02
    RESOLVE_NO_SYMLINKS = 0x04
    RESOLVE_BENEATH = 0x08
    NBUCKETS = 16          # stats.BUCKETS
    S_IFMT = 0o170000
    S_IFDIR = 0o040000
    S_IFREG = 0o100000
    S_IFLNK = 0o120000
    S_IFCHR = 0o020000
    S_IFBLK = 0o060000
    S_IFIFO = 0o010000
    S_IFSOCK = 0o140000
    A_READ = 0x01
    A_LOOKUP = 0x02
    A_MODIFY = 0x04
    A_EXTEND = 0x08
    A_DELETE = 0x10
    A_EXECUTE = 0x20
    R_OK = 4
    W_OK = 2
    X_OK = 1


cdef inline uint32_t _r32(const unsigned char* d) noexcept nogil:
    return (<uint32_t>d[0] << 24) | (<uint32_t>d[1] << 16) | (<uint32_t>d[2] << 8) | d[3]


cdef inline uint64_t _r64(const unsigned char* d) noexcept nogil:
    return (<uint64_t>_r32(d) << 32) | _r32(d + 4)


cdef inline void _w32(unsigned char* d, uint32_t v) noexcept nogil:
    d[0] = v >> 24
    d[1] = (v >> 16) & 0xFF
    d[2] = (v >> 8) & 0xFF
    d[3] = v & 0xFF


cdef inline void _w64(unsigned char* d, uint64_t v) noexcept nogil:
    _w32(d, <uint32_t>(v >> 32))
    _w32(d + 4, <uint32_t>v)


# ftype3 (RFC 1813 section 2.6) by the file type bits >> 12; anything unknown
# reads as a regular file, as nfs3.types.put_fattr3 has it
cdef uint32_t[16] _FTYPE3 = [1, 7, 4, 1, 2, 1, 3, 1, 1, 1, 5, 1, 6, 1, 1, 1]


cdef inline uint32_t _ftype(uint32_t mode) noexcept nogil:
    return _FTYPE3[(mode & S_IFMT) >> 12]


cdef class _Export:
    """What the fast lane needs of one handles.Export and its backend, read once."""


cdef class _Caller:
    """An admitted caller on one export: squashed ids and whether it may write."""


cdef class _ProcRow:
    """One procedure's counts since the last flush."""


cdef class _ClientRow:
    """One client host's counts since the last flush."""


cdef class _Probe:
    """Stands in for dispatch.Call when asking NFS3State.admit about a new caller."""
    cdef public object peer, cred, opts, ucred


cdef inline int _fattr3(Packer p, statx* sx, uint64_t fsid) except -1:
    cdef uint32_t mode = sx.stx_mode
    p.write_fattr3(_ftype(mode), mode & 0o7777, sx.stx_nlink, sx.stx_uid, sx.stx_gid,
                   sx.stx_size, sx.stx_blocks * 512, sx.stx_rdev_major, sx.stx_rdev_minor,
                   fsid, sx.stx_ino,
                   sx.stx_atime.tv_sec * 1000000000 + sx.stx_atime.tv_nsec,
                   sx.stx_mtime.tv_sec * 1000000000 + sx.stx_mtime.tv_nsec,
                   sx.stx_ctime.tv_sec * 1000000000 + sx.stx_ctime.tv_nsec)
    return 0


cdef inline long long _btime(statx* sx) noexcept:
    if sx.stx_mask & STATX_BTIME:
        return sx.stx_btime.tv_sec * 1000000000 + sx.stx_btime.tv_nsec
    return 0


cdef inline bint _same(statx* sx, uint64_t ino, uint32_t dev, uint32_t gen) noexcept:
    """Does sx belong to the object the handle names (backends.hostpaths._same and the inode)?"""
    if sx.stx_ino != ino:
        return False
    if <uint32_t>(makedev(sx.stx_dev_major, sx.stx_dev_minor) & 0xFFFFFFFF) != dev:
        return False
    return gen == 0 or generation(_btime(sx)) == gen


cdef inline int _stat(int dirfd, const char* path, int flags, statx* sx) noexcept nogil:
    return c_statx(dirfd, path, flags, STATX_BASIC_STATS | STATX_BTIME, sx)


cdef Py_ssize_t _meta_path(bytes path, char* out, Py_ssize_t cap) noexcept:
    """virtfs.overlay.meta_path into out (NUL-terminated): DIR/.virtfs_metadata/NAME,
    or the root's file; its length, or -1 when it does not fit."""
    cdef const char* s = PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = len(path), i = n - 1, k
    if n == 1 and s[0] == b'.':
        memcpy(out, b".virtfs_metadata_root", 22)
        return 21
    if n + 18 >= cap:
        return -1
    while i >= 0 and s[i] != b'/':
        i -= 1
    k = i + 1                          # the directory part with its slash
    memcpy(out, s, k)
    memcpy(out + k, b".virtfs_metadata/", 17)
    memcpy(out + k + 17, s + k, n - k)
    out[n + 17] = 0
    return n + 17


cdef object _read_meta(_Export x, int dirfd, bytes mp, statx* ms, key, stamp):
    """Read, parse and cache the metadata file at mp (what Virtfs.meta does on a
    miss), or None to leave it to the general path: a file with any flaw
    (it warns once), a symlink anywhere on the way, no openat2(2) here."""
    if (ms.stx_mode & S_IFMT) != S_IFREG or ms.stx_size > MAX_META_SIZE:
        return None
    cdef open_how how
    memset(&how, 0, sizeof(how))
    how.flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
    cdef int fd = <int>syscall(SYS_openat2, dirfd, PyBytes_AS_STRING(mp), &how, sizeof(how))
    if fd < 0:
        return None
    cdef statx fs
    cdef char buf[MAX_META_SIZE + 1]
    cdef ssize_t k = -1
    if _stat(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &fs) == 0 and fs.stx_ino == ms.stx_ino:
        k = c_read(fd, buf, MAX_META_SIZE + 1)
    close(fd)
    if k < 0 or k > MAX_META_SIZE:
        return None
    uid, gid, mode, rdev, problems = parse_meta(PyBytes_FromStringAndSize(buf, k))
    if problems:
        return None
    if uid < 0 and gid < 0 and mode < 0 and rdev < 0:
        m = x.no_meta
    else:
        m = x.meta_type(uid, gid, mode, rdev)
    x.meta.store(key, (stamp, m))
    return m


cdef int _overlay(_Export x, bytes path, statx* sx) except -2:
    """virtfs.overlay.Virtfs.view on a statx result, with the metadata from the
    cache or read here: 0 when sx is now what clients see, -1 when the general
    path must read the metadata file (one with a flaw)."""
    if x.meta is None:
        return 0
    cdef char mp[4200]
    cdef Py_ssize_t mlen = _meta_path(path, mp, sizeof(mp))
    if mlen < 0:
        return -1
    return _overlay_at(x, x.root_fd, mp, mlen, sx)


cdef int _overlay_child(_Export x, int dirfd, const unsigned char* name, uint32_t n,
                        statx* sx) except -2:
    """_overlay for the entry name of the directory open at dirfd: its
    metadata is .virtfs_metadata/NAME beneath that directory."""
    if x.meta is None:
        return 0
    cdef char mp[17 + MAXNAMLEN + 1]
    memcpy(mp, b".virtfs_metadata/", 17)
    memcpy(mp + 17, name, n)
    mp[17 + n] = 0
    return _overlay_at(x, dirfd, mp, 17 + n, sx)


cdef int _overlay_at(_Export x, int dirfd, const char* mp, Py_ssize_t mlen,
                     statx* sx) except -2:
    cdef statx ms
    if _stat(dirfd, mp, AT_SYMLINK_NOFOLLOW, &ms) != 0:
        return 0                    # no metadata file: the disk's attributes
    key = (makedev(ms.stx_dev_major, ms.stx_dev_minor), ms.stx_ino)
    cdef long long mtime = ms.stx_mtime.tv_sec * 1000000000 + ms.stx_mtime.tv_nsec
    cdef long long ctime = ms.stx_ctime.tv_sec * 1000000000 + ms.stx_ctime.tv_nsec
    m = x.meta.lookup_stamp3(key, ms.stx_size, mtime, ctime)
    if m is None:
        m = _read_meta(x, dirfd, PyBytes_FromStringAndSize(mp, mlen), &ms, key,
                       (ms.stx_size, mtime, ctime))
        if m is None:
            return -1
    if m is x.no_meta:
        return 0
    if not isinstance(m, tuple) or len(m) != 4:    # a virtfs.store.Meta
        return -1
    cdef tuple t = <tuple>m
    cdef long long uid = t[0], gid = t[1], mode = t[2], rdev = t[3]
    cdef uint32_t real = sx.stx_mode, vfmt, rfmt
    if uid >= 0:
        sx.stx_uid = <uint32_t>uid
    if gid >= 0:
        sx.stx_gid = <uint32_t>gid
    if mode >= 0:
        vfmt = mode & S_IFMT
        rfmt = real & S_IFMT
        if rfmt == S_IFREG and (vfmt == S_IFCHR or vfmt == S_IFBLK or vfmt == S_IFIFO
                                or vfmt == S_IFSOCK or vfmt == S_IFLNK) \
                and (sx.stx_size == 0 or vfmt == S_IFLNK):
            # a device, fifo, socket or symlink stored as a file
            sx.stx_mode = <unsigned short>(mode & 0xFFFF)
            if vfmt == S_IFCHR or vfmt == S_IFBLK:
                if rdev < 0:
                    rdev = 0
                sx.stx_rdev_major = c_major(<unsigned long long>rdev)
                sx.stx_rdev_minor = c_minor(<unsigned long long>rdev)
                sx.stx_size = 0
        else:
            sx.stx_mode = <unsigned short>(rfmt | (mode & 0o7777))
    return 0


cdef inline bint _hidden(const unsigned char* name, uint32_t n) noexcept:
    """virtfs.store.HIDDEN: the metadata's own names are never looked up."""
    if n == 16:
        return memcmp(name, b".virtfs_metadata", 16) == 0
    if n == 21:
        return memcmp(name, b".virtfs_metadata_root", 21) == 0
    return False


cdef inline bint _allowed(_Caller c, statx* sx, int want) noexcept:
    """perm.allowed (the shared rule, fastnfs._perm): may the caller get every
    bit of want (R|W|X)?"""
    return allowed_ids(c.uid, c.gid, c.gids, sx.stx_uid, sx.stx_gid, sx.stx_mode, want)


cdef inline uint32_t _access3(_Caller c, statx* sx, uint32_t requested) noexcept:
    """perm.access3 (the shared rule, fastnfs._perm): the ACCESS3 bits granted."""
    return access3_ids(c.uid, c.gid, c.gids, c.read_only, sx.stx_uid, sx.stx_gid,
                       sx.stx_mode, requested)


cdef _Export _make_export(e):
    """The fast lane's view of a handles.Export, or None when its backend is
    not one whose layout the lane knows (backends.plain and its wrappers), when
    its caches are not the Cython ones (FASTNFS_PURE) or its metadata limit is
    not this module's."""
    b = e.backend
    if not getattr(b, "lane", False) or not isinstance(b.cache, FHCache):
        return None
    cdef _Export x = _Export.__new__(_Export)
    x.export = e
    x.cache = b.cache
    x.root_fd = b.root_fd
    x.root_ino = b.root_ino
    x.fsid = e.fsid
    x.export_id = e.export_id
    x.plain = not b.per_caller_view
    x.meta = None
    overlay = getattr(b, "overlay", None)
    if overlay is not None:
        if not isinstance(overlay.cache, MetaCache):
            return None
        from fastnfs.virtfs.overlay import _NONE
        from fastnfs.virtfs.store import MAX_META_SIZE as max_meta, Meta
        if max_meta != MAX_META_SIZE:
            return None
        x.meta = overlay.cache
        x.no_meta = _NONE
        x.meta_type = Meta
    return x


def put_entries_plus(Packer p, e, int dfd, bytes dpath, tuple anc, list cookies, list names,
                     list inos, Py_ssize_t start, Py_ssize_t budget, Py_ssize_t dirbudget,
                     Py_ssize_t sent):
    """Cython twin of backends.plain.py_put_entries_plus (READDIRPLUS3resok
    entries, RFC 1813 section 3.3.17): returns (entries sent in all, eof), or
    None when the export's backend is not one the lane knows (the caller then
    uses the Python loop)."""
    cdef _Export x = _make_export(e)
    if x is None:
        return None
    cdef uint32_t nanc = len(anc)
    if nanc > MAX_ANC or len(names) != len(cookies) or len(inos) != len(cookies):
        raise ValueError("bad listing or ancestors")
    cdef unsigned char anc_be[8 * MAX_ANC]
    cdef uint32_t k
    for k in range(nanc):
        _w64(anc_be + 8 * k, anc[k])
    cdef bint root = dpath == b"."
    cdef Py_ssize_t i, size, dsize, pad
    cdef Py_ssize_t n = len(cookies)
    cdef statx sx
    cdef bytes name
    cdef const char* cname
    cdef int rc
    for i in range(start, n):
        name = <bytes?>names[i]
        pad = (len(name) + 3) & ~3
        size = 24 + pad + 88 + 8 + 24 + 8 * nanc
        dsize = 20 + pad
        if size > budget or (dsize > dirbudget and sent):
            return sent, False
        budget -= size
        dirbudget -= dsize
        p.write_u32(1)
        cname = PyBytes_AS_STRING(name)
        with nogil:    # off the loop, in the pool, a cold inode must not hold the GIL
            rc = _stat(dfd, cname, AT_SYMLINK_NOFOLLOW, &sx)
        if rc != 0:
            p.write_u64(inos[i])
            p.write_opaque(<const unsigned char*>PyBytes_AS_STRING(name), len(name))
            p.write_u64(cookies[i])
            p.write_u32(0)
            p.write_u32(0)
        else:
            epath = name if root else dpath + b"/" + name
            x.cache.store(sx.stx_ino, epath)
            if x.meta is not None and _overlay_child(x, dfd, <const unsigned char*>PyBytes_AS_STRING(name),
                                                     len(name), &sx) < 0:
                # a metadata file the lane leaves alone: Virtfs.meta reads it
                # (and warns once), then the cache has whatever it decided
                e.backend.overlay.meta(epath)
                _overlay(x, epath, &sx)
            p.write_u64(sx.stx_ino)
            p.write_opaque(<const unsigned char*>PyBytes_AS_STRING(name), len(name))
            p.write_u64(cookies[i])
            p.write_u32(1)
            _fattr3(p, &sx, x.fsid)
            p.write_u32(1)
            _put_fh(p, x, &sx, anc_be, nanc)
        sent += 1
    return sent, True


cdef int _put_fh(Packer p, _Export x, statx* sx, const unsigned char* anc_be,
                 uint32_t nanc) except -1:
    """nfs_fh3 of an object (the layout in handles.py): its inode, device and
    generation from sx, then nanc ancestor inodes, big-endian."""
    cdef uint32_t size = FH_HEAD + 8 * nanc
    cdef unsigned char* w = p.extend(4 + size)
    _w32(w, size)
    w[4] = 1
    w[5] = nanc
    w[6] = 0
    w[7] = 0
    _w32(w + 8, x.export_id)
    _w64(w + 12, sx.stx_ino)
    _w32(w + 20, <uint32_t>(makedev(sx.stx_dev_major, sx.stx_dev_minor) & 0xFFFFFFFF))
    _w32(w + 24, generation(_btime(sx)))
    if nanc:
        memcpy(w + 28, anc_be, 8 * nanc)
    return 0


cdef class FastPath:
    """Answers ordinary GETATTR/ACCESS/LOOKUP calls for an NFS3State, or declines."""


    def __init__(self, state, stats, tcp_maxdata=1048576, udp_maxdata=32768,
                 read_inline_max=65536):
        self.tcp_maxdata = tcp_maxdata
        self.udp_maxdata = udp_maxdata
        self.read_inline_max = read_inline_max
        self.state = state
        self.stats = stats
        self.by_id_seen = None
        self.exports = {}
        self.admitted = {}
        self.current_creds = _creds_mod.current if state.switch_creds else None
        self.answered = 0
        self.declined = 0
        self.out = Packer()
        self.procs = [_ProcRow() for _ in range(NPROCS)]
        self.clients = {}
        self.bytes_read = 0
        if len(_BUCKETS_NS) != NBUCKETS:
            raise ValueError("stats buckets changed: %d, not %d" % (len(_BUCKETS_NS), NBUCKETS))
        for i in range(NBUCKETS):
            self.bounds[i] = _BUCKETS_NS[i]
        stats.flushers.append(self.flush)

    cdef _Export _export(self, uint32_t eid):
        by_id = self.state._by_id
        if by_id is not self.by_id_seen:      # exports reloaded: start afresh
            self.exports = {}
            self.admitted = {}
            self.by_id_seen = by_id
        cdef PyObject* hit = PyDict_GetItemWithError(self.exports, eid)
        if hit != NULL:
            return <_Export>hit
        e = by_id.get(eid)
        if e is None:
            return None
        cdef _Export x = _make_export(e)
        if x is None:
            return None
        self.exports[eid] = x
        return x

    cdef _Caller _caller(self, _Export x, peer, const unsigned char* body, Py_ssize_t n):
        """The admitted caller for an AUTH_SYS body (stamp excluded), or None."""
        cdef bint priv = peer[1] < 1024
        cred_bytes = PyBytes_FromStringAndSize(<const char*>body, n)
        key = (x.export_id, peer[0], priv, cred_bytes)
        cdef PyObject* hit = PyDict_GetItemWithError(self.admitted, key)
        if hit != NULL:
            return <_Caller>hit
        # authsys_parms after the stamp (RFC 5531 appendix A): machine, uid, gid, gids
        if n < 4:
            return None
        cdef uint32_t mlen = _r32(body)
        if mlen > MAX_MACHINE:
            return None
        cdef Py_ssize_t pos = 4 + ((mlen + 3) & ~3)
        if pos + 12 > n:
            return None
        cdef uint32_t uid = _r32(body + pos)
        cdef uint32_t gid = _r32(body + pos + 4)
        cdef uint32_t ngids = _r32(body + pos + 8)
        pos += 12
        if ngids > MAX_GIDS or pos + 4 * <Py_ssize_t>ngids != n:
            return None
        gids = tuple([_r32(body + pos + 4 * i) for i in range(ngids)])
        probe = _Probe()
        probe.peer = peer
        probe.cred = Cred(AUTH_SYS, uid, gid, gids, body[4:4 + mlen])
        try:
            opts = self.state.admit(probe, x.export)
        except NFSError:
            return None      # the general path refuses it, with the log line
        u = probe.ucred
        cdef _Caller c = _Caller.__new__(_Caller)
        c.uid = u.uid
        c.gid = u.gid
        c.gids = u.gids
        c.want = (u.uid, u.gid, u.gids)
        c.read_only = opts is None or not opts.rw
        if len(self.admitted) >= MAX_ADMITTED:    # bounded whatever callers claim to be
            self.admitted.clear()
        self.admitted[key] = c
        return c

    def answer(self, record, peer, Py_ssize_t offset=0, bint mark=False):
        """The reply as bytes (after a record mark, for TCP, when mark is
        true), or None to take the general path.  The call starts at offset."""
        cdef const unsigned char[::1] view
        try:
            view = record
        except (TypeError, ValueError, BufferError):
            return None
        if offset < 0 or offset >= view.shape[0]:
            return None
        r = self._answer(&view[offset], view.shape[0] - offset, peer,
                         self.tcp_maxdata if mark else self.udp_maxdata)
        if r is None:
            self.declined += 1
            return None
        self.answered += 1
        # r holds 4 bytes for the record mark, then the reply; nobody else has it yet
        cdef char* w = PyBytes_AS_STRING(r)
        cdef Py_ssize_t size = len(r)
        if mark:
            _w32(<unsigned char*>w, 0x80000000 | <uint32_t>(size - 4))
            return r
        return PyBytes_FromStringAndSize(w + 4, size - 4)

    cdef object _answer(self, const unsigned char* d, Py_ssize_t n, peer, Py_ssize_t maxdata):
        """The reply (4 bytes left for the record mark first) as a new bytes, or None."""
        cdef timespec t0, t1
        clock_gettime(CLOCK_MONOTONIC, &t0)
        # call header: xid, CALL, rpcvers 2, prog, vers, proc, cred, verf (RFC 5531 section 9)
        if n < 40 or _r32(d + 4) != 0 or _r32(d + 8) != 2:
            return None
        if _r32(d + 12) != NFS_PROGRAM or _r32(d + 16) != 3:
            return None
        cdef uint32_t proc = _r32(d + 20)
        if proc < GETATTR or proc > READ or proc == 2:
            return None
        if _r32(d + 24) != AUTH_SYS:
            return None
        cdef uint32_t clen = _r32(d + 28)
        if clen > MAX_AUTH or clen < 4 or clen & 3:
            return None
        cdef Py_ssize_t pos = 32 + clen
        if pos + 8 > n or _r32(d + pos) != 0 or _r32(d + pos + 4) != 0:
            return None      # only an empty AUTH_NONE verifier is ordinary
        cdef const unsigned char* cred = d + 36   # after the stamp
        cdef Py_ssize_t cred_n = clen - 4
        pos += 8
        # nfs_fh3: as handles.decode_fh accepts it
        if pos + 4 > n:
            return None
        cdef uint32_t fhlen = _r32(d + pos)
        pos += 4
        if fhlen < FH_HEAD or fhlen > 64 or pos + fhlen > n or fhlen & 3:
            return None
        cdef const unsigned char* fh = d + pos
        cdef uint32_t nanc = fh[1]
        if fh[0] != 1 or nanc > MAX_ANC or fh[2] or fh[3] or fhlen != FH_HEAD + 8 * nanc:
            return None
        pos += fhlen
        cdef _Export x = self._export(_r32(fh + 4))
        if x is None or not x.plain:
            return None
        cdef _Caller c = self._caller(x, peer, cred, cred_n)
        if c is None:
            return None
        if self.current_creds is not None and self.current_creds() != c.want:
            return None      # the general path switches this thread to the caller
        cdef uint32_t requested = 0
        cdef const unsigned char* name = NULL
        cdef uint32_t namelen = 0
        cdef uint64_t roff = 0
        cdef Py_ssize_t count = 0
        if proc == READ:
            if pos + 12 > n:
                return None
            roff = _r64(d + pos)
            count = _r32(d + pos + 8)
            if count > maxdata:
                count = maxdata
            if count > self.read_inline_max:
                return None   # big reads go to the general path and its thread pool
        elif proc == ACCESS:
            if pos + 4 > n:
                return None
            requested = _r32(d + pos)
        elif proc == LOOKUP:
            if pos + 4 > n:
                return None
            namelen = _r32(d + pos)
            # the string's padding must be there too (RFC 4506 section 4.11)
            if namelen == 0 or namelen > MAXNAMLEN or pos + 4 + ((namelen + 3) & ~3) > n:
                return None
            name = d + pos + 4
            if memchr(name, b'/', namelen) != NULL or memchr(name, 0, namelen) != NULL:
                return None
            if name[0] == b'.' and (namelen == 1 or (namelen == 2 and name[1] == b'.')):
                return None
        cdef uint64_t ino = _r64(fh + 8)
        cdef uint32_t dev = _r32(fh + 16)
        cdef uint32_t gen = _r32(fh + 20)
        path = x.cache.lookup(ino)
        if path is None:
            return None
        cdef bytes bpath = <bytes?>path
        cdef statx sx, dsx
        cdef int fd
        cdef int rc
        cdef uint32_t real_mode = 0
        if proc != LOOKUP or ino == x.root_ino:
            if ino == x.root_ino:
                rc = _stat(x.root_fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &sx)
            else:
                rc = _stat(x.root_fd, PyBytes_AS_STRING(bpath), AT_SYMLINK_NOFOLLOW, &sx)
            if rc != 0 or not _same(&sx, ino, dev, gen):
                return None
            real_mode = sx.stx_mode
            if _overlay(x, bpath, &sx) < 0:
                return None
        cdef Packer p = self.out       # reused: the reply leaves as a copy, below
        p._len = 0
        out = None
        cdef unsigned char* w = p.extend(28)
        _w32(w, 0)
        memcpy(w + 4, d, 4)                           # xid
        _w32(w + 8, 1)                                # REPLY
        _w32(w + 12, 0)                               # MSG_ACCEPTED
        _w32(w + 16, 0)                               # verifier AUTH_NONE, empty
        _w32(w + 20, 0)
        _w32(w + 24, 0)                               # SUCCESS
        cdef uint32_t status = NFS3_OK
        if proc == GETATTR:
            p.write_u32(NFS3_OK)
            _fattr3(p, &sx, x.fsid)
        elif proc == ACCESS:
            p.write_u32(NFS3_OK)
            p.write_u32(1)
            _fattr3(p, &sx, x.fsid)
            p.write_u32(_access3(c, &sx, requested) & requested)
        elif proc == READLINK:
            # a symlink kept as a file (virtfs) is read by the general path
            if (sx.stx_mode & S_IFMT) != S_IFLNK or (real_mode & S_IFMT) != S_IFLNK:
                return None
            if self._readlink(p, x, bpath, &sx) < 0:
                return None
        elif proc == READ:
            if (sx.stx_mode & S_IFMT) != S_IFREG:
                return None
            if x.meta is not None and not io_allowed_ids(c.uid, c.gid, c.gids, sx.stx_uid,
                                                         sx.stx_gid, sx.stx_mode, R_OK):
                return None   # (VirtfsBackend.check_io) the general path refuses it
            out = self._read(p, x, bpath, &sx, roff, count)
            if out is None:
                return None
        else:
            # LOOKUP: the directory, opened without following a symlink and
            # checked by inode, then one no-follow stat of the name in it
            if ino == x.root_ino:
                dsx = sx
                fd = x.root_fd
            else:
                fd = openat(x.root_fd, PyBytes_AS_STRING(bpath),
                            O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC)
                if fd < 0:
                    return None
                if _stat(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &dsx) != 0 \
                        or not _same(&dsx, ino, dev, gen):
                    close(fd)
                    return None
            if ino != x.root_ino and _overlay(x, bpath, &dsx) < 0 \
                    or (dsx.stx_mode & S_IFMT) != S_IFDIR \
                    or x.meta is not None and (not _allowed(c, &dsx, X_OK) or _hidden(name, namelen)):
                if fd != x.root_fd:
                    close(fd)
                return None
            bname = PyBytes_FromStringAndSize(<const char*>name, namelen)
            rc = _stat(fd, PyBytes_AS_STRING(bname), AT_SYMLINK_NOFOLLOW, &sx)
            if rc != 0:
                rc = errno
            elif _overlay_child(x, fd, name, namelen, &sx) < 0:
                rc = -1
            if fd != x.root_fd:
                close(fd)
            if rc == ENOENT:
                status = NFS3ERR_NOENT
                p.write_u32(NFS3ERR_NOENT)
                p.write_u32(1)
                _fattr3(p, &dsx, x.fsid)
            elif rc != 0:
                return None
            else:
                child = bname if ino == x.root_ino else bpath + b"/" + bname
                x.cache.store(sx.stx_ino, child)
                p.write_u32(NFS3_OK)
                self._put_child_fh(p, x, &sx, ino, fh, nanc)
                p.write_u32(1)
                _fattr3(p, &sx, x.fsid)
                p.write_u32(1)
                _fattr3(p, &dsx, x.fsid)
        if out is None:
            out = PyBytes_FromStringAndSize(<const char*>p._data, p._len)
        clock_gettime(CLOCK_MONOTONIC, &t1)
        self._count(proc, status == NFS3_OK,
                    (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec),
                    peer[0], n, len(out) - 4)
        return out

    cdef int _count(self, uint32_t proc, bint ok, int64_t ns, host, Py_ssize_t nin,
                    Py_ssize_t nout) except -1:
        """Statistics of one answered call, kept in C until flush() (stats.Stats.call)."""
        cdef _ProcRow r = self.procs[proc]
        cdef int b = 0
        r.calls += 1
        if not ok:
            r.errors += 1
        r.sum_ns += ns
        while b < NBUCKETS and ns > self.bounds[b]:
            b += 1
        r.buckets[b] += 1
        cdef PyObject* hit = PyDict_GetItemWithError(self.clients, host)
        cdef _ClientRow c
        if hit == NULL:
            c = _ClientRow.__new__(_ClientRow)
            self.clients[host] = c
        else:
            c = <_ClientRow>hit
        c.calls += 1
        c.nin += nin
        c.nout += nout
        return 0

    def flush(self, stats):
        """Add the counts kept since the last flush to a stats.Stats and start afresh."""
        cdef _ProcRow r
        cdef int b
        for proc in range(1, NPROCS):
            r = self.procs[proc]
            if not r.calls:
                continue
            row = stats.proc_row(NFS_PROGRAM, proc)
            row[0] += r.calls
            row[1] += r.errors
            row[2] += r.sum_ns
            buckets = row[3]
            for b in range(NBUCKETS + 1):
                buckets[b] += r.buckets[b]
            self.procs[proc] = _ProcRow()
        for host, c in self.clients.items():
            row = stats.client_row(host)
            row[0] += (<_ClientRow>c).calls
            row[1] += (<_ClientRow>c).nin
            row[2] += (<_ClientRow>c).nout
        self.clients = {}
        stats.bytes_read += self.bytes_read
        self.bytes_read = 0
        stats.fast_answered = self.answered    # one lane per Stats: its totals
        stats.fast_declined = self.declined

    cdef int _readlink(self, Packer p, _Export x, bytes path, statx* sx) except -2:
        """READLINK3resok (RFC 1813 section 3.3.5), or -1 to decline."""
        cdef char buf[MAXLINK]
        cdef ssize_t k = readlinkat(x.root_fd, PyBytes_AS_STRING(path), buf, MAXLINK)
        if k < 0 or k >= MAXLINK:
            return -1
        p.write_u32(NFS3_OK)
        p.write_u32(1)
        _fattr3(p, sx, x.fsid)
        p.write_opaque(<const unsigned char*>buf, k)
        return 0

    cdef object _read(self, Packer p, _Export x, bytes path, statx* sx, uint64_t offset,
                      Py_ssize_t count):
        """The whole READ reply from the page cache only (RFC 1813 section 3.3.6):
        the header from p, the data read by the kernel straight into the bytes
        that leave.  None to decline: a read that would wait for the disk goes
        to the general path and its pool."""
        cdef statx fsx
        cdef int fd = openat(x.root_fd, PyBytes_AS_STRING(path), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0:
            return None
        # the object the handle named (HostPaths.open_obj)
        if _stat(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &fsx) != 0 \
                or fsx.stx_ino != sx.stx_ino or _btime(&fsx) != _btime(sx):
            close(fd)
            return None
        if x.meta is not None:
            # seen as clients see it: sx, the same regular file, carries the
            # metadata already (an overlay changes no more than these of one)
            fsx.stx_uid = sx.stx_uid
            fsx.stx_gid = sx.stx_gid
            fsx.stx_mode = sx.stx_mode
        p.write_u32(NFS3_OK)
        p.write_u32(1)
        _fattr3(p, &fsx, x.fsid)
        p.write_u64(0)                       # count and eof, known after the read
        p.write_u32(0)                       # the data's length
        cdef Py_ssize_t head = p._len
        cdef Py_ssize_t got = 0
        cdef iovec iov
        if count == 0 or offset > 0x7FFFFFFFFFFFFFFF:
            count = 0                        # nothing to read, or past any off_t: eof
        out = PyBytes_FromStringAndSize(NULL, head + ((count + 3) & ~3))
        cdef unsigned char* w = <unsigned char*>PyBytes_AS_STRING(out)
        if count:
            iov.iov_base = w + head
            iov.iov_len = <size_t>count
            got = preadv2(fd, &iov, 1, <off_t>offset, RWF_NOWAIT)
            if got < 0 or (got < count and offset + got < fsx.stx_size):
                close(fd)                    # not (all) in the page cache
                return None
        close(fd)
        if got < count:                      # the end of the file: a shorter reply
            out = PyBytes_FromStringAndSize(<const char*>w, head + ((got + 3) & ~3))
            w = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(w, p._data, head)
        _w32(w + head - 12, <uint32_t>got)
        _w32(w + head - 8, 1 if offset + got >= fsx.stx_size else 0)
        _w32(w + head - 4, <uint32_t>got)
        memset(w + head + got, 0, <size_t>((-got) & 3))
        self.bytes_read += got
        return out

    cdef int _put_child_fh(self, Packer p, _Export x, statx* sx, uint64_t dir_ino,
                           const unsigned char* dir_fh, uint32_t dir_nanc) except -1:
        """nfs_fh3 of a directory's child: its ancestors are the directory and
        the directory's own first ones (fs.Obj.child_anc)."""
        cdef uint32_t nanc = dir_nanc + 1 if dir_nanc < MAX_ANC else MAX_ANC
        cdef unsigned char anc_be[8 * MAX_ANC]
        _w64(anc_be, dir_ino)
        if nanc > 1:
            memcpy(anc_be + 8, dir_fh + FH_HEAD, 8 * (nanc - 1))
        return _put_fh(p, x, sx, anc_be, nanc)
