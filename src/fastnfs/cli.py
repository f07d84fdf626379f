"""The `fastnfs` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__


def _port(s: str) -> int:
    v = int(s)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("port out of range: %s" % s)
    return v


class _Formatter(argparse.HelpFormatter):
    """argparse's, given the width it would look up with shutil (which loads
    shutil, bz2 and lzma into the server, ~0.5 MB in every process)."""

    def __init__(self, prog, **kw):
        if kw.get("width") is None:
            try:
                cols = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    cols = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    cols = 80
            kw["width"] = (cols or 80) - 2
        super().__init__(prog, **kw)


class _Parser(argparse.ArgumentParser):
    """Its subparsers are _Parsers too (add_subparsers' default class)."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="fastnfs", description="User-space NFSv3 server.")
    ap.add_argument("--version", action="version", version="fastnfs " + __version__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="serve a directory over NFSv3 and MOUNT",
        description="Serve PATH (or the exports of an exports(5) file) over NFS version 3 "
                    "and MOUNT versions 1 and 3, both programs on one port (TCP and UDP, IPv6 "
                    "and IPv4). "
                    "PATH alone is exported to every host, read-write unless --ro, with "
                    "client root not squashed and any source port accepted "
                    "(rw,no_root_squash,insecure).")
    s.add_argument("path", metavar="PATH", nargs="?", help="directory to export")
    s.add_argument("-e", "--exports", metavar="FILE",
                   help="exports file in unfsd's exports(5) syntax instead of PATH; "
                        "SIGHUP re-reads it")
    s.add_argument("-n", "--port", type=_port, default=2049,
                   help="NFS port (default 2049; 0 picks a free port)")
    s.add_argument("-m", "--mount-port", type=_port, default=None,
                   help="MOUNT port (default: the NFS port)")
    s.add_argument("-l", "--bind", default="", metavar="ADDR",
                   help="address to listen on: an IPv4 or IPv6 address (::1, [::1]) or a host "
                        "name (default: every address, IPv6 and IPv4 on one dual-stack socket, "
                        "or IPv4 only where the host has no IPv6; 0.0.0.0 is every IPv4 "
                        "address)")
    s.add_argument("-t", "--tcp-only", action="store_true", help="do not serve UDP")
    s.add_argument("-p", "--no-portmap", action="store_true",
                   help="do not register with rpcbind (clients then need port= and mountport=)")
    s.add_argument("--detach", action="store_true",
                   help="detach into the background once the ports are bound, as unfsd does; "
                        "log lines are then discarded (default: stay in the foreground, log "
                        "to stderr, stop with Ctrl-C or SIGTERM)")
    s.add_argument("-d", "--foreground", action="store_true",
                   help="stay in the foreground (the default; accepted for unfsd's -d)")
    s.add_argument("-i", "--pid-file", metavar="FILE", help="write the server's pid to FILE")
    s.add_argument("--ro", action="store_true", help="export PATH read-only")
    s.add_argument("--root-squash", action="store_true",
                   help="map client root to the anonymous ids (PATH only)")
    s.add_argument("--all-squash", action="store_true",
                   help="map every client user to the anonymous ids (PATH only)")
    s.add_argument("--anonuid", type=int, metavar="UID",
                   help="anonymous uid (default: nobody's, else 65534)")
    s.add_argument("--anongid", type=int, metavar="GID",
                   help="anonymous gid (default: nobody's group, else 65534)")
    s.add_argument("--secure", action="store_true",
                   help="accept requests only from source ports below 1024 (PATH only)")
    s.add_argument("-s", "--single-user", action="store_true",
                   help="never switch to the caller's user id, even as root; report what the "
                        "server's user owns as the caller's, the rest as root's (unfsd -s)")
    s.add_argument("-V", "--virtfs", action="store_true",
                   help="serve owners, modes and device nodes from mapped-file metadata "
                        "(.virtfs_metadata, as QEMU's 9p mapped-file and ptxdist write it)")
    s.add_argument("--pseudo", metavar="STATEDIR",
                   help="serve owners, modes and device numbers from pseudo's database "
                        "STATEDIR/files.db (Yocto: the image's pseudo/ directory, or "
                        "runqemu's DIR.pseudo_state), read without locking it; entries "
                        "without a row keep their host attributes; what clients change is "
                        "made through `pseudo` (PSEUDO_PREFIX, else the one on PATH), which "
                        "records it in files.db when fastnfs stops")
    s.add_argument("--virtfs-symlinks", choices=["auto", "qemu", "host"], default="auto",
                   help="with --virtfs, how new symlinks are stored: 'qemu' as a file holding "
                        "the target with S_IFLNK metadata (what QEMU's mapped-file guests "
                        "read), 'host' as real symlinks (ptxdist), 'auto' as the export's "
                        "existing symlinks are (default)")
    s.add_argument("--boards", metavar="DIR",
                   help="a private copy-on-write layer per board, kept under DIR: a client "
                        "mounting PATH@NAME (nfsroot=HOST:PATH@board3) gets PATH plus board "
                        "NAME's own layer, created empty on first mount; PATH itself is then "
                        "served read-only and never written (manage with 'fastnfs boards')")
    s.add_argument("--board-by-address", action="store_true",
                   help="with --boards: a client mounting PATH itself gets the layer named "
                        "after its address (10.0.0.7 -> board 10.0.0.7)")
    s.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: info")
    s.add_argument("--fhcache-size", type=int, default=262144, metavar="N",
                   help="filehandle cache entries (default 262144)")
    s.add_argument("--metacache-size", type=int, default=65536, metavar="N",
                   help="virtfs metadata cache entries (default 65536)")
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes sharing the ports (default: the number of CPUs, "
                        "%(default)s here; --pseudo serves from one)")
    s.add_argument("--max-connections", type=int, default=4096, metavar="N",
                   help="open TCP connections per worker; more are refused with a log line "
                        "(default 4096)")
    s.add_argument("--idle-timeout", type=float, default=360.0, metavar="SECONDS",
                   help="close TCP connections idle this long; 0: never (default 360)")
    s.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics over HTTP on ADDR:PORT (default: off)")
    s.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="log lines as text (default) or one JSON object per line")
    s.add_argument("--io-threads", type=int, default=8, metavar="N",
                   help="threads for blocking disk calls such as fsync (default 8)")
    st = sub.add_parser("stats", help="print the statistics of a running server",
                        description="Per-procedure calls, errors and latency, bytes, cache "
                                    "hit rates, connections and clients of the fastnfs "
                                    "serving PORT on this host (run as the same user).")
    st.add_argument("-n", "--port", type=_port, default=2049, help="its NFS port (default 2049)")
    st.add_argument("--json", action="store_true", help="print JSON instead of tables")
    v = sub.add_parser("virtfs", help="virtfs tree tools: import SRC DST, check DIR",
                       add_help=False)
    v.add_argument("args", nargs=argparse.REMAINDER)
    b = sub.add_parser("boards", help="list, diff, reset or remove board layers",
                       description="Manage the per-board layers of 'fastnfs serve PATH "
                                   "--boards DIR' (works while the server runs).")
    bs = b.add_subparsers(dest="boards_command", required=True)
    for cmd, text in (("list", "each board: size of its layer, changed/created/deleted "
                               "entries, last mount"),
                      ("diff", "what board NAME added, modified, deleted or changed only "
                               "the metadata of"),
                      ("reset", "board NAME back to the base, in O(1) (its layer is renamed "
                                "aside and removed in the background)"),
                      ("rm", "remove board NAME's layer")):
        c = bs.add_parser(cmd, help=text, description=text)
        if cmd != "list":
            c.add_argument("name", metavar="NAME")
        c.add_argument("--boards", metavar="DIR", default=os.environ.get("FASTNFS_BOARDS"),
                       required=not os.environ.get("FASTNFS_BOARDS"),
                       help="the boards directory (default: $FASTNFS_BOARDS)")
        if cmd in ("diff", "list"):
            c.add_argument("--base", metavar="PATH",
                           help="the base the boards are layered over (diff: to tell "
                                "modified from metadata-only; list: to tell layers made "
                                "against an older base)")
        if cmd == "list":
            c.add_argument("--json", action="store_true", help="print JSON")
    x = sub.add_parser("exports", help="exports file tools")
    xs = x.add_subparsers(dest="exports_command", required=True)
    xc = xs.add_parser("check", help="check an exports file: exit 0 if it is valid, else 1",
                       add_help=False)
    xc.add_argument("files", nargs=argparse.REMAINDER)
    return ap


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record):
        import json
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "pid": record.process, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s fastnfs[%(process)d] %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


