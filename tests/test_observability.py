"""Watching a running server: `fastnfs stats`, Prometheus metrics, JSON logs.

Each test starts `fastnfs serve` (conftest.FastnfsProcess) with its own
statistics directory (FASTNFS_STATS_DIR), sends a known amount of traffic with
tests/rpcclient.py, and reads the figures back the ways an operator would:
`python -m fastnfs stats -n PORT [--json]`, HTTP GET of /metrics, the log.
Statistics are published once a second, so reads poll for up to ~3.5 s.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import FastnfsProcess
from rpcclient import (FILE_SYNC, GUARDED, MNT3_OK, MOUNT_PROGRAM, NFS3_OK, NFS3ERR_NOENT,
                       AuthSys, Nfs3)

ROOT = AuthSys(0, 0, machine=b"observer")
MOUNTPROC_UMNT = 3


# ---------------------------------------------------------------- helpers
def stats_env(tmp_path: Path) -> dict:
    return {"FASTNFS_STATS_DIR": str(tmp_path / "stats")}


def start(export, tmp_path, *args) -> FastnfsProcess:
    return FastnfsProcess(export, list(args), env=stats_env(tmp_path)).start()


def run_stats(srv, tmp_path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(stats_env(tmp_path))
    return subprocess.run([sys.executable, "-m", "fastnfs", "stats", "-n", str(srv.port), *args],
                          capture_output=True, text=True, env=env, timeout=30)


def stats_json(srv, tmp_path) -> dict:
    r = run_stats(srv, tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_stats(srv, tmp_path, ready, timeout: float = 3.5) -> dict:
    """The --json statistics once ready(s) holds (published once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        r = run_stats(srv, tmp_path, "--json")
        s = json.loads(r.stdout) if r.returncode == 0 else None
        if s is not None and ready(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError("statistics never showed the traffic: %s" % (s or r.stderr))
        time.sleep(0.2)


def calls(s: dict, proc: str) -> int:
    return s["procs"].get(proc, {}).get("calls", 0)


def assert_lane_answered(s: dict, least: int) -> None:
    """The compiled fast lane answered at least this many calls (none with FASTNFS_PURE=1)."""
    answered = s["fast_lane"]["answered"]
    assert answered == 0 if os.environ.get("FASTNFS_PURE") else answered >= least, answered


def errors(s: dict, proc: str) -> int:
    return s["procs"].get(proc, {}).get("errors", 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_ports(pid: int) -> set:
    """TCP ports the process (and its children) listen on, from /proc."""
    inodes = set()
    pids = [pid]
    try:
        pids += [int(c) for c in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]
    except OSError:
        pass
    for p in pids:
        for fd in os.listdir("/proc/%d/fd" % p):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (p, fd))
            except OSError:
                continue
            m = re.match(r"socket:\[(\d+)\]", t)
            if m:
                inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:       # LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def traffic(srv) -> dict:
    """Known traffic: 1 MNT, 25 GETATTR, 5 LOOKUP (3 of missing names), 3 WRITEs
    of 1000 bytes, 2 READs of 500 bytes, 1 CREATE."""
    n = Nfs3.connect(srv.port, cred=ROOT)
    root = n.mount(str(srv.export))
    for _ in range(25):
        assert n.getattr(root)[0] == NFS3_OK
    st, r = n.create(root, "f", how=GUARDED, mode=0o644)
    assert st == NFS3_OK
    fh = r["fh"]
    for i in range(3):
        assert n.write(fh, i * 1000, bytes([i]) * 1000, stable=FILE_SYNC)[0] == NFS3_OK
    for _ in range(2):
        assert n.read(fh, 0, 500)[0] == NFS3_OK
    for name in ("missing1", "missing2", "missing3"):
        assert n.lookup(root, name)[0] == NFS3ERR_NOENT
    for _ in range(2):
        assert n.lookup(root, "f")[0] == NFS3_OK
    return {"client": n, "root": root}


# ---------------------------------------------------------------- fastnfs stats
def test_stats_show_what_was_sent(export_dir, tmp_path):
    srv = start(export_dir, tmp_path)
    try:
        t = traffic(srv)
        s = wait_stats(srv, tmp_path, lambda s: calls(s, "nfs.LOOKUP") == 5)
        assert calls(s, "nfs.GETATTR") == 25 and errors(s, "nfs.GETATTR") == 0
        assert calls(s, "nfs.LOOKUP") == 5 and errors(s, "nfs.LOOKUP") == 3
        assert calls(s, "nfs.WRITE") == 3 and errors(s, "nfs.WRITE") == 0
        assert calls(s, "nfs.READ") == 2
        assert calls(s, "nfs.CREATE") == 1
        assert calls(s, "mount.MNT") == 1
        total = sum(p["calls"] for p in s["procs"].values())
        assert total == 25 + 5 + 3 + 2 + 1 + 1
        assert s["bytes_written"] == 3000 and s["bytes_read"] == 500 * 2
        assert s["connections"] == 1 and s["connections_total"] == 1
        assert s["connections_refused"] == 0 and s["rpc_rejects"] == 0
        # the Cython fast lane answered the ordinary calls (none with FASTNFS_PURE=1)
        lane = s["fast_lane"]
        assert lane["answered"] + lane["declined"] <= total
        if os.environ.get("FASTNFS_PURE"):
            assert lane["answered"] == 0
        else:
            assert lane["answered"] >= 20
        fc = s["caches"]["filehandle"]
        assert fc["hits"] > 0 and fc["size"] >= 2
        assert list(s["clients"]) == ["127.0.0.1"]
        assert s["clients"]["127.0.0.1"]["calls"] == total
        assert s["clients"]["127.0.0.1"]["bytes_in"] > 3000
        for p in s["procs"].values():
            assert sum(p["buckets"]) == p["calls"]
        # the table says the same
        r = run_stats(srv, tmp_path)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert re.search(r"^nfs\.GETATTR\s+25\s+0\s", out, re.M), out
        assert re.search(r"^nfs\.LOOKUP\s+5\s+3\s", out, re.M), out
        assert "bytes: 1000 read, 3000 written" in out
        assert "connections: 1 open, 1 accepted, 0 refused" in out
        assert re.search(r"^fast lane: %d answered, %d declined to the general path"
                         % (lane["answered"], lane["declined"]), out, re.M), out
        assert re.search(r"^filehandle\s+\d+\s+\d+\s+[\d.]+\s+\d+", out, re.M), out
        assert re.search(r"^127\.0\.0\.1\s+%d\s" % total, out, re.M), out
        t["client"].close()
        s = wait_stats(srv, tmp_path, lambda s: s["connections"] == 0)
        assert s["connections_total"] == 1
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
    # a stopped server publishes nothing
    r = run_stats(srv, tmp_path)
    assert r.returncode == 1 and "no running fastnfs" in r.stderr


def test_large_cached_reads_answered_by_the_lane(export_dir, tmp_path):
    """READs over 64 KiB of data the page cache holds are answered by the fast
    lane, the data sent from the file (sendfile): pipelined with other calls
    in one send, every reply comes whole, in order, with the file's bytes."""
    from rpcclient import GETATTR, NFS_PROGRAM, NFS_V3, READ, RpcClient
    from xdrlib3 import Packer
    data = os.urandom(3 * 2**20 + 5)
    (export_dir / "big").write_bytes(data)
    (export_dir / "big").read_bytes()
    srv = start(export_dir, tmp_path)
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        fh = n.lookup(n.mount(str(srv.export)), "big")[1]["fh"]
        c = RpcClient(srv.port, cred=ROOT)
        reads = [(0, 2**20), (1, 2**20), (2 * 2**20, 65537), (3 * 2**20 - 70001, 2**20)]
        stream, want = [], []
        for i, (off, count) in enumerate(reads * 2):
            a = Packer()
            a.pack_opaque(fh)
            xid, msg = c.build(NFS_PROGRAM, NFS_V3, GETATTR, a.get_buffer(), xid=1000 + 2 * i)
            stream.append(c.frame(msg))
            a.pack_uhyper(off)
            a.pack_uint(count)
            xid, msg = c.build(NFS_PROGRAM, NFS_V3, READ, a.get_buffer(), xid=1001 + 2 * i)
            stream.append(c.frame(msg))
            want += [(1000 + 2 * i, None), (1001 + 2 * i, data[off:off + count])]
        c.send_raw(b"".join(stream))
        for xid, chunk in want:
            r = c.recv_reply()
            assert r.xid == xid and r.ok
            u = r.body
            assert u.unpack_uint() == NFS3_OK
            if chunk is None:
                continue
            assert u.unpack_bool()
            u.set_position(u.get_position() + 84)          # fattr3
            assert u.unpack_uint() == len(chunk)
            assert u.unpack_bool() == (chunk == data[-len(chunk):])
            assert u.unpack_bytes() == chunk
            u.done()
        c.close()
        n.close()
        total = sum(len(data[o:o + k]) for o, k in reads) * 2
        s = wait_stats(srv, tmp_path, lambda s: s["bytes_read"] == total)
        assert calls(s, "nfs.READ") == 8 and errors(s, "nfs.READ") == 0
        assert_lane_answered(s, 16)
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_unstable_writes_answered_by_the_lane(export_dir, tmp_path):
    """UNSTABLE WRITEs (what the kernel client sends) are answered by the fast
    lane, the data written from the receive buffer; COMMIT makes them stable;
    the statistics count the bytes."""
    from rpcclient import UNSTABLE
    srv = start(export_dir, tmp_path)
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(srv.export))
        st, r = n.create(root, "w", how=GUARDED, mode=0o644)
        assert st == NFS3_OK
        fh = r["fh"]
        chunks = [os.urandom(100_000 + i) for i in range(3)]
        off = 0
        for c in chunks:
            st, r = n.write(fh, off, c, stable=UNSTABLE)
            assert st == NFS3_OK and r["count"] == len(c) and r["committed"] == UNSTABLE
            off += len(c)
        assert n.commit(fh)[0] == NFS3_OK
        n.close()
        assert (export_dir / "w").read_bytes() == b"".join(chunks)
        s = wait_stats(srv, tmp_path, lambda s: s["bytes_written"] == off)
        assert calls(s, "nfs.WRITE") == 3 and errors(s, "nfs.WRITE") == 0
        assert_lane_answered(s, 3)
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_stats_add_up_across_two_workers(export_dir, tmp_path):
    srv = start(export_dir, tmp_path, "--workers", "2")
    try:
        conns = [Nfs3.connect(srv.port, cred=ROOT) for _ in range(16)]
        root = conns[0].mount(str(export_dir))
        for n in conns:
            for _ in range(10):
                assert n.getattr(root)[0] == NFS3_OK
            assert n.lookup(root, "nope")[0] == NFS3ERR_NOENT
        s = wait_stats(srv, tmp_path, lambda s: calls(s, "nfs.GETATTR") == 160
                       and s.get("workers") == 2)
        assert calls(s, "nfs.LOOKUP") == 16 and errors(s, "nfs.LOOKUP") == 16
        assert s["connections"] == 16 and s["connections_total"] == 16
        assert s["clients"]["127.0.0.1"]["calls"] == 160 + 16 + 1
        per = [json.loads(p.read_text()) for p in (tmp_path / "stats").glob("port-*/worker-*.json")]
        split = sorted(p["procs"].get("nfs.GETATTR", {}).get("calls", 0) for p in per)
        assert len(per) == 2 and sum(split) == 160
        print("\nGETATTR calls per worker: %s" % split)
        for n in conns:
            n.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


# ---------------------------------------------------------------- Prometheus
def fetch_metrics(port: int, timeout: float = 3.5) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def metric(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return None if m is None else float(m.group(1))


def check_metrics(mport: int, getattrs: int) -> str:
    deadline = time.monotonic() + 3.5
    while True:
        text = fetch_metrics(mport)
        v = metric(text, "fastnfs_calls_total", '{procedure="nfs.GETATTR"}')
        if v == getattrs or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert v == getattrs, text
    assert metric(text, "fastnfs_errors_total", '{procedure="nfs.LOOKUP"}') == 3, text
    assert metric(text, "fastnfs_written_bytes_total") == 3000, text
    assert metric(text, "fastnfs_read_bytes_total") == 1000, text
    assert metric(text, "fastnfs_connections") == 1, text
    assert metric(text, "fastnfs_client_calls_total", '{client="127.0.0.1"}') == 37, text
    assert metric(text, "fastnfs_call_duration_seconds_count",
                  '{procedure="nfs.GETATTR"}') == getattrs, text
    assert metric(text, "fastnfs_cache_hits_total", '{cache="filehandle"}') is not None, text
    answered = metric(text, "fastnfs_fast_lane_calls_total", '{outcome="answered"}')
    declined = metric(text, "fastnfs_fast_lane_calls_total", '{outcome="declined"}')
    assert answered is not None and declined is not None, text
    assert answered + declined <= 37
    assert "# TYPE fastnfs_calls_total counter" in text
    return text


def test_metrics_single_process(export_dir, tmp_path):
    mport = free_port()
    srv = start(export_dir, tmp_path, "--metrics", "127.0.0.1:%d" % mport)
    try:
        t = traffic(srv)
        check_metrics(mport, 25)
        t["client"].close()
    finally:
        srv.stop()


def test_metrics_with_two_workers(export_dir, tmp_path):
    mport = free_port()
    srv = start(export_dir, tmp_path, "--workers", "2", "--metrics", "127.0.0.1:%d" % mport)
    try:
        assert "Prometheus metrics on http://127.0.0.1:%d/metrics" % mport in srv.log()
        t = traffic(srv)
        text = check_metrics(mport, 25)
        assert mport in listening_ports(srv.proc.pid)
        t["client"].close()
        print("\n" + "\n".join(x for x in text.splitlines() if "GETATTR" in x and "bucket" not in x))
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_off_by_default(export_dir, tmp_path, workers):
    srv = start(export_dir, tmp_path, "--workers", workers)
    try:
        t = traffic(srv)
        time.sleep(0.3)
        assert listening_ports(srv.proc.pid) == {srv.port}
        assert "Prometheus" not in srv.log()
        t["client"].close()
    finally:
        srv.stop()


# ---------------------------------------------------------------- logs
def json_lines(log: str) -> list:
    """Every line but the banner parsed as JSON (a failure names the line).  The
    banner is printed, not logged; log lines made while the exports are set up
    (a virtfs export's symlink style, say) come before it."""
    out = []
    for line in log.splitlines():
        if line.startswith(("fastnfs: serving", "  board kernel", "  mount from")):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError("not a JSON log line: %r" % line) from None
        assert isinstance(obj, dict) and obj.get("level") and "message" in obj, line
        out.append(obj)
    return out


def test_json_log_has_mount_and_unmount(export_dir, tmp_path):
    srv = start(export_dir, tmp_path, "--log-format", "json", "--idle-timeout", "1")
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(export_dir))
        assert n.getattr(root)[0] == NFS3_OK
        from xdrlib3 import Packer
        p = Packer()
        p.pack_string(str(export_dir).encode())
        assert n.c.call(MOUNT_PROGRAM, 3, MOUNTPROC_UMNT, p.get_buffer()).ok
        n.close()
        time.sleep(2.5)          # the idle reaper logs (debug) too
    finally:
        srv.stop()
    recs = json_lines(srv.log())
    msgs = [r["message"] for r in recs]
    assert "127.0.0.1 mounted %s" % export_dir in msgs, msgs
    assert "127.0.0.1 unmounted %s" % export_dir in msgs, msgs
    assert any(m.startswith("ready:") for m in msgs) and "stopping" in msgs
    assert {r["level"] for r in recs} >= {"INFO"}
    assert all({"time", "logger", "pid"} <= set(r) for r in recs)


def test_refused_host_is_logged_with_host_export_and_why(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    exports = tmp_path / "exports"
    exports.write_text("%s 127.0.0.2(rw,no_root_squash,insecure)\n" % export)
    env = dict(os.environ)
    env.update(stats_env(tmp_path))
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "fastnfs", "serve", "-e", str(exports),
                                 "-n", "0", "-p", "-d", "--workers", "1", "--log-format", "json"],
                                stdout=logf, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while "ready:" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        port = int(re.search(r"NFS port (\d+)", log_path.read_text()).group(1))
        n = Nfs3.connect(port, cred=ROOT)           # from 127.0.0.1
        st, _ = n.mnt(str(export))
        assert st != MNT3_OK
        n.close()
        time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(10)
    recs = json_lines(log_path.read_text())
    refusals = [r for r in recs if "refused" in r["message"]]
    assert any(r["level"] == "WARNING" and "127.0.0.1" in r["message"]
               and str(export) in r["message"] and "not allowed" in r["message"]
               for r in refusals), refusals
    print("\n" + "\n".join(r["message"] for r in refusals))


def test_malformed_metadata_is_logged(export_dir, tmp_path):
    (export_dir / "f").write_bytes(b"x")
    (export_dir / ".virtfs_metadata").mkdir()
    (export_dir / ".virtfs_metadata" / "f").write_bytes(
        b"virtfs.uid=0\nvirtfs.gid=zero\nvirtfs.mode=%d\n" % (stat.S_IFREG | 0o600))
    srv = start(export_dir, tmp_path, "--virtfs", "--log-format", "json")
    try:
        n = Nfs3.connect(srv.port, cred=ROOT)
        root = n.mount(str(export_dir))
        st, r = n.lookup(root, "f")
        assert st == NFS3_OK and r["attrs"]["mode"] & 0o7777 == 0o600
        n.close()
        time.sleep(0.3)
    finally:
        srv.stop()
    recs = json_lines(srv.log())
    bad = [r for r in recs if "malformed metadata" in r["message"]]
    assert len(bad) == 1, recs
    assert bad[0]["level"] == "WARNING"
    assert ".virtfs_metadata/f:2" in bad[0]["message"] and "virtfs.gid" in bad[0]["message"], bad


def test_refusals_are_counted_in_full_but_logged_a_line_a_minute(tmp_path):
    """A client that keeps being refused (a bad flavour, a host the exports refuse, a
    mount of a path not exported) costs one log line per reason, not one per call;
    `fastnfs stats` keeps every count."""
    export = tmp_path / "export"
    export.mkdir()
    exports = tmp_path / "exports"
    exports.write_text("%s 127.0.0.2(rw,no_root_squash,insecure)\n" % export)
    srv = FastnfsProcess(export, env=stats_env(tmp_path), exports_file=exports).start()
    n_each = 600
    try:
        from rpcclient import RpcClient
        with RpcClient(srv.port, cred=ROOT) as c:
            for _ in range(n_each):                # AUTH_DH-like flavour: AUTH_BADCRED
                c.send_call(MOUNT_PROGRAM, 3, 1, b"\0\0\0\1/\0\0\0", cred=(3, b"x" * 8))
            for _ in range(n_each):
                c.recv_reply()
            for _ in range(n_each):                # MNT of an export this host may not use
                st, _ = Nfs3(c).mnt(str(export))
                assert st != MNT3_OK
        s = wait_stats(srv, tmp_path, lambda s: sum(s.get("refused", {}).values()) >= 3 * n_each)
        table = run_stats(srv, tmp_path).stdout
    finally:
        srv.stop()
    refused = s["refused"]
    assert refused.get("auth error") == n_each, refused
    assert refused.get("mount refused") == n_each, refused
    assert refused.get("host not allowed") == n_each, refused
    lines = [ln for ln in srv.log().splitlines() if "refused" in ln]
    assert 1 <= len(lines) <= 3, lines
    assert "refused calls:" in table and "auth error %d" % n_each in table


def test_refusal_log_line_says_how_many_were_suppressed():
    import logging

    from fastnfs.refusals import Refusals
    got = []

    class Catch(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    log = logging.getLogger("fastnfs.test-refusals")
    log.addHandler(Catch())
    log.setLevel(logging.INFO)
    r = Refusals(interval=0.2, max_keys=2)
    for _ in range(50):
        r.note(log, logging.WARNING, "10.0.0.1", "insecure port", "refused %s", "10.0.0.1")
    r.note(log, logging.WARNING, "10.0.0.2", "insecure port", "refused %s", "10.0.0.2")
    assert got == ["refused 10.0.0.1", "refused 10.0.0.2"]
    time.sleep(0.25)
    r.note(log, logging.WARNING, "10.0.0.1", "insecure port", "refused %s", "10.0.0.1")
    assert got[-1].startswith("refused 10.0.0.1 (49 more like it from 10.0.0.1 suppressed")
    assert r.counts == {"insecure port": 52}
    for i in range(10):                        # bounded: old clients are forgotten
        r.note(log, logging.WARNING, "10.0.1.%d" % i, "x", "m")
    assert len(r._last) == 2
