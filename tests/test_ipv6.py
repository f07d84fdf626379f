"""IPv6: `fastnfs serve -l ::1`, the dual-stack default, IPv6 exports specs.

Servers here are real `fastnfs serve` processes and clients talk to them over
real sockets on ::1 and 127.0.0.1 (tests/rpcclient.py, libnfs's nfs-ls); the
unit tests below hold the pieces (peer address normalisation, exports
matching, bind address resolution, banner, rpcbind universal addresses).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import FastnfsProcess, ipv6_loopback, require
from fastnfs import portmap, server as server_mod
from fastnfs.exports import ClientSpec, parse_exports
from fastnfs.transport import RpcDatagramProtocol, RpcStreamProtocol, client_host
from rpcclient import MNT3_OK, NF3DIR, NFS3_OK, Nfs3, RpcClient

MNT3ERR_ACCES = 13


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) here")


def fastnfs_cmd(*args):
    return [sys.executable, "-m", "fastnfs", *args]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def mount_and_getattr(port: int, host: str, proto: str, path) -> None:
    """MNT the export and GETATTR its root from host over proto; both must succeed."""
    nfs = Nfs3(RpcClient(port, host=host, proto=proto))
    try:
        st, out = nfs.mnt(str(path))
        assert st == MNT3_OK, (host, proto, st)
        st, out = nfs.getattr(out["fh"])
        assert st == NFS3_OK, (host, proto, st)
        assert out["attrs"]["type"] == NF3DIR
    finally:
        nfs.close()


def mnt_status(port: int, host: str, proto: str, path) -> int:
    nfs = Nfs3(RpcClient(port, host=host, proto=proto))
    try:
        return nfs.mnt(str(path))[0]
    finally:
        nfs.close()


def stop_clean(srv: FastnfsProcess) -> None:
    log = srv.log()
    assert srv.stop() == 0
    assert "Traceback" not in log, log[-4000:]


# ---------------------------------------------------------------------------
# real servers, real sockets

@needs_ipv6
def test_listens_on_ipv6_loopback(export_dir):
    srv = FastnfsProcess(export_dir, ["-l", "::1"]).start()
    try:
        for proto in ("tcp", "udp"):
            mount_and_getattr(srv.port, "::1", proto, export_dir)
        # only ::1 is served: nothing answers on 127.0.0.1
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        log = srv.log()
        assert "nfsroot=[::1]:%s,v3,tcp,port=%d" % (export_dir, srv.port) in log
        assert re.search(r"::1 mounted %s" % re.escape(str(export_dir)), log)
    finally:
        stop_clean(srv)


@needs_ipv6
def test_default_listens_on_both_families(export_dir):
    srv = FastnfsProcess(export_dir).start()
    try:
        for host in ("::1", "127.0.0.1"):
            for proto in ("tcp", "udp"):
                mount_and_getattr(srv.port, host, proto, export_dir)
        log = srv.log()
        # an IPv4 client of the dual-stack socket is named as IPv4 everywhere
        assert "127.0.0.1 mounted" in log and "::1 mounted" in log
        assert "::ffff:" not in log
        clients = {}

        def counted():  # statistics are published once a second
            nonlocal clients
            out = subprocess.run(fastnfs_cmd("stats", "-n", str(srv.port), "--json"),
                                 capture_output=True, text=True, timeout=30)
            clients = json.loads(out.stdout)["clients"] if out.returncode == 0 else {}
            return {"127.0.0.1", "::1"} <= set(clients)
        assert wait_for(counted), clients
        assert not [c for c in clients if c.startswith("::ffff:")], clients
    finally:
        stop_clean(srv)


@needs_ipv6
def test_several_workers_share_dual_stack_sockets(export_dir):
    srv = FastnfsProcess(export_dir, ["--workers", "2"]).start()
    try:
        for _ in range(3):
            for host in ("::1", "127.0.0.1"):
                mount_and_getattr(srv.port, host, "tcp", export_dir)
                mount_and_getattr(srv.port, host, "udp", export_dir)
    finally:
        stop_clean(srv)


@needs_ipv6
def test_bind_to_ipv4_only(export_dir):
    srv = FastnfsProcess(export_dir, ["-l", "127.0.0.1"]).start()
    try:
        mount_and_getattr(srv.port, "127.0.0.1", "tcp", export_dir)
        with pytest.raises(OSError):
            socket.create_connection(("::1", srv.port), timeout=2).close()
    finally:
        stop_clean(srv)


def test_bad_bind_address_is_a_clear_error(export_dir):
    r = subprocess.run(fastnfs_cmd("serve", str(export_dir), "-n", "0", "-p", "-d",
                                   "-l", "no-such-host.invalid"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot listen on no-such-host.invalid" in r.stderr
    assert "Traceback" not in r.stderr


def _exports_server(tmp_path, export_dir, spec: str, *extra) -> FastnfsProcess:
    f = tmp_path / "exports"
    f.write_text("%s %s\n" % (export_dir, spec))
    return FastnfsProcess(export_dir, list(extra), exports_file=f).start()


@needs_ipv6
def test_exports_ipv6_network_admits_ipv6_and_refuses_ipv4(tmp_path, export_dir):
    srv = _exports_server(tmp_path, export_dir, "::1/128(rw,insecure)")
    try:
        for proto in ("tcp", "udp"):
            mount_and_getattr(srv.port, "::1", proto, export_dir)
            assert mnt_status(srv.port, "127.0.0.1", proto, export_dir) == MNT3ERR_ACCES
        assert "refused mount of %s by 127.0.0.1" % export_dir in srv.log()
    finally:
        stop_clean(srv)


@needs_ipv6
def test_exports_ipv4_spec_admits_ipv4_mapped_peer(tmp_path, export_dir):
    # 127.0.0.1 reaches the dual-stack socket as ::ffff:127.0.0.1
    srv = _exports_server(tmp_path, export_dir, "127.0.0.0/8(rw,insecure)")
    try:
        for proto in ("tcp", "udp"):
            mount_and_getattr(srv.port, "127.0.0.1", proto, export_dir)
            assert mnt_status(srv.port, "::1", proto, export_dir) == MNT3ERR_ACCES
    finally:
        stop_clean(srv)


@needs_ipv6
def test_secure_export_over_ipv6(tmp_path, export_dir):
    if os.geteuid() != 0:
        pytest.skip("privileged source ports need root")
    srv = _exports_server(tmp_path, export_dir, "::1(rw)")   # secure by default
    try:
        assert mnt_status(srv.port, "::1", "tcp", export_dir) == MNT3ERR_ACCES
        for src_port in range(700, 1000):
            try:
                nfs = Nfs3(RpcClient(srv.port, host="::1", source=("::1", src_port)))
                break
            except OSError:
                continue
        st, out = nfs.mnt(str(export_dir))
        nfs.close()
        assert st == MNT3_OK
    finally:
        stop_clean(srv)


@needs_ipv6
def test_libnfs_over_ipv6(export_dir):
    require("nfs-ls")
    (export_dir / "hello-v6.txt").write_text("x")
    srv = FastnfsProcess(export_dir, ["-l", "::1"]).start()
    try:
        # libnfs 4.0 (Debian 12) takes the IPv6 literal without brackets: it parses
        # "[::1]" as a name, and the port comes as nfsport=
        url = "nfs://::1%s?nfsport=%d&mountport=%d&version=3" % (export_dir, srv.port, srv.port)
        r = subprocess.run(["nfs-ls", url], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert b"hello-v6.txt" in r.stdout
    finally:
        stop_clean(srv)


# ---------------------------------------------------------------------------
# rpcbind: tcp6/udp6 registrations (rpcbind versions 3 and 4)

def _rpcinfo_dump() -> str:
    return subprocess.run(["rpcinfo"], capture_output=True, text=True, timeout=10).stdout


def _registered(dump: str, prog: int, vers: int, netid: str, uaddr: str) -> bool:
    return any(line.split()[:4] == [str(prog), str(vers), netid, uaddr]
               for line in dump.splitlines())


@pytest.fixture
def rpcbind():
    """A running rpcbind: the host's, else one started here (root only), as test_cli does."""
    require("rpcinfo")
    binary = require("rpcbind")
    ok = lambda: subprocess.run(["rpcinfo", "-p", "127.0.0.1"],  # noqa: E731
                                capture_output=True).returncode == 0
    started = None
    if not ok():
        if os.geteuid() != 0:
            pytest.skip("no rpcbind running and not root to start one")
        started = subprocess.Popen([binary, "-f", "-w"])
        assert wait_for(ok)
    yield
    if started is not None:
        started.terminate()
        started.wait(10)


