# cython: language_level=3
"""The fast lane: the commonest NFSv3 calls answered in C from bytes to reply.

A booting board sends mostly LOOKUP, GETATTR, ACCESS, READLINK and READ (RFC
1813 sections 3.3.1-3.3.6), and for them the general path (dispatch.py ->
nfs3/*.py) spends most of its time building Python objects.
``FastPath.answer`` takes the record, and when everything about the call is
ordinary (NFSv3 with AUTH_SYS, a well-formed handle the filehandle cache
places, a caller admitted before, the thread already holding the caller's
credentials, a READ of data the page cache holds, an UNSTABLE WRITE) it
builds the reply itself: statx(2) straight into the reply buffer, READ data
from the page cache only (_xdr.read_data, as the general path reads) into
the bytes that are sent, or over 64 KiB left in the file for the compiled
transport to send (sendfile), WRITE data written from the record's own
bytes in the receive buffer.  Anything else (an error
other than a missing name, a filehandle cache miss, an unknown caller, a
symlink kept as a file, unfsd's -s view) returns None, and the
general path answers; it is the reference, and tests/test_fastpath.py and the
fuzzer's dispatch target hold the two to the same bytes.

The checks are the general path's (nfs3/state.py, handles.py, backends/): the export admits
the host and port with the squashed credentials, a handle's inode, device and
generation must match what its cached path reaches, a name is one component,
a LOOKUP opens the directory O_PATH|O_NOFOLLOW and verifies its inode, a READ
opens the file O_NOFOLLOW and verifies inode and birth time; with virtfs the
directory must grant search by its metadata and the metadata's own names are
never looked up.

The rules themselves are not coded here but cimported from the blocks the
general path uses too: the handle layout (_handles), which object a handle
names and the steps of a one-name LOOKUP (_fsstat), a READ's data from the
page cache (_xdr), the permission rules (_perm), and the virtfs rules (where
metadata lives, its cache, the hidden names, the overlay with the
device-as-file rule: virtfs._meta).  A metadata file the cache does not hold
is read by the backend's own reader (overlay.Virtfs.meta).
tests/test_lane_rules.py fails when one of them is coded here again.

Also here: put_entries_plus, the Cython twin of backends.plain.py_put_entries_plus.
"""

cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memset
from posix.fcntl cimport openat
from posix.unistd cimport close, pwrite
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, mmap, munmap
from posix.types cimport off_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject

from fastnfs._fhcache cimport FHCache
from fastnfs._handles cimport (FH_MAX, FH_MAX_ANC, fh_child_anc, fh_pack, fh_put_anc, fh_t,
                               fh_unpack)
from fastnfs._perm cimport access3_ids, allowed_ids, io_allowed_ids
from fastnfs._fsstat cimport (AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS,
                              STATX_BTIME, c_statx, generation, lookup_dir, lookup_done,
                              lookup_name, makedev, names_fileid, statx, statx_btime_ns,
                              statx_names)
from fastnfs._fsstat cimport all_cached
from fastnfs._xdr cimport MAX_OFFSET, Packer, ftype3, get_be32, get_be64, put_be32, read_data
from fastnfs.virtfs._meta cimport (MetaCache, child_meta_path_into, hidden_name, meta_at,
                                   meta_path_into, overlay_statx)

from fastnfs import creds as creds_mod
from fastnfs.fs import NFSError
from fastnfs.rpc_msg import AUTH_SYS, Cred
from fastnfs.stats import BUCKETS_NS

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

cdef extern from "<fcntl.h>" nogil:
    int O_NOATIME
    int F_DUPFD_CLOEXEC
    int fcntl(int fd, int cmd, ...)
    int O_RDONLY
    int O_WRONLY
    int O_NONBLOCK
    int O_NOFOLLOW
    int O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t size)

cdef extern from "<errno.h>" nogil:
    int errno
    int ENOENT
    int EPERM
    int EINTR

cdef extern from *:
    """
    static inline unsigned long long fastnfs_layer_gen(const void* p) {
        return __atomic_load_n((const unsigned long long*)p, __ATOMIC_ACQUIRE);
    }
    """
    uint64_t layer_gen "fastnfs_layer_gen"(const void* p) nogil

