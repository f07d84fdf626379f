"""bench/run.py and bench/loadgen.py: the code paths of the loopback limit and of the
nfs-ganesha peer that run without ganesha (tiny sizes, fastnfs only)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import loadgen as lg  # noqa: E402
import run  # noqa: E402


def streamgen(tmp_path) -> str:
    exe = run.build_c(str(tmp_path), "streamgen")
    if exe is None:
        pytest.skip("no C compiler")
    return exe


@pytest.mark.parametrize("engine", ["python", "c"])
def test_loopback_moves_every_byte_in_read_sized_sends(tmp_path, engine):
    a = argparse.Namespace(size=3 << 20, server_cpu=None, client_cpu=None,
                           streamgen=streamgen(tmp_path) if engine == "c" else None)
    r = run.loopback(a, 1 << 16)
    assert r["bytes"] == 3 << 20
    assert r["io_size"] == 1 << 16
    assert r["mb_per_s"] > 0 and r["seconds"] > 0
    assert r["send_cpu_s"] >= 0


def test_loopback_by_sendfile_sends_the_file(tmp_path):
    a = argparse.Namespace(size=(3 << 20) + 5, server_cpu=None, client_cpu=None,
                           streamgen=streamgen(tmp_path))
    f = tmp_path / "read.bin"
    f.write_bytes(os.urandom(a.size))
    r = run.loopback(a, 1 << 20, str(f))
    assert r["bytes"] == a.size and r["mb_per_s"] > 0
    f.write_bytes(b"short")     # the sender says so when the file is shorter
    with pytest.raises(RuntimeError, match="the file ended"):
        run.loopback(a, 1 << 20, str(f))


@pytest.mark.parametrize("mode", ["read", "write"])
def test_stream_c_client_makes_the_python_clients_calls(tmp_path, mode):
    """streamgen.c and loadgen.py's stream: the same calls, the same bytes, on a
    size that ends in a short call whose data needs XDR padding."""
    exe = streamgen(tmp_path)
    export = tmp_path / "export"
    export.mkdir()
    size = (3 << 20) + 12345
    data = os.urandom(size)
    (export / "read.bin").write_bytes(data)
    s = run.Server("fastnfs", str(export), str(tmp_path), extra=["--workers=1"])
    try:
        got = {}
        for engine in (["--engine", "python"], ["--engine", "c", "--streamgen", exe]):
            (export / "write.bin").write_bytes(b"")
            got[engine[1]] = r = run.loadgen(
                ["stream", "--mode", mode, "--port", s.port, "--export", s.tree,
                 "--path", "%s.bin" % mode, "--size", size, "--depth", 3, "--max-io", 1 << 20]
                + engine)
            assert r["errors"] == 0 and r["bytes"] == size and r["ops"] == 4
            if mode == "write":
                assert (export / "write.bin").stat().st_size == size
        assert got["c"]["calls"] == got["python"]["calls"] == (
            {"READ": 4} if mode == "read" else {"WRITE": 4, "COMMIT": 1})
        assert set(got["c"]) == set(got["python"])
    finally:
        s.stop()


@pytest.mark.parametrize("generator", ["python", "c"])
def test_stream_reports_read_as_a_share_of_loopback(tmp_path, capsys, generator):
    assert run.main(["stream", "--size", "2M", "--rounds", "1", "--workdir", str(tmp_path),
                     "--fastnfs-arg=--workers=1", "--generator", generator]) == 0
    out = capsys.readouterr().out
    assert ("streamgen (C" in out.splitlines()[0]) == (generator == "c")
    assert ("READ: % of the sendfile loopback" in out) == (generator == "c")
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in out.splitlines() if line.startswith("| ")}
    assert float(rows["READ: % of loopback"]) > 0
    assert float(rows["loopback TCP, 2 MiB in READ-sized sends (MB/s)"]) > 0
    assert float(rows["READ 2 MiB sequential (MB/s)"]) > 0


def test_table_has_a_column_and_a_ratio_per_peer():
    res = {"fastnfs": [{"x": 4.0}, {"x": 6.0}, {"x": 5.0}],
           "unfsd": [{"x": 10.0}], "ganesha": [{"x": 2.5}]}
    t = run.table("w", [("x", "x", res, True)], ["fastnfs", "unfsd", "ganesha"]).splitlines()
    assert t[0] == "| w | fastnfs | unfsd | ganesha | fastnfs/unfsd | fastnfs/ganesha |"
    assert t[1] == "|---|---:|---:|---:|---:|---:|"
    assert t[2] == "| x | 5 | 10 | 2.50 | 0.50 | 2.00 |"
    # one peer: the layout the README's tables have always had
    t = run.table("w", [("x", "x", res, True)], ["fastnfs", "unfsd"]).splitlines()
    assert t[:3] == ["| w | fastnfs | unfsd | fastnfs/unfsd |", "|---|---:|---:|---:|",
                     "| x | 5 | 10 | 0.50 |"]


def test_ganesha_config_exports_the_real_path_for_v3_with_its_own_mount_port():
    conf = run.ganesha_config("/tmp/some tree", 2049, 20048)
    assert "NFS_Port = 2049;" in conf and "MNT_Port = 20048;" in conf
    assert "mount_path_pseudo = false;" in conf
    assert 'Path = "/tmp/some tree";' in conf
    assert "Name = VFS;" in conf and "Protocols = 3;" in conf
    assert "Bind_addr = 127.0.0.1;" in conf


def test_ganesha_needs_rpcbind(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "rpcbind_running", lambda: False)
    with pytest.raises(RuntimeError, match="rpcbind"):
        run.Server("ganesha", str(tmp_path), str(tmp_path), ganesha="/nonexistent/ganesha.nfsd")


def test_mnt_goes_to_the_mount_port_when_it_has_its_own(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_bytes(b"x")
    s = run.Server("fastnfs", str(export), str(tmp_path), extra=["--workers=1"])
    try:
        same = lg.SyncConn("127.0.0.1", s.port)
        want = same.mount(s.tree.encode())

        class NoMount:   # the NFS connection: MNT must not be sent on it
            def mount(self, path):
                raise AssertionError("MNT sent on the NFS connection")

        a = argparse.Namespace(host="127.0.0.1", port=s.port + 1, mount_port=s.port,
                               export=s.tree)
        assert lg.mount_root(a, NoMount()) == want
        a.mount_port = 0   # not given: MNT on the NFS connection
        assert lg.mount_root(a, same) == want
        same.close()
    finally:
        s.stop()


def test_pseudo_workload_arguments():
    """`pseudo` takes --unfsd (run under pseudo) and --pseudo-prefix; fastnfs alone
    without --unfsd, fastnfs --pseudo first (the numerator of the ratio)."""
    import run as r
    a = argparse.Namespace(unfsd=None)
    assert r.pseudo_kinds(a) == ["fastnfs-pseudo"]
    a.unfsd = "/x/unfsd"
    assert r.pseudo_kinds(a) == ["fastnfs-pseudo", "unfsd-pseudo"]
    with pytest.raises(SystemExit):
        r.main(["pseudo", "--pseudo-prefix"])


def test_pseudo_workload_tiny_run(tmp_path, capsys):
    """A 60-entry tree owned through the real pseudo; fastnfs --pseudo serves every
    handle without errors, and so does unfsd under pseudo when it is built here."""
    import shutil
    if not shutil.which("pseudo"):
        pytest.skip("pseudo is not installed")
    unfsd = "/work/peers/unfsd-0.11"
    args = ["pseudo", "--entries", "60", "--rounds", "1", "--duration", "0.3",
            "--workdir", str(tmp_path), "--fastnfs-arg=--workers=1"]
    with_unfsd = Path(unfsd).exists()
    if with_unfsd:
        args += ["--unfsd", unfsd]
    assert run.main(args) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ")}
    assert rows["pseudo"][:1] == ["fastnfs-pseudo"]
    assert int(rows["filehandles (GETATTR targets)"][0]) > 60
    assert rows["GETATTR errors"][0] == "0"
    assert float(rows["GETATTR ops/s (1 outstanding)"][0]) > 0
    if with_unfsd:
        assert rows["pseudo"][1] == "unfsd-pseudo"
        assert rows["GETATTR errors"][1] == "0"
        assert rows["filehandles (GETATTR targets)"][1] == rows[
            "filehandles (GETATTR targets)"][0]
    # the tree's owners are pseudo's: files.db holds a row per entry, saved by pseudo -S
    import sqlite3
    db = tmp_path / "pseudo-tree.pseudo_state" / "files.db"
    con = sqlite3.connect("file:%s?immutable=1" % db, uri=True)
    try:
        n, = con.execute("SELECT count(*) FROM files WHERE path LIKE ?",
                         ("%/pseudo-tree/%",)).fetchone()
    finally:
        con.close()
    assert n >= 60
    # nothing left behind: no pseudo server holds files.db, no unfsd lingers
    from fastnfs.backends.pseudowriter import server_alive
    assert server_alive(str(tmp_path / "pseudo-tree.pseudo_state")) is None


def test_pss_counts_pages_shared_with_a_forked_child_once():
    import os
    import signal
    import time
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        time.sleep(0.2)
        rss = run.tree_rss_mb(os.getpid())
        pss = run.tree_rss_mb(os.getpid(), "Pss:", "smaps_rollup")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # the child shares nearly all its pages with this process
    assert 0 < pss < rss * 0.8, (pss, rss)


def test_boards_workload_runs_a_board_per_client_against_the_base(tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    for i in range(5):
        (tree / "etc" / ("f%d" % i)).write_bytes(b"x" * 100)
    (tree / "bin").mkdir()
    (tree / "bin" / "sh").write_bytes(b"\x7fELF")
    assert run.main(["boards", "--tree", str(tree), "--clients", "3", "--paths-total", "12",
                     "--rounds", "1", "--workdir", str(tmp_path / "w"),
                     "--fastnfs-arg=--workers=1"]) == 0
    out = capsys.readouterr().out
    assert ("| boards | fastnfs-boards | fastnfs | fastnfs-general | fastnfs-boards/fastnfs "
            "| fastnfs-boards/fastnfs-general |") in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:7]
            for line in out.splitlines() if line.startswith("| 3 clients")}
    assert float(rows["3 clients: time for all clients (s)"][3]) > 0
    assert float(rows["3 clients: time for all clients (s)"][4]) > 0
    assert float(rows["3 clients: calls per walk"][0]) > 0
    # each client had a board of its own, fresh; none is left behind
    assert not list((tmp_path / "w").glob("boards-*"))


@pytest.mark.parametrize("engine", ["python", "c"])
def test_bootstorm_clients_mount_their_own_boards(tmp_path, engine):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"data")
    boards = tmp_path / "boards"
    s = run.Server("fastnfs", str(tree), str(tmp_path),
                   extra=["--workers=1", "--boards", str(boards)])
    try:
        args = ["bootstorm", "--port", str(s.port), "--export", s.tree, "--tree", s.tree,
                "--clients", "2", "--per-client", "1", "--boards", "--engine", engine]
        if engine == "c":
            exe = run.build_c(str(tmp_path), "bootgen")
            if exe is None:
                pytest.skip("no C compiler")
            args += ["--bootgen", exe]
        r = run.loadgen(args)
        assert r["stats"].get("errors", 0) == 0
        assert sorted(p.name for p in boards.iterdir()) == ["b0", "b1"]
    finally:
        s.stop()


def test_without_a_c_compiler_the_python_clients_are_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))   # no cc here
    assert run.build_c(str(tmp_path), "streamgen") is None
    assert "using the python generator" in capsys.readouterr().err


def test_stream_can_write_over_a_cached_file(tmp_path, capsys):
    assert run.main(["stream", "--size", "2M", "--rounds", "1", "--workdir", str(tmp_path),
                     "--fastnfs-arg=--workers=1", "--write-over"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert float(rows["WRITE 2 MiB sequential, UNSTABLE (MB/s)"]) > 0


def test_cached_file_is_written_once(tmp_path):
    f = tmp_path / "f"
    run.cached_file(str(f), (1 << 20) + 7)
    first = f.read_bytes()
    assert len(first) == (1 << 20) + 7
    run.cached_file(str(f), (1 << 20) + 7)
    assert f.read_bytes() == first
