"""Storage backends: where an export's objects, names, data and ownership come from.

Each export (``handles.Export``) holds one backend object.  An NFS procedure
(``nfs3/*.py``) decodes its arguments, resolves its handles through the export
(``Backend.find``), makes a backend call with the resolved objects and the
caller's credentials, and encodes what comes back: attributes, or an nfsstat3
raised as ``fs.NFSError`` (an ``OSError`` from the host is translated with
``fs.status_of``).  Every storage call and every ownership and permission rule
lives in a backend, so a procedure never asks which backend it talks to.

Backends here:

* ``plain.PlainBackend`` -- the host filesystem (today's fastnfs): objects are
  found by inode through an inode -> path cache (``hostpaths``), the kernel
  checks permissions under the caller's per-thread credentials when the server
  may take them (``creds.ENABLED``).
* ``virtfs.VirtfsBackend`` -- plain storage with owners, modes and device
  numbers from mapped-file metadata (``fastnfs.virtfs``); the server checks
  permissions itself (the rules: ``fastnfs.perm``).
* ``singleuser.SingleUserBackend`` -- plain storage seen as ``unfsd -s`` shows
  it: what the server's user owns looks the caller's.
* ``boards.BoardBackend`` -- one board's copy-on-write view of a read-only
  base (``serve --boards``): the base plus the board's own layer
  (``fastnfs.boards``), objects located by merged path, ownership of the
  layer in virtfs metadata.

The interface (``Backend`` below)
---------------------------------
Objects are ``fs.Obj``: ``ino`` (the fileid), ``path`` (the backend's own
locator, opaque to everyone else), ``st`` (attributes as clients see them: an
object with the ``os.stat_result`` names ``st_mode``, ``st_ino``, ``st_dev``,
``st_nlink``, ``st_uid``, ``st_gid``, ``st_size``, ``st_blocks``,
``st_rdev``, ``st_atime_ns``, ``st_mtime_ns``, ``st_ctime_ns``, plus ``gen``
(32-bit generation for the handle) and ``btime_ns``) and ``anc`` (ancestor
inodes, the handle's search hint).  ``cred`` is the caller's ``rpc.Cred``
after squashing (``uid``, ``gid``, ``gids``).

Changing one name in a directory is two calls: ``dirop(cred, d, name)`` checks
the name and the caller's right to change the directory and returns a
``DirOp`` (``.d``, ``.before``, ``.after()`` for the wcc data, ``.close()``),
then ``create``/``mkdir``/``symlink``/``mknod``/``remove``/``rmdir``/
``rename``/``link`` act on it.

How to add a backend
--------------------
Write ``backends/NAME.py`` with a subclass of ``Backend`` (or of an existing
backend, to change one aspect of it: ``VirtfsBackend`` takes plain storage
and replaces the attribute view and the permission rules).  Implement
``root``, ``find``, ``walk`` and the operations you support; the rest answer
NFS3ERR_NOTSUPP.  Build exports with it by giving ``server.Config`` a
``backend`` factory (``path -> Backend``).  ``tests/memfs.py`` is a complete
in-memory example that the protocol tests run against.  The fast lane
(``_fastpath.pyx``) serves only backends that set ``lane = True`` (the host
filesystem ones, whose layout it knows) and boards (``backends.boards``:
the objects that are the base's own, learnt through ``lane_layer`` and
``lane_base``); every other backend is served by the general path alone.  The lane applies a backend's rules through the same
Cython blocks the backend uses (``_handles``, ``_fsstat``, ``_xdr``'s
``read_data``, ``_perm``, ``virtfs._meta``): a rule added to a backend belongs in such a block, with
its pure-Python twin, or the backend sets ``lane = False``.
"""

from __future__ import annotations

import stat as S

from .. import perm
from ..fs import NFSError, Obj, check_name
from ..nfs3 import const as C

__all__ = ["Backend", "DirOp", "Obj", "NFSError", "ServerChecks"]


def _notsupp(*_a, **_k):
    raise NFSError(C.NFS3ERR_NOTSUPP)