def stats_main(args) -> int:
    import json

    from .stats import collect, format_table, stats_dir
    s = collect(stats_dir(args.port))
    if s is None:
        print("fastnfs: no running fastnfs on port %d publishes statistics for this user"
              % args.port, file=sys.stderr)
        return 1
    print(json.dumps(s, indent=1, sort_keys=True) if args.json else format_table(s))
    return 0


def exports_for(args):
    """(entries, exports_file) from -e FILE or PATH and the single-export options."""
    from .exports import ExportsError, load_exports, single_export

    if args.exports:
        if args.path:
            raise ExportsError(args.exports, 0, 0, "give either PATH or --exports, not both")
        path = os.path.abspath(args.exports)  # still right after daemonize() chdirs to /
        entries, warnings = load_exports(path)
        for w in warnings:
            print(w, file=sys.stderr)
        return entries, path
    if not args.path:
        raise ExportsError("<command line>", 0, 0, "give PATH or --exports FILE")
    path = os.path.realpath(args.path)
    if not os.path.isdir(path):
        raise ExportsError("<command line>", 0, 0, "%s is not a directory" % args.path)
    entry = single_export(path, rw=not args.ro, root_squash=args.root_squash,
                          all_squash=args.all_squash, anonuid=args.anonuid,
                          anongid=args.anongid, secure=args.secure)
    return [entry], None


