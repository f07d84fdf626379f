"""READ, WRITE and COMMIT (RFC 1813 sections 3.3.6, 3.3.7, 3.3.21)."""

from __future__ import annotations

import stat as S

from .. import offload
from ..fs import NFSError, status_of
from ..xdr import XdrError
from . import const as C
from .types import get_fh3, put_post_op_attr, put_wcc_data

MAX_OFFSET = (1 << 63) - 1  # off_t; FSINFO's maxfilesize
_NOWAIT = offload.HAVE_NOWAIT


def _regular(obj):
    fmt = S.S_IFMT(obj.st.st_mode)
    if fmt == S.S_IFDIR:
        raise NFSError(C.NFS3ERR_ISDIR)
    if fmt != S.S_IFREG:
        raise NFSError(C.NFS3ERR_INVAL)


def READ(s, call, u, p):
    fh = get_fh3(u)
    offset = u.u64()
    count = min(u.u32(), call.maxdata)
    try:
        e, obj = s.resolve(call, fh)
        _regular(obj)
        cred = s.cred(call, e)
        e.backend.check_read(cred, obj)
    except NFSError as err:
        p.u32(err.status)
        put_post_op_attr(p, None, 0)
        return None
    b = e.backend

    at = [0]

    def head(st):
        p.u32(C.NFS3_OK)
        put_post_op_attr(p, st, e.fsid)
        at[0] = len(p)
        p.u64(0)  # count and eof, known after the read

    def work(nowait=False):
        """Encode the reply; with nowait, only from memory (False: it would block).

        The data goes from storage straight into the reply buffer, after the
        attributes, which are taken first (a read changes only atime).
        """
        mark = len(p)
        try:
            done = b.read(cred, obj, offset, count, p, head, nowait)
        except (NFSError, OSError) as err:
            p.truncate(mark)
            p.u32(status_of(err))
            put_post_op_attr(p, obj.st, e.fsid)
            return True
        if done is None:
            p.truncate(mark)
            return False
        st, n = done
        p.put_u32_at(at[0], n)
        p.put_u32_at(at[0] + 4, 1 if offset + n >= st.st_size else 0)
        if s.stats is not None:
            s.stats.bytes_read += n
        return True

    if call.lend and offload.lend_read(count):
        # all in the page cache: the transport sends the data from the file
        try:
            lent = b.lend_read(cred, obj, offset, count, head)
        except (NFSError, OSError):
            lent = None          # read() below answers, with the error if it recurs
        if lent is not None:
            st, fd, n = lent
            p.u32(n)             # the opaque's length; its bytes and padding follow from fd
            call.tail = (fd, offset, n)
            p.put_u32_at(at[0], n)
            p.put_u32_at(at[0] + 4, 1 if offset + n >= st.st_size else 0)
            if s.stats is not None:
                s.stats.bytes_read += n
            return None
    # a page-cache hit is answered inline; a read that would wait for the
    # disk goes to the pool, so a cold read never stalls other clients
    if _NOWAIT and work(nowait=True):
        return None
    if not _NOWAIT and offload.read_inline(count):
        work()
        return None
    return s.in_caller_creds(call, e, work)


def WRITE(s, call, u, p):
    fh = get_fh3(u)
    offset = u.u64()
    count = u.u32()
    stable = u.u32()
    data = u.opaque_view(0xFFFFFFFF)
    if stable > C.FILE_SYNC:
        raise XdrError("bad stable_how %d" % stable)
    if count < len(data):
        data = data[:count]
    try:
        e, obj = s.resolve(call, fh)
        s.check_writable(call, e)
        _regular(obj)
        cred = s.cred(call, e)
        e.backend.check_write(cred, obj)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, None, None, 0)
        return None
    before = obj.st
    if offset + len(data) > MAX_OFFSET:
        p.u32(C.NFS3ERR_FBIG)
        put_wcc_data(p, before, before, e.fsid)
        return None
    b = e.backend

    def work():
        try:
            st = b.write(cred, obj, offset, data, stable)
        except (NFSError, OSError) as err:
            p.u32(status_of(err))
            put_wcc_data(p, before, None, e.fsid)
            return
        p.u32(C.NFS3_OK)
        put_wcc_data(p, before, st, e.fsid)
        if s.stats is not None:
            s.stats.bytes_written += len(data)
        p.u32(len(data))
        p.u32(stable)
        p.fixed(s.write_verifier)

    if offload.write_inline(len(data), stable):
        work()
        return None
    return s.in_caller_creds(call, e, work)


def COMMIT(s, call, u, p):
    fh = get_fh3(u)
    u.u64()  # offset
    u.u32()  # count: the whole file is flushed (section 3.3.21 allows it)
    try:
        e, obj = s.resolve(call, fh)
        _regular(obj)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, None, None, 0)
        return None
    before = obj.st
    b = e.backend
    cred = s.cred(call, e)

    def work():
        try:
            st = b.commit(cred, obj)
        except (NFSError, OSError) as err:
            p.u32(status_of(err))
            put_wcc_data(p, before, None, e.fsid)
            return
        p.u32(C.NFS3_OK)
        put_wcc_data(p, before, st, e.fsid)
        p.fixed(s.write_verifier)

    return s.in_caller_creds(call, e, work)