class DirOp:
    """A change of one name in one directory, with the directory's wcc data."""

    __slots__ = ("d", "name", "before")

    def __init__(self, d: Obj, name: bytes):
        self.d = d
        self.name = name
        self.before = d.st

    def after(self):
        """The directory's attributes now (the post-op half of its wcc data)."""
        return self.d.st

    def close(self) -> None:
        pass


class RefreshingDirOp(DirOp):
    """A DirOp whose post-op attributes are the backend's refresh of the directory."""

    __slots__ = ("b",)

    def __init__(self, b, d: Obj, name: bytes):
        DirOp.__init__(self, d, name)
        self.b = b

    def after(self):
        return self.b.refresh(self.d)


class Backend:
    """The storage of one export.  Every method may raise NFSError (or OSError)."""

    lane = False           # may the Cython fast lane serve this export (host layout only)?
    per_caller_view = False  # do attributes depend on the caller (the lane then declines)?
    switch_creds = False   # does it take the caller's credentials per thread?
    hidden = frozenset()   # names that exist in storage but not for clients
    fsid = 0               # fattr3 fsid
    root_ino = 0

    def close(self) -> None:
        """Release what the backend holds (the export is gone)."""

    # -- objects -------------------------------------------------------------
    def root(self) -> Obj:
        """The export's root directory."""
        raise NotImplementedError

    def find(self, cred, ino: int, dev: int, gen: int, anc: tuple) -> Obj:
        """The object a decoded handle names (inode, device, generation, ancestors),
        fresh attributes included, or NFSError(STALE)."""
        raise NotImplementedError

    def walk(self, d: Obj, name: bytes) -> Obj:
        """One name (".", ".." too) in directory d, without permission checks."""
        raise NotImplementedError

    def refresh(self, obj: Obj):
        """Re-read obj's attributes after a change; returns obj.st."""
        return obj.st

    def run_as(self, cred, work):
        """Wrap work (run off the event loop) so that it runs as the caller."""
        return work

    # -- attributes ------------------------------------------------------------
    def getattr(self, cred, obj: Obj):
        return obj.st

    def setattr(self, cred, obj: Obj, a) -> None:
        """Carry out a decoded sattr3 (nfs3.types.Sattr3) on obj."""
        _notsupp()

    def access(self, cred, obj: Obj, requested: int, read_only: bool) -> int:
        """The ACCESS3 bits granted (of those requested or more)."""
        return perm.access3(cred, obj.st, requested, read_only)

    # -- names -----------------------------------------------------------------
    def lookup(self, cred, d: Obj, name: bytes) -> Obj:
        return self.walk(d, name)

    def readlink(self, cred, obj: Obj) -> bytes:
        _notsupp()

    # -- data ------------------------------------------------------------------
    def check_read(self, cred, obj: Obj) -> None:
        """May cred READ obj (a regular file)?  Checked before the work is scheduled."""
        _notsupp()

    def check_write(self, cred, obj: Obj) -> None:
        _notsupp()

    def read(self, cred, obj: Obj, offset: int, count: int, p, head, nowait: bool = False):
        """READ: call head(st) with the file's attributes now, then append
        the data to p as an XDR opaque; returns (st, bytes read), or None
        when nowait and the data is not in memory (retry without nowait)."""
        _notsupp()

    def lend_read(self, cred, obj: Obj, offset: int, count: int, head):
        """READ from the page cache by the file itself: (st, fd, n) after
        head(st), fd open for the caller to send n bytes from offset and close,
        or None (the default): read() answers it."""
        return None

    def write(self, cred, obj: Obj, offset: int, data, stable: int):
        """WRITE data at offset (stable_how as RFC 1813 says); the attributes after."""
        _notsupp()

    def commit(self, cred, obj: Obj):
        """COMMIT: flush obj; the attributes after."""
        _notsupp()

    # -- directories -----------------------------------------------------------
    def dirop(self, cred, d: Obj, name: bytes) -> DirOp:
        _notsupp()

    def create(self, cred, op: DirOp, how: int, attrs, verf: bytes | None):
        """CREATE (UNCHECKED/GUARDED with attrs, EXCLUSIVE with verf): the new Obj or None."""
        _notsupp()

    def mkdir(self, cred, op: DirOp, attrs):
        _notsupp()

    def symlink(self, cred, op: DirOp, target: bytes, attrs):
        _notsupp()

    def mknod(self, cred, op: DirOp, fmt: int, attrs, major: int, minor: int):
        """A device (S_IFCHR/S_IFBLK), fifo or socket."""
        _notsupp()

    def remove(self, cred, op: DirOp) -> None:
        _notsupp()

    def rmdir(self, cred, op: DirOp) -> None:
        _notsupp()

    def rename(self, cred, src: DirOp, dst: DirOp) -> None:
        _notsupp()

    def link(self, cred, obj: Obj, op: DirOp) -> None:
        _notsupp()

    def check_list(self, cred, d: Obj) -> None:
        """May cred list directory d (READDIR/READDIRPLUS)?"""
        _notsupp()

    def listing_cached(self, d: Obj) -> bool:
        """Is listing d cheap now (no scan of storage)?"""
        return True

    def readdir(self, cred, d: Obj, cookie: int):
        """(cookie, name, fileid) from cookie on, "." and ".." first, in cookie order."""
        _notsupp()

    def readdirplus(self, export, cred, d: Obj, cookie: int, p, budget: int,
                    dirbudget: int, sent: int):
        """entryplus3 items (after "." and "..", which the procedure writes) while
        they fit; returns (entries sent in all, eof).  export makes the handles."""
        _notsupp()

    # -- the filesystem ----------------------------------------------------------
    def fsstat(self, cred, obj: Obj) -> tuple:
        """(tbytes, fbytes, abytes, tfiles, ffiles, afiles)."""
        return (0, 0, 0, 0, 0, 0)

    def fsinfo(self, cred, obj: Obj) -> tuple:
        """(maxfilesize, FSF3_* properties)."""
        return (0x7FFFFFFFFFFFFFFF,
                C.FSF3_LINK | C.FSF3_SYMLINK | C.FSF3_HOMOGENEOUS | C.FSF3_CANSETTIME)

    def pathconf(self, cred, obj: Obj) -> tuple:
        """(linkmax, namemax)."""
        return (65000, C.NFS3_MAXNAMLEN)


