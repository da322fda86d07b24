"""One session with everything the span mapping needs, read from the database in batches.

`SessionTrace` is plain data: the `sessions` row, its events in order (JSON `data` parsed) and
its tool calls. The exporters read them with `load_session_traces`; the live hook builds them
from what it recorded. Both hand them to `spans.session_spans`, so both yield the same trace.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

import duckdb
import orjson

DEFAULT_BATCH_SIZE = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EventRow(NamedTuple):
    """One line of the `events` table (recorder records such as `_end` included)."""

    seq: int
    t: float | None
    event: str | None
    data: Any


class ToolCallRow(NamedTuple):
    """One row of the `tool_calls` table."""

    tool_use_id: str | None
    tool_name: str | None
    started_t: float | None
    ended_t: float | None
    latency_ms: float | None
    reported_ms: float | None
    status: str | None


@dataclass(frozen=True, slots=True)
class SessionTrace:
    """A session as the mapping sees it. `session` is the `sessions` row: `started_at` and
    `ended_at` are timezone-aware UTC datetimes, `attrs` a parsed dict."""

    session: Mapping[str, Any]
    events: tuple[EventRow, ...]
    tool_calls: tuple[ToolCallRow, ...]

    @property
    def session_id(self) -> str:
        return str(self.session["session_id"])

    @property
    def side(self) -> str:
        return str(self.session.get("side") or "server")

    @property
    def started_ns(self) -> int:
        """The session start in Unix nanoseconds (exact to the microsecond DuckDB keeps)."""
        started = self.session.get("started_at")
        if not isinstance(started, datetime):
            return 0
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        delta = started - _EPOCH
        return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1_000


# One query, one row per session: the `sessions` row, then its events and its tool calls each
# as one JSON array text, which orjson turns into Python lists in C. Fetching the same rows one
# by one (DuckDB making a Python tuple per row, a Python loop over them, three result streams
# merged) took ~10% longer for 3000 sessions (measured; with the token runs below, loading
# them takes 0.10-0.11 s instead of 0.13-0.14). Doubles are written by DuckDB's to_json, which
# round-trips exactly (checked on 300k random doubles, and 2.0 stays a float); the stored
# `data` JSON is embedded as stored, so parsing the array parses it too. Timestamps are read as
# naive UTC: fetching TIMESTAMPTZ into Python needs pytz, which we do not depend on. The session
# row keeps every other column as stored.
_TRACES_SELECT = """
WITH {rows},
ev AS (SELECT ord, '[' || string_agg(j, ',' ORDER BY seq, line_no) || ']' AS events FROM rows GROUP BY ord),
tl AS (
    SELECT k.ord, '[' || string_agg('[' || {tool}, ',' ORDER BY c.started_t NULLS LAST, c.tool_use_id) || ']' AS tools
    FROM tool_calls c JOIN _ast_keys k USING (session_id, side)
    GROUP BY k.ord
)
SELECT k.ord AS _ord, s.* REPLACE (
    timezone('UTC', s.started_at) AS started_at,
    timezone('UTC', s.ended_at) AS ended_at,
    CAST(s.attrs AS VARCHAR) AS attrs
), ev.events AS _events, tl.tools AS _tools
FROM sessions s JOIN _ast_keys k USING (session_id, side)
LEFT JOIN ev ON ev.ord = k.ord
LEFT JOIN tl ON tl.ord = k.ord
ORDER BY k.ord
"""
# Every event, as [seq, t, event, data]. Tokens carry {"text": ...} only.
_EVENT_ROWS = """
rows AS (
    SELECT k.ord, e.seq, e.line_no,
           '[' || e.seq || ',' || {t} || ',' || {event} || ',' ||
           CASE WHEN e.event = 'token' THEN {token} ELSE {data} END || ']' AS j
    FROM events e JOIN _ast_keys k USING (session_id, side)
)"""
# Token events are ~90% of the rows but the mapping only needs, per run of consecutive tokens,
# the first time, the last time, how many, how many characters and (with content) the text.
# With token_runs=True DuckDB collapses each run into one event whose data is
# {"text", "count", "chars", "t_last"}: ten times fewer Python objects, the same spans.
# A run is identified by the number of non-token events before it: each token counts them in
# its session's list of their seqs (the ingester stores each (session, side, seq) once, so seq
# alone orders a session's events). A hash join and a few comparisons per token cost ~20% less
# than finding the previous event with an ASOF join, which sorts every token (measured).
# Only the first of consecutive non-token events (seq right after the previous one's) needs to
# be in the list: two tokens have an event between them exactly when the first event after the
# earlier token is between them, and that one always follows a gap. Lists less than half as
# long, the query ~12% cheaper (measured).
# Characters come from text_chars, measured at ingest, instead of parsing every token's JSON.
_EVENT_RUN_ROWS = """
marks AS (
    SELECT ord, list(seq) AS seqs
    FROM (
        SELECT k.ord, e.seq, lag(e.seq) OVER (PARTITION BY k.ord ORDER BY e.seq) AS previous
        FROM events e JOIN _ast_keys k USING (session_id, side)
        WHERE e.event IS DISTINCT FROM 'token'
    )
    WHERE previous IS NULL OR previous < seq - 1
    GROUP BY ord
),
tokens AS (
    SELECT k.ord, e.seq, e.line_no, e.t, {text} AS text,
           coalesce(e.text_chars, length(e.data->>'text'), 0) AS chars, e.seq AS pos
    FROM events e JOIN _ast_keys k USING (session_id, side)
    WHERE e.event = 'token'
),
runs AS (
    SELECT tokens.ord, min(tokens.seq) AS seq, min(tokens.line_no) AS line_no,
           arg_min(tokens.t, tokens.pos) AS t,
           json_object('text', {text_agg}, 'count', count(*), 'chars', sum(tokens.chars),
                       't_last', max(tokens.t)) AS data
    FROM tokens LEFT JOIN marks ON tokens.ord = marks.ord
    GROUP BY tokens.ord, len(list_filter(coalesce(marks.seqs, []), lambda m: m < tokens.pos))
),
rows AS (
    SELECT k.ord, e.seq, e.line_no, '[' || e.seq || ',' || {t} || ',' || {event} || ',' || {data} || ']' AS j
    FROM events e JOIN _ast_keys k USING (session_id, side)
    WHERE e.event IS DISTINCT FROM 'token'
    UNION ALL
    SELECT ord, seq, line_no, '[' || seq || ',' || coalesce(to_json(t), 'null') || ',"token",' || data || ']'
    FROM runs
)"""
_TOOL = " || ',' || ".join(
    f"coalesce(to_json(c.{column}), 'null')"
    for column in ("tool_use_id", "tool_name", "started_t", "ended_t", "latency_ms", "reported_ms", "status")
) + " || ']'"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _traces_sql(token_runs: bool, token_text: bool, data_events: Collection[str] | None, data_as_text: bool) -> str:
    """The query for these options. data_as_text writes each event's stored `data` as a JSON
    string (parsed afterwards one by one) instead of embedding it: the fallback for a session
    whose embedded data Python's JSON parsers refuse."""
    if data_events is None:
        wanted = "e.data IS NOT NULL"
    else:
        names = ", ".join(_sql_string(name) for name in sorted(data_events))
        wanted = f"e.event IN ({names}) AND e.data IS NOT NULL" if names else "FALSE"
    # Stored data DuckDB does not take for JSON is written as a bare word, which no parser
    # takes either: that session falls back to data_as_text, so nothing is ever read as
    # part of the array around it.
    stored = ("to_json(CAST(e.data AS VARCHAR))" if data_as_text
              else "CASE WHEN json_valid(e.data) THEN CAST(e.data AS VARCHAR) ELSE 'invalid' END")
    columns = {
        "t": "coalesce(to_json(e.t), 'null')",
        "event": "coalesce(to_json(e.event), 'null')",
        "data": f"CASE WHEN {wanted} THEN {stored} ELSE 'null' END",
    }
    if token_runs:
        rows = _EVENT_RUN_ROWS.format(
            text="e.data->>'text'" if token_text else "NULL",
            text_agg="coalesce(string_agg(tokens.text, '' ORDER BY tokens.pos), '')" if token_text else "''",
            **columns,
        )
    else:
        text = "e.data->>'text'" if token_text else "''"
        token = f"CASE WHEN {text} IS NULL THEN '{{}}' ELSE json_object('text', {text}) END"
        rows = _EVENT_ROWS.format(token=token, **columns)
    return _TRACES_SELECT.format(rows=rows, tool=_TOOL)


