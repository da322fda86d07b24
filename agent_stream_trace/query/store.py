"""TraceStore: session history and metrics as polars DataFrames.

Every method is a thin wrapper around one named SQL definition (the views and table macros of
query/sql/m002_metric_views.sql), with filters passed as bound parameters:

    from agent_stream_trace import TraceStore
    store = TraceStore("agent-stream.duckdb")
    store.health(bucket="hour", group_by="model", since="24h")
    store.tool_latency(attrs={"route": "/chat"})
    store.sql("SELECT * FROM health_by_day")

The database is opened read-only, for one call at a time by default, so that an ingester can
write between calls; `with TraceStore(db) as store:` keeps one connection for a batch of calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from ..config import resolve_db_path, resolve_stall_threshold
from ..db import connect
from ..errors import UsageError
from ..session_ids import resolve_session_id
from .definitions import require_metrics
from .filters import SessionFilter, TimeArg, check_bucket, check_group_by

_SESSIONS_SQL = """
SELECT * FROM session_filter({args})
ORDER BY started_at DESC NULLS LAST, session_id, side
LIMIT $limit
"""

_TIMELINE_SQL = """
SELECT e.seq, e.t,
       e.t - lag(e.t) OVER (ORDER BY e.seq) AS gap_s,
       e.event, e.data, e.line_no
