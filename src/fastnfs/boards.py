"""Board layers: one private copy-on-write layer per board over one read-only base.

A farm of boards boots from the same root filesystem (BASE); each board
writes to its own layer, kept under the boards directory (DIR)::

    DIR/NAME/upper/      objects the board created or changed (real files;
                         owners, modes and device numbers in virtfs
                         mapped-file metadata, .virtfs_metadata)
    DIR/NAME/index/      copied-up base files with more than one link, named
                         by their base inode (so every name stays one object)
    DIR/NAME/work/       copy-ups are built here, then renamed into upper/
    DIR/NAME/layer.db    SQLite: whiteouts, opaque directories, redirects
                         (renamed base directories), fileids of copied-up
                         objects, attribute changes of base objects
                         (metadata-only), the layer's epoch, stamps
    DIR/NAME/gen         the layer's generation: 8 bytes, mapped shared by
                         every process serving the board, a sequence lock: a
                         writer holds an exclusive flock on the file and makes
                         the generation odd while it changes the layer, even
                         after, so a reader's check that its copy of the
                         bookkeeping is current is one memory read

Nothing in the layer is ever visible to clients under its own name: the
backend (``backends.boards``) serves the merged view only.

A layer is created empty on first use, in O(1): a temporary directory renamed
into place.  ``reset`` renames the layer aside (O(1)) into DIR/.trash, bumps
its generation and removes it in the background; every server process
notices at the board's next call that the layer directory changed and serves
the base to the board at once.  Every layer has a random
epoch, part of the fileid of each object the board created, so the handles of
a reset layer's objects answer NFS3ERR_STALE.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import stat as S
import struct
import time

NAME_RE = re.compile(rb"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
TRASH = b".trash"
EPOCH_BITS = 22
GEN = b"gen"
_GEN = struct.Struct("<Q")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS whiteout (path BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS opaque (path BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS redirect (path BLOB PRIMARY KEY, base BLOB);
CREATE TABLE IF NOT EXISTS ids (upper_ino INTEGER PRIMARY KEY, fileid INTEGER, gen INTEGER,
    nlink INTEGER);
CREATE TABLE IF NOT EXISTS attrs (fileid INTEGER PRIMARY KEY, uid INTEGER, gid INTEGER,
    mode INTEGER, atime INTEGER, mtime INTEGER, ctime INTEGER, path BLOB);
"""


class BoardNameError(ValueError):
    pass


def check_board_name(name) -> bytes:
    """NAME as bytes if it is a plain board name ([A-Za-z0-9._-], not starting
    with a dot, at most 64 characters), else BoardNameError."""
    if isinstance(name, str):
        try:
            name = name.encode("ascii")
        except UnicodeEncodeError:
            raise BoardNameError("board name %r: only letters, digits, '.', '_' and '-'"
                                 % name) from None
    if not NAME_RE.fullmatch(name):
        raise BoardNameError("board name %r: only letters, digits, '.', '_' and '-', "
                             "not starting with '.', at most 64" % os.fsdecode(name))
    return name


def board_name_of_address(addr: str) -> bytes:
    """The layer named after a client address (--board-by-address)."""
    a = addr[7:] if addr.startswith("::ffff:") else addr
    return check_board_name(a.replace(":", "-").replace("%", "-"))


def base_stamp(base_fd: int) -> str:
    """A cheap fingerprint of the base: the change times of its top directory and of
    the directories in it (a rootfs rebuilt or re-synced changes some of them).
    O(entries at the top), so making a layer stays O(1) in the size of the base."""
    import hashlib
    h = hashlib.blake2b(digest_size=8)
    st = os.fstat(base_fd)
    h.update(b"%d.%d" % (st.st_mtime_ns, st.st_ctime_ns))
    for e in sorted(os.scandir(base_fd), key=lambda e: e.name):
        try:
            if e.is_dir(follow_symlinks=False):
                s = e.stat(follow_symlinks=False)
                h.update(b"%s %d.%d" % (os.fsencode(e.name), s.st_mtime_ns, s.st_ctime_ns))
        except OSError:
            pass
    return h.hexdigest()


