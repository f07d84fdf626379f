# cython: language_level=3
"""Per-call hot paths in Cython: the RPC call header with its AUTH_SYS
credential (RFC 5531 section 9 and appendix A), fattr3 from a stat result
(RFC 1813 section 2.6), and reading a reply's status back.

Plain-Python twins: rpc.decode_call, nfs3.types.put_fattr3, Packer.u32_at-less
code in dispatch (see rpc.py and nfs3/types.py, which select these unless
FASTNFS_PURE=1).
"""

from libc.stdint cimport uint32_t, uint64_t, int64_t

from fastnfs._xdr cimport Packer, Unpacker, ftype3

from fastnfs.errors import XdrError
from fastnfs.rpc_msg import CallHeader, Cred, RpcReject, CRED_NONE, AUTH_NONE, AUTH_SYS
from fastnfs.rpc_msg import AUTH_BADCRED, AUTH_BADVERF, RPC_VERSION, MAX_AUTH_BYTES

cdef extern from "<sys/sysmacros.h>" nogil:
    unsigned int c_major "major"(unsigned long long dev)
    unsigned int c_minor "minor"(unsigned long long dev)



cdef object _authsys(Unpacker a):
    cdef uint32_t uid, gid, n, i
    try:
        a.read_u32()                       # stamp
        machine = a.read_opaque(255)
        uid = a.read_u32()
        gid = a.read_u32()
        n = a.read_u32()
        if n > 16:
            raise RpcReject("auth", AUTH_BADCRED)
        gids = tuple([a.read_u32() for i in range(n)])
    except XdrError:
        raise RpcReject("auth", AUTH_BADCRED) from None
    if a._pos != a._end:
        raise RpcReject("auth", AUTH_BADCRED)
    return Cred(AUTH_SYS, uid, gid, gids, machine)


def decode_call(Unpacker u, uint32_t xid):
    """The call header after xid and msg_type; RpcReject or XdrError on failure."""
    cdef uint32_t rpcvers = u.read_u32()
    if rpcvers != RPC_VERSION:
        raise RpcReject("rpc_mismatch", RPC_VERSION, RPC_VERSION)
    cdef uint32_t prog = u.read_u32()
    cdef uint32_t vers = u.read_u32()
    cdef uint32_t proc = u.read_u32()
    cdef uint32_t flavor = u.read_u32()
    cdef uint32_t n = u.read_u32()
    if n > MAX_AUTH_BYTES:
        raise XdrError("credential of %d bytes" % n)
    cdef Py_ssize_t start = u.take((<uint64_t>n + 3) & ~(<uint64_t>3))
    cdef uint32_t vflavor = u.read_u32()
    cdef uint32_t vn = u.read_u32()
    if vn > MAX_AUTH_BYTES:
        raise XdrError("verifier of %d bytes" % vn)
    u.take((<uint64_t>vn + 3) & ~(<uint64_t>3))
    if flavor == AUTH_SYS:
        a = Unpacker.__new__(Unpacker)
        a.__init__(u._src, start, start + n)
        cred = _authsys(a)
    elif flavor == AUTH_NONE:
        cred = CRED_NONE
    else:
        raise RpcReject("auth", AUTH_BADCRED)
    if vflavor != AUTH_NONE:
        raise RpcReject("auth", AUTH_BADVERF)
    return CallHeader(xid, prog, vers, proc, cred)


def put_fattr3(Packer p, st, uint64_t fsid):
    """fattr3 from a stat-like object; mode carries permission bits only."""
    cdef uint32_t mode = st.st_mode
    cdef unsigned long long rdev = st.st_rdev
    p.write_fattr3(ftype3(mode), mode & 0o7777, st.st_nlink, <uint32_t>(st.st_uid & 0xFFFFFFFF),
                   <uint32_t>(st.st_gid & 0xFFFFFFFF), st.st_size, st.st_blocks * 512,
                   c_major(rdev), c_minor(rdev), fsid, st.st_ino,
                   st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


def zeros_at(Packer p, Py_ssize_t off, Py_ssize_t n):
    """Are the n bytes at off all zero? (accept_stat SUCCESS and status OK)"""
    cdef Py_ssize_t i
    if off < 0 or off + n > p._len:
        return False
    for i in range(n):
        if p._data[off + i]:
            return False
    return True
