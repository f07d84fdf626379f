"""What the server is doing: per-procedure counts, errors, latency, bytes, caches.

Each process (the only one, or each worker) keeps its own counters and writes a
JSON snapshot every second into the stats directory of its port; `fastnfs
stats` and the Prometheus endpoint read and add up those snapshots, so workers
share nothing at run time and a dead worker's figures simply stop.
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_left

from .refusals import Refusals

# latency histogram bucket upper bounds, in seconds (Prometheus "le")
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0)
BUCKETS_NS = tuple(int(b * 1e9) for b in BUCKETS)

PROC_NAMES = {
    100003: ("nfs", ["NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ",
                     "WRITE", "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR",
                     "RENAME", "LINK", "READDIR", "READDIRPLUS", "FSSTAT", "FSINFO", "PATHCONF",
                     "COMMIT"]),
    100005: ("mount", ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"]),
}
MAX_CLIENTS = 1024  # per-client rows kept; beyond that, "other"


def stats_dir(port: int) -> str:
    base = os.environ.get("FASTNFS_STATS_DIR")
    if not base:
        # tempfile.gettempdir()'s first choices, without loading tempfile (and
        # shutil, random, bz2, lzma) into every server process
        run = (os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR")
               or os.environ.get("TEMP") or os.environ.get("TMP") or "/tmp")
        base = os.path.join(run, "fastnfs-%d" % os.getuid())
    return os.path.join(base, "port-%d" % port)


def proc_name(prog: int, proc: int) -> str:
    p = PROC_NAMES.get(prog)
    if p is None or proc >= len(p[1]):
        return "%d.%d" % (prog, proc)
    return "%s.%s" % (p[0], p[1][proc])


class Stats:
    """Counters of one process."""

    def __init__(self):
        self.procs: dict = {}    # name -> [calls, errors, sum_ns, [bucket counts...]]
        self.clients: dict = {}  # host -> [calls, bytes_in, bytes_out]
        self.bytes_read = 0
        self.bytes_written = 0
        self.connections = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.rpc_rejects = 0
        self.refusals = Refusals()  # refused calls by reason, and their rate-limited log lines
        self.fast_answered = 0   # calls the Cython fast lane answered
        self.fast_declined = 0   # calls it handed to the general path
        self.caches: dict = {}   # name -> callable returning (hits, misses, size)
        self.flushers: list = []  # callables adding counts kept elsewhere (the fast lane)
        self.started = time.time()

    def call(self, prog: int, proc: int, ok: bool, ns: int, host, nin: int, nout: int) -> None:
        row = self.proc_row(prog, proc)
        row[0] += 1
        if not ok:
            row[1] += 1
        row[2] += ns
        row[3][bisect_left(BUCKETS_NS, ns)] += 1
        c = self.client_row(host)
        c[0] += 1
        c[1] += nin
        c[2] += nout

    def proc_row(self, prog: int, proc: int) -> list:
        """[calls, errors, sum_ns, [bucket counts...]] of one procedure."""
        key = (prog, proc)
        row = self.procs.get(key)
        if row is None:
            row = self.procs[key] = [0, 0, 0, [0] * (len(BUCKETS) + 1)]
        return row

    def client_row(self, host) -> list:
        """[calls, bytes_in, bytes_out] of one client host (past MAX_CLIENTS: "other")."""
        c = self.clients.get(host)
        if c is None:
            if len(self.clients) >= MAX_CLIENTS:
                host = "other"
                c = self.clients.get(host)
            if c is None:
                c = self.clients[host] = [0, 0, 0]
        return c

    def flush(self) -> None:
        """Bring in the counts kept elsewhere (the fast lane counts in C)."""
        for f in self.flushers:
            f(self)

    def snapshot(self) -> dict:
        self.flush()
        caches = {}
        for name, fn in self.caches.items():
            try:
                hits, misses, size = fn()
            except Exception:  # a cache that went away with a reload
                continue
            caches[name] = {"hits": hits, "misses": misses, "size": size}
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "started": self.started,
            "procs": {proc_name(*k): {"calls": v[0], "errors": v[1], "seconds": v[2] / 1e9,
                                      "buckets": v[3]} for k, v in self.procs.items()},
            "clients": {h: {"calls": v[0], "bytes_in": v[1], "bytes_out": v[2]}
                        for h, v in self.clients.items()},
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "connections": self.connections,
            "connections_total": self.connections_total,
            "connections_refused": self.connections_refused,
            "rpc_rejects": self.rpc_rejects,
            "refused": dict(self.refusals.counts),
            "fast_lane": {"answered": self.fast_answered, "declined": self.fast_declined},
            "caches": caches,
        }

    def dump(self, directory: str) -> None:
        _private_dir(os.path.dirname(directory))
        _private_dir(directory)
        path = os.path.join(directory, "worker-%d.json" % os.getpid())
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f)
        os.replace(tmp, path)

    @staticmethod
    def remove(directory: str) -> None:
        try:
            os.unlink(os.path.join(directory, "worker-%d.json" % os.getpid()))
        except OSError:
            pass
        try:
            os.rmdir(directory)  # the last process of this port leaves nothing behind
        except OSError:
            pass


def _private_dir(path: str) -> None:
    """Make or accept a directory only this user can use; refuse one planted in a
    shared /tmp by someone else (or a symlink), where the snapshots would go astray."""
    import stat as S
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not S.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(1, "statistics directory is not this user's", path)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(directory: str) -> dict | None:
    """The sum of the snapshots of every live process serving a port."""
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    total = None
    for n in names:
        if not (n.startswith("worker-") and n.endswith(".json")):
            continue
        try:
            with open(os.path.join(directory, n)) as f:
                snap = json.load(f)
        except (OSError, ValueError):
            continue
        if not _alive(snap.get("pid", 0)):
            continue
        total = snap if total is None else _add(total, snap)
    return total


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k in ("bytes_read", "bytes_written", "connections", "connections_total",
              "connections_refused", "rpc_rejects"):
        out[k] = a.get(k, 0) + b.get(k, 0)
    procs = {k: dict(v) for k, v in a["procs"].items()}
    for k, v in b["procs"].items():
        if k in procs:
            p = procs[k]
            p["calls"] += v["calls"]
            p["errors"] += v["errors"]
            p["seconds"] += v["seconds"]
            p["buckets"] = [x + y for x, y in zip(p["buckets"], v["buckets"])]
        else:
            procs[k] = dict(v)
    out["procs"] = procs
    clients = {k: dict(v) for k, v in a["clients"].items()}
    for k, v in b["clients"].items():
        c = clients.setdefault(k, {"calls": 0, "bytes_in": 0, "bytes_out": 0})
        for f in ("calls", "bytes_in", "bytes_out"):
            c[f] += v[f]
    out["clients"] = clients
    caches = {k: dict(v) for k, v in a["caches"].items()}
    for k, v in b["caches"].items():
        c = caches.setdefault(k, {"hits": 0, "misses": 0, "size": 0})
        for f in ("hits", "misses", "size"):
            c[f] += v[f]
    out["caches"] = caches
    ra, rb = a.get("refused", {}), b.get("refused", {})
    out["refused"] = {k: ra.get(k, 0) + rb.get(k, 0) for k in set(ra) | set(rb)}
    la, lb = a.get("fast_lane", {}), b.get("fast_lane", {})
    out["fast_lane"] = {k: la.get(k, 0) + lb.get(k, 0) for k in ("answered", "declined")}
    out["workers"] = a.get("workers", 1) + 1
    return out


def percentile(buckets: list, q: float) -> float | None:
    """Upper bound (seconds) of the bucket holding the q-quantile."""
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= q * total:
            return BUCKETS[i] if i < len(BUCKETS) else float("inf")
    return float("inf")


def format_table(s: dict) -> str:
    lines = []
    workers = s.get("workers", 1)
    lines.append("fastnfs pid %s, %d process%s, up %.0f s" % (
        s.get("pid"), workers, "" if workers == 1 else "es", time.time() - s.get("started", 0)))
    lines.append("connections: %d open, %d accepted, %d refused; RPC rejects: %d" % (
        s["connections"], s["connections_total"], s["connections_refused"], s["rpc_rejects"]))
    refused = s.get("refused", {})
    if refused:
        lines.append("refused calls: " + ", ".join(
            "%s %d" % (k, v) for k, v in sorted(refused.items(), key=lambda kv: -kv[1])))
    lines.append("bytes: %d read, %d written" % (s["bytes_read"], s["bytes_written"]))
    lane = s.get("fast_lane", {})
    lines.append("fast lane: %d answered, %d declined to the general path" % (
        lane.get("answered", 0), lane.get("declined", 0)))
    lines.append("")
    lines.append("%-20s %10s %8s %10s %10s" % ("procedure", "calls", "errors", "p50", "p99"))
    for name in sorted(s["procs"], key=lambda n: -s["procs"][n]["calls"]):
        p = s["procs"][name]
        p50 = percentile(p["buckets"], 0.5)
        p99 = percentile(p["buckets"], 0.99)
        lines.append("%-20s %10d %8d %10s %10s" % (name, p["calls"], p["errors"],
                                                   _fmt(p50), _fmt(p99)))
    lines.append("")
    lines.append("%-20s %10s %10s %8s %10s" % ("cache", "hits", "misses", "hit %", "entries"))
    for name, c in sorted(s["caches"].items()):
        tot = c["hits"] + c["misses"]
        rate = "%.1f" % (100.0 * c["hits"] / tot) if tot else "-"
        lines.append("%-20s %10d %10d %8s %10d" % (name, c["hits"], c["misses"], rate, c["size"]))
    lines.append("")
    lines.append("%-20s %10s %14s %14s" % ("client", "calls", "bytes in", "bytes out"))
    for host in sorted(s["clients"], key=lambda h: -s["clients"][h]["calls"])[:50]:
        c = s["clients"][host]
        lines.append("%-20s %10d %14d %14d" % (host, c["calls"], c["bytes_in"], c["bytes_out"]))
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return ">10s"
    return "<%gms" % (v * 1000) if v < 1 else "<%gs" % v


class Collector:
    """prometheus_client collector over the snapshots of a port's processes."""

    def __init__(self, directory: str):
        self.directory = directory

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        s = collect(self.directory)
        if s is None:
            return
        calls = CounterMetricFamily("fastnfs_calls", "RPC calls answered", labels=["procedure"])
        errors = CounterMetricFamily("fastnfs_errors", "calls answered with an error status",
                                     labels=["procedure"])
        hist = HistogramMetricFamily("fastnfs_call_duration_seconds", "time from call to reply",
                                     labels=["procedure"])
        for n, p in sorted(s["procs"].items()):
            calls.add_metric([n], p["calls"])
            errors.add_metric([n], p["errors"])
            acc, buckets = 0, []
            for i, b in enumerate(BUCKETS):
                acc += p["buckets"][i]
                buckets.append(("%g" % b, acc))
            buckets.append(("+Inf", acc + p["buckets"][-1]))
            hist.add_metric([n], buckets, p["seconds"])
        yield calls
        yield errors
        yield hist
        yield CounterMetricFamily("fastnfs_read_bytes", "file data read by clients",
                                  value=s["bytes_read"])
        yield CounterMetricFamily("fastnfs_written_bytes", "file data written by clients",
                                  value=s["bytes_written"])
        yield GaugeMetricFamily("fastnfs_connections", "open TCP connections",
                                value=s["connections"])
        yield CounterMetricFamily("fastnfs_connections_refused", "connections refused at the limit",
                                  value=s["connections_refused"])
        yield CounterMetricFamily("fastnfs_rpc_rejects", "calls rejected at the RPC layer",
                                  value=s["rpc_rejects"])
        refused = CounterMetricFamily("fastnfs_refused_calls", "calls and records refused",
                                      labels=["reason"])
        for k, v in sorted(s.get("refused", {}).items()):
            refused.add_metric([k], v)
        yield refused
        lane = CounterMetricFamily("fastnfs_fast_lane_calls",
                                   "calls the Cython fast lane answered or declined",
                                   labels=["outcome"])
        for k, v in sorted(s.get("fast_lane", {}).items()):
            lane.add_metric([k], v)
        yield lane
        hits = CounterMetricFamily("fastnfs_cache_hits", "cache hits", labels=["cache"])
        misses = CounterMetricFamily("fastnfs_cache_misses", "cache misses", labels=["cache"])
        for n, c in sorted(s["caches"].items()):
            hits.add_metric([n], c["hits"])
            misses.add_metric([n], c["misses"])
        yield hits
        yield misses
        per = CounterMetricFamily("fastnfs_client_calls", "calls by client address",
                                  labels=["client"])
        for h, c in sorted(s["clients"].items()):
            per.add_metric([h], c["calls"])
        yield per


def serve_metrics(addr: str, directory: str):
    """Start the Prometheus endpoint (a daemon thread) on "HOST:PORT" (an IPv6
    HOST in brackets: "[::1]:9100")."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(directory))
    return start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
