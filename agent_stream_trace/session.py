"""One session with everything the span mapping needs, read from the database in batches.

`SessionTrace` is plain data: the `sessions` row, its events in order (JSON `data` parsed) and
its tool calls. The exporters read them with `load_session_traces`; the live hook builds them
from what it recorded. Both hand them to `spans.session_spans`, so both yield the same trace.
"""

from __future__ import annotations

import itertools
import json
import threading
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


# Three ordered streams (sessions, events, tool calls), each joined to the selected keys and
# sorted by the key's position, are merged in one pass: every table is scanned once whatever
# the number of sessions, and only `batch_size` rows of each are in Python at a time.
# Timestamps are read as naive UTC: fetching TIMESTAMPTZ into Python needs pytz, which we do
# not depend on. The session row keeps every other column as stored.
_SESSION_SELECT = """
SELECT k.ord AS _ord, s.* REPLACE (
    timezone('UTC', s.started_at) AS started_at,
    timezone('UTC', s.ended_at) AS ended_at,
    CAST(s.attrs AS VARCHAR) AS attrs
)
FROM sessions s JOIN _ast_keys k USING (session_id, side)
ORDER BY k.ord
"""
# Token events are ~90% of the rows but the mapping only needs, per run of consecutive tokens,
# the first time, the last time, how many, how many characters and (with content) the text.
# With token_runs=True DuckDB collapses each run into one EventRow whose data is
# {"text", "count", "chars", "t_last"}: ten times fewer Python objects, the same spans.
# A run is identified by the last non-token event before it, found with an ASOF join on seq
# (the ingester stores each (session, side, seq) once, so seq alone orders a session's events).
# Characters come from text_chars, measured at ingest, instead of parsing every token's JSON.
_EVENTS_SELECT = """
SELECT k.ord, e.seq, e.t, e.event,
       CASE WHEN e.event = 'token' THEN e.data->>'text' END,
       CASE WHEN e.event <> 'token' OR e.event IS NULL THEN CAST(e.data AS VARCHAR) END,
       NULL::BIGINT, NULL::BIGINT, NULL::DOUBLE, e.line_no
FROM events e JOIN _ast_keys k USING (session_id, side)
ORDER BY k.ord, e.seq, e.line_no
"""
_EVENT_RUNS_SELECT = f"""
WITH marks AS (
    SELECT k.ord, e.seq AS pos
    FROM events e JOIN _ast_keys k USING (session_id, side)
    WHERE e.event IS DISTINCT FROM 'token'
),
tokens AS (
    SELECT k.ord, e.seq, e.line_no, e.t, {{text}} AS text, coalesce(e.text_chars, length(e.data->>'text'), 0) AS chars,
           e.seq AS pos
    FROM events e JOIN _ast_keys k USING (session_id, side)
    WHERE e.event = 'token'
)
SELECT k.ord, e.seq, e.t, e.event, NULL, {{data}}, NULL::BIGINT, NULL::BIGINT, NULL::DOUBLE, e.line_no
FROM events e JOIN _ast_keys k USING (session_id, side)
WHERE e.event IS DISTINCT FROM 'token'
UNION ALL
SELECT tokens.ord, min(tokens.seq), arg_min(tokens.t, tokens.pos), 'token', {{text_agg}}, NULL, count(*),
       sum(tokens.chars), max(tokens.t), min(tokens.line_no)
FROM tokens ASOF LEFT JOIN marks ON tokens.ord = marks.ord AND tokens.pos > marks.pos
GROUP BY tokens.ord, marks.pos
ORDER BY 1, 2, 10
"""
_TOOLS_SELECT = """
SELECT k.ord, c.tool_use_id, c.tool_name, c.started_t, c.ended_t, c.latency_ms, c.reported_ms, c.status
FROM tool_calls c JOIN _ast_keys k USING (session_id, side)
ORDER BY k.ord, c.started_t NULLS LAST, c.tool_use_id
"""


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _loads(text: str) -> Any:
    """JSON text to Python. orjson parses the stored `data` 3-4x faster than json.loads (a
    third of loading sessions for export, measured); json.loads takes what orjson refuses
    (integers beyond 64 bits). Raises ValueError when neither can."""
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


def _stream(cur: duckdb.DuckDBPyConnection, sql: str, batch_size: int) -> Iterator[tuple[Any, ...]]:
    cur.execute(sql)
    return _fetched(cur, batch_size)


def _fetched(cur: duckdb.DuckDBPyConnection, batch_size: int) -> Iterator[tuple[Any, ...]]:
    # The rows of the pending result, `batch_size` at a time, chained in C (no generator
    # frame per row: tens of thousands of rows per export).
    return itertools.chain.from_iterable(iter(lambda: cur.fetchmany(batch_size), []))


