"""Boot a real Debian (systemd) from a tree served by fastnfs: a virtfs tree, and a
tree whose owners live in pseudo's database (``--pseudo``, the second test).

The rootfs is ``debootstrap --variant=minbase --include=systemd-sysv bookworm``
(about 7,800 entries), built once as root and cached as a tarball made with
``tar --numeric-owner -cpf`` under /var/cache/fastnfs-tests/ (or
$FASTNFS_TEST_CACHE).  Each run:

1. imports the tarball with ``fastnfs virtfs import TAR DST`` as an ordinary
   user (uid/gid 65534), so owners, modes and device nodes exist only as
   virtfs metadata;
2. serves DST with ``fastnfs serve --virtfs``, as that user too;
3. boots the Debian kernel in qemu with DST as its (rw) NFS root and the
   real /sbin/init (systemd) as PID 1 (tests/vm/guest.py, mode="nfsroot",
   until=...);
4. a oneshot unit dropped into the tree, ordered after multi-user.target,
   lists every entry of the root file system (a bind mount of /, so the
   /dev of the tree is seen too) with owner, mode, size, mtime, link count,
   symlink target and device numbers, and writes the list back into the
   tree;
5. the host checks the console (multi-user reached, no failed unit, no
   "unsafe path transition" from systemd-tmpfiles, which is what a wrong
   owner of the root directory causes) and compares the guest's list with
   the tarball, entry by entry.

If the interpreter running pytest cannot be used by uid 65534 (pyenv under
/root, say), Debian's /usr/bin/python3 with PYTHONPATH pointing at this
fastnfs is tried; if neither works, import and server run as root
(``--owner 65534:65534``) and the test says so in its output.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

import fastnfs
from conftest import FastnfsProcess
from vm import guest

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

NOBODY = 65534
META = ".virtfs_metadata"
SUITE = "bookworm"
ROOTFS_TAR = "debian-%s-minbase-systemd.tar" % SUITE
DONE = "FNFS-CHECK-DONE"
LIST = "fnfs-check.list"            # written by the guest into the tree's root

REQUIRE_ALL = os.environ.get("FASTNFS_REQUIRE_ALL") == "1"


def _skip_or_fail(why: str):
    if REQUIRE_ALL:
        pytest.fail(why + " (FASTNFS_REQUIRE_ALL=1)")
    pytest.skip(why)


# ---------------------------------------------------------------------------
# the cached rootfs tarball

def cache_dir() -> Path:
    d = Path(os.environ.get("FASTNFS_TEST_CACHE") or "/var/cache/fastnfs-tests")
    d.mkdir(parents=True, exist_ok=True)
    return d


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    texts = []
    for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + \
            [Path("/etc/apt/sources.list")] + \
            sorted(Path("/etc/apt/sources.list.d").glob("*.list")):
        try:
            texts.append(p.read_text())
        except OSError:
            pass
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict((k.strip().lower(), v.strip()) for k, _, v in
                          (l.partition(":") for l in stanza.splitlines()
                           if ":" in l and not l.lstrip().startswith("#")))
            if "deb" in fields.get("types", "").split() and \
                    SUITE in fields.get("suites", "").split():
                for uri in fields.get("uris", "").split():
                    if "security" not in uri:
                        return uri
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+%s\s" % SUITE, line)
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def build_rootfs_tar(dest: Path) -> float:
    """debootstrap into a scratch directory, tar it to dest; returns seconds."""
    if os.geteuid() != 0:
        _skip_or_fail("building the Debian rootfs cache %s needs root (debootstrap)" % dest)
    if not shutil.which("debootstrap"):
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"],
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not shutil.which("debootstrap"):
        _skip_or_fail("debootstrap is not installed and apt-get could not install it")
    work = Path(tempfile.mkdtemp(prefix="fastnfs-debootstrap-", dir=str(dest.parent)))
    t0 = time.monotonic()
    try:
        root = work / "root"
        mirror = debian_mirror()
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=systemd-sysv",
                            SUITE, str(root), mirror],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            _skip_or_fail("debootstrap %s %s failed:\n%s" % (SUITE, mirror, r.stdout[-3000:]))
        for p in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            p.unlink()
        part = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-cpf", str(part), "-C", str(root), "."],
                       check=True)
        os.chmod(part, 0o644)
        os.replace(part, dest)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)])
    return time.monotonic() - t0


def rootfs_tar() -> tuple[Path, float | None]:
    """The cached tarball, built first if missing; (path, build seconds or None)."""
    d = cache_dir()
    tar = d / ROOTFS_TAR
    if tar.exists():
        return tar, None
    with open(d / (ROOTFS_TAR + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar.exists():
            return tar, None
        return tar, build_rootfs_tar(tar)


# ---------------------------------------------------------------------------
# running fastnfs as an ordinary user

def unprivileged_python() -> tuple[list[str] | None, dict, str]:
    """(argv prefix, env, note) to run fastnfs as uid/gid 65534, or (None, {}, why)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None, {}, "not root or no setpriv"
    pkg_parent = str(Path(fastnfs.__file__).resolve().parent.parent)
    setpriv = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    candidates = [([sys.executable], {}, "pytest's interpreter")]
    sysp = "/usr/bin/python3"
    if os.path.exists(sysp) and os.path.realpath(sysp) != os.path.realpath(sys.executable):
        candidates.append(([sysp], {"PYTHONPATH": pkg_parent},
                           "%s with PYTHONPATH=%s (pytest's interpreter is not usable "
                           "by uid %d)" % (sysp, pkg_parent, NOBODY)))
    want = str(Path(fastnfs.__file__).resolve())
    for argv, env, note in candidates:
        probe = subprocess.run(
            setpriv + argv + ["-c", "import sys, os, fastnfs; "
                              "assert sys.version_info[:2] == %r; "
                              "print(os.path.realpath(fastnfs.__file__))"
                              % (tuple(sys.version_info[:2]),)],
            capture_output=True, text=True, env=dict(os.environ, **env), cwd="/")
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return setpriv + argv, env, note
    return None, {}, "no interpreter here can import this fastnfs as uid %d" % NOBODY


