#!/bin/sh
# Install what the test suite needs, then run all of it.
#   tests/run.sh [pytest args...]
# On Debian/Ubuntu it apt-installs the real clients (libnfs-utils, qemu,
# busybox-static) and build tools, as root or else through sudo; everything
# Python goes into ./.venv.  Run as root, every test runs; as another user the
# few that need root (debootstrap, serving as another uid) skip.
set -eu
cd "$(dirname "$0")/.."

AS_ROOT=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then
    AS_ROOT=sudo
fi
if { [ "$(id -u)" = 0 ] || [ -n "$AS_ROOT" ]; } && command -v apt-get >/dev/null; then
    pkgs="python3 python3-venv python3-dev gcc make libnfs-utils qemu-system-x86 busybox-static kmod cpio xz-utils zstd dpkg-dev rpcbind fakeroot pseudo util-linux"
    missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "tests/run.sh: installing$missing"
        $AS_ROOT apt-get update -qq
        $AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
fi

# Debian's python3 is readable by every user (tests run the server unprivileged too).
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# The whole suite on the Cython hot paths, then the fast tests again on the
# pure-Python twins (FASTNFS_PURE=1), as msgpack and aiohttp do, then the
# end-to-end suites with every fast-lane answer checked against the general
# path (FASTNFS_SHADOW=1).
.venv/bin/python -m pytest "$@"
FASTNFS_PURE=1 .venv/bin/python -m pytest -m "not vm and not libnfs" -q -p no:cacheprovider --benchmark-disable "$@"
FASTNFS_SHADOW=1 .venv/bin/python -m pytest -q -p no:cacheprovider --benchmark-disable \
    tests/test_libnfs.py tests/test_kernel_client.py tests/test_virtfs_e2e.py \
    tests/test_boards.py tests/test_boards_workers.py "$@"
