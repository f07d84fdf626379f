#!/usr/bin/env python3
"""Run the real Linux NFS client against a fastnfs server, inside qemu.

The host running the tests has no usable NFS client of its own, so this
module boots a stock Debian kernel in qemu with a small busybox initramfs.
The guest mounts ``10.0.2.2:<export>`` (qemu's user-mode network maps that
address to the host's 127.0.0.1; with ipv6=True an IPv6-only guest mounts
``[fec0::2]:<export>``, which slirp maps to the host's ::1), runs a shell
script in the mount and powers off.  Everything the guest needs (kernel
package, initramfs, an optional UDP-capable nfs.ko) is fetched with apt and
built on demand into a cache directory.

Library use (with tests/ on sys.path, as pytest arranges for test files
directly under tests/)::

    from vm import guest
    ok, why = guest.available()
    r = guest.run("cat x/f; echo hi > y", nfs_port=20499, export="/srv/e")
    assert r.rc == 0, r.describe()
    print(r.output)

Command line: ``python3 tests/vm/guest.py --help``.  See README.md beside
this file for the details.  Standard library only.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import fcntl
import glob
import gzip
import hashlib
import io
import lzma
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from typing import Callable, Iterable, Optional

# ---------------------------------------------------------------------------
# constants

#: Result.rc values produced by the harness itself (not by the script).
RC_TIMEOUT = 124
RC_MOUNT_FAILED = 125
RC_BOOT_FAILED = 126

GUEST_ADDR = "10.0.2.15"
SERVER_ADDR = "10.0.2.2"          # slirp's alias for the host's loopback

# run(ipv6=True): slirp's default IPv6 prefix; its host address is the host's ::1
IPV6_NET = "fec0::/64"
GUEST_ADDR6 = "fec0::15"
SERVER_ADDR6 = "fec0::2"

DEFAULT_CACHE = "/var/cache/fastnfs-tests/vm"
KEEP_LOGS = 50

#: Kernel modules loaded in the guest, dependencies are added automatically.
GUEST_MODULES = ("virtio_pci", "virtio_net", "sunrpc", "grace", "lockd",
                 "nfs_acl", "nfs", "nfsv3")

#: Added for run(virtfs=PATH): the 9p client over virtio (with netfs, 9pnet
#: and fscache from modules.dep).  A separate base initramfs ("-9p" variants),
#: so the NFS-only one stays as it is.
GUEST_MODULES_9P = ("9pnet_virtio", "9p")

#: run(virtfs=PATH): how qemu shares PATH, and how the guest mounts it
VIRTFS_TAG = "share"
VIRTFS_OPTS = "trans=virtio,version=9p2000.L,cache=none,msize=262144"

#: Bump when the layout of the base initramfs changes.
_BASE_FORMAT = 1

_UDP_KCONFIG = "CONFIG_NFS_DISABLE_UDP_SUPPORT"


class VMError(RuntimeError):
    """The harness cannot prepare or start a guest."""


def _log(msg: str) -> None:
    if os.environ.get("FASTNFS_VM_QUIET") != "1":
        sys.stderr.write("[vm] %s\n" % msg)
        sys.stderr.flush()


# ---------------------------------------------------------------------------
# cache directory and its lock

def cache_dir() -> str:
    """The cache directory ($FASTNFS_VM_CACHE, default /var/cache/...)."""
    path = os.environ.get("FASTNFS_VM_CACHE") or DEFAULT_CACHE
    try:
        os.makedirs(path, exist_ok=True)
    except PermissionError:
        if os.environ.get("FASTNFS_VM_CACHE"):
            raise
        path = os.path.join(os.path.expanduser("~"), ".cache", "fastnfs-tests", "vm")
        os.makedirs(path, exist_ok=True)
    return path


class _CacheLock:
    """Exclusive flock on <cache>/.lock; also serialises threads of this process."""

    _thread_lock = threading.RLock()

    def __init__(self, cache: str):
        self.path = os.path.join(cache, ".lock")
        self.fd = None

    def __enter__(self):
        self._thread_lock.acquire()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _log("waiting for another process preparing %s" % os.path.dirname(self.path))
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        finally:
            self.fd = None
            self._thread_lock.release()


def _atomic_write(path: str, data: bytes) -> None:
    tmp = "%s.part%d" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# host tools

def _run_quiet(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)


def _apt_env():
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


_apt_updated = False


def _apt_update_once() -> None:
    global _apt_updated
    if not _apt_updated:
        _log("apt-get update")
        _run_quiet(["apt-get", "update"], env=_apt_env())
        _apt_updated = True


def _apt_install(pkgs: list[str]) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + pkgs
    for attempt in range(2):
        _log("apt-get install %s" % " ".join(pkgs))
        r = _run_quiet(cmd, env=_apt_env())
        if r.returncode == 0:
            return True
        if attempt == 0:
            _apt_update_once()
    _log("apt-get install failed:\n%s" % r.stdout[-2000:])
    return False


def _is_static_elf(path: str) -> bool:
    """True if the ELF file has no program interpreter (PT_INTERP)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:        # ELF64 only
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 3:
            return False
    return True


def _qemu_binary() -> Optional[str]:
    return shutil.which(os.environ.get("FASTNFS_VM_QEMU", "qemu-system-x86_64"))


def _busybox() -> Optional[str]:
    for cand in (os.environ.get("FASTNFS_VM_BUSYBOX"), "/bin/busybox",
                 "/usr/bin/busybox", shutil.which("busybox")):
        if cand and os.path.exists(cand) and _is_static_elf(cand):
            return cand
    return None


_avail_cache: Optional[tuple[bool, str]] = None


def available(install: bool = True) -> tuple[bool, str]:
    """(True, "") if guests can run here, else (False, reason).

    Missing qemu or static busybox are apt-installed when we are root
    (unless install=False); the answer is False only if that is impossible.
    Kernel download and initramfs build happen later, in prepare().
    """
    global _avail_cache
    if _avail_cache is not None and (_avail_cache[0] or not install):
        return _avail_cache
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        _avail_cache = (False, "guest VMs need an x86_64 Linux host")
        return _avail_cache
    missing = []
    if not _qemu_binary():
        missing.append("qemu-system-x86")
    if not _busybox():
        missing.append("busybox-static")
    for tool, pkg in (("dpkg-deb", "dpkg"), ("apt-get", "apt")):
        if not shutil.which(tool):
            _avail_cache = (False, "%s not found: a Debian-like host with apt is needed" % tool)
            return _avail_cache
    if missing and install:
        _apt_install(missing)
        missing = [p for p, ok in (("qemu-system-x86", _qemu_binary()),
                                   ("busybox-static", _busybox())) if not ok]
    if missing:
        _avail_cache = (False, "not installed and could not be installed: %s "
                               "(apt-get install %s)" % (", ".join(missing), " ".join(missing)))
    else:
        _avail_cache = (True, "")
    return _avail_cache


# ---------------------------------------------------------------------------
# the Debian kernel

@dataclasses.dataclass
class Kernel:
    root: str            # extracted package
    deb: str             # the .deb it came from
    release: str         # uname -r, e.g. 6.1.0-56-amd64
    pkg_version: str     # Debian version, e.g. 6.1.192-2
    image: str           # what qemu boots: the PVH vmlinux, else vmlinuz
    moddir: str          # <root>/lib/modules/<release>
    config: dict

    @property
    def udp_refused(self) -> bool:
        return self.config.get(_UDP_KCONFIG) == "y"