def boot_setup(who: str):
    """The cached tarball and how to run as uid 65534: (tar, timings, notes,
    run_as, run_env); the notes say who runs as whom."""
    timings: dict = {}
    tar, built = rootfs_tar()
    if built is not None:
        timings["debootstrap+tar"] = built
    run_as, run_env, note = unprivileged_python()
    if run_as is None:
        notes = ["%s run as ROOT (%s)" % (who, note)]
    else:
        notes = ["%s run as uid/gid %d via %s" % (who, NOBODY, note)]
    return tar, timings, notes, run_as, run_env


@contextlib.contextmanager
def scratch_base(prefix: str):
    """A /tmp directory owned by uid 65534 for a test's tree, and a list for the
    servers serving it: the servers are stopped afterwards, and the directory is
    removed unless the test failed (or FASTNFS_KEEP_TREE is set)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)
    os.chown(base, NOBODY, NOBODY)
    servers: list = []
    ok = False
    try:
        yield base, servers
        ok = True
    finally:
        for srv in servers:
            srv.stop()
        if ok and not os.environ.get("FASTNFS_KEEP_TREE"):
            subprocess.run(["rm", "-rf", "--one-file-system", str(base)])


def serve_as(run_as, run_env: dict, dst: Path, args: list, tmp_path: Path):
    """fastnfs serving DST, as uid 65534 when run_as is given (else as this user)."""
    if run_as is None:
        return FastnfsProcess(dst, args, log_path=tmp_path / "fastnfs.log").start()
    wrapper = tmp_path / "python-as-nobody"
    wrapper.write_text("#!/bin/sh\nexec %s \"$@\"\n" % " ".join(run_as))
    wrapper.chmod(0o755)
    real = sys.executable
    sys.executable = str(wrapper)
    try:
        return FastnfsProcess(dst, args, env=run_env, log_path=tmp_path / "fastnfs.log").start()
    finally:
        sys.executable = real


# ---------------------------------------------------------------------------
# what the guest runs after multi-user.target

CHECK_SCRIPT = r"""#!/bin/sh
# fastnfs test: list the root file system with its attributes, then say done.
out=/run/fnfs-check.out
{
  echo "STATE	$(systemctl is-system-running 2>&1)"
  systemctl --failed --no-legend --plain --no-pager 2>&1 | sed 's/^/FAILED	/'
  # systemd-tmpfiles logs 'unsafe path transition' to the journal only
  journalctl -b --no-pager -q -o short-monotonic 2>&1 | sed 's/^/J	/'
  mkdir -p /run/fnfs-root
  mount --bind / /run/fnfs-root || echo "ERROR	bind mount of / failed"
  cd /run/fnfs-root &&
  find . -xdev -printf 'E\t%y\t%m\t%U\t%G\t%s\t%T@\t%n\t%p\t%l\n' 2>&1 &&
  find . -xdev \( -type b -o -type c \) -exec stat -c 'D	%t	%T	%n' {} + 2>&1
  cd /
  umount /run/fnfs-root
  echo END
} >$out 2>&1
cp $out /LIST.part && mv /LIST.part /LIST && sync
echo "DONE $(wc -l <$out) lines"
""".replace("LIST", LIST).replace("DONE", DONE)

CHECK_UNIT = """[Unit]
Description=fastnfs test: list the root file system
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fnfs-check
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
"""


def put_meta(d: Path, name: str, uid: int, gid: int, mode: int, owner: tuple[int, int]):
    """DIR/.virtfs_metadata/NAME as QEMU's mapped-file model writes it."""
    md = d / META
    if not md.exists():
        md.mkdir()
        os.lchown(md, *owner)
    p = md / name
    p.write_text("virtfs.uid=%d\nvirtfs.gid=%d\nvirtfs.mode=%d\n" % (uid, gid, mode))
    os.lchown(p, *owner)


