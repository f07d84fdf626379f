"""``fastnfs virtfs import`` and ``fastnfs virtfs check``: the command line.

The two commands live in their own modules: ``virtfs.importer`` (build a
virtfs tree from a directory or a tar archive) and ``virtfs.check`` (report
orphaned, missing, malformed and contradicting metadata).
"""

from __future__ import annotations

import argparse
import os
import sys

from .check import Finding, check_tree
from .importer import ImportError_, ImportResult, import_directory, import_tar, import_tree

__all__ = ["main", "import_tree", "import_directory", "import_tar", "check_tree", "Finding",
           "ImportResult", "ImportError_"]


def _owner(text: str):
    try:
        u, _, g = text.partition(":")
        uid = int(u)
        gid = int(g) if g else uid
        if not (0 <= uid < 2**32 and 0 <= gid < 2**32):
            raise ValueError
        return uid, gid
    except ValueError:
        raise argparse.ArgumentTypeError("expected UID:GID (numbers), got %r" % text) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastnfs virtfs",
                                 description="Make and check virtfs (mapped-file metadata) "
                                             "trees for `fastnfs serve --virtfs`.")
    sub = ap.add_subparsers(dest="command", required=True)
    im = sub.add_parser(
        "import", help="build a virtfs tree from a directory or a tar archive",
        description="Build the virtfs tree DST from SRC: a directory (run as root: its real "
                    "owners, modes and device nodes become metadata) or a tar archive "
                    "(.tar, .tar.gz, .tar.bz2, .tar.xz, .tar.zst if supported; '-' for stdin), "
                    "as an ordinary user.  DST must be missing or empty.  Exit status 1 if "
                    "some entries were refused (the rest is imported), 2 on a fatal error.")
    im.add_argument("src", metavar="SRC")
    im.add_argument("dst", metavar="DST")
    im.add_argument("--owner", type=_owner, metavar="UID:GID",
                    help="owner of what is written to DST (default: the user running this; "
                         "as root under sudo, SUDO_UID:SUDO_GID)")
    im.add_argument("-x", "--one-file-system", action="store_true",
                    help="directory SRC: do not descend into other file systems")
    im.add_argument("--symlinks", choices=["host", "qemu"], default="host",
                    help="write symlinks as real symlinks ('host', as ptxdist does; the "
                         "default) or as QEMU's mapped-file backend does ('qemu': a file "
                         "holding the target, with S_IFLNK in its metadata)")
    im.add_argument("-q", "--quiet", action="store_true",
                    help="no progress and no summary; refused entries are still listed")
    ck = sub.add_parser(
        "check", help="report orphaned, missing and malformed metadata",
        description="One line per problem: orphaned metadata, entries without metadata, "
                    "malformed metadata, type mismatches, and a tree that mixes QEMU-style "
                    "symlinks (files with S_IFLNK metadata) with real ones.  Exit status 1 "
                    "if any, else 0.")
    ck.add_argument("dir", metavar="DIR")
    ck.add_argument("-q", "--quiet", action="store_true", help="print nothing, only the status")
    return ap


def _default_owner():
    if os.geteuid() == 0 and os.environ.get("SUDO_UID", "").isdigit():
        gid = os.environ.get("SUDO_GID", "")
        uid = int(os.environ["SUDO_UID"])
        return uid, int(gid) if gid.isdigit() else uid
    return None


def main(argv=None) -> int:
    """``fastnfs virtfs import|check ...``; the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "check":
        try:
            findings = check_tree(args.dir)
        except OSError as e:
            print("fastnfs virtfs check: %s: %s" % (args.dir, e.strerror), file=sys.stderr)
            return 2
        if not args.quiet:
            for f in findings:
                print(f)
        return 1 if findings else 0
    owner = args.owner if args.owner is not None else _default_owner()
    if owner is not None and owner == (os.geteuid(), os.getegid()):
        owner = None
    try:
        res = import_tree(args.src, args.dst, owner=owner, one_file_system=args.one_file_system,
                          progress=not args.quiet and sys.stderr.isatty(),
                          symlinks=args.symlinks)
    except (ImportError_, OSError) as e:
        msg = str(e) if isinstance(e, ImportError_) else "%s" % e
        print("fastnfs virtfs import: %s" % msg, file=sys.stderr)
        return 2
    for name, reason in res.refused:
        print("fastnfs virtfs import: %s: refused: %s" % (name, reason), file=sys.stderr)
    if not args.quiet:
        print("fastnfs virtfs import: %d entries, %d bytes into %s%s"
              % (res.entries, res.bytes, args.dst,
                 ", %d refused" % len(res.refused) if res.refused else ""), file=sys.stderr)
    return 1 if res.refused else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

