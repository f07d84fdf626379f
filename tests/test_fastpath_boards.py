"""The fast lane on board exports (issue 13, item 7): it answers for objects
that are the base's own, with the board's export id, fsid and handles, and
declines everything the board's layer has a say in; where it answers, its
bytes are the general path's (Dispatcher.dispatch), the reference.

Changes are made through the general path (an Nfs3 client whose calls are
dispatched in process) and by ``boards reset``, as a second process would.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cython_twin
from rpcclient import (ACCESS, GETATTR, LOOKUP, READ, READLINK, AuthSys, Nfs3, Reply,
                       call_header)
from test_fastpath import PATHS, _access, _both, _call, _dirop, _fh, _read, _tree

from fastnfs.boards import Boards
from fastnfs.exports import single_export
from fastnfs.server import Config, Server

_cx, _why = cython_twin("fastnfs._fastpath")
pytestmark = pytest.mark.skipif(_cx is None, reason=_why or "")

ROOT = AuthSys(0, 0, machine=b"board")
USER = AuthSys(1000, 1000, gids=(1000, 24), machine=b"board")
FILES = [b"etc/passwd", b"etc/shadow", b"etc/init.d/rcS",
         b"usr/lib/deep/er/still/deeper/and/more/libc.so"]


class _InProcess:
    """An RpcClient whose calls the server's general path answers in process."""

    def __init__(self, srv, cred=ROOT):
        self.srv = srv
        self.cred = cred
        self.xid = 0x5000

    def call(self, prog, vers, proc, args=b""):
        self.xid += 1
        rec = call_header(self.xid, prog, vers, proc, self.cred) + args
        p = self.srv.dispatcher.dispatch(rec, ("127.0.0.1", 800), "tcp")
        if asyncio.iscoroutine(p):      # (a call the dispatcher finishes in its pool)
            p = asyncio.new_event_loop().run_until_complete(p)
        return Reply(bytes(p.getbuffer()[4:]))


class Farm:
    def __init__(self, tmp_path, virtfs=False):
        self.base = tmp_path / "root"
        _tree(self.base)
        self.dir = tmp_path / "boards"
        self.srv = Server(Config(exports=[single_export(str(self.base))], boards=str(self.dir),
                                 virtfs=virtfs))
        self.e = self.srv.exports[0].boards.get(b"b1")
        self.nfs = Nfs3(_InProcess(self.srv))

    def root(self):
        return self.e.root_fh

    def walk(self, path: bytes, cred=ROOT):
        """(handle, lane reply or None) of path, each LOOKUP held to the general path's bytes."""
        fh, f = self.root(), None
        for name in path.split(b"/"):
            f, g = _both(self.srv, _call(LOOKUP, _dirop(fh, name), cred))
            assert f is None or f == g, (path, name)
            if int.from_bytes(g[24:28], "big"):
                return None, f
            n = int.from_bytes(g[28:32], "big")
            fh = g[32:32 + n]
        return fh, f

    def calls(self, fh, cred=ROOT):
        """Every call the lane may answer on fh: [(lane reply or None, general reply)]."""
        out = []
        for rec in (_call(GETATTR, _fh(fh), cred), _call(ACCESS, _access(fh, 0x3F), cred),
                    _call(READLINK, _fh(fh), cred), _call(READ, _read(fh, 0, 4096), cred),
                    _call(READ, _read(fh, 100, 7), cred)):
            out.append(_both(self.srv, rec))
        return out

    def same(self, fh, cred=ROOT) -> int:
        """Check lane == general on fh; the number of calls the lane answered."""
        answered = 0
        for f, g in self.calls(fh, cred):
            assert f is None or f == g
            answered += f is not None
        return answered

    def close(self):
        self.srv.close() if hasattr(self.srv, "close") else None


@pytest.fixture(params=[False, True], ids=["plain-base", "virtfs-base"])
def farm(tmp_path, request):
    f = Farm(tmp_path, virtfs=request.param)
    yield f
    f.close()


def _status(reply: bytes) -> int:
    return int.from_bytes(reply[24:28], "big")


def test_pure_base_objects_answered_by_the_lane(farm):
    """GETATTR, ACCESS, LOOKUP, READLINK and READ of a fresh board's objects: the
    lane answers (they are the base's own) with the general path's bytes."""
    fast = farm.srv.dispatcher.fast
    before = fast.answered
    assert farm.same(farm.root()) >= 2          # the root: GETATTR and ACCESS
    for path in PATHS:
        fh, f = farm.walk(path)
        assert fh is not None and f is not None, path     # LOOKUP answered by the lane
        assert farm.same(fh) >= 2, path
    for path in FILES:
        fh, _f = farm.walk(path)
        f, g = _both(farm.srv, _call(READ, _read(fh, 0, 4096), ROOT))
        assert f == g, path
    f, g = _both(farm.srv, _call(READLINK, _fh(farm.walk(b"etc/lib")[0]), ROOT))
    assert f == g
    # a name that is nowhere: NOENT with the directory's attributes
    for d in (b"", b"etc/"):
        dfh = farm.walk(d.rstrip(b"/"))[0] if d else farm.root()
        f, g = _both(farm.srv, _call(LOOKUP, _dirop(dfh, b"nothing"), ROOT))
        assert f == g and _status(g) == 2
    assert fast.answered - before > 40


