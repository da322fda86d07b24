"""`export parquet`: hive-partitioned by day, incremental, atomic, readable by DuckDB and polars."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import polars as pl
from support.sessions_db import BASE_TIME, add_session, add_sessions, scenario, simulated_specs

from agent_stream_trace.cli import main
from agent_stream_trace.db import connect
from agent_stream_trace.exporters.parquet import ParquetExportOptions, export_parquet


def sql(query):
    """A fresh reader, as an outside engine would be (not the exporter's connection)."""
    with duckdb.connect() as reader:
        return reader.execute(query).fetchall()


def three_days(con):
    specs = simulated_specs(12)
    for i, spec in enumerate(specs):
        spec["started_at"] = BASE_TIME + timedelta(days=i % 3, minutes=i)
    add_sessions(con, specs)
    return specs


def test_tables_by_day_read_back_by_duckdb_and_polars(db_path, tmp_path):
    con = connect(db_path)
    three_days(con)
    lake = tmp_path / "lake"
    report = export_parquet(con, ParquetExportOptions(lake))
    assert report.days_written == ["2026-11-24", "2026-11-25", "2026-11-26"] and report.files == 9
    for table in ("sessions", "events", "tool_calls"):
        stored = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        via_duckdb = sql(
            f"SELECT count(*) FROM read_parquet('{lake}/{table}/*/*.parquet', hive_partitioning=true)"
        )[0][0]
        via_polars = pl.scan_parquet(lake / table, hive_partitioning=True).select(pl.len()).collect().item()
        assert stored == via_duckdb == via_polars > 0
    per_day = dict(sql(
        f"SELECT strftime(day, '%Y-%m-%d'), count(*) FROM read_parquet('{lake}/sessions/*/*.parquet', "
        "hive_partitioning=true) GROUP BY ALL"))
    expected = dict(con.execute(
        "SELECT strftime(timezone('UTC', started_at), '%Y-%m-%d'), count(*) FROM sessions GROUP BY ALL").fetchall())
    assert per_day == expected
    # Events sit in their session's day, so a per-day join finds every session.
    orphans = sql(
        f"""SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet', hive_partitioning=true) e
            ANTI JOIN read_parquet('{lake}/sessions/*/*.parquet', hive_partitioning=true) s
            USING (session_id, side, day)""")[0][0]
    assert orphans == 0
    assert not list(lake.rglob("*.tmp"))


def test_rerun_rewrites_only_days_that_changed(db_path, tmp_path):
    con = connect(db_path)
    specs = three_days(con)
    lake = tmp_path / "lake"
    export_parquet(con, ParquetExportOptions(lake))
    files = sorted(lake.rglob("*.parquet"))
    before = {f: f.stat().st_mtime_ns for f in files}

    again = export_parquet(con, ParquetExportOptions(lake))
    assert again.days_written == [] and again.days_unchanged == 3
    # A session of day 2 changes (more events): only day 2 is rewritten, and holds it once.
    changed = specs[1]
    add_session(con, scenario("tools", tools=3), session_id=changed["session_id"], started_at=changed["started_at"])
    report = export_parquet(con, ParquetExportOptions(lake))
    assert report.days_written == ["2026-11-25"]
    rewritten = {f for f in files if f.stat().st_mtime_ns != before[f]}
    assert rewritten == {f for f in files if "day=2026-11-25" in str(f)}
    rows = sql(f"SELECT count(*) FROM read_parquet('{lake}/sessions/*/*.parquet') "
                      f"WHERE session_id = '{changed['session_id']}'")[0][0]
    assert rows == 1
    tools = sql(f"SELECT count(*) FROM read_parquet('{lake}/tool_calls/*/*.parquet') "
                       f"WHERE session_id = '{changed['session_id']}'")[0][0]
    assert tools == 3


def test_since_limits_the_days_and_cli_reports(db_path, tmp_path, capsys):
    con = connect(db_path)
    three_days(con)
    con.close()
    lake = tmp_path / "lake"
    assert main(["export", "parquet", str(lake), "--db", str(db_path), "--since", "2026-11-26"]) == 0
    assert "wrote 1 day(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (lake / "sessions").iterdir()) == ["day=2026-11-26"]
