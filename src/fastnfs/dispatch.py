"""Program/version/procedure dispatch and the duplicate-request cache.

One call goes: bytes -> call header (rpc) -> program -> version -> procedure
handler, which decodes its arguments and encodes its result straight into the
reply Packer.  A handler returns None when the reply is complete, or a
zero-argument callable that finishes the work off the event loop (a blocking
disk call); the transport then writes the reply when it is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from ._accel import load
from . import rpc
from .rpc import RpcReject
from .stats import Stats
from .xdr import Packer, Unpacker, XdrError

log = logging.getLogger("fastnfs.rpc")


class Program:
    """One RPC program: {version: [handler or None, ...]} indexed by procedure."""

    def __init__(self, number: int, name: str, versions: dict, *,
                 non_idempotent: frozenset = frozenset(), auth_sys_required: bool = False):
        self.number = number
        self.name = name
        self.versions = versions
        self.low = min(versions)
        self.high = max(versions)
        self.non_idempotent = non_idempotent
        self.auth_sys_required = auth_sys_required


class Call:
    """Everything a procedure needs to know about the request it serves."""

    __slots__ = ("xid", "prog", "vers", "proc", "cred", "peer", "proto", "maxdata",
                 "opts", "ucred", "lend", "tail")

    def __init__(self, h: rpc.CallHeader, peer, proto: str, maxdata: int):
        self.xid = h.xid
        self.prog = h.prog
        self.vers = h.vers
        self.proc = h.proc
        self.cred = h.cred
        self.peer = peer
        self.proto = proto
        self.maxdata = maxdata
        self.opts = None   # ExportOptions for this client, once a handle is resolved
        self.ucred = None  # the credentials after squashing
        self.lend = False  # may a READ leave its data in the file (transport.send_file)?
        self.tail = None   # (fd, offset, count): the reply's last bytes, sent from fd

    def drop_tail(self) -> None:
        """The reply will not be sent as it was made: close the file lent to it."""
        if self.tail is not None:
            os.close(self.tail[0])
            self.tail = None


class DuplicateRequestCache:
    """Bounded cache of replies to non-idempotent calls (RFC 5531 section 8.2 note).

    Keyed by client host, xid and a checksum of the whole call, so a
    retransmission (same xid, same bytes) from a reconnected TCP client still
    matches and an unrelated call that reuses an xid does not.
    """

    IN_PROGRESS = b""

    def __init__(self, maxsize: int = 4096):
        self.maxsize = maxsize
        self._d: OrderedDict = OrderedDict()
        self.hits = 0

    @staticmethod
    def key(host, xid: int, data) -> tuple:
        return (host, xid, zlib.crc32(data))

    def lookup(self, key):
        r = self._d.get(key)
        if r is not None:
            self.hits += 1
        return r

    def begin(self, key) -> None:
        self._d[key] = self.IN_PROGRESS
        if len(self._d) > self.maxsize:
            self._d.popitem(last=False)

    def finish(self, key, reply: bytes) -> None:
        if key in self._d:
            self._d[key] = reply


class Dispatcher:
    def __init__(self, programs, *, executor: ThreadPoolExecutor | None = None,
                 drc_size: int = 4096, udp_maxdata: int = 32768, tcp_maxdata: int = 1048576):
        self.programs = {p.number: p for p in programs}
        self.executor = executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="fastnfs-io")
        self.drc = DuplicateRequestCache(drc_size)
        self.maxdata = {"tcp": tcp_maxdata, "udp": udp_maxdata}
        self.stats = Stats()
        self.fast = None  # a FastPath (see use_fast_path): transports try it first
        self.lend_files = False  # TCP READ data may be sent from the file (offload.can_lend)

    def dispatch(self, data, peer, proto: str):
        """Answer one call record.

        Returns a Packer holding the reply (4 reserved bytes at the front for
        the record mark), None when nothing must be sent, or an awaitable
        resolving to either; or, with lend_files over TCP, (Packer, (fd,
        offset, count)): the reply's data follows from the file (its length
        and the padding included in the record, transport.send_file).
        """
        if len(data) < 8:
            return None
        t0 = time.perf_counter_ns()
        u = Unpacker(data)
        xid = u.u32()
        if u.u32() != rpc.CALL:
            return None  # a REPLY or garbage: nothing to answer (RFC 5531 section 9)
        p = Packer(4)
        try:
            h = rpc.decode_call(u, xid)
            prog = self.programs.get(h.prog)
            if prog is None:
                raise RpcReject("prog_unavail")
            table = prog.versions.get(h.vers)
            if table is None:
                raise RpcReject("prog_mismatch", prog.low, prog.high)
            if h.proc >= len(table) or table[h.proc] is None:
                raise RpcReject("proc_unavail")
            if prog.auth_sys_required and h.proc != 0 and h.cred.flavor != rpc.AUTH_SYS:
                raise RpcReject("auth", rpc.AUTH_TOOWEAK)
        except RpcReject as e:
            self._reject(p, xid, e, peer)
            self.stats.rpc_rejects += 1
            return p
        except XdrError:
            rpc.encode_reject(p, xid, RpcReject("garbage_args"))
            self.stats.rpc_rejects += 1
            return p

        drc_key = None
        if h.proc in prog.non_idempotent:
            drc_key = self.drc.key(peer[0], xid, data)
            prev = self.drc.lookup(drc_key)
            if prev is not None:
                if prev is DuplicateRequestCache.IN_PROGRESS:
                    return None  # the first copy is still being served
                p.raw(prev)
                return p
            self.drc.begin(drc_key)

        call = Call(h, peer, proto, self.maxdata[proto])
        call.lend = self.lend_files and proto == "tcp"
        mark = len(p)
        rpc.begin_accepted(p, xid)
        try:
            later = table[h.proc](call, u, p)
        except XdrError:
            call.drop_tail()
            p.truncate(mark)
            rpc.encode_reject(p, xid, RpcReject("garbage_args"))
            later = None
        except RpcReject as e:
            call.drop_tail()
            p.truncate(mark)
            self._reject(p, xid, e, peer)
            later = None
        except Exception:
            log.exception("procedure %s.%d.%d failed", prog.name, h.vers, h.proc)
            call.drop_tail()
            p.truncate(mark)
            rpc.encode_reject(p, xid, RpcReject("system_err"))
            later = None
        if later is None:
            if drc_key is not None:
                self.drc.finish(drc_key, bytes(p.getbuffer()[4:]))
            tail = call.tail
            if tail is not None:
                self._count(h, p, mark, t0, peer, len(data), tail[2] + (-tail[2] & 3))
                return p, tail
            self._count(h, p, mark, t0, peer, len(data))
            return p
        return self._finish_later(later, p, mark, xid, prog, h, drc_key, t0, peer, len(data))

    def _reject(self, p: Packer, xid: int, e: RpcReject, peer) -> None:
        if e.kind == "auth":
            self.stats.refusals.note(log, logging.INFO, peer[0], "auth error",
                                     "refused call from %s: auth_stat %d", peer[0], e.values[0])
        rpc.encode_reject(p, xid, e)

    def _count(self, h, p, mark: int, t0: int, peer, nin: int, tail: int = 0) -> None:
        """Statistics of one answered call; the status is the first word of the result."""
        n = len(p) + tail
        ok = True
        if h.proc and (h.prog == 100003 or h.proc == 1):
            ok = rpc.zeros_at(p, mark + 20, 8)  # accept_stat SUCCESS, then status 0
        self.stats.call(h.prog, h.proc, ok, time.perf_counter_ns() - t0, peer[0], nin, n - 4)

    async def _finish_later(self, later, p, mark, xid, prog, h, drc_key, t0, peer, nin):
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, later)
        except Exception:
            log.exception("procedure %s.%d.%d failed", prog.name, h.vers, h.proc)
            p.truncate(mark)
            rpc.encode_reject(p, xid, RpcReject("system_err"))
        if drc_key is not None:
            self.drc.finish(drc_key, bytes(p.getbuffer()[4:]))
        self._count(h, p, mark, t0, peer, nin)
        return p


def use_fast_path(dispatcher: Dispatcher, nfs_state) -> bool:
    """Answer ordinary GETATTR/LOOKUP/ACCESS/READLINK/READ and UNSTABLE WRITE calls through fastnfs._fastpath
    (not with FASTNFS_PURE=1, where the general path is the only one)."""
    cx = load("_fastpath")
    if cx is None:
        return False
    from .offload import INLINE_IO_MAX
    dispatcher.fast = cx.FastPath(nfs_state, dispatcher.stats, dispatcher.maxdata["tcp"],
                               dispatcher.maxdata["udp"], INLINE_IO_MAX)
    if os.environ.get("FASTNFS_SHADOW") == "1":
        from .shadow import ShadowLane
        general = Dispatcher(list(dispatcher.programs.values()), executor=dispatcher.executor,
                             udp_maxdata=dispatcher.maxdata["udp"],
                             tcp_maxdata=dispatcher.maxdata["tcp"])
        dispatcher.fast = ShadowLane(dispatcher.fast, general, dispatcher)
    return True



