"""Build sessions straight into the public tables, for exporter tests and benchmarks.

A stand-in for the ingester where a test needs exact control over one session: each helper
writes the `sessions`, `events` and `tool_calls` rows a recording of those events yields,
with the metrics computed as the README defines them (only those the exporters read).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import pyarrow as pa

from agent_stream_trace.simulate.generator import seeded_uuid

Event = tuple[float, str, dict[str, Any]]

BASE_TIME = datetime(2026, 11, 24, 4, 44, 47, 533912, tzinfo=timezone.utc)


def scenario(kind: str, rng: random.Random | None = None, *, tools: int = 2, tokens: int = 6) -> list[Event]:
    """Events of a typical session: plain, tools, orphan, tool_error, error_then_done, crash, progress."""
    rng = rng or random.Random(0)
    t = 0.0
    out: list[Event] = []

    def tick(dt: float = 0.05) -> float:
        nonlocal t
        t = round(t + dt * (0.5 + rng.random()), 3)
        return t

    def say(n: int) -> None:
        for i in range(n):
            out.append((tick(), "token", {"text": f"word{i} "}))

    if kind in ("tools", "orphan", "tool_error", "progress"):
        out.append((tick(0.01), "thinking", {"text": "I should look this up first."}))
    say(tokens)
    if kind == "progress":
        out.append((tick(), "progress", {"step": "search", "percentage": 40, "message": "searching"}))
        out.append((tick(), "creation", {"creation_type": "chart", "count": 1, "tool_use_id": "tu_c", "items": [{"id": 1}]}))
    if kind in ("tools", "orphan", "tool_error"):
        for n in range(tools):
            tid = f"tu_{n}"
            out.append((tick(), "tool_use", {"tool_name": f"tool_{n % 2}", "tool_use_id": tid,
                                             "input_summary": f"query #{n}", "status": "running"}))
            if kind == "orphan" and n == tools - 1:
                break
            status = "error" if kind == "tool_error" and n == 0 else "done"
            out.append((tick(0.2), "tool_result", {"tool_name": f"tool_{n % 2}", "tool_use_id": tid,
                                                   "output_summary": f"{n + 1} results", "duration_ms": 200,
                                                   "status": status}))
            out.append((tick(0.001), "turn", {"turn_number": n + 2, "total_tools": n + 1}))
            say(tokens)
    if kind == "error_then_done":
        out.append((tick(), "error", {"error_type": "rate_limit", "message": "slow down", "details": {"retry": 1}}))
        say(2)
    if kind not in ("crash", "orphan"):
        out.append((tick(0.001), "done", {"message_id": "msg_1", "num_turns": 1 + tools, "tool_count": tools,
                                          "duration_ms": int(t * 1000), "model": "claude-sonnet-4-6",
                                          "total_cost_usd": 0.004}))
    return out


def _rows(session_id: str, side: str, started_at: datetime, events: Sequence[Event], *,
          outcome: str | None, end_reason: str | None, attribution: str, attrs: dict[str, Any],
          source_file: str) -> tuple[dict[str, Any], list[tuple], list[tuple]]:
    wire = [e for e in events if not e[1].startswith("_")]
    tokens = [e for e in wire if e[1] == "token"]
    done = next((e[2] for e in wire if e[1] == "done"), None)
    if outcome is None:
        outcome = "done" if done else "synthetic_done"
    if end_reason is None:
        end_reason = "done" if done else ("returned_without_done" if outcome != "open" else None)
    calls: dict[str, dict[str, Any]] = {}
    for t, name, data in wire:
        if name == "tool_use":
            calls[data["tool_use_id"]] = {"name": data["tool_name"], "start": t, "end": None, "reported": None,
                                          "status": "orphaned"}
        elif name == "tool_result" and data["tool_use_id"] in calls:
            c = calls[data["tool_use_id"]]
            c.update(end=t, reported=data.get("duration_ms"), status=data.get("status", "done"))
    tool_rows = [
        (session_id, side, tid, c["name"], c["start"], c["end"],
         (c["end"] - c["start"]) * 1000 if c["end"] is not None else None, c["reported"], c["status"])
        for tid, c in calls.items()
    ]
    times = [e[0] for e in events]
    gaps = [b - a for a, b in zip(times, times[1:])]
    duration = times[-1] if times else 0.0
    session = {
        "session_id": session_id, "side": side, "source_file": source_file, "started_at": started_at,
        "ended_at": started_at + timedelta(seconds=duration) if outcome != "open" else None,
        "duration_s": duration, "outcome": outcome, "end_reason": end_reason if outcome != "open" else None,
        "attribution": attribution, "event_count": len(wire), "token_events": len(tokens),
        "token_chars": sum(len(e[2]["text"]) for e in tokens), "ttft_s": tokens[0][0] if tokens else None,
        "token_velocity_cps": None, "max_gap_s": max(gaps) if gaps else None,
        "turns": max([e[2]["turn_number"] for e in wire if e[1] == "turn"], default=1 if wire else 0),
        "tool_calls": len(calls), "tool_errors": sum(c["status"] == "error" for c in calls.values()),
        "orphaned_tools": sum(c["status"] == "orphaned" for c in calls.values()),
        "errors": sum(e[1] == "error" for e in wire), "model": done.get("model") if done else None,
        "message_id": done.get("message_id") if done else None,
        "total_cost_usd": done.get("total_cost_usd") if done else None,
        "reported_turns": done.get("num_turns") if done else None,
        "reported_tool_count": done.get("tool_count") if done else None,
        "reported_duration_ms": done.get("duration_ms") if done else None,
        "attrs": json.dumps(attrs), "output_tokens": None, "token_velocity_tps": None,
        "max_gap_at_s": None, "lost_lines": 0,
    }
    event_rows = [
        (session_id, side, seq, t, name, json.dumps(data), source_file, seq + 1)
        for seq, (t, name, data) in enumerate(events, start=1)
    ]
    return session, event_rows, tool_rows


def add_session(
    con: duckdb.DuckDBPyConnection,
    events: Sequence[Event],
    *,
    session_id: str | None = None,
    side: str = "server",
    started_at: datetime = BASE_TIME,
    outcome: str | None = None,
    end_reason: str | None = None,
    attribution: str = "exact",
    attrs: dict[str, Any] | None = None,
) -> str:
    """Insert (or replace) one session; returns its id."""
    session_id = session_id or str(uuid.uuid4())
    add_sessions(con, [dict(events=events, session_id=session_id, side=side, started_at=started_at,
                            outcome=outcome, end_reason=end_reason, attribution=attribution, attrs=attrs)])
    return session_id


def give_keys(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Give each (session_id, side) of `relation` without a key in `_session_keys` the next free
    one, as the ingester does: events, sessions and tool calls are stored under it."""
    con.execute(f"""
        INSERT INTO _session_keys (k, session_id, side, uid)
        SELECT (SELECT coalesce(max(k), 0) FROM _session_keys) + row_number() OVER (), session_id, side,
            try_cast(session_id AS UUID)
        FROM (SELECT DISTINCT session_id, side FROM {relation}) ANTI JOIN _session_keys USING (session_id, side)
    """)