class ServerChecks:
    """Mixin: the server checks permissions itself, on the attributes it serves
    (virtfs metadata, a board's merged view: the kernel cannot know them).
    The rules are ``fastnfs.perm``'s."""

    def check(self, cred, st, want: int) -> None:
        """Refuse unless cred has every bit of want (perm.R/W/X) on st."""
        if not perm.allowed(cred, st.st_uid, st.st_gid, st.st_mode, want):
            raise NFSError(C.NFS3ERR_ACCES)

    def check_io(self, cred, st, want: int) -> None:
        """READ/WRITE: the owner may always (a file created 0444 stays writable
        through the open that created it); others need the mode bits; a file
        that may be executed may be read."""
        if not perm.io_allowed(cred, st.st_uid, st.st_gid, st.st_mode, want):
            raise NFSError(C.NFS3ERR_ACCES)

    def check_delete(self, cred, dir_st, victim_st) -> None:
        """Removing or renaming an entry: sticky directories protect others' files."""
        uid = cred.uid
        if (dir_st.st_mode & S.S_ISVTX and uid != 0 and uid != dir_st.st_uid
                and uid != victim_st.st_uid):
            raise NFSError(C.NFS3ERR_PERM)

    # the calls that apply them (PlainBackend's too, whose check hooks do nothing)
    def check_dirop(self, cred, d, name: bytes) -> None:
        """May cred change name in directory d (the first half of dirop)?"""
        if not d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        if name in (b".", b".."):
            raise NFSError(C.NFS3ERR_EXIST)
        check_name(name)
        if name in self.hidden:
            raise NFSError(C.NFS3ERR_ACCES)
        self.check(cred, d.st, perm.W | perm.X)

    def lookup(self, cred, d, name: bytes):
        if d.is_dir:
            self.check(cred, d.st, perm.X)
        return self.walk(d, name)

    def check_list(self, cred, d) -> None:
        if not d.is_dir:
            raise NFSError(C.NFS3ERR_NOTDIR)
        self.check(cred, d.st, perm.R)

    def check_read(self, cred, obj) -> None:
        self.check_io(cred, obj.st, perm.R)

    def check_write(self, cred, obj) -> None:
        self.check_io(cred, obj.st, perm.W)
