"""ONC RPC version 2 (RFC 5531): call headers, credentials and replies."""

from __future__ import annotations

import os

from .xdr import Packer, Unpacker, XdrError

RPC_VERSION = 2

# msg_type (RFC 5531 section 9)
CALL = 0
REPLY = 1

# reply_stat
MSG_ACCEPTED = 0
MSG_DENIED = 1

# accept_stat
SUCCESS = 0
PROG_UNAVAIL = 1
PROG_MISMATCH = 2
PROC_UNAVAIL = 3
GARBAGE_ARGS = 4
SYSTEM_ERR = 5

# reject_stat
RPC_MISMATCH = 0
AUTH_ERROR = 1

# auth_stat
AUTH_OK = 0
AUTH_BADCRED = 1
AUTH_REJECTEDCRED = 2
AUTH_BADVERF = 3
AUTH_REJECTEDVERF = 4
AUTH_TOOWEAK = 5
AUTH_INVALIDRESP = 6
AUTH_FAILED = 7

# auth_flavor
AUTH_NONE = 0
AUTH_SYS = 1  # a.k.a. AUTH_UNIX
AUTH_SHORT = 2

MAX_AUTH_BYTES = 400      # opaque_auth body<400>
MAX_MACHINE_NAME = 255    # authsys_parms machinename<255>
MAX_GIDS = 16             # authsys_parms gids<16>


class RpcReject(Exception):
    """A call that is answered with MSG_DENIED or a non-SUCCESS accept_stat."""

    def __init__(self, kind: str, *values: int):
        super().__init__(kind, *values)
        self.kind = kind
        self.values = values


class Cred:
    """The caller's identity after AUTH_NONE / AUTH_SYS decoding."""

    __slots__ = ("flavor", "uid", "gid", "gids", "machine")

    def __init__(self, flavor: int, uid: int = 65534, gid: int = 65534,
                 gids: tuple = (), machine: bytes = b""):
        self.flavor = flavor
        self.uid = uid
        self.gid = gid
        self.gids = gids
        self.machine = machine

    def __repr__(self) -> str:
        return "Cred(flavor=%d, uid=%d, gid=%d, gids=%r)" % (
            self.flavor, self.uid, self.gid, self.gids)


CRED_NONE = Cred(AUTH_NONE)


def _decode_authsys(body: bytes) -> Cred:
    """authsys_parms (RFC 5531 appendix A); any flaw is AUTH_BADCRED."""
    u = Unpacker(body)
    try:
        u.u32()  # stamp
        machine = u.string(MAX_MACHINE_NAME)
        uid = u.u32()
        gid = u.u32()
        n = u.u32()
        if n > MAX_GIDS:
            raise RpcReject("auth", AUTH_BADCRED)
        gids = tuple([u.u32() for _ in range(n)])
    except XdrError:
        raise RpcReject("auth", AUTH_BADCRED) from None
    if u.remaining():
        raise RpcReject("auth", AUTH_BADCRED)
    return Cred(AUTH_SYS, uid, gid, gids, machine)


class CallHeader:
    __slots__ = ("xid", "prog", "vers", "proc", "cred")

    def __init__(self, xid, prog, vers, proc, cred):
        self.xid = xid
        self.prog = prog
        self.vers = vers
        self.proc = proc
        self.cred = cred


def decode_call(u: Unpacker, xid: int) -> CallHeader:
    """Decode a call body after xid and msg_type (RFC 5531 section 9).

    Raises RpcReject for RPC_MISMATCH / AUTH_ERROR and XdrError for bytes that
    do not form a call header at all.
    """
    rpcvers = u.u32()
    if rpcvers != RPC_VERSION:
        raise RpcReject("rpc_mismatch", RPC_VERSION, RPC_VERSION)
    prog = u.u32()
    vers = u.u32()
    proc = u.u32()
    flavor = u.u32()
    body = u.opaque(MAX_AUTH_BYTES)
    vflavor = u.u32()
    u.opaque(MAX_AUTH_BYTES)
    if flavor == AUTH_SYS:
        cred = _decode_authsys(body)
    elif flavor == AUTH_NONE:
        cred = CRED_NONE
    else:
        # RFC 5531 section 8.2: a flavor this server does not know
        raise RpcReject("auth", AUTH_BADCRED)
    if vflavor != AUTH_NONE:
        # AUTH_SYS and AUTH_NONE calls carry an AUTH_NONE verifier
        raise RpcReject("auth", AUTH_BADVERF)
    return CallHeader(xid, prog, vers, proc, cred)


_ACCEPTED_SUCCESS = b"\0\0\0\1" + b"\0" * 16  # REPLY, MSG_ACCEPTED, AUTH_NONE verf, SUCCESS


def begin_accepted(p: Packer, xid: int, stat: int = SUCCESS) -> None:
    """Reply header up to and including accept_stat (verifier AUTH_NONE)."""
    p.u32(xid)
    if stat == SUCCESS:
        p.raw(_ACCEPTED_SUCCESS)
        return
    p.u32(REPLY)
    p.u32(MSG_ACCEPTED)
    p.u32(AUTH_NONE)
    p.u32(0)
    p.u32(stat)


def encode_reject(p: Packer, xid: int, exc: RpcReject) -> None:
    """Whole reply for an RpcReject, whatever its kind."""
    kind = exc.kind
    if kind == "rpc_mismatch":
        p.u32(xid)
        p.u32(REPLY)
        p.u32(MSG_DENIED)
        p.u32(RPC_MISMATCH)
        p.u32(exc.values[0])
        p.u32(exc.values[1])
    elif kind == "auth":
        p.u32(xid)
        p.u32(REPLY)
        p.u32(MSG_DENIED)
        p.u32(AUTH_ERROR)
        p.u32(exc.values[0])
    elif kind == "prog_mismatch":
        begin_accepted(p, xid, PROG_MISMATCH)
        p.u32(exc.values[0])
        p.u32(exc.values[1])
    else:
        begin_accepted(p, xid, {"prog_unavail": PROG_UNAVAIL,
                                "proc_unavail": PROC_UNAVAIL,
                                "garbage_args": GARBAGE_ARGS,
                                "system_err": SYSTEM_ERR}[kind])


def zeros_at(p, off: int, n: int) -> bool:
    """Are the n bytes at off of a Packer all zero? (accept_stat SUCCESS, status OK)"""
    buf = p.getbuffer()
    try:
        return len(buf) >= off + n and not any(buf[off:off + n])
    finally:
        del buf


py_decode_call = decode_call
py_zeros_at = zeros_at
if not os.environ.get("FASTNFS_PURE"):
    try:
        from ._rpc import decode_call, zeros_at  # noqa: F811  (Cython twin)
    except ImportError:  # pragma: no cover
        pass