def _current_image_package() -> str:
    """Ask apt which linux-image-X the linux-image-amd64 metapackage wants."""
    for attempt in range(2):
        r = _run_quiet(["apt-cache", "depends", "linux-image-amd64"])
        names = re.findall(r"Depends:\s*(linux-image-[0-9][^\s<>]*)", r.stdout)
        names = [n for n in names if not n.endswith("-unsigned")] or names
        if names:
            return max(names, key=_version_key)
        if attempt == 0:
            _apt_update_once()
    raise VMError("apt-cache depends linux-image-amd64 names no kernel package "
                  "(is apt configured for Debian?):\n" + r.stdout[-1000:])


def _version_key(s: str):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


def _apt_download(spec: str, dest: str) -> str:
    """apt-get download SPEC into dest; returns the path of the new .deb."""
    os.makedirs(dest, exist_ok=True)
    work = tempfile.mkdtemp(prefix="dl-", dir=dest)
    try:
        for attempt in range(2):
            r = _run_quiet(["apt-get", "download", spec], cwd=work)
            debs = glob.glob(os.path.join(work, "*.deb"))
            if r.returncode == 0 and debs:
                break
            if attempt == 0:
                _apt_update_once()
        else:
            raise VMError("apt-get download %s failed:\n%s" % (spec, r.stdout[-1500:]))
        final = os.path.join(dest, os.path.basename(debs[0]))
        os.replace(debs[0], final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _deb_field(deb: str, field: str) -> str:
    r = _run_quiet(["dpkg-deb", "-f", deb, field])
    if r.returncode != 0:
        raise VMError("dpkg-deb -f %s %s: %s" % (deb, field, r.stdout))
    return r.stdout.strip()


def _read_kconfig(path: str) -> dict:
    cfg = {}
    try:
        with open(path) as fh:
            for line in fh:
                key, sep, val = line.strip().partition("=")
                if sep and key.startswith("CONFIG_"):
                    cfg[key] = val
    except OSError:
        pass
    return cfg


def _load_kernel(root: str, deb: str) -> Kernel:
    with open(os.path.join(root, ".fastnfs-kernel")) as fh:
        info = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    release = info["release"]
    image = os.path.join(root, "boot", "vmlinux-pvh-" + release)
    if not os.path.exists(image) or os.environ.get("FASTNFS_VM_PVH") == "0":
        image = os.path.join(root, "boot", "vmlinuz-" + release)
    return Kernel(root=root, deb=deb, release=release, pkg_version=info["version"],
                  image=image,
                  moddir=os.path.join(root, "lib", "modules", release),
                  config=_read_kconfig(os.path.join(root, "boot", "config-" + release)))


# An ELF note "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY): the kernel can be
# started directly in 32-bit mode by qemu's PVH loader.
_PVH_NOTE = re.compile(rb"\x04\x00\x00\x00[\x04\x08]\x00\x00\x00\x12\x00\x00\x00Xen\x00")


def _write_pvh_vmlinux(bzimage: str, out: str) -> bool:
    """Store the uncompressed kernel ELF if it supports PVH boot.

    Under TCG, decompressing the xz payload of a bzImage costs the guest
    about 3 s per boot; qemu can load an ELF vmlinux with the PVH note
    instead, which skips the BIOS/real-mode path and the decompressor.
    """
    with open(bzimage, "rb") as fh:
        data = fh.read()
    payload = None
    for magic in (b"\xfd7zXZ\x00", b"\x1f\x8b\x08"):
        start = data.find(magic)
        while start >= 0 and payload is None:
            try:
                if magic[0] == 0xfd:
                    elf = lzma.LZMADecompressor().decompress(data[start:])
                else:
                    elf = zlib.decompressobj(31).decompress(data[start:])
                if elf[:4] == b"\x7fELF":
                    payload = elf
            except (lzma.LZMAError, zlib.error):
                pass
            start = data.find(magic, start + 1) if payload is None else -1
        if payload is not None:
            break
    if payload is None or not _PVH_NOTE.search(payload):
        return False
    with open(out, "wb") as fh:
        fh.write(payload)
    return True


def _unpack_kernel(deb: str, dest: str) -> None:
    tmp = dest + ".unpack%d" % os.getpid()
    shutil.rmtree(tmp, ignore_errors=True)
    _log("unpacking %s" % os.path.basename(deb))
    r = _run_quiet(["dpkg-deb", "-x", deb, tmp])
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VMError("dpkg-deb -x %s failed: %s" % (deb, r.stdout))
    # Newer Debian ships /usr/lib/modules only; keep one place to look.
    if not os.path.isdir(os.path.join(tmp, "lib", "modules")) and \
            os.path.isdir(os.path.join(tmp, "usr", "lib", "modules")):
        os.symlink("usr/lib", os.path.join(tmp, "lib"))
    releases = os.listdir(os.path.join(tmp, "lib", "modules"))
    images = [r for r in releases if os.path.exists(os.path.join(tmp, "boot", "vmlinuz-" + r))]
    if len(images) != 1:
        raise VMError("%s: cannot tell the kernel release (found %s)" % (deb, releases))
    release = images[0]
    if shutil.which("depmod"):
        r = _run_quiet(["depmod", "-b", tmp, release])
        if r.returncode != 0:
            _log("depmod failed, falling back to .modinfo: %s" % r.stdout[-500:])
    with open(os.path.join(tmp, ".fastnfs-kernel"), "w") as fh:
        fh.write("release=%s\nversion=%s\ndeb=%s\n"
                 % (release, _deb_field(deb, "Version"), os.path.basename(deb)))
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def _get_kernel(cache: str, refresh: bool = False) -> Kernel:
    """Locked by the caller.  Uses the cached kernel, downloads one if none."""
    debdir = os.path.join(cache, "debs")
    explicit = os.environ.get("FASTNFS_VM_KERNEL_DEB")
    if explicit:
        deb = os.path.abspath(explicit)
    else:
        debs = sorted(glob.glob(os.path.join(debdir, "linux-image-*.deb")), key=_version_key)
        if refresh or not debs:
            pkg = _current_image_package()
            t0 = time.monotonic()
            _log("downloading %s (apt-get download)" % pkg)
            deb = _apt_download(pkg, debdir)
            _log("downloaded %s in %.1fs" % (os.path.basename(deb), time.monotonic() - t0))
            if refresh and deb in debs:
                raise VMError("apt offers no newer kernel than %s" % os.path.basename(deb))
            for old in debs:
                if old != deb:
                    os.unlink(old)
        else:
            deb = debs[-1]
    stem = os.path.basename(deb)[:-len(".deb")]
    root = os.path.join(cache, "kernels", stem)
    if not os.path.exists(os.path.join(root, ".fastnfs-kernel")):
        os.makedirs(os.path.dirname(root), exist_ok=True)
        for other in glob.glob(os.path.join(cache, "kernels", "*")):
            if other != root:
                shutil.rmtree(other, ignore_errors=True)
        _unpack_kernel(deb, root)
    kernel = _load_kernel(root, deb)
    boot = os.path.join(root, "boot")
    pvh = os.path.join(boot, "vmlinux-pvh-" + kernel.release)
    if not os.path.exists(pvh) and not os.path.exists(os.path.join(boot, ".no-pvh")):
        if _write_pvh_vmlinux(os.path.join(boot, "vmlinuz-" + kernel.release), pvh + ".part"):
            os.rename(pvh + ".part", pvh)
        else:
            open(os.path.join(boot, ".no-pvh"), "w").close()
        kernel = _load_kernel(root, deb)
    return kernel


# ---------------------------------------------------------------------------
# kernel modules

def _module_name(path: str) -> str:
    base = os.path.basename(path)
    return base.split(".ko")[0].replace("-", "_")


def _module_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        tool = shutil.which("zstd") or shutil.which("unzstd")
        if not tool:
            if not _apt_install(["zstd"]):
                raise VMError("%s is zstd-compressed and zstd is not installed" % path)
            tool = shutil.which("zstd")
        return subprocess.run([tool, "-dc", path], stdout=subprocess.PIPE, check=True).stdout
    return data


def _module_table(kernel: Kernel) -> tuple[dict, set]:
    """name -> (path, [dep names]); plus the set of built-in module names."""
    table = {}
    depfile = os.path.join(kernel.moddir, "modules.dep")
    if os.path.exists(depfile):
        with open(depfile) as fh:
            for line in fh:
                mod, _, deps = line.partition(":")
                if not mod.strip():
                    continue
                table[_module_name(mod)] = (os.path.join(kernel.moddir, mod.strip()),
                                            [_module_name(d) for d in deps.split()])
    else:   # no depmod on this host: read depends= from each module's .modinfo
        for dirpath, _, names in os.walk(os.path.join(kernel.moddir, "kernel")):
            for n in names:
                if ".ko" in n:
                    table[_module_name(n)] = (os.path.join(dirpath, n), None)
    builtin = set()
    try:
        with open(os.path.join(kernel.moddir, "modules.builtin")) as fh:
            builtin = {_module_name(line.strip()) for line in fh if line.strip()}
    except OSError:
        pass
    return table, builtin


def _modinfo_depends(data: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def _modules_in_load_order(kernel: Kernel, wanted: Iterable[str],
                           overrides: dict[str, str]) -> list[tuple[str, str]]:
    """[(name, path)] with every dependency before its users."""
    table, builtin = _module_table(kernel)
    order: list[tuple[str, str]] = []
    done: set[str] = set()
    active: set[str] = set()

    def visit(name: str, needed_by: str) -> None:
        name = name.replace("-", "_")
        if name in done or name in builtin:
            return
        if name not in table:
            raise VMError("kernel %s has no module %s (needed by %s)"
                          % (kernel.release, name, needed_by))
        if name in active:
            raise VMError("module dependency loop at %s" % name)
        active.add(name)
        path, deps = table[name]
        path = overrides.get(name, path)
        if deps is None or name in overrides:
            deps = _modinfo_depends(_module_bytes(path))
        for dep in deps:
            visit(dep, name)
        active.discard(name)
        done.add(name)
        order.append((name, path))

    for name in wanted:
        visit(name, "the guest")
    return order


# ---------------------------------------------------------------------------
# cpio (newc) archives

class _Cpio:
    def __init__(self):
        self._buf = io.BytesIO()
        self._ino = 1000
        self._seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0)) -> None:
        name = name.strip("/")
        if name in self._seen:
            return
        self._seen.add(name)
        self._ino += 1
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._buf.write(hdr + raw)
        self._buf.write(b"\0" * (-(len(hdr) + len(raw)) % 4))
        self._buf.write(data)
        self._buf.write(b"\0" * (-len(data) % 4))

    def mkdirs(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        parent = os.path.dirname(path.strip("/"))
        if parent:
            self.mkdirs(parent)
        self._entry(path, stat.S_IFREG | perm, data)

    def add_link(self, path: str, target: str) -> None:
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def add_chr(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(path, stat.S_IFCHR | perm, rdev=(major, minor))

    def getvalue(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self._buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


# ---------------------------------------------------------------------------
# NFS over UDP: rebuild nfs.ko / nfsv3.ko without the UDP refusal

def _udp_dir(cache: str, kernel: Kernel) -> str:
    return os.path.join(cache, "udp-modules", os.path.basename(kernel.root))


def _udp_overrides(cache: str, kernel: Kernel) -> Optional[dict[str, str]]:
    d = _udp_dir(cache, kernel)
    if os.path.exists(os.path.join(d, ".ready")):
        return {"nfs": os.path.join(d, "nfs.ko"), "nfsv3": os.path.join(d, "nfsv3.ko")}
    return None


class _SourceUnavailable(VMError):
    pass


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: str) -> int:
    """Write one regular file or directory of a streamed tar below dest; 1 for a file.

    By hand rather than TarFile.extract(filter=...): that keyword needs Python
    3.11.4, and Debian 12 ships 3.11.2.  Only plain relative names are taken."""
    parts = m.name.split("/")
    if m.name.startswith("/") or ".." in parts:
        raise VMError("unsafe name in kernel source archive: %r" % m.name)
    path = os.path.join(dest, *[p for p in parts if p not in ("", ".")])
    if m.isdir():
        os.makedirs(path, exist_ok=True)
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    src = tar.extractfile(m)
    with open(path, "wb") as out:
        shutil.copyfileobj(src, out)
    return 1


def _extract_nfs_source(src_deb: str, series: str, dest: str) -> str:
    """Stream fs/nfs (and fs/internal.h) out of the linux-source .deb."""
    inner_name = "usr/src/linux-source-%s.tar.xz" % series
    top = "linux-source-%s/" % series
    wanted = (top + "fs/nfs/", top + "fs/internal.h")
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", src_deb], stdout=subprocess.PIPE)
    found = 0
    try:
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as outer:
            for member in outer:
                if member.name.lstrip("./") != inner_name:
                    continue
                with lzma.open(outer.extractfile(member)) as xz, \
                        tarfile.open(fileobj=xz, mode="r|") as inner:
                    for m in inner:
                        if m.name.startswith(wanted) and (m.isfile() or m.isdir()):
                            found += _extract_member(inner, m, dest)
                break
    finally:
        dpkg.stdout.close()
        dpkg.wait()
    if not found:
        raise VMError("%s holds no %s with fs/nfs" % (src_deb, inner_name))
    return os.path.join(dest, top, "fs", "nfs")


def _allow_udp(nfsdir: str) -> int:
    """Compile the CONFIG_NFS_DISABLE_UDP_SUPPORT checks out of fs/nfs/*.c."""
    edits = 0
    for path in glob.glob(os.path.join(nfsdir, "*.c")):
        with open(path) as fh:
            text = fh.read()
        if _UDP_KCONFIG not in text:
            continue
        new = re.sub(r"^#\s*ifdef\s+%s\b" % _UDP_KCONFIG,
                     "#if 0 /* fastnfs tests: NFS over UDP allowed */", text, flags=re.M)
        new = re.sub(r"^#\s*ifndef\s+%s\b" % _UDP_KCONFIG,
                     "#if 1 /* fastnfs tests: NFS over UDP allowed */", new, flags=re.M)
        new = re.sub(r"IS_ENABLED\(\s*%s\s*\)" % _UDP_KCONFIG, "0", new)
        new = re.sub(r"defined\s*\(?\s*%s\s*\)?" % _UDP_KCONFIG, "0", new)
        if new != text:
            edits += 1
            with open(path, "w") as fh:
                fh.write(new)
    return edits


def _build_udp_modules(cache: str, kernel: Kernel) -> dict[str, str]:
    """Locked by the caller.  Raises _SourceUnavailable if apt no longer has
    headers or source for this exact kernel version."""
    t0 = time.monotonic()
    ver = kernel.pkg_version
    series = ".".join(ver.split(".")[:2])
    headers = "/usr/src/linux-headers-%s" % kernel.release
    if not os.path.exists(os.path.join(headers, "Makefile")):
        if not _apt_install(["linux-headers-%s=%s" % (kernel.release, ver)]):
            raise _SourceUnavailable("cannot apt-get install linux-headers-%s=%s"
                                     % (kernel.release, ver))
    tools = [t for t in ("make", "gcc-12") if not shutil.which(t)]
    if tools and not _apt_install(tools):
        raise VMError("building nfs.ko needs %s" % " ".join(tools))
    debdir = os.path.join(cache, "debs")
    srcpkg = "linux-source-%s" % series
    srcdebs = glob.glob(os.path.join(debdir, "%s_%s_*.deb" % (srcpkg, ver)))
    if srcdebs:
        src_deb = srcdebs[0]
    else:
        _log("downloading %s=%s (about 150 MB)" % (srcpkg, ver))
        try:
            src_deb = _apt_download("%s=%s" % (srcpkg, ver), debdir)
        except VMError as e:
            raise _SourceUnavailable(str(e))
    work = tempfile.mkdtemp(prefix="udp-build-", dir=cache)
    try:
        _log("extracting fs/nfs from %s" % os.path.basename(src_deb))
        nfsdir = _extract_nfs_source(src_deb, series, work)
        if not _allow_udp(nfsdir):
            raise VMError("no %s check found in %s" % (_UDP_KCONFIG, nfsdir))
        _log("building nfs.ko nfsv3.ko for %s" % kernel.release)
        cmd = ["make", "-C", headers, "M=" + nfsdir, "-j%d" % (os.cpu_count() or 1),
               # only nfs.ko and nfsv3.ko; the rest stays stock
               "CONFIG_NFS_V2=", "CONFIG_NFS_V4=", "CONFIG_NFS_V4_1=", "CONFIG_NFS_V4_2=",
               "CONFIG_PNFS_FILE_LAYOUT=", "CONFIG_PNFS_BLOCK=",
               "CONFIG_PNFS_FLEXFILE_LAYOUT=", "modules"]
        if shutil.which("gcc-12"):
            cmd.insert(3, "CC=gcc-12")
        r = _run_quiet(cmd)
        if r.returncode != 0:
            raise VMError("nfs module build failed:\n%s" % r.stdout[-4000:])
        dest = _udp_dir(cache, kernel)
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        for m in ("nfs.ko", "nfsv3.ko"):
            out = os.path.join(dest, m)
            shutil.copyfile(os.path.join(nfsdir, m), out)
            if shutil.which("strip"):
                subprocess.run(["strip", "--strip-debug", out])
        with open(os.path.join(dest, ".ready"), "w") as fh:
            fh.write("built from %s with %s compiled out\n"
                     % (os.path.basename(src_deb), _UDP_KCONFIG))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:       # the built modules are all we need from it
        os.unlink(src_deb)
    except OSError:
        pass
    _log("UDP-capable nfs modules built in %.1fs" % (time.monotonic() - t0))
    return _udp_overrides(cache, kernel)


# ---------------------------------------------------------------------------
# prepare(): kernel + base initramfs, cached

@dataclasses.dataclass
class Kit:
    """What a guest boots: kernel image and base initramfs."""
    kernel: Kernel
    base_initrd: str
    modules: list
    udp: bool


_kits: dict = {}


def _base_initramfs(cache: str, kernel: Kernel, overrides: dict[str, str], variant: str,
                    extra_modules: tuple = ()):
    busybox = _busybox()
    if not busybox:
        raise VMError("no static busybox (apt-get install busybox-static)")
    mods = _modules_in_load_order(kernel, GUEST_MODULES + tuple(extra_modules), overrides)
    bst = os.stat(busybox)
    key = hashlib.sha256(repr((_BASE_FORMAT, kernel.root, busybox, bst.st_size, bst.st_mtime,
                               mods, [os.path.getmtime(p) for _, p in mods])).encode())
    outdir = os.path.join(cache, "initramfs")
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, "base-%s-%s-%s.cpio.gz" % (kernel.release, variant,
                                                         key.hexdigest()[:12]))
    if os.path.exists(out):
        return out, mods
    t0 = time.monotonic()
    cp = _Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp",
              "mnt", "newroot", "etc", "root", "lib/modules", "fnfs/files"):
        cp.mkdirs(d)
    cp.add_chr("dev/console", 5, 1)
    cp.add_chr("dev/null", 1, 3, 0o666)
    with open(busybox, "rb") as fh:
        cp.add_file("bin/busybox", fh.read(), 0o755)
    cp.add_link("bin/sh", "busybox")
    for i, (name, path) in enumerate(mods):
        cp.add_file("lib/modules/%02d-%s.ko" % (i, name), _module_bytes(path))
    cp.add_file("etc/fastnfs-base", ("kernel %s\nmodules %s\n" % (
        kernel.release, " ".join(n for n, _ in mods))).encode())
    _atomic_write(out, gzip.compress(cp.getvalue(), 6))
    for old in glob.glob(os.path.join(outdir, "base-*-%s-*.cpio.gz" % variant)):
        if old != out:
            os.unlink(old)
    _log("built %s (%d modules) in %.1fs" % (os.path.basename(out), len(mods),
                                               time.monotonic() - t0))
    return out, mods


