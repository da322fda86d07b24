"""The health report behind `agent-stream-trace stats`: TraceStore results gathered as data.

Nothing here computes a metric: each part is one TraceStore call (one SQL definition).
Presentation lives in stats_cli.py; the dashboard can render the same HealthReport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from .filters import BUCKETS, SessionFilter
from .store import TraceStore

# `--by` choices besides attrs.KEY: time buckets, session groups, and per tool.
BY_TIME = BUCKETS
BY_GROUP = ("model", "side", "outcome")
BY_TOOL = "tool"
# The inter-token intervals need a window over every token event, the one query here whose
# cost grows with the events rather than the sessions: the report reads them from a fixed
# sample of at most this many sessions per model (velocity percentiles use every session).
INTERVAL_SAMPLE_SESSIONS = 500


@dataclass(frozen=True)
class HealthReport:
    filter: SessionFilter
    stall_threshold_s: float
    summary: dict[str, Any]
    causes: pl.DataFrame
    tools: pl.DataFrame
    stall_count: int
    longest_stalls: pl.DataFrame
    velocity: pl.DataFrame
    by: str | None
    breakdown: pl.DataFrame | None


def breakdown(store: TraceStore, by: str, flt: SessionFilter) -> pl.DataFrame:
    """The `--by` table: health per time bucket or per group, or latency per tool."""
    if by == BY_TOOL:
        return store.tool_latency(where=flt)
    if by in BY_TIME:
        return store.health(by, None, where=flt).rename({"period": by}).drop("grp")
    return store.health(None, by, where=flt).rename({"grp": by}).drop("period")


def build_report(store: TraceStore, flt: SessionFilter, by: str | None = None, *,
                 top: int = 5) -> HealthReport:
    """Everything `stats` shows, in one read-only connection."""
    with store:
        summary = store.summary(where=flt)
        return HealthReport(
            filter=flt,
            stall_threshold_s=store.stall_threshold_s,
            summary=summary,
            causes=store.synthetic_done_causes(where=flt),
            tools=store.tool_latency(where=flt),
            stall_count=summary["stalls"],
            longest_stalls=store.stalls(limit=top, where=flt),
            velocity=store.token_velocity("model", max_sessions=INTERVAL_SAMPLE_SESSIONS, where=flt),
            by=by,
            breakdown=breakdown(store, by, flt) if by else None,
        )


def report_to_dict(report: HealthReport) -> dict[str, Any]:
    """The report as plain JSON-ready data (what `stats --format json` prints)."""
    flt = report.filter
    return {
        "filter": {
            "since": flt.since, "until": flt.until, "model": flt.model, "outcome": flt.outcome,
            "side": flt.side, "attrs": dict(flt.attrs),
        },
        "stall_threshold_s": report.stall_threshold_s,
        "summary": report.summary,
        "synthetic_done_causes": report.causes.to_dicts(),
        "tools": report.tools.to_dicts(),
        "stalls": {"count": report.stall_count, "longest": report.longest_stalls.to_dicts()},
        "velocity": report.velocity.rename({"grp": "model"}).to_dicts(),
        "interval_sample_sessions": INTERVAL_SAMPLE_SESSIONS,
        "by": report.by,
        "breakdown": report.breakdown.to_dicts() if report.breakdown is not None else None,
    }
