"""Boards served by more than one process: every worker sees every change at once.

With --workers N the kernel spreads a board's connections over N processes,
and `fastnfs boards reset` runs in yet another.  Two fastnfs servers over the
same base and boards directory stand for two workers (handles carry the same
export id in both, as they do across workers): a change acknowledged through
one is seen through the other at its next call.
"""

from __future__ import annotations

import pytest

from conftest import FastnfsProcess
from rpcclient import (FILE_SYNC, GUARDED, NFS3_OK, NFS3ERR_NOENT, NFS3ERR_STALE, AuthSys,
                       Nfs3)
from test_boards import (attrs, boards_cli, lookup, make_base, names, new_farm, read_all,
                         tree_digest)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    f = new_farm(tmp_path_factory.mktemp("pair"))
    for k in ("a", "b"):
        f[k] = FastnfsProcess(f["base"], ["--boards", str(f["boards"])],
                              log_path=f["top"] / ("%s.log" % k)).start()
    yield f
    f["a"].stop()
    f["b"].stop()
    assert tree_digest(f["base"]) == f["before"]


def both(pair, board):
    out = []
    for k in ("a", "b"):
        n = Nfs3.connect(pair[k].port, cred=AuthSys(uid=0, gid=0))
        n.root = n.mount("%s@%s" % (pair["base"], board))
        out.append(n)
    return out


def test_changes_seen_at_once_by_the_other_worker(pair):
    a, b = both(pair, "w1")
    try:
        # warm b's view first: it must not keep it after a's changes
        _, etc_b = lookup(b, "etc")
        assert b"hostname" in names(b, etc_b)
        _, pw_b = lookup(b, "etc/passwd")
        assert attrs(b, pw_b)["mode"] & 0o7777 == 0o644
        _, log_b = lookup(b, "var/log")
        assert names(b, log_b) == [b"old.log"]
        assert lookup(b, "etc/new")[0] == NFS3ERR_NOENT

        # whiteout of a base file
        _, etc = lookup(a, "etc")
        assert a.remove(etc, "hostname")[0] == NFS3_OK
        assert lookup(b, "etc/hostname")[0] == NFS3ERR_NOENT
        assert b"hostname" not in names(b, etc_b)
        assert b"hostname" not in names(b, etc_b, plus=True)
        # a new file
        st, r = a.create(etc, "new", how=GUARDED)
        assert st == NFS3_OK
        assert a.write(r["fh"], 0, b"made in a", stable=FILE_SYNC)[0] == NFS3_OK
        st, fh = lookup(b, "etc/new")
        assert st == NFS3_OK and fh == r["fh"]
        assert read_all(b, r["fh"]) == b"made in a"
        # chmod of a base file: metadata only, kept in the layer's database
        _, pw = lookup(a, "etc/passwd")
        assert a.setattr(pw, mode=0o600, uid=1234)[0] == NFS3_OK
        ab = attrs(b, pw_b)
        assert (ab["mode"] & 0o7777, ab["uid"]) == (0o600, 1234)
        # rename of a base file
        _, log = lookup(a, "var/log")
        assert a.rename(log, "old.log", log, "old.log.1")[0] == NFS3_OK
        assert names(b, log_b) == [b"old.log.1"]
        assert lookup(b, "var/log/old.log")[0] == NFS3ERR_NOENT
        # rename of a base directory with content (a redirect)
        _, opt = lookup(a, "opt")
        assert a.rename(opt, "app", opt, "app2")[0] == NFS3_OK
        _, app2 = lookup(b, "opt/app2")
        assert names(b, app2) == [b"data", b"main.py"]
        assert lookup(b, "opt/app2/data/x")[0] == NFS3_OK

        # and the other way round: b changes what a's view holds
        _, etc_b = lookup(b, "etc")
        st, r = b.create(etc_b, "hostname", how=GUARDED)   # over a's whiteout
        assert st == NFS3_OK
        assert b.write(r["fh"], 0, b"b\n", stable=FILE_SYNC)[0] == NFS3_OK
        st, fh = lookup(a, "etc/hostname")
        assert st == NFS3_OK and read_all(a, fh) == b"b\n"
        assert b.setattr(pw_b, mode=0o640)[0] == NFS3_OK
        assert attrs(a, pw)["mode"] & 0o7777 == 0o640
        _, app2_b = lookup(b, "opt/app2")
        assert b.remove(app2_b, "main.py")[0] == NFS3_OK
        assert names(a, lookup(a, "opt/app2")[1]) == [b"data"]
        assert a.remove(lookup(a, "opt/app2/data")[1], "x")[0] == NFS3_OK
        assert b.rmdir(app2_b, "data")[0] == NFS3_OK
        assert names(a, lookup(a, "opt/app2")[1]) == []
    finally:
        a.close()
        b.close()
    r = boards_cli(pair, "diff", "w1")
    assert r.returncode == 0, r.stderr
    lines = sorted(" ".join(ln.split()) for ln in r.stdout.splitlines())
    assert "deleted /opt/app" in lines and "added /etc/new" in lines, lines


