"""FASTNFS_SHADOW=1: every call the fast lane answers is answered by the general
path too, and a difference in the reply bytes is logged as an error.

The general path is the reference for the Cython lane (``_fastpath``); tests
compare the two on the calls they build, and shadow mode compares them on
whatever real clients send (the kernel client, libnfs), so that a rule added to
one path and not the other shows.  The shadow answer comes from a second
dispatcher over the same programs, with its own statistics and duplicate
request cache, so counts are not doubled.  A difference is checked once more
before it is reported: another worker or an I/O thread may have changed the
object between the two answers (and if the lane then declines, it saw that
change, and nothing is reported).
"""

from __future__ import annotations

import logging
from types import CoroutineType

from .nfs3.const import NFS_PROGRAM, NFSPROC3_WRITE

log = logging.getLogger("fastnfs.shadow")

MARK = "shadow mismatch"   # tests look for this in the log
# a WRITE3resok with both attributes after the reply header (24 bytes) and the
# status: before (4 + wcc_attr 24) ends at 56, after's fields up to atime at
# 120, its times up to 144; then count, committed and the verifier
_WRITE_OK_LEN = 160


def comparable(call: bytes, reply: bytes | None):
    """What of a reply the two paths must agree on.  A WRITE is done twice
    (the shadow writes the same bytes again, after the lane): its times move
    and its before is the lane's after, so those are left out of a WRITE3resok
    (RFC 1813 section 3.3.7: wcc_data's before, the after's atime, mtime and ctime)."""
    if reply is None or int.from_bytes(call[20:24], "big") != NFSPROC3_WRITE \
            or int.from_bytes(call[12:16], "big") != NFS_PROGRAM or len(reply) != _WRITE_OK_LEN \
            or reply[24:28] != b"\0\0\0\0":
        return reply
    return reply[:28] + reply[56:120] + reply[144:]


class ShadowLane:
    """Stands where the fast lane stands (``answer``) and checks it against the
    general path."""

    def __init__(self, lane, general, outer):
        self.lane = lane
        self.general = general        # a Dispatcher of its own over the same programs
        self.outer = outer            # the server's, whose I/O pool the shadow shares
        self.compared = 0
        self.mismatches = 0
        log.info("FASTNFS_SHADOW=1: every fast-lane answer is checked against the general path")

    # the transports and stats use these of the lane
    def __getattr__(self, name):
        return getattr(self.lane, name)

    def answer(self, record, peer, offset=0, mark=False):
        r = self.lane.answer(record, peer, offset, mark)
        if r is not None:
            call = bytes(memoryview(record)[offset:])
            self._compare(call, peer, mark, r[4:] if mark else r, retry=True)
        return r

    def _compare(self, call: bytes, peer, mark: bool, fast: bytes, retry: bool) -> None:
        self.general.executor = self.outer.executor
        g = self.general.dispatch(call, peer, "tcp" if mark else "udp")
        if type(g) is CoroutineType:
            import asyncio
            fut = asyncio.ensure_future(g)
            fut.add_done_callback(lambda f: self._check(call, peer, mark, fast,
                                                        None if f.exception() else f.result(),
                                                        retry))
            return
        self._check(call, peer, mark, fast, g, retry)

    def _check(self, call, peer, mark, fast: bytes, packer, retry: bool) -> None:
        general = bytes(packer.getbuffer()[4:]) if packer is not None else None
        self.compared += 1
        if comparable(call, general) == comparable(call, fast):
            return
        if retry:   # changed in between?  ask both again
            again = self.lane.answer(call, peer, 0, mark)
            if again is None:
                # the lane now declines: it saw the change (a board layer's
                # generation moved), so the first answer raced with it
                log.debug("shadow: call %s from %s declined on retry", call[:64].hex(), peer[0])
                return
            self._compare(call, peer, mark, again[4:] if mark else again, retry=False)
            return
        self.mismatches += 1
        log.error("%s: call %s from %s: fast lane %s, general path %s", MARK, call[:64].hex(),
                  peer[0], fast.hex(), general.hex() if general is not None else None)
