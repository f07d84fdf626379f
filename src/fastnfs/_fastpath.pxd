# C-level interface of fastnfs._fastpath (see the .pyx for what each holds).

cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t

from fastnfs._fhcache cimport FHCache
from fastnfs._fsstat cimport statx
from fastnfs._handles cimport fh_t
from fastnfs._xdr cimport Packer
from fastnfs.virtfs._meta cimport MetaCache


@cython.final
cdef class _Export:
    cdef object export          # the fs.Export
    cdef FHCache cache
    cdef int root_fd
    cdef uint64_t root_ino
    cdef uint64_t fsid
    cdef uint32_t export_id
    cdef bint plain             # no single-user view (that one needs the caller per call)
    cdef MetaCache meta         # virtfs: the metadata cache; None on a plain export
    cdef object no_meta         # virtfs: virtfs.store.NO_META ("this file says nothing")
    cdef object read_meta       # virtfs: the backend's reader on a miss (overlay.Virtfs.meta)
    cdef bint checks            # the server checks permissions itself (virtfs, boards)
    # a board (backends.boards): only objects that are the base's own, while the
    # layer's generation stays where it was when they were found so
    cdef bint board
    cdef object board_b         # the BoardBackend (lane_layer)
    cdef object layer           # the boards.Layer the fields below come from
    cdef void* gen_map          # its generation file, mapped (a sequence lock)
    cdef uint64_t gen_seen
    cdef uint32_t fsid32        # the dev field of the board's handles
    cdef int upper_fd           # a dup of its upper/ (the merged root's own directory)
    cdef _Export upper          # upper/ as a virtfs tree: the root's attributes
    cdef object whiteouts       # its whiteouts (merged paths)
    cdef object attrs           # its metadata-only changes (fileid -> attributes)
    cdef dict known             # ino -> base path of an object that is the base's own
    cdef set root_absent        # names not in upper/ (the merged root)
    cdef bint root_meta_read    # root_meta holds what upper/'s metadata says (None: nothing)
    cdef object root_meta


@cython.final
cdef class _Caller:
    cdef uint32_t uid
    cdef uint32_t gid
    cdef tuple gids
    cdef object want            # (uid, gid, gids) as creds.current() reports it
    cdef bint read_only


@cython.final
cdef class _ProcRow:
    cdef uint64_t calls, errors
    cdef int64_t sum_ns
    cdef uint64_t buckets[17]       # stats.BUCKETS and the overflow


@cython.final
cdef class _ClientRow:
    cdef uint64_t calls, nin, nout


cdef class FastPath:
    cdef object state
    cdef object stats
    cdef object by_id_seen          # state._by_id when the tables below were made
    cdef dict exports               # export id -> _Export
    cdef dict admitted              # (export id, host, privileged, cred body) -> _Caller
    cdef list procs                 # _ProcRow per procedure number
    cdef dict clients               # host -> _ClientRow
    cdef uint64_t bytes_read
    cdef uint64_t bytes_written
    cdef unsigned char verifier[8]  # WRITE's writeverf3 (the server's, NFS3State.write_verifier)
    cdef Packer out                 # the reply is built here, then copied out
    cdef int64_t bounds[16]         # stats.BUCKETS in ns
    cdef object current_creds       # creds.current, when the server switches credentials
    cdef Py_ssize_t tcp_maxdata, udp_maxdata, read_inline_max
    cdef public Py_ssize_t answered
    cdef public Py_ssize_t declined
    # a READ answered with lend: its data is count bytes of the open file fd
    # from offset, for the transport to send after the reply (then close fd)
    cdef readonly int lent_fd
    cdef readonly uint64_t lent_offset
    cdef readonly Py_ssize_t lent_count

    cdef _Export _export(self, uint32_t eid)
    cdef _Caller _caller(self, _Export x, peer, const unsigned char* body, Py_ssize_t n)
    cdef object answer_at(self, const unsigned char* d, Py_ssize_t n, peer, bint mark,
                          bint lend=*)
    cdef int take_lent(self) noexcept
    cdef object _answer(self, const unsigned char* d, Py_ssize_t n, peer, Py_ssize_t maxdata,
                        bint lend)
    cdef int _count(self, uint32_t proc, bint ok, int64_t ns, host, Py_ssize_t nin,
                    Py_ssize_t nout) except -1
    cdef int _readlink(self, Packer p, _Export x, bytes path, statx* sx) except -2
    cdef object _read(self, Packer p, _Export x, bytes path, statx* sx, object applied,
                      uint64_t offset, Py_ssize_t count, bint lend)
    cdef int _write(self, Packer p, _Export x, bytes path, statx* sx, object applied,
                    uint64_t offset, const unsigned char* data, Py_ssize_t count) except -2
    cdef int _put_child_fh(self, Packer p, _Export x, statx* sx, uint64_t dir_ino,
                           const fh_t* dir_fh) except -1