cdef enum:
    NFS_PROGRAM = 100003
    GETATTR = 1
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    WRITE = 7
    UNSTABLE = 0
    NFS3_OK = 0
    NFS3ERR_NOENT = 2
    MAX_MACHINE = 255
    MAX_GIDS = 16
    MAX_AUTH = 400
    MAX_ADMITTED = 4096    # (export, host, port class, credential) pairs remembered
    MAXNAMLEN = 255
    MAXLINK = 4096
    NPROCS = 8             # counters for procedures 0..7
    MAX_PATH = 4200        # room for a metadata path; a longer one goes to the reader
    NBUCKETS = 16          # stats.BUCKETS
    S_IFMT = 0o170000
    S_IFDIR = 0o040000
    S_IFREG = 0o100000
    S_IFLNK = 0o120000
    A_READ = 0x01
    A_LOOKUP = 0x02
    A_MODIFY = 0x04
    A_EXTEND = 0x08
    A_DELETE = 0x10
    A_EXECUTE = 0x20
    R_OK = 4
    W_OK = 2
    X_OK = 1


cdef class _Export:
    """What the fast lane needs of one handles.Export and its backend, read once."""

    def __dealloc__(self):
        if self.gen_map != NULL:
            munmap(self.gen_map, 8)
        if self.board and self.upper_fd >= 0:
            close(self.upper_fd)


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
    p.write_fattr3(ftype3(mode), mode & 0o7777, sx.stx_nlink, sx.stx_uid, sx.stx_gid,
                   sx.stx_size, sx.stx_blocks * 512, sx.stx_rdev_major, sx.stx_rdev_minor,
                   fsid, sx.stx_ino,
                   sx.stx_atime.tv_sec * 1000000000 + sx.stx_atime.tv_nsec,
                   sx.stx_mtime.tv_sec * 1000000000 + sx.stx_mtime.tv_nsec,
                   sx.stx_ctime.tv_sec * 1000000000 + sx.stx_ctime.tv_nsec)
    return 0


cdef inline int _stat(int dirfd, const char* path, int flags, statx* sx) noexcept nogil:
    return c_statx(dirfd, path, flags, STATX_BASIC_STATS | STATX_BTIME, sx)


cdef object _overlay(_Export x, bytes path, statx* sx):
    """The object at path as clients see it (overlay.Virtfs.view): its
    metadata laid over sx; the Meta laid, or None."""
    if x.meta is None:
        return None
    cdef char mp[MAX_PATH]
    if meta_path_into(PyBytes_AS_STRING(path), len(path), mp, MAX_PATH) < 0:
        return _lay(x, None, path, sx)
    return _lay(x, meta_at(x.meta, x.root_fd, mp, x.no_meta), path, sx)


cdef object _overlay_child(_Export x, int dirfd, bytes dpath, bytes name, statx* sx):
    """_overlay for the entry name of the directory dpath, open at dirfd."""
    if x.meta is None:
        return None
    cdef char mp[MAXNAMLEN + 32]
    if child_meta_path_into(<const unsigned char*>PyBytes_AS_STRING(name), len(name),
                            mp, sizeof(mp)) < 0:
        m = None
    else:
        m = meta_at(x.meta, dirfd, mp, x.no_meta)
    path = None
    if m is None:      # the entry's own path, for the reader (built only then)
        path = name if dpath == b"." else dpath + b"/" + name
    return _lay(x, m, path, sx)


cdef object _lay(_Export x, m, bytes path, statx* sx):
    """Lay m (what meta_at found) over sx; None from meta_at, a file with a
    flaw, is read by the backend's lenient reader, which warns."""
    if m is None:
        m = x.read_meta(path)
    if m is None or m is x.no_meta:
        return None
    overlay_statx(sx, m)
    return m


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
    not one whose layout the lane knows (backends.plain and its wrappers) or
    its caches are not the Cython ones (FASTNFS_PURE)."""
    b = e.backend
    if getattr(b, "lane_layer", None) is not None:
        return _make_board(e, b)
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
        _use_meta(x, overlay)
    x.checks = x.meta is not None
    return x


cdef _Export _make_board(e, b):
    """The lane's view of a board (backends.boards.BoardBackend): the base tree,
    with the board's export id and fsid; the layer is looked at by _board_sync."""
    bv = b.base_virtfs
    if bv is not None and not isinstance(bv.cache, MetaCache):
        return None
    cdef _Export x = _Export.__new__(_Export)
    x.upper_fd = -1
    x.board = True
    x.export = e
    x.cache = None
    x.root_fd = b.base_fd
    x.root_ino = b.root_ino
    x.fsid = e.fsid
    x.fsid32 = <uint32_t>e.fsid
    x.export_id = e.export_id
    x.plain = not b.per_caller_view
    x.checks = True
    x.board_b = b
    x.known = {}
    x.meta = None
    if bv is not None:
        _use_meta(x, bv)
    return x


cdef int _use_meta(_Export x, v) except -1:
    """x reads its objects' metadata through the virtfs overlay v's cache
    (imported here: a server without virtfs never loads it)."""
    from fastnfs.virtfs.store import NO_META
    x.meta = v.cache
    x.no_meta = NO_META
    x.read_meta = v.meta
    return 0