def prepare(udp: bool = False, *, cache: Optional[str] = None, virtfs: bool = False) -> Kit:
    """Download/extract the kernel and build the base initramfs (cached).

    udp=True also builds nfs.ko/nfsv3.ko with NFS over UDP allowed (the
    Debian kernel has CONFIG_NFS_DISABLE_UDP_SUPPORT=y).  virtfs=True adds
    the 9p modules (GUEST_MODULES_9P) for run(virtfs=PATH).
    """
    cache = cache or cache_dir()
    memo = (cache, udp, virtfs)
    kit = _kits.get(memo)
    if kit and os.path.exists(kit.base_initrd) and os.path.exists(kit.kernel.image):
        return kit
    ok, why = available()
    if not ok:
        raise VMError(why)
    with _CacheLock(cache):
        kernel = _get_kernel(cache)
        overrides = {}
        if udp and kernel.udp_refused:
            overrides = _udp_overrides(cache, kernel)
            if not overrides:
                try:
                    overrides = _build_udp_modules(cache, kernel)
                except _SourceUnavailable as e:
                    # The archive moved on to a newer kernel: switch to it.
                    _log("%s; switching to the current kernel package" % e)
                    kernel = _get_kernel(cache, refresh=True)
                    overrides = (_udp_overrides(cache, kernel)
                                 or _build_udp_modules(cache, kernel))
        base, mods = _base_initramfs(cache, kernel, overrides or {},
                                     ("udp" if overrides else "stock") + ("-9p" if virtfs else ""),
                                     GUEST_MODULES_9P if virtfs else ())
    kit = Kit(kernel=kernel, base_initrd=base, modules=[n for n, _ in mods],
              udp=bool(overrides) or not kernel.udp_refused)
    _kits[memo] = kit
    return kit