def session_key(con: duckdb.DuckDBPyConnection, session_id: str, side: str) -> int:
    """The session's key in `_session_keys`, given it first if it has none (give_keys)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _one AS SELECT ?::VARCHAR AS session_id, ?::VARCHAR AS side", [session_id, side])
    give_keys(con, "_one")
    (k,) = con.execute("SELECT k FROM _session_keys WHERE session_id = ? AND side = ?", [session_id, side]).fetchone()
    return k


def insert_events(con: duckdb.DuckDBPyConnection, rows_sql: str, params: list[Any] | None = None) -> None:
    """Store rows shaped like the public `events` (the result of `rows_sql`, by column name:
    session_id, side, seq, t, event, data, and if present source_file, line_no, text_chars) as the
    ingester stores them: `events` is a view over `_events`, which keys each row's session by
    `_session_keys` and its file by `_source_files` (migration m013)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _new_events AS {rows_sql}", params)
    cols = {name for (name,) in con.execute("SELECT name FROM pragma_table_info('_new_events')").fetchall()}

    def col(name: str, sql_type: str) -> str:
        return f"n.{name}" if name in cols else f"NULL::{sql_type}"

    give_keys(con, "_new_events")
    con.execute(f"""
        INSERT INTO _source_files
        SELECT (SELECT coalesce(max(file_id), 0) FROM _source_files) + row_number() OVER (), path
        FROM (SELECT DISTINCT {col('source_file', 'VARCHAR')} AS path FROM _new_events n WHERE path IS NOT NULL)
        ANTI JOIN _source_files USING (path)
    """)
    con.execute(f"""
        INSERT INTO _events (k, seq, t, event, data, file_id, line_no, text_chars)
        SELECT s.k, n.seq, n.t, n.event, n.data, f.file_id, {col('line_no', 'BIGINT')}, {col('text_chars', 'INTEGER')}
        FROM _new_events n JOIN _session_keys s USING (session_id, side)
        LEFT JOIN _source_files f ON f.path = {col('source_file', 'VARCHAR')}
    """)
    con.execute("DROP TABLE _new_events")


