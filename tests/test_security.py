"""The export boundary: forged handles, symlinks out of the export, hostile names, MNT paths.

The server must never reach an object outside the exported directory and a
handle must never be taken for a different object than the one it names.
"""

from __future__ import annotations

import os
import random
import stat
import struct

import pytest

from conftest import FastnfsProcess
from rpcclient import (CREATE, GARBAGE_ARGS, NF3LNK, NFS3_OK, NFS3ERR_ACCES,
                       NFS3ERR_BADHANDLE, NFS3ERR_INVAL, NFS3ERR_NAMETOOLONG, NFS3ERR_NOENT,
                       NFS3ERR_NOTDIR, NFS3ERR_STALE, NFS_PROGRAM, NFS_V3, UNCHECKED, MNT3_OK,
                       Nfs3, RpcClient, RpcError, Timeout, fh_fields)

BAD_HANDLE = {NFS3ERR_BADHANDLE, NFS3ERR_STALE}
SECRET = b"inside-the-export"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("sec")
    export = base / "export"
    export.mkdir()
    # things next to the export that must stay out of reach
    (base / "outside.txt").write_bytes(b"outside the export")
    (base / "exportx").mkdir()  # shares the export path as a string prefix
    (export / "dir").mkdir()
    (export / "dir" / "a").write_bytes(SECRET + b" a")
    (export / "dir" / "b").write_bytes(SECRET + b" b")
    (export / "dir" / "c").write_bytes(SECRET + b" c")
    (export / "dir" / "deeper").mkdir()
    (export / "dir" / "deeper" / "d").write_bytes(SECRET + b" d")
    os.symlink("/", export / "to_root")
    os.symlink("/etc", export / "to_etc")
    os.symlink("../outside.txt", export / "to_outside")
    srv = FastnfsProcess(export).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-4000:]


@pytest.fixture(scope="module")
def nfs(server):
    n = Nfs3.connect(server.port)
    n.root = n.mount(str(server.export))
    yield n
    n.close()


def fh_of(nfs, *names):
    fh = nfs.root
    for name in names:
        st, r = nfs.lookup(fh, name)
        assert st == NFS3_OK, (names, st)
        fh = r["fh"]
    return fh


def export_tree(root) -> set:
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def inos_in_export(root) -> set:
    out = {os.lstat(root).st_ino}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.lstat(os.path.join(d, n)).st_ino)
    return out


def check_forged(nfs, server, fh, expect_ino=None):
    """GETATTR and READ of a forged handle: refused, or exactly the object it names."""
    st, r = nfs.getattr(fh)
    if st in BAD_HANDLE:
        rst, rr = nfs.read(fh, 0, 100)
        assert rst in BAD_HANDLE, (fh.hex(), rst)
        return st
    assert st == NFS3_OK, (fh.hex(), st)
    ino = r["attrs"]["fileid"]
    assert ino in inos_in_export(server.export), "reached an object outside the export"
    assert expect_ino is not None, "forged handle %s accepted as inode %d" % (fh.hex(), ino)
    assert ino == expect_ino, "handle for inode %d gave inode %d" % (expect_ino, ino)
    rst, rr = nfs.read(fh, 0, 100)
    if rst == NFS3_OK:
        assert os.stat(os.path.join(server.export, "dir", "a")).st_ino != ino or \
            rr["data"] == SECRET + b" a"
    return st


# -- forged handles -----------------------------------------------------------------
def test_random_handles(nfs, server):
    rnd = random.Random(1813)
    for _ in range(200):
        fh = bytes(rnd.randrange(256) for _ in range(rnd.randrange(24, 65)))
        check_forged(nfs, server, fh)


def test_random_inodes_with_a_valid_header(nfs, server):
    """Well-formed handles for inodes that are not in the export: STALE."""
    good = fh_of(nfs, "dir", "a")
    f = fh_fields(good)
    rnd = random.Random(5531)
    outside = [os.lstat(p).st_ino for p in ("/etc/passwd", "/etc", "/", str(server.export.parent),
                                             str(server.export.parent / "outside.txt"))]
    for ino in outside + [rnd.randrange(1 << 64) for _ in range(20)]:
        fh = struct.pack(">BBHIQII", 1, 0, 0, f["export_id"], ino, f["dev"], 0)
        assert check_forged(nfs, server, fh) == NFS3ERR_STALE