# ---------------------------------------------------------------------------
# the guest's /init

_INIT = r"""#!/bin/sh
# /init of a fastnfs test guest, generated by tests/vm/guest.py
/bin/busybox --install -s
export PATH=/fnfs/files:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
. /fnfs/env

uptime_s() { read -r u _ </proc/uptime; echo "$u"; }
marker() { echo "$FNFS_TAG! $*"; }
tagged() { awk -v p="$1" '{ print p $0; fflush() }'; }
finish() {
    marker "EXIT $1"
    sync
    poweroff -f
    sleep 60
}
give_up() {     # give_up RC WHY: dmesg tail goes to the dmesg stream
    dmesg | tail -n 40 | tagged "$FNFS_TAG~ "
    marker "FAIL $2"
    finish "$1"
}

hostname "fnfs-vm$FNFS_VM_ID"
marker "INIT t=$(uptime_s)"
for ko in /lib/modules/*.ko; do
    insmod "$ko" || marker "WARN insmod ${ko##*/} failed"
done
n=0
until [ -e /sys/class/net/eth0 ]; do
    n=$((n + 1))
    [ $n -gt 100 ] && give_up 126 "no eth0 (virtio_net did not come up)"
    sleep 0.05
done
ip link set lo up
# The guest reaches exactly one address: the server, i.e. the host's
# loopback behind slirp.  No subnet route, no default route, no DNS.
if [ "$FNFS_IPV6" = 1 ]; then
    # IPv6 only (slirp has no IPv4 side): a static address, no SLAAC, and
    # router advertisements ignored, so no prefix or default route either.
    # DAD is off: nobody else is on this link, and it would cost 1-2 s.
    c=/proc/sys/net/ipv6/conf/eth0
    for k in accept_ra autoconf accept_dad; do echo 0 > $c/$k; done
    ip link set eth0 up
    ip -6 addr add "$FNFS_GUEST6/128" dev eth0 || give_up 126 "cannot add $FNFS_GUEST6"
    ip -6 route add "$FNFS_SERVER6/128" dev eth0 || give_up 126 "cannot route to $FNFS_SERVER6"
    n=0
    while ip -6 addr show dev eth0 | grep -q tentative; do
        n=$((n + 1))
        [ $n -gt 200 ] && give_up 126 "IPv6 address still tentative after 10 s"
        sleep 0.05
    done
else
    ip link set eth0 up
    ip addr add "$FNFS_GUEST/32" dev eth0
    ip route add "$FNFS_SERVER/32" dev eth0 || give_up 126 "cannot route to $FNFS_SERVER"
fi
marker "NET t=$(uptime_s)"

dmesg_base=$(dmesg | wc -l)
mount -t "$FNFS_FSTYPE" -o "$FNFS_OPTS" "$FNFS_SOURCE" "$FNFS_TARGET" 2>/tmp/mount.err
mrc=$?
if [ $mrc -ne 0 ]; then
    tagged "$FNFS_TAG| " </tmp/mount.err
    give_up 125 "mount exited $mrc"
fi
marker "MOUNTED t=$(uptime_s)"

if [ "$FNFS_MODE" = nfsroot ]; then
    cmd=$(cat /fnfs/job.sh)
    t=$(uptime_s)
    for d in dev proc sys; do
        if [ -d "/newroot/$d" ] && mount --move "/$d" "/newroot/$d" 2>/dev/null; then
            :
        else
            umount -l "/$d" 2>/dev/null
        fi
    done
    marker "SWITCH t=$t"
    exec switch_root /newroot /bin/sh -c "$cmd"
    marker "FAIL switch_root failed"
    finish 126
fi

mkfifo /tmp/.out
tagged "$FNFS_TAG| " </tmp/.out &
relay=$!
marker "BEGIN t=$(uptime_s)"
(cd /mnt && FNFS_MNT=/mnt FNFS_VM_ID=$FNFS_VM_ID exec sh /fnfs/job.sh) </dev/null >/tmp/.out 2>&1
rc=$?
t_end=$(uptime_s)
# Let the relay drain; do not hang on background jobs still holding stdout.
n=0
while kill -0 $relay 2>/dev/null && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); done
kill $relay 2>/dev/null
marker "END rc=$rc t=$t_end"
cd /
sync
if umount /mnt 2>/tmp/umount.err; then
    marker "UMOUNT ok t=$(uptime_s)"
else
    # Typically background jobs of the script still using /mnt.
    # (no fuser in Debian's busybox: kill every user process but PID 1)
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" != 1 ] && [ -e "$p/exe" ] && kill -9 "${p#/proc/}" 2>/dev/null
    done
    sleep 0.3
    if umount /mnt 2>/dev/null; then
        marker "UMOUNT busy (ok after killing leftover processes)"
    else
        marker "UMOUNT failed $(head -n 1 /tmp/umount.err)"
        umount -f -l /mnt 2>/dev/null
    fi
fi
dmesg | tail -n +$((dmesg_base + 1)) | tagged "$FNFS_TAG~ "
finish $rc
"""


