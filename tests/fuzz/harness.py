"""Fuzz targets for fastnfs and the invariants they check.

Targets (each takes one ``bytes`` input and raises ``FuzzFailure`` when an
invariant breaks):

``stream``   transport.RpcStreamProtocol.data_received fed with the input as a
             TCP byte stream (cut into chunks the input chooses) over a fake
             transport; the records it hands on must be exactly those of an
             independent record-marking parser, an oversized record must abort,
             and the buffered state must stay bounded (max_record).
``call``     rpc.decode_call on the input, with the plain-Python and the
             Cython Unpacker (differential: both must agree).
``dispatch`` dispatch.Dispatcher.dispatch(record, peer, "tcp"/"udp") over a
             real server (server.Server(Config)) exporting a small scratch tree
             in /dev/shm, so every NFSv3 and MOUNT argument decoder and
             procedure runs.  The reply must exist for a call, parse back as a
             well-formed RPC reply (xdrlib3) whose body matches the RFC 1813 /
             MOUNT result grammar of that procedure, never be SYSTEM_ERR, and no
             traceback may be logged.  The Cython fast lane (_fastpath) then
             gets the same record: it must decline or give the same bytes.

Every target also checks allocation: the tracemalloc peak while handling one
input must stay under ``ALLOC_LIMIT`` (10 MB; inputs are < 64 KiB), so a
4-byte "length 4 GiB" cannot make the server allocate what the bytes do not
back.

Structure-aware help for ``dispatch``: anything in the input that looks like a
fastnfs filehandle (opaque<> of 24+8n bytes, version 1, n ancestors) is
replaced by one of the scratch export's live handles (root, a file, a
directory, a symlink, a fifo, ...), and an MNT path under the capture export
(tests/fuzz/capture.py) is rewritten to the scratch export, so the captured
seeds and their mutations reach the procedures' real work, not just STALE.

Failures already reported as server bugs are recognised by ``known_bug`` and
counted instead of stopping the run (unless FASTNFS_FUZZ_STRICT=1); the
regression tests in tests/test_fuzz.py pin each of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CAPTURE_EXPORT = b"/tmp/fnfs-capture/export"
ALLOC_LIMIT = 10 * 1024 * 1024
MAX_INPUT = 64 * 1024
RESET_EVERY = 300

TARGETS = ("stream", "call", "dispatch")


class FuzzFailure(AssertionError):
    """An invariant broke; .kind names which (see known_bug)."""

    def __init__(self, kind: str, msg: str):
        super().__init__("%s: %s" % (kind, msg))
        self.kind = kind


# ----------------------------------------------------------- known server bugs
# kind -> one-line description; tests/test_fuzz.py has a strict xfail per entry.
KNOWN_BUGS: dict = {}  # kind -> description; fixed ones are removed and become failures


def known_bug(exc: FuzzFailure):
    """The KNOWN_BUGS key this failure is an instance of, or None."""
    if os.environ.get("FASTNFS_FUZZ_STRICT") == "1":
        return None
    return exc.kind if exc.kind in KNOWN_BUGS else None


# ------------------------------------------------------------------- seeds
def seed_records() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))]


def frame(record: bytes, sizes=()) -> bytes:
    """Record-mark a record, split into fragments of the given sizes + the rest."""
    out = []
    pos = 0
    for n in sizes:
        out.append(struct.pack(">I", n) + record[pos:pos + n])
        pos += n
    rest = record[pos:]
    out.append(struct.pack(">I", 0x80000000 | len(rest)) + rest)
    return b"".join(out)


def stream_seeds() -> list[bytes]:
    """Inputs for the stream target: a chunking byte, then framed records."""
    recs = seed_records()
    out = []
    for i, r in enumerate(recs):
        sizes = () if i % 3 else (min(len(r), 7), 0)
        out.append(bytes([i % 251]) + frame(r, sizes) + frame(recs[(i + 1) % len(recs)]))
    return out


def seeds_for(target: str) -> list[bytes]:
    if target == "stream":
        return stream_seeds()
    if target == "call":
        return [r[8:] for r in seed_records()]  # decode_call starts after xid, msg_type
    return seed_records()


# ----------------------------------------------------------- alloc checking
class AllocCheck:
    def __init__(self, limit: int = ALLOC_LIMIT):
        self.limit = limit
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)

    def __enter__(self):
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        peak = tracemalloc.get_traced_memory()[1] - self.base
        self.peak = peak
        if exc[0] is None and peak > self.limit:
            raise FuzzFailure("alloc", "allocated %d bytes at peak for one input" % peak)
        return False


class LogWatch(logging.Handler):
    """Collects every log record that carries a traceback (log.exception)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list = []

    def emit(self, record):
        if record.exc_info:
            self.records.append(record)

    def take(self):
        r, self.records = self.records, []
        return r