def test_bit_flipped_handles(nfs, server):
    good = fh_of(nfs, "dir", "deeper", "d")  # carries ancestor hints too
    ino = fh_fields(good)["ino"]
    for bit in range(len(good) * 8):
        fh = bytearray(good)
        fh[bit // 8] ^= 0x80 >> (bit % 8)
        fh = bytes(fh)
        byte = bit // 8
        if 8 <= byte < 16:
            # the inode field: refused, or the object that inode really is
            check_forged(nfs, server, fh, expect_ino=fh_fields(fh)["ino"])
        elif byte >= 24:
            # ancestor hints: a hint may be wrong, the object must still be d
            check_forged(nfs, server, fh, expect_ino=ino)
        elif byte in (2, 3, 20, 21, 22, 23):
            continue  # reserved and generation: see test_reserved_handle_fields_checked
        else:
            # version, ancestor count, export id, device
            assert check_forged(nfs, server, fh) in BAD_HANDLE


def test_reserved_handle_fields_checked(nfs, server):
    good = fh_of(nfs, "dir", "a")
    for byte in (2, 3, 20, 21, 22, 23):
        fh = bytearray(good)
        fh[byte] ^= 0x01
        st, _ = nfs.getattr(bytes(fh))
        assert st in BAD_HANDLE, "flipped byte %d accepted" % byte


def test_truncated_and_extended_handles(nfs, server):
    good = fh_of(nfs, "dir", "deeper", "d")
    for n in range(len(good)):
        assert nfs.getattr(good[:n])[0] == NFS3ERR_BADHANDLE, n
    for extra in (b"\0", b"\0" * 4, b"\0" * 8):
        if len(good + extra) <= 64:
            assert nfs.getattr(good + extra)[0] in BAD_HANDLE


def test_handle_with_another_export_id(nfs, server):
    good = fh_of(nfs, "dir", "a")
    for eid in (0, 1, fh_fields(good)["export_id"] ^ 0xFFFFFFFF):
        fh = good[:4] + struct.pack(">I", eid) + good[8:]
        assert nfs.getattr(fh)[0] in BAD_HANDLE
        assert nfs.read(fh, 0, 10)[0] in BAD_HANDLE
        assert nfs.lookup(fh, "a")[0] in BAD_HANDLE


# -- symlinks that point out of the export ------------------------------------------------
@pytest.mark.parametrize("link", ["to_root", "to_etc", "to_outside"])
def test_symlink_is_never_followed(nfs, server, link):
    st, r = nfs.lookup(nfs.root, link)
    assert st == NFS3_OK
    assert r["attrs"]["type"] == NF3LNK  # LOOKUP returns the link itself (section 3.3.3)
    assert r["attrs"]["fileid"] == os.lstat(server.export / link).st_ino
    lfh = r["fh"]
    for name in ("etc", "passwd", "outside.txt", "..", "."):
        st, _ = nfs.lookup(lfh, name)
        assert st == NFS3ERR_NOTDIR, (name, st)
    st, _ = nfs.read(lfh, 0, 100)
    assert st != NFS3_OK
    st, _ = nfs.readdir(lfh)
    assert st == NFS3ERR_NOTDIR
    st, _ = nfs.readdirplus(lfh)
    assert st == NFS3ERR_NOTDIR
    st, r = nfs.readlink(lfh)
    assert st == NFS3_OK and r["data"] == os.fsencode(os.readlink(server.export / link))
    assert nfs.create(lfh, "evil_file", UNCHECKED, mode=0o644)[0] == NFS3ERR_NOTDIR
    assert nfs.mkdir(lfh, "evil_dir", mode=0o755)[0] == NFS3ERR_NOTDIR
    assert nfs.symlink(lfh, "evil_link", "x")[0] == NFS3ERR_NOTDIR
    assert nfs.rename(lfh, "passwd", nfs.root, "stolen")[0] == NFS3ERR_NOTDIR
    assert nfs.rename(fh_of(nfs, "dir"), "c", lfh, "evil_c")[0] == NFS3ERR_NOTDIR
    assert nfs.link(fh_of(nfs, "dir", "b"), lfh, "evil_link")[0] == NFS3ERR_NOTDIR
    assert nfs.remove(lfh, "passwd")[0] == NFS3ERR_NOTDIR
    assert nfs.write(lfh, 0, b"x")[0] != NFS3_OK
    assert nfs.commit(lfh)[0] != NFS3_OK
    assert nfs.setattr(lfh, size=0)[0] != NFS3_OK
    target = os.path.realpath(server.export / link)
    before = os.stat(target)
    nfs.setattr(lfh, mode=0o777)  # a symlink has no mode of its own; the target is untouched
    after = os.stat(target)
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)
    for name in ("evil_file", "evil_dir", "evil_link", "evil_c", "stolen"):
        assert not os.path.lexists(os.path.join(target, name))
    assert (server.export / "dir" / "c").exists()
    assert os.path.exists("/etc/passwd")


