"""READDIR and READDIRPLUS (RFC 1813 sections 3.3.16, 3.3.17).

Entries come from the backend in cookie order (the host backends hash the
names: fs.name_cookie), so paging stays correct while the directory changes
and the cookie verifier never has to invalidate a client's cookie.
"""

from __future__ import annotations

from .. import offload
from ..fs import NFSError, status_of
from . import const as C
from .types import get_fh3, put_post_op_attr

COOKIEVERF = b"\0" * 8
_RESOK_FIXED = 4 + 88 + 8 + 8  # status, dir_attributes, cookieverf, list end + eof


def _begin(s, call, fh, p):
    try:
        e, d = s.resolve(call, fh)
        e.backend.check_list(s.cred(call, e), d)
        return e, d
    except NFSError as err:
        p.u32(err.status)
        p.u32(0)
        return None, None


def READDIR(s, call, u, p):
    fh = get_fh3(u)
    cookie = u.u64()
    u.fixed(C.NFS3_COOKIEVERFSIZE)
    count = u.u32()
    e, d = _begin(s, call, fh, p)
    if e is None:
        return None
    cred = s.cred(call, e)

    def work():
        mark = len(p)
        try:
            it = e.backend.readdir(cred, d, cookie)
            p.u32(C.NFS3_OK)
            put_post_op_attr(p, d.st, e.fsid)
            p.fixed(COOKIEVERF)
            budget = min(count, call.maxdata) - _RESOK_FIXED
            sent = 0
            eof = True
            for c, name, ino in it:
                size = 24 + ((len(name) + 3) & ~3)
                if size > budget:
                    eof = False
                    break
                budget -= size
                p.u32(1)
                p.u64(ino)
                p.string(name)
                p.u64(c)
                sent += 1
            if not eof and sent == 0:
                raise NFSError(C.NFS3ERR_TOOSMALL)
            p.u32(0)
            p.boolean(eof)
        except NFSError as err:
            p.truncate(mark)
            p.u32(err.status)
            put_post_op_attr(p, d.st, e.fsid)

    return _run(s, call, e, d, work)


def _run(s, call, e, d, work):
    """Run work inline, or in the pool when it must first read a big directory
    (the scan and the hashing of thousands of names would stall the loop)."""
    if offload.scan_inline(e.backend.listing_cached(d), d.st.st_size):
        work()
        return None
    return s.in_caller_creds(call, e, work)


def READDIRPLUS(s, call, u, p):
    fh = get_fh3(u)
    cookie = u.u64()
    u.fixed(C.NFS3_COOKIEVERFSIZE)
    dircount = u.u32()
    maxcount = u.u32()
    e, d = _begin(s, call, fh, p)
    if e is None:
        return None
    cred = s.cred(call, e)

    def work():
        mark = len(p)
        try:
            p.u32(C.NFS3_OK)
            put_post_op_attr(p, d.st, e.fsid)
            p.fixed(COOKIEVERF)
            budget = min(maxcount, call.maxdata) - _RESOK_FIXED
            sent, eof = e.backend.readdirplus(e, cred, d, cookie, p, budget, dircount, 0)
            if not eof and sent == 0:
                raise NFSError(C.NFS3ERR_TOOSMALL)
            p.u32(0)
            p.boolean(eof)
        except (NFSError, OSError) as err:
            p.truncate(mark)
            p.u32(status_of(err))
            put_post_op_attr(p, d.st, e.fsid)

    return _run(s, call, e, d, work)