class _StartedStream:
    """_stream, with the query already running in a thread once constructed.

    DuckDB releases the GIL while it executes, so the events query (the costly one) runs while
    Python turns the session rows into dicts; its first fetch then waits for less."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, sql: str, batch_size: int) -> None:
        self._cur = cur
        self._batch_size = batch_size
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sql,), name="agent-stream-load", daemon=True)
        self._thread.start()

    def _run(self, sql: str) -> None:
        try:
            self._cur.execute(sql)
        except BaseException as exc:  # re-raised to the consumer
            self._error = exc

    def wait(self) -> None:
        """Until the query has finished (the cursor may be closed after this)."""
        self._thread.join()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        self.wait()
        if self._error is not None:
            raise self._error
        return _fetched(self._cur, self._batch_size)


def _session_events(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, list[EventRow]]]:
    """(position, events) per session, parsing `data` JSON; rows sorted by position. One loop,
    no per-row intermediates: this runs once per event row, tens of thousands of times."""
    loads = _loads
    new_row = tuple.__new__  # EventRow(...) without a Python-level __new__ call
    current: int | None = None
    items: list[EventRow] = []
    for ord_, seq, t, name, token_text, data, count, chars, t_last, _line_no in rows:
        if ord_ != current:
            if current is not None:
                yield current, items
            current, items = ord_, []
        if count is not None:
            parsed: Any = {"text": token_text or "", "count": count, "chars": chars, "t_last": t_last}
        elif name == "token":
            parsed = {"text": token_text} if token_text is not None else {}
        elif data is None:
            parsed = None
        else:
            try:
                parsed = loads(data)
            except ValueError:
                parsed = data  # stored data is JSON by construction; keep the text, not lose the event
        items.append(new_row(EventRow, (seq, t, name, parsed)))
    if current is not None:
        yield current, items


def _group(rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, list[Any]]]:
    """Consecutive rows with the same position, as (position, items)."""
    current: int | None = None
    items: list[Any] = []
    for ord_, item in rows:
        if ord_ != current:
            if current is not None:
                yield current, items
            current, items = ord_, []
        items.append(item)
    if current is not None:
        yield current, items


def _merge(
    sessions: Iterator[tuple[int, dict[str, Any]]],
    events: Iterator[tuple[int, list[EventRow]]],
    tools: Iterator[tuple[int, list[ToolCallRow]]],
) -> Iterator[SessionTrace]:
    next_event = next(events, None)
    next_tool = next(tools, None)
    for ord_, row in sessions:
        session_events: list[EventRow] = []
        session_tools: list[ToolCallRow] = []
        while next_event is not None and next_event[0] <= ord_:
            if next_event[0] == ord_:
                session_events = next_event[1]
            next_event = next(events, None)
        while next_tool is not None and next_tool[0] <= ord_:
            if next_tool[0] == ord_:
                session_tools = next_tool[1]
            next_tool = next(tools, None)
        yield SessionTrace(row, tuple(session_events), tuple(session_tools))


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
    sessions matching the filters, oldest first. Rows are fetched `batch_size` at a time.

    token_runs=True collapses runs of consecutive token events into one row each (see
    _EVENT_RUNS_SELECT); token_text=False leaves their text out (the exporters' default: token
    text is content). `spans.session_spans` maps both forms to the same spans."""
    import pyarrow as pa

    if keys is None:
        keys = select_session_keys(
            con, since=since, session_ids=session_ids, include_ambiguous=include_ambiguous
        )
    key_list = list(keys)
    if not key_list:
        return
    table = pa.table({
        "ord": pa.array(range(len(key_list)), pa.int64()),
        "session_id": [k[0] for k in key_list],
        "side": [k[1] for k in key_list],
    })
    # One cursor per stream: a DuckDB connection holds one pending result at a time.
    cursors = [con.cursor() for _ in range(3)]
    started: _StartedStream | None = None
    try:
        for cur in cursors:
            cur.register("_ast_keys", table)
        s_cur, e_cur, t_cur = cursors
        if token_runs:
            if data_events is None:
                data_sql = "CAST(e.data AS VARCHAR)"
            else:
                names = ", ".join(_sql_string(name) for name in sorted(data_events))
                data_sql = f"CASE WHEN e.event IN ({names}) THEN CAST(e.data AS VARCHAR) END" if names else "NULL"
            events_sql = _EVENT_RUNS_SELECT.format(
                text="e.data->>'text'" if token_text else "NULL",
                text_agg="string_agg(tokens.text, '' ORDER BY tokens.pos)" if token_text else "''",
                data=data_sql,
            )
        else:
            events_sql = _EVENTS_SELECT if token_text else _EVENTS_SELECT.replace("e.data->>'text'", "''")
        # The events query first (the costly one, in a thread), then the others meanwhile.
        started = _StartedStream(e_cur, events_sql, batch_size * 20)
        events = _session_events(started)  # a generator: it waits for the query when first read
        s_rows = _stream(s_cur, _SESSION_SELECT, batch_size)
        columns = [d[0] for d in s_cur.description[1:]]
        sessions = ((row[0], _session_row(columns, row[1:])) for row in s_rows)
        tools = _group((r[0], ToolCallRow(*r[1:])) for r in _stream(t_cur, _TOOLS_SELECT, batch_size * 4))
        yield from _merge(sessions, events, tools)
    finally:
        if started is not None:
            started.wait()  # a cursor is not closed under a running query
        for cur in cursors:
            cur.close()