cdef int _board_sync(_Export x) except -1:
    """1 when what x knows of the board's layer is current (its generation has not
    moved since it was learnt), after asking the backend if it moved (the objects
    known are forgotten then); 0 to decline (a change is under way)."""
    cdef uint64_t g
    if x.gen_map != NULL:
        g = layer_gen(x.gen_map)
        if g == x.gen_seen:
            return 1
        if g & 1:
            return 0     # a change under way
    try:
        got = x.board_b.lane_layer()
    except Exception:    # (the layer cannot be read: the general path meets it and answers)
        return 0
    if got is None:
        return 0
    L, seen, uv = got
    cdef void* m
    cdef int fd
    cdef _Export u
    if L is not x.layer:         # a new layer (reset): its own generation file and upper/
        if not isinstance(uv.cache, MetaCache):
            return 0
        m = mmap(NULL, 8, PROT_READ, MAP_SHARED, L.gen_fd, 0)
        if m == MAP_FAILED:
            return 0
        fd = fcntl(L.upper_fd, F_DUPFD_CLOEXEC, 0)
        if fd < 0:
            munmap(m, 8)
            return 0
        if x.gen_map != NULL:
            munmap(x.gen_map, 8)
        if x.upper_fd >= 0:
            close(x.upper_fd)
        x.gen_map = m
        x.upper_fd = fd
        x.layer = L
        u = _Export.__new__(_Export)
        u.root_fd = fd
        _use_meta(u, uv)
        x.upper = u
    x.whiteouts = L.whiteouts
    x.attrs = L.attrs
    x.known = {}
    x.root_absent = set()
    x.root_meta_read = False
    x.root_meta = None
    x.gen_seen = seen
    return 1 if layer_gen(x.gen_map) == seen else 0


cdef inline bint _names(_Export x, statx* sx, const fh_t* fh) noexcept:
    """Is sx the object fh names?  On a board, the base object whose fileid it
    is (names_fileid, as BoardBackend._verify asks), else statx_names."""
    if x.board:
        return names_fileid(sx.stx_ino, generation(statx_btime_ns(sx)), fh.ino, fh.gen)
    return statx_names(sx, fh.ino, fh.dev, fh.gen)


cdef int _board_learn(_Export x, statx* sx, bytes path) except -1:
    """Remember the base object sx at path as the base's own, unless the layer
    has something of it: 1, else 0 (sx as on disk, before any overlay)."""
    if (sx.stx_mode & S_IFMT) != S_IFDIR and sx.stx_nlink > 1:
        return 0         # a base file with more names: its copy may be in index/
    ino = sx.stx_ino
    if ino in x.attrs:
        return 0         # its attributes changed (metadata only)
    if len(x.known) > 262144:
        x.known.clear()
    x.known[ino] = path
    paths = x.board_b.paths     # the general path finds it without a search
    if len(paths) < 262144:
        paths[ino] = path
    return 1


def put_entries_plus(Packer p, e, int dfd, bytes dpath, tuple anc, list cookies, list names,
                     list inos, Py_ssize_t start, Py_ssize_t budget, Py_ssize_t dirbudget,
                     Py_ssize_t sent):
    """Cython twin of backends.plain.py_put_entries_plus (READDIRPLUS3resok
    entries, RFC 1813 section 3.3.17): returns (entries sent in all, eof), or
    None when the export's backend is not one the lane knows (the caller then
    uses the Python loop)."""
    cdef _Export x = _make_export(e)
    if x is None or x.board:
        return None
    if len(names) != len(cookies) or len(inos) != len(cookies):
        raise ValueError("bad listing")
    cdef unsigned char anc_be[8 * FH_MAX_ANC]
    cdef uint32_t nanc = fh_put_anc(anc_be, anc)
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
            _overlay_child(x, dfd, dpath, name, &sx)
            p.write_u64(sx.stx_ino)
            p.write_opaque(<const unsigned char*>PyBytes_AS_STRING(name), len(name))
            p.write_u64(cookies[i])
            p.write_u32(1)
            _fattr3(p, &sx, x.fsid)
            p.write_u32(1)
            _put_fh(p, x, &sx, anc_be, nanc)
        sent += 1
    return sent, True


