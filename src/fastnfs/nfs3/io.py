"""READ, WRITE and COMMIT (RFC 1813 sections 3.3.6, 3.3.7, 3.3.21)."""

from __future__ import annotations

import errno
import os
import stat as S

from .. import offload, perm
from ..fsstat import fstat
from ..fs import NFSError, status_of
from ..xdr import XdrError
from . import const as C

MAX_OFFSET = (1 << 63) - 1  # off_t; FSINFO's maxfilesize
_NOWAIT = hasattr(os, "RWF_NOWAIT")
from .types import get_fh3, put_post_op_attr, put_wcc_data


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
        s.check_io(call, e, obj.st, perm.R)
    except NFSError as err:
        p.u32(err.status)
        put_post_op_attr(p, None, 0)
        return None

    def work(nowait=False):
        """Encode the reply; with nowait, only from the page cache (False: would block).

        The data goes from the kernel straight into the reply buffer (preadv2),
        after the attributes, which are taken first (a read changes only atime).
        """
        mark = len(p)
        try:
            fd = e.open_obj(obj, os.O_RDONLY)
            try:
                st = e.view(obj.path, fstat(fd))
                p.u32(C.NFS3_OK)
                put_post_op_attr(p, st, e.fsid)
                at = len(p)
                p.u64(0)  # count and eof, known after the read
                if not count or offset > MAX_OFFSET:
                    n = 0  # section 3.3.6: past the end (even past off_t): no data, eof
                    p.u32(0)
                else:
                    try:
                        n = p.pread_opaque(fd, count, offset, os.RWF_NOWAIT if nowait else 0)
                    except OSError as err:
                        # EOPNOTSUPP: a filesystem without RWF_NOWAIT; a thread reads
                        if not nowait or err.errno not in (errno.EAGAIN, errno.EOPNOTSUPP):
                            raise
                        p.truncate(mark)
                        return False
                    if nowait and n < count and offset + n < st.st_size:
                        # only part of it is cached: a short READ is legal (section
                        # 3.3.6) but costs the client a round trip; a thread waits
                        p.truncate(mark)
                        return False
            finally:
                os.close(fd)
        except (NFSError, OSError) as err:
            p.truncate(mark)
            p.u32(status_of(err))
            put_post_op_attr(p, obj.st, e.fsid)
            return True
        p.put_u32_at(at, n)
        p.put_u32_at(at + 4, 1 if offset + n >= st.st_size else 0)
        if s.stats is not None:
            s.stats.bytes_read += n
        return True

    # a page-cache hit is answered inline; a read that would wait for the
    # disk goes to the pool, so a cold read never stalls other clients
    if _NOWAIT and work(nowait=True):
        return None
    if not _NOWAIT and offload.read_inline(count):
        work()
        return None
    return s.in_caller_creds(call, work)


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
        s.check_io(call, e, obj.st, perm.W)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, None, None, 0)
        return None
    before = obj.st
    if offset + len(data) > MAX_OFFSET:
        p.u32(C.NFS3ERR_FBIG)
        put_wcc_data(p, before, before, e.fsid)
        return None

    def work():
        try:
            fd = e.open_obj(obj, os.O_WRONLY)
            try:
                done = 0
                n = len(data)
                while done < n:
                    done += os.pwrite(fd, data[done:], offset + done)
                if stable == C.FILE_SYNC:
                    os.fsync(fd)
                elif stable == C.DATA_SYNC:
                    os.fdatasync(fd)
                st = e.view(obj.path, fstat(fd))
            finally:
                os.close(fd)
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
    return s.in_caller_creds(call, work)


def COMMIT(s, call, u, p):
    fh = get_fh3(u)
    u.u64()  # offset
    u.u32()  # count: we flush the whole file (section 3.3.21 allows it)
    try:
        e, obj = s.resolve(call, fh)
        _regular(obj)
    except NFSError as err:
        p.u32(err.status)
        put_wcc_data(p, None, None, 0)
        return None
    before = obj.st

    def work():
        try:
            fd = e.open_obj(obj, os.O_RDONLY)
            try:
                os.fsync(fd)
                st = e.view(obj.path, fstat(fd))
            finally:
                os.close(fd)
        except (NFSError, OSError) as err:
            p.u32(status_of(err))
            put_wcc_data(p, before, None, e.fsid)
            return
        p.u32(C.NFS3_OK)
        put_wcc_data(p, before, st, e.fsid)
        p.fixed(s.write_verifier)

    return s.in_caller_creds(call, work)
