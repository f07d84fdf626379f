"""ONC RPC message constants and the decoded call header (RFC 5531 section 9).

Shared by ``rpc`` and its Cython twin ``_rpc``, so that neither imports the other.
"""

from __future__ import annotations

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


class CallHeader:
    __slots__ = ("xid", "prog", "vers", "proc", "cred")

    def __init__(self, xid, prog, vers, proc, cred):
        self.xid = xid
        self.prog = prog
        self.vers = vers
        self.proc = proc
        self.cred = cred