# =================================================================== stream
class FakeTransport:
    def __init__(self):
        self.writes: list = []
        self.aborted = False
        self.paused = False

    def write(self, data):
        self.writes.append(bytes(data))

    def abort(self):
        self.aborted = True

    def close(self):
        self.aborted = True

    def is_closing(self):
        return self.aborted

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 999) if name == "peername" else default


class EchoDispatcher:
    """Records what the transport hands on; answers every third record at once
    and every record whose first byte is odd later (as an offloaded call)."""

    def __init__(self, packer_cls):
        from fastnfs.stats import Stats
        self.records: list = []
        self.stats = Stats()          # the transport counts refused records here
        self.Packer = packer_cls
        self.proto = None
        self.over_inflight = 0

    def dispatch(self, data, peer, proto):
        self.records.append(bytes(data))
        if data and data[0] & 1:
            if self.proto._inflight >= self.proto.max_inflight:
                self.over_inflight += 1

            async def later(p=self.Packer(4)):
                p.raw(bytes(data[:4]))
                return p
            return later()
        if len(self.records) % 3:
            return None
        p = self.Packer(4)
        p.raw(bytes(data[:4]))
        return p


def reference_records(stream: bytes, max_record: int):
    """(records, aborted) of an independent RFC 5531 section 11 parser.

    The limit counts each fragment with its 4-byte mark, so that a stream of
    empty fragments cannot grow a record's state without bound."""
    records, frags, total, pos = [], [], 0, 0
    while len(stream) - pos >= 4:
        mark = int.from_bytes(stream[pos:pos + 4], "big")
        n = mark & 0x7FFFFFFF
        if total + n + 4 > max_record:
            return records, True
        if len(stream) - pos - 4 < n:
            break
        frags.append(stream[pos + 4:pos + 4 + n])
        total += n + 4
        pos += 4 + n
        if mark & 0x80000000:
            records.append(b"".join(frags))
            frags, total = [], 0
    return records, False


def _chunks(data: bytes, key: int):
    """Cut data into chunks whose sizes follow from key (1..~300 bytes)."""
    sizes = (1, 2, 3, 4, 5, 7, 64, 300, len(data) or 1)
    i = 0
    pos = 0
    while pos < len(data):
        n = sizes[(key >> (i % 8)) % len(sizes)] if key else len(data)
        yield data[pos:pos + n]
        pos += n
        i += 1


