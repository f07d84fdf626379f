"""An in-memory storage backend: the example of how to add one (see
src/fastnfs/backends/__init__.py), and proof that the NFS procedures reach
storage only through the backend interface.

Run as a script it serves one export, /mem, from memory on a free port and
prints ``memfs NFS port N ready``; at exit it prints how many filesystem
calls (Python audit events) named one of the client's ``mem-`` names.
"""

from __future__ import annotations

import os
import stat as S
import sys
import time

from fastnfs import perm
from fastnfs.backends import Backend, RefreshingDirOp
from fastnfs.fs import NFSError, Obj, check_name, name_cookie
from fastnfs.nfs3 import const as C
from fastnfs.nfs3.types import Sattr3, put_fattr3

FSID = 0x4D454D   # "MEM"
MAXSIZE = 1 << 30


class MemStat:
    """Attributes of a node at one moment (what Obj.st holds)."""

    __slots__ = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                 "st_blocks", "st_rdev", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                 "btime_ns", "gen")


class Node:
    def __init__(self, ino: int, mode: int, uid: int, gid: int):
        now = time.time_ns()
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = 2 if S.S_ISDIR(mode) else 1
        self.data = bytearray()
        self.children: dict = {}      # name -> ino (directories)
        self.parent = ino             # directories: the parent's ino
        self.target = b""             # symlinks
        self.rdev = 0
        self.verf = None              # EXCLUSIVE create verifier
        self.atime = self.mtime = self.ctime = self.btime = now
        self.gen = (ino * 2654435761) & 0xFFFFFFFF or 1

    def stat(self) -> MemStat:
        st = MemStat()
        st.st_mode = self.mode
        st.st_ino = self.ino
        st.st_dev = FSID
        st.st_nlink = self.nlink
        st.st_uid = self.uid
        st.st_gid = self.gid
        st.st_size = len(self.target) if S.S_ISLNK(self.mode) else (
            4096 if S.S_ISDIR(self.mode) else len(self.data))
        st.st_blocks = (st.st_size + 511) // 512
        st.st_rdev = self.rdev
        st.st_atime_ns = self.atime
        st.st_mtime_ns = self.mtime
        st.st_ctime_ns = self.ctime
        st.btime_ns = self.btime
        st.gen = self.gen
        return st

    def touch(self) -> None:
        self.mtime = self.ctime = max(time.time_ns(), self.ctime + 1)