def test_handles_and_attributes_are_the_boards(farm):
    """The lane's handles carry the board's export id and fsid: the base export's
    handle of the same object is another one."""
    fh, f = farm.walk(b"etc/passwd")
    assert f is not None
    base_fh = farm.srv.exports[0].root_fh
    assert fh[4:8] == farm.e.root_fh[4:8] != base_fh[4:8]
    f, g = _both(farm.srv, _call(GETATTR, _fh(fh), ROOT))
    assert f == g
    fsid = int.from_bytes(g[28 + 44:28 + 52], "big")     # fattr3's fsid
    assert fsid == farm.e.fsid


def _changes(farm):
    n = farm.nfs
    etc = farm.walk(b"etc")[0]
    yield "write", lambda: n.write(farm.walk(b"etc/passwd")[0], 0, b"board1:x:1:1::/:/bin/sh\n")
    yield "chmod", lambda: n.setattr(farm.walk(b"etc/shadow")[0], mode=0o600)
    yield "chmod-dir", lambda: n.setattr(farm.walk(b"usr/lib/deep")[0], mode=0o700)
    yield "remove", lambda: n.remove(etc, b"lib")
    yield "rename-dir", lambda: n.rename(etc, b"init.d", etc, b"rc.d")
    yield "create", lambda: n.create(farm.root(), b"new-at-root")
    yield "mkdir", lambda: n.mkdir(farm.walk(b"usr")[0], b"local")
    yield "chmod-root", lambda: n.setattr(farm.root(), mode=0o711)


@pytest.mark.parametrize("which", ["write", "chmod", "chmod-dir", "remove", "rename-dir",
                                   "create", "mkdir", "chmod-root"])
def test_after_a_change_the_lane_declines_or_agrees(farm, which):
    handles = {p: farm.walk(p)[0] for p in PATHS + [b"etc/init.d/rcS"]}
    handles[b"."] = farm.root()
    for fh in handles.values():
        farm.same(fh)
    dict(_changes(farm))[which]()
    changed = {"write": [b"etc/passwd"], "chmod": [b"etc/shadow"],
               "chmod-dir": [b"usr/lib/deep"], "remove": [b"etc/lib"],
               "rename-dir": [b"etc/init.d", b"etc/init.d/rcS"]}.get(which, [])
    for p, fh in handles.items():
        for f, g in farm.calls(fh):
            assert f is None or f == g, (which, p)
            if p in changed:
                assert f is None, (which, p)     # the layer has a say: general path
    # walking again: every LOOKUP the lane answers is the general path's
    for p in PATHS + [b"etc/rc.d/rcS", b"new-at-root", b"usr/local", b"etc/lib"]:
        fh, _f = farm.walk(p)
        if fh is not None:
            farm.same(fh)
    # what the change left untouched (no copy-up on the way) is the lane's again
    fh, f = farm.walk(b"etc/passwd" if which in ("chmod-dir", "mkdir") else b"usr/lib/deep/er")
    assert f is not None and farm.same(fh) >= 2


def test_known_to_the_general_path_after_a_change_elsewhere(farm):
    """A change moves the layer's generation and the lane forgets what it knew;
    a handle the general path knows is the lane's again without a LOOKUP, once
    the backend says it is still the base's own."""
    fh, f = farm.walk(b"usr/lib/deep/er")
    etc_fh, _f = farm.walk(b"etc")
    pw, _f = farm.walk(b"etc/passwd")
    farm.nfs.create(farm.root(), b"elsewhere")        # the generation moves
    assert farm.same(fh) >= 2
    farm.nfs.write(pw, 0, b"x")                        # etc/ is copied up, passwd too
    for h in (etc_fh, pw):
        for f, g in farm.calls(h):
            assert f is None, h
    assert farm.same(fh) >= 2


def test_reset_stale_handles_and_the_base_again(farm):
    """After `boards reset` (another process), the board's handles of objects
    that no longer exist answer STALE (the lane declines them), and the base's
    objects are the lane's again."""
    n = farm.nfs
    etc = farm.walk(b"etc")[0]
    st, res = n.create(etc, b"machine-id")
    new_fh = farm.walk(b"etc/machine-id")[0]
    n.write(farm.walk(b"etc/passwd")[0], 0, b"changed\n")
    assert new_fh is not None
    Boards(str(farm.dir)).reset(b"b1")
    for f, g in farm.calls(new_fh):
        assert f is None
        assert _status(g) == 70          # NFS3ERR_STALE
    fh, f = farm.walk(b"etc/passwd")
    assert f is not None
    answered = farm.same(fh)
    assert answered >= 2
    f, g = _both(farm.srv, _call(READ, _read(fh, 0, 4096), ROOT))
    assert f == g and b"root:x:0:0" in g


