"""`agent-stream-trace export otlp|parquet`: thin adapters over exporters.otlp and exporters.parquet."""

from __future__ import annotations

import argparse
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..cli_support import add_db_argument, add_format_argument, print_frame
from ..errors import UsageError

if TYPE_CHECKING:
    import duckdb

DESCRIPTION = "Export sessions: as OpenTelemetry traces to an OTLP backend, or as Parquet files."

EPILOG = """\
examples:
  # Jaeger / an OpenTelemetry Collector on this machine (OTLP/HTTP on 4318)
  agent-stream-trace export otlp --endpoint http://localhost:4318
  # Arize Phoenix, over gRPC, token text included
  agent-stream-trace export otlp --endpoint http://localhost:4317 --protocol grpc --include-content
  # Honeycomb, configured the standard way
  OTEL_EXPORTER_OTLP_ENDPOINT=https://api.honeycomb.io OTEL_EXPORTER_OTLP_HEADERS=x-honeycomb-team=KEY \\
    agent-stream-trace export otlp
  # what would be sent, as JSON, sending nothing
  agent-stream-trace export otlp --dry-run --format json --session 948ef008-264d-4441-b621-814af4412474
  # Parquet for Spark / Trino / DuckDB / polars, only the days that changed
  agent-stream-trace export parquet lake/ --since 7d

A re-run sends only sessions the destination has not acknowledged in their current version;
--all sends everything again (same trace and span ids). See docs/export.md.
"""

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """An ISO date/datetime (UTC unless it says otherwise) or a look-back such as 90m, 24h, 7d."""
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        now = now or datetime.now(timezone.utc)
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since wants an ISO date/time or a look-back like 24h or 7d, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)

    otlp = sub.add_parser(
        "otlp", help="send sessions as traces to an OTLP backend (Jaeger, Honeycomb, Phoenix, Langfuse...)",
        description="Send sessions as OpenTelemetry traces. Without flags the standard "
        "OTEL_EXPORTER_OTLP_* variables decide endpoint, protocol and headers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(otlp)
    otlp.add_argument("--endpoint", metavar="URL",
                      help="base URL, as OTEL_EXPORTER_OTLP_ENDPOINT (HTTP adds /v1/traces)")
    otlp.add_argument("--protocol", choices=("grpc", "http/protobuf"),
                      help="default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf")
    otlp.add_argument("--header", action="append", default=[], metavar="K=V",
                      help="request header, repeatable (over $OTEL_EXPORTER_OTLP_HEADERS)")
    otlp.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="per request, retries included (default: $OTEL_EXPORTER_OTLP_TIMEOUT, else 10)")
    otlp.add_argument("--since", type=parse_since, metavar="WHEN",
                      help="sessions started at/after WHEN: ISO date/time or look-back (24h, 7d)")
    otlp.add_argument("--session", action="append", default=[], metavar="ID",
                      help="only this session: its id or a unique prefix, as show takes it (repeatable)")
    otlp.add_argument("--include-content", action="store_true",
                      help="include token text, thinking text, tool summaries, creation items and the "
                           "messages of error and progress events (left out by default)")
    otlp.add_argument("--include-ambiguous", action="store_true",
                      help="also sessions whose lines could not be attributed with certainty")
    otlp.add_argument("--all", action="store_true", dest="resend_all",
                      help="send every selected session again, acknowledged or not (same ids)")
    otlp.add_argument("--service-name", metavar="NAME", help="resource service.name (default: $OTEL_SERVICE_NAME, else agent-stream)")
    otlp.add_argument("--project", metavar="NAME",
                      help="openinference.project.name, Phoenix's project (default: $PHOENIX_PROJECT_NAME, else the service name)")
    otlp.add_argument("--dry-run", action="store_true", help="print the spans that would be sent; send and mark nothing")
    add_format_argument(otlp)
    otlp.set_defaults(handler=_run_otlp)

    parquet = sub.add_parser(
        "parquet", help="write sessions, events, tool_calls as Parquet, hive-partitioned by day",
        description="Write Parquet files (DIR/<table>/day=YYYY-MM-DD/part-0.parquet), rewriting only days "
        "that changed since the last export to DIR; each file is replaced atomically.",
        epilog="example:\n  agent-stream-trace export parquet lake/ && duckdb -c \"SELECT day, count(*) FROM "
        "read_parquet('lake/sessions/*/*.parquet', hive_partitioning=true) GROUP BY ALL\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parquet.add_argument("directory", metavar="DIR")
    add_db_argument(parquet)
    parquet.add_argument("--since", type=parse_since, metavar="WHEN",
                         help="only days with sessions started at/after WHEN (ISO date/time, or 24h, 7d)")
    parquet.set_defaults(handler=_run_parquet)


def run(args: argparse.Namespace) -> int:
    return int(args.handler(args))


def _run_otlp(args: argparse.Namespace) -> int:
    from ..db import connect
    from ..session_ids import resolve_session_id
    from .otlp import OtlpExportOptions, dry_run_spans, export_otlp

    # The stock exporters log each failed attempt; we print one line ourselves. A handler here
    # keeps Python's last-resort handler from printing their records when logging is unset.
    logging.getLogger("opentelemetry.exporter").addHandler(logging.NullHandler())
    con = connect(args.db)
    try:
        # An id or a unique prefix, as `show` takes it; one that names no session is an error,
        # not an export of nothing.
        session_ids = tuple(resolve_session_id(con, prefix)[0] for prefix in args.session)
        if session_ids and not args.include_ambiguous:
            _refuse_ambiguous(con, session_ids)
        options = OtlpExportOptions(
            endpoint=args.endpoint, protocol=args.protocol, headers=tuple(args.header), timeout_s=args.timeout,
            since=args.since, session_ids=session_ids, include_content=args.include_content,
            include_ambiguous=args.include_ambiguous, resend_all=args.resend_all,
            service_name=args.service_name, project=args.project,
        )
        if args.dry_run:
            return _print_dry_run(dry_run_spans(con, options), args.format)
        report = export_otlp(con, options)
    finally:
        con.close()
    print(f"sent {report.spans} spans of {report.sessions} sessions to {report.destination} "
          f"in {report.requests} requests ({report.seconds:.1f}s); {report.unchanged} unchanged sessions skipped")
    return 0


def _refuse_ambiguous(con: duckdb.DuckDBPyConnection, session_ids: tuple[str, ...]) -> None:
    """A session named with --session whose every side is ambiguous would be left out without a
    word (an export of nothing, exit 0): say so instead. One with a side that is not ambiguous
    exports that side."""
    (ambiguous,) = con.execute(
        "SELECT list(session_id ORDER BY session_id) FROM (SELECT session_id FROM sessions "
        "WHERE session_id IN (SELECT unnest(?)) GROUP BY session_id HAVING bool_and(attribution = 'ambiguous'))",
        [list(session_ids)],
    ).fetchone()
    if ambiguous:
        raise UsageError(f"session {ambiguous[0]} is ambiguous: its lines could not be attributed with certainty"
                         + (f" (and {len(ambiguous) - 1} more)" if len(ambiguous) > 1 else ""),
                         hint="add --include-ambiguous to export it anyway")


def _print_dry_run(spans: object, fmt: str) -> int:
    from .otlp_encode import span_to_json

    rows = [span_to_json(s) for s in spans]  # type: ignore[attr-defined]
    if fmt == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    import polars as pl

    frame = pl.DataFrame(
        [{k: r[k] for k in ("trace_id", "span_id", "parent_span_id", "name", "status", "status_message")}
         | {"duration_ms": (r["end_ns"] - r["start_ns"]) / 1e6, "events": len(r["events"])} for r in rows],
        schema={"trace_id": pl.String, "span_id": pl.String, "parent_span_id": pl.String, "name": pl.String,
                "status": pl.String, "status_message": pl.String, "duration_ms": pl.Float64, "events": pl.Int64},
    )
    print_frame(frame, fmt)
    return 0


def _run_parquet(args: argparse.Namespace) -> int:
    from ..db import connect
    from .parquet import ParquetExportOptions, export_parquet

    con = connect(args.db)
    try:
        report = export_parquet(con, ParquetExportOptions(args.directory, since=args.since))
    finally:
        con.close()
    print(f"wrote {len(report.days_written)} day(s), {report.sessions} sessions, {report.files} files to "
          f"{report.directory}; {report.days_unchanged} unchanged day(s) kept ({report.seconds:.1f}s)")
    return 0