def add_dirs(d: Path, owner: tuple[int, int]) -> None:
    """mkdir -p, each new directory root-owned 0755 in its metadata."""
    if not d.exists():
        add_dirs(d.parent, owner)
        d.mkdir()
        os.lchown(d, *owner)
        put_meta(d.parent, d.name, 0, 0, stat.S_IFDIR | 0o755, owner)


def add_file(root: Path, rel: str, data: str, perm: int, owner: tuple[int, int]) -> None:
    """A root-owned file in the virtfs tree (disk owner `owner`, metadata 0:0)."""
    p = root / rel
    add_dirs(p.parent, owner)
    p.write_text(data)
    os.chmod(p, 0o755 if perm & 0o111 else 0o644)
    os.lchown(p, *owner)
    put_meta(p.parent, p.name, 0, 0, stat.S_IFREG | perm, owner)


def add_symlink(root: Path, rel: str, target: str, owner: tuple[int, int]) -> None:
    p = root / rel
    os.symlink(target, p)
    os.lchown(p, *owner)
    put_meta(p.parent, p.name, 0, 0, stat.S_IFLNK | 0o777, owner)


# ---------------------------------------------------------------------------
# expected attributes, from the tarball

_TYPES = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.CONTTYPE: "f",
          tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.CHRTYPE: "c",
          tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}


def _norm(name: str) -> str:
    name = name.rstrip("/")
    if name in ("", "."):
        return "."
    return name if name.startswith("./") else "./" + name.lstrip("/")


def expected_entries(tar: Path) -> dict:
    """path ('./etc/passwd') -> dict(type, perm, uid, gid, size, mtime, target,
    rdev, nlink) as the guest should see it."""
    out: dict = {}
    links: dict = {}
    subdirs: dict = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            path = _norm(m.name)
            if m.type == tarfile.LNKTYPE:
                links.setdefault(_norm(m.linkname), []).append((path, m))
                continue
            e = dict(type=_TYPES.get(m.type, "?"), perm=m.mode & 0o7777, uid=m.uid,
                     gid=m.gid, size=m.size if m.isreg() else None, mtime=int(m.mtime),
                     target=m.linkname if m.issym() else "", nlink=1,
                     rdev=(m.devmajor, m.devminor) if m.ischr() or m.isblk() else None)
            if m.issym():
                e["size"] = len(os.fsencode(m.linkname))
            out[path] = e
            if m.isdir():
                parent = path.rsplit("/", 1)[0] if path != "." else None
                if parent is not None:
                    subdirs[parent] = subdirs.get(parent, 0) + 1
    for target, members in links.items():
        base = out[target]
        n = 1 + len(members)
        base["nlink"] = n
        for path, m in members:
            # a hard link shares the inode: same attributes as its target
            out[path] = dict(base, mtime=base["mtime"])
    for path, e in out.items():
        if e["type"] == "d":
            e["nlink"] = 2 + subdirs.get(path, 0)
    return out


