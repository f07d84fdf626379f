#!/usr/bin/env python3
"""fastnfs vs unfsd and nfs-ganesha: the same run, the same tree, the same client.

    python3 bench/run.py getattr   --unfsd /path/to/unfsd [--cpu 1]
    python3 bench/run.py getattr-all --unfsd /path/to/unfsd [--entries 10000,100000]
    python3 bench/run.py bootstorm --unfsd /path/to/unfsd [--clients 16,64]
    python3 bench/run.py stream    --unfsd /path/to/unfsd [--size 1G]
    python3 bench/run.py virtfs                            (fastnfs --virtfs vs fastnfs)
    python3 bench/run.py pseudo    --unfsd /path/to/unfsd  (serve --pseudo vs pseudo unfsd)
    python3 bench/run.py boards                            (a board per client vs the base)
    python3 bench/run.py memory    [--unfsd ...] --rounds 1 (RSS, 100,000-entry tree)
    python3 bench/run.py all       --unfsd /path/to/unfsd
    python3 bench/run.py all       --ganesha /usr/bin/ganesha.nfsd   (as root, rpcbind running)

Each workload starts the servers itself on free loopback ports, alternating
them (fastnfs, unfsd, ganesha, fastnfs, ...) for --rounds rounds, and prints a
markdown table of the medians with the ratios fastnfs/unfsd and fastnfs/ganesha.
Without --unfsd or --ganesha it measures fastnfs alone.  stream also measures
the loopback limit (a plain TCP stream with the READ's total size, send size and
pinning) each round and gives READ as a % of it.  The bootstorm, memory, virtfs
and boards workloads walk with bench/bootgen.c, stream and its loopback run
bench/streamgen.c (both compiled here into WORKDIR; --generator python, or no C
compiler, for the Python clients of loadgen.py).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "loadgen.py")
BOOTSTORM_WORKLOADS = ("bootstorm", "memory", "virtfs", "boards")   # the bootstorm client's
sys.path.insert(0, HERE)
import mktree  # noqa: E402
import loadgen as lg  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (both servers also bind UDP)."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise OSError("no free port")


def _stat(pid) -> list:
    with open("/proc/%s/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def tree_pids(root: int) -> list:
    """root and all its descendants (a server and its workers)."""
    kids: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(int(_stat(d)[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU time of root and its descendants (all threads), plus the children it reaped."""
    total = 0
    try:
        f = _stat(root)
        total += int(f[13]) + int(f[14])  # cutime + cstime: workers that already exited
    except OSError:
        pass
    for p in tree_pids(root):
        try:
            f = _stat(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / TICK


def tree_rss_mb(root: int, field: str = "VmRSS:", source: str = "status") -> float:
    """Resident memory (VmRSS, or another /proc status field such as VmHWM:, the peak;
    with source "smaps_rollup", Pss:) of root and all its descendants, in MB."""
    total = 0
    for p in tree_pids(root):
        try:
            with open("/proc/%d/%s" % (p, source)) as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def describe_fastnfs() -> str:
    """Which fastnfs is measured: the source tree's commit and whether it has changes."""
    try:
        import fastnfs
        src = os.path.dirname(os.path.dirname(os.path.abspath(fastnfs.__file__)))
        rev = subprocess.run(["git", "-C", src, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        return "fastnfs %s at %s (%s)" % (getattr(fastnfs, "__version__", "?"), rev or "?", src)
    except Exception as e:  # pragma: no cover - informational only
        return "fastnfs (%s)" % e


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def ganesha_config(tree: str, nfs_port: int, mnt_port: int) -> str:
    """nfs-ganesha's configuration for the benchmark: TREE exported read-write with FSAL
    VFS, NFSv3 over TCP only, on 127.0.0.1, NFS and MOUNT on the given ports; no NLM,
    no RQUOTA, no NFSv4 grace period; mount_path_pseudo = false so that a v3 MNT of
    the real path works."""
    return """# written by fastnfs bench/run.py
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = %(nfs)d;
    MNT_Port = %(mnt)d;
    Protocols = 3;
    Enable_UDP = false;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    mount_path_pseudo = false;
}
NFSV4 {
    Graceless = true;
}
EXPORT {
    Export_Id = 1;
    Path = "%(tree)s";
    Pseudo = "%(tree)s";
    Protocols = 3;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {
        Name = VFS;
    }
}
""" % dict(nfs=nfs_port, mnt=mnt_port, tree=tree)


def rpcbind_running() -> bool:
    """Whether something answers on 127.0.0.1:111 (nfs-ganesha registers there on start)."""
    try:
        socket.create_connection(("127.0.0.1", 111), timeout=0.5).close()
        return True
    except OSError:
        return False


class Server:
    """A server process on a free port: 'fastnfs', 'fastnfs-virtfs', 'unfsd' or 'ganesha'
    (nfs-ganesha, whose MOUNT has a port of its own: mount_port; the others serve MOUNT
    on the NFS port)."""

    def __init__(self, kind: str, tree: str, workdir: str, unfsd: str | None = None,
                 cpu: int | None = None, extra: list | None = None, ganesha: str | None = None,
                 pseudo_env: dict | None = None):
        self.kind = kind
        self.pseudo_env = pseudo_env
        self.tree = os.path.realpath(tree)
        self.port = free_port()
        self.mount_port = self.port
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.log = open(os.path.join(workdir, "%s-%d.log" % (kind, self.port)), "w+b")
        if kind == "ganesha":
            if not rpcbind_running():
                self.log.close()
                raise RuntimeError("ganesha: nothing listens on 127.0.0.1:111; nfs-ganesha "
                                   "needs rpcbind running when it starts (run rpcbind)")
            while self.mount_port == self.port:
                self.mount_port = free_port()
            conf = os.path.join(workdir, "ganesha-%d.conf" % self.port)
            with open(conf, "w") as f:
                f.write(ganesha_config(self.tree, self.port, self.mount_port))
            cmd = pin + [ganesha, "-F", "-L", self.log.name, "-N", "NIV_EVENT", "-f", conf,
                         "-p", os.path.join(workdir, "ganesha-%d.pid" % self.port)]
        elif kind in ("unfsd", "unfsd-pseudo"):
            exports = os.path.join(workdir, "exports-%d" % self.port)
            with open(exports, "w") as f:
                f.write("%s (rw,no_root_squash,insecure)\n" % self.tree)
            # unfsd-pseudo: under pseudo's preload, as runqemu-export-rootfs starts it
            cmd = pin + (["pseudo"] if kind == "unfsd-pseudo" else []) + [
                unfsd, "-e", exports, "-n", str(self.port), "-m", str(self.port),
                "-p", "-d", "-l", "127.0.0.1"]
        else:
            cmd = pin + [sys.executable, "-m", "fastnfs", "serve", self.tree, "-n", str(self.port),
                         "-p", "-d", "-l", "127.0.0.1"]
            if kind == "fastnfs-virtfs":
                cmd.append("--virtfs")
            elif kind == "fastnfs-pseudo":   # pseudo's files.db read directly, no pseudo
                cmd += ["--pseudo", pseudo_env["PSEUDO_LOCALSTATEDIR"]]
            elif kind in ("fastnfs-boards", "fastnfs-general"):   # fresh, empty layers
                # (fastnfs-general: the clients on the read-only base, which the fast
                # lane declines: the general path alone)
                self.boards = os.path.join(workdir, "boards-%d" % self.port)
                subprocess.run(["rm", "-rf", self.boards], check=True)
                cmd += ["--boards", self.boards]
            cmd += extra or []
        self.cmd = cmd
        env = dict(os.environ, **pseudo_env) if kind == "unfsd-pseudo" else None
        # unfsd-pseudo: pseudo runs unfsd as its child; stop() signals the whole group
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=kind == "unfsd-pseudo")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (self.kind, self.proc.returncode,
                                                               self.log_text()))
            if self.kind.startswith("fastnfs"):
                ok = b"ready:" in self._log_bytes()
            elif self.kind == "ganesha" and b"NFS SERVER INITIALIZED" not in self._log_bytes():
                ok = False
            else:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    ok = True
                except OSError:
                    ok = False
            if ok:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("%s did not become ready:\n%s" % (self.kind, self.log_text()))

    def _log_bytes(self) -> bytes:
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read()

    def log_text(self) -> str:
        return self._log_bytes().decode(errors="replace")[-3000:]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the server and every process below it (fastnfs --workers)."""
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.kind == "unfsd-pseudo":
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)   # pseudo and the unfsd below it
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.kind == "unfsd-pseudo":
            stop_pseudo(self.pseudo_env)
        self.log.close()
        if getattr(self, "boards", None):
            subprocess.run(["rm", "-rf", self.boards], check=False)


def stop_pseudo(env: dict) -> None:
    """`pseudo -S`, and wait until the pseudo server has saved files.db and exited
    (else it would hold the database locked for 30 s more, into the next round)."""
    from fastnfs.backends.pseudowriter import stop_server
    stop_server(env["PSEUDO_LOCALSTATEDIR"], env["PSEUDO_PREFIX"])


def loadgen(args: list, cpu: int | None = None, timeout: float = 600) -> dict:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    out = subprocess.run(pin + [sys.executable, LOADGEN] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("loadgen failed: %s" % out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadgen_parallel(arglists: list, cpu: int | None = None, timeout: float = 600) -> list:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    procs = [subprocess.Popen(pin + [sys.executable, LOADGEN] + [str(a) for a in args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in arglists]
    res = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("loadgen failed: %s" % err[-3000:])
        res.append(json.loads(out.strip().splitlines()[-1]))
    return res


def build_c(workdir: str, name: str) -> str | None:
    """WORKDIR/NAME compiled from bench/NAME.c (bootgen, streamgen; again if it or
    the client.h it includes is newer); None, after saying why on stderr, if it does
    not compile."""
    src = os.path.join(HERE, name + ".c")
    exe = os.path.join(workdir, name)
    newest = max(os.path.getmtime(src), os.path.getmtime(os.path.join(HERE, "client.h")))
    if os.path.exists(exe) and os.path.getmtime(exe) >= newest:
        return exe
    # built under another name, then renamed: a concurrent run never runs half a binary
    tmp = "%s.tmp-%d" % (exe, os.getpid())
    cmd = ["cc", "-O2", "-pthread", "-o", tmp, src]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
        ok = out.returncode == 0
        why = out.stderr.strip()[-2000:] or "exit status %d" % out.returncode
    except OSError as e:
        ok, why = False, str(e)
    if not ok:
        print("# %s failed, using the python generator: %s" % (" ".join(cmd), why),
              file=sys.stderr, flush=True)
        if os.path.exists(tmp):
            os.unlink(tmp)
        return None
    os.replace(tmp, exe)
    print("# compiled %s" % exe, file=sys.stderr, flush=True)
    return exe


def servers_for(a) -> list:
    """fastnfs first (the numerator of every ratio), then each peer asked for."""
    return ["fastnfs"] + (["unfsd"] if a.unfsd else []) + (["ganesha"] if a.ganesha else [])


def start(a, kind: str, tree: str, cpu: int | None) -> Server:
    return Server(kind, tree, a.workdir, a.unfsd, cpu=cpu, extra=a.fastnfs_arg, ganesha=a.ganesha,
                  pseudo_env=getattr(a, "pseudo_env", None))


# ---------------------------------------------------------------- workloads
def wl_getattr(a) -> list:
    """rows: (metric, {server: [values per round]})"""
    tree = ensure_tree(a)
    res: dict = {}
    for rnd in range(a.rounds):
        for kind in servers_for(a):
            s = start(a, kind, tree, a.cpu)
            try:
                c0 = s.cpu_seconds()
                r = loadgen(["getattr", "--port", s.port, "--mount-port", s.mount_port,
                             "--export", s.tree,
                             "--duration", a.duration], cpu=a.cpu)
                r["server_cpu_us_per_op"] = (s.cpu_seconds() - c0) / r["ops"] * 1e6
            finally:
                s.stop()
            log(a, "round %d %s: %.0f ops/s p50 %.1f us p99 %.1f us" % (
                rnd + 1, kind, r["ops_per_s"], r["p50_us"], r["p99_us"]))
            res.setdefault(kind, []).append(r)
    return [("GETATTR ops/s (1 outstanding)", "ops_per_s", res, True),
            ("GETATTR p50 latency (us)", "p50_us", res, False),
            ("GETATTR p99 latency (us)", "p99_us", res, False),
            ("server CPU per op (us)", "server_cpu_us_per_op", res, False),
            ("generator CPU per op (us)", "gen_cpu_us_per_op", res, False)]


def getattr_all_round(a, s: Server) -> dict:
    """One getattr-all measurement against the started server s (stopped after):
    loadgen collects every handle untimed, then GETATTRs them for --duration."""
    try:
        pin = ["taskset", "-c", str(a.cpu)] if a.cpu is not None else []
        p = subprocess.Popen(pin + [sys.executable, LOADGEN, "getattr-all", "--sync",
                                    "--port", str(s.port),
                                    "--mount-port", str(s.mount_port),
                                    "--export", s.tree,
                                    "--duration", str(a.duration),
                                    "--handles", str(a.handles)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            if p.stdout.readline().strip() != "collected":
                raise RuntimeError("loadgen failed: %s" % p.communicate()[1][-3000:])
            c0 = s.cpu_seconds()   # handles collected: the timed part starts
            p.stdin.write("go\n")
            p.stdin.flush()
            if p.stdout.readline().strip() != "timed":
                raise RuntimeError("loadgen failed: %s" % p.communicate()[1][-3000:])
            c1 = s.cpu_seconds()
            out, err = p.communicate("go\n", timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if p.returncode != 0:
            raise RuntimeError("loadgen failed: %s" % err[-3000:])
        r = json.loads(out.strip().splitlines()[-1])
        r["server_cpu_us_per_op"] = (c1 - c0) / r["ops"] * 1e6
        r["rss_mb"] = tree_rss_mb(s.pid)
    finally:
        s.stop()
    return r


def wl_getattr_all(a) -> list:
    """GETATTR over every handle of each tree (shuffled), one connection, one outstanding."""
    rows = []
    for entries in (a.entries if a.tree is None else a.entries[:1]):   # --tree: that one
        tree = ensure_tree(a, entries)
        res: dict = {}
        for rnd in range(a.rounds):
            for kind in servers_for(a):
                r = getattr_all_round(a, start(a, kind, tree, a.cpu))
                log(a, "round %d %s %d entries: %d handles (collected in %.1f s, %s), "
                       "%.0f ops/s (%.1f passes) p50 %.1f us p99 %.1f us, server %.1f us/op, "
                       "%d errors" % (rnd + 1, kind, entries, r["handles"], r["collect_s"],
                                      r["collect_calls"], r["ops_per_s"], r["passes"],
                                      r["p50_us"], r["p99_us"], r["server_cpu_us_per_op"],
                                      r["errors"]))
                res.setdefault(kind, []).append(r)
        t = "%d entries" % entries if a.tree is None else os.path.basename(tree)
        rows += [("%s: filehandles (GETATTR targets)" % t, "handles", res, None),
                 ("%s: GETATTR ops/s (1 outstanding)" % t, "ops_per_s", res, True),
                 ("%s: GETATTR p50 latency (us)" % t, "p50_us", res, False),
                 ("%s: GETATTR p99 latency (us)" % t, "p99_us", res, False),
                 ("%s: server CPU per op (us)" % t, "server_cpu_us_per_op", res, False),
                 ("%s: generator CPU per op (us)" % t, "gen_cpu_us_per_op", res, None),
                 ("%s: passes over all handles" % t, "passes", res, True),
                 ("%s: GETATTR errors" % t, "errors", res, False),
                 ("%s: handle collection, untimed (s)" % t, "collect_s", res, None)]
    return rows


PSEUDO_TREE_CODE = r'''
import os, stat, sys
sys.path.insert(0, sys.argv[1])
import mktree
root, entries = sys.argv[2], int(sys.argv[3])
n = mktree.make_tree(root, entries)
# every entry gets an owner, a group (and some a setuid mode) of its own in pseudo's database
i = 0
for d, dirs, files in os.walk(root):
    for name in dirs + files:
        p = os.path.join(d, name)
        i += 1
        os.lchown(p, i % 7, i % 5)
        if stat.S_ISREG(os.lstat(p).st_mode) and i % 11 == 0:
            os.chmod(p, 0o4755)
os.makedirs(os.path.join(root, "dev"), exist_ok=True)
for k in range(16):
    os.mknod(os.path.join(root, "dev", "tty%d" % k), stat.S_IFCHR | 0o620, os.makedev(4, k))
print(n + 16)
'''


def pseudo_tree(a) -> tuple:
    """WORKDIR/pseudo-tree (--entries, default 10,000) made under pseudo with its own
    PSEUDO_LOCALSTATEDIR, WORKDIR/pseudo-tree.pseudo_state: mktree's tree, every entry
    chown'ed (some chmod'ed setuid) through pseudo, 16 character devices made with
    mknod; made once, reused while its stamp holds.  (tree, pseudo's environment)."""
    entries = a.entries[0]
    tree = os.path.join(a.workdir, "pseudo-tree")
    state = tree + ".pseudo_state"
    env = {"PSEUDO_PREFIX": a.pseudo_prefix, "PSEUDO_LOCALSTATEDIR": state}
    stamp = os.path.join(state, "fastnfs-bench-done")
    if not (os.path.exists(stamp) and open(stamp).read() == "%d\n" % entries):
        if os.path.isdir(state):
            stop_pseudo(env)
        subprocess.run(["rm", "-rf", tree, state], check=True)
        os.makedirs(state)
        t0 = time.monotonic()
        r = subprocess.run(["pseudo", sys.executable, "-c", PSEUDO_TREE_CODE, HERE, tree,
                            str(entries)], env=dict(os.environ, **env), capture_output=True,
                           text=True)
        stop_pseudo(env)      # files.db saved before anyone reads it
        if r.returncode != 0:
            raise RuntimeError("making the tree under pseudo failed:\n" + r.stderr[-3000:])
        log(a, "tree %s: %s entries owned through pseudo (%.1f s)"
            % (tree, r.stdout.strip(), time.monotonic() - t0))
        with open(stamp, "w") as f:
            f.write("%d\n" % entries)
    warm_tree(a, tree)
    return os.path.realpath(tree), env


def pseudo_kinds(a) -> list:
    return ["fastnfs-pseudo"] + (["unfsd-pseudo"] if a.unfsd else [])


def wl_pseudo(a) -> list:
    """A Yocto rootfs owned through pseudo: GETATTR over every handle, fastnfs reading
    files.db directly (`serve --pseudo STATEDIR`, no pseudo running) against unfsd
    under pseudo's preload (`pseudo unfsd ...`, as runqemu starts it)."""
    tree, a.pseudo_env = pseudo_tree(a)
    res: dict = {}
    for rnd in range(a.rounds):
        for kind in pseudo_kinds(a):
            r = getattr_all_round(a, start(a, kind, tree, a.cpu))
            log(a, "round %d %s: %d handles, %.0f ops/s p50 %.1f us, server %.1f us/op, "
                   "%d errors" % (rnd + 1, kind, r["handles"], r["ops_per_s"], r["p50_us"],
                                  r["server_cpu_us_per_op"], r["errors"]))
            res.setdefault(kind, []).append(r)
    return [("filehandles (GETATTR targets)", "handles", res, None),
            ("GETATTR ops/s (1 outstanding)", "ops_per_s", res, True),
            ("GETATTR p50 latency (us)", "p50_us", res, False),
            ("GETATTR p99 latency (us)", "p99_us", res, False),
            ("server CPU per op (us)", "server_cpu_us_per_op", res, False),
            ("GETATTR errors", "errors", res, False)]


def wl_memory(a) -> list:
    """The whole server's memory after 16 clients walked every path of the large tree."""
    entries = a.entries[0]
    tree = ensure_tree(a, entries)
    nclients = a.clients[0]
    npaths = len(lg.tree_paths(tree))
    per_client = -(-npaths // nclients)
    res: dict = {}
    for rnd in range(a.rounds):
        for kind in servers_for(a):
            r = one_bootstorm(a, kind, tree, nclients, per_client)
            log(a, "round %d %s %d clients over %d paths: RSS %.1f MB at start, %.1f MB at the "
                   "end, peak %.1f MB; %.0f walks/s, %.1f s" % (
                       rnd + 1, kind, nclients, npaths, r["rss_start_mb"], r["rss_mb"],
                       r["hwm_mb"], r["walks_per_s"], r["seconds"]))
            res.setdefault(kind, []).append(r)
    t = "%d entries, %d clients" % (entries, nclients)
    return [("%s: paths walked" % t, "walks", res, None),
            ("%s: server RSS when ready (MB)" % t, "rss_start_mb", res, False),
            ("%s: server RSS at the end (MB)" % t, "rss_mb", res, False),
            ("%s: server peak RSS, sum of VmHWM (MB)" % t, "hwm_mb", res, False),
            ("%s: server PSS at the end (MB)" % t, "pss_mb", res, False),
            ("%s: walks/s" % t, "walks_per_s", res, True),
            ("%s: calls per walk" % t, "calls_per_walk", res, False),
            ("%s: time for all clients (s)" % t, "seconds", res, False),
            ("%s: server CPU per walk (us)" % t, "server_cpu_us_per_walk", res, False)]


def storm_rounds(a, tree: str, nclients: int, kinds) -> dict:
    """--rounds boot storms of nclients against each kind of server, alternating:
    {kind: [result per round]}."""
    per_client = max(1, a.paths_total // nclients)
    res: dict = {}
    for rnd in range(a.rounds):
        for kind in kinds:
            r = one_bootstorm(a, kind, tree, nclients, per_client)
            log(a, "round %d %s %d clients: %.0f ops/s, %.0f walks/s (%.2f calls/walk), "
                   "p99 %.1f ms, all done in %.2f s, "
                   "server CPU %.0f%%, generator CPU %.1f us/op" % (
                       rnd + 1, kind, nclients, r["ops_per_s"], r["walks_per_s"],
                       r["calls_per_walk"], r["p99_us"] / 1000,
                       r["seconds"], r["server_cpu_pct"], r["gen_cpu_us_per_op"]))
            res.setdefault(kind, []).append(r)
    return res


def wl_bootstorm(a) -> list:
    tree = ensure_tree(a)
    rows = []
    for nclients in a.clients:
        res = storm_rounds(a, tree, nclients, servers_for(a))
        t = "%d clients" % nclients
        rows += [("%s: ops/s" % t, "ops_per_s", res, True),
                 ("%s: completed walks/s" % t, "walks_per_s", res, True),
                 ("%s: calls per walk" % t, "calls_per_walk", res, False),
                 ("%s: server CPU per walk (us)" % t, "server_cpu_us_per_walk", res, False),
                 ("%s: p99 latency (ms)" % t, "p99_ms", res, False),
                 ("%s: time for all clients (s)" % t, "seconds", res, False),
                 ("%s: server CPU (%% of a core)" % t, "server_cpu_pct", res, None),
                 ("%s: server CPU per op (us)" % t, "server_cpu_us_per_op", res, False),
                 ("%s: generator CPU per op (us)" % t, "gen_cpu_us_per_op", res, None),
                 ("%s: server RSS after the storm (MB)" % t, "rss_mb", res, False),
                 ("%s: server PSS after the storm (MB)" % t, "pss_mb", res, False)]
    return rows


def one_bootstorm(a, kind, tree, nclients, per_client) -> dict:
    s = start(a, kind, tree, a.server_cpu)
    spies = []      # py-spy, perf: recording the server during the storm
    result = {"rss_start_mb": tree_rss_mb(s.pid)}   # ready, idle
    try:
        procs = min(a.procs, nclients)
        # every generator's setup must be done by then, or the walk time counts the
        # skew between them: with fastnfs-boards each client's MNT makes a fresh
        # board (a layer: 8-60 ms on a loaded machine), which overran 0.02 s each
        start_at = time.time() + 1.0 + (0.1 if kind == "fastnfs-boards" else 0.02) * nclients
        lat_files = []
        arglists = []
        for i in range(procs):
            first = nclients * i // procs
            count = nclients * (i + 1) // procs - first
            lf = os.path.join(a.workdir, "lat-%d-%d.bin" % (s.port, i))
            lat_files.append(lf)
            arglists.append(["bootstorm", "--port", s.port, "--mount-port", s.mount_port,
                             "--export", s.tree, "--tree", s.tree,
                             "--clients", nclients, "--first", first, "--count", count,
                             "--per-client", per_client, "--rsize", a.rsize,
                             "--start-at", start_at, "--lat-out", lf]
                            + (["--boards"] if kind == "fastnfs-boards" else [])
                            + (["--engine", "c", "--bootgen", a.bootgen]
                               if a.bootgen else []))
        if a.py_spy and kind.startswith("fastnfs"):
            out = os.path.join(a.workdir, "py-spy-%s-%d.%s" % (
                kind, nclients, "txt" if a.py_spy_format == "raw" else "svg"))
            spies.append(subprocess.Popen(["py-spy", "record", "--pid", str(s.pid), "-o", out,
                                    "--format", a.py_spy_format, "--rate", "250", "--nonblocking", "--subprocesses"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            log(a, "py-spy recording %s to %s" % (kind, out))
        if a.perf and kind.startswith("fastnfs"):
            out = os.path.join(a.workdir, "perf-%s-%d.data" % (kind, nclients))
            spies.append(subprocess.Popen(
                ["perf", "record", "-q", "-g", "-F", "2000", "-o", out, "-p",
                 ",".join(map(str, tree_pids(s.pid)))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            log(a, "perf recording %s to %s (perf report -i %s)" % (kind, out, out))
        cpu = {}

        def sample_cpu():  # server CPU over exactly the measured interval
            time.sleep(max(0.0, start_at - time.time()))
            cpu["0"] = s.cpu_seconds()
        th = threading.Thread(target=sample_cpu)
        th.start()
        parts = loadgen_parallel(arglists, cpu=a.client_cpu)
        cpu1 = s.cpu_seconds()
        th.join()
        result["rss_mb"] = tree_rss_mb(s.pid)  # after every client walked the tree
        result["hwm_mb"] = tree_rss_mb(s.pid, "VmHWM:")  # sum of each process's peak
        # pages shared by the processes (forked workers, libraries) counted once
        result["pss_mb"] = tree_rss_mb(s.pid, "Pss:", "smaps_rollup")
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        s.stop()
    lat = array("q")
    for lf in lat_files:
        with open(lf, "rb") as f:
            lat.frombytes(f.read())
        os.unlink(lf)
    lat = sorted(lat)
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    ops = sum(p["ops"] for p in parts)
    gen_cpu = sum(p["gen_cpu_s"] for p in parts)
    stats: dict = {}
    for p in parts:
        for k, v in p["stats"].items():
            stats[k] = stats.get(k, 0) + v
    walks = stats.get("walks", 0)   # paths visited completely (one walk each)
    result.update(ops=ops, seconds=wall, ops_per_s=ops / wall,
                  walks=walks, walks_per_s=walks / wall, calls_per_walk=ops / max(walks, 1),
                  server_cpu_us_per_walk=(cpu1 - cpu["0"]) / max(walks, 1) * 1e6,
                  p50_us=lat[len(lat) // 2] / 1000, p99_us=lat[int(len(lat) * 0.99)] / 1000,
                  p99_ms=lat[int(len(lat) * 0.99)] / 1e6,
                  server_cpu_pct=(cpu1 - cpu["0"]) / wall * 100,
                  server_cpu_us_per_op=(cpu1 - cpu["0"]) / ops * 1e6,
                  gen_cpu_us_per_op=gen_cpu / ops * 1e6, gen_procs=len(parts), stats=stats)
    return result


def loopback(a, io: int, path: str | None = None) -> dict:
    """The loopback limit of a READ stream: a plain TCP stream over 127.0.0.1 of --size
    bytes written in io-sized sends by one process (pinned like the server,
    --server-cpu) and read by another (pinned like the load generator, --client-cpu)
    with recv into an io-sized buffer: `streamgen loopback-send` and `streamgen
    loopback` (the C stream client, a.streamgen), else loadgen.py's two ends in Python.
    No RPC, no file: what the kernel's loopback TCP moves between two processes with
    the READ's sizes.  With path (streamgen only), the sender sendfile()s that file
    instead, as a READ answered from the page cache is sent."""
    port = free_port()
    exe = getattr(a, "streamgen", None)

    def end(mode: str, cpu: int | None) -> list:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        if exe:
            return pin + [exe, mode, "127.0.0.1", str(port), str(a.size), str(io)] + (
                [path] if path and mode == "loopback-send" else [])
        return pin + [sys.executable, LOADGEN, mode, "--port", str(port), "--size",
                      str(a.size), "--io", str(io)]

    sender = subprocess.Popen(end("loopback-send", a.server_cpu),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if sender.stdout.readline().strip() != "listening":
            raise RuntimeError("loopback sender failed: %s" % sender.communicate()[1][-3000:])
        out = subprocess.run(end("loopback", a.client_cpu), capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise RuntimeError("loopback receiver failed: %s" % out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        out, err = sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    if sender.returncode != 0:
        raise RuntimeError("loopback sender failed: %s" % err[-3000:])
    r["send_cpu_s"] = json.loads(out.strip().splitlines()[-1])["send_cpu_s"]
    if r["bytes"] != a.size:
        raise RuntimeError("loopback: %d of %d bytes received" % (r["bytes"], a.size))
    return r


def fresh_file(path: str) -> None:
    """Empty the file WRITE goes to, right before it: the page cache it held is freed
    just then and every server writes into memory as warm.  (On this VM memory the
    guest frees is handed back to the host within ~1.5 s, and writing into it again
    costs ~10x the CPU: emptied before the server starts, the write of a server slower
    to start landed in cold memory more often; see README.md, stream.)"""
    with open(path, "wb"):
        pass
    os.sync()


def cached_file(path: str, size: int) -> None:
    """path holds size bytes (written once), every page of them in the page cache:
    read through right before use, since the kernel may have evicted some meanwhile
    (on this VM DAMON reclaims cold pages: a few 1 MiB ranges of a file read
    seconds earlier were found evicted, and READs of them went to the disk)."""
    if not os.path.exists(path) or os.path.getsize(path) != size:
        chunk = os.urandom(1 << 20)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                f.write(chunk[:min(left, len(chunk))])
                left -= len(chunk)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while f.readinto(buf):
            pass


def wl_stream(a) -> list:
    d = os.path.join(a.workdir, "stream")
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "read.bin")
    dst = os.path.join(d, "write.bin")
    engine = ["--engine", "c", "--streamgen", a.streamgen] if a.streamgen else []
    res: dict = {}
    for rnd in range(a.rounds):
        for kind in servers_for(a):
            s = start(a, kind, d, a.server_cpu)
            try:
                cached_file(src, a.size)
                c0 = s.cpu_seconds()
                r = loadgen(["stream", "--mode", "read", "--port", s.port,
                             "--mount-port", s.mount_port, "--export", s.tree,
                             "--path", "read.bin", "--size", a.size, "--depth", a.depth]
                            + engine, cpu=a.client_cpu)
                c1 = s.cpu_seconds()
                # the loopback limit at this READ's size, in the same round, right after
                # it (the server is idle meanwhile)
                lo = loopback(a, r["io_size"])
                lf = loopback(a, r["io_size"], src) if a.streamgen else None
                if a.write_over:
                    cached_file(dst, a.size)
                else:
                    fresh_file(dst)
                w = loadgen(["stream", "--mode", "write", "--port", s.port,
                             "--mount-port", s.mount_port, "--export", s.tree,
                             "--path", "write.bin", "--size", a.size, "--depth", a.depth]
                            + engine, cpu=a.client_cpu)
                c2 = s.cpu_seconds()
            finally:
                s.stop()
            row = dict(read_mb_s=r["mb_per_s"], write_mb_s=w["mb_per_s"], commit_s=w["commit_s"],
                       read_io=r["io_size"], write_io=w["io_size"],
                       read_srv_cpu_s_per_gb=(c1 - c0) / (r["bytes"] / 1e9),
                       write_srv_cpu_s_per_gb=(c2 - c1) / (w["bytes"] / 1e9),
                       read_gen_cpu_s_per_gb=r["gen_cpu_s"] / (r["bytes"] / 1e9),
                       write_gen_cpu_s_per_gb=w["gen_cpu_s"] / (w["bytes"] / 1e9),
                       errors=r["errors"] + w["errors"],
                       loop_mb_s=lo["mb_per_s"],
                       loop_send_cpu_s_per_gb=lo["send_cpu_s"] / (lo["bytes"] / 1e9),
                       loop_recv_cpu_s_per_gb=lo["gen_cpu_s"] / (lo["bytes"] / 1e9),
                       read_pct_loopback=r["mb_per_s"] / lo["mb_per_s"] * 100)
            if lf:
                row.update(loopf_mb_s=lf["mb_per_s"],
                           loopf_recv_cpu_s_per_gb=lf["gen_cpu_s"] / (lf["bytes"] / 1e9),
                           read_pct_loopf=r["mb_per_s"] / lf["mb_per_s"] * 100)
            log(a, "round %d %s: read %.0f MB/s (%d KiB I/O, %.0f %% of loopback %.0f MB/s), "
                   "write %.0f MB/s (%d KiB I/O) + COMMIT %.2f s" % (
                       rnd + 1, kind, row["read_mb_s"], r["io_size"] >> 10,
                       row["read_pct_loopback"], row["loop_mb_s"], row["write_mb_s"],
                       w["io_size"] >> 10, row["commit_s"]))
            res.setdefault(kind, []).append(row)
    os.unlink(dst)
    mib = a.size >> 20
    by_file = [("loopback by sendfile of the read file (MB/s)", "loopf_mb_s", res, None),
               ("READ: % of the sendfile loopback", "read_pct_loopf", res, True)]
    return [("READ %d MiB sequential (MB/s)" % mib, "read_mb_s", res, True),
            ("loopback TCP, %d MiB in READ-sized sends (MB/s)" % mib, "loop_mb_s", res, None),
            ("READ: % of loopback", "read_pct_loopback", res, True)] + (
                by_file if a.streamgen else []) + [
            ("WRITE %d MiB sequential, UNSTABLE (MB/s)" % mib, "write_mb_s", res, True),
            ("final COMMIT (s)", "commit_s", res, False),
            ("READ size used (KiB)", "read_io", res, None),
            ("WRITE size used (KiB)", "write_io", res, None),
            ("server CPU s per GB read", "read_srv_cpu_s_per_gb", res, False),
            ("server CPU s per GB written", "write_srv_cpu_s_per_gb", res, False),
            ("generator CPU s per GB read", "read_gen_cpu_s_per_gb", res, None),
            ("loopback: sender CPU s per GB", "loop_send_cpu_s_per_gb", res, None),
            ("loopback: receiver CPU s per GB", "loop_recv_cpu_s_per_gb", res, None)] + ([
            ("sendfile loopback: receiver CPU s per GB", "loopf_recv_cpu_s_per_gb", res, None)]
                if a.streamgen else [])


def virtfs_tree(a, tree: str) -> str:
    """The same tree as a virtfs tree: made once with `fastnfs virtfs import` (as root,
    the real owners and modes become metadata), cached beside the plain one."""
    vtree = tree.rstrip("/") + "-virtfs"
    if not os.path.isdir(os.path.join(vtree, ".fastnfs-bench-done")):
        subprocess.run(["rm", "-rf", vtree], check=True)
        subprocess.run([sys.executable, "-m", "fastnfs", "virtfs", "import", "--quiet",
                        tree, vtree], check=True)
        os.mkdir(os.path.join(vtree, ".fastnfs-bench-done"))
    warm_tree(a, vtree)
    return vtree


def wl_virtfs(a) -> list:
    """fastnfs --virtfs on a virtfs copy of the tree against plain fastnfs on the tree."""
    tree = ensure_tree(a)
    vtree = virtfs_tree(a, tree)
    per_client = max(1, a.paths_total // a.clients[0])
    res: dict = {}
    for rnd in range(a.rounds):
        for kind in ("fastnfs", "fastnfs-virtfs"):
            try:
                r = one_bootstorm(a, kind, vtree if kind == "fastnfs-virtfs" else tree,
                                  a.clients[0], per_client)
            except RuntimeError as e:
                log(a, "%s failed: %s" % (kind, str(e).splitlines()[0]))
                return []
            log(a, "round %d %s: %.0f ops/s p99 %.1f ms" % (rnd + 1, kind, r["ops_per_s"],
                                                            r["p99_us"] / 1000))
            res.setdefault(kind, []).append(r)
    n = a.clients[0]
    return [("%d clients: ops/s" % n, "ops_per_s", res, True),
            ("%d clients: p99 latency (ms)" % n, "p99_ms", res, False),
            ("%d clients: server CPU per op (us)" % n, "server_cpu_us_per_op", res, False)]


BOARDS_KINDS = ("fastnfs-boards", "fastnfs", "fastnfs-general")


def wl_boards(a) -> list:
    """The bootstorm with each client on its own board (fastnfs --boards, client i
    mounts TREE@b<i>, every layer fresh and empty) against every client on the
    tree itself (plain fastnfs), and on the read-only base of a --boards server
    (the general path alone), alternating, in one run."""
    tree = ensure_tree(a)
    rows = []
    for nclients in a.clients:
        res = storm_rounds(a, tree, nclients, BOARDS_KINDS)
        t = "%d clients" % nclients
        rows += [("%s: time for all clients (s)" % t, "seconds", res, False),
                 ("%s: server CPU per walk (us)" % t, "server_cpu_us_per_walk", res, False),
                 ("%s: p99 latency (ms)" % t, "p99_ms", res, False),
                 ("%s: completed walks/s" % t, "walks_per_s", res, True),
                 ("%s: calls per walk" % t, "calls_per_walk", res, False)]
    return rows


# ---------------------------------------------------------------- output
def ensure_tree(a, entries: int | None = None) -> str:
    """--tree if given, else WORKDIR/tree (10,000 entries) or WORKDIR/tree-N, made once
    by mktree.py and reused by later runs (mktree checks its stamp file)."""
    if a.tree is not None:
        return os.path.realpath(a.tree)
    entries = entries or a.entries[0]
    path = os.path.join(a.workdir, "tree" if entries == 10000 else "tree-%d" % entries)
    t0 = time.monotonic()
    n = mktree.make_tree(path, entries)
    log(a, "tree %s: %d entries (%.1f s)" % (path, n, time.monotonic() - t0))
    warm_tree(a, path)
    return os.path.realpath(path)


def warm_tree(a, path: str) -> None:
    """Read every file of a tree once, so that a tree made by an earlier run is in
    the page cache like a tree just written: servers compared on the same tree, or
    fastnfs on a tree and its virtfs copy, must not meet different cache states."""
    t0 = time.monotonic()
    nbytes = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                # O_NOFOLLOW: the tree's absolute symlinks (to /bin/busybox) point
                # outside it; reading through them read a host file 857 times
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
                with open(fd, "rb", buffering=0) as f:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        nbytes += len(chunk)
            except OSError:
                pass
    log(a, "tree %s read into the page cache: %d MB (%.1f s)"
        % (path, nbytes >> 20, time.monotonic() - t0))


def log(a, msg: str) -> None:
    print("# " + msg, file=sys.stderr, flush=True)


def fmt(v) -> str:
    if v is None:
        return "-"
    if float(v).is_integer():
        return "%d" % v
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def table(title: str, rows: list, kinds: list, io_kib: bool = False) -> str:
    """One column per server (medians), then the first server's ratio to each other one:
    | title | fastnfs | unfsd | fastnfs/unfsd |, or with two peers
    | title | fastnfs | unfsd | ganesha | fastnfs/unfsd | fastnfs/ganesha |."""
    a, others = kinds[0], kinds[1:]
    head = "| %s | %s |" % (title, " | ".join(kinds))
    if others:
        head += " %s |" % " | ".join("%s/%s" % (a, b) for b in others)
    out = [head, "|---|" + "---:|" * (len(kinds) + len(others))]
    for label, key, res, _higher_better in rows:
        def med(k):
            vals = [r[key] for r in res.get(k, [])]
            if not vals:
                return None
            m = statistics.median(vals)
            return m / 1024 if key in ("read_io", "write_io") else m
        meds = [med(k) for k in kinds]
        line = "| %s | %s |" % (label, " | ".join(fmt(v) for v in meds))
        if others:
            va = meds[0]
            line += " %s |" % " | ".join("%.2f" % (va / vb) if va is not None and vb else "-"
                                         for vb in meds[1:])
        out.append(line)
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("workload", choices=["getattr", "getattr-all", "bootstorm", "stream", "virtfs",
                                         "pseudo", "boards", "memory", "all"])
    ap.add_argument("--unfsd", metavar="PATH", help="unfsd binary to compare with")
    ap.add_argument("--ganesha", metavar="PATH",
                    help="ganesha.nfsd binary to compare with (FSAL VFS; run as root, needs "
                         "rpcbind running; run.py writes its config: see bench/README.md)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server (default 3)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fastnfs-bench"),
                    help="where the tree, logs and stream files go (default /tmp/fastnfs-bench)")
    ap.add_argument("--tree", help="exported tree (default: WORKDIR/tree made by mktree.py)")
    ap.add_argument("--entries", default=None,
                    help="entries of the generated tree(s), comma-separated; getattr-all "
                         "measures each (default 10000,100000), memory and the others use "
                         "the first (default 100000 for memory, else 10000)")
    ap.add_argument("--cpu", type=int, default=1,
                    help="getattr: the one CPU both server and client are pinned to (default 1)")
    ap.add_argument("--server-cpu", type=int, default=None,
                    help="bootstorm/stream: pin the server to this CPU (default: not pinned)")
    ap.add_argument("--client-cpu", type=int, default=None,
                    help="bootstorm/stream: pin the load generator to this CPU")
    ap.add_argument("--duration", type=float, default=4.0, help="getattr: seconds per round")
    ap.add_argument("--handles", type=int, default=0,
                    help="getattr-all: GETATTR only N of the handles (a control; default all)")
    ap.add_argument("--clients", default=None,
                    help="bootstorm: client counts (default 16,64; boards: 16)")
    ap.add_argument("--paths-total", type=int, default=4800,
                    help="bootstorm: paths visited by all clients together (default 4800)")
    ap.add_argument("--procs", type=int, default=2,
                    help="bootstorm: load generator processes (default 2)")
    ap.add_argument("--rsize", type=int, default=65536,
                    help="bootstorm: READ size, capped by the server's rtmax (default 64 KiB)")
    ap.add_argument("--size", type=parse_size, default=256 << 20,
                    help="stream: file size (default 256M; 1G for the full test)")
    ap.add_argument("--depth", type=int, default=4, help="stream: outstanding requests (default 4)")
    ap.add_argument("--write-over", action="store_true",
                    help="stream: WRITE over a file of --size already in the page cache, "
                         "not into a freshly emptied one (the server's own cost, without "
                         "this VM's cost of newly allocated page-cache memory)")
    ap.add_argument("--pseudo-prefix", default="/usr",
                    help="pseudo: PSEUDO_PREFIX, where pseudo's lib/ and bin/ are (default "
                         "/usr, Debian's pseudo; Yocto: $OECORE_NATIVE_SYSROOT/usr)")
    ap.add_argument("--fastnfs-arg", action="append", default=[],
                    help="extra argument for fastnfs serve (repeatable)")
    ap.add_argument("--py-spy", action="store_true",
                    help="bootstorm: record fastnfs with py-spy into WORKDIR")
    ap.add_argument("--perf", action="store_true",
                    help="bootstorm, virtfs, boards: record fastnfs (all its processes) with "
                         "perf record -g into WORKDIR/perf-KIND-CLIENTS.data")
    ap.add_argument("--py-spy-format", default="flamegraph", choices=["flamegraph", "raw",
                                                                      "speedscope"])
    ap.add_argument("--generator", choices=["c", "python"], default="c",
                    help="clients of bootstorm/memory/virtfs/boards (bench/bootgen.c) and "
                         "of stream and its loopback (bench/streamgen.c), compiled into "
                         "WORKDIR (default), or the Python clients of loadgen.py")
    ap.add_argument("--json", metavar="FILE", help="also write every round's figures here")
    a = ap.parse_args(argv)
    a.clients = [int(c) for c in (a.clients or ("16" if a.workload == "boards"
                                                 else "16,64")).split(",")]
    if a.entries is None:
        a.entries = {"getattr-all": "10000,100000", "memory": "100000"}.get(a.workload, "10000")
    a.entries = [int(e) for e in a.entries.split(",")]
    os.makedirs(a.workdir, exist_ok=True)
    if a.unfsd:
        a.unfsd = os.path.abspath(a.unfsd)
    if a.ganesha and os.sep in a.ganesha:
        a.ganesha = os.path.abspath(a.ganesha)   # else a name looked up in PATH
    todo = ["getattr", "bootstorm", "stream"] if a.workload == "all" else [a.workload]
    a.bootgen = a.streamgen = None
    if a.generator == "c":
        if any(w in BOOTSTORM_WORKLOADS for w in todo):
            a.bootgen = build_c(a.workdir, "bootgen")
        if "stream" in todo:
            a.streamgen = build_c(a.workdir, "streamgen")
    gen = ", ".join(["bootgen (C, %s) for the bootstorm" % a.bootgen] * bool(a.bootgen)
                    + ["streamgen (C, %s) for stream and its loopback" % a.streamgen]
                    * bool(a.streamgen)
                    + ["loadgen.py (python)%s" % (" for the rest" if a.bootgen or a.streamgen
                                                  else "")])
    print("<!-- %s; unfsd %s;%s %d CPUs; fastnfs extra args %s; generator %s -->" % (
        describe_fastnfs(), a.unfsd or "not measured",
        " ganesha %s;" % a.ganesha if a.ganesha else "", os.cpu_count(),
        a.fastnfs_arg or "none", gen))
    allres = {}
    for w in todo:
        t0 = time.monotonic()
        rows = {"getattr": wl_getattr, "getattr-all": wl_getattr_all,
                "bootstorm": wl_bootstorm, "stream": wl_stream, "virtfs": wl_virtfs,
                "pseudo": wl_pseudo, "boards": wl_boards, "memory": wl_memory}[w](a)
        kinds = {"virtfs": ["fastnfs-virtfs", "fastnfs"], "pseudo": pseudo_kinds(a),
                 "boards": list(BOARDS_KINDS)}.get(w) or servers_for(a)
        print()
        print("### %s (median of %d rounds, %.0f s)" % (w, a.rounds, time.monotonic() - t0))
        print()
        print(table(w, rows, kinds) if rows else "(no result)")
        sys.stdout.flush()
        allres[w] = {label: {k: [r[key] for r in res.get(k, [])] for k in kinds}
                     for label, key, res, _h in rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(allres, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
