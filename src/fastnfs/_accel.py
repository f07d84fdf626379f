"""The one switch between the Cython hot paths and their pure-Python twins.

Every module with a Cython twin asks ``load()`` for it, so ``FASTNFS_PURE=1``
selects pure Python everywhere at once, and an extension that fails to import
is remembered here instead of being skipped in silence: ``fastnfs serve``
prints one warning naming such modules, and the test suite fails on them
under ``FASTNFS_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import importlib
import os

#: Every compiled extension of the package (setup.py builds exactly these).
EXTENSIONS = ("_xdr", "_rpc", "_fhcache", "_fsstat", "_creds", "_listing", "_fastpath",
              "virtfs._meta", "_perm", "_handles", "_proc", "_transport")

#: FASTNFS_PURE=1: run the pure-Python twins only.
PURE = bool(os.environ.get("FASTNFS_PURE"))

#: extension -> why it could not be imported (only those that were asked for)
failed: dict[str, str] = {}


def load(name: str):
    """The extension ``fastnfs.<name>``, or None when pure Python is asked for or
    the extension cannot be imported (then the reason is kept in ``failed``)."""
    if PURE:
        return None
    try:
        return importlib.import_module("fastnfs." + name)
    except ImportError as e:
        failed[name] = str(e) or type(e).__name__
        return None


def missing() -> dict[str, str]:
    """Every extension that cannot be imported, with why (empty under FASTNFS_PURE=1)."""
    if PURE:
        return {}
    for name in EXTENSIONS:
        load(name)
    return dict(failed)


def warning() -> str | None:
    """The one line a server prints when it runs some modules in pure Python
    without being asked to (None when all are compiled, or FASTNFS_PURE=1)."""
    gone = missing()
    if not gone:
        return None
    return ("Cython extensions not available, running in pure Python (3-13x slower): %s "
            "(reinstall fastnfs with a C compiler and the Python headers)"
            % ", ".join("%s (%s)" % (n, why) for n, why in sorted(gone.items())))