def _uaddr(host: str, port: int) -> str:
    return "%s.%d.%d" % (host, port >> 8, port & 255)


@needs_ipv6
@pytest.mark.parametrize("bind", [None, "::1"])
def test_registers_tcp6_and_udp6_with_rpcbind(rpcbind, export_dir, bind):
    port = 0
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::", 0))
        port = s.getsockname()[1]
    args = ["serve", str(export_dir), "-n", str(port), "-d"] + (["-l", bind] if bind else [])
    proc = subprocess.Popen(fastnfs_cmd(*args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    host = bind or "::"
    try:
        def registered():
            d = _rpcinfo_dump()
            return all(_registered(d, prog, vers, netid, _uaddr(host, port))
                       for prog, vers in ((100003, 3), (100005, 3), (100005, 1))
                       for netid in ("tcp6", "udp6"))
        assert wait_for(registered), _rpcinfo_dump()
        # rpcinfo finds the server through rpcbind over IPv6, then calls its NULL procedure
        for netid, prog, vers in (("tcp6", 100003, 3), ("udp6", 100005, 3), ("tcp6", 100005, 1)):
            r = subprocess.run(["rpcinfo", "-T", netid, "::1", str(prog), str(vers)],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and "ready and waiting" in r.stdout, (netid, r)
        pmap = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True,
                              text=True).stdout
        v4 = any(line.split()[:4] == ["100003", "3", "tcp", str(port)]
                 for line in pmap.splitlines())
        assert v4 == (bind is None), pmap   # IPv4 too only when IPv4 is served
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err, err
    d = _rpcinfo_dump()
    assert not any(line.split()[:1] in (["100003"], ["100005"]) for line in d.splitlines()), d


# ---------------------------------------------------------------------------
# units

@pytest.mark.parametrize("host, want", [
    ("::ffff:10.0.0.1", "10.0.0.1"),
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("10.0.0.1", "10.0.0.1"),
    ("::1", "::1"),
    ("fd00::2", "fd00::2"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("::ffff:0:1", "::ffff:0:1"),           # not an IPv4-mapped address
    ("64:ff9b::10.0.0.1", "64:ff9b::10.0.0.1"),
])
def test_client_host_normalises_ipv4_mapped(host, want):
    assert client_host(host) == want


@pytest.mark.parametrize("spec, addr, want", [
    ("10.0.0.0/8", "::ffff:10.0.0.1", True),
    ("10.0.0.0/8", "10.0.0.1", True),
    ("::1/128", "::1", True),
    ("::1/128", "127.0.0.1", False),
    ("::1", "::1", True),
    ("127.0.0.1", "::1", False),
    ("fd00::/8", "fd00::2", True),
    ("fd00::/8", "fe80::2", False),
    ("fe80::/10", "fe80::1%eth0", True),
    ("::/0", "10.1.2.3", True),
    ("::ffff:0:0/96", "192.0.2.7", True),
])
def test_exports_match_ipv6_and_mapped_clients(spec, addr, want):
    assert ClientSpec(spec).matches(addr) is want


def test_exports_file_with_ipv6_specs():
    entries, warnings = parse_exports("/srv ::1/128(rw) fd00::/8(ro) 10.0.0.0/8(rw)\n")
    assert not warnings
    e = entries[0]
    assert e.options_for("::1").rw is True
    assert e.options_for("fd00::5").rw is False
    assert e.options_for("::ffff:10.9.9.9").rw is True
    assert e.options_for("127.0.0.1") is None


class _Recorder:
    fast = None

    def __init__(self):
        self.peers = []

    def dispatch(self, data, peer, proto):
        self.peers.append(peer)
        return None


class _DgramTransport:
    def __init__(self):
        self.sent = []

    def is_closing(self):
        return False

    def sendto(self, data, addr):
        self.sent.append(addr)


def test_udp_peer_is_normalised_and_reply_goes_to_the_socket_address():
    d = _Recorder()
    p = RpcDatagramProtocol(d)
    p.connection_made(_DgramTransport())
    p.datagram_received(b"\0" * 40, ("::ffff:10.0.0.1", 700, 0, 0))
    p.datagram_received(b"\0" * 40, ("fd00::9", 800, 0, 0))
    p.datagram_received(b"\0" * 40, ("10.0.0.2", 900))
    assert d.peers == [("10.0.0.1", 700), ("fd00::9", 800), ("10.0.0.2", 900)]


def test_udp_reply_keeps_the_ipv6_socket_address():
    class Packed:
        def getbuffer(self):
            return memoryview(b"\0\0\0\0reply")

    class Answering(_Recorder):
        def dispatch(self, data, peer, proto):
            super().dispatch(data, peer, proto)
            return Packed()

    t = _DgramTransport()
    p = RpcDatagramProtocol(Answering())
    p.connection_made(t)
    addr = ("::ffff:10.0.0.1", 700, 0, 0)
    p.datagram_received(b"\0" * 40, addr)
    assert t.sent == [addr]


def test_tcp_peer_is_normalised():
    class T:
        def __init__(self, peer):
            self.peer = peer

        def get_extra_info(self, name):
            return self.peer if name == "peername" else None

    for raw, want in ((("::ffff:192.0.2.1", 1000, 0, 0), ("192.0.2.1", 1000)),
                      (("::1", 1001, 0, 0), ("::1", 1001)),
                      (("192.0.2.2", 1002), ("192.0.2.2", 1002))):
        p = RpcStreamProtocol(_Recorder(), 1 << 20)
        p.connection_made(T(raw))
        assert p.peer == want


@needs_ipv6
def test_listen_address_resolution():
    fam, sa = server_mod.listen_address("")
    assert fam == socket.AF_INET6 and sa[0] == "::"
    assert server_mod.listen_address("::")[0] == socket.AF_INET6
    assert server_mod.listen_address("::1") == (socket.AF_INET6, ("::1", 0, 0, 0))
    assert server_mod.listen_address("127.0.0.1") == (socket.AF_INET, ("127.0.0.1", 0))
    assert server_mod.listen_address("0.0.0.0") == (socket.AF_INET, ("0.0.0.0", 0))
    assert server_mod.listen_address("localhost")[0] in (socket.AF_INET, socket.AF_INET6)
    with pytest.raises(OSError):
        server_mod.listen_address("no-such-host.invalid")


def test_listen_address_falls_back_to_ipv4(monkeypatch):
    monkeypatch.setattr(server_mod, "ipv6_available", lambda: False)
    assert server_mod.listen_address("") == (socket.AF_INET, ("0.0.0.0", 0))


def test_universal_addresses():
    assert portmap.universal_address("::", 2049) == "::.8.1"
    assert portmap.universal_address("::1", 20048) == "::1.78.80"
    assert portmap.universal_address("fe80::1%eth0", 2049) == "fe80::1.8.1"
    assert portmap.universal_address("0.0.0.0", 111) == "0.0.0.0.0.111"


def _banner(tmp_path, monkeypatch, bind: str, v6: str | None) -> str:
    monkeypatch.setattr(server_mod, "primary_address", lambda: "192.0.2.5")
    monkeypatch.setattr(server_mod, "primary_address6", lambda: v6)
    from fastnfs.exports import single_export
    d = tmp_path / "root"
    d.mkdir(exist_ok=True)
    cfg = server_mod.Config(exports=[single_export(str(d))], port=0, bind=bind,
                            portmap=False)
    srv = server_mod.Server(cfg)
    try:
        srv.bind()
        out = io.StringIO()
        server_mod.banner(srv, out)
        return out.getvalue()
    finally:
        for _kind, s in srv.sockets:
            s.close()
        for e in srv.exports:
            e.close()


@needs_ipv6
def test_banner_adds_the_ipv6_nfsroot_line(tmp_path, monkeypatch):
    text = _banner(tmp_path, monkeypatch, "", "fd00::2")
    assert "nfsroot=192.0.2.5:" in text
    assert "nfsroot=[fd00::2]:%s,v3,tcp," % (tmp_path / "root") in text
    text = _banner(tmp_path, monkeypatch, "", None)   # no global or ULA IPv6 address
    assert "nfsroot=192.0.2.5:" in text and "nfsroot=[" not in text
    text = _banner(tmp_path, monkeypatch, "::1", "fd00::2")
    assert "nfsroot=[::1]:" in text and "nfsroot=192.0.2.5" not in text
    assert "fd00::2" not in text
    text = _banner(tmp_path, monkeypatch, "0.0.0.0", "fd00::2")
    assert "nfsroot=192.0.2.5:" in text and "nfsroot=[" not in text


def test_primary_address6_is_global_or_ula():
    import ipaddress
    a = server_mod.primary_address6()
    if a is not None:
        ip = ipaddress.IPv6Address(a)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_multicast
                    or ip.ipv4_mapped or ip.is_unspecified)


def test_help_tells_about_both_families():
    out = subprocess.run(fastnfs_cmd("serve", "--help"), capture_output=True, text=True).stdout
    text = " ".join(out.split())
    assert "IPv6" in text and "IPv4" in text


def test_hostname_spec_takes_its_ipv6_addresses_too(monkeypatch):
    import fastnfs.exports as ex

    def fake_getaddrinfo(name, port, family=0, type=0, *a):
        assert name == "board" and family == socket.AF_UNSPEC
        return [(socket.AF_INET6, type, 6, "", ("fd00::7", 0, 0, 0)),
                (socket.AF_INET, type, 6, "", ("10.0.0.7", 0)),
                (socket.AF_INET6, type, 6, "", ("fe80::7%eth0", 0, 0, 2))]
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert ex._resolve("board") == ["fd00::7", "10.0.0.7", "fe80::7"]
    (e,), w = parse_exports("/srv board(rw)\n")
    assert w == []
    for addr in ("fd00::7", "10.0.0.7", "::ffff:10.0.0.7", "fe80::7%eth0"):
        assert e.options_for(addr) is not None, addr
    assert e.options_for("fd00::8") is None


@needs_ipv6
def test_metrics_on_an_ipv6_address(export_dir):
    import urllib.request
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        mport = s.getsockname()[1]
    srv = FastnfsProcess(export_dir, ["--metrics", "[::1]:%d" % mport]).start()
    try:
        mount_and_getattr(srv.port, "::1", "tcp", export_dir)
        text = ""

        def fetched():
            nonlocal text
            try:
                with urllib.request.urlopen("http://[::1]:%d/metrics" % mport, timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return False
            return 'fastnfs_client_calls_total{client="::1"}' in text
        assert wait_for(fetched), text
    finally:
        stop_clean(srv)
