"""pseudo's database (``$PSEUDO_LOCALSTATEDIR/files.db``) read directly, safely.

pseudo (Yocto's fakeroot) keeps owners, the whole st_mode and device numbers in
an SQLite table ``files(id, path, dev, ino, uid, gid, mode, rdev, deleting)``;
the files on disk belong to the build user, devices are empty regular files.
A running pseudo server holds that database in memory and writes it back with
SQLite's backup API when idle and at exit; a reader holding a lock at that
moment makes the save fail and the session's changes are lost.  So the file is
only ever opened with ``immutable=1`` (SQLite takes no lock at all and never
writes), read whole, and closed; it is read again when its size, inode or
modification time change, at most once per ``RECHECK`` seconds.  A copy read
while pseudo was rewriting it may fail to parse: the previous rows stay in use
and the next check tries again.

Rows are matched as pseudo matches them (path, else device and inode); a row
whose type disagrees with the file on disk (a directory against a
non-directory, a symlink against a non-symlink) is ignored, and an unusable
row gives one warning naming it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat as S
import time
from typing import NamedTuple

log = logging.getLogger("fastnfs.pseudo")

RECHECK = 1.0           # seconds between two looks at files.db
NAMELESS = b"NAMELESS FILE"
_U32 = 0xFFFFFFFF


class PseudoRow(NamedTuple):
    uid: int
    gid: int
    mode: int      # the whole st_mode
    rdev: int      # glibc makedev() value, 32 bits


def rdev_split(rdev: int) -> tuple[int, int]:
    """(major, minor) of a glibc makedev() value, as glibc's major()/minor() split it."""
    return os.major(rdev), os.minor(rdev)


def _type_agrees(row_mode: int, disk_mode: int) -> bool:
    """pseudo drops a row whose type disagrees with the file: dir vs not, link vs not.
    A device, fifo or socket row over an empty regular file agrees (that is how
    pseudo stores them)."""
    if S.S_ISDIR(row_mode) != S.S_ISDIR(disk_mode):
        return False
    return S.S_ISLNK(row_mode) == S.S_ISLNK(disk_mode)


class PseudoDB:
    """The rows of one files.db, by absolute path and by (dev, ino)."""

    def __init__(self, statedir: str):
        self.statedir = os.path.abspath(statedir)
        self.path = os.path.join(self.statedir, "files.db")
        self.by_path: dict[bytes, PseudoRow] = {}
        self.by_ino: dict[tuple, tuple] = {}    # (dev, ino) -> (its row's path, row)
        self._stamp = None
        self._checked = -1e9
        self._warned: set = set()
        self.loads = 0
        self.refresh(force=True)

    # -- reading -----------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Re-read files.db if it changed (checked at most every RECHECK s).
        True when new rows were loaded."""
        now = time.monotonic()
        if not force and now - self._checked < RECHECK:
            return False
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                self.by_path, self.by_ino, self._stamp = {}, {}, None
                return True
            return False
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp and not force:
            return False
        try:
            by_path, by_ino = self._read()
        except sqlite3.Error as e:
            # a copy caught mid-rewrite, or not a database: keep what we had
            self._warn(("db", stamp), "%s cannot be read (%s); keeping the previous rows"
                       % (self.path, e))
            return False
        self.by_path, self.by_ino, self._stamp = by_path, by_ino, stamp
        self.loads += 1
        return True

    def _read(self):
        uri = "file:%s?mode=ro&immutable=1" % _uri_path(self.path)
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            conn.text_factory = bytes
            rows = conn.execute(
                "SELECT id, path, dev, ino, uid, gid, mode, rdev, deleting FROM files"
            ).fetchall()
        finally:
            conn.close()
        by_path: dict = {}
        by_ino: dict = {}
        for rid, path, dev, ino, uid, gid, mode, rdev, deleting in rows:
            row = self._row(rid, path, uid, gid, mode, rdev)
            if row is None or deleting:
                continue
            if isinstance(dev, int) and isinstance(ino, int):
                by_ino[(dev & _U32, ino & 0xFFFFFFFFFFFFFFFF)] = (path, row)
            if isinstance(path, bytes) and path != NAMELESS and path.startswith(b"/"):
                by_path[path.rstrip(b"/") or b"/"] = row
        return by_path, by_ino

    def _row(self, rid, path, uid, gid, mode, rdev):
        vals = (uid, gid, mode, rdev)
        if not all(isinstance(v, int) for v in vals) or not isinstance(path, bytes):
            self._warn(("row", rid), "%s: row id %s is malformed (path %r, uid %r, gid %r, "
                       "mode %r, rdev %r); ignored" % (self.path, rid, path, uid, gid, mode,
                                                        rdev))
            return None
        mode &= _U32
        if S.S_IFMT(mode) not in (S.S_IFREG, S.S_IFDIR, S.S_IFLNK, S.S_IFCHR, S.S_IFBLK,
                                  S.S_IFIFO, S.S_IFSOCK):
            self._warn(("row", rid), "%s: row id %s (%r) has no file type in mode 0%o; "
                       "ignored" % (self.path, rid, path, mode))
            return None
        return PseudoRow(uid & _U32, gid & _U32, mode, rdev & _U32)

    def _warn(self, key, msg: str) -> None:
        if key not in self._warned:
            if len(self._warned) > 4096:
                self._warned.clear()
            self._warned.add(key)
            log.warning("%s", msg)

    # -- lookups -----------------------------------------------------------------
    def row(self, abspath: bytes, dev: int, ino: int, disk_mode: int) -> PseudoRow | None:
        """The row for the file at abspath (its device, inode and mode on disk), as
        pseudo would pick it, or None: the file keeps its host attributes."""
        self.refresh()
        row = self.by_path.get(abspath)
        if row is None:
            hit = self.by_ino.get((dev & _U32, ino & 0xFFFFFFFFFFFFFFFF))
            if hit is None:
                return None
            path, row = hit
            if path != abspath and path != NAMELESS and os.path.lexists(path):
                # pseudo aborts its client here ("path mismatch": the inode was reused
                # after a file was replaced outside pseudo); we keep the host values
                self._warn(("mismatch", abspath), "%s: pseudo's row for inode %d names "
                           "another file, %s; serving the host's attributes"
                           % (os.fsdecode(abspath), ino, os.fsdecode(path)))
                return None
        if not _type_agrees(row.mode, disk_mode):
            return None
        return row


def _uri_path(path: str) -> str:
    from urllib.parse import quote
    return quote(path, safe="/")
