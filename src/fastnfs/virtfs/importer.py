"""``fastnfs virtfs import SRC DST``: build a mapped-file ("virtfs") tree.

``import SRC DST`` builds a mapped-file ("virtfs") tree in DST:

* from a directory SRC (run as root to read everything): every entry's real
  owner, whole ``st_mode`` and, for devices, ``st_rdev`` become metadata;
  DST holds regular files, directories and symlinks owned by the invoking
  user; device nodes, fifos and sockets become empty regular files.  Hard
  links stay hard links (their metadata files are hard-linked too, as the
  server's LINK does).  Mount points are descended into unless
  ``--one-file-system``; DST itself is skipped if it lies inside SRC.
* from a tar archive SRC (``-`` for stdin; gzip, bzip2, xz, and zstd when
  the ``compression.zstd`` or ``zstandard`` module is there), as an ordinary
  user: owners, modes and device numbers come from the tar headers.

Symlinks are written as real symlinks (``--symlinks host``, the default, as
ptxdist does) or, with ``--symlinks qemu``, as QEMU's mapped-file backend
writes them: a regular file holding the target, whose metadata says
``S_IFLNK|0777`` (a tree for ``-virtfs ...,security_model=mapped-file``).

Owner of what is written: the user running the import, or with ``--owner
UID:GID`` that one (only root can give files away); as root under sudo the
default is ``SUDO_UID:SUDO_GID``, so that ``sudo fastnfs virtfs import / x``
leaves a tree the invoking user can serve.  On disk, directories get
``u+rwx`` and files ``u+rw`` added and setuid, setgid and sticky bits removed
(the metadata keeps the real ones).

Safety: names are handled as bytes, one component at a time, relative to
directory file descriptors opened with ``O_NOFOLLOW``; nothing in DST is
followed (a tar that makes ``x -> /etc`` and then ``x/passwd`` gets the second
entry refused).  Refused, with a message and exit status 1 at the end, while
the rest is imported: tar members with absolute names or ``..`` components,
hard links whose target is such a name or not (yet) in DST, and any entry with
a ``.virtfs_metadata`` or ``.virtfs_metadata_root`` component.  DST must be
missing or an empty directory.
"""

from __future__ import annotations

import errno
import os
import stat as S
import sys
import tarfile
import time
from typing import NamedTuple

from .store import (HIDDEN, META_DIR, META_ROOT, Meta, link_meta, make_rdev,
                    write_meta, write_root_meta)

__all__ = ["import_tree", "import_directory", "import_tar", "ImportResult", "ImportError_"]

_CX = os.O_CLOEXEC
_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CX
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CX
_SRC_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CX
_CHUNK = 1 << 20
_DEFAULT_ROOT = Meta(0, 0, S.S_IFDIR | 0o755, -1)
_IMPLICIT_DIR = Meta(0, 0, S.S_IFDIR | 0o755, -1)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ImportError_(Exception):
    """A fatal problem with SRC or DST (nothing, or not all, was imported)."""


class ImportResult(NamedTuple):
    entries: int       # entries written to DST (the root not counted)
    bytes: int         # file content bytes copied
    refused: list      # (path shown, reason) for every entry refused or failed


