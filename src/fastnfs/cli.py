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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastnfs", description="User-space NFSv3 server.")
    ap.add_argument("--version", action="version", version="fastnfs " + __version__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="serve a directory over NFSv3 and MOUNT",
        description="Serve PATH over NFS version 3 and MOUNT versions 1 and 3, both programs "
                    "on one port (TCP and UDP). The export is read-write unless --ro; "
                    "client root is not squashed and any source port is accepted.")
    s.add_argument("path", metavar="PATH", help="directory to export")
    s.add_argument("-n", "--port", type=_port, default=2049,
                   help="NFS port (default 2049; 0 picks a free port)")
    s.add_argument("-m", "--mount-port", type=_port, default=None,
                   help="MOUNT port (default: the NFS port)")
    s.add_argument("-l", "--bind", default="0.0.0.0", metavar="ADDR",
                   help="address to listen on (default: all)")
    s.add_argument("-t", "--tcp-only", action="store_true", help="do not serve UDP")
    s.add_argument("-p", "--no-portmap", action="store_true",
                   help="do not register with rpcbind (clients then need port= and mountport=)")
    s.add_argument("-d", "--foreground", action="store_true",
                   help="stay in the foreground and log to stderr (default: detach)")
    s.add_argument("-i", "--pid-file", metavar="FILE", help="write the server's pid to FILE")
    s.add_argument("--ro", action="store_true", help="export read-only")
    s.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: info")
    s.add_argument("--fhcache-size", type=int, default=262144, metavar="N",
                   help="filehandle cache entries (default 262144)")
    s.add_argument("--io-threads", type=int, default=8, metavar="N",
                   help="threads for blocking disk calls such as fsync (default 8)")
    return ap


def serve(args) -> int:
    from .server import Config, Server, banner, run

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s fastnfs[%(process)d] %(levelname)s %(message)s",
                        stream=sys.stderr)
    path = os.path.realpath(args.path)
    if not os.path.isdir(path):
        print("fastnfs: %s is not a directory" % args.path, file=sys.stderr)
        return 2
    config = Config(
        exports=[(path, {"ro": args.ro})], port=args.port, mount_port=args.mount_port,
        bind=args.bind, tcp_only=args.tcp_only, portmap=not args.no_portmap,
        foreground=args.foreground, pid_file=args.pid_file, fhcache_size=args.fhcache_size,
        io_threads=args.io_threads)
    os.umask(0)  # modes are exactly what clients ask for; they apply their own umask
    server = Server(config)
    try:
        server.bind()
    except OSError as e:
        print("fastnfs: cannot listen on %s port %s: %s" % (args.bind, args.port, e.strerror),
              file=sys.stderr)
        return 1
    banner(server)
    return run(server)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