def parse_guest_list(text: str) -> tuple[dict, list, list, str, list]:
    """The guest's list -> (entries, failed units, errors, systemd state, journal)."""
    entries, failed, errors, state, journal = {}, [], [], "", []
    devs = {}
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "E" and len(f) >= 10:
            entries[f[8]] = dict(type=f[1], perm=int(f[2], 8), uid=int(f[3]), gid=int(f[4]),
                                 size=int(f[5]), mtime=float(f[6]), nlink=int(f[7]),
                                 target="\t".join(f[9:]))
        elif f[0] == "D" and len(f) == 4:
            devs[f[3]] = (int(f[1], 16), int(f[2], 16))
        elif f[0] == "FAILED":
            failed.append("\t".join(f[1:]))
        elif f[0] == "J":
            journal.append("\t".join(f[1:]))
        elif f[0] == "STATE":
            state = "\t".join(f[1:])
        elif f[0] in ("END",):
            pass
        else:
            errors.append(line)
    for path, rdev in devs.items():
        if path in entries:
            entries[path]["rdev"] = rdev
    return entries, failed, errors, state, journal


def compare(want: dict, got: dict, since: float) -> tuple[list, dict]:
    """Mismatches (one line each) and counters.  Size and mtime are compared
    only for entries the boot did not modify (guest mtime before the boot)."""
    bad = []
    counts = dict(expected=len(want), listed=len(got), compared=0, touched_by_boot=0,
                  missing=0, nlink_mismatch=0)
    for path in sorted(want):
        w = want[path]
        g = got.get(path)
        if g is None:
            # systemd/tmpfiles may legitimately remove a few things at boot
            counts["missing"] += 1
            bad.append("%s: missing in the guest" % path)
            continue
        counts["compared"] += 1
        diffs = []
        for k in ("type", "perm", "uid", "gid"):
            if w[k] != g[k]:
                diffs.append("%s %s != %s" % (k, _fmt(k, g[k]), _fmt(k, w[k])))
        if w["type"] == "l" and w["target"] != g["target"]:
            diffs.append("target %r != %r" % (g["target"], w["target"]))
        if w["rdev"] is not None and w["rdev"] != g.get("rdev"):
            diffs.append("rdev %s != %s" % (g.get("rdev"), w["rdev"]))
        touched = g["mtime"] >= since - 2
        counts["touched_by_boot"] += touched
        if not touched:
            if w["size"] is not None and w["size"] != g["size"]:
                diffs.append("size %d != %d" % (g["size"], w["size"]))
            if int(g["mtime"]) != w["mtime"]:
                diffs.append("mtime %s != %d" % (g["mtime"], w["mtime"]))
            if w["nlink"] != g["nlink"] and w["type"] != "d":
                diffs.append("nlink %d != %d" % (g["nlink"], w["nlink"]))
        if w["type"] == "d" and w["nlink"] != g["nlink"]:
            # informational: the server counts the hidden .virtfs_metadata
            # subdirectory (as QEMU's mapped-file 9p does); too high is harmless
            counts["nlink_mismatch"] += 1
            counts.setdefault("dir_nlink_examples", [])
            if len(counts["dir_nlink_examples"]) < 4:
                counts["dir_nlink_examples"].append("%s %d!=%d" % (path, g["nlink"], w["nlink"]))
        if touched:
            counts.setdefault("touched", []).append(path)
        if diffs:
            bad.append("%s: %s" % (path, ", ".join(diffs)))
    return bad, counts


def _fmt(k, v):
    return oct(v) if k == "perm" else str(v)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------------------
# booting and checking

