"""Is this process running under fakeroot's or pseudo's LD_PRELOAD library?

ptxdist's default nfsroot starts unfsd inside ``fakeroot --``; Yocto's runqemu
starts it under ``pseudo``.  Both wrap libc: stat reports the owners, modes and
device numbers they recorded, chown/chmod/mknod are recorded instead of
refused.  Raw system calls (statx, openat2, setfsuid) go around them, so a
server under such a preload must ask libc (``backends.preload``).
"""

from __future__ import annotations

import os


def detect(environ=None) -> str | None:
    """"fakeroot", "pseudo" or None, from the environment the preload sets."""
    env = os.environ if environ is None else environ
    libs = env.get("LD_PRELOAD", "")
    if "libfakeroot" in libs or env.get("FAKEROOTKEY"):
        return "fakeroot"
    if "libpseudo" in libs and env.get("PSEUDO_UNLOAD", "") in ("", "0"):
        return "pseudo"
    return None
