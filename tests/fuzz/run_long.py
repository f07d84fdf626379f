"""Fuzz fastnfs for a long time: every target, on the Cython build and the pure-Python twins.

Long run (one hour, corpus and crashes kept in /var/tmp/fastnfs-fuzz)::

    python3 tests/fuzz/run_long.py --seconds 3600

Short run (what tests/test_fuzz.py does, ~60 s)::

    python3 tests/fuzz/run_long.py --seconds 60 --workdir /tmp/fz

Options: ``--targets stream,call,dispatch`` (default all), ``--modes cython,pure``
(default both), ``--parallel N`` (processes at once, default 2: the two modes
side by side), ``--engine atheris|mutate|auto`` (auto: atheris when installed,
``pip install atheris``; otherwise the built-in mutation engine of
tests/fuzz/mutate.py), ``--as-root`` (do not drop to nobody; covers the
per-thread credential switching but lets a fuzzed call act as uid 0 on the
machine, so only in a throwaway VM), ``--strict`` (known, already reported
bugs fail the run too).

``--seconds`` is the wall time of the whole run; each mode runs its targets one
after another, the time split by weight (dispatch gets the most).  Each
target runs in its own process (tests/fuzz/fuzz_worker.py) with the working
corpus in WORKDIR/<mode>/corpus-<target> (seeded from tests/fuzz/corpus and
grown by the fuzzer, so later runs continue where earlier ones stopped) and
failing inputs in WORKDIR/<mode>/crashes/.  Replay one with::

    python3 tests/fuzz/run_long.py --replay dispatch WORKDIR/cython/crashes/crash-...

It prints one summary line per process and exits non-zero on any new failure
(a known bug, see tests/fuzz/harness.py KNOWN_BUGS, is only counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEIGHTS = {"stream": 0.2, "call": 0.15, "dispatch": 0.65}
STARTUP = 2.5  # seconds a worker needs before it fuzzes


def plan(targets, seconds):
    w = sum(WEIGHTS[t] for t in targets)
    return [(t, max(2.0, seconds * WEIGHTS[t] / w - STARTUP)) for t in targets]


def run_one(target, seconds, mode, workdir: Path, engine, as_root, strict, extra):
    wd = workdir / mode
    wd.mkdir(parents=True, exist_ok=True)
    stats = wd / ("stats-%s.json" % target)
    log = wd / ("log-%s.txt" % target)
    env = dict(os.environ)
    env.pop("FASTNFS_PURE", None)
    if mode == "pure":
        env["FASTNFS_PURE"] = "1"
    if strict:
        env["FASTNFS_FUZZ_STRICT"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # the dispatch target's scratch export: tmpfs when there is one, made and
    # removed here because a libFuzzer run ends with exit(), skipping cleanups
    scratch = tempfile.mkdtemp(prefix="fastnfs-fuzz-",
                               dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    if os.geteuid() == 0 and not as_root:
        os.chown(scratch, 65534, 65534)
    env["FASTNFS_FUZZ_SCRATCH"] = scratch
    cmd = [sys.executable, str(HERE / "fuzz_worker.py"), target, "--seconds", str(seconds),
           "--workdir", str(wd), "--stats", str(stats), "--engine", engine]
    if as_root:
        cmd.append("--as-root")
    if extra:
        cmd += ["--", *extra]
    t0 = time.monotonic()
    with open(log, "wb") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(wd), env=env,
                                timeout=seconds + 120).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        finally:
            sys.path.insert(0, str(HERE))
            import harness
            harness.remove_tree(scratch)
    try:
        st = json.loads(stats.read_text())
    except (OSError, ValueError):
        st = {}
    return {"target": target, "mode": mode, "rc": rc, "wall": time.monotonic() - t0,
            "log": str(log), **st}


def reachable_by_others(path: Path) -> bool:
    """Can nobody reach path (every ancestor searchable by others)?"""
    for d in [path, *path.resolve().parents]:
        try:
            if d.exists() and not os.stat(d).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def run(targets, seconds, modes, workdir: Path, engine="auto", parallel=2, as_root=False,
        strict=False, extra=(), out=sys.stdout):
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and not as_root:
        os.chmod(workdir, 0o755)
        if not reachable_by_others(workdir):
            raise SystemExit("run_long: the workers run as nobody and cannot reach %s "
                             "(a parent directory is not searchable by others); pick another "
                             "--workdir" % workdir)
    jobs = []
    for mode in modes:
        jobs.append([(t, s, mode) for t, s in plan(targets, seconds)])
    results = []

    def lane(seq):
        for t, s, mode in seq:
            r = run_one(t, s, mode, workdir, engine, as_root, strict, list(extra))
            results.append(r)
            print("%-8s %-6s %-8s rc=%-3s %8d execs in %5.1f s  known=%s  failures=%s" % (
                r["target"], r["mode"], r.get("engine", "?"), r["rc"], r.get("execs", 0),
                r["wall"], r.get("known", {}), [f["msg"] for f in r.get("failures", [])]),
                file=out, flush=True)

    if parallel >= len(jobs):
        with ThreadPoolExecutor(len(jobs)) as ex:
            list(ex.map(lane, jobs))
    else:
        for seq in jobs:
            lane(seq)
    return results


def replay(target, paths, as_root=False) -> int:
    sys.path.insert(0, str(HERE))
    import harness as H
    if not as_root:
        H.drop_privileges()
    checked = H.Checked(H.make_target(target))
    rc = 0
    for p in paths:
        data = Path(p).read_bytes()
        try:
            checked(data)
            print("%s: ok" % p)
        except H.FuzzFailure as e:
            print("%s: %s" % (p, e))
            rc = 1
    print("known bugs hit: %s" % checked.known)
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("FASTNFS_FUZZ_SECONDS", "3600")))
    ap.add_argument("--targets", default="stream,call,dispatch")
    ap.add_argument("--modes", default="cython,pure")
    ap.add_argument("--workdir", default="/var/tmp/fastnfs-fuzz")
    ap.add_argument("--engine", default="auto", choices=("auto", "atheris", "mutate"))
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--as-root", action="store_true")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--replay", metavar="TARGET")
    ap.add_argument("rest", nargs="*", help="crash files for --replay, else libFuzzer args")
    a = ap.parse_args(argv)
    if a.replay:
        return replay(a.replay, a.rest, a.as_root)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    targets = [t for t in a.targets.split(",") if t]
    modes = [m for m in a.modes.split(",") if m]
    results = run(targets, a.seconds, modes, workdir, a.engine, a.parallel, a.as_root,
                  a.strict, a.rest)
    bad = [r for r in results if r["rc"] != 0 or r.get("failures")]
    print("%d runs, %d failed; %d execs in all; workdir %s" % (
        len(results), len(bad), sum(r.get("execs", 0) for r in results), workdir))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
