"""The fast lane (_fastpath.pyx) keeps only call-header decoding, the
admission-cache hit and its reasons to decline (issue #11, item 4): every
storage rule it applies is cimported from the block the general path uses
too.  These source checks fail when a rule is coded in the lane again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "fastnfs"
LANE = [SRC / "_fastpath.pyx", SRC / "_fastpath.pxd"]


def _code(path: Path) -> str:
    """The source without comments and docstrings (they may name a rule)."""
    text = re.sub(r'"""[\s\S]*?"""', "", path.read_text())
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


@pytest.fixture(scope="module")
def lane() -> str:
    return "\n".join(_code(p) for p in LANE)


def test_no_hidden_name_or_metadata_layout(lane):
    # virtfs._meta: hidden_name, meta_path_into, child_meta_path_into
    assert "virtfs_metadata" not in lane
    assert "META_DIR" not in lane and "META_ROOT" not in lane


def test_no_metadata_file_reading_or_parsing(lane):
    # the reader with its cache is virtfs._meta.meta_at (overlay.Virtfs.meta for a flawed file)
    for word in ("parse_meta", "virtfs.uid", "openat2", "MAX_META_SIZE", "lookup_stamp",
                 "Meta(", "c_read"):
        assert word not in lane, word


def test_no_device_as_file_rule(lane):
    # virtfs._meta.overlay_statx lays the metadata over a statx result
    for word in ("S_IFCHR", "S_IFBLK", "S_IFIFO", "S_IFSOCK", "stx_rdev_major =",
                 "stx_uid =", "stx_gid =", "stx_mode ="):
        assert word not in lane, word


def test_no_handle_layout(lane):
    # _handles: fh_unpack, fh_pack, fh_child_anc
    for word in ("FH_HEAD", "MAX_ANC =", "fh[", "fh +", "anc_be + 8"):
        assert word not in lane, word
    for block in ("fh_unpack", "fh_pack", "fh_child_anc"):
        assert block in lane, block


def test_no_permission_or_object_rules(lane):
    # _perm: allowed_ids, io_allowed_ids, access3_ids; _fsstat: statx_names, statx_btime_ns
    for word in ("mode >> 6", "mode >> 3", "c.uid ==", "c.uid !=", "== sx.stx_uid",
                 "stx_btime.tv_sec", "& 0xFFFFFFFF"):
        assert word not in lane, word
    for block in ("allowed_ids", "io_allowed_ids", "access3_ids", "statx_names", "hidden_name",
                  "overlay_statx", "meta_at"):
        assert block in lane, block


def test_no_board_handle_rule(lane):
    # _fsstat.names_fileid: a board's handle names a base object by fileid and generation
    for word in ("stx_ino != fh", "stx_ino == fh", "fh.ino ==", "fh.ino !=", "fh.gen ==",
                 "== fh.gen", "!= fh.gen", "fh.gen == 0"):
        assert word not in lane, word
    assert "names_fileid" in lane


def test_no_lookup_steps(lane):
    # _fsstat.lookup_dir, lookup_name, lookup_done: the steps HostPaths.walk takes (lookup_at)
    for word in ("O_PATH", "O_DIRECTORY"):
        assert word not in lane, word
    for block in ("lookup_dir", "lookup_name", "lookup_done"):
        assert block in lane, block


def test_no_read_rules(lane):
    # _xdr.read_data: the page cache only, a part declined, nothing past off_t (plain.read_reply)
    for word in ("preadv", "RWF_NOWAIT", "0x7FFFFFFFFFFFFFFF", "iovec"):
        assert word not in lane, word
    assert "read_data" in lane


def test_no_private_names_of_other_modules(lane):
    # imports and cimports of a leading-underscore name
    assert not re.search(r"c?import[^\n]*\b_[a-z]\w*\s*$", lane, re.M), "private import"
    assert not re.findall(r"import[ (]+[^\n]*,\s*_[a-z]", lane), "private import"
    # attribute access to another object's private names (self's own are fine)
    code = "\n".join(line for line in lane.splitlines()
                     if not line.lstrip().startswith(("from ", "cimport ", "import ")))
    bad = [m for m in re.findall(r"\b(\w+)\._[a-z]\w*", code) if m != "self"]
    assert not bad, bad
