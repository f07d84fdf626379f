"""Build the Cython hot paths; metadata lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("fastnfs._xdr", ["src/fastnfs/_xdr.pyx"]),
    Extension("fastnfs._fhcache", ["src/fastnfs/_fhcache.pyx"]),
    Extension("fastnfs._fsstat", ["src/fastnfs/_fsstat.pyx"]),
    Extension("fastnfs._creds", ["src/fastnfs/_creds.pyx"]),
    Extension("fastnfs._rpc", ["src/fastnfs/_rpc.pyx"]),
    Extension("fastnfs._fastpath", ["src/fastnfs/_fastpath.pyx"]),
    Extension("fastnfs._listing", ["src/fastnfs/_listing.pyx"]),
    Extension("fastnfs._perm", ["src/fastnfs/_perm.pyx"]),
    Extension("fastnfs._handles", ["src/fastnfs/_handles.pyx"]),
    Extension("fastnfs._proc", ["src/fastnfs/_proc.pyx"]),
    Extension("fastnfs._transport", ["src/fastnfs/_transport.pyx"]),
    Extension("fastnfs.virtfs._meta", ["src/fastnfs/virtfs/_meta.pyx"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
)
