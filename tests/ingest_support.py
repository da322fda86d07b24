"""Helpers for ingest tests: write recordings line by line, read a database back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import duckdb

STARTED = "2026-11-24T10:00:00+00:00"


def header(sid: str, *, v1: bool = True, started_at: str = STARTED, **extra: Any) -> str:
    rec: dict[str, Any] = {"session": sid, "started_at": started_at, "t": 0}
    if v1:
        rec.update({"v": 1, "side": "server", "attrs": {"route": "/chat"}})
    rec.update(extra)
    return json.dumps(rec)


def event(t: float, name: str, data: dict[str, Any] | None = None, *, sid: str | None = None, seq: int | None = None) -> str:
    rec: dict[str, Any] = {"t": t, "event": name, "data": data or {}}
    if sid is not None:
        rec["sid"], rec["seq"] = sid, seq
    return json.dumps(rec)


def new_sid() -> str:
    return str(uuid.uuid4())


def write(path: Path, lines: list[str], *, newline_at_end: bool = True, mode: str = "w") -> Path:
    text = "\n".join(lines) + ("\n" if newline_at_end and lines else "")
    with open(path, mode, encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def v1_session(sid: str, events: list[tuple[float, str, dict[str, Any]]], end: str | None = "done") -> list[str]:
    """A complete v1 session: header, events with seq 1.., and an `_end` record if `end`."""
    lines = [header(sid)]
    seq = 0
    for seq, (t, name, data) in enumerate(events, start=1):
        lines.append(event(t, name, data, sid=sid, seq=seq))
    if end:
        last_t = events[-1][0] if events else 0.0
        lines.append(event(last_t, "_end", {"reason": end}, sid=sid, seq=seq + 1))
    return lines


def ingest_in_runs(path: Path, lines: list[str], db: Path, cut: int | None = None) -> None:
    """Write `lines` to `path` and ingest them (open window 0): in one run, or, with `cut`, the
    lines before it in a first run and the rest, appended, in a second."""
    from agent_stream_trace.ingest.pipeline import IngestOptions, ingest

    parts = [lines] if cut is None else [lines[:cut], lines[cut:]]
    for i, part in enumerate(parts):
        write(path, part, mode="a" if i else "w")
        ingest([path], IngestOptions(db=db, open_window=0))


def rows(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every public table, sorted, for whole-database comparisons."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        out = {}
        for table in ("sessions", "events", "tool_calls", "rejects"):
            out[table] = sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        return out
    finally:
        con.close()