class Layer:
    """One board's layer as it is on disk now (opened or created)."""

    def __init__(self, boards_fd: int, name: bytes, base_fd: int, base_path: bytes = b""):
        self.name = name
        self.boards_fd = boards_fd
        try:
            self.fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=boards_fd)
        except FileNotFoundError:
            self._create(boards_fd, name, base_fd, base_path)
            self.fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=boards_fd)
        self.ino = os.fstat(self.fd).st_ino
        d = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        self.upper_fd = os.open(b"upper", d, dir_fd=self.fd)
        self.index_fd = os.open(b"index", d, dir_fd=self.fd)
        self.work_fd = os.open(b"work", d, dir_fd=self.fd)
        import sqlite3   # here: a server without boards never loads SQLite
        self.db = sqlite3.connect("/proc/self/fd/%d/layer.db" % self.fd,
                                  isolation_level=None, check_same_thread=False)
        self.gen_fd = os.open(GEN, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=self.fd)
        self.locked = 0     # depth of lock() in this process (the flock is taken once)
        self.map = None
        with self.lock():   # (a layer made before generations has no gen file yet)
            if os.fstat(self.gen_fd).st_size < _GEN.size:
                os.ftruncate(self.gen_fd, _GEN.size)
            self.map = mmap.mmap(self.gen_fd, _GEN.size)
            self._repair()
            self.db.executescript(SCHEMA)
            self.epoch = int(dict(self.db.execute("SELECT k, v FROM meta"))["epoch"])
            self.reload()

    # -- one view of the layer for every process serving it ----------------------
    # The generation is a sequence lock: odd while a process changes the layer
    # (under the flock), even otherwise; every change moves it on by two.
    def generation(self) -> int:
        return _GEN.unpack_from(self.map)[0]

    def fresh(self) -> bool:
        """Is this process's copy of the bookkeeping current, and no other process
        amid a change (one memory read)?"""
        return _GEN.unpack_from(self.map)[0] == self.seen

    def _repair(self) -> None:
        """Under the flock, an odd generation is a change whose process died."""
        g = self.generation()
        if g & 1:
            _GEN.pack_into(self.map, 0, g + 1)

    def begin(self) -> None:
        """A change starts (under the flock, the bookkeeping current)."""
        self.seen += 1
        _GEN.pack_into(self.map, 0, self.seen)

    def end(self) -> None:
        self.seen += 1
        _GEN.pack_into(self.map, 0, self.seen)

    def reload(self) -> None:
        """Read the bookkeeping again (another process changed the layer)."""
        self.seen = self.generation()
        db = self.db
        self.whiteouts = {r[0] for r in db.execute("SELECT path FROM whiteout")}
        self.opaque = {r[0] for r in db.execute("SELECT path FROM opaque")}
        self.redirects = dict(db.execute("SELECT path, base FROM redirect"))
        self.ids = {r[0]: (r[1], r[2]) for r in
                    db.execute("SELECT upper_ino, fileid, gen FROM ids")}
        self.base_nlink = {r[0]: r[1] for r in
                           db.execute("SELECT fileid, nlink FROM ids WHERE nlink > 1")}
        self.attrs = {r[0]: tuple(r[1:]) for r in db.execute(
            "SELECT fileid, uid, gid, mode, atime, mtime, ctime FROM attrs")}

    def lock(self):
        """Exclusive use of the layer among processes, for one change (the caller
        keeps threads of its own process apart)."""
        return _LayerLock(self)

    @staticmethod
    def _create(boards_fd: int, name: bytes, base_fd: int, base_path: bytes) -> None:
        tmp = b".new-%s-%s" % (name, os.urandom(4).hex().encode())
        os.mkdir(tmp, 0o700, dir_fd=boards_fd)
        try:
            for sub in (b"upper", b"index", b"work"):
                os.mkdir(b"%s/%s" % (tmp, sub), 0o700, dir_fd=boards_fd)
            g = os.open(b"%s/%s" % (tmp, GEN), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                        dir_fd=boards_fd)
            try:
                os.write(g, _GEN.pack(0))
            finally:
                os.close(g)
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=boards_fd)
            try:
                import sqlite3
                db = sqlite3.connect("/proc/self/fd/%d/layer.db" % fd, isolation_level=None)
                epoch = int.from_bytes(os.urandom(4), "big") % ((1 << EPOCH_BITS) - 1) + 1
                now = str(time.time())
                # one transaction: one sync for the whole database (a boot storm
                # mounts many boards at once; each statement alone paid its own)
                db.execute("BEGIN")
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("epoch", str(epoch)), ("created", now),
                                ("base_stamp", base_stamp(base_fd)), ("last_mount", ""),
                                ("base", os.fsdecode(base_path))])
                db.execute("COMMIT")
                db.close()
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=boards_fd, dst_dir_fd=boards_fd)
        except OSError:
            _rmtree_at(boards_fd, tmp)
            if not _exists(boards_fd, name):
                raise

    def close(self) -> None:
        self.map.close()
        for fd in (self.upper_fd, self.index_fd, self.work_fd, self.gen_fd, self.fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.db.close()

    def current(self) -> bool:
        """Is this still the board's layer (not reset or removed since)?"""
        try:
            return os.stat(self.name, dir_fd=self.boards_fd,
                           follow_symlinks=False).st_ino == self.ino
        except OSError:
            return False

    # -- bookkeeping, kept in memory and written through -------------------------
    def set_meta(self, k: str, v: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def add_whiteout(self, path: bytes) -> None:
        if path not in self.whiteouts:
            self.whiteouts.add(path)
            self.db.execute("INSERT OR IGNORE INTO whiteout VALUES (?)", (path,))

    def set_opaque(self, path: bytes) -> None:
        if path not in self.opaque:
            self.opaque.add(path)
            self.db.execute("INSERT OR IGNORE INTO opaque VALUES (?)", (path,))

    def set_redirect(self, path: bytes, base: bytes) -> None:
        self.redirects[path] = base
        self.db.execute("INSERT OR REPLACE INTO redirect VALUES (?, ?)", (path, base))

    def set_id(self, upper_ino: int, fileid: int, gen: int, nlink: int = 1) -> None:
        self.ids[upper_ino] = (fileid, gen)
        if nlink > 1:
            self.base_nlink[fileid] = nlink
        self.db.execute("INSERT OR REPLACE INTO ids VALUES (?, ?, ?, ?)",
                        (upper_ino, fileid, gen, nlink))

    def drop_id(self, upper_ino: int) -> None:
        if self.ids.pop(upper_ino, None) is not None:
            self.db.execute("DELETE FROM ids WHERE upper_ino = ?", (upper_ino,))

    def set_attrs(self, fileid: int, a: tuple, path: bytes) -> None:
        self.attrs[fileid] = a
        self.db.execute("INSERT OR REPLACE INTO attrs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (fileid,) + tuple(a) + (path,))

    def drop_attrs(self, fileid: int) -> None:
        if self.attrs.pop(fileid, None) is not None:
            self.db.execute("DELETE FROM attrs WHERE fileid = ?", (fileid,))

    def forget_tree(self, path: bytes, itself: bool = True) -> None:
        """Drop whiteouts, opaque marks and redirects at path (if itself) and below."""
        pre = path + b"/"
        for tab, coll in (("whiteout", self.whiteouts), ("opaque", self.opaque),
                          ("redirect", self.redirects)):
            gone = [p for p in coll if p.startswith(pre) or (itself and p == path)]
            for p in gone:
                if isinstance(coll, dict):
                    del coll[p]
                else:
                    coll.discard(p)
                self.db.execute("DELETE FROM %s WHERE path = ?" % tab, (p,))

    def move_tree(self, src: bytes, dst: bytes) -> None:
        """Bookkeeping below src now belongs below dst (a directory was renamed)."""
        pre = src + b"/"
        self.db.execute("BEGIN")
        try:
            for tab, coll in (("whiteout", self.whiteouts), ("opaque", self.opaque),
                              ("redirect", self.redirects)):
                moved = [p for p in coll if p.startswith(pre)]
                for p in moved:
                    q = dst + p[len(src):]
                    if isinstance(coll, dict):
                        v = coll.pop(p)
                        coll[q] = v
                        self.db.execute("DELETE FROM redirect WHERE path = ?", (p,))
                        self.db.execute("INSERT OR REPLACE INTO redirect VALUES (?, ?)", (q, v))
                    else:
                        coll.discard(p)
                        coll.add(q)
                        self.db.execute("DELETE FROM %s WHERE path = ?" % tab, (p,))
                        self.db.execute("INSERT OR IGNORE INTO %s VALUES (?)" % tab, (q,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


class _LayerLock:
    """flock of the layer's gen file, taken once per process however deeply nested."""

    __slots__ = ("L",)

    def __init__(self, layer: Layer):
        self.L = layer

    def __enter__(self) -> Layer:
        L = self.L
        if not L.locked:
            fcntl.flock(L.gen_fd, fcntl.LOCK_EX)
            if L.map is not None:
                L._repair()
        L.locked += 1
        return L

    def __exit__(self, *exc) -> None:
        L = self.L
        L.locked -= 1
        if not L.locked:
            fcntl.flock(L.gen_fd, fcntl.LOCK_UN)


def bump_generation(layer_fd: int) -> None:
    """Tell every process serving the layer that it changed (reset, rm)."""
    try:
        fd = os.open(GEN, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=layer_fd)
    except FileNotFoundError:
        return   # a layer no server of this version has opened
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # after the change under way, if any
        raw = os.pread(fd, _GEN.size, 0)
        g = _GEN.unpack(raw)[0] if len(raw) == _GEN.size else 0
        os.pwrite(fd, _GEN.pack((g | 1) + 1), 0)   # the next even one
    finally:
        os.close(fd)


def _same_data(a_dir: int, b_dir: int, path: bytes) -> bool:
    try:
        fa = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=a_dir)
    except OSError:
        return False
    try:
        fb = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=b_dir)
    except OSError:
        os.close(fa)
        return False
    try:
        if os.fstat(fa).st_size != os.fstat(fb).st_size:
            return False
        while True:
            x, y = os.read(fa, 1 << 20), os.read(fb, 1 << 20)
            if x != y:
                return False
            if not x:
                return True
    finally:
        os.close(fa)
        os.close(fb)


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except OSError:
        return False


def _rmtree_at(dir_fd: int, name: bytes) -> None:
    path = "/proc/self/fd/%d/%s" % (dir_fd, os.fsdecode(name))
    _make_removable(path)
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def _make_removable(path: str) -> None:
    """The server makes layer directories 0700 at least; a board may have made
    one unwritable to its own users (disk mode stays usable), but be sure."""
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            try:
                p = os.path.join(root, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o700)
            except OSError:
                pass


# -- management (fastnfs boards ...) --------------------------------------------------

class Boards:
    """The boards directory seen from the command line."""

    def __init__(self, path):
        self.path = os.fsencode(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def names(self) -> list:
        return sorted(n for n in os.listdir(self.fd)
                      if not n.startswith(".") and NAME_RE.fullmatch(os.fsencode(n))
                      and S.S_ISDIR(os.stat(n, dir_fd=self.fd, follow_symlinks=False).st_mode))

    def _db(self, name: bytes):
        import sqlite3
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.fd)
        try:
            return sqlite3.connect("file:/proc/self/fd/%d/layer.db?mode=ro" % fd, uri=True), fd
        except sqlite3.Error:
            os.close(fd)
            raise

    def info(self, name) -> dict:
        name = check_board_name(name)
        db, fd = self._db(name)
        try:
            m = dict(db.execute("SELECT k, v FROM meta"))
        finally:
            db.close()
        size = 0
        entries = 0
        top = "/proc/self/fd/%d" % fd
        try:
            for root, dirs, files in os.walk(top):
                for n in dirs + files:
                    try:
                        st = os.lstat(os.path.join(root, n))
                    except OSError:
                        continue
                    size += st.st_blocks * 512
                    rel = os.path.relpath(os.path.join(root, n), top)
                    if rel.startswith("upper/") and ".virtfs_metadata" not in rel:
                        entries += 1
        finally:
            os.close(fd)
        kinds = [k for k, _p in self.diff(name)]
        return {"name": os.fsdecode(name), "size": size,
                "changed": kinds.count("modified") + kinds.count("metadata"),
                "created": kinds.count("added"), "deleted": kinds.count("deleted"),
                "last_mount": float(m.get("last_mount") or 0) or None,
                "created_at": float(m.get("created") or 0), "base_stamp": m.get("base_stamp"),
                "epoch": int(m.get("epoch", 0)), "base": m.get("base"),
                "older_base": self._older_base(m)}

    @staticmethod
    def _older_base(m: dict):
        """Was the layer made against another state of its base (None: unknown)?"""
        try:
            fd = os.open(m.get("base") or "", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            return base_stamp(fd) != m.get("base_stamp")
        finally:
            os.close(fd)

    def reset(self, name) -> None:
        """Back to the base in O(1): the layer is renamed aside and removed in the
        background; the server makes a fresh one at the board's next call."""
        name = check_board_name(name)
        if not _exists(self.fd, name):
            raise FileNotFoundError("no board %s" % os.fsdecode(name))
        try:
            os.mkdir(TRASH, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass
        aside = b"%s/%s-%d-%s" % (TRASH, name, time.time_ns(), os.urandom(3).hex().encode())
        os.rename(name, aside, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        fd = os.open(aside, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.fd)
        try:
            bump_generation(fd)   # every server process looks again, at its next call
        finally:
            os.close(fd)
        self._purge_in_background()

    def rm(self, name) -> None:
        """The board's layer goes (a board that mounts again gets an empty one)."""
        self.reset(name)

    def diff(self, name, base=None) -> list:
        """(kind, path) of what board name changed against base: kind is "added",
        "modified", "deleted" or "metadata"."""
        from .fsstat import lstatat
        from .virtfs.overlay import Virtfs
        name = check_board_name(name)
        db, fd = self._db(name)
        try:
            ids = {r[0] for r in db.execute("SELECT upper_ino FROM ids")}
            out = [("deleted", r[0]) for r in db.execute("SELECT path FROM whiteout")]
            meta_only = [r[0] for r in db.execute("SELECT path FROM attrs")]
            if base is None:
                base = dict(db.execute("SELECT k, v FROM meta")).get("base") or "/"
        finally:
            db.close()
        base_fd = os.open(os.fsencode(base), os.O_RDONLY | os.O_DIRECTORY)
        up = os.open(b"upper", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        uview = Virtfs(up).view
        try:
            out += [("metadata", p) for p in meta_only]
            todo = [b"."]
            while todo:
                d = todo.pop()
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=up)
                try:
                    names = [os.fsencode(n) for n in os.listdir(dfd)]
                finally:
                    os.close(dfd)
                for n in names:
                    if n.startswith(b".virtfs_metadata"):
                        continue
                    p = n if d == b"." else d + b"/" + n
                    st = os.stat(p, dir_fd=up, follow_symlinks=False)
                    if S.S_ISDIR(st.st_mode):
                        todo.append(p)
                    if st.st_ino not in ids:
                        out.append(("added", p))
                        continue
                    try:
                        bst = os.stat(p, dir_fd=base_fd, follow_symlinks=False)
                    except OSError:
                        out.append(("added", p))
                        continue
                    v = uview(p, lstatat(up, p))
                    same_meta = (v.st_uid, v.st_gid, S.S_IMODE(v.st_mode)) == (
                        bst.st_uid, bst.st_gid, S.S_IMODE(bst.st_mode))
                    if S.S_ISREG(st.st_mode) and not _same_data(up, base_fd, p):
                        out.append(("modified", p))
                    elif not same_meta:
                        out.append(("metadata", p))
        finally:
            os.close(up)
            os.close(base_fd)
        return sorted((k, os.fsdecode(p)) for k, p in out)

    def _purge_in_background(self) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                if os.fork() == 0:
                    os.setsid()
                    t = os.open(TRASH, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.fd)
                    for n in os.listdir(t):
                        _rmtree_at(t, os.fsencode(n))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


# -- the server's side: one handles.Export per board ----------------------------------

class BoardExports:
    """The boards of one base export: BASE@NAME exports made on first use.

    Each board has its own export id (crc32 of "PATH@NAME") and so its own
    handles: a handle of one board never resolves in another.  After a server
    restart a board's export is made again when one of its handles arrives.
    """

    def __init__(self, base_export, boards_dir: str, *, virtfs: bool = False,
                 by_address: bool = False, register=None):
        self.base = base_export
        self.dir = os.fsencode(os.path.abspath(boards_dir))
        real = os.path.realpath(self.dir)
        base = os.path.realpath(base_export.path)
        if (real + b"/").startswith(base + b"/") or (base + b"/").startswith(real + b"/"):
            # the layers would be part of the base every board sees (or the reverse)
            raise OSError(errno.EINVAL, "the boards directory %s and the base %s must not "
                          "contain one another" % (os.fsdecode(real), os.fsdecode(base)),
                          os.fsdecode(self.dir))
        os.makedirs(self.dir, 0o700, exist_ok=True)
        self.virtfs = virtfs
        self.by_address = by_address
        self.register = register   # callback(export): the server learns a new export id
        self.exports: dict = {}    # name -> Export

    def export_id(self, name: bytes) -> int:
        from .handles import export_id_of
        return export_id_of(self.base.path + b"@" + name)

    def get(self, name: bytes):
        """The Export of board name (made, and its layer created, on first use)."""
        name = check_board_name(name)
        e = self.exports.get(name)
        if e is None:
            from .backends.boards import BoardBackend
            from .handles import Export
            backend = BoardBackend(self.base.path, self.dir, name, virtfs_base=self.virtfs)
            e = Export(self.base.path + b"@" + name, backend, entry=self.base.entry,
                       name=self.base.name + b"@" + name)
            e.board = name
            self.exports[name] = e
            if self.register is not None:
                self.register(e)
        return e

    def by_id(self, eid: int):
        """The Export of the existing board whose handles carry export id eid, or None."""
        for e in self.exports.values():
            if e.export_id == eid:
                return e
        try:
            names = os.listdir(self.dir)
        except OSError:
            return None
        for n in names:
            n = os.fsencode(n)
            if NAME_RE.fullmatch(n) and self.export_id(n) == eid:
                return self.get(n)
        return None

    def set_entry(self, entry) -> None:
        for e in self.exports.values():
            e.set_entry(entry)

    def close(self) -> None:
        for e in self.exports.values():
            e.close()
        self.exports = {}
