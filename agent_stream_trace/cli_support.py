"""What every command-line entry point shares: error tiers, --db and --format, output."""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .errors import DUCKDB_INTERRUPTED, AgentStreamTraceError, ExportError, MissingExtraError
from .private_files import keep_new_files_private

FORMATS = ("table", "csv", "json")


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a command; turn library errors into one clear line (and a hint), never a traceback."""
    keep_new_files_private()
    try:
        return fn()
    except (KeyboardInterrupt, RuntimeError) as exc:
        # Ctrl-C while DuckDB runs a statement (most of an ingest's time) reaches us as DuckDB's
        # RuntimeError, not as KeyboardInterrupt; the transaction around it has rolled back.
        if isinstance(exc, RuntimeError) and str(exc) != DUCKDB_INTERRUPTED:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `... | head` closed the pipe: not an error worth a traceback.
        return 0
    except AgentStreamTraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        if isinstance(exc, ExportError):
            return 1
        return 2 if not isinstance(exc, MissingExtraError) else 3


def add_db_argument(parser: argparse.ArgumentParser, *, creates: bool = False) -> None:
    """`creates`: the command makes the database (and its directories) when missing: said in
    its help, so that a mistyped path is not a surprise."""
    made = ", created with its directories if missing" if creates else ""
    parser.add_argument(
        "--db",
        metavar="PATH",
        help=f"DuckDB database file{made} (default: $AGENT_STREAM_DB, else ./agent-stream.duckdb)",
    )


def add_format_argument(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "--format", choices=FORMATS, default=default, help=f"output format (default: {default})"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):  # DECIMAL, and HUGEINT sums: numbers, not strings
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _json_value(value: Any) -> Any:
    """`value` with NaN and infinities as null: JSON has no words for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def frame_to_text(df: Any, fmt: str, *, json_columns: Sequence[str] = ()) -> str:
    """Render a polars DataFrame as a terminal table, CSV, or JSON (a list of row objects).
    `json_columns` hold JSON text (DuckDB's JSON type): in JSON output, the values themselves."""
    import polars as pl

    if fmt == "json":
        rows = [_json_value(row) for row in df.to_dicts()]
        for row in rows:
            for column in json_columns:
                if row.get(column) is not None:
                    row[column] = _json_value(json.loads(row[column]))  # JSON text may hold NaN too
        return json.dumps(rows, default=_json_default, indent=2, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        # CSV cannot hold nested values: serialise them as JSON text. From Python values
        # (to_list), not map_elements, which handed a fixed-size ARRAY over as an object whose
        # repr was written instead.
        flat = df.with_columns(
            [pl.Series(c, [None if v is None else json.dumps(_json_value(v), default=_json_default)
                           for v in df[c].to_list()], dtype=pl.String)
             for c, t in df.schema.items() if t.is_nested()]
        )
        flat.write_csv(buf)
        return buf.getvalue().rstrip("\n")
    with pl.Config(
        # tbl_width_chars (its largest value): wide rows run past the terminal's edge instead
        # of wrapping each cell over several lines (a session id in three pieces cannot be copied)
        tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=65_535, tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True, tbl_formatting="ASCII_MARKDOWN", float_precision=3,
    ):
        return str(df)


def print_frame(df: Any, fmt: str, *, json_columns: Sequence[str] = ()) -> None:
    print(frame_to_text(df, fmt, json_columns=json_columns))
