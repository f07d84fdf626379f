"""The single Cython/pure-Python switch (fastnfs._accel): a broken extension is loud.

A blocker installed through sitecustomize makes one extension fail to import in
a child process, as a build without a C compiler or a stale .so would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

BLOCKER = textwrap.dedent("""\
    import sys
    class _Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "fastnfs._fhcache":
                raise ImportError("simulated broken build of " + name)
            return None
    sys.meta_path.insert(0, _Broken())
""")


@pytest.fixture
def broken_env(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env.pop("FASTNFS_PURE", None)
    env.pop("FASTNFS_REQUIRE_ALL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT / "src")])
    return env


def test_every_extension_loads_or_pure_is_asked_for():
    from fastnfs import _accel
    if os.environ.get("FASTNFS_PURE"):
        assert _accel.missing() == {} and _accel.warning() is None
    else:
        assert _accel.missing() == {}, "Cython extensions missing: %r" % _accel.missing()


def test_pure_switch_selects_every_twin():
    code = ("import fastnfs.xdr as x, fastnfs.virtfs.meta as m, fastnfs.fhcache as f, "
            "fastnfs.rpc as r; print(x.IMPLEMENTATION, m.IMPLEMENTATION, f.FHCache.__module__, "
            "r.decode_call is r.py_decode_call)")
    env = dict(os.environ, FASTNFS_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["python", "python", "fastnfs.fhcache", "True"]


def test_broken_extension_is_named(broken_env):
    code = "from fastnfs import _accel; print(repr(_accel.warning()))"
    out = subprocess.run([sys.executable, "-c", code], env=broken_env, capture_output=True,
                         text=True, check=True).stdout
    assert "_fhcache" in out and "simulated broken build" in out
    assert "_xdr" not in out and "_rpc" not in out  # only the broken one is named


def test_serve_warns_once_which_modules_run_in_pure_python(broken_env, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "fastnfs", "serve", str(export), "-n", "0",
                          "-p", "-t", "--workers", "1"], env=broken_env,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stderr:
            lines.append(line)
            if "ready:" in line:
                break
    finally:
        p.terminate()
        p.wait(10)
    warned = [ln for ln in lines if "pure Python" in ln]
    assert len(warned) == 1, lines
    assert "WARNING" in warned[0] and "_fhcache" in warned[0]


def test_suite_refuses_to_run_on_a_broken_build_under_require_all(broken_env, tmp_path):
    (tmp_path / "test_nothing.py").write_text("def test_ok():\n    pass\n")
    env = dict(broken_env, FASTNFS_REQUIRE_ALL="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
                        "--confcutdir", str(ROOT / "tests"), str(tmp_path / "test_nothing.py"),
                        "-p", "conftest"],
                       env=dict(env, PYTHONPATH=env["PYTHONPATH"] + os.pathsep
                                + str(ROOT / "tests")),
                       capture_output=True, text=True)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "_fhcache" in r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
                        str(tmp_path / "test_nothing.py"), "-p", "conftest"],
                       env=dict(broken_env, PYTHONPATH=broken_env["PYTHONPATH"] + os.pathsep
                                + str(ROOT / "tests")),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_switch_knows_every_extension_setup_builds():
    import re

    from fastnfs import _accel
    built = re.findall(r'Extension\("fastnfs\.([\w.]+)"', (ROOT / "setup.py").read_text())
    assert sorted(built) == sorted(_accel.EXTENSIONS)
