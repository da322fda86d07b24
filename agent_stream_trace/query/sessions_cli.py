"""`agent-stream-trace sessions`: list sessions, newest first."""

from __future__ import annotations

import argparse
import json

import polars as pl

from ..cli_support import add_db_argument, add_format_argument, print_frame
from . import fmt
from .cli_filters import add_filter_arguments, filter_from_args
from .store import TraceStore

DESCRIPTION = "List sessions, newest first, with how they ended and how fast they were."

EPILOG = """\
examples:
  agent-stream-trace sessions --since 1h
  agent-stream-trace sessions --outcome synthetic_done --limit 50
  agent-stream-trace sessions --where attrs.route=/chat --model claude-sonnet-4
  agent-stream-trace sessions --all --format csv > sessions.csv

then: agent-stream-trace show SESSION_ID (a unique prefix of the id is enough)
"""

# The table format shows the columns that answer "which sessions went wrong"; csv and json
# carry every column of the sessions table.
TABLE_COLUMNS = ("session_id", "started_at", "model", "outcome", "end_reason", "duration_s",
                 "ttft_s", "token_velocity_cps", "turns", "tool_calls", "max_gap_s", "attribution")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_argument(parser)
    add_filter_arguments(parser)
    parser.add_argument("--limit", type=int, default=20, help="how many sessions (default: 20)")
    parser.add_argument("--all", action="store_true", help="every matching session (no limit)")
    add_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    store = TraceStore(args.db)
    frame = store.sessions(limit=None if args.all else args.limit, where=filter_from_args(args))
    if args.format == "table":
        if not frame.height:
            print("no sessions match (nothing ingested yet, or the filters exclude everything)")
            return 0
        print(fmt.table(frame.select(TABLE_COLUMNS).with_columns(
            pl.col("started_at").dt.strftime("%Y-%m-%d %H:%M:%S"),
            pl.col("duration_s", "ttft_s", "max_gap_s").round(3).cast(pl.String),
        )))
        return 0
    if args.format == "json":
        # attrs is JSON text in the database: give it back as an object, not a string.
        rows = [{**r, "attrs": json.loads(r["attrs"]) if r["attrs"] else None} for r in frame.to_dicts()]
        print(fmt.to_json(rows))
        return 0
    print_frame(frame, args.format)
    return 0
