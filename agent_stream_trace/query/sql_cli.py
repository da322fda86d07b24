"""`agent-stream-trace query "SQL"`: plain SQL over session history, on a read-only connection."""

from __future__ import annotations

import argparse
import sys

import duckdb

from ..cli_support import add_db_argument, add_format_argument, print_frame
from ..db import connect
from ..errors import UsageError

DESCRIPTION = """\
Run SQL over the database, read-only: nothing you type can change it, and it reads this
database only (no files, no other databases, no extensions, no settings; times in UTC).
Tables: sessions, events, tool_calls, rejects (columns in README.md, "Schema").
"""

EPILOG = """\
examples:
  agent-stream-trace query "SELECT outcome, end_reason, count(*) FROM sessions GROUP BY ALL"
  agent-stream-trace query --format csv "SELECT * FROM tool_calls WHERE status = 'orphaned'"
  agent-stream-trace query --format json "SELECT * FROM rejects LIMIT 5"
  echo "SELECT count(*) FROM events" | agent-stream-trace query -
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", metavar="SQL", help="the query, or - to read it from standard input")
    add_db_argument(parser)
    add_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    if not sql.strip():
        raise UsageError("empty query")
    con = connect(args.db, read_only=True, sandboxed=True)
    try:
        try:
            rel = con.sql(sql)
        except duckdb.Error as exc:
            raise UsageError(_first_line(exc)) from None
        if rel is None:
            return 0
        try:
            df = rel.pl()
        except duckdb.Error as exc:
            raise UsageError(_first_line(exc)) from None
    finally:
        con.close()
    print_frame(df, args.format)
    return 0


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