class MemBackend(Backend):
    """A whole tree in dictionaries; permissions by the mode bits (fastnfs.perm)."""

    fsid = FSID

    def __init__(self, path=b"/mem"):
        self.nodes: dict = {}
        self.next_ino = 1
        root = self._new(S.S_IFDIR | 0o777, 0, 0)
        self.root_ino = root.ino

    def _new(self, mode: int, uid: int, gid: int) -> Node:
        n = Node(self.next_ino, mode, uid, gid)
        self.next_ino += 1
        self.nodes[n.ino] = n
        return n

    def _obj(self, n: Node, anc: tuple = ()) -> Obj:
        return Obj(n.ino, n.ino, n.stat(), anc)

    def _node(self, obj) -> Node:
        n = self.nodes.get(obj.ino)
        if n is None:
            raise NFSError(C.NFS3ERR_STALE)
        return n

    def _check(self, cred, st, want: int) -> None:
        if not perm.allowed(cred, st.st_uid, st.st_gid, st.st_mode, want):
            raise NFSError(C.NFS3ERR_ACCES)

    # -- objects ---------------------------------------------------------------
    def root(self) -> Obj:
        return self._obj(self.nodes[self.root_ino])

    def find(self, cred, ino, dev, gen, anc):
        n = self.nodes.get(ino)
        if n is None or dev != FSID or (gen and gen != n.gen):
            raise NFSError(C.NFS3ERR_STALE)
        return self._obj(n, anc)

    def walk(self, d, name):
        n = self._node(d)
        if not S.S_ISDIR(n.mode):
            raise NFSError(C.NFS3ERR_NOTDIR)
        if name == b".":
            return d
        if name == b"..":
            return self._obj(self.nodes[n.parent])
        check_name(name)
        ino = n.children.get(name)
        if ino is None:
            raise NFSError(C.NFS3ERR_NOENT)
        return self._obj(self.nodes[ino], d.child_anc())

    def refresh(self, obj):
        n = self.nodes.get(obj.ino)
        if n is not None:
            obj.st = n.stat()
        return obj.st

    # -- attributes --------------------------------------------------------------
    def setattr(self, cred, obj, a: Sattr3) -> None:
        n = self._node(obj)
        if a.uid is not None and a.uid != n.uid and cred.uid != 0:
            raise NFSError(C.NFS3ERR_PERM)
        if a.mode is not None and cred.uid not in (0, n.uid):
            raise NFSError(C.NFS3ERR_PERM)
        if a.size is not None:
            if S.S_ISDIR(n.mode):
                raise NFSError(C.NFS3ERR_ISDIR)
            if not S.S_ISREG(n.mode):
                raise NFSError(C.NFS3ERR_INVAL)
            if cred.uid != n.uid:
                self._check(cred, obj.st, perm.W)
            if a.size > MAXSIZE:
                raise NFSError(C.NFS3ERR_FBIG)
            del n.data[a.size:]
            n.data.extend(b"\0" * (a.size - len(n.data)))
            n.touch()
        if a.mode is not None:
            n.mode = S.S_IFMT(n.mode) | (a.mode & 0o7777)
        if a.uid is not None:
            n.uid = a.uid
        if a.gid is not None:
            n.gid = a.gid
        now = time.time_ns()
        if a.atime is not None:
            n.atime = now if a.atime == Sattr3.SERVER_TIME else a.atime
        if a.mtime is not None:
            n.mtime = now if a.mtime == Sattr3.SERVER_TIME else a.mtime
        n.ctime = max(now, n.ctime + 1)

    # -- names ---------------------------------------------------------------------
    def lookup(self, cred, d, name):
        if d.is_dir:
            self._check(cred, d.st, perm.X)
        return self.walk(d, name)

    def readlink(self, cred, obj) -> bytes:
        n = self._node(obj)
        if not S.S_ISLNK(n.mode):
            raise NFSError(C.NFS3ERR_INVAL)
        return n.target

    # -- data ----------------------------------------------------------------------
    def check_read(self, cred, obj) -> None:
        if cred.uid != obj.st.st_uid:
            self._check(cred, obj.st, perm.R)

    def check_write(self, cred, obj) -> None:
        if cred.uid != obj.st.st_uid:
            self._check(cred, obj.st, perm.W)

    def read(self, cred, obj, offset, count, p, head, nowait=False):
        n = self._node(obj)
        st = n.stat()
        head(st)
        data = bytes(n.data[offset:offset + count]) if offset < len(n.data) else b""
        p.opaque(data)
        return st, len(data)

    def write(self, cred, obj, offset, data, stable):
        n = self._node(obj)
        end = offset + len(data)
        if end > MAXSIZE:
            raise NFSError(C.NFS3ERR_FBIG)
        if len(n.data) < offset:
            n.data.extend(b"\0" * (offset - len(n.data)))
        n.data[offset:end] = data
        n.touch()
        return n.stat()

    def commit(self, cred, obj):
        return self._node(obj).stat()

    # -- directories ---------------------------------------------------------------
    def dirop(self, cred, d, name):
        if not d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        if name in (b".", b".."):
            raise NFSError(C.NFS3ERR_EXIST)
        check_name(name)
        self._check(cred, d.st, perm.W | perm.X)
        return RefreshingDirOp(self, d, name)

    def _add(self, cred, op, mode: int) -> Node:
        dn = self._node(op.d)
        if op.name in dn.children:
            raise NFSError(C.NFS3ERR_EXIST)
        n = self._new(mode, cred.uid, cred.gid)
        dn.children[op.name] = n.ino
        if S.S_ISDIR(mode):
            n.parent = dn.ino
            dn.nlink += 1
        dn.touch()
        return n

    def _made(self, cred, op, n: Node, attrs):
        obj = self._obj(n, op.d.child_anc())
        if attrs is not None:
            rest = Sattr3()
            rest.size, rest.atime, rest.mtime = attrs.size, attrs.atime, attrs.mtime
            rest.uid = attrs.uid if cred.uid == 0 else None
            rest.gid = attrs.gid if cred.uid == 0 else None
            if not rest.empty():
                self.setattr(cred, obj, rest)
                self.refresh(obj)
        return obj

    def create(self, cred, op, how, attrs, verf):
        dn = self._node(op.d)
        old = dn.children.get(op.name)
        if old is not None:
            on = self.nodes[old]
            if how == C.EXCLUSIVE and on.verf == verf:
                return self._obj(on, op.d.child_anc())   # a retransmission
            if how != C.UNCHECKED or not S.S_ISREG(on.mode):
                raise NFSError(C.NFS3ERR_EXIST)
            return self._made(cred, op, on, attrs)
        mode = 0o600 if attrs is None or attrs.mode is None else attrs.mode & 0o7777
        n = self._add(cred, op, S.S_IFREG | mode)
        n.verf = verf
        return self._made(cred, op, n, attrs)

    def mkdir(self, cred, op, attrs):
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        return self._made(cred, op, self._add(cred, op, S.S_IFDIR | mode), attrs)

    def symlink(self, cred, op, target, attrs):
        if not target or b"\0" in target:
            raise NFSError(C.NFS3ERR_INVAL)
        n = self._add(cred, op, S.S_IFLNK | 0o777)
        n.target = bytes(target)
        return self._made(cred, op, n, attrs)

    def mknod(self, cred, op, fmt, attrs, major, minor):
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        n = self._add(cred, op, fmt | mode)
        n.rdev = os.makedev(major, minor)
        return self._made(cred, op, n, attrs)

    def _victim(self, cred, op) -> Node:
        dn = self._node(op.d)
        ino = dn.children.get(op.name)
        if ino is None:
            raise NFSError(C.NFS3ERR_NOENT)
        n = self.nodes[ino]
        if dn.mode & S.S_ISVTX and cred.uid not in (0, dn.uid, n.uid):
            raise NFSError(C.NFS3ERR_PERM)
        return n

    def _unlink(self, dn: Node, name: bytes, n: Node) -> None:
        del dn.children[name]
        n.nlink -= 2 if S.S_ISDIR(n.mode) else 1
        if S.S_ISDIR(n.mode):
            dn.nlink -= 1
        if n.nlink <= 0:
            del self.nodes[n.ino]
        else:
            n.ctime = time.time_ns()
        dn.touch()

    def remove(self, cred, op) -> None:
        n = self._victim(cred, op)
        if S.S_ISDIR(n.mode):
            raise NFSError(C.NFS3ERR_ISDIR)
        self._unlink(self._node(op.d), op.name, n)

    def rmdir(self, cred, op) -> None:
        n = self._victim(cred, op)
        if not S.S_ISDIR(n.mode):
            raise NFSError(C.NFS3ERR_NOTDIR)
        if n.children:
            raise NFSError(C.NFS3ERR_NOTEMPTY)
        self._unlink(self._node(op.d), op.name, n)

    def rename(self, cred, src, dst) -> None:
        n = self._victim(cred, src)
        sd, dd = self._node(src.d), self._node(dst.d)
        if S.S_ISDIR(n.mode):
            p = dd
            while True:                       # not into itself
                if p.ino == n.ino:
                    raise NFSError(C.NFS3ERR_INVAL)
                if p.ino == self.root_ino:
                    break
                p = self.nodes[p.parent]
        old = dd.children.get(dst.name)
        if old == n.ino:
            return
        if old is not None:
            on = self._victim(cred, dst)
            if S.S_ISDIR(on.mode) != S.S_ISDIR(n.mode):
                raise NFSError(C.NFS3ERR_ISDIR if S.S_ISDIR(on.mode) else C.NFS3ERR_NOTDIR)
            if on.children:
                raise NFSError(C.NFS3ERR_NOTEMPTY)
            self._unlink(dd, dst.name, on)
        del sd.children[src.name]
        dd.children[dst.name] = n.ino
        if S.S_ISDIR(n.mode):
            n.parent = dd.ino
            sd.nlink -= 1
            dd.nlink += 1
        n.ctime = time.time_ns()
        sd.touch()
        dd.touch()

    def link(self, cred, obj, op) -> None:
        n = self._node(obj)
        if S.S_ISDIR(n.mode):
            raise NFSError(C.NFS3ERR_ISDIR)
        dn = self._node(op.d)
        if op.name in dn.children:
            raise NFSError(C.NFS3ERR_EXIST)
        dn.children[op.name] = n.ino
        n.nlink += 1
        n.ctime = time.time_ns()
        dn.touch()
        self.refresh(obj)

    # -- listings --------------------------------------------------------------------
    def check_list(self, cred, d) -> None:
        if not d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        self._check(cred, d.st, perm.R)

    def _entries(self, d, cookie: int):
        n = self._node(d)
        if cookie == 0:
            yield 1, b".", n.ino
        if cookie <= 1:
            yield 2, b"..", n.parent
        for c, name, ino in sorted((name_cookie(k), k, v) for k, v in n.children.items()):
            if c > cookie:
                yield c, name, ino

    def readdir(self, cred, d, cookie):
        return self._entries(d, cookie)

    def readdirplus(self, export, cred, d, cookie, p, budget, dirbudget, sent):
        anc = d.child_anc()
        for c, name, ino in self._entries(d, cookie):
            pad = (len(name) + 3) & ~3
            size, dsize = 24 + pad + 88 + 8 + 24 + 8 * len(anc), 20 + pad
            if size > budget or (dsize > dirbudget and sent):
                return sent, False
            budget -= size
            dirbudget -= dsize
            p.u32(1)
            p.u64(ino)
            p.string(name)
            p.u64(c)
            if name == b"..":
                p.u32(0)
                p.u32(0)
            else:
                obj = d if name == b"." else self._obj(self.nodes[ino], anc)
                p.u32(1)
                put_fattr3(p, obj.st, self.fsid)
                p.u32(1)
                p.opaque(export.fh(obj))
            sent += 1
        return sent, True

    def fsstat(self, cred, obj) -> tuple:
        used = sum(len(n.data) for n in self.nodes.values())
        return (MAXSIZE, MAXSIZE - used, MAXSIZE - used, 1 << 20,
                (1 << 20) - len(self.nodes), (1 << 20) - len(self.nodes))


_FS_EVENTS = ("open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink",
              "os.link", "os.chmod", "os.chown", "os.utime", "os.truncate", "os.listdir",
              "os.scandir", "os.mknod")


def main() -> int:
    from fastnfs.exports import single_export
    from fastnfs.server import Config, Server, serve_in_this_process
    seen = []

    def audit(event, args):
        if event in _FS_EVENTS and any(b"mem-" in (a if isinstance(a, bytes) else
                                                   str(a).encode(errors="replace"))
                                       for a in args):
            seen.append(event)

    srv = Server(Config(exports=[single_export("/mem")], port=0, portmap=False,
                        backend=lambda path: MemBackend(path)))
    srv.bind()
    sys.addaudithook(audit)
    import atexit
    atexit.register(lambda: print("memfs filesystem calls naming mem- entries: %d" % len(seen),
                                  flush=True))
    print("memfs NFS port %d ready" % srv.port, flush=True)
    serve_in_this_process(srv, register=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