def _loads(text: str) -> Any:
    """JSON text to Python. orjson parses 3-4x faster than json.loads (measured on stored
    `data`; it reads integers beyond 64 bits as floats); json.loads takes what orjson refuses
    (NaN, Infinity, lone surrogates). Raises ValueError when neither can."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return _loads(text)
    except ValueError:
        # Stored data is JSON by construction; keep the text rather than lose the event.
        return text


def _session_row(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(columns, row))
    for key in ("started_at", "ended_at"):
        value = record.get(key)
        if isinstance(value, datetime) and value.tzinfo is None:
            record[key] = value.replace(tzinfo=timezone.utc)
    attrs = _parse_json(record.get("attrs"))
    record["attrs"] = attrs if isinstance(attrs, dict) else {}
    return record


# EventRow(*row) and ToolCallRow(*row) without a Python-level __new__ call, mapped in C.
_event_row = functools.partial(tuple.__new__, EventRow)
_tool_row = functools.partial(tuple.__new__, ToolCallRow)


def _fetched(cur: duckdb.DuckDBPyConnection, batch_size: int) -> Iterator[tuple[Any, ...]]:
    # The rows of the pending result, `batch_size` at a time, chained in C.
    return itertools.chain.from_iterable(iter(lambda: cur.fetchmany(batch_size), []))


def _query(con: duckdb.DuckDBPyConnection, keys: Sequence[tuple[str, str]], sql: str) -> duckdb.DuckDBPyConnection:
    """A cursor holding the result of `sql` over `keys` (registered as _ast_keys, in order)."""
    import pyarrow as pa

    table = pa.table({
        "ord": pa.array(range(len(keys)), pa.int64()),
        "session_id": [k[0] for k in keys],
        "side": [k[1] for k in keys],
    })
    cur = con.cursor()  # its own connection: the caller's may hold a pending result
    try:
        cur.register("_ast_keys", table)
        cur.execute(sql)
    except BaseException:
        cur.close()
        raise
    return cur


def _events_as_text(con: duckdb.DuckDBPyConnection, key: tuple[str, str], sql: str) -> tuple[EventRow, ...]:
    """One session's events read with data as JSON strings, each parsed on its own (kept as
    text when no parser takes it), as they were before the arrays."""
    cur = _query(con, [key], sql)
    try:
        row = cur.fetchone()
    finally:
        cur.close()
    if row is None or row[-2] is None:
        return ()
    return tuple(
        EventRow(seq, t, name, data if name == "token" else _parse_json(data))
        for seq, t, name, data in json.loads(row[-2])
    )


def _events(text: str | None) -> tuple[EventRow, ...] | None:
    """The events of a session's JSON array, or None when neither parser takes it (some
    stored data only DuckDB's JSON reader takes, such as a trailing comma)."""
    if text is None:
        return ()
    try:
        return tuple(map(_event_row, _loads(text)))
    except (ValueError, RecursionError):
        return None


