"""`agent-stream-trace stats`: the health report on one screen (or as JSON / CSV)."""

from __future__ import annotations

import argparse

import polars as pl

from ..cli_support import add_db_argument, add_format_argument, frame_to_text
from ..errors import UsageError
from . import fmt
from .cli_filters import add_filter_arguments, filter_from_args
from .filters import check_group_by
from .report import INTERVAL_SAMPLE_SESSIONS, BY_GROUP, BY_TIME, BY_TOOL, HealthReport, build_report, report_to_dict
from .store import TraceStore

DESCRIPTION = """\
How often streams break, why, and how fast they are: the synthetic-done rate (sessions that
ended without a done event) with its causes, time to first token, token velocity, turns, the
slowest and most failing tools, and stalls. Ambiguous sessions (interleaved v0 recordings) are
counted but kept out of every rate."""

EPILOG = """\
examples:
  agent-stream-trace stats
  agent-stream-trace stats --since 24h --by hour
  agent-stream-trace stats --since 7d --by model --format json
  agent-stream-trace stats --by attrs.route --where attrs.app_version=1.4.2
  agent-stream-trace stats --by tool --format csv > tools.csv

--format csv prints the --by table (default: the one summary row).
"""

TOP = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_argument(parser)
    add_filter_arguments(parser)
    parser.add_argument(
        "--by", metavar="KEY",
        help=f"break the report down by {', '.join((*BY_TIME, *BY_GROUP, BY_TOOL))} or attrs.KEY",
    )
    parser.add_argument("--stall-threshold", type=float, metavar="SECONDS",
                        help="silence that counts as a stall (default: $AGENT_STREAM_STALL_THRESHOLD, else 15)")
    add_format_argument(parser)


def _check_by(by: str | None) -> str | None:
    if by is None or by in BY_TIME or by == BY_TOOL:
        return by
    try:
        return check_group_by(by)
    except UsageError:
        raise UsageError(f"cannot break down by {by!r}",
                         hint=f"use {', '.join((*BY_TIME, *BY_GROUP, BY_TOOL))} or attrs.KEY") from None


def run(args: argparse.Namespace) -> int:
    by = _check_by(args.by)
    store = TraceStore(args.db, stall_threshold_s=args.stall_threshold)
    report = build_report(store, filter_from_args(args), by, top=TOP)
    if args.format == "json":
        print(fmt.to_json(report_to_dict(report)))
    elif args.format == "csv":
        table = report.breakdown if report.breakdown is not None else pl.DataFrame([report.summary])
        print(frame_to_text(table, "csv"))
    else:
        print(render_text(report))
    return 0