# ---------------------------------------------------------------------------
# running guests

@dataclasses.dataclass
class Result:
    """What one guest did.

    rc            the script's exit status, or RC_TIMEOUT / RC_MOUNT_FAILED /
                  RC_BOOT_FAILED when the harness could not get that far
                  (then `failure` says why; it is None when the script ran)
    output        the script's stdout+stderr (in nfsroot mode: the console
                  after switch_root, kernel lines left out)
    console       the whole serial console
    dmesg         kernel messages logged while the export was mounted (all
                  of dmesg's tail when the mount failed)
    mount_uptime  guest uptime (s) when the mount completed, None if never
    """
    rc: int
    output: str = ""
    console: str = ""
    dmesg: str = ""
    failure: Optional[str] = None
    mount_uptime: Optional[float] = None
    script_seconds: Optional[float] = None
    wall_seconds: float = 0.0
    umount_ok: Optional[bool] = None     # True: plain umount worked; None: not tried
    vm_id: int = 0
    mode: str = "mount"
    log_path: str = ""
    mount_options: str = ""
    qemu_cmd: list = dataclasses.field(default_factory=list)
    #: guest marker -> (seconds since qemu start on the host, guest uptime or None)
    timeline: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.failure is None

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    def console_tail(self, n: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-n:])

    def describe(self) -> str:
        """Multi-line summary for assertion messages."""
        parts = ["vm%d %s rc=%d%s  mount at %s s, wall %.1f s, log %s" % (
            self.vm_id, self.mode, self.rc,
            " (%s)" % self.failure if self.failure else "",
            self.mount_uptime, self.wall_seconds, self.log_path),
            "mount -o " + self.mount_options]
        if self.output:
            parts += ["--- output ---", self.output.rstrip("\n")]
        if self.dmesg:
            parts += ["--- dmesg ---", self.dmesg.rstrip("\n")]
        if self.failure:
            parts += ["--- console tail ---", self.console_tail()]
        return "\n".join(parts)

    def check(self) -> "Result":
        """Raise AssertionError (with describe()) unless rc == 0."""
        if not self.ok:
            raise AssertionError(self.describe())
        return self


_live: set = set()
_live_lock = threading.Lock()


def _kill_live_guests() -> None:
    with _live_lock:
        procs = list(_live)
    for p in procs:
        try:
            p.kill()
        except OSError:
            pass


atexit.register(_kill_live_guests)


def _pdeathsig_prefix() -> list[str]:
    """Make qemu die with the thread that started it, even on SIGKILL."""
    if shutil.which("setpriv"):
        r = _run_quiet(["setpriv", "--help"])
        if "--pdeathsig" in r.stdout:
            return ["setpriv", "--pdeathsig", "KILL", "--"]
    return []


def _set_pdeathsig() -> None:          # preexec_fn fallback
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


_prefix_memo: Optional[list] = None


def _accel() -> str:
    want = os.environ.get("FASTNFS_VM_ACCEL", "auto")
    if want in ("kvm", "tcg"):
        return want
    # kvm_pvm (paravirtual KVM in some sandboxes) cannot run a stock kernel.
    if os.path.exists("/sys/module/kvm_pvm"):
        return "tcg"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return "kvm"
    except OSError:
        return "tcg"


def _mount_options(proto: str, nfs_port: int, mount_port: int, extra: str,
                   ipv6: bool = False) -> str:
    if ipv6:
        # tcp6/udp6 make the kernel insist on an IPv6 address for both the
        # NFS and the MOUNT server: no silent fallback to IPv4
        opts = ["vers=3", "proto=%s6" % proto, "mountproto=%s6" % proto,
                "port=%d" % nfs_port, "mountport=%d" % mount_port, "nolock",
                "addr=%s" % SERVER_ADDR6, "mountaddr=%s" % SERVER_ADDR6]
        if proto == "udp":
            # slirp drops IPv6 fragments (its ip6_input knows no fragment
            # header), so every UDP datagram must fit the 1500-byte MTU
            opts.append("rsize=1024,wsize=1024")
    else:
        opts = ["vers=3", "proto=%s" % proto, "port=%d" % nfs_port,
                "mountport=%d" % mount_port, "nolock", "addr=%s" % SERVER_ADDR]
    extra = extra.strip().strip(",")
    if extra:
        opts.append(extra)
    return ",".join(opts)


