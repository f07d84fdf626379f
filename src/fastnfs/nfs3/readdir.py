"""READDIR and READDIRPLUS (RFC 1813 sections 3.3.16, 3.3.17).

Cookies are hashes of the entry names (fs.name_cookie) and entries are sent
in cookie order, so paging stays correct while the directory changes and
the cookie verifier never has to invalidate a client's cookie.
"""

from __future__ import annotations


from ..fsstat import lstatat
from .. import perm
from ..fs import NFSError, status_of, dirname, join
from . import const as C
from .types import get_fh3, put_fattr3, put_post_op_attr

COOKIEVERF = b"\0" * 8
_RESOK_FIXED = 4 + 88 + 8 + 8  # status, dir_attributes, cookieverf, list end + eof


def _entries(e, d, cookie: int):
    """Virtual listing from cookie on: yields (cookie, name, fileid)."""
    cookies, names, inos = e.listing(d)
    if cookie == 0:
        yield 1, b".", d.ino
    if cookie <= 1:
        if d.ino == e.root_ino:
            pino = d.ino
        else:
            st = e._lstat(dirname(d.path))
            pino = st.st_ino if st is not None else d.ino
        yield 2, b"..", pino
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
        return
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


def READDIRPLUS(s, call, u, p):
    fh = get_fh3(u)
    cookie = u.u64()
    u.fixed(C.NFS3_COOKIEVERFSIZE)
    dircount = u.u32()
    maxcount = u.u32()
    e, d = _begin(s, call, fh, p)
    if e is None:
        return
    mark = len(p)
    dfd = -1
    try:
        it = _entries(e, d, cookie)
        dfd = e.open_dir(d)
        p.u32(C.NFS3_OK)
        put_post_op_attr(p, d.st, e.fsid)
        p.fixed(COOKIEVERF)
        budget = min(maxcount, call.maxdata) - _RESOK_FIXED
        dirbudget = dircount
        anc = d.child_anc()
        sent = 0
        eof = True
        for c, name, ino in it:
            pad = (len(name) + 3) & ~3
            dsize = 20 + pad
            size = 24 + pad + 88 + 8 + 24 + 8 * len(anc)
            if size > budget or (dsize > dirbudget and sent):
                eof = False
                break
            budget -= size
            dirbudget -= dsize
            if name == b".":
                st, efh = d.st, e.fh(d)
            elif name == b"..":
                st, efh = None, None
            else:
                try:
                    st = lstatat(dfd, name)
                except OSError:
                    st = None
                efh = None
                if st is not None:
                    ino = st.st_ino
                    epath = join(d.path, name)
                    e.cache.put(ino, epath)
                    efh = e.fh_of(ino, st.st_dev, st.gen, anc)
                    if e.virtfs is not None:
                        st = e.virtfs.view(epath, st)
            p.u32(1)
            p.u64(ino)
            p.string(name)
            p.u64(c)
            if st is None:
                p.u32(0)
                p.u32(0)
            else:
                p.u32(1)
                put_fattr3(p, st, e.fsid)
                p.u32(1)
                p.opaque(efh)
            sent += 1
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