def boot_and_check(srv, dst: Path, tar: Path, notes: list, timings: dict, capsys,
                   since: float) -> list:
    """Boot /sbin/init from DST served by srv, run the check unit, and compare the
    guest's view of every entry with the tarball (entries changed after `since`,
    by the test's additions or the boot, are compared by type, owner and mode only);
    returns the problems found."""
    # 3. boot systemd from it
    seen = {}
    t_boot = time.monotonic()

    def echo(line):
        if "multi-user.target" in line and "Reached target" in line:
            seen.setdefault("multi-user", time.monotonic() - t_boot)

    res = guest.run("exec /sbin/init", nfs_port=srv.port, export=str(dst),
                    mode="nfsroot", timeout=600, mem=512, until=DONE, echo=echo,
                    kernel_args="systemd.show_status=1 "
                                "systemd.mask=serial-getty@ttyS0.service")
    timings["boot to multi-user"] = seen.get("multi-user")
    timings["boot to check done"] = res.timeline.get("UNTIL", (None,))[0]
    timings["qemu wall"] = res.wall_seconds
    console = _ANSI.sub("", res.console)
    assert res.ok, "the guest did not get to the check:\n%s\n%s" % (
        res.failure, "\n".join(console.splitlines()[-60:]))

    # 4. console checks
    problems = []
    if "multi-user" not in seen:
        problems.append("no 'Reached target multi-user.target' on the console")
    for needle in ("Failed to start", "[FAILED]", "unsafe path transition",
                   "Dependency failed", "Kernel panic", "Timed out",
                   "Stale file handle"):
        hits = [l for l in console.splitlines() if needle in l]
        if hits:
            problems.append("console has %r:\n    %s" % (needle, "\n    ".join(hits[:10])))

    # 5. the guest's view of every entry against the tarball
    listing = (dst / LIST).read_text(errors="replace")
    got, failed, errors, state, journal = parse_guest_list(listing)
    if not journal:
        problems.append("the guest listed no journal")
    for needle in ("unsafe path transition", "Failed to start", "Dependency failed",
                   "Permission denied", "Stale file handle", "Input/output error"):
        hits = [l for l in journal if needle in l]
        if hits:
            problems.append("journal has %r:\n    %s" % (needle, "\n    ".join(hits[:10])))
    if failed:
        problems.append("failed units: %s" % failed)
    if errors:
        problems.append("errors in the guest listing:\n    " + "\n    ".join(errors[:20]))
    t0 = time.monotonic()
    want = expected_entries(tar)
    bad, counts = compare(want, got, since)
    timings["compare"] = time.monotonic() - t0
    if bad:
        problems.append("%d entries differ from the tarball (guest != tar; first 40):"
                        "\n    %s"
                        % (len(bad), "\n    ".join(bad[:40])))
    with capsys.disabled():
        sys.stdout.write("\n[debian-boot] %s\n[debian-boot] timings: %s\n"
                         "[debian-boot] entries: %s; systemd state: %s; console log %s\n"
                         % ("; ".join(notes),
                            ", ".join("%s %.1fs" % (k, v) for k, v in timings.items()
                                      if v is not None),
                            counts, state, res.log_path))
    if "Traceback" in srv.log():
        problems.append("the server logged a traceback:\n" + srv.log()[-3000:])
    return problems


# ---------------------------------------------------------------------------
# the test

@pytest.fixture
def vm_ok():
    ok, why = guest.available()
    if not ok:
        _skip_or_fail("no qemu guest: " + why)


def test_debian_systemd_boots_from_a_virtfs_tree(vm_ok, tmp_path, capsys):
    tar, timings, notes, run_as, run_env = boot_setup("import and server")
    owner = (NOBODY, NOBODY)

    with scratch_base("fastnfs-debian-") as (base, servers):
        dst = base / "root"
        # 1. import the tarball as an ordinary user
        t0 = time.monotonic()
        if run_as is not None:
            cmd = run_as + ["-m", "fastnfs", "virtfs", "import", "-q", str(tar), str(dst)]
        else:
            cmd = [sys.executable, "-m", "fastnfs", "virtfs", "import", "-q",
                   "--owner", "%d:%d" % owner, str(tar), str(dst)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd="/",
                           env=dict(os.environ, **run_env))
        timings["import"] = time.monotonic() - t0
        assert r.returncode == 0, "virtfs import failed (%d):\n%s%s" % (
            r.returncode, r.stdout[-3000:], r.stderr[-3000:])
        st = dst.stat()
        assert (st.st_uid, st.st_gid) == owner

        # the check unit, as root-owned files of the tree
        since = time.time()
        add_file(dst, "usr/local/sbin/fnfs-check", CHECK_SCRIPT, 0o755, owner)
        add_file(dst, "etc/systemd/system/fnfs-check.service", CHECK_UNIT, 0o644, owner)
        add_dirs(dst / "etc/systemd/system/multi-user.target.wants", owner)
        add_symlink(dst, "etc/systemd/system/multi-user.target.wants/fnfs-check.service",
                    "/etc/systemd/system/fnfs-check.service", owner)

        check = subprocess.run((run_as or [sys.executable]) + ["-m", "fastnfs", "virtfs",
                                                               "check", str(dst)],
                               capture_output=True, text=True, cwd="/",
                               env=dict(os.environ, **run_env))
        assert check.returncode == 0, "virtfs check after import:\n" + check.stdout[-3000:]

        # 2. serve it (same user)
        srv = serve_as(run_as, run_env, dst, ["--virtfs"], tmp_path)
        servers.append(srv)

        problems = boot_and_check(srv, dst, tar, notes, timings, capsys, since)
        assert not problems, "\n".join(problems) + "\n(tree kept in %s)" % base