def _guest_overlay(env: dict, script: str, files: Optional[dict]) -> bytes:
    cp = _Cpio()
    cp.add_file("init", _INIT.encode(), 0o755)
    cp.add_file("fnfs/env", "".join("%s=%s\n" % (k, shlex.quote(str(v)))
                                    for k, v in env.items()).encode())
    cp.add_file("fnfs/job.sh", script.encode(), 0o755)
    for src, dst in (files or {}).items():
        src = os.fspath(src)
        dst = os.fspath(dst)
        if not dst.startswith("/"):
            dst = "/fnfs/files/" + dst
        if os.path.isdir(src):
            for dirpath, dirnames, names in os.walk(src):
                rel = os.path.relpath(dirpath, src)
                gdir = os.path.normpath(os.path.join(dst, rel))
                cp.mkdirs(gdir)
                for n in names:
                    p = os.path.join(dirpath, n)
                    if os.path.islink(p):
                        cp.add_link(os.path.join(gdir, n), os.readlink(p))
                    elif os.path.isfile(p):
                        with open(p, "rb") as fh:
                            cp.add_file(os.path.join(gdir, n), fh.read(),
                                        os.stat(p).st_mode & 0o7777)
        else:
            with open(src, "rb") as fh:
                cp.add_file(dst, fh.read(), os.stat(src).st_mode & 0o7777)
    return cp.getvalue()


def _prune_logs(logdir: str) -> None:
    try:
        logs = [os.path.join(logdir, n) for n in os.listdir(logdir) if n.endswith(".log")]
        logs.sort(key=lambda p: os.stat(p).st_mtime)
    except OSError:
        return
    for p in logs[:-KEEP_LOGS]:
        try:
            os.unlink(p)
        except OSError:
            pass


_KILL_INIT = re.compile(r"Attempted to kill init! exitcode=0x([0-9a-fA-F]+)")
_KERNEL_LINE = re.compile(r"^\s*\[\s*\d+\.\d+\]")


