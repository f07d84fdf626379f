"""The storage boundary stays where issue #11 put it: procedures translate,
backends do the storage, imports point down (procedures -> handles ->
backends -> fs primitives)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "fastnfs"
PROCEDURES = ["attrs", "create", "fsinfo", "io", "lookup", "readdir", "remove", "program"]


def _imports(path: Path) -> set:
    """Module names a file imports, made absolute within fastnfs."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(mod + "." + a.name for a in node.names)
    return out


@pytest.mark.parametrize("name", PROCEDURES)
def test_procedures_make_no_storage_calls(name):
    path = SRC / "nfs3" / (name + ".py")
    text = path.read_text()
    imports = _imports(path)
    assert "os" not in imports, "nfs3/%s.py imports os" % name
    assert not any("virtfs" in m for m in imports), "nfs3/%s.py imports virtfs" % name
    assert "virtfs" not in text, "nfs3/%s.py mentions virtfs" % name
    assert not any(m.startswith(("fastnfs.fsstat", "fastnfs.creds", "fastnfs.perm"))
                   for m in imports), "nfs3/%s.py does storage or permission work" % name


def test_backends_do_not_import_upwards():
    for path in (SRC / "backends").glob("*.py"):
        for m in _imports(path):
            assert not m.startswith(("fastnfs.handles", "fastnfs.server", "fastnfs.dispatch",
                                     "fastnfs.nfs3.state")), (path.name, m)
            if m.startswith("fastnfs.nfs3."):
                assert m.split(".")[2] in ("const", "types"), (path.name, m)


def test_primitives_do_not_import_backends_or_virtfs():
    for name in ("fs.py", "handles.py", "fsstat.py", "fhcache.py"):
        for m in _imports(SRC / name):
            assert not m.startswith(("fastnfs.backends", "fastnfs.virtfs")), (name, m)