def put_board_entries_plus(Packer p, e, int dfd, bytes dpath, tuple anc, list items,
                           Py_ssize_t i, Py_ssize_t budget, Py_ssize_t dirbudget,
                           Py_ssize_t sent, attrs):
    """The entries of a board's directory that is the base's own (open at dfd in
    the base), from items[i] on (BoardBackend.readdirplus, whose per-entry loop
    is the twin): items are its listing [(cookie, name, fileid)], attrs the
    layer's attribute changes.  Returns (sent, budget, dirbudget, next, full):
    full when the next entry does not fit, else next is the first entry the
    backend writes itself ("." or "..", a file with more names, one whose
    attributes the layer changed), len(items) when none is left; None when e is
    not a board the lane knows."""
    cdef _Export x = _make_board(e, e.backend)
    if x is None:
        return None
    cdef unsigned char anc_be[8 * FH_MAX_ANC]
    cdef uint32_t nanc = fh_put_anc(anc_be, anc)
    cdef Py_ssize_t size, dsize, pad
    cdef Py_ssize_t n = len(items)
    cdef statx sx
    cdef bytes name
    cdef uint64_t fid
    cdef int rc
    while i < n:
        item = <tuple?>items[i]
        name = <bytes?>item[1]
        if name == b"." or name == b"..":
            break
        fid = item[2]
        pad = (len(name) + 3) & ~3
        size = 24 + pad + 88 + 8 + 24 + 8 * nanc
        dsize = 20 + pad
        if size > budget or (dsize > dirbudget and sent):
            return sent, budget, dirbudget, i, True
        rc = _stat(dfd, PyBytes_AS_STRING(name), AT_SYMLINK_NOFOLLOW, &sx)
        if rc == 0 and (((sx.stx_mode & S_IFMT) != S_IFDIR and sx.stx_nlink > 1)
                        or sx.stx_ino in attrs):
            break         # the layer may have a say (index/, attributes)
        budget -= size
        dirbudget -= dsize
        p.write_u32(1)
        p.write_u64(fid)
        p.write_opaque(<const unsigned char*>PyBytes_AS_STRING(name), len(name))
        p.write_u64(item[0])
        if rc != 0 or sx.stx_ino != fid:     # gone or replaced since the listing
            p.write_u32(0)
            p.write_u32(0)
        else:
            _overlay_child(x, dfd, dpath, name, &sx)
            p.write_u32(1)
            _fattr3(p, &sx, x.fsid)
            p.write_u32(1)
            _put_fh(p, x, &sx, anc_be, nanc)
        sent += 1
        i += 1
    return sent, budget, dirbudget, i, False


cdef int _put_fh(Packer p, _Export x, statx* sx, const unsigned char* anc_be,
                 uint32_t nanc) except -1:
    """nfs_fh3 of the object sx (RFC 1813 section 2.5) with nanc ancestors."""
    cdef unsigned char w[FH_MAX]
    cdef uint64_t dev = x.fsid32 if x.board else makedev(sx.stx_dev_major, sx.stx_dev_minor)
    cdef Py_ssize_t n = fh_pack(w, x.export_id, sx.stx_ino, dev,
                                generation(statx_btime_ns(sx)), anc_be, nanc)
    p.write_opaque(w, n)
    return 0