class StreamTarget:
    MAX_RECORD = 32768

    def __init__(self):
        from fastnfs import transport
        from fastnfs.xdr import Packer
        self.transport = transport
        self.Packer = Packer
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        key, stream = data[0], data[1:]
        limit = self.MAX_RECORD if key < 128 else 256  # small: the limit is easy to reach
        disp = EchoDispatcher(self.Packer)
        proto = self.transport.RpcStreamProtocol(disp, limit, max_inflight=4)
        disp.proto = proto
        t = FakeTransport()
        proto.connection_made(t)
        for chunk in _chunks(stream, key):
            try:
                proto.data_received(chunk)
            except Exception as e:
                raise FuzzFailure("stream-exception", "data_received raised %r" % e) from e
            if t.aborted:
                break
            # bounded state: at most one partial fragment plus its mark is buffered
            # _fraglen counts each fragment's 4-byte mark too (so empty fragments are bounded)
            frag_bytes = sum(len(f) + 4 for f in proto._frags)
            if frag_bytes != proto._fraglen:
                raise FuzzFailure("stream-fraglen", "_fraglen %d but %d bytes in fragments"
                                  % (proto._fraglen, frag_bytes))
            if proto.buffered > limit + 8 or proto._fraglen > limit:
                raise FuzzFailure("stream-buffer", "%d bytes buffered, limit %d"
                                  % (proto.buffered + proto._fraglen, limit))
            if len(proto._frags) > limit // 4 + 2:
                raise FuzzFailure("stream-empty-fragments",
                                  "%d fragments held for one record of %d bytes: empty "
                                  "non-last fragments are never counted against max_record"
                                  % (len(proto._frags), proto._fraglen))
        pending = asyncio.all_tasks(self.loop)
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        if proto._inflight != 0:
            raise FuzzFailure("stream-inflight-count", "%d calls still counted in flight"
                              % proto._inflight)
        want, want_abort = reference_records(stream, limit)
        got = disp.records
        if t.aborted != want_abort or got != want[:len(got)] or (
                not t.aborted and len(got) != len(want)):
            raise FuzzFailure("stream-records", "got %d records (aborted=%s), reference %d "
                              "(aborted=%s)" % (len(got), t.aborted, len(want), want_abort))
        for i, w in enumerate(t.writes):
            mark = int.from_bytes(w[:4], "big")
            if mark != 0x80000000 | (len(w) - 4):
                raise FuzzFailure("stream-reply-mark", "reply %d has mark %#x for %d bytes"
                                  % (i, mark, len(w) - 4))
        proto.connection_lost(None)
        if disp.over_inflight:
            raise FuzzFailure("stream-inflight", "%d records dispatched while max_inflight "
                              "(%d) calls were unanswered" % (disp.over_inflight,
                                                              proto.max_inflight))


# ===================================================================== call
class CallTarget:
    """rpc.decode_call differential: the plain-Python decoder on PyUnpacker
    against the module's own (Cython when built) on xdr.Unpacker."""

    def __init__(self):
        from fastnfs import rpc, xdr
        self.rpc = rpc
        self.impls = [(getattr(rpc, "py_decode_call", rpc.decode_call), xdr.PyUnpacker)]
        if (rpc.decode_call, xdr.Unpacker) != self.impls[0]:
            self.impls.append((rpc.decode_call, xdr.Unpacker))
        self.XdrError = xdr.XdrError

    def _one(self, decode, cls, data):
        u = cls(data)
        try:
            h = decode(u, 7)
        except self.rpc.RpcReject as e:
            return ("reject", e.kind, tuple(e.values))
        except self.XdrError:
            return ("xdr",)
        except Exception as e:
            raise FuzzFailure("call-exception", "decode_call (%s, %s) raised %r"
                              % (decode.__module__, cls.__name__, e)) from e
        c = h.cred
        return ("ok", h.xid, h.prog, h.vers, h.proc, c.flavor, c.uid, c.gid, tuple(c.gids),
                bytes(c.machine), u.pos)

    def __call__(self, data: bytes) -> None:
        outs = [self._one(d, cls, data) for d, cls in self.impls]
        if len(outs) == 2 and outs[0] != outs[1]:
            raise FuzzFailure("call-differential", "python %r != cython %r" % tuple(outs))


# ============================================================ reply grammar
class BadReply(Exception):
    pass


NFS3_STATUSES = {0, 1, 2, 5, 6, 13, 17, 18, 19, 20, 21, 22, 27, 28, 30, 31, 63, 66, 69, 70,
                 71, 10001, 10002, 10003, 10004, 10005, 10006, 10007, 10008}
MNT3_STATUSES = {0, 1, 2, 5, 13, 20, 22, 63, 10004, 10006}


def _bool(u):
    v = u.unpack_uint()
    if v > 1:
        raise BadReply("bool %d" % v)
    return v == 1


