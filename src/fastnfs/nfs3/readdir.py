"""READDIR and READDIRPLUS (RFC 1813 sections 3.3.16, 3.3.17).

Cookies are hashes of the entry names (fs.name_cookie) and entries are sent
in cookie order, so paging stays correct while the directory changes and
the cookie verifier never has to invalidate a client's cookie.
"""

from __future__ import annotations


from .._accel import load
from ..fsstat import lstatat
from .. import offload, perm
from ..fs import NFSError, status_of, dirname, join
from . import const as C
from .types import get_fh3, put_fattr3, put_post_op_attr

COOKIEVERF = b"\0" * 8
_RESOK_FIXED = 4 + 88 + 8 + 8  # status, dir_attributes, cookieverf, list end + eof


def _dot_entries(e, d, cookie: int):
    """"." and ".." as a listing from cookie starts: (cookie, name, fileid)."""
    if cookie == 0:
        yield 1, b".", d.ino
    if cookie <= 1:
        if d.ino == e.root_ino:
            pino = d.ino
        else:
            st = e._lstat(dirname(d.path))
            pino = st.st_ino if st is not None else d.ino
        yield 2, b"..", pino


def _entries(e, d, cookie: int):
    """Virtual listing from cookie on: yields (cookie, name, fileid)."""
    cookies, names, inos = e.listing(d)
    yield from _dot_entries(e, d, cookie)
    start = e.listing_start(cookies, cookie)
    for i in range(start, len(cookies)):
        yield cookies[i], names[i], inos[i]


def _begin(s, call, fh, p):
    try:
        e, d = s.resolve(call, fh)
        if not d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        s.check(call, e, d.st, perm.R)
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

    def work():
        mark = len(p)
        try:
            it = _entries(e, d, cookie)
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
    if offload.scan_inline(e.listing_cached(d), d.st.st_size):
        work()
        return None
    return s.in_caller_creds(call, work)


def _entry_plus_size(name: bytes, nanc: int) -> tuple:
    """(size in the reply, size against dircount) of one entryplus3."""
    pad = (len(name) + 3) & ~3
    return 24 + pad + 88 + 8 + 24 + 8 * nanc, 20 + pad


def put_entries_plus(p, e, dfd: int, dpath: bytes, anc: tuple, cookies: list, names: list,
                     inos: list, start: int, budget: int, dirbudget: int, sent: int):
    """entryplus3 for the listing from index start while they fit: each
    entry's attributes and handle from one no-follow stat in the directory.
    Returns (entries sent in all, eof).  Cython twin: _fastpath.put_entries_plus."""
    for i in range(start, len(cookies)):
        name = names[i]
        size, dsize = _entry_plus_size(name, len(anc))
        if size > budget or (dsize > dirbudget and sent):
            return sent, False
        budget -= size
        dirbudget -= dsize
        ino = inos[i]
        try:
            st = lstatat(dfd, name)
        except OSError:
            st = None
        p.u32(1)
        if st is None:
            p.u64(ino)
            p.string(name)
            p.u64(cookies[i])
            p.u32(0)
            p.u32(0)
        else:
            epath = join(dpath, name)
            e.cache.put(st.st_ino, epath)
            efh = e.fh_of(st.st_ino, st.st_dev, st.gen, anc)
            if e.virtfs is not None:
                st = e.virtfs.view(epath, st)
            p.u64(st.st_ino)
            p.string(name)
            p.u64(cookies[i])
            p.u32(1)
            put_fattr3(p, st, e.fsid)
            p.u32(1)
            p.opaque(efh)
        sent += 1
    return sent, True


py_put_entries_plus = put_entries_plus
_cx = load("_fastpath")
if _cx is not None:  # the Cython twin
    put_entries_plus = _cx.put_entries_plus


def READDIRPLUS(s, call, u, p):
    fh = get_fh3(u)
    cookie = u.u64()
    u.fixed(C.NFS3_COOKIEVERFSIZE)
    dircount = u.u32()
    maxcount = u.u32()
    e, d = _begin(s, call, fh, p)
    if e is None:
        return None

    def work():
        _readdirplus(s, call, e, d, cookie, dircount, maxcount, p)

    return _run(s, call, e, d, work)


def _readdirplus(s, call, e, d, cookie: int, dircount: int, maxcount: int, p) -> None:
    mark = len(p)
    dfd = -1
    try:
        cookies, names, inos = e.listing(d)
        dfd = e.open_dir(d)
        p.u32(C.NFS3_OK)
        put_post_op_attr(p, d.st, e.fsid)
        p.fixed(COOKIEVERF)
        budget = min(maxcount, call.maxdata) - _RESOK_FIXED
        dirbudget = dircount
        anc = d.child_anc()
        sent = 0
        eof = True
        for c, name, ino in _dot_entries(e, d, cookie):
            size, dsize = _entry_plus_size(name, len(anc))
            if size > budget or (dsize > dirbudget and sent):
                eof = False
                break
            budget -= size
            dirbudget -= dsize
            p.u32(1)
            p.u64(ino)
            p.string(name)
            p.u64(c)
            if name == b".":
                p.u32(1)
                put_fattr3(p, d.st, e.fsid)
                p.u32(1)
                p.opaque(e.fh(d))
            else:
                p.u32(0)   # "..": the client looks it up if it wants it
                p.u32(0)
            sent += 1
        if eof:
            sent, eof = put_entries_plus(p, e, dfd, d.path, anc, cookies, names, inos,
                                         e.listing_start(cookies, cookie), budget, dirbudget,
                                         sent)
        if not eof and sent == 0:
            raise NFSError(C.NFS3ERR_TOOSMALL)
        p.u32(0)
        p.boolean(eof)
    except (NFSError, OSError) as err:
        p.truncate(mark)
        p.u32(status_of(err))
        put_post_op_attr(p, d.st, e.fsid)
    finally:
        if dfd >= 0:
            e.close_fd(dfd)
