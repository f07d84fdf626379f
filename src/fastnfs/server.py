"""The running server: sockets, event loop (uvloop), signals, rpcbind, pid file."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import creds, offload, portmap
from .dispatch import Dispatcher, use_fast_path
from .handles import Export
from .mount import MOUNT_PROGRAM, mount_program
from .nfs3.const import NFS_PROGRAM, NFS_V3
from .nfs3.program import nfs3_program
from .nfs3.state import NFS3State
from .stats import Stats, serve_metrics, stats_dir
from .transport import Connections, RpcDatagramProtocol, RpcStreamProtocol
from .workers import WorkerPool

log = logging.getLogger("fastnfs")

TCP_MAXDATA = 1 << 20       # rtmax/wtmax on TCP
UDP_MAXDATA = 32768         # rtmax/wtmax on UDP (a reply must fit one datagram)


@dataclass
class Config:
    exports: list = field(default_factory=list)   # [exports.ExportEntry]
    exports_file: str | None = None   # re-read on SIGHUP
    base: bytes = b""                 # UNFS_BASE: prefix of every export path on disk
    port: int = 2049
    mount_port: int | None = None
    bind: str = ""                    # "": every address, IPv6 and IPv4 (see listen_address)
    tcp_only: bool = False
    portmap: bool = True
    foreground: bool = False
    pid_file: str | None = None
    fhcache_size: int = 262144
    metacache_size: int = 65536
    max_record: int = TCP_MAXDATA + 4096
    io_threads: int = 8
    workers: int = 1                  # processes answering on the same ports
    single_user: bool = False         # never switch to the caller's credentials
    virtfs: bool = False              # ownership from mapped-file metadata
    preload: str | None = None        # "fakeroot"/"pseudo": ownership through its libc wrappers
    pseudo: str | None = None         # pseudo state directory: ownership from its files.db
    virtfs_symlinks: str = "auto"     # new symlinks: "qemu" (file + metadata), "host", "auto"
    max_connections: int = 4096       # per process; more are refused with a log line
    idle_timeout: float = 360.0       # seconds; 0 keeps idle connections forever
    metrics: str | None = None        # "HOST:PORT" for the Prometheus endpoint
    backend: object = None            # path -> backends.Backend (default: plain/virtfs/-s)
    boards: str | None = None         # --boards DIR: a private layer per board (BASE@NAME)
    board_by_address: bool = False    # --board-by-address: BASE gives the client's own layer


class Server:
    def __init__(self, config: Config, write_verifier: bytes | None = None):
        self.config = config
        self.exports = self._make_exports(config.exports, {})
        # with virtfs the metadata, not the kernel, says who may do what
        self.nfs = NFS3State(self.exports, write_verifier=write_verifier,
                             switch_creds=False if (config.single_user or config.virtfs
                                                    or config.preload) else None)
        self.pool: WorkerPool | None = None   # the other workers, when this is worker 0
        self.executor = None  # made in serve(): threads must not predate a fork
        self.dispatcher = Dispatcher([nfs3_program(self.nfs), mount_program(self.nfs)],
                                     udp_maxdata=UDP_MAXDATA,
                                     tcp_maxdata=TCP_MAXDATA)
        self.stats = self.dispatcher.stats
        self.nfs.stats = self.stats
        use_fast_path(self.dispatcher, self.nfs)
        self.dispatcher.lend_files = offload.can_lend()
        self.connections = Connections(self.stats, config.max_connections, config.idle_timeout)
        self.stats.caches["filehandle"] = lambda: _sum_caches(
            e.backend.cache for e in self.exports if hasattr(e.backend, "cache"))
        if config.virtfs:
            self.stats.caches["virtfs metadata"] = lambda: _sum_caches(
                e.backend.overlay.cache for e in self.exports
                if hasattr(e.backend, "overlay"))
        self.sockets: list = []  # (kind, socket)
        self.listen: tuple = (socket.AF_INET, ("0.0.0.0", 0))  # (family, address): bind() says
        self.registration = portmap.Registration()
        self._stop: asyncio.Event | None = None
        self._servers: list = []

    def _make_backend(self, path: bytes):
        """The storage backend of the export at path (fastnfs.backends)."""
        c = self.config
        if c.backend is not None:
            return c.backend(path)
        if c.virtfs:
            from .backends.virtfs import VirtfsBackend
            return VirtfsBackend(path, fhcache_size=c.fhcache_size,
                                 metacache_size=c.metacache_size, symlinks=c.virtfs_symlinks)
        if c.preload:
            from .backends.preload import PreloadBackend
            return PreloadBackend(path, kind=c.preload, fhcache_size=c.fhcache_size)
        if c.pseudo:
            from .backends.pseudo import PseudoBackend
            return PseudoBackend(path, c.pseudo, fhcache_size=c.fhcache_size)
        if c.single_user:
            from .backends.singleuser import SingleUserBackend
            return SingleUserBackend(path, fhcache_size=c.fhcache_size)
        from .backends.plain import PlainBackend
        return PlainBackend(path, fhcache_size=c.fhcache_size)

    def _make_exports(self, entries, old: dict) -> list:
        """handles.Export objects for exports entries, reusing old ones (their
        handles and caches)."""
        out = []
        for entry in entries:
            real = self.config.base + entry.path
            if self.config.backend is None:
                real = os.path.realpath(real)
            e = old.get(real)
            boards_dir, by_address = self._boards_of(entry)
            if e is None:
                backend = self._make_backend(real)
                if boards_dir:
                    from .backends.boards import read_only_base
                    backend = read_only_base(backend)  # the base is never written
                e = Export(real, backend, entry=entry, name=entry.path)
                if boards_dir:
                    from .boards import BoardExports
                    e.boards = BoardExports(e, boards_dir, virtfs=self.config.virtfs,
                                            by_address=by_address,
                                            register=lambda b: self.nfs.add_export(b))
            else:
                e.set_entry(entry)
                e.name = entry.path
                if getattr(e, "boards", None) is not None:
                    e.boards.set_entry(entry)
            out.append(e)
        return out

    def _boards_of(self, entry) -> tuple:
        """(boards directory or None, board by address?) of an exports entry:
        --boards for the command line's export, else its boards= option."""
        c = self.config
        if c.boards:
            return c.boards, c.board_by_address
        for spec in entry.clients:
            if spec.options.boards:
                return spec.options.boards, spec.options.board_by_address or \
                    c.board_by_address
        return None, False

    def reload_exports(self) -> bool:
        """Re-read the exports file; a broken file leaves the current exports in force."""
        from .exports import ExportsError, load_exports
        path = self.config.exports_file
        if path is None:
            log.info("SIGHUP: no exports file to re-read (the export is given on the command line)")
            return False
        try:
            entries, warnings = load_exports(path)
            for w in warnings:
                log.warning("%s", w)
            old = {e.path: e for e in self.exports}
            new = self._make_exports(entries, old)
        except (ExportsError, OSError) as err:
            log.error("exports not reloaded, the previous ones stay in force: %s", err)
            return False
        for e in self.exports:
            if e not in new:
                e.close()
                if getattr(e, "boards", None) is not None:
                    e.boards.close()
        self.exports = new
        self.config.exports = entries   # what a worker started from now on serves
        self.nfs.set_exports(new)
        self._share_warnings(stats_dir(self.port))
        log.info("exports reloaded from %s: %d exports", path, len(new))
        return True

    # -- sockets are bound before the loop exists, so errors show before detaching
    def bind(self) -> None:
        """Bind every listener; port 0 picks one free port for TCP and UDP both."""
        c = self.config
        self.listen = listen_address(c.bind)
        nfs_port = self._bind_port(c.port)
        if c.mount_port is not None and c.mount_port != c.port:
            self._bind_port(c.mount_port)
        self.config.port = nfs_port
        if c.mount_port is None:
            c.mount_port = nfs_port

    def bind_again(self) -> list:
        """Another set of listeners on the same ports (SO_REUSEPORT), for a worker."""
        out = []
        for kind, s in self.sockets:
            n = socket.socket(s.family,
                              socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
            if s.family == socket.AF_INET6:  # dual-stack like its twin, or not
                n.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                             s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            n.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            n.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            n.bind(s.getsockname())
            if kind == "tcp":
                n.listen(1024)
            else:
                n.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            n.setblocking(False)
            out.append((kind, n))
        return out

    def _bind_port(self, port: int) -> int:
        c = self.config
        family, addr = self.listen

        def new(kind):
            s = socket.socket(family, kind)
            if family == socket.AF_INET6 and addr[0] == "::":
                # one socket for both families, whatever net.ipv6.bindv6only says
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if c.workers > 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            return s

        for _attempt in range(20):
            t = new(socket.SOCK_STREAM)
            try:
                t.bind((addr[0], port) + addr[2:])
            except OSError:
                t.close()
                raise
            actual = t.getsockname()[1]
            d = None
            if not c.tcp_only:
                d = new(socket.SOCK_DGRAM)
                try:
                    d.bind((addr[0], actual) + addr[2:])
                except OSError:
                    d.close()
                    t.close()
                    if port == 0:
                        continue  # the UDP twin of a random TCP port is taken: try another
                    raise
                d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                d.setblocking(False)
            t.listen(1024)
            t.setblocking(False)
            self.sockets.append(("tcp", t))
            if d is not None:
                self.sockets.append(("udp", d))
            return actual
        raise OSError(98, "no free port for both TCP and UDP")

    @property
    def port(self) -> int:
        return self.sockets[0][1].getsockname()[1]

    @property
    def mount_port(self) -> int:
        ports = [s.getsockname()[1] for k, s in self.sockets if k == "tcp"]
        return ports[-1]

    def mappings(self) -> list:
        """(prog, vers, protocol, port) for rpcbind's IPv4 list (PMAP version 2):
        none when only IPv6 is served."""
        if self.listen[0] == socket.AF_INET6 and self.listen[1][0] != "::":
            return []
        return self._mappings_of_sockets()

    def mappings6(self) -> list:
        """(prog, vers, netid, universal address) for rpcbind's tcp6 and udp6
        transports (RPCBIND version 3): none when only IPv4 is served."""
        family, addr = self.listen
        if family != socket.AF_INET6:
            return []
        out = []
        for prog, vers, prot, port in self._mappings_of_sockets():
            netid = "tcp6" if prot == portmap.IPPROTO_TCP else "udp6"
            out.append((prog, vers, netid, portmap.universal_address(addr[0], port)))
        return out

    def _mappings_of_sockets(self) -> list:
        out = []
        for kind, sock in self.sockets:
            prot = portmap.IPPROTO_TCP if kind == "tcp" else portmap.IPPROTO_UDP
            port = sock.getsockname()[1]
            if port == self.port:
                out.append((NFS_PROGRAM, NFS_V3, prot, port))
            if port == self.mount_port:
                out += [(MOUNT_PROGRAM, 1, prot, port), (MOUNT_PROGRAM, 3, prot, port)]
        return out

    async def serve(self, register: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(max_workers=self.config.io_threads,
                                           thread_name_prefix="fastnfs-io")
        self.dispatcher.executor = self.executor
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})   # a worker's (workers.py)
        if self.pool is not None:
            self.pool.start(loop)
        if _early_stop:
            self._stop.set()
        mr = self.config.max_record
        conns = self.connections
        for kind, sock in self.sockets:
            if kind == "tcp":
                srv = await loop.create_server(
                    lambda: RpcStreamProtocol(self.dispatcher, mr, connections=conns), sock=sock)
                self._servers.append(srv)
            else:
                tr, _ = await loop.create_datagram_endpoint(
                    lambda: RpcDatagramProtocol(self.dispatcher), sock=sock)
                self._servers.append(tr)
        main = register  # False in a worker: worker 0, the parent, serves metrics
        register = register and self.config.portmap
        if register:
            await loop.run_in_executor(None, self.registration.register, self.mappings(),
                                       self.mappings6())
        sdir = stats_dir(self.port)
        self._share_warnings(sdir)
        if main and self.config.metrics and self.pool is None:  # else run() started it
            self._start_metrics(sdir)
        ticker = asyncio.ensure_future(self._tick(sdir))
        log.info("ready: answering NFS and MOUNT calls")
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            ticker.cancel()
            Stats.remove(sdir)
            for s in self._servers:
                s.close()
            if self.pool is not None:
                self.pool.stop()
            if register:
                self.registration.unregister()
            self.executor.shutdown(wait=True, cancel_futures=False)

    def _share_warnings(self, sdir: str) -> None:
        for e in self.exports:
            overlay = getattr(e.backend, "overlay", None)
            if overlay is not None:
                overlay.shared_dir = os.path.join(sdir, "warned")

    async def _tick(self, sdir: str) -> None:
        """Once a second: publish statistics; close idle connections; take
        idle connections' buffers and give the memory of ended connections
        back."""
        while True:
            try:
                self.stats.dump(sdir)
            except OSError as e:
                log.debug("cannot write statistics to %s: %s", sdir, e)
            self.connections.reap_idle()
            self.connections.shed_buffers()
            self.connections.give_back()
            if self.pool is not None:   # where pidfd_open is missing
                self.pool.reap()
            await asyncio.sleep(1.0)

    def _start_metrics(self, sdir: str) -> None:
        try:
            serve_metrics(self.config.metrics, sdir)
            log.info("Prometheus metrics on http://%s/metrics", self.config.metrics)
        except (OSError, ValueError) as e:
            log.error("cannot serve metrics on %s: %s", self.config.metrics, e)

    def _hangup(self) -> None:
        if self.pool is not None:
            self.pool.signal(signal.SIGHUP)
        if self.nfs.switch_creds:
            creds.become_server()  # the loop thread may still wear the last caller's ids
        self.reload_exports()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