def _fattr3(u):
    ftype = u.unpack_uint()
    if not 1 <= ftype <= 7:
        raise BadReply("ftype3 %d" % ftype)
    u.unpack_fopaque(80)


def _post_attr(u):
    if _bool(u):
        _fattr3(u)


def _wcc(u):
    if _bool(u):
        u.unpack_fopaque(24)
    _post_attr(u)


def _fh(u):
    fh = u.unpack_opaque()
    if len(fh) > 64:
        raise BadReply("nfs_fh3 of %d bytes" % len(fh))


def _post_fh(u):
    if _bool(u):
        _fh(u)


def _entries(u, plus):
    n = 0
    while _bool(u):
        u.unpack_uhyper()
        name = u.unpack_string()
        if not name or len(name) > 255:
            raise BadReply("entry name of %d bytes" % len(name))
        u.unpack_uhyper()
        if plus:
            _post_attr(u)
            _post_fh(u)
        n += 1
        if n > 100000:
            raise BadReply("endless entry list")
    _bool(u)


def _nfs_result(proc, u):
    st = u.unpack_uint()
    if st not in NFS3_STATUSES:
        raise BadReply("nfsstat3 %d" % st)
    ok = st == 0
    if proc == 1:        # GETATTR
        if ok:
            _fattr3(u)
    elif proc == 2:      # SETATTR
        _wcc(u)
    elif proc == 3:      # LOOKUP
        if ok:
            _fh(u)
            _post_attr(u)
        _post_attr(u)
    elif proc == 4:      # ACCESS
        _post_attr(u)
        if ok:
            u.unpack_uint()
    elif proc == 5:      # READLINK
        _post_attr(u)
        if ok:
            u.unpack_string()
    elif proc == 6:      # READ
        _post_attr(u)
        if ok:
            count = u.unpack_uint()
            _bool(u)
            data = u.unpack_opaque()
            if count != len(data):
                raise BadReply("READ count %d for %d bytes" % (count, len(data)))
    elif proc == 7:      # WRITE
        _wcc(u)
        if ok:
            u.unpack_uint()
            if u.unpack_uint() > 2:
                raise BadReply("stable_how")
            u.unpack_fopaque(8)
    elif proc in (8, 9, 10, 11):  # CREATE MKDIR SYMLINK MKNOD
        if ok:
            _post_fh(u)
            _post_attr(u)
        _wcc(u)
    elif proc in (12, 13):  # REMOVE RMDIR
        _wcc(u)
    elif proc == 14:     # RENAME
        _wcc(u)
        _wcc(u)
    elif proc == 15:     # LINK
        _post_attr(u)
        _wcc(u)
    elif proc in (16, 17):  # READDIR(PLUS)
        _post_attr(u)
        if ok:
            u.unpack_fopaque(8)
            _entries(u, proc == 17)
    elif proc == 18:     # FSSTAT
        _post_attr(u)
        if ok:
            for _ in range(6):
                u.unpack_uhyper()
            u.unpack_uint()
    elif proc == 19:     # FSINFO
        _post_attr(u)
        if ok:
            for _ in range(7):
                u.unpack_uint()
            u.unpack_uhyper()
            u.unpack_uint()
            u.unpack_uint()
            u.unpack_uint()
    elif proc == 20:     # PATHCONF
        _post_attr(u)
        if ok:
            u.unpack_uint()
            u.unpack_uint()
            for _ in range(4):
                _bool(u)
    elif proc == 21:     # COMMIT
        _wcc(u)
        if ok:
            u.unpack_fopaque(8)


def _mount_result(vers, proc, u):
    if proc == 1:        # MNT
        st = u.unpack_uint()
        if st not in MNT3_STATUSES:
            raise BadReply("mountstat3 %d" % st)
        if st == 0:
            if vers == 1:
                u.unpack_fopaque(32)
            else:
                _fh(u)
                n = u.unpack_uint()
                if n > 64:
                    raise BadReply("%d auth flavors" % n)
                for _ in range(n):
                    u.unpack_uint()
    elif proc == 2:      # DUMP
        while _bool(u):
            u.unpack_string()
            u.unpack_string()
    elif proc == 5:      # EXPORT
        while _bool(u):
            u.unpack_string()
            while _bool(u):
                u.unpack_string()