def test_readdirplus_shows_links_not_targets(nfs, server):
    entries = {e["name"]: e for e in nfs.readdir_all(nfs.root, plus=True)}
    for link in (b"to_root", b"to_etc", b"to_outside"):
        e = entries[link]
        assert e["attrs"]["type"] == NF3LNK
        assert e["fileid"] == os.lstat(server.export / link.decode()).st_ino
        assert nfs.lookup(e["fh"], "etc")[0] == NFS3ERR_NOTDIR


def test_dir_replaced_by_symlink_behind_the_servers_back(nfs, server):
    """A cached path whose directory became a symlink out of the export."""
    os.mkdir(server.export / "swap")
    (server.export / "swap" / "passwd").write_bytes(b"mine")
    dfh = fh_of(nfs, "swap")
    ffh = fh_of(nfs, "swap", "passwd")
    os.rename(server.export / "swap", server.export / "swap.old")
    os.symlink("/etc", server.export / "swap")
    try:
        st, r = nfs.read(ffh, 0, 100)
        assert st in BAD_HANDLE or r["data"] == b"mine"  # found again where it moved
        st, r = nfs.lookup(dfh, "passwd")
        assert st in BAD_HANDLE or r["attrs"]["fileid"] == \
            os.stat(server.export / "swap.old" / "passwd").st_ino
        st, r = nfs.lookup(dfh, "hostname")
        assert st != NFS3_OK
        st, r = nfs.readdir(dfh)
        if st == NFS3_OK:
            assert {e["name"] for e in r["entries"]} == {b".", b"..", b"passwd"}
    finally:
        os.unlink(server.export / "swap")


def test_dotdot_at_root_stays_at_root(nfs, server):
    fh = nfs.root
    for _ in range(3):
        st, r = nfs.lookup(fh, "..")
        assert st == NFS3_OK and r["fh"] == nfs.root
        assert r["attrs"]["fileid"] == os.stat(server.export).st_ino
        fh = r["fh"]
    entries = {e["name"]: e for e in nfs.readdir_all(nfs.root, plus=True)}
    assert entries[b".."]["fileid"] == os.stat(server.export).st_ino
    # climbing from a subdirectory ends at the root too
    fh = fh_of(nfs, "dir", "deeper")
    for _ in range(4):
        fh = nfs.lookup(fh, "..")[1]["fh"]
    assert nfs.getattr(fh)[1]["attrs"]["fileid"] == os.stat(server.export).st_ino


# -- hostile names ---------------------------------------------------------------------
BAD_NAMES = {
    "slash": b"dir/a",
    "dotdot-slash": b"../outside.txt",
    "absolute": b"/etc/passwd",
    "trailing-slash": b"dir/",
    "nul": b"a\0b",
    "nul-end": b"dir\0",
    "empty": b"",
    "256-bytes": b"n" * 256,
    "4000-bytes": b"n" * 4000,
}


def _refused(st, name):
    if len(name) > 255:
        return st == NFS3ERR_NAMETOOLONG
    return st in (NFS3ERR_ACCES, NFS3ERR_INVAL, NFS3ERR_NOENT, NFS3ERR_NAMETOOLONG)


