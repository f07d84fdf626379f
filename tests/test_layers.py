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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _load_time_imports(path: Path, known: set) -> set:
    """Modules of fastnfs a file imports when it is imported (its top level,
    including under if/try; imports inside functions are made later)."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        pkg = path.relative_to(SRC.parent).parts[:-1]
    out = set()
    stack = list(ast.parse(path.read_text()).body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.If, ast.Try)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                out.add(mod + "." + a.name if mod + "." + a.name in known else mod)
    return {m for m in out if m in known}


def test_no_import_cycles():
    """Issue #11 item 6: arrows point down; no two modules import each other,
    directly or round a loop, when they load."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: _load_time_imports(p, set(files)) - {m} for m, p in files.items()}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for d in sorted(graph[m]):
            # a package's __init__ importing its own submodule is not a loop back up
            if not (m.startswith(d + ".") and files[d].name == "__init__.py"):
                visit(d)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_compiled_modules_do_not_import_what_selects_them():
    """A Cython module never imports (even late) the module that loads it
    through _accel: what it shares with its twin is handed to it (bind)."""
    import re
    loaders = {}
    for p in SRC.rglob("*.py"):
        for name in re.findall(r'\bload\("([\w.]+)"\)', p.read_text()):
            loaders.setdefault(name, set()).add(_module_name(p))
    assert loaders, "no module loads a compiled one through _accel.load"
    for pyx in SRC.rglob("*.pyx"):
        name = _module_name(pyx).split(".", 1)[1]
        text = pyx.read_text()
        imported = set(re.findall(r"^\s*from (fastnfs[\w.]*) import (?!\*)", text, re.M))
        imported |= {m + "." + n.strip() for m, names in
                     re.findall(r"^\s*from (fastnfs[\w.]*) import ([\w, ]+)$", text, re.M)
                     for n in names.split(",")}
        imported |= set(re.findall(r"^\s*import (fastnfs[\w.]*)", text, re.M))
        bad = imported & loaders.get(name, set())
        assert not bad, "%s imports %s, which loads it" % (pyx.name, sorted(bad))