def check_reply(reply: bytes, xid: int, prog: int, vers: int, proc: int):
    """Parse a reply (no record mark); returns accept_stat or ('denied', stat)."""
    from xdrlib3 import Unpacker
    u = Unpacker(reply)
    try:
        if u.unpack_uint() != xid:
            raise BadReply("xid differs")
        if u.unpack_uint() != 1:
            raise BadReply("not a REPLY")
        rstat = u.unpack_uint()
        if rstat == 1:           # MSG_DENIED
            rj = u.unpack_uint()
            if rj == 0:
                u.unpack_uint()
                u.unpack_uint()
            elif rj == 1:
                a = u.unpack_uint()
                if not 1 <= a <= 7:
                    raise BadReply("auth_stat %d" % a)
            else:
                raise BadReply("reject_stat %d" % rj)
            u.done()
            return ("denied", rj)
        if rstat != 0:
            raise BadReply("reply_stat %d" % rstat)
        u.unpack_uint()          # verifier flavor
        if len(u.unpack_opaque()) > 400:
            raise BadReply("verifier over 400 bytes")
        astat = u.unpack_uint()
        if astat == 2:
            u.unpack_uint()
            u.unpack_uint()
        elif astat == 0:
            if prog == 100003 and proc != 0:
                _nfs_result(proc, u)
            elif prog == 100005:
                _mount_result(vers, proc, u)
        elif astat > 5:
            raise BadReply("accept_stat %d" % astat)
        u.done()
        return astat
    except BadReply:
        raise
    except Exception as e:  # xdrlib3 errors: truncated, trailing bytes...
        raise BadReply("%s: %s" % (type(e).__name__, e)) from None


# ================================================================= dispatch
def rewrite(data: bytes, handles: list, export_name: bytes, owns=None,
            fh_version: int = 1, max_anc: int = 5) -> bytes:
    """Replace what looks like a fastnfs filehandle (opaque<> of 24+8n bytes,
    version 1, n ancestors, reserved 0) by one of handles (chosen by its inode
    field) unless owns(old), and an XDR string starting with the capture
    export's path by the same path under export_name."""
    out = bytearray()
    pos = 0
    i = 24  # the call header's fixed part has no handle
    n = len(data)
    while i + 4 <= n:
        ln = int.from_bytes(data[i:i + 4], "big")
        if (24 <= ln <= 24 + 8 * max_anc and (ln - 24) % 8 == 0 and i + 4 + ln <= n
                and data[i + 4] == fh_version and data[i + 5] == (ln - 24) // 8
                and data[i + 6] == 0 and data[i + 7] == 0):
            old = data[i + 4:i + 4 + ln]
            if owns is None or not owns(old):
                new = handles[int.from_bytes(old[8:16], "big") % len(handles)]
                out += data[pos:i]
                out += struct.pack(">I", len(new)) + new
                pos = i + 4 + ln
            i += 4 + ln
            continue
        if (len(CAPTURE_EXPORT) <= ln <= 1024 and i + 4 + ln <= n
                and data[i + 4:i + 4 + len(CAPTURE_EXPORT)] == CAPTURE_EXPORT):
            s = export_name + data[i + 4 + len(CAPTURE_EXPORT):i + 4 + ln]
            out += data[pos:i]
            out += struct.pack(">I", len(s)) + s + b"\0" * (-len(s) & 3)
            pos = i + 4 + ((ln + 3) & ~3)
            i = pos
            continue
        i += 4
    if pos == 0:
        return data
    out += data[pos:]
    return bytes(out)


def _populate(root: Path) -> None:
    (root / "file").write_bytes(b"0123456789abcdef" * 256)
    (root / "empty").write_bytes(b"")
    d = root / "dir"
    d.mkdir()
    (d / "sub").mkdir()
    (d / "inner").write_bytes(b"inner\n")
    for i in range(12):
        (d / ("e%02d" % i)).write_bytes(b"x")
    os.symlink("file", root / "link")
    os.symlink("../..", d / "up")
    os.mkfifo(root / "fifo")
    os.link(root / "file", d / "hard")


