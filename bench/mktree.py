#!/usr/bin/env python3
"""Make a rootfs-like tree for the benchmarks (deterministic: same seed, same tree).

    python3 bench/mktree.py /tmp/fastnfs-bench/tree            # ~10,000 entries
    python3 bench/mktree.py --entries 2000 /tmp/small-tree

Layout: bin/ sbin/ lib/ usr/{bin,lib,share}/ etc/ with symlinks (busybox-style
applet links, libfoo.so -> libfoo.so.1.2.3), small files of 100 B - 8 KiB and a
few 1 - 4 MiB "binaries".  Prints the number of entries made.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys

# share of the entries that go into each top-level area (the rest goes to usr/share)
AREAS = [("bin", 0.03), ("sbin", 0.015), ("lib", 0.04), ("etc", 0.03),
         ("usr/bin", 0.08), ("usr/sbin", 0.02), ("usr/lib", 0.25)]
BIG = [("bin/busybox", 2), ("lib/libc.so.6", 2), ("usr/lib/libcrypto.so.3", 4),
       ("usr/bin/python3.11", 3), ("usr/lib/libLLVM.so.15", 1)]  # (path, MiB)
STAMP = ".fastnfs-bench-tree"


def _small(rng: random.Random) -> bytes:
    n = int(rng.uniform(100, 8192))
    return rng.randbytes(n)


def make_tree(root: str, entries: int = 10000, seed: int = 1) -> int:
    rng = random.Random(seed)
    stamp = os.path.join(root, STAMP)
    want = "%d %d\n" % (entries, seed)
    if os.path.exists(stamp) and open(stamp).read() == want:
        return sum(len(d) + len(f) for _r, d, f in os.walk(root)) - 1
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    count = 0

    def mkdir(p):
        nonlocal count
        os.makedirs(os.path.join(root, p), exist_ok=True)
        count += 1

    def write(p, data):
        nonlocal count
        with open(os.path.join(root, p), "wb") as f:
            f.write(data)
        count += 1

    def link(target, p):
        nonlocal count
        os.symlink(target, os.path.join(root, p))
        count += 1

    for d in ("bin", "sbin", "lib", "etc", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/share",
              "dev", "proc", "sys", "tmp", "var", "var/log", "root", "home"):
        mkdir(d)
    for p, mib in BIG:
        blob = rng.randbytes(1 << 20)
        write(p, blob * mib)
    for area, share in AREAS:
        n = int(entries * share)
        made = 0
        sub = area
        while made < n:
            if area in ("usr/lib", "etc") and made % 40 == 0 and made:
                sub = "%s/%s%d" % (area, rng.choice(["pkg", "conf", "mod", "gconv"]), made)
                mkdir(sub)
                made += 1
                continue
            r = rng.random()
            name = "%s%d" % (rng.choice(["ls", "cat", "sh", "ip", "mount", "lib", "x", "udev"]),
                             made)
            if area in ("bin", "sbin", "usr/bin", "usr/sbin") and r < 0.6:
                link("/bin/busybox", "%s/%s" % (sub, name))
            elif area.endswith("lib") and r < 0.3:
                real = "%s.so.1.2.%d" % (name, made)
                write("%s/%s" % (sub, real), _small(rng))
                link(real, "%s/%s.so.1" % (sub, name))
                made += 1
            else:
                write("%s/%s" % (sub, name), _small(rng))
            made += 1
    # usr/share: nested doc/man/locale style directories up to the entry count
    i = 0
    while count < entries:
        top = "usr/share/%s" % rng.choice(["doc", "man", "locale", "terminfo", "zoneinfo", "i18n"])
        if not os.path.isdir(os.path.join(root, top)):
            mkdir(top)
            continue
        sub = "%s/d%d" % (top, i)
        mkdir(sub)
        for j in range(min(rng.randint(3, 25), max(1, entries - count))):
            if rng.random() < 0.05:
                link("../d%d" % max(0, i - 1), "%s/ln%d" % (sub, j))
            else:
                write("%s/f%d" % (sub, j), _small(rng))
        i += 1
    with open(stamp, "w") as f:
        f.write(want)
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    n = make_tree(os.path.abspath(a.root), a.entries, a.seed)
    print("%s: %d entries" % (a.root, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