@pytest.mark.parametrize("key", list(BAD_NAMES))
def test_bad_names_refused(nfs, server, key):
    name = BAD_NAMES[key]
    before = export_tree(server.export)
    root = nfs.root
    dirfh = fh_of(nfs, "dir")
    st, r = nfs.lookup(root, name)
    assert _refused(st, name), ("LOOKUP", st)
    st, r = nfs.lookup(dirfh, name)
    assert _refused(st, name), ("LOOKUP dir", st)
    for op, call in [
        ("CREATE", lambda: nfs.create(root, name, UNCHECKED, mode=0o644)),
        ("MKDIR", lambda: nfs.mkdir(root, name, mode=0o755)),
        ("SYMLINK", lambda: nfs.symlink(root, name, "x")),
        ("RENAME-to", lambda: nfs.rename(dirfh, "c", root, name)),
        ("RENAME-from", lambda: nfs.rename(root, name, root, "moved")),
        ("LINK", lambda: nfs.link(fh_of(nfs, "dir", "b"), root, name)),
        ("REMOVE", lambda: nfs.remove(root, name)),
        ("RMDIR", lambda: nfs.rmdir(root, name)),
    ]:
        st, _ = call()
        assert st != NFS3_OK and _refused(st, name) or st == NFS3ERR_NOENT and \
            op.startswith(("RENAME-from", "REMOVE", "RMDIR")), (op, st)
    assert export_tree(server.export) == before
    assert (server.export.parent / "outside.txt").exists()


def test_huge_name_over_maxpathlen(nfs, server):
    """filename3 is string<> (unbounded): NAMETOOLONG, or GARBAGE_ARGS, never success."""
    try:
        st, _ = nfs.lookup(nfs.root, b"n" * 5000)
        assert st == NFS3ERR_NAMETOOLONG
    except RpcError as e:
        assert e.reply.accept_stat == GARBAGE_ARGS


def test_symlink_target_with_nul_refused(nfs, server):
    st, _ = nfs.symlink(nfs.root, "nul_target", b"/etc\0passwd")
    assert st in (NFS3ERR_INVAL, NFS3ERR_ACCES)
    assert not os.path.lexists(server.export / "nul_target")


# -- MOUNT paths -------------------------------------------------------------------------
def _mnt_paths(export):
    e = str(export)
    return ["/", "/etc", "/tmp", e + "/../", e + "/..", e + "/dir/../..", e + "/../outside.txt",
            str(export.parent), e + "x", os.path.relpath(e, "/"), "", e + "/to_root",
            e + "/to_root/", e + "/to_etc", e + "/to_root/etc", e + "/to_outside",
            e + "/dir/a", e + "/nonexistent", e + "\0/dir", "x" * 1025]


@pytest.mark.parametrize("vers", [1, 3])
def test_mnt_outside_export_refused(nfs, server, vers):
    for path in _mnt_paths(server.export):
        st, r = nfs.mnt(path, vers)
        assert st != MNT3_OK, (path, r)


def test_mnt_inside_export(nfs, server):
    st, r = nfs.mnt(str(server.export) + "/dir/deeper")
    assert st == MNT3_OK
    assert nfs.getattr(r["fh"])[1]["attrs"]["fileid"] == \
        os.stat(server.export / "dir" / "deeper").st_ino
    assert nfs.mnt(str(server.export) + "/")[1]["fh"] == nfs.root
    assert nfs.mnt(str(server.export) + "/./dir/.")[0] == MNT3_OK
    st, r = nfs.mnt(str(server.export), 1)
    assert st == MNT3_OK and len(r["fh"]) == 32


# -- denial of service ---------------------------------------------------------------------
def test_create_unchecked_over_fifo_does_not_block(nfs, server):
    fifo = server.export / "fifo"
    os.mkfifo(fifo)
    c = RpcClient(server.port, timeout=1.5)
    try:
        xid = c.send_call(NFS_PROGRAM, NFS_V3, CREATE, Nfs3(c).create_args(nfs.root, "fifo",
                                                                            UNCHECKED, mode=0o644))
        try:
            r = c.recv_reply(xid)
        except Timeout:
            # unblock the server so the rest of the module can run, then fail
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            try:
                c.recv_reply(xid)
            finally:
                os.close(fd)
            pytest.fail("the server blocked in open() of a FIFO: every client hung")
        assert r.ok
        assert r.body.unpack_uint() != NFS3_OK or stat.S_ISFIFO(os.lstat(fifo).st_mode)
    finally:
        c.close()
        os.unlink(fifo)