def _as_server() -> None:
    from fastnfs import creds
    if creds.ENABLED:
        creds.become_server()


def _wipe(root: Path) -> None:
    """Empty root whatever modes the fuzzer left (we own everything in it)."""
    # the root first: a fuzzed SETATTR may have left it 000, and os.walk then
    # silently lists nothing, so no directory below would be made removable
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root, topdown=True, onerror=None):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    os.chmod(root, 0o755)
    for entry in os.scandir(root):
        p = entry.path
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def remove_tree(path) -> None:
    """rmtree whatever modes the fuzzer left in it."""
    p = Path(path)
    if p.exists():
        _wipe(p)
        shutil.rmtree(p, ignore_errors=True)


class DispatchTarget:
    def __init__(self, base: str | None = None):
        from fastnfs.exports import single_export
        from fastnfs.server import Config, Server
        from fastnfs.handles import FH_VERSION, MAX_ANCESTORS
        base = base or os.environ.get("FASTNFS_FUZZ_SCRATCH") or (
            "/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.tmp = Path(tempfile.mkdtemp(prefix="fastnfs-fuzz-", dir=base))
        self.root = self.tmp / "export"
        self.root.mkdir()
        self.server = Server(Config(exports=[single_export(str(self.root))], portmap=False,
                                    fhcache_size=4096))
        self.export = self.server.exports[0]
        self.disp = self.server.dispatcher
        from concurrent.futures import ThreadPoolExecutor
        self.disp.executor = ThreadPoolExecutor(max_workers=2)
        self.loop = asyncio.new_event_loop()
        self.fh_version = FH_VERSION
        self.max_anc = MAX_ANCESTORS
        self.export_name = os.fsencode(self.export.name)
        self.runs = 0
        self.outcomes: dict = {}   # (prog, proc, first result word) -> count
        self.watch = LogWatch()
        logging.getLogger("fastnfs").addHandler(self.watch)
        self.reset()

    def close(self):
        _as_server()
        self.disp.executor.shutdown(wait=True)
        self.loop.close()
        for e in self.server.exports:
            e.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- scratch tree ---------------------------------------------------------
    def reset(self) -> None:
        # the general path leaves this thread acting as the last caller (a fuzzed
        # uid, when run as root): wipe and repopulate as the server itself
        _as_server()
        _wipe(self.root)
        _populate(self.root)
        e = self.export
        root = e.resolve(e.root_fh)
        objs = [root]
        for path in (b"file", b"dir", b"link", b"fifo", b"empty", b"dir/sub", b"dir/inner",
                     b"dir/up"):
            o = root
            for comp in path.split(b"/"):
                o = e.lookup(o, comp)
            objs.append(o)
        self.handles = [e.fh(o) for o in objs]
        self.disp.drc = type(self.disp.drc)(self.disp.drc.maxsize)

    # -- structure-aware rewriting -------------------------------------------
    def fixup(self, data: bytes) -> bytes:
        """Map foreign filehandles and capture-export paths onto this export."""
        eid = self.export.export_id
        return rewrite(data, self.handles, self.export_name,
                       lambda fh: len(fh) >= 8 and int.from_bytes(fh[4:8], "big") == eid)

    # -- one input ------------------------------------------------------------
    def __call__(self, data: bytes, fix: bool = True) -> None:
        self.runs += 1
        if self.runs % RESET_EVERY == 0:
            self.reset()
        if fix:
            data = self.fixup(data)
        if len(data) < 8:
            proto = "tcp"
        else:
            proto = "udp" if data[3] & 1 else "tcp"
        peer = ("127.0.0.1", 700 + (len(data) & 1) * 40000)
        try:
            r = self.disp.dispatch(data, peer, proto)
            if asyncio.iscoroutine(r):
                r = self.loop.run_until_complete(r)
        except Exception as e:
            raise FuzzFailure("dispatch-exception", "dispatch raised %r" % e) from e
        tb = self.watch.take()
        if tb:
            rec = tb[0]
            raise FuzzFailure("logged-traceback", "%s: %r" % (rec.getMessage(), rec.exc_info[1]))
        is_call = len(data) >= 8 and int.from_bytes(data[4:8], "big") == 0
        if r is None:
            if is_call and not self._drc_in_progress(data):
                raise FuzzFailure("no-reply", "a call got no reply")
            return
        if not is_call:
            raise FuzzFailure("reply-to-non-call", "answered a record that is not a call")
        reply = bytes(r.getbuffer())[4:]
        xid, prog, vers, proc = (int.from_bytes(data[k:k + 4], "big") for k in (0, 12, 16, 20))
        if len(data) < 24:
            prog = vers = proc = -1
        if proto == "udp" and len(reply) > 65507:
            raise FuzzFailure("udp-oversize", "UDP reply of %d bytes" % len(reply))
        try:
            st = check_reply(reply, xid, prog, vers, proc)
        except BadReply as e:
            raise FuzzFailure("bad-reply", "prog %d vers %d proc %d: %s"
                              % (prog, vers, proc, e)) from None
        if st == 5:
            raise FuzzFailure("system-err", "SYSTEM_ERR for prog %d proc %d" % (prog, proc))
        fast = self.disp.fast
        if fast is not None:
            from fastnfs.shadow import comparable
            # the Cython fast lane must decline or give the general path's bytes
            if prog == 100003 and proc in (5, 6):
                # a first READ/READLINK may move atime (relatime): compare with a second
                r2 = self.disp.dispatch(data, peer, proto)
                if asyncio.iscoroutine(r2):
                    r2 = self.loop.run_until_complete(r2)
                reply = bytes(r2.getbuffer())[4:] if r2 is not None else reply
            tcp = proto == "tcp"    # (the lane's READ limit is the transport's)
            f = fast.answer(data, peer, 0, tcp)
            if f is not None and tcp:
                f = f[4:]
            # (a WRITE done twice: what it moves is left out, as shadow mode does)
            if f is not None and comparable(data, f) != comparable(data, reply):
                raise FuzzFailure("fast-lane-differs", "prog %d proc %d: fast lane %r, general %r"
                                  % (prog, proc, f[:64], reply[:64]))
        if st == 0 and len(reply) >= 28:
            k = (prog, proc, int.from_bytes(reply[24:28], "big") if proc else 0)
            self.outcomes[k] = self.outcomes.get(k, 0) + 1

    def _drc_in_progress(self, data) -> bool:
        return any(v == b"" for v in self.disp.drc._d.values())


# ================================================================ plumbing
def make_target(name: str):
    logging.getLogger("fastnfs").setLevel(logging.ERROR)  # refusals etc. are expected
    if name == "stream":
        return StreamTarget()
    if name == "call":
        return CallTarget()
    if name == "dispatch":
        return DispatchTarget()
    raise ValueError("unknown target %r (one of %s)" % (name, ", ".join(TARGETS)))


class Checked:
    """target + allocation bound + known-bug accounting."""

    def __init__(self, target):
        self.target = target
        self.alloc = AllocCheck()
        self.execs = 0
        self.known: dict = {}
        self.examples: dict = {}

    def __call__(self, data: bytes) -> None:
        if len(data) > MAX_INPUT:
            data = data[:MAX_INPUT]
        self.execs += 1
        try:
            with self.alloc:
                self.target(data)
        except FuzzFailure as e:
            k = known_bug(e)
            if k is None:
                raise
            self.known[k] = self.known.get(k, 0) + 1
            self.examples.setdefault(k, data)


def drop_privileges(uid: int = 65534, gid: int = 65534) -> bool:
    """Become nobody when root: a fuzzed server then cannot hurt the machine."""
    if os.geteuid() != 0:
        return False
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    return True


def crc(data: bytes) -> str:
    return "%08x" % zlib.crc32(data)