def add_sessions(con: duckdb.DuckDBPyConnection, specs: Sequence[dict[str, Any]]) -> None:
    """Bulk insert: whole Arrow batches, as the real ingester does."""
    sessions: list[dict[str, Any]] = []
    events: list[tuple] = []
    tools: list[tuple] = []
    for spec in specs:
        s, e, t = _rows(spec["session_id"], spec.get("side", "server"), spec.get("started_at", BASE_TIME),
                        spec["events"], outcome=spec.get("outcome"), end_reason=spec.get("end_reason"),
                        attribution=spec.get("attribution", "exact"), attrs=spec.get("attrs") or {},
                        source_file="test.jsonl")
        sessions.append(s)
        events.extend(e)
        tools.extend(t)
    keys = pa.table({"session_id": [s["session_id"] for s in sessions], "side": [s["side"] for s in sessions]})
    con.register("_keys", keys)
    # `sessions` and `tool_calls` are views over tables keyed by session, as `events` is (m019)
    for table in ("_sessions", "_tool_calls", "_events"):
        con.execute(f"DELETE FROM {table} WHERE k IN (SELECT k FROM _session_keys SEMI JOIN _keys USING (session_id, side))")
    give_keys(con, "_keys")
    con.unregister("_keys")
    s_tbl = pa.Table.from_pylist(sessions)
    e_tbl = pa.table(list(zip(*events)) if events else [[]] * 8,
                     names=["session_id", "side", "seq", "t", "event", "data", "source_file", "line_no"])
    t_tbl = pa.table(list(zip(*tools)) if tools else [[]] * 9,
                     names=["session_id", "side", "tool_use_id", "tool_name", "started_t", "ended_t",
                            "latency_ms", "reported_ms", "status"])
    con.register("_s", s_tbl)
    con.register("_e", e_tbl)
    con.register("_t", t_tbl)
    cols = ", ".join(s_tbl.column_names)
    con.execute(f"INSERT INTO _sessions (k, {cols}) SELECT k.k, {', '.join('s.' + c for c in s_tbl.column_names)} "
                "FROM _s s JOIN _session_keys k USING (session_id, side)")
    if events:
        insert_events(con, "SELECT * FROM _e")
    if tools:
        con.execute("INSERT INTO _tool_calls SELECT k.k, t.* FROM _t t JOIN _session_keys k USING (session_id, side)")
    for name in ("_s", "_e", "_t"):
        con.unregister(name)


KINDS = ("plain", "tools", "orphan", "tool_error", "error_then_done", "crash", "progress")


def simulated_specs(n: int, *, seed: int = 7, start: datetime = BASE_TIME, tools: int = 2) -> list[dict[str, Any]]:
    """n sessions cycling through every scenario, a few seconds apart, seeded."""
    rng = random.Random(seed)
    return [
        dict(events=scenario(KINDS[i % len(KINDS)], rng, tools=tools), session_id=seeded_uuid(rng),
             started_at=start + timedelta(seconds=3 * i), attrs={"route": "/chat"})
        for i in range(n)
    ]


def session_trace(events: Sequence[Event], *, session_id: str | None = None, side: str = "server",
                  started_at: datetime = BASE_TIME, outcome: str | None = None, end_reason: str | None = None,
                  attribution: str = "exact", attrs: dict[str, Any] | None = None) -> Any:
    """The SessionTrace `load_session_traces` would read for these events, built without a database."""
    from agent_stream_trace.session import EventRow, SessionTrace, ToolCallRow

    session, event_rows, tool_rows = _rows(
        session_id or str(uuid.uuid4()), side, started_at, events, outcome=outcome, end_reason=end_reason,
        attribution=attribution, attrs=attrs or {}, source_file="test.jsonl")
    session["attrs"] = attrs or {}
    return SessionTrace(
        session,
        tuple(EventRow(r[2], r[3], r[4], json.loads(r[5])) for r in event_rows),
        tuple(ToolCallRow(*r[2:]) for r in sorted(tool_rows, key=lambda r: (r[4], r[2]))),
    )
