"""The event loop's modules without OpenSSL.

``import ssl`` maps and initialises libssl and libcrypto: ~4-5 MB resident
in every server process, for TLS that fastnfs never serves (RPC over TLS,
RFC 9289, is not implemented).  asyncio does without ssl (it sets its
``ssl`` to None, as on a Python built without it); uvloop only reads a few of
its names when imported and needs them for TLS transports alone, so it gets
a stand-in.  Afterwards ``ssl`` is left unimported: a later ``import ssl``
(prometheus_client for --metrics) loads the real module.
"""

from __future__ import annotations

import sys
import types


def import_loop_modules() -> None:
    """Import asyncio and uvloop, without ssl if neither is imported yet."""
    if "ssl" in sys.modules or "asyncio" in sys.modules:
        return
    sys.modules["ssl"] = None   # "import ssl" raises ImportError
    try:
        import asyncio  # noqa: F401
        sys.modules["ssl"] = _standin()
        before = set(sys.modules)
        try:
            import uvloop  # noqa: F401
        except Exception:   # a uvloop wanting more of ssl: loaded normally later
            for name in set(sys.modules) - before:
                del sys.modules[name]
    finally:
        del sys.modules["ssl"]


def _standin() -> types.ModuleType:
    """What uvloop reads from ssl at import (uvloop/includes/stdlib.pxi)."""
    m = types.ModuleType("ssl", "stand-in: this process serves no TLS")

    class SSLError(OSError):
        pass

    m.SSLError = SSLError
    for name in ("SSLWantReadError", "SSLSyscallError", "SSLZeroReturnError",
                 "CertificateError"):
        setattr(m, name, type(name, (SSLError,), {}))
    for name in ("SSLContext", "MemoryBIO"):
        setattr(m, name, type(name, (), {}))

    def create_default_context(*_a, **_k):
        raise SSLError("fastnfs serves no TLS")

    m.create_default_context = create_default_context
    m.SSL_ERROR_WANT_READ, m.SSL_ERROR_WANT_WRITE, m.SSL_ERROR_SYSCALL = 2, 3, 5
    return m