class _Guest:
    """One qemu process and the parsing of its console."""

    def __init__(self, kit: Kit, cache: str, *, script: str, mode: str, vm_id: int,
                 opts: str, export: str, mem: int, cpus: int, kernel_args: str,
                 files: Optional[dict], echo: Optional[Callable[[str], None]],
                 until=None, ipv6: bool = False, virtfs: Optional[str] = None):
        self.tag = secrets.token_hex(5)
        #: a console pattern (str: substring, or compiled regex) that ends the run
        self.until = until
        self.until_seen: Optional[float] = None
        self.vm_id = vm_id
        self.mode = mode
        self.opts = opts
        self.echo = echo
        self.lines: list[str] = []
        self.marks: dict[str, tuple[float, str]] = {}
        self.exit_status: Optional[int] = None
        self.fail: Optional[str] = None
        self.kill_init: Optional[int] = None
        self.output: list[str] = []
        self.dmesg: list[str] = []
        self.exited = threading.Event()
        tmpdir = os.path.join(cache, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        self._clean_stale(tmpdir)
        env = {"FNFS_TAG": self.tag, "FNFS_VM_ID": vm_id, "FNFS_MODE": mode,
               "FNFS_OPTS": opts, "FNFS_EXPORT": export,
               "FNFS_TARGET": "/newroot" if mode == "nfsroot" else "/mnt",
               "FNFS_GUEST": GUEST_ADDR, "FNFS_SERVER": SERVER_ADDR,
               "FNFS_IPV6": int(ipv6), "FNFS_GUEST6": GUEST_ADDR6,
               "FNFS_SERVER6": SERVER_ADDR6,
               "FNFS_FSTYPE": "9p" if virtfs else "nfs",
               "FNFS_SOURCE": VIRTFS_TAG if virtfs else "%s:%s" % (
                   "[%s]" % SERVER_ADDR6 if ipv6 else SERVER_ADDR, export)}
        fd, self.initrd = tempfile.mkstemp(prefix="initrd-vm%d-" % vm_id, suffix=".cpio",
                                           dir=tmpdir)
        with os.fdopen(fd, "wb") as out:
            # Two archives back to back: the kernel unpacks both.
            out.write(_guest_overlay(env, script, files))
            with open(kit.base_initrd, "rb") as base:
                shutil.copyfileobj(base, out)
        accel = _accel()
        # mitigations/tsc/watchdog: a little less work for the emulated CPU
        append = ("console=ttyS0 panic=-1 quiet %srdinit=/init "
                  "mitigations=off tsc=reliable no_timer_check nowatchdog "
                  "fnfs.vm=%d %s" % ("" if ipv6 else "ipv6.disable=1 ", vm_id,
                                     kernel_args)).strip()
        if ipv6:
            # slirp forwards the guest's connections to SERVER_ADDR6 to the
            # host's ::1; the guest gets no IPv4 at all
            netdev = "user,id=n0,ipv4=off,ipv6=on,ipv6-net=%s,ipv6-host=%s" % (
                IPV6_NET, SERVER_ADDR6)
        else:
            netdev = "user,id=n0,ipv6=off,net=10.0.2.0/24,host=%s" % SERVER_ADDR
        global _prefix_memo
        if _prefix_memo is None:
            _prefix_memo = _pdeathsig_prefix()
        self.cmd = _prefix_memo + [
            _qemu_binary(), "-machine", "pc,accel=%s" % accel,
            "-cpu", os.environ.get("FASTNFS_VM_CPU") or ("host" if accel == "kvm" else "max"),
            "-m", str(mem), "-smp", str(cpus),
            "-nographic", "-nodefaults", "-no-user-config", "-monitor", "none",
            "-serial", "stdio", "-no-reboot",
            "-kernel", kit.kernel.image, "-initrd", self.initrd, "-append", append,
            "-netdev", netdev,
            "-device", "virtio-net-pci,netdev=n0,romfile="]
        if virtfs:
            # qemu's own 9p server; with mapped-file it writes .virtfs_metadata
            # itself (qemu runs as the test's user: root for a faithful tree)
            self.cmd += ["-fsdev", "local,id=fs0,path=%s,security_model=mapped-file"
                         % os.path.abspath(virtfs).replace(",", ",,"),
                         "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=%s" % VIRTFS_TAG]
        logdir = os.path.join(cache, "logs")
        os.makedirs(logdir, exist_ok=True)
        self.log_path = os.path.join(logdir, "%s-%s-p%d-vm%d-%s.log" % (
            time.strftime("%Y%m%d-%H%M%S"), mode, os.getpid(), vm_id, self.tag))

    @staticmethod
    def _clean_stale(tmpdir: str) -> None:
        now = time.time()
        for n in os.listdir(tmpdir):
            p = os.path.join(tmpdir, n)
            try:
                if now - os.stat(p).st_mtime > 6 * 3600:
                    os.unlink(p)
            except OSError:
                pass

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.logf = open(self.log_path, "w", errors="replace")
        self.logf.write("# %s\n" % " ".join(shlex.quote(c) for c in self.cmd))
        self.logf.flush()
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=None if _prefix_memo else _set_pdeathsig)
        with _live_lock:
            _live.add(self.proc)
        self.reader = threading.Thread(target=self._read, name="vm%d-console" % self.vm_id,
                                       daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                self._line(raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", ""))
        finally:
            self.exited.set()

    def _line(self, line: str) -> None:
        self.lines.append(line)
        self.logf.write(line + "\n")
        if self.echo:
            self.echo(line)
        if self.until is not None and self.until_seen is None and (
                self.until in line if isinstance(self.until, str)
                else self.until.search(line)):
            self.until_seen = time.monotonic() - self.t0
            self.marks["UNTIL"] = (self.until_seen, "")
        tag = self.tag
        i = line.find(tag)
        if i >= 0 and len(line) > i + len(tag):
            kind, body = line[i + len(tag)], line[i + len(tag) + 2:]
            if kind == "|":
                self.output.append(body)
                return
            if kind == "~":
                self.dmesg.append(body)
                return
            if kind == "!":
                word, _, rest = body.partition(" ")
                self.marks[word] = (time.monotonic() - self.t0, rest)
                if word == "EXIT":
                    self.exit_status = int(rest)
                elif word == "FAIL":
                    self.fail = rest
                return
        if "SWITCH" in self.marks and self.kill_init is None:
            m = _KILL_INIT.search(line)
            if m:
                self.kill_init = int(m.group(1), 16)
            elif not _KERNEL_LINE.match(line):
                self.output.append(line)

    def _guest_time(self, word: str) -> Optional[float]:
        m = re.search(r"\bt=([0-9.]+)", self.marks.get(word, (0, ""))[1])
        return float(m.group(1)) if m else None

    def wait(self, timeout: float) -> Result:
        timed_out = False
        deadline = self.t0 + timeout
        try:
            while not self.exited.wait(0.2):
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                if self.until_seen is not None:
                    break           # the awaited console line: stop the guest now
                if self.exit_status is not None or self.kill_init is not None:
                    # The guest is done; give poweroff a few seconds.
                    if not self.exited.wait(10):
                        break
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.reader.join(5)
            with _live_lock:
                _live.discard(self.proc)
            self.logf.close()
            try:
                os.unlink(self.initrd)
            except OSError:
                pass
        wall = time.monotonic() - self.t0
        failure = None
        if self.until_seen is not None:
            rc = 0
        elif self.exit_status is not None:
            rc = self.exit_status
            failure = self.fail
        elif self.kill_init is not None:
            code = self.kill_init
            rc = 128 + (code & 0x7f) if code & 0x7f else (code >> 8) & 0xff
        elif timed_out:
            rc = RC_TIMEOUT
            last = [w for w in ("INIT", "NET", "MOUNTED", "BEGIN", "END", "SWITCH")
                    if w in self.marks]
            failure = "timeout after %ss (last step: %s)" % (timeout,
                                                              last[-1] if last else "none")
            if self.until is not None:
                failure += " waiting for %r" % getattr(self.until, "pattern", self.until)
        else:
            rc = RC_BOOT_FAILED
            failure = "qemu exited with %s before the guest reported a status" \
                      % self.proc.returncode
            if self.until is not None:
                failure += " (or printed %r)" % getattr(self.until, "pattern", self.until)
        if rc == RC_MOUNT_FAILED and failure is None and "MOUNTED" not in self.marks:
            failure = "mount failed"
        begin, end = self._guest_time("BEGIN"), self._guest_time("END")
        umount = self.marks.get("UMOUNT")
        res = Result(
            rc=rc, output="".join(l + "\n" for l in self.output),
            console="\n".join(self.lines) + "\n", dmesg="".join(l + "\n" for l in self.dmesg),
            failure=failure, mount_uptime=self._guest_time("MOUNTED"),
            script_seconds=(end - begin) if begin is not None and end is not None else None,
            wall_seconds=wall, umount_ok=umount[1].startswith("ok") if umount else None,
            vm_id=self.vm_id, mode=self.mode, log_path=self.log_path,
            mount_options=self.opts, qemu_cmd=self.cmd,
            timeline={w: (round(h, 3), self._guest_time(w)) for w, (h, _) in self.marks.items()})
        with open(self.log_path, "a") as fh:
            fh.write("# rc=%d failure=%s wall=%.2fs\n" % (rc, failure, wall))
        _prune_logs(os.path.dirname(self.log_path))
        return res


def _start_guest(script: str, *, nfs_port: Optional[int], mount_port: Optional[int],
                 export: str, proto: str, mount_opts: str, mem: int, files: Optional[dict],
                 mode: str, vm_id: int, cpus: int, kernel_args: str, echo,
                 cache: Optional[str], kit: Optional[Kit] = None, until=None,
                 ipv6: bool = False, virtfs: Optional[str] = None) -> _Guest:
    if mode not in ("mount", "nfsroot"):
        raise ValueError("mode must be 'mount' or 'nfsroot'")
    if proto not in ("tcp", "udp"):
        raise ValueError("proto must be 'tcp' or 'udp'")
    if virtfs is not None:
        if mode != "mount":
            raise ValueError("virtfs= works with mode='mount' only")
        if not os.path.isdir(virtfs):
            raise ValueError("virtfs=%r is not a directory" % (virtfs,))
    elif nfs_port is None:
        raise TypeError("nfs_port is required (or virtfs=PATH)")
    cache = cache or cache_dir()
    kit = kit or prepare(udp=(proto == "udp"), cache=cache, virtfs=virtfs is not None)
    if virtfs is not None:
        opts = ",".join(o for o in (VIRTFS_OPTS, mount_opts.strip().strip(",")) if o)
    else:
        opts = _mount_options(proto, nfs_port, mount_port or nfs_port, mount_opts, ipv6)
    g = _Guest(kit, cache, script=script, mode=mode, vm_id=vm_id, opts=opts, export=export,
               mem=mem, cpus=cpus, kernel_args=kernel_args, files=files, echo=echo,
               until=until, ipv6=ipv6, virtfs=virtfs)
    g.start()
    return g


def run(script: str = "true", *, nfs_port: Optional[int] = None,
        mount_port: Optional[int] = None,
        export: str = "/", proto: str = "tcp", mount_opts: str = "", timeout: float = 300,
        mem: int = 256, files: Optional[dict] = None, mode: str = "mount", vm_id: int = 0,
        cpus: int = 1, kernel_args: str = "", echo: Optional[Callable[[str], None]] = None,
        cache: Optional[str] = None, until=None, ipv6: bool = False,
        virtfs: Optional[str] = None) -> Result:
    """Boot a guest, mount the export and run `script`; returns a Result.

    mode="mount": the export is mounted on /mnt and `script` runs there under
    busybox sh (as root, stdin /dev/null, env FNFS_MNT and FNFS_VM_ID).
    mode="nfsroot": the export becomes the root filesystem (switch_root) and
    `script` runs as PID 1 via the export's own /bin/sh -c.
    files maps host paths (files or directories) to guest paths; relative
    guest paths land in /fnfs/files, which is on PATH.
    echo, if given, is called with every console line as it arrives.
    until, if given (a substring, or a compiled regex searched in each
    console line), ends the run as soon as a console line matches: qemu is
    killed and rc is 0.  Use it for guests that never exit by themselves,
    e.g. nfsroot with script "exec /sbin/init" (a real init system).  If the
    guest ends first, the usual rc/failure apply.
    ipv6=True: the guest has IPv6 only (fec0::15, slirp with ipv4=off) and
    mounts [fec0::2]:export with proto=tcp6 (udp6), mountproto=tcp6 (udp6);
    slirp forwards those connections to the host's ::1, so the server must
    listen on IPv6 (fastnfs's dual-stack default does).
    virtfs=PATH: instead of NFS, qemu shares the host directory PATH over 9p
    (``-fsdev local,security_model=mapped-file`` + ``virtio-9p-pci``,
    mount_tag VIRTFS_TAG) and the guest mounts it on /mnt with
    ``-t 9p -o VIRTFS_OPTS`` (then mount_opts); nfs_port is not needed.
    """
    g = _start_guest(script, nfs_port=nfs_port, mount_port=mount_port, export=export,
                     proto=proto, mount_opts=mount_opts, mem=mem, files=files, mode=mode,
                     vm_id=vm_id, cpus=cpus, kernel_args=kernel_args, echo=echo, cache=cache,
                     until=until, ipv6=ipv6, virtfs=virtfs)
    return g.wait(timeout)


def run_many(n: int, script: str = "true", *, max_parallel: Optional[int] = None,
             **kwargs) -> list[Result]:
    """Run n guests at once (VM ids 0..n-1) with the same arguments as run().

    max_parallel limits how many qemu processes run at the same time (each
    TCG guest keeps one host core busy while it boots).
    """
    timeout = kwargs.pop("timeout", 300)
    cache = kwargs.pop("cache", None) or cache_dir()
    kit = prepare(udp=(kwargs.get("proto", "tcp") == "udp"), cache=cache,
                  virtfs=kwargs.get("virtfs") is not None)
    results: list[Optional[Result]] = [None] * n
    slots = threading.Semaphore(max_parallel or n)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        with slots:
            try:
                g = _start_guest(script, vm_id=i, cache=cache, kit=kit,
                                 **_run_defaults(kwargs))
                results[i] = g.wait(timeout)
            except BaseException as e:      # reported below
                errors.append(e)

    threads = [threading.Thread(target=one, args=(i,), name="vm%d" % i) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:
        _kill_live_guests()
        raise
    if errors:
        raise errors[0]
    return results


def _run_defaults(kw: dict) -> dict:
    out = dict(nfs_port=None, mount_port=None, export="/", proto="tcp", mount_opts="",
               mem=256, files=None, mode="mount", cpus=1, kernel_args="", echo=None,
               until=None, ipv6=False, virtfs=None)
    unknown = set(kw) - set(out)
    if unknown:
        raise TypeError("unexpected arguments: %s" % ", ".join(sorted(unknown)))
    out.update(kw)
    if out["nfs_port"] is None and out["virtfs"] is None:
        raise TypeError("nfs_port is required (or virtfs=PATH)")
    return out


# ---------------------------------------------------------------------------
# command line

def _cli(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="guest.py", description="Boot the Linux NFS client in qemu against a server "
        "on this host's loopback (fastnfs test harness).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_prep = sub.add_parser("prepare", help="fetch the kernel and build the initramfs")
    p_prep.add_argument("--udp", action="store_true",
                        help="also build the UDP-capable nfs.ko/nfsv3.ko")
    sub.add_parser("check", help="say whether guests can run here")
    p_run = sub.add_parser("run", help="boot guest(s), mount, run a script")
    src = p_run.add_mutually_exclusive_group(required=True)
    src.add_argument("--nfs-port", type=int)
    src.add_argument("--virtfs", metavar="PATH",
                     help="no NFS: share host directory PATH with qemu's 9p server "
                          "(security_model=mapped-file) and mount it on /mnt")
    p_run.add_argument("--mount-port", type=int)
    p_run.add_argument("--export", default="/")
    p_run.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p_run.add_argument("-6", "--ipv6", action="store_true",
                       help="IPv6-only guest: mount [fec0::2]:EXPORT over tcp6/udp6 "
                            "(the server must listen on the host's ::1)")
    p_run.add_argument("-o", "--mount-opts", default="",
                       help="extra mount options, e.g. actimeo=0,ro or mountproto=udp")
    p_run.add_argument("--mode", choices=("mount", "nfsroot"), default="mount")
    g = p_run.add_mutually_exclusive_group()
    g.add_argument("-c", dest="command", help="shell command(s) to run")
    g.add_argument("--script", help="shell script file to run ('-' = stdin)")
    p_run.add_argument("--file", action="append", default=[], metavar="SRC[:DEST]",
                       help="copy a host file/dir into the guest (default DEST: "
                            "/fnfs/files/NAME, on PATH)")
    p_run.add_argument("--timeout", type=float, default=300)
    p_run.add_argument("--mem", type=int, default=256)
    p_run.add_argument("--cpus", type=int, default=1)
    p_run.add_argument("--kernel-args", default="")
    p_run.add_argument("--until", metavar="TEXT",
                       help="stop the guest (rc 0) once a console line contains TEXT, "
                            "e.g. with --mode nfsroot -c 'exec /sbin/init'")
    p_run.add_argument("-n", "--count", type=int, default=1, help="run N guests at once")
    p_run.add_argument("-j", "--max-parallel", type=int)
    p_run.add_argument("-v", "--verbose", action="store_true",
                       help="echo the whole console as it arrives")
    a = ap.parse_args(argv)

    if a.cmd == "check":
        ok, why = available()
        print("ok" if ok else "unavailable: " + why)
        return 0 if ok else 1
    if a.cmd == "prepare":
        t0 = time.monotonic()
        kit = prepare(udp=a.udp)
        print("kernel   %s (%s)\nimage    %s\ninitrd   %s\nmodules  %s\nudp      %s\n"
              "cache    %s\ntook     %.1fs" % (
                  kit.kernel.release, kit.kernel.pkg_version, kit.kernel.image,
                  kit.base_initrd, " ".join(kit.modules),
                  "allowed" if kit.udp else "refused by this kernel (prepare --udp)",
                  cache_dir(), time.monotonic() - t0))
        return 0

    if a.command is not None:
        script = a.command
    elif a.script == "-":
        script = sys.stdin.read()
    elif a.script:
        with open(a.script) as fh:
            script = fh.read()
    else:
        script = "grep ' /mnt ' /proc/mounts; ls -la" if a.mode == "mount" else "id; ls -l /"
    files = {}
    for spec in a.file:
        src, sep, dst = spec.partition(":")
        files[src] = dst if sep else os.path.basename(src.rstrip("/"))
    echo = (lambda line: sys.stderr.write("  | %s\n" % line)) if a.verbose else None
    kw = dict(nfs_port=a.nfs_port, mount_port=a.mount_port, export=a.export,
              proto=a.proto, mount_opts=a.mount_opts, mem=a.mem, files=files,
              mode=a.mode, cpus=a.cpus, kernel_args=a.kernel_args, echo=echo,
              until=a.until, ipv6=a.ipv6, virtfs=a.virtfs)

    def stop(signum, _frame):
        _kill_live_guests()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    if a.count == 1:
        results = [run(script, timeout=a.timeout, **kw)]
    else:
        results = run_many(a.count, script, timeout=a.timeout,
                           max_parallel=a.max_parallel, **kw)
    for r in results:
        if a.count > 1:
            print("=== vm%d ===" % r.vm_id)
        sys.stdout.write(r.output)
        if r.failure:
            sys.stderr.write("vm%d: %s\n" % (r.vm_id, r.failure))
            if r.dmesg:
                sys.stderr.write(r.dmesg)
            elif not a.verbose:
                sys.stderr.write(r.console_tail(25) + "\n")
        sys.stderr.write("vm%d: rc=%d mounted at guest uptime %s s, script %s s, "
                         "wall %.1f s, log %s\n" % (
                             r.vm_id, r.rc, r.mount_uptime,
                             "%.2f" % r.script_seconds if r.script_seconds is not None else "-",
                             r.wall_seconds, r.log_path))
    if len(results) == 1:
        return results[0].rc
    return 0 if all(r.rc == 0 for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(_cli())
    except VMError as e:
        sys.stderr.write("guest.py: %s\n" % e)
        sys.exit(RC_BOOT_FAILED)
    except KeyboardInterrupt:
        _kill_live_guests()
        sys.exit(130)