def _shown(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _real_mode(mode: int) -> int:
    """Permission bits for what is written on disk (the metadata has the real ones)."""
    perm = mode & 0o777
    return perm | 0o700 if S.S_ISDIR(mode) else perm | 0o600


class _Progress:
    """A ``\\r`` counter on stderr when it is a terminal (at most ten updates a second)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.entries = 0
        self.bytes = 0
        self._last = 0.0
        self._shown = False

    def add(self, entries: int = 0, nbytes: int = 0) -> None:
        self.entries += entries
        self.bytes += nbytes
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= 0.1:
                self._last = now
                self._draw()

    def _draw(self) -> None:
        sys.stderr.write("\r%d entries, %.1f MiB" % (self.entries, self.bytes / 1048576))
        sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self.enabled and self._shown:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()


# ------------------------------------------------------------------ writing into DST

class _Dest:
    """DST, written to only through directory fds that never follow a symlink."""

    def __init__(self, dst: bytes, owner, progress: _Progress, symlinks: str = "host"):
        if symlinks not in ("host", "qemu"):
            raise ImportError_("symlink style must be host or qemu, not %r" % (symlinks,))
        self.qemu_links = symlinks == "qemu"
        self.path = dst
        try:
            os.mkdir(dst, 0o755)
        except FileExistsError:
            pass
        try:
            self.root = os.open(dst, _DIR_RD)
        except OSError as e:
            raise ImportError_("%s: cannot open as a directory: %s"
                               % (_shown(dst), e.strerror)) from None
        if os.listdir(self.root):
            os.close(self.root)
            raise ImportError_("%s: not empty; import into a new or empty directory"
                               % _shown(dst))
        self.owner = owner
        self.progress = progress
        self.refused: list = []
        self.entries = 0
        self.bytes = 0
        self.meta: dict = {}   # (components) -> Meta of entries written (for hard links, dirs)

    def close(self) -> None:
        os.close(self.root)

    def refuse(self, name: str, reason: str) -> None:
        self.refused.append((name, reason))

    # -- walking
    def open_parent(self, comps: tuple, create: bool) -> int:
        """A fd of the directory holding comps[-1]; missing directories made if create.

        Raises OSError(ELOOP/ENOTDIR) if a component is a symlink or not a directory.
        """
        fd = os.dup(self.root)
        try:
            for i, c in enumerate(comps[:-1]):
                try:
                    nfd = os.open(c, _DIR_RD, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise OSError(e.errno, "%s is a symlink or not a directory (not followed)"
                                      % _shown(b"/".join(comps[:i + 1]))) from None
                    if e.errno != errno.ENOENT:
                        raise
                    if not create:
                        raise
                    os.mkdir(c, 0o755, dir_fd=fd)
                    self._chown(fd, c)
                    write_meta(fd, c, _IMPLICIT_DIR)
                    self.meta[comps[:i + 1]] = _IMPLICIT_DIR
                    self.entries += 1
                    nfd = os.open(c, _DIR_RD, dir_fd=fd)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _chown(self, dfd: int, name: bytes) -> None:
        if self.owner is not None:
            os.chown(name, self.owner[0], self.owner[1], dir_fd=dfd, follow_symlinks=False)

    def _clear(self, dfd: int, name: bytes, want_dir: bool) -> bool:
        """Remove a non-directory in the way (later archive members replace earlier ones).

        True if name is now free, False if it is an existing directory (kept when
        want_dir, an error otherwise).
        """
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if S.S_ISDIR(st.st_mode):
            if want_dir:
                return False
            raise IsADirectoryError(errno.EISDIR, "a directory of that name exists")
        os.unlink(name, dir_fd=dfd)
        return True

    # -- entries
    def put(self, comps: tuple, meta: Meta, kind: str, *, data=None, target: bytes = b"",
            link_to: tuple = (), mtime=None) -> None:
        """Write one entry: kind is "dir", "file" (data: a readable fd or file object, or
        None for an empty file), "symlink" (target) or "link" (link_to: components)."""
        if not comps:  # the root itself
            write_root_meta(self.root, meta)
            if mtime is not None:
                self._root_mtime = mtime
            return
        dfd = self.open_parent(comps, create=True)
        try:
            name = comps[-1]
            if kind == "dir":
                if self._clear(dfd, name, want_dir=True):
                    os.mkdir(name, 0o700, dir_fd=dfd)
                    self._chown(dfd, name)
                write_meta(dfd, name, meta)
                self.meta[comps] = meta
                self._dir_modes.append((comps, _real_mode(meta.mode), mtime))
            elif kind == "link":
                sfd = self.open_parent(link_to, create=False)
                try:
                    st = os.stat(link_to[-1], dir_fd=sfd, follow_symlinks=False)
                    if S.S_ISDIR(st.st_mode):
                        raise IsADirectoryError(errno.EISDIR, "hard link to a directory")
                    self._clear(dfd, name, want_dir=False)
                    os.link(link_to[-1], name, src_dir_fd=sfd, dst_dir_fd=dfd,
                            follow_symlinks=False)
                    if not link_meta(sfd, link_to[-1], dfd, name):
                        write_meta(dfd, name, meta)
                finally:
                    os.close(sfd)
                self.meta[comps] = self.meta.get(link_to, meta)
            else:
                self._clear(dfd, name, want_dir=False)
                if kind == "symlink" and not self.qemu_links:
                    os.symlink(target, name, dir_fd=dfd)
                    self._chown(dfd, name)
                else:
                    fd = os.open(name, _NEW_FILE, 0o600, dir_fd=dfd)
                    try:
                        if kind == "symlink":   # QEMU's way: a file holding the target
                            _copy_bytes(target, fd)
                        elif data is not None:
                            n = _copy(data, fd)
                            self.bytes += n
                            self.progress.add(0, n)
                        if self.owner is not None:
                            os.fchown(fd, self.owner[0], self.owner[1])
                        os.fchmod(fd, 0o600 if kind == "symlink" else _real_mode(meta.mode))
                        if mtime is not None:
                            os.utime(fd, ns=(mtime, mtime))
                    finally:
                        os.close(fd)
                write_meta(dfd, name, meta)
                self.meta[comps] = meta
                if kind == "symlink" and mtime is not None and not self.qemu_links:
                    os.utime(name, ns=(mtime, mtime), dir_fd=dfd, follow_symlinks=False)
            self.entries += 1
            self.progress.add(1)
        finally:
            os.close(dfd)

    _dir_modes: list

    def begin(self) -> None:
        self._dir_modes = []
        self._root_mtime = None

    def finish(self) -> None:
        """Directory modes and mtimes (deepest first, after their contents), then owners."""
        for comps, mode, mtime in sorted(self._dir_modes, key=lambda t: -len(t[0])):
            try:
                dfd = self.open_parent(comps, create=False)
            except OSError:
                continue
            try:
                _chmod_dir(dfd, comps[-1], mode)
                if mtime is not None:
                    os.utime(comps[-1], ns=(mtime, mtime), dir_fd=dfd, follow_symlinks=False)
            except OSError:
                pass
            finally:
                os.close(dfd)
        if self.owner is not None:
            os.fchown(self.root, self.owner[0], self.owner[1])
            _chown_metadata(self.root, self.owner)
        if self._root_mtime is not None:
            try:
                os.utime(self.root, ns=(self._root_mtime, self._root_mtime))
            except OSError:
                pass


def _chmod_dir(dfd: int, name: bytes, mode: int) -> None:
    fd = os.open(name, _DIR_RD, dir_fd=dfd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _chown_metadata(dfd: int, owner) -> None:
    """Give the metadata directories and files (made by this process) to owner."""
    uid, gid = owner
    try:
        os.chown(META_ROOT, uid, gid, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    stack = [os.dup(dfd)]
    while stack:
        fd = stack.pop()
        try:
            with os.scandir(fd) as it:
                entries = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in entries:
                if not is_dir:
                    continue
                if name == META_DIR:
                    os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                    mfd = os.open(name, _DIR_RD, dir_fd=fd)
                    try:
                        for m in os.listdir(mfd):
                            os.chown(m, uid, gid, dir_fd=mfd, follow_symlinks=False)
                    finally:
                        os.close(mfd)
                else:
                    try:
                        stack.append(os.open(name, _DIR_RD, dir_fd=fd))
                    except OSError:
                        pass
        finally:
            os.close(fd)


def _copy_bytes(data: bytes, fd: int) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy(src, out_fd: int) -> int:
    """Copy a file object or fd to out_fd; the number of bytes."""
    total = 0
    if isinstance(src, int):
        try:
            while True:
                n = os.sendfile(out_fd, src, None, _CHUNK)
                if n == 0:
                    return total
                total += n
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS) or total:
                raise
        read = lambda: os.read(src, _CHUNK)  # noqa: E731
    else:
        read = lambda: src.read(_CHUNK)  # noqa: E731
    while True:
        b = read()
        if not b:
            return total
        view = memoryview(b)
        while view:
            view = view[os.write(out_fd, view):]
        total += len(b)


# ------------------------------------------------------------------ from a directory

def _meta_of(st) -> Meta:
    rdev = -1
    if S.S_ISCHR(st.st_mode) or S.S_ISBLK(st.st_mode):
        rdev = make_rdev(os.major(st.st_rdev), os.minor(st.st_rdev))
    return Meta(st.st_uid, st.st_gid, st.st_mode, rdev)


def import_directory(src, dst, *, owner=None, one_file_system: bool = False,
                     progress: bool = False, symlinks: str = "host") -> ImportResult:
    """Import the directory tree src into dst (see the module docstring)."""
    src, dst = os.fsencode(src), os.fsencode(dst)
    try:
        sroot = os.open(src, os.O_RDONLY | os.O_DIRECTORY | _CX)
    except OSError as e:
        raise ImportError_("%s: cannot open: %s" % (_shown(src), e.strerror)) from None
    prog = _Progress(progress)
    try:
        d = _Dest(dst, owner, prog, symlinks)
    except BaseException:
        os.close(sroot)
        raise
    d.begin()
    try:
        dst_st = os.fstat(d.root)
        skip = (dst_st.st_dev, dst_st.st_ino)
        rst = os.fstat(sroot)
        d.put((), _meta_of(rst), "dir", mtime=rst.st_mtime_ns)
        links: dict = {}
        _walk_src(d, sroot, (), rst.st_dev if one_file_system else None, skip, links, src)
        d.finish()
    finally:
        os.close(sroot)
        d.close()
        prog.done()
    return ImportResult(d.entries, d.bytes, d.refused)


def _walk_src(d: _Dest, sfd: int, comps: tuple, dev, skip, links: dict, src: bytes) -> None:
    with os.scandir(sfd) as it:
        names = sorted(os.fsencode(e.name) for e in it)
    for name in names:
        here = comps + (name,)
        shown = _shown(os.path.join(src, *here))
        if name in HIDDEN:
            d.refuse(shown, "name reserved for virtfs metadata")
            continue
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
            meta = _meta_of(st)
            mode = st.st_mode
            if S.S_ISDIR(mode):
                if (st.st_dev, st.st_ino) == skip:
                    continue  # DST inside SRC
                d.put(here, meta, "dir", mtime=st.st_mtime_ns)
                if dev is not None and st.st_dev != dev:
                    continue
                cfd = os.open(name, _DIR_RD, dir_fd=sfd)
                try:
                    _walk_src(d, cfd, here, dev, skip, links, src)
                finally:
                    os.close(cfd)
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                d.put(here, meta, "link", link_to=links[key])
                continue
            if S.S_ISREG(mode):
                fd = os.open(name, _SRC_FILE, dir_fd=sfd)
                try:
                    d.put(here, meta, "file", data=fd, mtime=st.st_mtime_ns)
                finally:
                    os.close(fd)
            elif S.S_ISLNK(mode):
                target = os.readlink(name, dir_fd=sfd)
                d.put(here, meta, "symlink", target=target, mtime=st.st_mtime_ns)
            else:  # device, fifo, socket: an empty file
                d.put(here, meta, "file", mtime=st.st_mtime_ns)
            if st.st_nlink > 1:
                links[key] = here
        except (OSError, ValueError) as e:
            d.refuse(shown, getattr(e, "strerror", None) or str(e))


# ------------------------------------------------------------------ from a tar archive

def _components(name: str):
    """The path components of a member name, or a str saying why it is refused."""
    b = os.fsencode(name)
    if b.startswith(b"/"):
        return "absolute path"
    if b"\0" in b:
        return "NUL in name"
    comps = tuple(c for c in b.split(b"/") if c and c != b".")
    if b".." in comps:
        return "'..' in path"
    if any(c in HIDDEN for c in comps):
        return "name reserved for virtfs metadata"
    return comps


def _open_tar(src: str):
    """(tarfile opened for streaming, file object to close)."""
    f = sys.stdin.buffer if src == "-" else open(src, "rb")
    try:
        head = f.peek(4)[:4] if hasattr(f, "peek") else b""
        if head == _ZSTD_MAGIC:
            try:
                from compression import zstd  # Python 3.14
                z = zstd.ZstdFile(f)
            except ImportError:
                try:
                    import zstandard
                except ImportError:
                    raise ImportError_(
                        "%s: zstd-compressed, and this Python has no zstd module; use "
                        "'zstd -dc %s | fastnfs virtfs import - DST'" % (src, src)) from None
                z = zstandard.ZstdDecompressor().stream_reader(f)
            return tarfile.open(fileobj=z, mode="r|"), f
        return tarfile.open(fileobj=f, mode="r|*"), f
    except tarfile.TarError as e:
        f.close()
        raise ImportError_("%s: not a tar archive: %s" % (src, e)) from None
    except BaseException:
        if f is not sys.stdin.buffer:
            f.close()
        raise


def import_tar(src, dst, *, owner=None, progress: bool = False,
               symlinks: str = "host") -> ImportResult:
    """Import the tar archive src (a path, or "-" for stdin) into dst."""
    src = os.fsdecode(src)
    dst = os.fsencode(dst)
    try:
        tf, f = _open_tar(src)
    except OSError as e:
        raise ImportError_("%s: cannot open: %s" % (src, e.strerror)) from None
    prog = _Progress(progress)
    try:
        d = _Dest(dst, owner, prog, symlinks)
    except BaseException:
        tf.close()
        if f is not sys.stdin.buffer:
            f.close()
        raise
    d.begin()
    root_done = False
    try:
        try:
            for m in tf:
                what = _components(m.name)
                if isinstance(what, str):
                    d.refuse(m.name, what)
                    continue
                try:
                    mode = m.mode & 0o7777
                    mtime = int(m.mtime * 1e9) if m.mtime else None
                    if m.isdir():
                        meta = Meta(m.uid, m.gid, S.S_IFDIR | mode, -1)
                        d.put(what, meta, "dir", mtime=mtime)
                        root_done = root_done or not what
                        continue
                    if not what:
                        d.refuse(m.name, "the archive root is not a directory")
                        continue
                    if m.islnk():
                        target = _components(m.linkname)
                        if isinstance(target, str) or not target:
                            d.refuse(m.name, "hard link target %r: %s"
                                     % (m.linkname, target or "the root"))
                            continue
                        d.put(what, Meta(m.uid, m.gid, S.S_IFREG | mode, -1), "link",
                              link_to=target)
                    elif m.issym():
                        d.put(what, Meta(m.uid, m.gid, S.S_IFLNK | 0o777, -1), "symlink",
                              target=os.fsencode(m.linkname), mtime=mtime)
                    elif m.isreg():
                        data = tf.extractfile(m)
                        d.put(what, Meta(m.uid, m.gid, S.S_IFREG | mode, -1), "file",
                              data=data, mtime=mtime)
                    elif m.ischr() or m.isblk():
                        fmt = S.S_IFCHR if m.ischr() else S.S_IFBLK
                        d.put(what, Meta(m.uid, m.gid, fmt | mode,
                                         make_rdev(m.devmajor, m.devminor)), "file", mtime=mtime)
                    elif m.isfifo():
                        d.put(what, Meta(m.uid, m.gid, S.S_IFIFO | mode, -1), "file",
                              mtime=mtime)
                    else:
                        d.refuse(m.name, "unsupported tar entry type %r" % m.type)
                except (OSError, ValueError) as e:
                    d.refuse(m.name, getattr(e, "strerror", None) or str(e))
        except tarfile.TarError as e:
            d.refuse(src, "archive error: %s" % e)
        if not root_done:
            d.put((), _DEFAULT_ROOT, "dir")
        d.finish()
    finally:
        tf.close()
        if f is not sys.stdin.buffer:
            f.close()
        d.close()
        prog.done()
    return ImportResult(d.entries, d.bytes, d.refused)


def import_tree(src, dst, *, owner=None, one_file_system: bool = False,
                progress: bool = False, symlinks: str = "host") -> ImportResult:
    """import_directory if src is a directory, else import_tar."""
    if src != "-" and os.path.isdir(src):
        return import_directory(src, dst, owner=owner, one_file_system=one_file_system,
                                progress=progress, symlinks=symlinks)
    return import_tar(src, dst, owner=owner, progress=progress, symlinks=symlinks)
