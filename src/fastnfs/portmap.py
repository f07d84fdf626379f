"""Register with a local rpcbind through PMAP version 2 (RFC 1833 section 3)."""

from __future__ import annotations

import logging
import os
import socket

from . import rpc
from .xdr import Packer, Unpacker, XdrError

log = logging.getLogger("fastnfs.portmap")

PMAP_PROGRAM = 100000
PMAP_VERSION = 2
PMAPPROC_SET = 1
PMAPPROC_UNSET = 2
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def _call(proc: int, prog: int, vers: int, prot: int, port: int, timeout: float) -> bool:
    xid = int.from_bytes(os.urandom(4), "big")
    p = Packer()
    p.u32(xid)
    p.u32(rpc.CALL)
    p.u32(rpc.RPC_VERSION)
    p.u32(PMAP_PROGRAM)
    p.u32(PMAP_VERSION)
    p.u32(proc)
    # AUTH_SYS as root: rpcbind lets only privileged callers change mappings
    cred = Packer()
    cred.u32(0)
    cred.string(socket.gethostname().encode()[:255])
    cred.u32(os.geteuid())
    cred.u32(os.getegid())
    cred.u32(0)
    p.u32(rpc.AUTH_SYS)
    p.opaque(cred.getvalue())
    p.u32(rpc.AUTH_NONE)
    p.u32(0)
    for v in (prog, vers, prot, port):
        p.u32(v)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", 111))
        s.send(p.getvalue())
        data = s.recv(1024)
    u = Unpacker(data)
    try:
        if u.u32() != xid or u.u32() != rpc.REPLY or u.u32() != rpc.MSG_ACCEPTED:
            return False
        u.u32()
        u.opaque(400)
        if u.u32() != rpc.SUCCESS:
            return False
        return u.boolean()
    except XdrError:
        return False


class Registration:
    """The mappings this server made, so that exit can take them back."""

    def __init__(self):
        self.done: list = []

    def register(self, mappings, timeout: float = 1.0) -> bool:
        """mappings: (prog, vers, prot, port); False if there is no rpcbind."""
        try:
            # drop stale mappings of a previous run first, once per program version
            for prog, vers in dict.fromkeys((m[0], m[1]) for m in mappings):
                _call(PMAPPROC_UNSET, prog, vers, 0, 0, timeout)
        except OSError:
            log.info("no rpcbind on this host: clients must give port= and mountport=")
            return False
        for prog, vers, prot, port in mappings:
            try:
                ok = _call(PMAPPROC_SET, prog, vers, prot, port, timeout)
            except OSError as e:
                log.warning("rpcbind did not answer: %s", e)
                return False
            if ok:
                self.done.append((prog, vers, prot, port))
            else:
                log.warning("rpcbind refused to map program %d version %d", prog, vers)
        return True

    def unregister(self) -> None:
        seen = set()
        for prog, vers, _prot, _port in self.done:
            if (prog, vers) in seen:
                continue
            seen.add((prog, vers))
            try:
                _call(PMAPPROC_UNSET, prog, vers, 0, 0, 0.5)
            except OSError:
                pass
        self.done = []
