#!/usr/bin/env python3
"""Soak: many clients, a mixed workload, for a bounded time; then check everything.

    tests/soak.py --minutes 10 --clients 16            # the documented long run
    tests/soak.py --seconds 30 --clients 16 --workers 2 --virtfs
    tests/soak.py --port 2049 --export /srv/x --pid 1234 --minutes 60   # a server you started

Without --port it starts `fastnfs serve` itself (one worker unless --workers)
on a fresh directory.  Each client (a thread with its own TCP connection,
tests/rpcclient.py) works in its own directory ``cNN`` with CREATE, WRITE
(FILE_SYNC, and UNSTABLE followed by COMMIT), READ, SETATTR (mode, size),
RENAME, REMOVE, MKDIR, READDIRPLUS, LINK, SYMLINK/READLINK and LOOKUP, and
keeps a model of what it believes is there (name -> object, object ->
content and mode).  Reads and listings are checked against the model as the
run goes; at the end the tree on disk is compared with the models (names,
contents, modes, symlink targets, hard links sharing an inode).

Reported: operations, errors, the server's RSS (VmRSS summed over it and its
worker children) and open descriptors at the start and the end.  Exit status
0 when there were no errors, the tree matches, RSS grew less than 50 MB and
descriptors by at most 20.
"""

from __future__ import annotations

import argparse
import os
import random
import stat
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rpcclient import (FILE_SYNC, GUARDED, NF3DIR, NF3LNK, NF3REG, NFS3_OK,  # noqa: E402
                       UNSTABLE, AuthSys, Nfs3)

MAX_FILE = 192 * 1024
RSS_SLACK_KB = 50 * 1024
FD_SLACK = 20


