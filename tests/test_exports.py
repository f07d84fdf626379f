"""Tests for fastnfs.exports: the exports(5) parser, client matching and squashing.

tests/exports_corpus/NAME.exports is parsed as file "NAME.exports" and compared
with NAME.expected (JSON):

    {"exports": [{"path": "/srv", "line": 1,
                  "clients": [[TEXT, [NETWORK, ...], {OPTION: VALUE, ...}], ...]}, ...],
     "warnings": ["NAME.exports:L:C: warning: ...", ...]}
or
    {"error": "NAME.exports:L:C: message"}

TEXT is the client as written ("" = everyone); only options that differ from
ExportOptions() are listed. Hostnames are resolved by FAKE_HOSTS below, not DNS.
`python3 tests/test_exports.py --regen` rewrites every .expected file from the
current parser (review the diff!).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fastnfs import exports as ex  # noqa: E402
from fastnfs.exports import (  # noqa: E402
    DEFAULT_ANONGID, DEFAULT_ANONUID, ClientSpec, ExportEntry, ExportOptions, ExportsError,
    ExportsWarning, check_main, load_exports, parse_exports, single_export, squash,
)

CORPUS = Path(__file__).resolve().parent / "exports_corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.exports"))

FAKE_HOSTS = {
    "localhost": ["127.0.0.1"],
    "trusted": ["10.1.1.1"],
    "bar": ["10.2.2.2"],
    "joes_pc": ["10.3.3.3"],
    "board": ["192.168.7.2"],
    "multi": ["10.9.0.1", "10.9.0.2"],
}


def fake_resolve(name):
    try:
        return list(FAKE_HOSTS[name.lower()])
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


@pytest.fixture
def fake_dns(monkeypatch):
    monkeypatch.setattr(ex, "_resolve", fake_resolve)


def describe(name: str) -> dict:
    text = (CORPUS / (name + ".exports")).read_bytes().decode()
    try:
        entries, warnings = parse_exports(text, name + ".exports")
    except ExportsError as e:
        return {"error": str(e)}
    default = ExportOptions()
    out = []
    for e in entries:
        clients = []
        for c in e.clients:
            opts = {f.name: getattr(c.options, f.name) for f in dataclasses.fields(c.options)
                    if getattr(c.options, f.name) != getattr(default, f.name)}
            clients.append([c.text, [str(n) for n in c.networks], opts])
        out.append({"path": os.fsdecode(e.path), "line": e.line, "clients": clients})
    return {"exports": out, "warnings": [str(w) for w in warnings]}


# ---------------------------------------------------------------------------
# the corpus

def test_corpus_is_big_enough():
    assert len(CASES) >= 25
    assert sum(n.startswith("err_") for n in CASES) >= 10
    for name in CASES:
        assert (CORPUS / (name + ".expected")).exists(), name


@pytest.mark.parametrize("name", CASES)
def test_corpus(name, fake_dns):
    expected = json.loads((CORPUS / (name + ".expected")).read_text())
    assert describe(name) == expected
    # errors are exactly the error cases, and say FILE:LINE:COL
    assert ("error" in expected) == name.startswith("err_")


@pytest.mark.parametrize("name", CASES)
def test_corpus_through_check_main(name, fake_dns, capsys):
    expected = json.loads((CORPUS / (name + ".expected")).read_text())
    path = str(CORPUS / (name + ".exports"))
    rc = check_main([path])
    out, err = capsys.readouterr()
    if "error" in expected:
        assert rc == 1
        assert out == ""
        # same message, with the path as given instead of the bare name
        assert err.splitlines()[-1] == expected["error"].replace(name + ".exports", path, 1)
    else:
        assert rc == 0
        assert out == "%s: %d exports OK\n" % (path, len(expected["exports"]))
        assert err.splitlines() == [w.replace(name + ".exports", path, 1)
                                    for w in expected["warnings"]]


def test_ptxdist_and_yocto_lines(fake_dns):
    (e,), w = parse_exports("/ (rw,no_root_squash)\n")
    assert w == [] and e.path == b"/"
    assert e.options_for("192.168.7.2") == ExportOptions(rw=True, root_squash=False)
    (e,), w = parse_exports('"/path/to/rootfs" (rw,no_root_squash,no_all_squash,insecure)\n')
    assert w == [] and e.path == b"/path/to/rootfs"
    assert e.options_for("10.0.2.15") == ExportOptions(rw=True, root_squash=False, secure=False)


# ---------------------------------------------------------------------------
# errors and warnings as objects

def test_error_attributes_and_str():
    with pytest.raises(ExportsError) as ei:
        parse_exports("# c\n\n/srv/rootfs 10.0.0.1(rw\n", "exports")
    e = ei.value
    assert (e.filename, e.line, e.column) == ("exports", 3, 24)
    assert e.message == "expected ')' after options"
    assert str(e) == "exports:3:24: expected ')' after options"


def test_error_columns_point_at_the_culprit():
    cases = {
        "/srv 10.0.0.0/33\n": (1, 15, "bad prefix length '/33'"),
        "/srv 300.1.1.1\n": (1, 6, "bad IPv4 address '300.1.1.1'"),
        "/srv (anonuid=abc)\n": (1, 15, "anonuid needs a number"),
        "/a\n  \"/srv x\n": (2, 3, "unterminated quoted path"),
        "/a\nrel/path\n": (2, 1, "export path must be absolute"),
        "/srv 10.0.0.0/255.0.255.0\n": (1, 15, "bad netmask '255.0.255.0'"),
    }
    for text, (line, col, msg) in cases.items():
        with pytest.raises(ExportsError) as ei:
            parse_exports(text, "f")
        assert (ei.value.line, ei.value.column) == (line, col), text
        assert msg in ei.value.message, text


def test_warning_str_and_fields(fake_dns):
    _, (w,) = parse_exports("/srv (rw,rx)\n", "exports")
    assert isinstance(w, ExportsWarning) and isinstance(w, tuple)
    assert (w.filename, w.line, w.column) == ("exports", 1, 10)
    assert w.message == "unknown option 'rx' ignored"
    assert str(w) == "exports:1:10: warning: unknown option 'rx' ignored"


def test_error_keeps_earlier_warnings(fake_dns):
    with pytest.raises(ExportsError) as ei:
        parse_exports("/a (rx)\n/b (anonuid=x)\n", "f")
    assert [str(w) for w in ei.value.warnings] == ["f:1:5: warning: unknown option 'rx' ignored"]


def test_space_before_paren_pitfall(fake_dns):
    (e,), (w,) = parse_exports("/srv board (rw)\n", "f")
    assert [c.text for c in e.clients] == ["board", ""]
    assert e.options_for("192.168.7.2") == ExportOptions()          # board: read-only!
    assert e.options_for("10.0.0.9") == ExportOptions(rw=True)      # everyone else rw
    assert (w.line, w.column) == (1, 12)
    assert "'board (rw)' is two client specifications" in w.message
    assert "'board(rw)'" in w.message


def test_unresolvable_hostname_warns_and_matches_nothing(fake_dns):
    (e,), (w,) = parse_exports("/srv nosuchhost(rw) 10.0.0.1\n", "f")
    assert e.clients[0].networks == () and not e.clients[0].matches("10.0.0.1")
    assert "cannot resolve hostname 'nosuchhost'" in w.message
    assert e.options_for("10.0.0.1") == ExportOptions()


def test_localhost_resolves_for_real():
    (e,), w = parse_exports("/srv localhost(rw)\n")
    assert w == []
    assert e.options_for("127.0.0.1") == ExportOptions(rw=True)
    assert e.options_for("::ffff:127.0.0.1") == ExportOptions(rw=True)
    assert e.options_for("10.0.0.1") is None


def test_localhost_offline_fallback(monkeypatch):
    def broken(*a, **k):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", broken)
    (e,), w = parse_exports("/srv localhost(rw) other(rw)\n")
    assert e.clients[0].matches("127.0.0.1")
    assert [x.message.split(" (")[0] for x in w] == ["cannot resolve hostname 'other'"]


def test_hostnames_resolved_once_per_parse(monkeypatch):
    calls = []

    def counting(name):
        calls.append(name)
        return ["10.0.0.7"]
    monkeypatch.setattr(ex, "_resolve", counting)
    parse_exports("/a board(rw)\n/b board\n/c BOARD\n")
    assert calls == ["board"]


# ---------------------------------------------------------------------------
# load_exports

def test_load_exports_reads_file(tmp_path, fake_dns):
    p = tmp_path / "exports"
    p.write_bytes(b"/srv/\xffbin (rw)\n")      # non-UTF-8 path bytes survive
    (e,), w = load_exports(str(p))
    assert e.path == b"/srv/\xffbin" and e.filename == str(p) and e.line == 1


def test_load_exports_unreadable(tmp_path):
    p = tmp_path / "missing"
    with pytest.raises(ExportsError) as ei:
        load_exports(str(p))
    assert ei.value.line == 0 and ei.value.filename == str(p)
    assert str(ei.value).startswith(str(p) + ":0:0: cannot read exports file: ")
    with pytest.raises(ExportsError) as ei:
        load_exports(str(tmp_path))            # a directory
    assert ei.value.line == 0


# ---------------------------------------------------------------------------
# ClientSpec.matches

@pytest.mark.parametrize("spec,yes,no", [
    ("10.0.0.0/8", ["10.0.0.0", "10.255.255.255", "10.1.2.3", "::ffff:10.9.9.9"],
     ["9.255.255.255", "11.0.0.0", "::10.1.2.3", "fe80::1"]),
    ("0.0.0.0/0", ["0.0.0.0", "255.255.255.255", "1.2.3.4", "::ffff:1.2.3.4"], ["fe80::1"]),
    ("10.1.2.3/32", ["10.1.2.3", "::ffff:10.1.2.3"], ["10.1.2.2", "10.1.2.4"]),
    ("10.1.2.3/31", ["10.1.2.2", "10.1.2.3"], ["10.1.2.1", "10.1.2.4"]),
    ("10.1.2.3/1", ["0.0.0.0", "127.255.255.255"], ["128.0.0.0"]),
    ("10.1.2.3", ["10.1.2.3"], ["10.1.2.30", "10.1.2.4"]),
    ("10.0.0.0/255.0.0.0", ["10.0.0.1", "10.200.0.0"], ["11.0.0.1"]),
    ("192.168.1.128/255.255.255.128", ["192.168.1.128", "192.168.1.255"],
     ["192.168.1.127", "192.168.2.128"]),
    ("10.1.2.3/255.255.255.255", ["10.1.2.3"], ["10.1.2.2"]),
    ("1.2.3.4/0.0.0.0", ["9.9.9.9", "255.255.255.255"], []),
    ("192.168.1.77/255.255.255.0", ["192.168.1.1"], ["192.168.2.77"]),
    ("fe80::/64", ["fe80::1", "fe80::ffff:1"], ["fe81::1", "10.0.0.1"]),
    ("::ffff:10.0.0.0/104", ["10.1.1.1", "::ffff:10.1.1.1"], ["11.1.1.1"]),
    ("::/0", ["10.0.0.1", "::1"], []),
    ("", ["1.2.3.4", "::1", "::ffff:1.2.3.4"], ["not-an-address", "1.2.3", ""]),
])
def test_matches(spec, yes, no):
    c = ClientSpec(spec, ExportOptions())
    for a in yes:
        assert c.matches(a), (spec, a)
    for a in no:
        assert not c.matches(a), (spec, a)


def test_matches_rejects_garbage_addresses():
    c = ClientSpec("10.0.0.0/8", ExportOptions())
    for a in ["10.0.0", "10.0.0.256", "", "host", "10.0.0.1/8"]:
        assert not c.matches(a)


def test_clientspec_direct_construction_validates():
    for bad in ["10.0.0.0/33", "300.1.1.1", "10.0.0.0/255.0.255.0", "*", "@ng"]:
        with pytest.raises(ValueError):
            ClientSpec(bad, ExportOptions())


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 2**32 - 1))
def test_prefix_matches_like_ipaddress(net, prefix, addr):
    import ipaddress
    spec = "%s/%d" % (ipaddress.IPv4Address(net), prefix)
    mask_spec = "%s/%s" % (ipaddress.IPv4Address(net),
                           ipaddress.IPv4Network("0.0.0.0/%d" % prefix).netmask)
    a = str(ipaddress.IPv4Address(addr))
    want = ipaddress.IPv4Address(addr) in ipaddress.IPv4Network(spec, strict=False)
    assert ClientSpec(spec, ExportOptions()).matches(a) == want
    assert ClientSpec(mask_spec, ExportOptions()).matches(a) == want
    assert ClientSpec(spec, ExportOptions()).matches("::ffff:" + a) == want


# ---------------------------------------------------------------------------
# options_for

def test_options_for_first_match_wins(fake_dns):
    (e,), _ = parse_exports(
        "/export 10.0.0.1(rw,no_root_squash) 10.0.0.0/24(rw) 10.0.0.0/8 (ro,all_squash)\n")
    assert e.options_for("10.0.0.1") == ExportOptions(rw=True, root_squash=False)
    assert e.options_for("10.0.0.2") == ExportOptions(rw=True)
    assert e.options_for("10.1.0.2") == ExportOptions()
    assert e.options_for("192.168.0.1") == ExportOptions(all_squash=True)


def test_options_for_refuses_unlisted_clients(fake_dns):
    (e,), _ = parse_exports("/srv 10.0.0.0/8(rw) board\n")
    assert e.options_for("192.168.7.2") == ExportOptions()
    assert e.options_for("192.168.7.3") is None
    assert e.options_for("garbage") is None


def test_options_for_across_lines_of_the_same_path(fake_dns):
    entries, warnings = parse_exports("/srv 10.0.0.1(rw)\n/other\n/srv/ 10.0.0.0/8\n", "f")
    assert [x.path for x in entries] == [b"/srv", b"/other"]
    srv = entries[0]
    assert srv.line == 1 and [c.line for c in srv.clients] == [1, 3]
    assert srv.options_for("10.0.0.1") == ExportOptions(rw=True)    # first line wins
    assert srv.options_for("10.0.0.2") == ExportOptions()           # second line
    assert srv.options_for("11.0.0.2") is None
    assert warnings == []


def test_everyone_spec_when_no_clients():
    (e,), _ = parse_exports("/srv\n")
    assert [c.text for c in e.clients] == [""]
    assert e.options_for("1.2.3.4") == ExportOptions() and e.options_for("::1") is not None


# ---------------------------------------------------------------------------
# single_export

def test_single_export_defaults():
    e = single_export("/srv/rootfs/")
    assert isinstance(e, ExportEntry) and e.path == b"/srv/rootfs"
    o = e.options_for("192.168.7.2")
    assert o == ExportOptions(rw=True, root_squash=False, secure=False)
    assert o.anonuid == DEFAULT_ANONUID and o.anongid == DEFAULT_ANONGID
    assert e.options_for("::1") == o


def test_single_export_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = single_export("rootfs", rw=False, root_squash=True, all_squash=True, anonuid=1000,
                      anongid=100, secure=True)
    assert e.path == os.fsencode(str(tmp_path / "rootfs"))
    assert e.options_for("10.0.0.1") == ExportOptions(all_squash=True, anonuid=1000,
                                                      anongid=100)
    assert single_export(b"/a/b").path == b"/a/b"
    with pytest.raises(ValueError):
        single_export("/x", anonuid=-1)


def test_default_anon_ids():
    import grp
    import pwd
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        uid = 65534
    gid = 65534
    for g in ("nobody", "nogroup"):
        try:
            gid = grp.getgrnam(g).gr_gid
            break
        except KeyError:
            pass
    assert (DEFAULT_ANONUID, DEFAULT_ANONGID) == (uid, gid)
    assert ExportOptions().anonuid == DEFAULT_ANONUID


# ---------------------------------------------------------------------------
# squash

ANON = dict(anonuid=1234, anongid=4321)


@pytest.mark.parametrize("root_squash,all_squash,cred,want", [
    # no squashing at all: identity
    (False, False, (0, 0, (0, 5)), (0, 0, (0, 5))),
    (False, False, (1000, 100, (5,)), (1000, 100, (5,))),
    # root_squash: each zero id becomes anonymous, independently
    (True, False, (0, 0, (0, 5, 0)), (1234, 4321, (4321, 5, 4321))),
    (True, False, (0, 100, (5,)), (1234, 100, (5,))),
    (True, False, (1000, 0, ()), (1000, 4321, ())),
    (True, False, (1000, 100, (5, 6)), (1000, 100, (5, 6))),
    # all_squash: everyone anonymous, with or without root_squash
    (True, True, (1000, 100, (5, 6)), (1234, 4321, ())),
    (False, True, (0, 0, (0,)), (1234, 4321, ())),
])
def test_squash_table(root_squash, all_squash, cred, want):
    opts = ExportOptions(root_squash=root_squash, all_squash=all_squash, **ANON)
    assert squash(opts, *cred) == want


ids = st.integers(0, 2**32 - 2)
gid_lists = st.lists(ids, max_size=16).map(tuple)


@given(ids, ids, gid_lists, st.booleans(), ids, ids)
def test_squash_all_squash_always_anon(uid, gid, gids, root_squash, au, ag):
    opts = ExportOptions(all_squash=True, root_squash=root_squash, anonuid=au, anongid=ag)
    u, g, gs = squash(opts, uid, gid, gids)
    assert (u, g) == (au, ag) and all(x == ag for x in gs)


@given(ids, ids, gid_lists, ids, ids)
def test_squash_identity_without_squashing(uid, gid, gids, au, ag):
    opts = ExportOptions(root_squash=False, all_squash=False, anonuid=au, anongid=ag)
    assert squash(opts, uid, gid, gids) == (uid, gid, gids)


@given(ids, ids, gid_lists, ids, ids)
def test_squash_root_squash_never_leaves_root(uid, gid, gids, au, ag):
    opts = ExportOptions(root_squash=True, anonuid=au, anongid=ag)
    u, g, gs = squash(opts, uid, gid, gids)
    assert u == (au if uid == 0 else uid)
    assert g == (ag if gid == 0 else gid)
    assert gs == tuple(ag if x == 0 else x for x in gids)


# ---------------------------------------------------------------------------
# check_main

def run_check(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = check_main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_check_main_ok(tmp_path, fake_dns):
    p = tmp_path / "exports"
    p.write_text("/a (rw)\n/b 10.0.0.0/8(rw,sync)\n")
    rc, out, err = run_check([str(p)])
    assert rc == 0
    assert out == "%s: 2 exports OK\n" % p
    assert err == "%s:2:18: warning: option 'sync' ignored (a Linux kernel NFS server option;" \
                  " unfsd and fastnfs have no such setting)\n" % p


def test_check_main_error(tmp_path, fake_dns):
    p = tmp_path / "exports"
    p.write_text("/a (rx)\n/b (anonuid=abc)\n")
    rc, out, err = run_check([str(p)])
    assert rc == 1 and out == ""
    assert err.splitlines() == [
        "%s:1:5: warning: unknown option 'rx' ignored" % p,
        "%s:2:13: anonuid needs a number (anonuid=N), got 'abc'" % p]


def test_check_main_missing_file_and_several_files(tmp_path):
    good = tmp_path / "good"
    good.write_text("/srv\n")
    missing = tmp_path / "missing"
    rc, out, err = run_check([str(good), str(missing)])
    assert rc == 1
    assert out == "%s: 1 exports OK\n" % good
    assert err.startswith("%s:0:0: cannot read exports file: " % missing)


def test_check_main_usage():
    rc, out, err = run_check([])
    assert rc == 1 and "usage: fastnfs exports check FILE" in err
    rc, out, err = run_check(["--bogus"])
    assert rc == 1 and "usage" in err
    rc, out, err = run_check(["-h"])
    assert rc == 0 and "usage" in out


def test_check_main_empty_file(tmp_path):
    p = tmp_path / "exports"
    p.write_text("# nothing\n")
    assert run_check([str(p)]) == (0, "%s: 0 exports OK\n" % p, "")


# ---------------------------------------------------------------------------

if __name__ == "__main__" and sys.argv[1:] == ["--regen"]:
    ex._resolve = fake_resolve
    for name in CASES:
        data = describe(name)
        (CORPUS / (name + ".expected")).write_text(json.dumps(data, indent=1) + "\n")
        print(name, "error" if "error" in data else "ok")