def select_session_keys(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    session_ids: Sequence[str] | None = None,
    include_ambiguous: bool = False,
) -> list[tuple[str, str]]:
    """(session_id, side) of the sessions matching the filters, oldest first."""
    clauses: list[str] = []
    params: list[Any] = []
    if not include_ambiguous:
        clauses.append("attribution <> 'ambiguous'")
    if since is not None:
        clauses.append("started_at >= ?")
        params.append(since)
    if session_ids:
        clauses.append("lower(session_id) IN (SELECT unnest(?))")
        params.append([s.lower() for s in session_ids])
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = con.execute(
        f"SELECT session_id, side FROM sessions {where} ORDER BY started_at, session_id, side", params
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def load_session_traces(
    con: duckdb.DuckDBPyConnection,
    keys: Iterable[tuple[str, str]] | None = None,
    *,
    since: datetime | None = None,
    session_ids: Sequence[str] | None = None,
    include_ambiguous: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    token_runs: bool = False,
    token_text: bool = True,
    data_events: Collection[str] | None = None,
) -> Iterator[SessionTrace]:
    """Yield the SessionTraces of `keys` ((session_id, side) pairs, in that order), else of the
    sessions matching the filters, oldest first. Sessions are fetched `batch_size` at a time.

    token_runs=True collapses runs of consecutive token events into one row each (see
    _EVENT_RUN_ROWS); token_text=False leaves their text out (the exporters' default: token
    text is content). data_events, when given, names the events whose `data` is read (the
    others' is None). `spans.session_spans` maps all these forms to the same spans."""
    if keys is None:
        keys = select_session_keys(
            con, since=since, session_ids=session_ids, include_ambiguous=include_ambiguous
        )
    key_list = list(keys)
    if not key_list:
        return
    cur = _query(con, key_list, _traces_sql(token_runs, token_text, data_events, data_as_text=False))
    try:
        columns = [d[0] for d in cur.description[1:-2]]
        for row in _fetched(cur, batch_size):
            session = _session_row(columns, row[1:-2])
            events = _events(row[-2])
            if events is None:
                events = _events_as_text(con, key_list[row[0]],
                                         _traces_sql(token_runs, token_text, data_events, data_as_text=True))
            # Tool calls hold only what to_json wrote: strings, numbers, null.
            tools = tuple(map(_tool_row, _loads(row[-1]))) if row[-1] is not None else ()
            yield SessionTrace(session, events, tools)
    finally:
        cur.close()