def serve(args, base: bytes = b"") -> int:
    from .notls import import_loop_modules
    import_loop_modules()
    from .server import Config, Server, banner, run

    setup_logging(args.log_level, args.log_format)
    from . import _accel
    from .preload import detect as detect_preload
    slow = _accel.warning()
    if slow:
        logging.getLogger("fastnfs").warning("%s", slow)
    from .exports import ExportsError
    try:
        entries, exports_file = exports_for(args)
    except ExportsError as e:
        print("fastnfs: %s" % (e.message if e.line == 0 and e.filename == "<command line>" else e),
              file=sys.stderr)
        return 2
    config = Config(
        exports=entries, exports_file=exports_file, base=base,
        port=args.port, mount_port=args.mount_port,
        bind=args.bind, tcp_only=args.tcp_only, portmap=not args.no_portmap,
        foreground=not args.detach, pid_file=args.pid_file, fhcache_size=args.fhcache_size,
        metacache_size=args.metacache_size,
        single_user=args.single_user, virtfs=args.virtfs, virtfs_symlinks=args.virtfs_symlinks,
        # what clients change under --pseudo lives in one process's memory
        # (and goes to pseudo through its one helper)
        workers=1 if args.pseudo else max(1, args.workers),
        preload=None if args.virtfs else detect_preload(),
        pseudo=os.path.abspath(args.pseudo) if args.pseudo else None,
        boards=os.path.abspath(args.boards) if args.boards else None,
        board_by_address=args.board_by_address,
        max_connections=args.max_connections, idle_timeout=args.idle_timeout,
        metrics=args.metrics,
        io_threads=args.io_threads)
    if config.preload:
        logging.getLogger("fastnfs").info(
            "running under %s's LD_PRELOAD: owners, modes and device numbers are read and "
            "recorded through libc, where %s sees them (the fast lane is off)",
            config.preload, config.preload)
    if config.pseudo:
        logging.getLogger("fastnfs").info(
            "owners, modes and device numbers from %s/files.db (read without a lock; what "
            "clients change is made through pseudo, which saves it when fastnfs stops)",
            config.pseudo)
    os.umask(0)  # modes are exactly what clients ask for; they apply their own umask
    try:
        server = Server(config)
    except OSError as e:
        print("fastnfs: cannot export %s: %s" % (os.fsdecode(e.filename or b"?"), e.strerror),
              file=sys.stderr)
        return 2
    try:
        server.bind()
    except OSError as e:
        print("fastnfs: cannot listen on %s port %s: %s"
              % (args.bind or "every address,", args.port, e.strerror or e), file=sys.stderr)
        return 1
    banner(server)
    return run(server)


def boards_main(args) -> int:
    import json
    import time

    from .boards import BoardNameError, Boards, base_stamp
    try:
        bd = Boards(args.boards)
        if args.boards_command == "list":
            stamp = None
            if getattr(args, "base", None):
                fd = os.open(args.base, os.O_RDONLY | os.O_DIRECTORY)
                stamp = base_stamp(fd)
                os.close(fd)
            rows = []
            for n in bd.names():
                try:
                    i = bd.info(n)
                except Exception as e:  # a layer being made or removed right now
                    print("fastnfs: board %s: %s" % (n, e), file=sys.stderr)
                    continue
                if stamp is not None:
                    i["older_base"] = i["base_stamp"] != stamp
                rows.append(i)
            if args.json:
                print(json.dumps(rows, indent=1))
                return 0
            print("%-20s %10s %8s %8s %8s  %s" % ("BOARD", "SIZE", "CHANGED", "CREATED",
                                                  "DELETED", "LAST MOUNT"))
            for i in rows:
                lm = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i["last_mount"]))
                      if i["last_mount"] else "never")
                print("%-20s %10d %8d %8d %8d  %s%s" % (
                    i["name"], i["size"], i["changed"], i["created"], i["deleted"], lm,
                    "  (made against an older base)" if i["older_base"] else ""))
            return 0
        if args.boards_command == "diff":
            for kind, path in bd.diff(args.name, args.base):
                print("%-9s /%s" % (kind, path))
            return 0
        if args.boards_command == "reset":
            bd.reset(args.name)
            print("fastnfs: board %s reset to the base" % args.name)
            return 0
        if args.boards_command == "rm":
            bd.rm(args.name)
            print("fastnfs: board %s removed" % args.name)
            return 0
    except BoardNameError as e:
        print("fastnfs: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("fastnfs: %s" % e, file=sys.stderr)
        return 1
    return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["virtfs"]:  # its own parser, options and --help included
        from .virtfs.tools import main as virtfs_main
        return virtfs_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "stats":
        return stats_main(args)
    if args.command == "virtfs":
        from .virtfs.tools import main as virtfs_main
        return virtfs_main(args.args)
    if args.command == "boards":
        return boards_main(args)
    if args.command == "exports":
        from .exports import check_main
        return check_main(args.files)
    return 2


if __name__ == "__main__":
    sys.exit(main())
