"""Register with a local rpcbind (RFC 1833).

IPv4 mappings go through PMAP version 2 (section 3: program, version,
protocol, port).  IPv6 ones need RPCBIND version 3 (section 2), whose SET and
UNSET name a transport by netid (tcp6, udp6) and an address in its universal
form ("::.8.1" is every address, port 2049).  Both are asked of the rpcbind on
127.0.0.1 port 111 over UDP.
"""

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
RPCBVERS_3 = 3
RPCBPROC_SET = 1
RPCBPROC_UNSET = 2
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def universal_address(host: str, port: int) -> str:
    """RFC 1833's universal address of host:port: the address, then the port's
    two bytes ("::1.8.1", "0.0.0.0.8.1"); a scope (fe80::1%eth0) is left out."""
    return "%s.%d.%d" % (host.split("%")[0], port >> 8, port & 0xFF)


def _call(vers: int, proc: int, args: bytes, timeout: float) -> bool:
    """One call to rpcbind; True if it answered TRUE."""
    xid = int.from_bytes(os.urandom(4), "big")
    p = Packer()
    p.u32(xid)
    p.u32(rpc.CALL)
    p.u32(rpc.RPC_VERSION)
    p.u32(PMAP_PROGRAM)
    p.u32(vers)
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
    p.raw(args)
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


def _pmap(proc: int, prog: int, vers: int, prot: int, port: int, timeout: float) -> bool:
    """PMAP version 2 SET or UNSET (struct mapping)."""
    p = Packer()
    for v in (prog, vers, prot, port):
        p.u32(v)
    return _call(PMAP_VERSION, proc, p.getvalue(), timeout)


def _rpcb(proc: int, prog: int, vers: int, netid: str, uaddr: str, timeout: float) -> bool:
    """RPCBIND version 3 SET or UNSET (struct rpcb; rpcbind fills in the owner)."""
    p = Packer()
    p.u32(prog)
    p.u32(vers)
    p.string(netid.encode())
    p.string(uaddr.encode())
    p.string(b"superuser" if os.geteuid() == 0 else str(os.geteuid()).encode())
    return _call(RPCBVERS_3, proc, p.getvalue(), timeout)


class Registration:
    """The mappings this server made, so that exit can take them back."""

    def __init__(self):
        self.done: list = []    # (prog, vers, prot, port): PMAP version 2
        self.done6: list = []   # (prog, vers, netid, uaddr): RPCBIND version 3

    def register(self, mappings, mappings6=(), timeout: float = 1.0) -> bool:
        """mappings: (prog, vers, prot, port) for IPv4; mappings6: (prog, vers,
        netid, universal address) for IPv6.  False if there is no rpcbind."""
        try:
            # drop stale mappings of a previous run first, once per program version
            for prog, vers in dict.fromkeys((m[0], m[1]) for m in mappings):
                _pmap(PMAPPROC_UNSET, prog, vers, 0, 0, timeout)
            for prog, vers, netid in dict.fromkeys(m[:3] for m in mappings6):
                _rpcb(RPCBPROC_UNSET, prog, vers, netid, "", timeout)
        except OSError:
            log.info("no rpcbind on this host: clients must give port= and mountport=")
            return False
        try:
            for prog, vers, prot, port in mappings:
                if _pmap(PMAPPROC_SET, prog, vers, prot, port, timeout):
                    self.done.append((prog, vers, prot, port))
                else:
                    log.warning("rpcbind refused to map program %d version %d", prog, vers)
            for prog, vers, netid, uaddr in mappings6:
                if _rpcb(RPCBPROC_SET, prog, vers, netid, uaddr, timeout):
                    self.done6.append((prog, vers, netid, uaddr))
                else:
                    log.warning("rpcbind refused to map program %d version %d on %s",
                                prog, vers, netid)
        except OSError as e:
            log.warning("rpcbind did not answer: %s", e)
            return False
        return True

    def unregister(self) -> None:
        try:
            for prog, vers in dict.fromkeys((m[0], m[1]) for m in self.done):
                _pmap(PMAPPROC_UNSET, prog, vers, 0, 0, 0.5)
            for prog, vers, netid in dict.fromkeys(m[:3] for m in self.done6):
                _rpcb(RPCBPROC_UNSET, prog, vers, netid, "", 0.5)
        except OSError:
            pass
        self.done = []
        self.done6 = []