PSEUDO_ADD_CHECK = """set -e
mkdir -p usr/local/sbin etc/systemd/system/multi-user.target.wants
cat >usr/local/sbin/fnfs-check <<'FNFS_EOF'
%s
FNFS_EOF
chmod 0755 usr/local/sbin/fnfs-check
cat >etc/systemd/system/fnfs-check.service <<'FNFS_EOF'
%s
FNFS_EOF
chmod 0644 etc/systemd/system/fnfs-check.service
ln -s /etc/systemd/system/fnfs-check.service etc/systemd/system/multi-user.target.wants/
""" % (CHECK_SCRIPT.rstrip("\n"), CHECK_UNIT.rstrip("\n"))


def test_debian_systemd_boots_from_a_pseudo_database(vm_ok, tmp_path, capsys):
    """Yocto's tree without pseudo running (issue #12): the tarball unpacked by
    `pseudo tar -x` as an ordinary user, so on disk everything belongs to that
    user and devices are empty files, then `fastnfs serve ROOTFS --pseudo
    STATEDIR` as the same user: owners, modes and device numbers come from
    pseudo's files.db, and the board boots with every entry as in the tarball;
    what the boot changed went through pseudo, its database intact afterwards."""
    from test_pseudo import db_integrity
    from test_pseudodb import pseudo_env, stop_pseudo
    from fastnfs.backends.pseudowriter import server_alive
    if not shutil.which("pseudo"):
        _skip_or_fail("pseudo is not installed")
    tar, timings, notes, run_as, run_env = boot_setup("pseudo and the server")
    as_user = run_as[:run_as.index("--clear-groups") + 1] if run_as else []

    with scratch_base("fastnfs-debian-pseudo-") as (base, servers):
        dst = base / "rootfs"
        state = base / "rootfs.pseudo_state"          # runqemu-extract-sdk's choice
        for d in (dst, state):
            d.mkdir()
            os.chown(d, NOBODY, NOBODY)
        env = pseudo_env(state)
        # 1. unpack as Yocto does, then add the check unit (root-owned in pseudo's view)
        t0 = time.monotonic()
        with open(tar, "rb") as f:
            r = subprocess.run(as_user + ["pseudo", "tar", "-C", str(dst), "--numeric-owner",
                                          "-xpf", "-"], stdin=f, env=env, cwd="/",
                               capture_output=True, text=True)
        assert r.returncode == 0, "pseudo tar -x failed:\n" + r.stderr[-3000:]
        since = time.time()
        r = subprocess.run(as_user + ["pseudo", "sh", "-c", PSEUDO_ADD_CHECK], env=env,
                           cwd=str(dst), capture_output=True, text=True)
        assert r.returncode == 0, "adding the check unit failed:\n" + r.stderr[-3000:]
        stop_pseudo(state)                       # pseudo saves files.db and exits
        timings["pseudo tar -x"] = time.monotonic() - t0
        if run_as is not None:
            assert (dst / "etc" / "shadow").stat().st_uid == NOBODY

        # 2. serve it from the database, no pseudo running (same user)
        srv = serve_as(run_as, run_env, dst, ["--pseudo", str(state)], tmp_path)
        servers.append(srv)

        problems = boot_and_check(srv, dst, tar, notes, timings, capsys, since)
        # what the boot changed went through pseudo: it saved and exited, intact
        srv.stop()
        if server_alive(str(state)) is not None:
            problems.append("a pseudo server still holds %s after fastnfs stopped" % state)
        ok = db_integrity(state / "files.db")
        if ok != "ok":
            problems.append("files.db integrity_check: %s" % ok)
        assert not problems, "\n".join(problems) + "\n(tree kept in %s)" % base