def _sum_caches(caches) -> tuple:
    hits = misses = size = 0
    for c in caches:
        hits += c.hits
        misses += c.misses
        size += len(c)
    return hits, misses, size


def raise_fd_limit() -> None:
    """Use the hard limit on open files: every connection and open file needs one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def new_event_loop():
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


def daemonize() -> None:
    """Detach from the terminal the classic way (fork, setsid, fork)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    if fd > 2:
        os.close(fd)


def run(server: Server) -> int:
    c = server.config
    if not c.foreground:
        daemonize()
    _remember_stop_signals()    # from here on, a stop still removes the pid file
    if c.pid_file:
        tmp = "%s.%d.tmp" % (c.pid_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(tmp, c.pid_file)  # readers never see an empty pid file
    raise_fd_limit()
    try:
        if c.workers > 1:   # this process is worker 0 and starts the others
            if c.metrics:   # up before any worker answers, as with one process
                server._start_metrics(stats_dir(server.port))
            server.pool = WorkerPool(server, c.workers)
            server.pool.fork()
        serve_in_this_process(server)
    finally:
        if c.pid_file:
            try:
                os.unlink(c.pid_file)
            except OSError:
                pass
        for e in server.exports:
            e.close()
    return 0


_early_stop: list = []   # a stop signal that came before the loop's handlers


def _remember_stop_signals() -> None:
    """Until the loop installs its own handlers, a stop signal is remembered and
    serve() stops at once (raising from a handler would leave the loop running)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signo, _frame: _early_stop.append(signo))


def serve_in_this_process(server: Server, register: bool = True) -> None:
    _remember_stop_signals()
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(server.serve(register))
    finally:
        loop.close()


def ipv6_available() -> bool:
    """Whether this host can listen on IPv6 (and IPv4 through the same socket)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
        return True
    except OSError:
        return False


def listen_address(bind: str) -> tuple:
    """(family, socket address with port 0) to listen on for ``-l ADDR``.

    "" (the default) is every address: one dual-stack IPv6 socket per protocol
    (as "::" asks), or 0.0.0.0 where the host has no IPv6.  Otherwise ADDR is
    an IPv4 or IPv6 literal (brackets allowed, "fe80::1%eth0" for a link-local
    one) or a host name, whose first address is taken.  A name that does not
    resolve raises OSError (socket.gaierror)."""
    if bind.startswith("[") and bind.endswith("]"):
        bind = bind[1:-1]
    if bind == "":
        if ipv6_available():
            return socket.AF_INET6, ("::", 0, 0, 0)
        return socket.AF_INET, ("0.0.0.0", 0)
    # an ASCII name as bytes: a str is encoded by the idna codec, whose import
    # (stringprep, unicodedata) costs every server process ~0.2 MB
    infos = socket.getaddrinfo(bind.encode() if bind.isascii() else bind, 0,
                               socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, _type, _proto, _name, addr = infos[0]
    return family, addr


def primary_address() -> str:
    """The address a board would most likely use to reach this host."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _usable6(text: str) -> bool:
    """A global or unique-local (fc00::/7) unicast IPv6 address."""
    try:
        ip = ipaddress.IPv6Address(text.split("%")[0])
    except ValueError:
        return False
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified \
            or ip.ipv4_mapped is not None or ip.is_site_local:
        return False
    return ip.is_global or ip in ipaddress.IPv6Network("fc00::/7")


def primary_address6() -> str | None:
    """The global or unique-local IPv6 address a board would most likely use to
    reach this host, or None when it has none."""
    candidates = []
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect(("2001:db8::1", 9))  # the source the routes pick; nothing is sent
            candidates.append(s.getsockname()[0])
    except OSError:
        pass
    try:  # no route: any usable address of an interface (not tentative, deprecated, failed)
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _idx, _plen, _scope, flags = line.split()[:5]
                if int(flags, 16) & 0x68:  # IFA_F_TENTATIVE, _DEPRECATED, _DADFAILED
                    continue
                candidates.append(":".join(hexaddr[i:i + 4] for i in range(0, 32, 4)))
    except (OSError, ValueError):
        pass
    for a in candidates:
        if _usable6(a):
            return str(ipaddress.IPv6Address(a.split("%")[0]))
    return None


def banner_hosts(server: Server) -> list:
    """Server addresses for the nfsroot= and mount lines: IPv4 first, an IPv6 one
    in brackets; a dual-stack server gives both when the host has a global or
    unique-local IPv6 address."""
    family, addr = server.listen
    host = addr[0]
    if family == socket.AF_INET:
        return [host if host != "0.0.0.0" else primary_address()]
    if host != "::":
        return ["[%s]" % host]
    v6 = primary_address6()
    return [primary_address()] + (["[%s]" % v6] if v6 else [])


def banner(server: Server, out=sys.stderr) -> None:
    c = server.config
    hosts = banner_hosts(server)
    port, mport = server.port, server.mount_port
    protos = "TCP" if c.tcp_only else "TCP and UDP"
    for e in server.exports:
        path = os.fsdecode(e.name)
        rules = " ".join("%s(%s)" % (c.text, c.options) for c in e.entry.clients) or "nobody"
        where = "" if e.name == e.path else " from " + os.fsdecode(e.path)
        print("fastnfs: serving %s%s to %s over %s, NFS port %d, MOUNT port %d"
              % (path, where, rules, protos, port, mport), file=out)
        for i, host in enumerate(hosts):
            v6 = host.startswith("[")
            labels = (("board kernel argument:", "mount from Linux:") if i == 0
                      else ("board kernel IPv6:", "mount from IPv6:"))
            print("  %-22s  root=/dev/nfs nfsroot=%s:%s,v3,tcp,port=%d,mountport=%d ip=dhcp"
                  % (labels[0], host, path, port, mport), file=out)
            print("  %-22s  mount -t nfs -o vers=3,proto=%s,port=%d,mountport=%d,nolock %s:%s /mnt"
                  % (labels[1], "tcp6" if v6 else "tcp", port, mport, host, path), file=out)
    out.flush()
