"""Run one fuzz target in this process (started by run_long.py and tests/test_fuzz.py).

    python3 tests/fuzz/fuzz_worker.py TARGET --seconds N --workdir DIR [--engine atheris|mutate]
                                      [--as-root] [--stats FILE] [-- libFuzzer args...]

Set FASTNFS_PURE=1 in the environment for the plain-Python twins.  When
started as root it becomes nobody (65534) before importing fastnfs, unless
--as-root: the dispatch target runs real CREATE/WRITE/REMOVE... calls, and
as nobody they cannot reach anything outside its scratch export even if the
server had a path-escape bug.  WORKDIR/corpus-TARGET holds the working corpus
(seeded from tests/fuzz/corpus), WORKDIR/crashes the failing inputs.

With atheris (coverage-guided libFuzzer) the first failure stops the run,
writes crash-<sha1> there and exits non-zero; the built-in mutation engine
(used when atheris is not installed) keeps going and writes every new
failure kind.  Failures of known, reported server bugs (harness.KNOWN_BUGS)
are only counted.  A JSON stats file is refreshed every second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness as H  # noqa: E402  (no fastnfs import yet)
import mutate as M   # noqa: E402


class Stats:
    def __init__(self, path, target, engine):
        self.path = path
        self.d = {"target": target, "engine": engine, "execs": 0, "known": {},
                  "failures": [], "started": time.time(), "pure": bool(os.environ.get("FASTNFS_PURE"))}
        self.last = 0.0

    def update(self, checked, force=False):
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        self.d["execs"] = checked.execs
        self.d["known"] = dict(checked.known)
        self.d["elapsed"] = time.time() - self.d["started"]
        t = checked.target
        if hasattr(t, "outcomes"):
            self.d["outcomes"] = len(t.outcomes)
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.d, f)
            os.replace(tmp, self.path)


def save_crash(workdir: Path, data: bytes, exc) -> Path:
    d = workdir / "crashes"
    d.mkdir(parents=True, exist_ok=True)
    p = d / ("crash-%s" % hashlib.sha1(data).hexdigest())
    p.write_bytes(data)
    (d / (p.name + ".txt")).write_text("%s\n" % exc)
    return p


def prepare_corpus(workdir: Path, target: str) -> Path:
    d = workdir / ("corpus-" + target)
    d.mkdir(parents=True, exist_ok=True)
    for s in H.seeds_for(target):
        p = d / ("seed-" + hashlib.sha1(s).hexdigest()[:16])
        if not p.exists():
            p.write_bytes(s)
    return d


def run_mutate(checked, corpus: Path, seconds: float, stats: Stats, workdir: Path,
               seed: int) -> int:
    rng = random.Random(seed)
    pool = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.is_file()]
    pool = [p for p in pool if len(p) <= H.MAX_INPUT] or [b""]
    kinds = set()
    rc = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = rng.random()
        if r < 0.05:
            data = M.random_record(rng)
            if stats.d["target"] == "call":
                data = data[8:]
            elif stats.d["target"] == "stream":
                data = bytes([rng.randrange(256)]) + H.frame(data)
        else:
            data = M.mutate(rng, rng.choice(pool), rng.choice(pool))
        try:
            checked(data)
        except H.FuzzFailure as e:
            if e.kind not in kinds:
                kinds.add(e.kind)
                p = save_crash(workdir, data, e)
                print("FAILURE %s (input %s)" % (e, p), flush=True)
                stats.d["failures"].append({"kind": e.kind, "msg": str(e), "input": str(p)})
            rc = 1
        stats.update(checked)
    stats.update(checked, force=True)
    return rc


def run_atheris(checked, corpus: Path, seconds: float, stats: Stats, workdir: Path,
                extra: list) -> int:
    import atheris

    def one(data: bytes):
        try:
            checked(data)
        except H.FuzzFailure as e:
            p = save_crash(workdir, data, e)
            stats.d["failures"].append({"kind": e.kind, "msg": str(e), "input": str(p)})
            stats.update(checked, force=True)
            raise
        stats.update(checked)

    (workdir / "crashes").mkdir(exist_ok=True)
    args = [sys.argv[0], str(corpus), "-max_total_time=%d" % max(1, int(seconds)),
            "-max_len=%d" % H.MAX_INPUT, "-rss_limit_mb=2048", "-timeout=20",
            "-artifact_prefix=%s/" % (workdir / "crashes"), "-print_final_stats=1",
            *extra]
    atheris.Setup(args, one)
    atheris.Fuzz()  # exits the process
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=H.TARGETS)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    ap.add_argument("--as-root", action="store_true")
    ap.add_argument("--stats")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args(argv)

    workdir = Path(a.workdir)
    corpus = prepare_corpus(workdir, a.target)
    (workdir / "crashes").mkdir(exist_ok=True)
    if not a.as_root and os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(workdir):
            for n in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
                os.chown(n, 65534, 65534)
    if not a.as_root and H.drop_privileges():
        print("fuzz_worker: running as nobody", flush=True)
    engine = a.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "mutate"
    stats = Stats(a.stats, a.target, engine)
    if engine == "atheris":
        import atheris
        with atheris.instrument_imports(include=["fastnfs"]):
            import fastnfs.xdr  # noqa: F401
            target = H.make_target(a.target)
    else:
        target = H.make_target(a.target)
    from fastnfs import xdr
    stats.d["xdr"] = xdr.IMPLEMENTATION
    print("fuzz_worker: target %s, engine %s, xdr %s, %.0f s" % (
        a.target, engine, xdr.IMPLEMENTATION, a.seconds), flush=True)
    checked = H.Checked(target)
    stats.update(checked, force=True)
    if engine == "atheris":
        return run_atheris(checked, corpus, a.seconds, stats, workdir, a.extra)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    print("fuzz_worker: mutation seed %d" % seed, flush=True)
    return run_mutate(checked, corpus, a.seconds, stats, workdir, seed)


if __name__ == "__main__":
    sys.exit(main())
