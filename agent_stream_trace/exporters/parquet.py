"""Sessions, events and tool calls as Parquet, hive-partitioned by day, for engines beyond one machine.

    DIR/sessions/day=2026-11-24/part-0.parquet
    DIR/events/day=2026-11-24/part-0.parquet
    DIR/tool_calls/day=2026-11-24/part-0.parquet

`day` is the UTC date the session started; a session's events and tool calls sit in its day,
so per-day joins stay local. DuckDB `read_parquet(..., hive_partitioning=true)`, polars
`scan_parquet(..., hive_partitioning=True)`, Spark and Trino read the tree in place.

Incremental: per output directory the database remembers a fingerprint of each day (its
sessions and their versions); a run rewrites only the days whose fingerprint changed (new
sessions, an open session that completed) and leaves the rest untouched. Atomic: each file
is written under a hidden temporary name (".part-0.parquet.tmp", which readers and globs skip)
and renamed over the old one, so a reader sees the old file or the new one, never half.
A day is rewritten whole rather than appended to, so a changed session never appears twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

TABLES = ("sessions", "events", "tool_calls")
PART_NAME = "part-0.parquet"
NULL_DAY = "__HIVE_DEFAULT_PARTITION__"  # Hive's name for a NULL partition value


@dataclass(frozen=True)
class ParquetExportOptions:
    directory: str | os.PathLike[str]
    since: datetime | None = None  # only days holding sessions started at or after this
    compression: str = "zstd"


@dataclass
class ParquetExportReport:
    directory: str
    days_written: list[str] = field(default_factory=list)
    days_unchanged: int = 0
    sessions: int = 0  # sessions in the days written
    files: int = 0
    seconds: float = 0.0


_DAY_SQL = f"coalesce(strftime(timezone('UTC', s.started_at), '%Y-%m-%d'), '{NULL_DAY}')"


def _day_fingerprints(con: duckdb.DuckDBPyConnection, since: datetime | None) -> list[tuple[str, str, int]]:
    """(day, fingerprint, sessions) of every day in scope."""
    where = "WHERE s.started_at >= ?" if since is not None else ""
    return [
        (r[0], r[1], r[2])
        for r in con.execute(
            f"""
            SELECT {_DAY_SQL} AS day,
                   md5(string_agg(concat_ws('|', s.session_id, s.side, s.outcome, coalesce(s.end_reason, ''),
                                            coalesce(s.event_count, 0), coalesce(s.duration_s, 0),
                                            coalesce(s.tool_calls, 0), s.attribution, coalesce(s.lost_lines, 0)),
                                  ',' ORDER BY s.session_id, s.side)) AS fingerprint,
                   count(*) AS sessions
            FROM sessions s {where}
            GROUP BY ALL ORDER BY day
            """,
            [since] if since is not None else [],
        ).fetchall()
    ]


def _copy_sql(table: str) -> str:
    # Rows of the sessions that started on the day (`?`), in a stable order.
    if table == "sessions":
        return f"SELECT s.* FROM sessions s WHERE {_DAY_SQL} = ? ORDER BY s.started_at, s.session_id, s.side"
    order = "t.seq, t.line_no" if table == "events" else "t.started_t, t.tool_use_id"
    return (
        f"SELECT t.* FROM {table} t JOIN sessions s USING (session_id, side) "
        f"WHERE {_DAY_SQL} = ? ORDER BY s.started_at, t.session_id, t.side, {order}"
    )


def _write_atomically(con: duckdb.DuckDBPyConnection, sql: str, day: str, target: Path, compression: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    escaped = str(tmp).replace("'", "''")
    con.execute(f"COPY ({sql}) TO '{escaped}' (FORMAT parquet, COMPRESSION {compression})", [day])
    os.replace(tmp, target)  # atomic on one filesystem: readers see the old file or the new


def export_parquet(con: duckdb.DuckDBPyConnection, options: ParquetExportOptions) -> ParquetExportReport:
    """Write the days that changed since the last export to this directory."""
    started = time.perf_counter()
    root = Path(options.directory).resolve()
    key = str(root)
    report = ParquetExportReport(key)
    known = dict(con.execute(
        "SELECT day, fingerprint FROM _export_parquet_days WHERE directory = ?", [key]
    ).fetchall())
    for day, fingerprint, sessions in _day_fingerprints(con, options.since):
        files = [root / table / f"day={day}" / PART_NAME for table in TABLES]
        if known.get(day) == fingerprint and all(f.exists() for f in files):
            report.days_unchanged += 1
            continue
        for table, target in zip(TABLES, files):
            _write_atomically(con, _copy_sql(table), day, target, options.compression)
            report.files += 1
        con.execute(
            "INSERT OR REPLACE INTO _export_parquet_days VALUES (?, ?, ?, ?, now())",
            [key, day, fingerprint, sessions],
        )
        report.days_written.append(day)
        report.sessions += sessions
    report.seconds = time.perf_counter() - started
    return report