FROM events e
WHERE e.session_id = $session_id AND e.side = $side
ORDER BY e.seq
"""

_SESSION_TOOLS_SQL = """
SELECT tool_use_id, tool_name, started_t, ended_t, latency_ms, reported_ms, status
FROM tool_calls
WHERE session_id = $session_id AND side = $side
ORDER BY started_t NULLS LAST, tool_use_id
"""


@dataclass(frozen=True)
class SessionDetail:
    """One session: its `sessions` row, its lines in order (with the gap before each), and
    its tool calls."""

    session: dict[str, Any]
    events: pl.DataFrame
    tool_calls: pl.DataFrame
    stall_threshold_s: float


class TraceStore:
    """Read-only access to a trace database. Filters (keyword arguments of every metric
    method): since / until (datetime, date, "24h", "7d", "2026-11-24"), model, outcome,
    side, attrs (a mapping of attrs keys to the values they must equal), or a ready
    SessionFilter as `where=`."""

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        stall_threshold_s: float | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self.db_path = resolve_db_path(db) if connection is None else None
        self.stall_threshold_s = resolve_stall_threshold(stall_threshold_s)
        # A cursor of the caller's connection: same database, but our queries never trip
        # over a result the caller has not fetched yet (DuckDB refuses to interleave them).
        self._con = connection.cursor() if connection is not None else None
        self._owned = False
        if self._con is not None:
            require_metrics(self._con)

    @classmethod
    def from_connection(
        cls, con: duckdb.DuckDBPyConnection, *, stall_threshold_s: float | None = None
    ) -> TraceStore:
        """Query a connection the caller already holds (e.g. an in-memory database)."""
        return cls(connection=con, stall_threshold_s=stall_threshold_s)

    def __enter__(self) -> TraceStore:
        if self._con is None:
            self._con = self._open()
            self._owned = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned and self._con is not None:
            self._con.close()
            self._con = None
            self._owned = False

    def _open(self) -> duckdb.DuckDBPyConnection:
        # Read-only, not sandboxed: this is a Python API, whose caller can read files anyway, and
        # a sandboxed connection could not share the process's database with a plain one (a
        # notebook's duckdb.connect). To serve SQL typed by others, open it as `query` does:
        # db.connect(path, read_only=True, sandboxed=True).
        con = connect(self.db_path, read_only=True)
        try:
            require_metrics(con)
            # Timestamps come back in UTC whatever the machine's zone: reports are comparable.
            con.execute("SET TimeZone = 'UTC'")
        except BaseException:
            con.close()
            raise
        return con

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            yield self._con
            return
        con = self._open()
        try:
            yield con
        finally:
            con.close()

    def _frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        with self._connection() as con:
            try:
                return con.sql(sql, params=dict(params or {})).pl()
            except duckdb.Error as exc:
                raise UsageError(f"query failed: {exc}") from None

    def _macro(self, macro: str, where: SessionFilter | None, filters: dict[str, Any],
               extra: Mapping[str, tuple[Any, str]] | None = None) -> pl.DataFrame:
        """SELECT * FROM macro(extra args..., filter args...) with everything bound."""
        flt = where if where is not None else SessionFilter.of(**filters)
        if where is not None and filters:
            raise UsageError("pass either where= or filter keywords, not both")
        args, params = flt.macro_args()
        extra_args = [f"{name} := CAST(${name} AS {sql_type})" for name, (_, sql_type) in (extra or {}).items()]
        params.update({name: value for name, (value, _) in (extra or {}).items()})
        return self._frame(f"SELECT * FROM {macro}({', '.join([*extra_args, args])})", params)

    # -- metrics -------------------------------------------------------------------------

    def sessions(self, *, limit: int | None = 100, where: SessionFilter | None = None,
                 **filters: Any) -> pl.DataFrame:
        """Sessions, newest first (macro session_filter); limit=None for all."""
        flt = where if where is not None else SessionFilter.of(**filters)
        args, params = flt.macro_args()
        params["limit"] = limit
        return self._frame(_SESSIONS_SQL.format(args=args), params)

    def health(self, bucket: str | None = "day", group_by: str | None = None, *,
               threshold_s: float | None = None, where: SessionFilter | None = None,
               **filters: Any) -> pl.DataFrame:
        """Counts by outcome, synthetic-done rate, TTFT p50/p95, velocity, turns and stalls per
        time bucket (hour/day/week/month, None = whole range) and group (model, side, outcome,
        attrs.KEY) (macro health). Rates exclude ambiguous sessions, counted apart."""
        return self._macro("health", where, filters, {
            "bucket": (check_bucket(bucket), "VARCHAR"),
            "group_by": (check_group_by(group_by), "VARCHAR"),
            "threshold_s": (self._threshold(threshold_s), "DOUBLE"),
        })

    def summary(self, *, threshold_s: float | None = None, where: SessionFilter | None = None,
                **filters: Any) -> dict[str, Any]:
        """The health row over the whole filtered range, as a dict (zero counts when empty)."""
        frame = self.health(None, None, threshold_s=threshold_s, where=where, **filters).drop("period", "grp")
        if frame.height:
            return frame.row(0, named=True)
        # health() groups, so no sessions means no row: spell out the empty answer.
        empty = {name: None for name in frame.columns}
        for name in ("sessions", "done", "synthetic_done", "open", "ambiguous", "stalls",
                     "tool_calls", "tool_errors", "orphaned_tools", "sessions_with_errors"):
            empty[name] = 0
        return empty

    def synthetic_done_causes(self, *, where: SessionFilter | None = None, **filters: Any) -> pl.DataFrame:
        """end_reason, sessions, share among synthetic-done sessions (macro synthetic_done_causes_for)."""
        return self._macro("synthetic_done_causes_for", where, filters)

    def tool_latency(self, *, where: SessionFilter | None = None, **filters: Any) -> pl.DataFrame:
        """Per tool_name: calls, errors, orphaned, error rate, observed latency p50/p95/p99 and
        mean in ms (macro tool_latency_for), slowest p95 first."""
        return self._macro("tool_latency_for", where, filters)

    def stalls(self, threshold_s: float | None = None, *, limit: int | None = None,
               where: SessionFilter | None = None, **filters: Any) -> pl.DataFrame:
        """Sessions whose longest silence reached the threshold, with where it happened and the
        events around it (macro stalls_for), longest first; `limit` keeps the longest only
        (cheaper on a big history than cutting the full list)."""
        return self._macro("stalls_for", where, filters, {
            "threshold_s": (self._threshold(threshold_s), "DOUBLE"),
            "max_rows": (_positive(limit, "limit"), "BIGINT"),
        })

    def token_velocity(self, group_by: str | None = "model", *, max_sessions: int | None = None,
                       where: SessionFilter | None = None, **filters: Any) -> pl.DataFrame:
        """Per group: chars/s and tokens/s percentiles, the inter-token interval distribution,
        and the suggested adaptive flush interval (macro token_velocity_for). max_sessions caps
        the sessions per group whose events are scanned for intervals (a fixed hash sample):
        the velocity columns always cover every session."""
        return self._macro("token_velocity_for", where, filters, {
            "group_by": (check_group_by(group_by), "VARCHAR"),
            "max_sessions": (_positive(max_sessions), "BIGINT"),
        })

    def token_intervals(self, group_by: str | None = "model", *, max_sessions: int | None = None,
                        where: SessionFilter | None = None, **filters: Any) -> pl.DataFrame:
        """Every interval between consecutive token events (ms), with its group and session
        (macro token_intervals_for): the raw distribution for histograms."""
        return self._macro("token_intervals_for", where, filters, {
            "group_by": (check_group_by(group_by), "VARCHAR"),
            "max_sessions": (_positive(max_sessions), "BIGINT"),
        })

    def ttft(self, group_by: str | None = "model", *, where: SessionFilter | None = None,
             **filters: Any) -> pl.DataFrame:
        """Time to first token distribution per group: p50/p90/p95/p99, mean, max (macro ttft_for)."""
        return self._macro("ttft_for", where, filters, {
            "group_by": (check_group_by(group_by), "VARCHAR"),
        })

    def turns(self, *, where: SessionFilter | None = None, **filters: Any) -> pl.DataFrame:
        """Sessions per number of turns, with the synthetic-done rate of each (macro turns_for)."""
        return self._macro("turns_for", where, filters)

    # -- one session ---------------------------------------------------------------------

    def resolve_session(self, prefix: str, side: str | None = None) -> tuple[str, str]:
        """The (session_id, side) whose id starts with `prefix`; it must be unique."""
        with self._connection() as con:
            session_id, sides = resolve_session_id(con, prefix, side)
        # One id recorded on both sides: the server's view is the reference unless asked.
        return session_id, "server" if "server" in sides else sides[0]

    def session(self, prefix: str, side: str | None = None) -> SessionDetail:
        """One session (id or unique prefix): its row, timeline and tool calls."""
        session_id, chosen = self.resolve_session(prefix, side)
        params = {"session_id": session_id, "side": chosen}
        row = self._frame("SELECT * FROM sessions WHERE session_id = $session_id AND side = $side",
                          params).row(0, named=True)
        return SessionDetail(
            session=row,
            events=self._frame(_TIMELINE_SQL, params),
            tool_calls=self._frame(_SESSION_TOOLS_SQL, params),
            stall_threshold_s=self.stall_threshold_s,
        )

    # -- anything else -------------------------------------------------------------------

    def sql(self, query: str, params: Mapping[str, Any] | list[Any] | None = None) -> pl.DataFrame:
        """Run any read-only SQL (views and macros included) and return a DataFrame."""
        with self._connection() as con:
            try:
                return con.sql(query, params=params).pl()
            except duckdb.Error as exc:
                raise UsageError(f"query failed: {exc}") from None

    def _threshold(self, value: float | None) -> float:
        return self.stall_threshold_s if value is None else resolve_stall_threshold(value)


def _positive(value: int | None, name: str = "max_sessions") -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")
    return value


__all__ = ["SessionDetail", "SessionFilter", "TimeArg", "TraceStore"]
