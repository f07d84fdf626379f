"""The test harness's cold-cache paths, on small inputs, every run.

With warm caches the suite never downloads a kernel, never rebuilds nfs.ko and
never runs debootstrap, so a fault there (once: tarfile's ``filter=``, which
Debian 12's Python 3.11.2 lacks) only shows on a fresh machine.  These tests
run each of those paths on something small: apt's lookup and download of a
small package, the nfs.ko rebuild on a synthetic linux-source package whose
module only compiles once the UDP refusal is patched out, and the rootfs
tarball step with a stand-in debootstrap."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import require_vm
from vm import guest

pytestmark = pytest.mark.vm

REQUIRE_ALL = os.environ.get("FASTNFS_REQUIRE_ALL") == "1"


def _need_root_and_apt():
    if os.geteuid() != 0 or not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        if REQUIRE_ALL:
            pytest.fail("needs root, apt-get and dpkg-deb (FASTNFS_REQUIRE_ALL=1)")
        pytest.skip("needs root, apt-get and dpkg-deb")


def test_kernel_package_lookup_and_download_of_a_small_package(tmp_path):
    _need_root_and_apt()
    assert guest._current_image_package().startswith("linux-image-")
    deb = guest._apt_download("hostname", str(tmp_path / "debs"))
    assert deb.endswith(".deb") and os.path.getsize(deb) > 0
    assert guest._deb_field(deb, "Package") == "hostname"
    assert [p.name for p in (tmp_path / "debs").iterdir()] == [os.path.basename(deb)]


# -- the nfs.ko rebuild ----------------------------------------------------------------

_MODULE_C = r"""
#include <linux/module.h>
#ifdef CONFIG_NFS_DISABLE_UDP_SUPPORT
#error the UDP refusal is still compiled in
#endif
static int __init m_init(void) { return 0; }
static void __exit m_exit(void) { }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
"""


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    ti = tarfile.TarInfo(name)
    if data is None:
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ti)
    else:
        ti.size, ti.mode = len(data), 0o644
        tar.addfile(ti, io.BytesIO(data))


def make_source_deb(tmp: Path, series: str, version: str, extra=()) -> Path:
    """A linux-source-SERIES .deb holding a tiny fs/nfs that builds nfs.ko and nfsv3.ko."""
    top = "linux-source-%s/" % series
    buf = io.BytesIO()
    with lzma.open(buf, "wb") as xz, tarfile.open(fileobj=xz, mode="w|") as tar:
        _tar_add(tar, top, None)
        _tar_add(tar, top + "fs/", None)
        _tar_add(tar, top + "fs/internal.h", b"/* internal */\n")
        _tar_add(tar, top + "fs/nfs/", None)
        _tar_add(tar, top + "fs/nfs/Makefile", b"obj-m := nfs.o nfsv3.o\n")
        _tar_add(tar, top + "fs/nfs/nfs.c", _MODULE_C.encode())
        _tar_add(tar, top + "fs/nfs/nfsv3.c", _MODULE_C.encode())
        _tar_add(tar, top + "kernel/not-wanted.c", b"int x;\n")
        for name, data in extra:
            _tar_add(tar, name, data)
    pkg = tmp / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: linux-source-%s\nVersion: %s\nArchitecture: all\n"
        "Maintainer: fastnfs tests <tests@localhost>\nDescription: synthetic source\n"
        % (series, version))
    src = pkg / "usr" / "src"
    src.mkdir(parents=True)
    (src / ("linux-source-%s.tar.xz" % series)).write_bytes(buf.getvalue())
    out = tmp / ("linux-source-%s_%s_all.deb" % (series, version))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(pkg), str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def test_source_extraction_takes_only_fs_nfs_and_refuses_unsafe_names(tmp_path):
    _need_root_and_apt()
    deb = make_source_deb(tmp_path, "6.1", "6.1.0-0")
    dest = tmp_path / "out"
    nfsdir = guest._extract_nfs_source(str(deb), "6.1", str(dest))
    assert sorted(os.listdir(nfsdir)) == ["Makefile", "nfs.c", "nfsv3.c"]
    assert (dest / "linux-source-6.1" / "fs" / "internal.h").exists()
    assert not (dest / "linux-source-6.1" / "kernel").exists()
    assert guest._allow_udp(nfsdir) == 2
    assert "CONFIG_NFS_DISABLE_UDP_SUPPORT" not in \
        Path(nfsdir, "nfs.c").read_text().split("#if 0")[0]

    (tmp_path / "evil").mkdir()
    evil = make_source_deb(tmp_path / "evil", "6.1", "6.1.0-0",
                           extra=[("linux-source-6.1/fs/nfs/../../../../escape", b"x")])
    with pytest.raises(guest.VMError, match="unsafe name"):
        guest._extract_nfs_source(str(evil), "6.1", str(tmp_path / "out2"))
    assert not (tmp_path / "escape").exists()


def test_nfs_module_rebuild_end_to_end_on_a_small_source(tmp_path):
    """_build_udp_modules as a cold cache runs it (headers, extract, patch, make, strip),
    with the kernel the guests boot and a synthetic source package in the cache."""
    _need_root_and_apt()
    kernel = require_vm().kernel
    series = ".".join(kernel.pkg_version.split(".")[:2])
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    deb = make_source_deb(tmp_path, series, kernel.pkg_version)
    shutil.move(str(deb), str(cache / "debs" / deb.name))
    built = guest._build_udp_modules(str(cache), kernel)
    assert set(built) == {"nfs", "nfsv3"}
    for path in built.values():
        head = Path(path).read_bytes()[:4]
        assert head == b"\x7fELF"
        info = subprocess.run(["modinfo", "-F", "vermagic", path], capture_output=True,
                              text=True).stdout
        assert info.split()[0] == kernel.release, info
    assert not list((cache / "debs").glob("linux-source-*"))   # the source is not kept
    assert [p.name for p in cache.iterdir() if p.name.startswith("udp-build-")] == []


# -- the Debian rootfs tarball ---------------------------------------------------------

FAKE_DEBOOTSTRAP = """#!/bin/sh
# stand-in: a tiny tree with what the real one leaves behind
set -e
n=0   # debootstrap [--options] SUITE TARGET [MIRROR]
for a; do case "$a" in --*) ;; *) n=$((n + 1)); [ $n = 2 ] && root=$a;; esac; done
mkdir -p "$root/etc" "$root/dev" "$root/var/cache/apt/archives"
echo 'ID=debian' > "$root/etc/os-release"
: > "$root/var/cache/apt/archives/libc6_2.36_amd64.deb"
mknod "$root/dev/null" c 1 3
chown 0:5 "$root/dev/null"
chmod 4755 "$root/etc/os-release"
echo "$@" > "$root/etc/debootstrap-args"
"""


def test_rootfs_tarball_step_with_a_stand_in_debootstrap(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    import test_debian_boot as boot
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "debootstrap"
    fake.write_text(FAKE_DEBOOTSTRAP)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    dest = tmp_path / "cache" / "rootfs.tar"
    dest.parent.mkdir()
    secs = boot.build_rootfs_tar(dest)
    assert secs >= 0
    with tarfile.open(dest) as tar:
        names = {m.name.lstrip("./"): m for m in tar.getmembers()}
    assert "var/cache/apt/archives/libc6_2.36_amd64.deb" not in names
    null = names["dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3) and null.gid == 5
    assert names["etc/os-release"].mode & stat.S_ISUID
    args = tarfile.open(dest).extractfile("./etc/debootstrap-args").read().decode()
    assert "--variant=minbase" in args and boot.SUITE in args
    assert [p.name for p in dest.parent.iterdir()] == ["rootfs.tar"]   # scratch tree removed
