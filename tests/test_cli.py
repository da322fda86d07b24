"""The command-line layer: exit codes, one-line errors, read-only SQL, documented commands."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from agent_stream_trace.cli import COMMANDS
import agent_stream_trace.db as dbmod
from agent_stream_trace.db import connect
from agent_stream_trace.errors import DatabaseError
from ingest_support import event, header, new_sid, write

README = Path(__file__).parents[1] / "README.md"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent_stream_trace.cli", *args],
                          capture_output=True, text=True, input=None if stdin is None else stdin.decode())


def test_ingest_exit_codes_missing_path_rejects_and_strict(tmp_path, db_path):
    sid = new_sid()
    good = write(tmp_path / "ok.jsonl", [header(sid), event(0.1, "done", {}, sid=sid, seq=1)])
    bad = write(tmp_path / "bad.jsonl", ["{oops"])

    missing = run("ingest", str(tmp_path / "nope.jsonl"), "--db", str(db_path))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no such file or directory") and "Traceback" not in missing.stderr

    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    loop = run("ingest", str(tmp_path / "loop-a"), "--db", str(db_path))
    assert (loop.returncode, loop.stderr.count("\n")) == (2, 1) and "a symbolic link that leads nowhere" in loop.stderr

    ok = run("ingest", str(good), str(bad), "--db", str(db_path), "--open-window", "0")
    assert ok.returncode == 0, ok.stderr
    assert "1 rejects" in ok.stdout and "invalid JSON" in ok.stdout

    for window in ("nan", "-1"):  # NaN would make no file ever final: bad usage, like a negative one
        fresh = tmp_path / f"window{window}.duckdb"
        usage = run("ingest", str(good), "--db", str(fresh), "--open-window", window)
        assert (usage.returncode, usage.stderr.count("\n")) == (2, 1), usage.stderr
        assert "--open-window must be a number of seconds, 0 or more" in usage.stderr
        assert not fresh.exists()  # said before any database is made

    (tmp_path / "empty").mkdir()  # read, so exit 0, but a person should hear that it held nothing
    nothing = run("ingest", str(tmp_path / "empty"), "--db", str(db_path))
    assert nothing.returncode == 0 and "no recordings (*.jsonl, *.jsonl.gz) in the named paths" in nothing.stdout

    bad2 = write(tmp_path / "bad2.jsonl", ["[1]"])
    strict = run("ingest", str(bad2), "--db", str(db_path), "--strict")
    assert strict.returncode == 1


def test_paths_that_cannot_be_read_or_written_are_one_line_and_exit_2(tmp_path, db_path, monkeypatch):
    afile = write(tmp_path / "afile", ["x"])
    cases = [
        ("ingest", str(afile), "--db", str(afile / "x.duckdb")),  # the database's directory cannot be made
        # a recording given as the database: DuckDB would open it as an in-memory database
        # with a view of the file, and the ingest would keep nothing
        ("ingest", str(afile), "--db", str(write(tmp_path / "given-as-db.jsonl", ['{"t": 1}']))),
        ("query", "--db", str(tmp_path / "given-as-db.jsonl"), "SELECT 1"),
        ("simulate", "--sessions", "3", "--out", str(afile / "out")),  # --out below a file
        ("simulate", "--sessions", "3", "--days", "inf", "--out", str(tmp_path / "out")),
    ]
    for args in cases:
        out = run(*args)
        assert (out.returncode, out.stderr.count("\n")) == (2, 1) and out.stderr.startswith("error:"), (args, out.stderr)
    assert "not a DuckDB database file" in run(*cases[1]).stderr
    assert (tmp_path / "given-as-db.jsonl").read_text() == '{"t": 1}\n'
    # a directory below a named one that cannot be read (tests may run as root, who reads
    # anything: the walk is told so): an error, not a run that leaves its recordings out
    import os

    from agent_stream_trace.errors import InputPathError
    from agent_stream_trace.ingest import sources

    (tmp_path / "traces" / "locked").mkdir(parents=True)
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):
        for entry in real_walk(top, onerror=onerror, **kwargs):
            if entry[0].endswith("locked"):
                onerror(PermissionError(13, "Permission denied", entry[0]))
            yield entry

    monkeypatch.setattr(sources.os, "walk", walk)
    try:
        sources.resolve_sources([tmp_path / "traces"])
    except InputPathError as exc:
        assert "cannot read directory" in str(exc) and "locked" in str(exc)
    else:
        raise AssertionError("an unreadable directory was skipped")


def test_query_is_read_only_and_formats(tmp_path, db_path, upstream_sequential):
    assert run("ingest", str(upstream_sequential), "--db", str(db_path), "--open-window", "0").returncode == 0
    out = run("query", "--db", str(db_path), "--format", "csv", "SELECT count(*) AS n FROM sessions")
    assert out.returncode == 0 and out.stdout.split() == ["n", "25"]
    refused = run("query", "--db", str(db_path), "DELETE FROM rejects")
    assert refused.returncode == 2 and "read-only" in refused.stderr
    assert run("query", "--db", str(db_path), "--format", "csv", "SELECT count(*) AS n FROM sessions").stdout.split() == ["n", "25"]
    typo = run("query", "--db", str(db_path), "SELEC 1")
    assert typo.returncode == 2 and typo.stderr.startswith("error:") and "Traceback" not in typo.stderr


def test_query_shows_every_column_type_in_every_format(db_path, upstream_sequential):
    import csv
    import io
    import json

    assert run("ingest", str(upstream_sequential), "--db", str(db_path), "--open-window", "0").returncode == 0
    sql = ("SELECT max(ended_at - started_at) AS span, 'a,b'::BLOB AS blob, sum(event_count) AS total, 1.5 AS half, "
           "'{\"k\": [1]}'::JSON AS doc, [1, 2] AS pair, 'nan'::DOUBLE AS nan, list(source_file)[1:1] AS files, "
           "array_value(3, 4) AS fixed, NULL::INTEGER[] AS none FROM sessions")
    out = {fmt: run("query", "--db", str(db_path), "--format", fmt, sql) for fmt in ("table", "csv", "json")}
    assert all(o.returncode == 0 and "Traceback" not in o.stderr for o in out.values()), {f: o.stderr for f, o in out.items()}
    (row,) = json.loads(out["json"].stdout)  # valid JSON: no NaN
    total = int(run("query", "--db", str(db_path), "--format", "csv", "SELECT sum(event_count) FROM sessions").stdout.split()[-1])
    assert row["total"] == total and row["half"] == 1.5 and row["doc"] == {"k": [1]} and row["pair"] == [1, 2]
    assert row["nan"] is None and row["blob"] == "a,b" and row["span"].count(":") == 2
    (csv_row,) = list(csv.DictReader(io.StringIO(out["csv"].stdout)))
    assert json.loads(csv_row["pair"]) == [1, 2] and json.loads(csv_row["files"]) == [str(upstream_sequential.resolve())]
    assert json.loads(csv_row["fixed"]) == [3, 4] and csv_row["none"] == "" and row["fixed"] == [3, 4]
    assert csv_row["blob"] == "a,b" and csv_row["total"] == str(total)
    # an interval inside a list or struct, two columns of one name, NaN inside JSON text
    for sql in ("SELECT [INTERVAL 1 DAY] AS l, {'i': INTERVAL 1 DAY} AS s", "SELECT INTERVAL 1 DAY AS a, 1 AS a",
                "SELECT 'NaN'::JSON AS j"):
        for fmt in ("table", "csv", "json"):
            shown = run("query", "--db", str(db_path), "--format", fmt, sql)
            assert shown.returncode == 0 and "Traceback" not in shown.stderr, (sql, fmt, shown.stderr)
    assert json.loads(run("query", "--db", str(db_path), "--format", "json", "SELECT 1 AS a, 2 AS A, 3 AS a").stdout) == [
        {"a": 1, "A_2": 2, "a_3": 3}]  # names are case-blind in DuckDB: made unique that way too
    assert json.loads(run("query", "--db", str(db_path), "--format", "json",
                          "SELECT 1 AS j, '{\"a\": 1}'::JSON AS j, {'bitrate': 1} AS s").stdout) == [
        {"j": 1, "j_2": {"a": 1}, "s": {"bitrate": 1}}]
    # a wide table runs past the edge rather than cutting a session id over lines
    wide = run("query", "--db", str(db_path), "SELECT session_id, source_file, attrs, started_at FROM sessions LIMIT 1")
    sid = run("query", "--db", str(db_path), "--format", "csv", "SELECT session_id FROM sessions LIMIT 1").stdout.split()[-1]
    assert wide.returncode == 0 and sid in wide.stdout


def test_query_reads_its_database_and_nothing_else(tmp_path, db_path, upstream_sequential):
    assert run("ingest", str(upstream_sequential), "--db", str(db_path), "--open-window", "0").returncode == 0
    other = tmp_path / "other.duckdb"
    assert run("ingest", str(upstream_sequential), "--db", str(other), "--open-window", "0").returncode == 0
    secret = write(tmp_path / "secret.csv", ["a,b", "1,2"])
    attempts = [
        f"ATTACH '{other}' AS o (READ_ONLY false); DELETE FROM o.sessions",  # another database, read-write
        f"COPY (SELECT * FROM sessions) TO '{tmp_path / 'out.csv'}'",  # writing a file
        f"EXPORT DATABASE '{tmp_path / 'dump'}'",
        f"SELECT * FROM read_csv('{secret}')",  # reading a file
        "SELECT * FROM glob('/etc/*')",
        "SET threads = 1",  # settings
        "SET enable_external_access = true",
        "INSTALL httpfs",  # extensions
    ]
    # DuckDB's own temporary directory stays writable to SQL: by default it is <db>.tmp/
    spill = Path(f"{db_path}.tmp")
    spill.mkdir()
    attempts.append(f"COPY (SELECT * FROM sessions) TO '{spill / 'out.csv'}'")
    for sql in attempts:
        out = run("query", "--db", str(db_path), sql)
        assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr, (sql, out.stderr)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "dump").exists() and not any(spill.iterdir())
    # Sandboxed connections in one process (a server's, one per request) share the rules and UTC
    first = connect(db_path, read_only=True, sandboxed=True)
    second = connect(db_path, read_only=True, sandboxed=True)
    for con in (first, second):
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
        with pytest.raises(duckdb.Error):
            con.execute(f"COPY (SELECT 1) TO '{spill / 'out.csv'}'")
    first.close()
    second.close()
    assert not any(spill.iterdir())
    # beside a plain connection to the same file, in one process: said why, not "another process"
    plain = duckdb.connect(str(db_path), read_only=True)
    try:
        with pytest.raises(DatabaseError) as refused:
            connect(db_path, read_only=True, sandboxed=True)
        assert "this process has the database open already" in (refused.value.hint or "")
    finally:
        plain.close()
    assert run("query", "--db", str(other), "--format", "csv", "SELECT count(*) AS n FROM sessions").stdout.split() == ["n", "25"]
    utc = run("query", "--db", str(db_path), "--format", "csv", "SELECT current_setting('TimeZone') AS tz")
    assert utc.stdout.split() == ["tz", "UTC"]


def test_a_new_database_is_not_readable_by_other_users(tmp_path, upstream_sequential):
    """It holds prompts and model output, as the recordings do: created 0640 in the directories
    --db names (made if missing), whatever the umask lets others read."""
    db = tmp_path / "new" / "dir" / "trace.duckdb"
    old = os.umask(0o022)
    try:
        assert run("ingest", str(upstream_sequential), "--db", str(db), "--open-window", "0").returncode == 0
    finally:
        os.umask(old)
    assert db.stat().st_mode & 0o777 == 0o640
    # so is every file a command makes: the log DuckDB writes beside the database (the whole
    # ingest until its last commit), simulated recordings, Parquet exports
    old = os.umask(0o022)
    try:
        assert run("simulate", "--sessions", "20", "--out", str(tmp_path / "sim")).returncode == 0
        assert run("export", "parquet", str(tmp_path / "lake"), "--db", str(db)).returncode == 0
    finally:
        os.umask(old)
    made = [p for p in [*(tmp_path / "sim").rglob("*"), *(tmp_path / "lake").rglob("*")] if p.is_file()]
    assert made and all(p.stat().st_mode & 0o007 == 0 for p in made), [oct(p.stat().st_mode) for p in made]
    assert run("query", "--db", str(db), "--format", "csv", "SELECT count(*) AS n FROM sessions").stdout.split() == ["n", "25"]


def test_a_sandboxed_connection_opens_without_a_temporary_directory(tmp_path, db_path, monkeypatch, upstream_sequential):
    """Where no private spill directory can be made (a read-only file system), SQL still runs,
    without spilling: a read command must not fail for want of one."""
    assert run("ingest", str(upstream_sequential), "--db", str(db_path), "--open-window", "0").returncode == 0
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    monkeypatch.setattr(dbmod, "_sandbox_temp_dir", functools.cache(dbmod._sandbox_temp_dir.__wrapped__))
    con = dbmod.connect(db_path, read_only=True, sandboxed=True)
    try:
        assert con.execute("SELECT count(*) FROM sessions").fetchone() == (25,)
        assert con.execute("SELECT current_setting('temp_directory')").fetchone() == ("",)
    finally:
        con.close()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="watches the process through /proc")
def test_ctrl_c_while_duckdb_runs_is_one_line_not_a_traceback(db_path, upstream_sequential):
    """Ctrl-C while DuckDB executes reaches Python as RuntimeError('Query interrupted'), not as
    KeyboardInterrupt: it printed a traceback during most of an ingest's time, or a query's."""
    assert run("ingest", str(upstream_sequential), "--db", str(db_path), "--open-window", "0").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "agent_stream_trace.cli", "query", "--db", str(db_path),
                             "SELECT sum(hash(i)) FROM range(1_000_000_000_000) t(i)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait (on conditions, with a deadline) until the command has the database open, and
        # has then spent a third of a second of CPU: it is in the endless query, inside DuckDB.
        fds, deadline = Path(f"/proc/{proc.pid}/fd"), time.monotonic() + 60
        while not any(_points_to(fd, db_path) for fd in _entries(fds)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        opened = _cpu_ticks(proc.pid)
        while _cpu_ticks(proc.pid) < opened + os.sysconf("SC_CLK_TCK") // 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, err, out) == (130, "interrupted\n", "")


def _cpu_ticks(pid: int) -> int:
    """The process's CPU time so far (user + system), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


def _points_to(link: Path, target: Path) -> bool:
    try:
        return Path(os.readlink(link)) == target.resolve()
    except OSError:
        return False


def test_query_without_a_database_says_how_to_make_one(tmp_path):
    out = run("query", "--db", str(tmp_path / "none.duckdb"), "SELECT 1")
    assert out.returncode == 2 and "agent-stream-ingest" in out.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_every_command_has_help_and_is_in_the_readme():
    text = README.read_text()
    for name in COMMANDS:
        result = run(name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        assert "example" in result.stdout, f"{name} --help has no examples"
        assert f"agent-stream-trace {name}" in text or (name == "ingest" and "agent-stream-ingest" in text), name


def test_readme_opens_with_the_two_quickstart_commands():
    text = README.read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "agent-stream-trace demo" in commands[0]
    assert commands[1] == "bash scripts/test.sh"
    assert "bash scripts/test.sh" in (Path(__file__).parents[1] / ".ci" / "run").read_text()