def test_copy_up_in_one_worker_keeps_handles_in_the_other(pair):
    a, b = both(pair, "w2")
    try:
        _, hn = lookup(b, "etc/hostname")
        fid = attrs(b, hn)["fileid"]
        _, hn_a = lookup(a, "etc/hostname")
        assert hn_a == hn
        assert a.write(hn, 0, b"w2", stable=FILE_SYNC)[0] == NFS3_OK   # copy-up in a
        assert read_all(b, hn) == b"w2se\n"
        assert attrs(b, hn)["fileid"] == fid
        # a hard-linked base file copied up in b stays one object in a
        _, sh = lookup(b, "bin/sh")
        assert b.write(sh, 0, b"#!", stable=FILE_SYNC)[0] == NFS3_OK
        _, bb = lookup(a, "bin/busybox")
        assert read_all(a, bb)[:2] == b"#!"
        assert attrs(a, bb)["fileid"] == attrs(a, sh)["fileid"]
    finally:
        a.close()
        b.close()


def test_reset_seen_by_every_worker(pair):
    a, b = both(pair, "w3")
    try:
        st, r = a.create(a.root, "mine", how=GUARDED)
        mine = r["fh"]
        _, hn = lookup(a, "etc/hostname")
        assert a.write(hn, 0, b"w3\n", stable=FILE_SYNC)[0] == NFS3_OK
        assert read_all(b, hn) == b"w3\ne\n"
        assert b.getattr(mine)[0] == NFS3_OK
        r = boards_cli(pair, "reset", "w3")
        assert r.returncode == 0, r.stderr
        for n in (a, b):
            assert read_all(n, hn) == b"base\n"
            assert n.getattr(mine)[0] == NFS3ERR_STALE
            assert lookup(n, "mine")[0] == NFS3ERR_NOENT
        # the new layer is shared too
        st, r = b.create(b.root, "again", how=GUARDED)
        assert st == NFS3_OK
        assert a.getattr(r["fh"])[0] == NFS3_OK
        assert lookup(a, "again")[0] == NFS3_OK
    finally:
        a.close()
        b.close()


def test_boards_keep_the_default_workers(tmp_path):
    """--boards no longer forces one worker."""
    base = tmp_path / "rootfs"
    make_base(base)
    srv = FastnfsProcess(base, ["--boards", str(tmp_path / "boards"), "--workers", "2"]).start()
    try:
        assert "worker 1 started" in srv.log()
        ns = []
        for _ in range(6):   # connections spread over both workers
            n = Nfs3.connect(srv.port, cred=AuthSys(uid=0, gid=0))
            n.root = n.mount("%s@wk" % base)
            ns.append(n)
        st, r = ns[0].create(ns[0].root, "f", how=GUARDED)
        assert st == NFS3_OK
        for n in ns:
            assert lookup(n, "f")[0] == NFS3_OK
        assert ns[1].remove(ns[1].root, "f")[0] == NFS3_OK
        for n in ns:
            assert lookup(n, "f")[0] == NFS3ERR_NOENT
        for n in ns:
            n.close()
    finally:
        srv.stop()


def test_concurrent_changes_from_both_workers(pair):
    """Changes racing through both processes: none of the bookkeeping is lost."""
    import threading
    a, b = both(pair, "w4")
    errors = []

    def churn(n, tag, victims):
        try:
            _, many = lookup(n, "many")
            for i, v in enumerate(victims):
                assert n.remove(many, v)[0] == NFS3_OK                       # whiteouts
                assert n.create(many, "%s-%d" % (tag, i), how=GUARDED)[0] == NFS3_OK
                st, fh = lookup(n, "many/file-%03d-with-a-long-name" % (
                    100 + i % 10 + (10 if tag == "b" else 0)))
                assert st == NFS3_OK, st
                assert n.setattr(fh, mode=0o600)[0] == NFS3_OK
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)

    victims = ["file-%03d-with-a-long-name" % i for i in range(40)]
    try:
        ts = [threading.Thread(target=churn, args=(a, "a", victims[0:40:2])),
              threading.Thread(target=churn, args=(b, "b", victims[1:40:2]))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
        for n in (a, b):
            _, many = lookup(n, "many")
            got = names(n, many)
            assert not set(v.encode() for v in victims) & set(got)
            assert {g for g in got if g[:2] in (b"a-", b"b-")} == {
                b"%s-%d" % (t, i) for t in (b"a", b"b") for i in range(20)}
            assert len(got) == 120 - 40 + 40
            for i in range(100, 120):
                fh = lookup(n, "many/file-%03d-with-a-long-name" % i)[1]
                assert attrs(n, fh)["mode"] & 0o7777 == 0o600
    finally:
        a.close()
        b.close()
