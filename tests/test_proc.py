"""fastnfs._proc and its pure twin proc.py (through ctypes); fsstat.cache_pages
of both twins; and what a serving process leaves unloaded.

The twins must agree: the parent-death signal a worker sets (a worker must
not outlive its parent), malloc_trim's answer, cachestat's page count.  With
the Cython twins built a server process never loads ctypes (~0.5 MB in each
process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fastnfs import fsstat, proc

from conftest import cython_twin

_cx, _why = cython_twin("fastnfs._proc")
_fs, _fswhy = cython_twin("fastnfs._fsstat")
needs_cython = pytest.mark.skipif(_cx is None or _fs is None, reason=_why or _fswhy or "")



def _twins():
    """(name, module-like) pairs: the pure functions as defined, and the Cython ones."""
    import importlib
    pure = importlib.import_module("fastnfs.proc")
    src = open(pure.__file__).read()
    ns: dict = {"__name__": "fastnfs._proc_pure_test", "__package__": "fastnfs"}
    exec(compile(src.replace('_cx = load("_proc")', "_cx = None"), pure.__file__, "exec"), ns)
    out = [("python", ns)]
    if _cx is not None:
        out.append(("cython", vars(_cx)))
    return out


def _in_child(fn_src: str) -> str:
    """Run fn_src in a fresh interpreter; its stdout."""
    return subprocess.run([sys.executable, "-c", fn_src], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("kind", ["python", "cython"])
def test_die_with_parent_sets_the_signal(kind):
    if kind == "cython" and _cx is None:
        pytest.skip(_why)
    mod = "fastnfs._proc" if kind == "cython" else "fastnfs.proc"
    pure = "" if kind == "cython" else "import os; os.environ['FASTNFS_PURE'] = '1'; "
    out = _in_child(pure + "import signal, %s as p; before = p.parent_death_signal(); "
                    "ok = p.die_with_parent(signal.SIGTERM); "
                    "print(before, ok, p.parent_death_signal())" % mod)
    assert out == "0 True %d" % signal.SIGTERM


def test_trim_heap_twins_agree():
    answers = {kind: ns["trim_heap"]() for kind, ns in _twins()}
    assert set(answers.values()) <= {0, 1}          # glibc here: it ran


@needs_cython
def test_cache_pages_twins_agree(tmp_path):
    src = open(fsstat.__file__).read()
    ns: dict = {"__name__": "fastnfs._fsstat_pure_test", "__package__": "fastnfs"}
    exec(compile(src.replace('_cx = load("_fsstat")', "_cx = None"), fsstat.__file__, "exec"), ns)
    f = tmp_path / "f"
    f.write_bytes(os.urandom(1 << 20))
    fd = os.open(f, os.O_RDONLY)
    try:
        os.pread(fd, 1 << 20, 0)
        for off, count in ((0, 1 << 20), (4096, 8192), (123, 1), (0, 0), (1 << 30, 4096)):
            assert ns["cache_pages"](fd, off, count) == _fs.cache_pages(fd, off, count)
        assert _fs.cache_pages(fd, 0, 1 << 20) in (256, -1)   # -1: a kernel before 6.5
        assert _fs.cache_pages(-1, 0, 4096) == ns["cache_pages"](-1, 0, 4096) == -1
    finally:
        os.close(fd)


@needs_cython
def test_a_server_process_does_not_load_ctypes():
    """Everything a serving process imports, the worker's and the parent's
    paths included: no ctypes (the pure twins load it only when they run)."""
    out = _in_child(
        "import sys\n"
        "from fastnfs.notls import import_loop_modules; import_loop_modules()\n"
        "import fastnfs.cli, fastnfs.server, fastnfs.workers, fastnfs.heap\n"
        "from fastnfs import _accel; assert not _accel.missing(), _accel.missing()\n"
        "from fastnfs.backends.plain import PlainBackend\n"
        "print(sorted(m for m in sys.modules if m in ('ctypes', "
        "'fastnfs.boards', 'encodings.idna')))")
    assert out == "[]"