# ---------------------------------------------------------------- the server's resources
def process_tree(pid: int) -> list:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, tid)) as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def rss_kb(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def fd_count(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            total += len(os.listdir("/proc/%d/fd" % p))
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- one client
class Client(threading.Thread):
    """One client with its own connection, directory and model."""

    def __init__(self, port: int, root_fh: bytes, idx: int, deadline: float, seed: int):
        super().__init__(daemon=True, name="soak-%02d" % idx)
        self.port, self.root_fh, self.idx, self.deadline = port, root_fh, idx, deadline
        self.rng = random.Random(seed * 1000 + idx)
        self.top = "c%02d" % idx
        self.dirs: dict = {}       # path -> fh
        self.names: dict = {}      # path -> ("f", obj id) | ("l", target)
        self.fhs: dict = {}        # path -> fh of a file or symlink
        self.content: dict = {}    # obj id -> bytearray
        self.mode: dict = {}       # obj id -> permission bits
        self.counter = 0
        self.ops: dict = {}
        self.errors: list = []
        self.n = None

    # -- bookkeeping
    def fail(self, what: str) -> None:
        if len(self.errors) < 50:
            self.errors.append("client %d: %s" % (self.idx, what))

    def ok(self, what: str, st: int) -> bool:
        self.ops[what] = self.ops.get(what, 0) + 1
        if st != NFS3_OK:
            self.fail("%s -> nfsstat %d" % (what, st))
            return False
        return True

    def new_name(self, prefix: str) -> str:
        self.counter += 1
        return "%s%d" % (prefix, self.counter)

    def parent(self, path: str) -> str:
        return path.rsplit("/", 1)[0]

    def files(self) -> list:
        return [p for p, v in self.names.items() if v[0] == "f"]

    def rand_dir(self) -> str:
        return self.rng.choice(sorted(self.dirs))

    # -- the workload
    def run(self):
        try:
            self.n = Nfs3.connect(self.port, cred=AuthSys(0, 0, machine=b"soak%d" % self.idx),
                                  timeout=60)
            st, r = self.n.mkdir(self.root_fh, self.top, mode=0o755)
            if not self.ok("MKDIR", st):
                return
            self.dirs[self.top] = r["fh"]
            ops = [(self.op_create, 20), (self.op_write, 15), (self.op_read, 15),
                   (self.op_setattr, 8), (self.op_rename, 8), (self.op_remove, 7),
                   (self.op_mkdir, 3), (self.op_readdirplus, 6), (self.op_link, 5),
                   (self.op_symlink, 5), (self.op_lookup, 6)]
            funcs = [f for f, _w in ops]
            weights = [w for _f, w in ops]
            while time.monotonic() < self.deadline:
                self.rng.choices(funcs, weights)[0]()
        except Exception as e:  # noqa: BLE001 - anything unexpected is an error
            import traceback
            self.fail("exception %r\n%s" % (e, traceback.format_exc()))
        finally:
            if self.n is not None:
                self.n.close()

    def _write(self, fh: bytes, oid: int, offset: int, data: bytes) -> None:
        stable = self.rng.choice((FILE_SYNC, UNSTABLE))
        st, r = self.n.write(fh, offset, data, stable=stable)
        if not self.ok("WRITE", st):
            return
        if r["count"] != len(data):
            self.fail("WRITE count %d of %d" % (r["count"], len(data)))
        if stable == UNSTABLE and self.rng.random() < 0.5:
            self.ok("COMMIT", self.n.commit(fh)[0])
        c = self.content[oid]
        if offset > len(c):
            c.extend(b"\0" * (offset - len(c)))
        c[offset:offset + len(data)] = data

    def op_create(self):
        if len(self.names) > 60:
            return self.op_remove()
        d = self.rand_dir()
        name = self.new_name("f")
        mode = self.rng.choice((0o644, 0o600, 0o640, 0o755))
        st, r = self.n.create(self.dirs[d], name, how=GUARDED, mode=mode)
        if not self.ok("CREATE", st):
            return
        path = d + "/" + name
        oid = self.counter
        self.names[path] = ("f", oid)
        self.fhs[path] = r["fh"]
        self.content[oid] = bytearray()
        self.mode[oid] = mode
        size = self.rng.choice((0, 100, 4096, 30000, 65536))
        if size:
            self._write(r["fh"], oid, 0, self.rng.randbytes(size))

    def op_write(self):
        fl = self.files()
        if not fl:
            return self.op_create()
        path = self.rng.choice(fl)
        oid = self.names[path][1]
        c = self.content[oid]
        if len(c) > MAX_FILE:
            st, _ = self.n.setattr(self.fhs[path], size=1000)
            if self.ok("SETATTR", st):
                del c[1000:]
            return
        offset = self.rng.randrange(0, len(c) + 2000)
        self._write(self.fhs[path], oid, offset, self.rng.randbytes(self.rng.randrange(1, 20000)))

    def op_read(self):
        fl = self.files()
        if not fl:
            return
        path = self.rng.choice(fl)
        oid = self.names[path][1]
        want = bytes(self.content[oid])
        st, r = self.n.read(self.fhs[path], 0, len(want) + 100)
        if not self.ok("READ", st):
            return
        if r["data"] != want or not r["eof"]:
            self.fail("READ %s: %d bytes, model has %d (eof %s)"
                      % (path, len(r["data"]), len(want), r["eof"]))

    def op_setattr(self):
        fl = self.files()
        if not fl:
            return
        path = self.rng.choice(fl)
        oid = self.names[path][1]
        if self.rng.random() < 0.6:
            mode = self.rng.choice((0o600, 0o644, 0o664, 0o700, 0o755, 0o444))
            if self.ok("SETATTR", self.n.setattr(self.fhs[path], mode=mode)[0]):
                self.mode[oid] = mode
        else:
            c = self.content[oid]
            size = self.rng.randrange(0, len(c) + 5000)
            if self.ok("SETATTR", self.n.setattr(self.fhs[path], size=size)[0]):
                if size < len(c):
                    del c[size:]
                else:
                    c.extend(b"\0" * (size - len(c)))

    def op_rename(self):
        if not self.names:
            return
        src = self.rng.choice(sorted(self.names))
        d = self.rand_dir()
        name = self.new_name("r")
        st, _ = self.n.rename(self.dirs[self.parent(src)], src.rsplit("/", 1)[1],
                              self.dirs[d], name)
        if self.ok("RENAME", st):
            dst = d + "/" + name
            self.names[dst] = self.names.pop(src)
            self.fhs[dst] = self.fhs.pop(src)

    def op_remove(self):
        if not self.names:
            return
        path = self.rng.choice(sorted(self.names))
        st, _ = self.n.remove(self.dirs[self.parent(path)], path.rsplit("/", 1)[1])
        if self.ok("REMOVE", st):
            kind = self.names.pop(path)
            del self.fhs[path]
            if kind[0] == "f" and not any(v == kind for v in self.names.values()):
                del self.content[kind[1]]
                del self.mode[kind[1]]

    def op_mkdir(self):
        if len(self.dirs) >= 8:
            return
        d = self.rand_dir()
        if d.count("/") >= 3:
            return
        name = self.new_name("d")
        st, r = self.n.mkdir(self.dirs[d], name, mode=0o755)
        if self.ok("MKDIR", st):
            self.dirs[d + "/" + name] = r["fh"]

    def expected_children(self, d: str) -> dict:
        out = {}
        for p in self.dirs:
            if p != d and self.parent(p) == d:
                out[p.rsplit("/", 1)[1]] = NF3DIR
        for p, v in self.names.items():
            if self.parent(p) == d:
                out[p.rsplit("/", 1)[1]] = NF3REG if v[0] == "f" else NF3LNK
        return out

    def op_readdirplus(self):
        d = self.rand_dir()
        self.ops["READDIRPLUS"] = self.ops.get("READDIRPLUS", 0) + 1
        entries = self.n.readdir_all(self.dirs[d], count=1024, plus=True)
        got = {e["name"].decode(): e["attrs"]["type"] for e in entries
               if e["name"] not in (b".", b"..")}
        want = self.expected_children(d)
        if got != want:
            self.fail("READDIRPLUS %s: got %s, model %s" % (d, sorted(got), sorted(want)))
        for e in entries:
            name = e["name"].decode()
            path = d + "/" + name
            v = self.names.get(path)
            if v and v[0] == "f" and e["attrs"]["size"] != len(self.content[v[1]]):
                self.fail("READDIRPLUS %s: size %d, model %d"
                          % (path, e["attrs"]["size"], len(self.content[v[1]])))

    def op_link(self):
        fl = self.files()
        if not fl:
            return
        src = self.rng.choice(fl)
        d = self.rand_dir()
        name = self.new_name("h")
        st, _ = self.n.link(self.fhs[src], self.dirs[d], name)
        if self.ok("LINK", st):
            self.names[d + "/" + name] = self.names[src]
            self.fhs[d + "/" + name] = self.fhs[src]

    def op_symlink(self):
        d = self.rand_dir()
        name = self.new_name("s")
        target = "target-%d/%s" % (self.counter, "x" * self.rng.randrange(0, 40))
        st, r = self.n.symlink(self.dirs[d], name, target, mode=0o777)
        if not self.ok("SYMLINK", st):
            return
        path = d + "/" + name
        self.names[path] = ("l", target)
        self.fhs[path] = r["fh"]
        st, r = self.n.readlink(self.fhs[path])
        if self.ok("READLINK", st) and r["data"].decode() != target:
            self.fail("READLINK %s: %r" % (path, r["data"]))

    def op_lookup(self):
        if not self.names:
            return
        path = self.rng.choice(sorted(self.names))
        st, r = self.n.lookup(self.dirs[self.parent(path)], path.rsplit("/", 1)[1])
        if not self.ok("LOOKUP", st):
            return
        v = self.names[path]
        a = r["attrs"]
        if v[0] == "f":
            if (a["type"], a["size"], a["mode"] & 0o7777) != (
                    NF3REG, len(self.content[v[1]]), self.mode[v[1]]):
                self.fail("LOOKUP %s: %s, model size %d mode %o" % (
                    path, a, len(self.content[v[1]]), self.mode[v[1]]))
        elif a["type"] != NF3LNK:
            self.fail("LOOKUP %s: type %d, model symlink" % (path, a["type"]))

    # -- the end
    def check_disk(self, export: Path) -> list:
        """Differences between this client's model and its directory on disk."""
        bad = []
        on_disk = {}
        for dirpath, dirnames, filenames in os.walk(export / self.top):
            rel = os.path.relpath(dirpath, export)
            for name in dirnames + filenames:
                if name.startswith(".virtfs_metadata"):
                    continue
                on_disk[rel + "/" + name] = os.lstat(os.path.join(dirpath, name))
        want = set(self.names) | (set(self.dirs) - {self.top})
        if set(on_disk) != want:
            bad.append("client %d: on disk only %s; model only %s" % (
                self.idx, sorted(set(on_disk) - want)[:10], sorted(want - set(on_disk))[:10]))
        inode_of = {}
        for path, v in self.names.items():
            st = on_disk.get(path)
            if st is None:
                continue
            if v[0] == "l":
                if not stat.S_ISLNK(st.st_mode) or os.readlink(export / path) != v[1]:
                    bad.append("client %d: symlink %s" % (self.idx, path))
                continue
            data = (export / path).read_bytes()
            if data != bytes(self.content[v[1]]):
                bad.append("client %d: %s holds %d bytes, model %d (first difference at %s)" % (
                    self.idx, path, len(data), len(self.content[v[1]]),
                    next((i for i, (a, b) in enumerate(zip(data, self.content[v[1]]))
                          if a != b), "the end")))
            if stat.S_IMODE(st.st_mode) != self.mode[v[1]]:
                bad.append("client %d: %s mode %o, model %o" % (
                    self.idx, path, stat.S_IMODE(st.st_mode), self.mode[v[1]]))
            if inode_of.setdefault(v[1], st.st_ino) != st.st_ino:
                bad.append("client %d: %s is not a hard link of its siblings" % (self.idx, path))
        return bad


# ---------------------------------------------------------------- a run
def run_soak(port: int, export: Path, server_pid: int, clients: int = 16,
             seconds: float = 30.0, seed: int = 1, echo=print) -> dict:
    """Run the workload against a running server; a report dict."""
    n = Nfs3.connect(port, cred=AuthSys(0, 0))
    root = n.mount(str(export))
    n.close()
    time.sleep(0.3)
    rss0, fd0 = rss_kb(server_pid), fd_count(server_pid)
    deadline = time.monotonic() + seconds
    cs = [Client(port, root, i, deadline, seed) for i in range(clients)]
    t0 = time.monotonic()
    for c in cs:
        c.start()
    samples = []
    while any(c.is_alive() for c in cs):
        time.sleep(1.0)
        samples.append((round(time.monotonic() - t0), rss_kb(server_pid), fd_count(server_pid)))
        if echo and len(samples) % 60 == 0:
            echo("soak: %4d s  ops %d  server RSS %d kB  fds %d" % (
                samples[-1][0], sum(sum(c.ops.values()) for c in cs), samples[-1][1],
                samples[-1][2]))
    for c in cs:
        c.join()
    elapsed = time.monotonic() - t0
    time.sleep(1.5)   # connections closed by the clients are gone from the server
    rss1, fd1 = rss_kb(server_pid), fd_count(server_pid)
    fd_peak = max([fd0] + [s[2] for s in samples])
    ops: dict = {}
    for c in cs:
        for k, v in c.ops.items():
            ops[k] = ops.get(k, 0) + v
    errors = [e for c in cs for e in c.errors]
    tree = [b for c in cs for b in c.check_disk(Path(export))]
    return {"clients": clients, "seconds": elapsed, "ops": ops, "total_ops": sum(ops.values()),
            "errors": errors, "tree_differences": tree, "rss_start_kb": rss0,
            "rss_end_kb": rss1, "fds_start": fd0, "fds_end": fd1, "fds_peak": fd_peak,
            "files": sum(len(c.names) for c in cs), "dirs": sum(len(c.dirs) for c in cs)}


def verdict(r: dict) -> list:
    """What is wrong with a report (empty: a pass)."""
    bad = []
    if r["errors"]:
        bad.append("%d client errors" % len(r["errors"]))
    if r["tree_differences"]:
        bad.append("%d differences between the tree and the models" % len(r["tree_differences"]))
    if r["rss_end_kb"] >= r["rss_start_kb"] + RSS_SLACK_KB:
        bad.append("server RSS grew from %d to %d kB" % (r["rss_start_kb"], r["rss_end_kb"]))
    if r["fds_end"] > r["fds_start"] + FD_SLACK:
        bad.append("server descriptors grew from %d to %d" % (r["fds_start"], r["fds_end"]))
    return bad


def describe(r: dict) -> str:
    lines = ["soak: %d clients, %.0f s, %d operations (%.0f/s), %d files and links, %d dirs"
             % (r["clients"], r["seconds"], r["total_ops"], r["total_ops"] / r["seconds"],
                r["files"], r["dirs"]),
             "  per procedure: " + ", ".join("%s %d" % kv for kv in sorted(r["ops"].items())),
             "  server RSS: %d kB at start, %d kB at end (%+d kB)"
             % (r["rss_start_kb"], r["rss_end_kb"], r["rss_end_kb"] - r["rss_start_kb"]),
             "  server open descriptors: %d at start, %d at end (peak %d)"
             % (r["fds_start"], r["fds_end"], r["fds_peak"]),
             "  errors: %d, tree differences: %d" % (len(r["errors"]), len(r["tree_differences"]))]
    lines += ["    " + e for e in (r["errors"] + r["tree_differences"])[:20]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=None, help="how long (default 10)")
    ap.add_argument("--seconds", type=float, default=None, help="how long, in seconds")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--virtfs", action="store_true", help="serve with --virtfs")
    ap.add_argument("--port", type=int, help="use a running server on this port ...")
    ap.add_argument("--export", help="... serving this directory (readable here) ...")
    ap.add_argument("--pid", type=int, help="... whose process id (parent) is this")
    ap.add_argument("--keep", action="store_true", help="keep the export directory")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes or 10)
    srv = tmp = None
    if args.port:
        if not (args.export and args.pid):
            ap.error("--port needs --export and --pid")
        port, export, pid = args.port, Path(args.export), args.pid
    else:
        import tempfile
        from conftest import FastnfsProcess
        tmp = Path(tempfile.mkdtemp(prefix="fastnfs-soak-"))
        export = tmp / "export"
        export.mkdir()
        extra = ["--workers", str(args.workers)] + (["--virtfs"] if args.virtfs else [])
        srv = FastnfsProcess(export, extra).start()
        port, pid = srv.port, srv.proc.pid
        print("soak: fastnfs pid %d on port %d serving %s (log %s)"
              % (pid, port, export, srv.log_path))
    try:
        r = run_soak(port, export, pid, args.clients, seconds, args.seed)
    finally:
        if srv is not None:
            srv.stop()
    print(describe(r))
    bad = verdict(r)
    if srv is not None and "Traceback" in srv.log():
        bad.append("the server logged a traceback (see %s)" % srv.log_path)
    print("soak: " + ("FAILED: " + "; ".join(bad) if bad else "passed"))
    if tmp is not None and not args.keep and not bad:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
