"""`fastnfs-unfsd`: unfsd's command line, so that ptxdist and Yocto can call fastnfs.

Install it as `unfsd` on PATH (a symlink named unfsd works) and

    UNFS_BASE="$(dirname NFSROOT)" unfsd -e EXPORTS -n PORT -m PORT -p -d [-V]     # ptxdist nfsroot
    unfsd -p -i PIDFILE -e EXPORTS -n PORT -m PORT                                  # Yocto runqemu

behave as with the C unfsd.  UNFS_BASE (ptxdist's patch) is prefixed to every
export path on disk while clients keep using the path written in the file.
"""

from __future__ import annotations

import getopt
import os
import sys

USAGE = """\
usage: unfsd [options]   (fastnfs, unfsd-compatible command line)
   -h          display this short option summary
   -u          use unprivileged ports for the services (random ports)
   -d          do not detach from terminal, log to stderr
   -e <file>   file to use instead of /etc/exports
   -i <file>   write daemon pid to given file
   -n <port>   port to use for NFS service (default 2049)
   -m <port>   port to use for MOUNT service (default: the NFS port)
   -t          TCP only, do not listen on UDP ports
   -p          do not register with the portmapper
   -s          single user mode: no user id switching, basic uid translation
   -b          brute force file searching (always on in fastnfs; accepted)
   -l <addr>   bind to interface with specified address
   -r          report unreadable executables as readable (accepted, no effect)
   -3          truncate fileid and cookie to 32 bits (accepted, no effect)
   -T          test exports file and exit
   -V          virtfs: serve ownership from mapped-file metadata (.virtfs_metadata)
Environment: UNFS_BASE is prefixed to every export path on disk (ptxdist).
"""


def main(argv=None) -> int:
    from .cli import build_parser, serve
    from .exports import check_main

    argv = sys.argv[1:] if argv is None else argv
    try:
        opts, rest = getopt.getopt(argv, "3bcC:de:hi:l:m:n:prsStTuV")
    except getopt.GetoptError as e:
        print("unfsd: %s" % e, file=sys.stderr)
        print(USAGE, file=sys.stderr, end="")
        return 1
    if rest:
        print("unfsd: unexpected argument %r" % rest[0], file=sys.stderr)
        return 1
    o = dict(opts)
    if "-h" in o:
        print(USAGE, end="")
        return 0
    exports = o.get("-e", "/etc/exports")
    if "-T" in o:
        return check_main([exports])
    args = ["serve", "-e", exports, "-n", o.get("-n", "2049")]
    if "-u" in o:
        args[-1] = "0"
    if "-m" in o:
        args += ["-m", o["-m"]]
    if "-p" in o:
        args.append("-p")
    if "-d" not in o:
        args.append("--detach")  # unfsd detaches unless told -d; runqemu relies on it
    if "-t" in o:
        args.append("-t")
    if "-l" in o:
        args += ["-l", o["-l"]]
    if "-i" in o:
        args += ["-i", o["-i"]]
    if "-s" in o:
        args.append("--single-user")
    if "-V" in o:
        args.append("--virtfs")
    ns = build_parser().parse_args(args)
    base = os.fsencode(os.environ.get("UNFS_BASE", "")).rstrip(b"/")
    return serve(ns, base=base)


if __name__ == "__main__":
    sys.exit(main())
