"""`agent-stream-trace query "SQL"`: plain SQL over session history, on a read-only connection."""

from __future__ import annotations

import argparse
import re
import sys

import duckdb

from ..cli_support import add_db_argument, add_format_argument, print_frame
from ..db import connect, interruptible
from ..errors import UsageError

DESCRIPTION = """\
Run SQL over the database, read-only: nothing you type can change it, and it reads this
database only (no files, no other databases, no extensions, no settings; times in UTC).
Tables: sessions, events, tool_calls, rejects (columns in README.md, "Schema"). Several
statements separated by ; run in order, and the last one's result is shown.
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
        with interruptible(con):  # a person's query may run long: Ctrl-C must stop it
            try:
                rel = con.sql(sql)
                if rel is None:
                    return 0
                rel = _displayable(rel)
                json_columns = [name for name, t in zip(rel.columns, rel.types) if str(t) == "JSON"]
                df = rel.pl()
            except duckdb.InterruptException:
                raise  # Ctrl-C: interruptible() makes it KeyboardInterrupt
            except duckdb.Error as exc:
                raise UsageError(_first_line(exc)) from None
    finally:
        con.close()
    print_frame(df, args.format, json_columns=json_columns)
    return 0


# Column types that polars cannot take (INTERVAL, even inside a list or struct) or that CSV
# and JSON cannot hold (BLOB, ...): shown as the text DuckDB writes for them.
_AS_TEXT = re.compile(r"\b(INTERVAL|BLOB|BIT|UNION|TIME WITH TIME ZONE|VARINT|BIGNUM)\b")


def _displayable(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """`rel` with the columns polars cannot take as text, and names made unique (polars keeps
    one column per name; `SELECT 1 AS a, 2 AS a` is valid SQL)."""
    names: list[str] = []
    for name in rel.columns:
        unique, n = name, 1
        while unique.lower() in (taken.lower() for taken in names):  # DuckDB's names ignore case
            n += 1
            unique = f"{name}_{n}"
        names.append(unique)
    as_text = [bool(_AS_TEXT.search(str(t).upper())) for t in rel.types]
    if names == rel.columns and not any(as_text):
        return rel
    quoted = ['"' + name.replace('"', '""') + '"' for name in names]
    columns = [f"{q}::VARCHAR AS {q}" if text else q for q, text in zip(quoted, as_text)]
    return rel.query("_result", f"SELECT {', '.join(columns)} FROM _result AS _r({', '.join(quoted)})")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
