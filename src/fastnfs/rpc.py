"""ONC RPC version 2 (RFC 5531): call headers, credentials and replies."""

from __future__ import annotations

from ._accel import load
from .errors import XdrError
from .rpc_msg import (  # noqa: F401  (re-exported: the RPC names live in rpc_msg)
    RPC_VERSION, CALL, REPLY, MSG_ACCEPTED, MSG_DENIED, SUCCESS, PROG_UNAVAIL,
    PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR, RPC_MISMATCH,
    AUTH_ERROR, AUTH_OK, AUTH_BADCRED, AUTH_REJECTEDCRED, AUTH_BADVERF,
    AUTH_REJECTEDVERF, AUTH_TOOWEAK, AUTH_INVALIDRESP, AUTH_FAILED, AUTH_NONE,
    AUTH_SYS, AUTH_SHORT, MAX_AUTH_BYTES, MAX_MACHINE_NAME, MAX_GIDS, CRED_NONE,
    RpcReject, Cred, CallHeader)
from .xdr import Packer, Unpacker


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
_cx = load("_rpc")
if _cx is not None:
    decode_call, zeros_at = _cx.decode_call, _cx.zeros_at  # noqa: F811  (Cython twin)