def render_text(report: HealthReport) -> str:
    """The one-screen report."""
    s = report.summary
    if not s["sessions"]:
        return "no sessions match (nothing ingested yet, or the filters exclude everything)"
    finished = s["done"] + s["synthetic_done"]
    lines = [
        f"Sessions             {fmt.num(s['sessions'])}   {fmt.when(s['first_started_at'])} .. "
        f"{fmt.when(s['last_started_at'])} UTC",
        f"                     done {fmt.num(s['done'])} · synthetic done {fmt.num(s['synthetic_done'])}"
        f" · open {fmt.num(s['open'])} · ambiguous {fmt.num(s['ambiguous'])} (not in rates)",
        f"Synthetic-done rate  {fmt.pct(s['synthetic_done_rate'])} of {fmt.num(finished)} finished sessions",
    ]
    if report.causes.height:
        causes = " · ".join(f"{r['end_reason']} {r['sessions']:,} ({fmt.pct(r['share'], 0)})"
                            for r in report.causes.iter_rows(named=True))
        lines.append(f"  causes             {causes}")
    lines += [
        f"TTFT                 p50 {fmt.seconds(s['ttft_p50_s'])} · p95 {fmt.seconds(s['ttft_p95_s'])}",
        f"Velocity             p50 {fmt.num(s['velocity_p50_cps'])} chars/s · "
        f"p50 {fmt.num(s['velocity_p50_tps'])} tokens/s (where done reports output tokens)",
        f"Turns                mean {fmt.num(s['turns_mean'], 2)} · max {fmt.num(s['turns_max'])}",
        f"Stalls               {fmt.num(report.stall_count)} sessions with a silence >= "
        f"{report.stall_threshold_s:g} s{_longest_stall(report)}",
        f"Tools                {fmt.num(s['tool_calls'])} calls · {fmt.num(s['tool_errors'])} errors · "
        f"{fmt.num(s['orphaned_tools'])} orphaned (no result)",
    ]
    tools = report.tools
    if tools.height:
        slow = tools.sort("p95_ms", descending=True, nulls_last=True).head(TOP)
        lines += ["", "Slowest tools (observed latency)", _table(slow.select(
            pl.col("tool_name").alias("tool"), "calls",
            *(pl.col(c).map_elements(fmt.millis, return_dtype=pl.String).alias(c.removesuffix("_ms"))
              for c in ("p50_ms", "p95_ms", "p99_ms")),
        ))]
        failing = tools.filter(pl.col("errors") + pl.col("orphaned") > 0)
        if failing.height:
            failing = failing.sort(["failure_rate", "calls"], descending=True).head(TOP)
            lines += ["", "Most failing tools", _table(failing.select(
                pl.col("tool_name").alias("tool"), "calls", "errors", "orphaned",
                pl.col("failure_rate").map_elements(fmt.pct, return_dtype=pl.String).alias("failing"),
            ))]
    vel = report.velocity
    if vel.height:
        lines += ["", "Token velocity per model; flush = clamp(2 x median inter-token ms, 16, 100), "
                      f"intervals from up to {INTERVAL_SAMPLE_SESSIONS:,} sessions per model",
                  _table(vel.head(TOP).select(
                      pl.col("grp").fill_null("-").alias("model"), "sessions",
                      pl.col("cps_p50").alias("chars/s p50"),
                      pl.col("tps_p50").alias("tokens/s p50"),
                      pl.col("interval_p50_ms").alias("interval p50 ms"),
                      pl.col("suggested_flush_ms").alias("flush ms"),
                  ))]
    if report.breakdown is not None:
        lines += ["", f"By {report.by}", _table(_compact_breakdown(report))]
    return "\n".join(lines)


def _longest_stall(report: HealthReport) -> str:
    if not report.longest_stalls.height:
        return ""
    r = report.longest_stalls.row(0, named=True)
    where = f"after {r['event_before']}" if r["event_before"] else "before the first event"
    if r["tool_before"]:
        where += f" {r['tool_before']}"
    return f" (longest {fmt.seconds(r['max_gap_s'])} in {r['session_id'][:8]} {where})"


def _compact_breakdown(report: HealthReport) -> pl.DataFrame:
    table = report.breakdown
    assert table is not None
    if report.by == BY_TOOL:
        return table.select(
            pl.col("tool_name").alias("tool"), "calls", "errors", "orphaned",
            "p50_ms", "p95_ms", "p99_ms", "mean_ms",
        )
    key = report.by
    label = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m"}
    return table.select(
        pl.col(key).dt.strftime(label[key]) if key in BY_TIME else pl.col(key),
        "sessions", "done", "synthetic_done", "open", "ambiguous",
        pl.col("synthetic_done_rate").map_elements(fmt.pct, return_dtype=pl.String).alias("synth rate"),
        pl.col("ttft_p50_s").map_elements(fmt.seconds, return_dtype=pl.String).alias("ttft p50"),
        pl.col("ttft_p95_s").map_elements(fmt.seconds, return_dtype=pl.String).alias("ttft p95"),
        pl.col("velocity_p50_cps").alias("chars/s"),
        pl.col("turns_mean").alias("turns"),
        "stalls",
    )


def _table(frame: pl.DataFrame) -> str:
    return fmt.table(frame)