cdef class FastPath:
    """Answers ordinary GETATTR/ACCESS/LOOKUP/READLINK/READ and UNSTABLE WRITE
    calls for an NFS3State, or declines."""


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
        self.current_creds = creds_mod.current if state.switch_creds else None
        self.answered = 0
        self.declined = 0
        self.lent_fd = -1
        verf = bytes(state.write_verifier)
        if len(verf) != 8:
            raise ValueError("a write verifier is 8 bytes (RFC 1813 section 3.3.7)")
        memcpy(self.verifier, PyBytes_AS_STRING(verf), 8)
        self.out = Packer()
        self.procs = [_ProcRow() for _ in range(NPROCS)]
        self.clients = {}
        self.bytes_read = 0
        self.bytes_written = 0
        if len(BUCKETS_NS) != NBUCKETS:
            raise ValueError("stats buckets changed: %d, not %d" % (len(BUCKETS_NS), NBUCKETS))
        for i in range(NBUCKETS):
            self.bounds[i] = BUCKETS_NS[i]
        stats.flushers.append(self.flush)

    cdef _Export _export(self, uint32_t eid):
        by_id = self.state.by_id
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
        cdef uint32_t mlen = get_be32(body)
        if mlen > MAX_MACHINE:
            return None
        cdef Py_ssize_t pos = 4 + ((mlen + 3) & ~3)
        if pos + 12 > n:
            return None
        cdef uint32_t uid = get_be32(body + pos)
        cdef uint32_t gid = get_be32(body + pos + 4)
        cdef uint32_t ngids = get_be32(body + pos + 8)
        pos += 12
        if ngids > MAX_GIDS or pos + 4 * <Py_ssize_t>ngids != n:
            return None
        gids = tuple([get_be32(body + pos + 4 * i) for i in range(ngids)])
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
        return self.answer_at(&view[offset], view.shape[0] - offset, peer, mark)

    def answer_lend(self, record, peer):
        """answer() of a TCP call that may lend a large cached READ's data:
        (reply, fd, offset, count), the record mark counting the count bytes
        of fd from offset and their padding, which follow the reply (the
        caller closes fd); a reply alone otherwise; None to decline."""
        cdef const unsigned char[::1] view
        try:
            view = record
        except (TypeError, ValueError, BufferError):
            return None
        if view.shape[0] == 0:
            return None
        r = self.answer_at(&view[0], view.shape[0], peer, True, True)
        if r is None or self.lent_fd < 0:
            return r
        cdef int fd = self.take_lent()
        return r, fd, self.lent_offset, self.lent_count

    cdef object answer_at(self, const unsigned char* d, Py_ssize_t n, peer, bint mark,
                          bint lend=False):
        """answer() of the n bytes of a call at d: the compiled transport's entry
        point (_transport.pyx), which holds the record's bytes, not an object.
        With lend (TCP, and a transport that can send from a file), a cached
        READ larger than read_inline_max is answered too, its data left in
        the file: lent_fd says so (take_lent)."""
        self.lent_fd = -1
        r = self._answer(d, n, peer, self.tcp_maxdata if mark else self.udp_maxdata,
                         lend and mark)
        if r is None:
            if self.lent_fd >= 0:
                close(self.take_lent())
            self.declined += 1
            return None
        self.answered += 1
        # r holds 4 bytes for the record mark, then the reply; nobody else has it yet
        cdef char* w = PyBytes_AS_STRING(r)
        cdef Py_ssize_t size = len(r)
        if mark:
            if self.lent_fd >= 0:     # the data and its XDR padding follow (RFC 4506 section 4.10)
                size += self.lent_count + ((-self.lent_count) & 3)
                self.bytes_read += self.lent_count
            put_be32(<unsigned char*>w, 0x80000000 | <uint32_t>(size - 4))
            return r
        return PyBytes_FromStringAndSize(w + 4, size - 4)

    cdef int take_lent(self) noexcept:
        """The fd of the READ just lent (the caller closes it); none lent after."""
        cdef int fd = self.lent_fd
        self.lent_fd = -1
        return fd

    cdef object _answer(self, const unsigned char* d, Py_ssize_t n, peer, Py_ssize_t maxdata,
                        bint lend):
        """The reply (4 bytes left for the record mark first) as a new bytes, or None."""
        cdef timespec t0, t1
        clock_gettime(CLOCK_MONOTONIC, &t0)
        # call header: xid, CALL, rpcvers 2, prog, vers, proc, cred, verf (RFC 5531 section 9)
        if n < 40 or get_be32(d + 4) != 0 or get_be32(d + 8) != 2:
            return None
        if get_be32(d + 12) != NFS_PROGRAM or get_be32(d + 16) != 3:
            return None
        cdef uint32_t proc = get_be32(d + 20)
        if proc < GETATTR or proc > WRITE or proc == 2:
            return None
        if get_be32(d + 24) != AUTH_SYS:
            return None
        cdef uint32_t clen = get_be32(d + 28)
        if clen > MAX_AUTH or clen < 4 or clen & 3:
            return None
        cdef Py_ssize_t pos = 32 + clen
        if pos + 8 > n or get_be32(d + pos) != 0 or get_be32(d + pos + 4) != 0:
            return None      # only an empty AUTH_NONE verifier is ordinary
        cdef const unsigned char* cred = d + 36   # after the stamp
        cdef Py_ssize_t cred_n = clen - 4
        pos += 8
        # nfs_fh3: as handles.decode_fh accepts it
        if pos + 4 > n:
            return None
        cdef uint32_t fhlen = get_be32(d + pos)
        pos += 4
        cdef fh_t fh
        if fhlen > FH_MAX or pos + fhlen > n or fh_unpack(d + pos, fhlen, &fh) < 0:
            return None
        pos += fhlen
        cdef _Export x = self._export(fh.export_id)
        if x is None or not x.plain:
            return None
        if x.board and (fh.dev != x.fsid32 or not _board_sync(x)):
            return None
        cdef _Caller c = self._caller(x, peer, cred, cred_n)
        if c is None:
            return None
        if proc == WRITE and (c.read_only or x.board):
            return None       # NFS3ERR_ROFS, or a board's copy-up: the general path
        if not x.board and self.current_creds is not None and self.current_creds() != c.want:
            return None      # the general path switches this thread to the caller
        cdef uint32_t requested = 0
        cdef const unsigned char* name = NULL
        cdef uint32_t namelen = 0
        cdef uint64_t roff = 0
        cdef Py_ssize_t count = 0
        cdef const unsigned char* data = NULL
        if proc == WRITE:
            # WRITE3args (RFC 1813 section 3.3.7): only UNSTABLE (a stable one
            # syncs, in the pool), data as long as count, all of it here
            if pos + 20 > n or get_be32(d + pos + 12) != UNSTABLE:
                return None
            roff = get_be64(d + pos)
            count = get_be32(d + pos + 8)
            if get_be32(d + pos + 16) != <uint32_t>count or count > maxdata \
                    or pos + 20 + ((count + 3) & ~3) > n:
                return None
            if roff > MAX_OFFSET - <uint64_t>count:
                return None   # past off_t: NFS3ERR_FBIG from the general path
            data = d + pos + 20
        elif proc == READ:
            if pos + 12 > n:
                return None
            roff = get_be64(d + pos)
            count = get_be32(d + pos + 8)
            if count > maxdata:
                count = maxdata
            if count > self.read_inline_max and not lend:
                return None   # big reads go to the general path and its thread pool
        elif proc == ACCESS:
            if pos + 4 > n:
                return None
            requested = get_be32(d + pos)
        elif proc == LOOKUP:
            if pos + 4 > n:
                return None
            namelen = get_be32(d + pos)
            # the string's padding must be there too (RFC 4506 section 4.11)
            if namelen == 0 or namelen > MAXNAMLEN or pos + 4 + ((namelen + 3) & ~3) > n:
                return None
            name = d + pos + 4
            if memchr(name, b'/', namelen) != NULL or memchr(name, 0, namelen) != NULL:
                return None
            if name[0] == b'.' and (namelen == 1 or (namelen == 2 and name[1] == b'.')):
                return None
        cdef uint64_t ino = fh.ino
        cdef PyObject* known
        if not x.board:
            path = x.cache.lookup(ino)
        elif ino == x.root_ino:
            if fh.nanc:
                return None  # (BoardBackend.find: the root has no ancestors)
            path = b"."
        else:
            known = PyDict_GetItemWithError(x.known, ino)
            if known != NULL:
                path = <object>known
            else:        # learnt by the general path: the backend tells (once per generation)
                try:
                    path = x.board_b.lane_base(ino, x.gen_seen)
                except Exception:    # (as in _board_sync)
                    return None
                if path is False:
                    return None
                if len(x.known) > 262144:
                    x.known.clear()
                x.known[ino] = path      # (None: not the base's own; declined till it moves)
        if path is None:
            return None
        cdef bytes bpath = <bytes?>path
        cdef statx sx, dsx, usx
        cdef int fd
        cdef int rc
        cdef uint32_t real_mode = 0
        applied = None
        if x.board and ino == x.root_ino:
            # the merged root is upper/ seen through its metadata, with the base root's fileid
            if _stat(x.upper_fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &sx) != 0:
                return None
            real_mode = sx.stx_mode
            if not x.root_meta_read:     # (its metadata changes only with the generation)
                x.root_meta = _overlay(x.upper, bpath, &sx)
                x.root_meta_read = True
            elif x.root_meta is not None:
                overlay_statx(&sx, x.root_meta)
            sx.stx_ino = x.root_ino
        elif proc != LOOKUP or ino == x.root_ino:
            if ino == x.root_ino:
                rc = _stat(x.root_fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &sx)
            else:
                rc = _stat(x.root_fd, PyBytes_AS_STRING(bpath), AT_SYMLINK_NOFOLLOW, &sx)
            if rc != 0 or not _names(x, &sx, &fh):
                return None
            real_mode = sx.stx_mode
            applied = _overlay(x, bpath, &sx)
        cdef Packer p = self.out       # reused: the reply leaves as a copy, below
        p.restart()
        out = None
        cdef unsigned char* w = p.extend(28)
        put_be32(w, 0)
        memcpy(w + 4, d, 4)                           # xid
        put_be32(w + 8, 1)                                # REPLY
        put_be32(w + 12, 0)                               # MSG_ACCEPTED
        put_be32(w + 16, 0)                               # verifier AUTH_NONE, empty
        put_be32(w + 20, 0)
        put_be32(w + 24, 0)                               # SUCCESS
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
            if x.checks and not io_allowed_ids(c.uid, c.gid, c.gids, sx.stx_uid,
                                                         sx.stx_gid, sx.stx_mode, R_OK):
                return None   # (VirtfsBackend.check_io) the general path refuses it
            out = self._read(p, x, bpath, &sx, applied, roff, count, lend)
            if out is None:
                return None
        elif proc == WRITE:
            if (sx.stx_mode & S_IFMT) != S_IFREG or (real_mode & S_IFMT) != S_IFREG:
                return None
            if x.checks and not io_allowed_ids(c.uid, c.gid, c.gids, sx.stx_uid,
                                                         sx.stx_gid, sx.stx_mode, W_OK):
                return None   # (VirtfsBackend.check_io) the general path refuses it
            if self._write(p, x, bpath, &sx, applied, roff, data, count) < 0:
                return None
        else:
            # LOOKUP: the directory as the handle names it, then the name in
            # it, in the steps HostPaths.walk takes (_fsstat.lookup_dir, lookup_name)
            if ino == x.root_ino:
                dsx = sx
                fd = x.root_fd
            else:
                fd = lookup_dir(x.root_fd, PyBytes_AS_STRING(bpath), &dsx)
                if fd < 0:
                    return None
                if not _names(x, &dsx, &fh):
                    lookup_done(x.root_fd, fd)
                    return None
                _overlay(x, bpath, &dsx)
            if (dsx.stx_mode & S_IFMT) != S_IFDIR \
                    or x.checks and (not _allowed(c, &dsx, X_OK) or hidden_name(name, namelen)):
                lookup_done(x.root_fd, fd)
                return None
            bname = PyBytes_FromStringAndSize(<const char*>name, namelen)
            if x.board and ino == x.root_ino:
                # the root is upper/ itself: the name must be neither there nor whited out
                if bname in x.whiteouts:
                    return None
                if bname not in x.root_absent:   # (an entry appears only with the generation)
                    if _stat(x.upper_fd, PyBytes_AS_STRING(bname), AT_SYMLINK_NOFOLLOW,
                             &usx) == 0 or errno != ENOENT:
                        return None
                    if len(x.root_absent) < 65536:
                        x.root_absent.add(bname)
            rc = lookup_name(fd, PyBytes_AS_STRING(bname), &sx)
            if rc == 0:
                child = bname if ino == x.root_ino else bpath + b"/" + bname
                if x.board and not _board_learn(x, &sx, child):
                    lookup_done(x.root_fd, fd)
                    return None
                _overlay_child(x, fd, bpath, bname, &sx)
            lookup_done(x.root_fd, fd)
            if rc == ENOENT:
                status = NFS3ERR_NOENT
                p.write_u32(NFS3ERR_NOENT)
                p.write_u32(1)
                _fattr3(p, &dsx, x.fsid)
            elif rc != 0:
                return None
            else:
                if not x.board:
                    x.cache.store(sx.stx_ino, child)
                p.write_u32(NFS3_OK)
                self._put_child_fh(p, x, &sx, ino, &fh)
                p.write_u32(1)
                _fattr3(p, &sx, x.fsid)
                p.write_u32(1)
                _fattr3(p, &dsx, x.fsid)
        if x.board and layer_gen(x.gen_map) != x.gen_seen:
            return None      # the layer changed meanwhile (a sequence lock)
        if out is None:
            out = PyBytes_FromStringAndSize(<const char*>p.bytes_at(), p.size())
        clock_gettime(CLOCK_MONOTONIC, &t1)
        self._count(proc, status == NFS3_OK,
                    (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec),
                    peer[0], n, len(out) - 4 + (self.lent_count if self.lent_fd >= 0 else 0))
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
        stats.bytes_written += self.bytes_written
        self.bytes_written = 0
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

    cdef object _read(self, Packer p, _Export x, bytes path, statx* sx, object applied,
                      uint64_t offset, Py_ssize_t count, bint lend):
        """The whole READ reply from the page cache only (RFC 1813 section 3.3.6):
        the header from p, the data read by the kernel straight into the bytes
        that leave, or with lend, when there is more than read_inline_max of
        it and all of it is cached (_fsstat.all_cached, as the general path
        decides), left in the file for the transport to send (lent_fd).  None
        to decline: a read that would wait for the disk goes to the general
        path and its pool."""
        cdef statx fsx
        cdef int fd = -1
        if x.board:      # a board never moves the base's atimes (where O_NOATIME is allowed)
            fd = openat(x.root_fd, PyBytes_AS_STRING(path),
                        O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOATIME)
        if fd < 0 and (not x.board or errno == EPERM):
            fd = openat(x.root_fd, PyBytes_AS_STRING(path),
                        O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (O_NONBLOCK if x.board else 0))
        if fd < 0:
            return None
        # the object the handle named (HostPaths.open_obj)
        if _stat(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &fsx) != 0 \
                or fsx.stx_ino != sx.stx_ino or statx_btime_ns(&fsx) != statx_btime_ns(sx):
            close(fd)
            return None
        if applied is not None:          # seen as clients see it, as sx is
            overlay_statx(&fsx, applied)
        # what the file holds from offset (a size is an off_t: nothing past that)
        cdef Py_ssize_t want = 0
        if offset < fsx.stx_size:
            want = <Py_ssize_t>min(<uint64_t>count, fsx.stx_size - offset)
        if want > self.read_inline_max and not (lend and all_cached(fd, offset, want)):
            close(fd)
            return None
        p.write_u32(NFS3_OK)
        p.write_u32(1)
        _fattr3(p, &fsx, x.fsid)
        p.write_u64(0)                       # count and eof, known after the read
        p.write_u32(0)                       # the data's length
        cdef Py_ssize_t head = p.size()
        cdef unsigned char* w
        if want > self.read_inline_max:      # lent: the file's pages go to the socket
            out = PyBytes_FromStringAndSize(<const char*>p.bytes_at(), head)
            w = <unsigned char*>PyBytes_AS_STRING(out)
            put_be32(w + head - 12, <uint32_t>want)
            put_be32(w + head - 8, 1 if offset + want >= fsx.stx_size else 0)
            put_be32(w + head - 4, <uint32_t>want)
            self.lent_fd = fd
            self.lent_offset = offset
            self.lent_count = want
            return out
        out = PyBytes_FromStringAndSize(NULL, head + ((want + 3) & ~3))
        w = <unsigned char*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t got = read_data(fd, w + head, want, offset, fsx.stx_size, True)
        close(fd)
        if got < 0:
            return None                      # not (all) in the page cache: the general path
        if got < want:                       # the file shrank meanwhile: a shorter reply
            out = PyBytes_FromStringAndSize(<const char*>w, head + ((got + 3) & ~3))
            w = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(w, p.bytes_at(), head)
        put_be32(w + head - 12, <uint32_t>got)
        put_be32(w + head - 8, 1 if offset + got >= fsx.stx_size else 0)
        put_be32(w + head - 4, <uint32_t>got)
        memset(w + head + got, 0, <size_t>((-got) & 3))
        self.bytes_read += got
        return out

    cdef int _write(self, Packer p, _Export x, bytes path, statx* sx, object applied,
                    uint64_t offset, const unsigned char* data, Py_ssize_t count) except -2:
        """WRITE3resok (RFC 1813 section 3.3.7) of an UNSTABLE write: the data
        goes from the record into the page cache (no disk wait: COMMIT syncs,
        in the pool), the file opened as HostPaths.open_obj opens it.  -1 to
        decline (the general path writes it again, and reports the error)."""
        cdef statx fsx
        cdef int fd = openat(x.root_fd, PyBytes_AS_STRING(path),
                             O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        if fd < 0:
            return -1
        if _stat(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &fsx) != 0 \
                or fsx.stx_ino != sx.stx_ino or statx_btime_ns(&fsx) != statx_btime_ns(sx):
            close(fd)
            return -1
        cdef Py_ssize_t done = 0
        cdef ssize_t k
        with nogil:
            while done < count:
                k = pwrite(fd, data + done, count - done, <off_t>(offset + done))
                if k <= 0:
                    if k < 0 and errno == EINTR:
                        continue
                    break
                done += k
        if done < count or _stat(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, &fsx) != 0:
            close(fd)
            return -1
        close(fd)
        if applied is not None:          # seen as clients see it, as sx is (Virtfs.view)
            overlay_statx(&fsx, applied)
        p.write_u32(NFS3_OK)
        p.write_u32(1)                       # wcc_data: the attributes before, as resolved
        p.write_wcc_attr(sx.stx_size, sx.stx_mtime.tv_sec * 1000000000 + sx.stx_mtime.tv_nsec,
                         sx.stx_ctime.tv_sec * 1000000000 + sx.stx_ctime.tv_nsec)
        p.write_u32(1)
        _fattr3(p, &fsx, x.fsid)
        p.write_u32(<uint32_t>count)
        p.write_u32(UNSTABLE)                # committed
        p.write_fixed(self.verifier, 8)
        self.bytes_written += count
        return 0

    cdef int _put_child_fh(self, Packer p, _Export x, statx* sx, uint64_t dir_ino,
                           const fh_t* dir_fh) except -1:
        """nfs_fh3 of a directory's child."""
        cdef unsigned char anc_be[8 * FH_MAX_ANC]
        return _put_fh(p, x, sx, anc_be, fh_child_anc(anc_be, dir_ino, dir_fh))