def test_another_process_change_is_seen_at_once(farm, tmp_path):
    """A change made by another process serving the board (here: a second
    server over the same boards directory) moves the layer's generation: the
    lane stops answering for the object at once."""
    fh, f = farm.walk(b"etc/passwd")
    assert f is not None and farm.same(fh) >= 2
    other = Server(Config(exports=[single_export(str(farm.base))], boards=str(farm.dir)))
    oe = other.exports[0].boards.get(b"b1")
    on = Nfs3(_InProcess(other))
    ofh = oe.root_fh
    for name in (b"etc", b"passwd"):
        st, res = on.lookup(ofh, name)
        ofh = res["fh"] if isinstance(res, dict) else res
    on.setattr(ofh, mode=0o600)
    for f, g in farm.calls(fh):
        assert f is None or f == g
    f, g = _both(farm.srv, _call(GETATTR, _fh(fh), ROOT))
    assert f is None
    assert int.from_bytes(g[28 + 4:28 + 8], "big") & 0o7777 == 0o600


OPS = st.lists(st.sampled_from(["write", "chmod", "chmod-dir", "remove", "rename-dir", "create",
                                "mkdir", "chmod-root", "reset", "look"]), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_sequence_of_changes(tmp_path_factory, ops):
    farm = Farm(tmp_path_factory.mktemp("hyp"), virtfs=False)
    handles = {p: farm.walk(p)[0] for p in PATHS}
    handles[b"."] = farm.root()
    changes = dict(_changes(farm))
    for op in ops:
        try:
            if op == "reset":
                Boards(str(farm.dir)).reset(b"b1")
            elif op != "look":
                changes[op]()
        except Exception:
            pass    # (a change that no longer applies: a name already gone)
        for p in PATHS + [b"etc/rc.d", b"new-at-root", b"usr/local"]:
            fh, _f = farm.walk(p, USER)
            if fh is not None:
                handles[p + b"@"] = fh
        for fh in handles.values():
            if fh is not None:
                farm.same(fh)
                farm.same(fh, USER)
    farm.close()


def _readdirplus(fh: bytes, cookie: int, dircount: int, maxcount: int) -> bytes:
    from xdrlib3 import Packer
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(cookie)
    p.pack_fopaque(8, b"\0" * 8)
    p.pack_uint(dircount)
    p.pack_uint(maxcount)
    return p.get_buffer()


def test_readdirplus_of_a_base_directory_c_and_python_twins(farm, monkeypatch):
    """A directory that is the base's own has its entries written in C
    (put_board_entries_plus); the backend's per-entry loop is its twin: the same
    bytes, whatever the page size, with a file of two names and one whose
    attributes the board changed among them."""
    from fastnfs.backends import boards as bmod
    from rpcclient import READDIRPLUS
    os.link(farm.base / "etc/passwd", farm.base / "etc/passwd-")
    farm.nfs.setattr(farm.walk(b"etc/shadow")[0], mode=0o600)   # metadata only
    for i in range(40):
        (farm.base / "usr/lib" / ("lib%02d.so" % i)).write_bytes(b"x" * i)
    dirs = [farm.walk(p)[0] for p in (b"etc", b"usr/lib", b"etc/init.d", b"usr")]
    c_entries = bmod._c_board_entries
    assert c_entries is not None
    calls = []
    monkeypatch.setattr(bmod, "_c_board_entries",
                        lambda *a: calls.append(a[6]) or c_entries(*a))
    replies = {}
    for _ in range(2):    # (the first listing of a directory may move its atime)
        for fh in dirs:
            for dircount, maxcount in ((8192, 32768), (100, 600), (512, 1400), (1, 300)):
                rec = _call(READDIRPLUS, _readdirplus(fh, 0, dircount, maxcount), ROOT)
                replies[rec] = _both(farm.srv, rec)[1]
    assert calls                                     # the C loop wrote entries
    monkeypatch.setattr(bmod, "_c_board_entries", None)
    for rec, g in replies.items():
        assert _both(farm.srv, rec)[1] == g


def test_listing_of_a_base_directory_is_locates(farm):
    """The listing of a directory that is the base's own, read without locating
    each entry, has the fileids locate gives (LOOKUP's)."""
    from fastnfs.fs import name_cookie
    os.link(farm.base / "etc/passwd", farm.base / "etc/passwd-")
    farm.nfs.setattr(farm.walk(b"etc/shadow")[0], mode=0o600)
    b = farm.e.backend
    for d in (b"etc", b"usr/lib", b"etc/init.d"):
        with b.lock:
            got = b._listing(d)
            want = sorted((name_cookie(n), n, b.locate(d + b"/" + n).fileid)
                          for n in b._merged_names(d))
        assert got == want and got
