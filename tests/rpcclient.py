"""A small, independent ONC RPC (RFC 5531) + NFSv3 (RFC 1813) client for tests.

All encoding and decoding goes through the xdrlib3 package, never through
fastnfs's own XDR code, so the tests hold the server against an independent
implementation of the wire format.

Layers:

* ``RpcClient`` - one TCP connection (record marking, RFC 5531 section 11)
  or one UDP socket; builds calls with AUTH_NONE or AUTH_SYS and parses
  replies into ``Reply`` objects.  Raw bytes, multi-fragment records and
  pipelined calls are possible for protocol tests.
* ``Nfs3`` - thin helpers, one per NFSv3 procedure, each returning
  ``(nfsstat3, dict of decoded fields)``; plus MOUNT (RFC 1813 appendix I).
  Every helper checks that the reply body was consumed exactly.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import struct

from xdrlib3 import Packer, Unpacker

# -- RFC 5531 constants ------------------------------------------------------
CALL, REPLY = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR = range(6)
RPC_MISMATCH, AUTH_ERROR = 0, 1
(AUTH_OK, AUTH_BADCRED, AUTH_REJECTEDCRED, AUTH_BADVERF, AUTH_REJECTEDVERF,
 AUTH_TOOWEAK) = range(6)
AUTH_NONE, AUTH_SYS, AUTH_SHORT, AUTH_DH = 0, 1, 2, 3
LAST_FRAGMENT = 0x80000000

# -- RFC 1813 constants ------------------------------------------------------
NFS_PROGRAM, NFS_V3 = 100003, 3
MOUNT_PROGRAM = 100005

NFS3_OK = 0
NFS3ERR_PERM = 1
NFS3ERR_NOENT = 2
NFS3ERR_IO = 5
NFS3ERR_NXIO = 6
NFS3ERR_ACCES = 13
NFS3ERR_EXIST = 17
NFS3ERR_XDEV = 18
NFS3ERR_NODEV = 19
NFS3ERR_NOTDIR = 20
NFS3ERR_ISDIR = 21
NFS3ERR_INVAL = 22
NFS3ERR_FBIG = 27
NFS3ERR_NOSPC = 28
NFS3ERR_ROFS = 30
NFS3ERR_MLINK = 31
NFS3ERR_NAMETOOLONG = 63
NFS3ERR_NOTEMPTY = 66
NFS3ERR_DQUOT = 69
NFS3ERR_STALE = 70
NFS3ERR_BADHANDLE = 10001
NFS3ERR_NOT_SYNC = 10002
NFS3ERR_BAD_COOKIE = 10003
NFS3ERR_NOTSUPP = 10004
NFS3ERR_TOOSMALL = 10005
NFS3ERR_SERVERFAULT = 10006
NFS3ERR_BADTYPE = 10007
NFS3ERR_JUKEBOX = 10008

NF3REG, NF3DIR, NF3BLK, NF3CHR, NF3LNK, NF3SOCK, NF3FIFO = range(1, 8)
UNSTABLE, DATA_SYNC, FILE_SYNC = range(3)
UNCHECKED, GUARDED, EXCLUSIVE = range(3)
DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME = range(3)
ACCESS3_READ, ACCESS3_LOOKUP, ACCESS3_MODIFY = 0x01, 0x02, 0x04
ACCESS3_EXTEND, ACCESS3_DELETE, ACCESS3_EXECUTE = 0x08, 0x10, 0x20
ACCESS3_ALL = 0x3F

(NULL, GETATTR, SETATTR, LOOKUP, ACCESS, READLINK, READ, WRITE, CREATE, MKDIR, SYMLINK,
 MKNOD, REMOVE, RMDIR, RENAME, LINK, READDIR, READDIRPLUS, FSSTAT, FSINFO, PATHCONF,
 COMMIT) = range(22)

MNT3_OK = 0
MOUNTPROC_NULL, MOUNTPROC_MNT, MOUNTPROC_DUMP, MOUNTPROC_UMNT = 0, 1, 2, 3

_xids = itertools.count(random.randrange(1, 1 << 30))


def new_xid() -> int:
    return next(_xids) & 0xFFFFFFFF


class RpcError(Exception):
    """A reply that is not MSG_ACCEPTED/SUCCESS where one was required."""

    def __init__(self, reply):
        super().__init__(repr(reply))
        self.reply = reply


class Timeout(Exception):
    pass


# -- credentials -------------------------------------------------------------
class AuthSys:
    """authsys_parms (RFC 5531 appendix A)."""

    def __init__(self, uid: int = 0, gid: int = 0, gids=(), machine: bytes = b"testclient",
                 stamp: int = 0):
        self.uid, self.gid, self.gids, self.machine, self.stamp = uid, gid, list(gids), machine, stamp

    def body(self) -> bytes:
        p = Packer()
        p.pack_uint(self.stamp)
        p.pack_string(self.machine)
        p.pack_uint(self.uid)
        p.pack_uint(self.gid)
        p.pack_uint(len(self.gids))
        for g in self.gids:
            p.pack_uint(g)
        return p.get_buffer()

    def opaque_auth(self):
        return AUTH_SYS, self.body()


def default_cred() -> AuthSys:
    return AuthSys(os.getuid(), os.getgid())


def call_header(xid: int, prog: int, vers: int, proc: int, cred=None,
                verf=(AUTH_NONE, b""), rpcvers: int = 2, msg_type: int = CALL) -> bytes:
    """The call header (RFC 5531 section 9, call_body).

    cred: None for AUTH_NONE, an AuthSys, or a raw (flavor, body bytes) pair.
    """
    if cred is None:
        cred = (AUTH_NONE, b"")
    elif isinstance(cred, AuthSys):
        cred = cred.opaque_auth()
    p = Packer()
    p.pack_uint(xid)
    p.pack_enum(msg_type)
    p.pack_uint(rpcvers)
    p.pack_uint(prog)
    p.pack_uint(vers)
    p.pack_uint(proc)
    p.pack_enum(cred[0])
    p.pack_opaque(cred[1])
    p.pack_enum(verf[0])
    p.pack_opaque(verf[1])
    return p.get_buffer()


# -- replies -----------------------------------------------------------------
class Reply:
    """A parsed rpc_msg reply (RFC 5531 section 9, reply_body)."""

    def __init__(self, data: bytes, addr=None):
        self.raw = data
        self.addr = addr
        self.accept_stat = self.reject_stat = self.auth_stat = None
        self.low = self.high = None
        self.verf = None
        u = Unpacker(data)
        self.xid = u.unpack_uint()
        self.msg_type = u.unpack_enum()
        if self.msg_type != REPLY:
            raise ValueError("not a reply: msg_type %d" % self.msg_type)
        self.reply_stat = u.unpack_enum()
        if self.reply_stat == MSG_ACCEPTED:
            self.verf = (u.unpack_enum(), u.unpack_opaque())
            self.accept_stat = u.unpack_enum()
            if self.accept_stat == PROG_MISMATCH:
                self.low = u.unpack_uint()
                self.high = u.unpack_uint()
        elif self.reply_stat == MSG_DENIED:
            self.reject_stat = u.unpack_enum()
            if self.reject_stat == RPC_MISMATCH:
                self.low = u.unpack_uint()
                self.high = u.unpack_uint()
            elif self.reject_stat == AUTH_ERROR:
                self.auth_stat = u.unpack_enum()
            else:
                raise ValueError("bad reject_stat %d" % self.reject_stat)
        else:
            raise ValueError("bad reply_stat %d" % self.reply_stat)
        self.body = u  # positioned at the procedure's results (SUCCESS only)

    @property
    def ok(self) -> bool:
        return self.reply_stat == MSG_ACCEPTED and self.accept_stat == SUCCESS

    def __repr__(self):
        return ("Reply(xid=%#x reply_stat=%s accept_stat=%s reject_stat=%s auth_stat=%s "
                "low=%s high=%s)" % (self.xid, self.reply_stat, self.accept_stat,
                                     self.reject_stat, self.auth_stat, self.low, self.high))


# -- transport ---------------------------------------------------------------
class RpcClient:
    """One TCP connection or one UDP socket to host:port (from source, an
    (address, port) pair, if given)."""

    def __init__(self, port: int, host: str = "127.0.0.1", proto: str = "tcp",
                 timeout: float = 5.0, cred="default", source=None):
        self.host, self.port, self.proto, self.timeout = host, port, proto, timeout
        self.cred = default_cred() if cred == "default" else cred
        # host: a name, an IPv4 literal or an IPv6 literal ("::1", no brackets)
        family, _, _, _, self.addr = socket.getaddrinfo(
            host, port, 0, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)[0]
        if proto == "tcp":
            self.sock = socket.create_connection((host, port), timeout=timeout,
                                                 source_address=source)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.bind(source or ("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            self.sock.settimeout(timeout)
        self._buf = b""
        self._pending: dict = {}

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # sending
    def send_raw(self, data: bytes) -> None:
        if self.proto == "tcp":
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.addr)

    @staticmethod
    def frame(msg: bytes, sizes=None) -> bytes:
        """Record-mark msg (RFC 5531 section 11); sizes splits it into fragments.

        sizes lists the length of every fragment but the last, which takes the
        rest; a 0 makes an empty fragment.
        """
        out = []
        pos = 0
        for n in sizes or ():
            out.append(struct.pack(">I", n) + msg[pos:pos + n])
            pos += n
        rest = msg[pos:]
        out.append(struct.pack(">I", LAST_FRAGMENT | len(rest)) + rest)
        return b"".join(out)

    def send_msg(self, msg: bytes, sizes=None) -> None:
        self.send_raw(self.frame(msg, sizes) if self.proto == "tcp" else msg)

    def build(self, prog, vers, proc, args: bytes = b"", xid=None, cred="default",
              verf=(AUTH_NONE, b""), rpcvers=2) -> tuple:
        xid = new_xid() if xid is None else xid
        cred = self.cred if cred == "default" else cred
        return xid, call_header(xid, prog, vers, proc, cred, verf, rpcvers) + args

    def send_call(self, prog, vers, proc, args: bytes = b"", **kw) -> int:
        sizes = kw.pop("sizes", None)
        xid, msg = self.build(prog, vers, proc, args, **kw)
        self.send_msg(msg, sizes)
        return xid

    # receiving
    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except socket.timeout:
                raise Timeout("no reply within %.1fs" % self.timeout) from None
            if not chunk:
                raise ConnectionError("connection closed by server")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def recv_msg(self):
        """The next whole record (TCP) or datagram (UDP) as (bytes, addr)."""
        if self.proto == "udp":
            try:
                return self.sock.recvfrom(1 << 17)
            except socket.timeout:
                raise Timeout("no reply within %.1fs" % self.timeout) from None
        parts = []
        while True:
            (mark,) = struct.unpack(">I", self._recv_exact(4))
            parts.append(self._recv_exact(mark & 0x7FFFFFFF))
            if mark & LAST_FRAGMENT:
                return b"".join(parts), None

    def recv_reply(self, xid=None) -> Reply:
        """The reply to xid (or the next reply); others are kept for later."""
        if xid is not None and xid in self._pending:
            return self._pending.pop(xid)
        while True:
            data, addr = self.recv_msg()
            r = Reply(data, addr)
            if xid is None or r.xid == xid:
                return r
            self._pending[r.xid] = r

    def call(self, prog, vers, proc, args: bytes = b"", **kw) -> Reply:
        xid = self.send_call(prog, vers, proc, args, **kw)
        return self.recv_reply(xid)

    def null(self, prog=NFS_PROGRAM, vers=NFS_V3) -> Reply:
        return self.call(prog, vers, 0)

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes (or resets) this TCP connection in time."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)


# -- XDR helpers for RFC 1813 types --------------------------------------------
def _b(name) -> bytes:
    return name.encode() if isinstance(name, str) else name


def pack_fh(p: Packer, fh: bytes) -> None:
    p.pack_opaque(fh)


def pack_diropargs(p: Packer, dfh: bytes, name) -> None:
    p.pack_opaque(dfh)
    p.pack_string(_b(name))


def pack_settime(p: Packer, t) -> None:
    if t is None:
        p.pack_enum(DONT_CHANGE)
    elif t == "server":
        p.pack_enum(SET_TO_SERVER_TIME)
    else:
        p.pack_enum(SET_TO_CLIENT_TIME)
        p.pack_uint(t[0])
        p.pack_uint(t[1])


def pack_sattr(p: Packer, mode=None, uid=None, gid=None, size=None, atime=None, mtime=None):
    """sattr3 (RFC 1813 section 2.6); times: None, "server" or (sec, nsec)."""
    for v in (mode, uid, gid):
        p.pack_bool(v is not None)
        if v is not None:
            p.pack_uint(v)
    p.pack_bool(size is not None)
    if size is not None:
        p.pack_uhyper(size)
    pack_settime(p, atime)
    pack_settime(p, mtime)


FATTR_FIELDS = ("type", "mode", "nlink", "uid", "gid", "size", "used", "rdev", "fsid",
                "fileid", "atime", "mtime", "ctime")


def unpack_fattr(u: Unpacker) -> dict:
    a = {"type": u.unpack_enum(), "mode": u.unpack_uint(), "nlink": u.unpack_uint(),
         "uid": u.unpack_uint(), "gid": u.unpack_uint(), "size": u.unpack_uhyper(),
         "used": u.unpack_uhyper(), "rdev": (u.unpack_uint(), u.unpack_uint()),
         "fsid": u.unpack_uhyper(), "fileid": u.unpack_uhyper()}
    for t in ("atime", "mtime", "ctime"):
        a[t] = (u.unpack_uint(), u.unpack_uint())
    return a


def unpack_post_op_attr(u: Unpacker):
    return unpack_fattr(u) if u.unpack_bool() else None


def unpack_pre_op_attr(u: Unpacker):
    if not u.unpack_bool():
        return None
    return {"size": u.unpack_uhyper(), "mtime": (u.unpack_uint(), u.unpack_uint()),
            "ctime": (u.unpack_uint(), u.unpack_uint())}


def unpack_wcc(u: Unpacker) -> dict:
    return {"before": unpack_pre_op_attr(u), "after": unpack_post_op_attr(u)}


def unpack_post_op_fh(u: Unpacker):
    return u.unpack_opaque() if u.unpack_bool() else None


class Nfs3:
    """NFSv3 and MOUNT procedures over an RpcClient; each returns (status, fields)."""

    def __init__(self, client: RpcClient):
        self.c = client

    @classmethod
    def connect(cls, port: int, proto: str = "tcp", **kw) -> "Nfs3":
        return cls(RpcClient(port, proto=proto, **kw))

    def close(self):
        self.c.close()

    def _call(self, proc: int, args: bytes, prog=NFS_PROGRAM, vers=NFS_V3) -> Unpacker:
        r = self.c.call(prog, vers, proc, args)
        if not r.ok:
            raise RpcError(r)
        return r.body

    @staticmethod
    def _done(u: Unpacker) -> None:
        u.done()  # raises if the server sent bytes beyond the result

    # -- MOUNT (RFC 1813 appendix I) --
    def mnt(self, path, vers: int = 3):
        p = Packer()
        p.pack_string(_b(path))
        u = self._call(MOUNTPROC_MNT, p.get_buffer(), MOUNT_PROGRAM, vers)
        st = u.unpack_uint()
        out = {}
        if st == MNT3_OK:
            if vers == 3:
                out["fh"] = u.unpack_opaque()
                out["flavors"] = u.unpack_array(u.unpack_uint)
            else:
                out["fh"] = u.unpack_fopaque(32)
        self._done(u)
        return st, out

    def mount(self, path) -> bytes:
        st, out = self.mnt(path)
        assert st == MNT3_OK, "MNT %r failed: %d" % (path, st)
        return out["fh"]

    # -- NFSv3 (RFC 1813 section 3.3) --
    def null(self):
        u = self._call(NULL, b"")
        self._done(u)
        return NFS3_OK, {}

    def getattr(self, fh):
        p = Packer()
        pack_fh(p, fh)
        u = self._call(GETATTR, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_fattr(u)} if st == NFS3_OK else {}
        self._done(u)
        return st, out

    def setattr(self, fh, guard=None, **sattr):
        p = Packer()
        pack_fh(p, fh)
        pack_sattr(p, **sattr)
        p.pack_bool(guard is not None)
        if guard is not None:
            p.pack_uint(guard[0])
            p.pack_uint(guard[1])
        u = self._call(SETATTR, p.get_buffer())
        st = u.unpack_uint()
        out = {"wcc": unpack_wcc(u)}
        self._done(u)
        return st, out

    def lookup(self, dfh, name):
        p = Packer()
        pack_diropargs(p, dfh, name)
        u = self._call(LOOKUP, p.get_buffer())
        st = u.unpack_uint()
        out = {}
        if st == NFS3_OK:
            out["fh"] = u.unpack_opaque()
            out["attrs"] = unpack_post_op_attr(u)
        out["dir_attrs"] = unpack_post_op_attr(u)
        self._done(u)
        return st, out

    def access(self, fh, mask=ACCESS3_ALL):
        p = Packer()
        pack_fh(p, fh)
        p.pack_uint(mask)
        u = self._call(ACCESS, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            out["access"] = u.unpack_uint()
        self._done(u)
        return st, out

    def readlink(self, fh):
        p = Packer()
        pack_fh(p, fh)
        u = self._call(READLINK, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            out["data"] = u.unpack_string()
        self._done(u)
        return st, out

    def read(self, fh, offset: int, count: int):
        p = Packer()
        pack_fh(p, fh)
        p.pack_uhyper(offset)
        p.pack_uint(count)
        u = self._call(READ, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            out["count"] = u.unpack_uint()
            out["eof"] = u.unpack_bool()
            out["data"] = u.unpack_opaque()
        self._done(u)
        return st, out

    def write(self, fh, offset: int, data: bytes, stable=FILE_SYNC, count=None):
        p = Packer()
        pack_fh(p, fh)
        p.pack_uhyper(offset)
        p.pack_uint(len(data) if count is None else count)
        p.pack_enum(stable)
        p.pack_opaque(data)
        u = self._call(WRITE, p.get_buffer())
        st = u.unpack_uint()
        out = {"wcc": unpack_wcc(u)}
        if st == NFS3_OK:
            out["count"] = u.unpack_uint()
            out["committed"] = u.unpack_enum()
            out["verf"] = u.unpack_fopaque(8)
        self._done(u)
        return st, out

    def _diropres(self, u: Unpacker):
        st = u.unpack_uint()
        out = {}
        if st == NFS3_OK:
            out["fh"] = unpack_post_op_fh(u)
            out["attrs"] = unpack_post_op_attr(u)
        out["dir_wcc"] = unpack_wcc(u)
        self._done(u)
        return st, out

    def create(self, dfh, name, how=UNCHECKED, verf: bytes = b"\0" * 8, **sattr):
        p = Packer()
        pack_diropargs(p, dfh, name)
        p.pack_enum(how)
        if how == EXCLUSIVE:
            p.pack_fopaque(8, verf)
        else:
            pack_sattr(p, **sattr)
        return self._diropres(self._call(CREATE, p.get_buffer()))

    def create_args(self, dfh, name, how=GUARDED, **sattr) -> bytes:
        p = Packer()
        pack_diropargs(p, dfh, name)
        p.pack_enum(how)
        pack_sattr(p, **sattr)
        return p.get_buffer()

    def mkdir(self, dfh, name, **sattr):
        p = Packer()
        pack_diropargs(p, dfh, name)
        pack_sattr(p, **sattr)
        return self._diropres(self._call(MKDIR, p.get_buffer()))

    def symlink(self, dfh, name, target, **sattr):
        p = Packer()
        pack_diropargs(p, dfh, name)
        pack_sattr(p, **sattr)
        p.pack_string(_b(target))
        return self._diropres(self._call(SYMLINK, p.get_buffer()))

    def mknod(self, dfh, name, ftype, rdev=(0, 0), **sattr):
        p = Packer()
        pack_diropargs(p, dfh, name)
        p.pack_enum(ftype)
        if ftype in (NF3CHR, NF3BLK):
            pack_sattr(p, **sattr)
            p.pack_uint(rdev[0])
            p.pack_uint(rdev[1])
        elif ftype in (NF3SOCK, NF3FIFO):
            pack_sattr(p, **sattr)
        return self._diropres(self._call(MKNOD, p.get_buffer()))

    def _wccres(self, proc, args):
        u = self._call(proc, args)
        st = u.unpack_uint()
        out = {"dir_wcc": unpack_wcc(u)}
        self._done(u)
        return st, out

    def remove(self, dfh, name):
        p = Packer()
        pack_diropargs(p, dfh, name)
        return self._wccres(REMOVE, p.get_buffer())

    def rmdir(self, dfh, name):
        p = Packer()
        pack_diropargs(p, dfh, name)
        return self._wccres(RMDIR, p.get_buffer())

    def rename(self, fdfh, fname, tdfh, tname):
        p = Packer()
        pack_diropargs(p, fdfh, fname)
        pack_diropargs(p, tdfh, tname)
        u = self._call(RENAME, p.get_buffer())
        st = u.unpack_uint()
        out = {"from_wcc": unpack_wcc(u), "to_wcc": unpack_wcc(u)}
        self._done(u)
        return st, out

    def link(self, fh, dfh, name):
        p = Packer()
        pack_fh(p, fh)
        pack_diropargs(p, dfh, name)
        u = self._call(LINK, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u), "dir_wcc": unpack_wcc(u)}
        self._done(u)
        return st, out

    def readdir(self, fh, cookie=0, verf=b"\0" * 8, count=4096):
        p = Packer()
        pack_fh(p, fh)
        p.pack_uhyper(cookie)
        p.pack_fopaque(8, verf)
        p.pack_uint(count)
        u = self._call(READDIR, p.get_buffer())
        st = u.unpack_uint()
        out = {"dir_attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            out["verf"] = u.unpack_fopaque(8)
            entries = []
            while u.unpack_bool():
                entries.append({"fileid": u.unpack_uhyper(), "name": u.unpack_string(),
                                "cookie": u.unpack_uhyper()})
            out["entries"] = entries
            out["eof"] = u.unpack_bool()
        self._done(u)
        return st, out

    def readdirplus(self, fh, cookie=0, verf=b"\0" * 8, dircount=4096, maxcount=32768):
        p = Packer()
        pack_fh(p, fh)
        p.pack_uhyper(cookie)
        p.pack_fopaque(8, verf)
        p.pack_uint(dircount)
        p.pack_uint(maxcount)
        u = self._call(READDIRPLUS, p.get_buffer())
        st = u.unpack_uint()
        out = {"dir_attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            out["verf"] = u.unpack_fopaque(8)
            entries = []
            while u.unpack_bool():
                entries.append({"fileid": u.unpack_uhyper(), "name": u.unpack_string(),
                                "cookie": u.unpack_uhyper(), "attrs": unpack_post_op_attr(u),
                                "fh": unpack_post_op_fh(u)})
            out["entries"] = entries
            out["eof"] = u.unpack_bool()
        self._done(u)
        return st, out

    def fsstat(self, fh):
        p = Packer()
        pack_fh(p, fh)
        u = self._call(FSSTAT, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            for k in ("tbytes", "fbytes", "abytes", "tfiles", "ffiles", "afiles"):
                out[k] = u.unpack_uhyper()
            out["invarsec"] = u.unpack_uint()
        self._done(u)
        return st, out

    def fsinfo(self, fh):
        p = Packer()
        pack_fh(p, fh)
        u = self._call(FSINFO, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            for k in ("rtmax", "rtpref", "rtmult", "wtmax", "wtpref", "wtmult", "dtpref"):
                out[k] = u.unpack_uint()
            out["maxfilesize"] = u.unpack_uhyper()
            out["time_delta"] = (u.unpack_uint(), u.unpack_uint())
            out["properties"] = u.unpack_uint()
        self._done(u)
        return st, out

    def pathconf(self, fh):
        p = Packer()
        pack_fh(p, fh)
        u = self._call(PATHCONF, p.get_buffer())
        st = u.unpack_uint()
        out = {"attrs": unpack_post_op_attr(u)}
        if st == NFS3_OK:
            out["linkmax"] = u.unpack_uint()
            out["name_max"] = u.unpack_uint()
            for k in ("no_trunc", "chown_restricted", "case_insensitive", "case_preserving"):
                out[k] = u.unpack_bool()
        self._done(u)
        return st, out

    def commit(self, fh, offset=0, count=0):
        p = Packer()
        pack_fh(p, fh)
        p.pack_uhyper(offset)
        p.pack_uint(count)
        u = self._call(COMMIT, p.get_buffer())
        st = u.unpack_uint()
        out = {"wcc": unpack_wcc(u)}
        if st == NFS3_OK:
            out["verf"] = u.unpack_fopaque(8)
        self._done(u)
        return st, out

    # -- conveniences for tests --
    def readdir_all(self, fh, count=4096, plus=False, between=None):
        """Every entry of a directory, page by page; between(page_no) runs between pages."""
        cookie, verf, out, page = 0, b"\0" * 8, [], 0
        while True:
            if plus:
                st, r = self.readdirplus(fh, cookie, verf, dircount=count, maxcount=count * 4)
            else:
                st, r = self.readdir(fh, cookie, verf, count)
            assert st == NFS3_OK, st
            out.extend(r["entries"])
            if r["eof"]:
                return out
            assert r["entries"], "a page with no entries and no eof"
            cookie, verf = r["entries"][-1]["cookie"], r["verf"]
            page += 1
            if between is not None:
                between(page)


def fh_fields(fh: bytes) -> dict:
    """Decode fastnfs's handle layout (see handles.py) for forging tests."""
    ver, nanc, res, eid, ino, dev, gen = struct.unpack(">BBHIQII", fh[:24])
    return {"ver": ver, "nanc": nanc, "reserved": res, "export_id": eid, "ino": ino,
            "dev": dev, "gen": gen}
