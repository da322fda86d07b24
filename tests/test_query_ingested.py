"""End to end: recordings through the real ingester, then `agent-stream-trace stats/show/sessions`,
checked against hand computations made directly from the raw recording lines."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest

from agent_stream_trace import TraceStore, migrations
from agent_stream_trace.cli import main
from agent_stream_trace.db import connect
from agent_stream_trace.errors import DatabaseError
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
from agent_stream_trace.migrations import m001_public_tables
from agent_stream_trace.recording import dumps, event_record, header_record


def quantile_cont(values: list[float], q: float) -> float | None:
    xs = sorted(values)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def split_v0(path: Path) -> list[dict[str, Any]]:
    """Sessions of a sequential v0 file: each header owns the lines below it."""
    sessions: list[dict[str, Any]] = []
    for raw in path.read_text(encoding="utf-8").split("\n"):
        if not raw.strip():
            continue
        rec = json.loads(raw)
        if "session" in rec:
            sessions.append({"id": rec["session"], "lines": []})
        else:
            sessions[-1]["lines"].append(rec)
    return sessions


def tool_latencies(sessions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in sessions:
        started: dict[str, tuple[str, float]] = {}
        ended: dict[str, tuple[float, str]] = {}
        for ln in s["lines"]:
            if ln["event"] == "tool_use":
                started[ln["data"]["tool_use_id"]] = (ln["data"]["tool_name"], ln["t"])
            elif ln["event"] == "tool_result":
                ended[ln["data"]["tool_use_id"]] = (ln["t"], ln["data"]["status"])
        for tid, (name, t0) in started.items():
            row = out.setdefault(name, {"calls": 0, "errors": 0, "orphaned": 0, "lat": []})
            row["calls"] += 1
            if tid not in ended:
                row["orphaned"] += 1
                continue
            t1, status = ended[tid]
            row["errors"] += status == "error"
            row["lat"].append((t1 - t0) * 1000)
    return out


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_upstream_sequential_sample(upstream_sequential: Path, db_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    sessions = split_v0(upstream_sequential)
    done = [s for s in sessions if any(ln["event"] == "done" for ln in s["lines"])]
    # Sequential file, read long after it was written: every session is closed.
    expected_rate = (len(sessions) - len(done)) / len(sessions)
    tools = tool_latencies(sessions)
    assert len(sessions) == 25 and 0 < expected_rate < 1 and len(tools) >= 2

    ingest([upstream_sequential], IngestOptions(db=db_path, now=upstream_sequential.stat().st_mtime + 3600))
    report = cli_json(capsys, "stats", "--db", str(db_path), "--format", "json")
    summary = report["summary"]
    assert (summary["done"], summary["synthetic_done"], summary["open"], summary["ambiguous"]) == (
        len(done), len(sessions) - len(done), 0, 0)
    assert summary["synthetic_done_rate"] == pytest.approx(expected_rate)
    # v0 records no end: the cause is always "no end record".
    assert report["synthetic_done_causes"] == [
        {"end_reason": "no_end_record", "sessions": len(sessions) - len(done), "share": 1.0}]

    got = {r["tool_name"]: r for r in report["tools"]}
    assert set(got) == set(tools)
    for name, want in tools.items():
        row = got[name]
        assert (row["calls"], row["errors"], row["orphaned"]) == (want["calls"], want["errors"], want["orphaned"])
        for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert row[col] == pytest.approx(quantile_cont(want["lat"], q), abs=1e-6), (name, col)

    ttfts = [next(ln["t"] for ln in s["lines"] if ln["event"] == "token") for s in sessions
             if any(ln["event"] == "token" for ln in s["lines"])]
    assert summary["ttft_p50_s"] == pytest.approx(quantile_cont(ttfts, 0.5))
    assert summary["ttft_p95_s"] == pytest.approx(quantile_cont(ttfts, 0.95))

    capsys.readouterr()
    assert main(["stats", "--db", str(db_path)]) == 0
    text = capsys.readouterr().out
    assert f"{100 * expected_rate:.1f}% of {len(sessions)} finished" in text


def _v1_file(path: Path) -> dict[str, dict[str, Any]]:
    """A v1 recording with one session per case; returns the cases by name with their lines."""
    start = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
    cases: dict[str, list[tuple[float, str, Any]]] = {
        "done": [(0.4, "token", {"text": "Hello "}), (0.45, "token", {"text": "there"}),
                 (0.5, "tool_use", {"tool_name": "search", "tool_use_id": "a1", "input_summary": "q", "status": "running"}),
                 (0.8, "tool_result", {"tool_name": "search", "tool_use_id": "a1", "output_summary": "3",
                                        "duration_ms": 299, "status": "done"}),
                 (0.85, "token", {"text": "!"}),
                 (0.9, "done", {"message_id": "m1", "num_turns": 1, "tool_count": 1, "duration_ms": 900,
                                "model": "fast-model", "total_cost_usd": 0.001, "usage": {"output_tokens": 9}}),
                 (0.9, "_end", {"reason": "done"})],
        "crash": [(0.3, "token", {"text": "Let me "}), (0.32, "token", {"text": "check"}),
                  (0.4, "tool_use", {"tool_name": "fetch", "tool_use_id": "b1", "input_summary": "u", "status": "running"}),
                  (18.4, "_end", {"reason": "exception", "type": "TimeoutError", "message": "upstream model timed out"})],
        "single_token": [(1.2, "token", {"text": "Hi"}),
                         (1.3, "_end", {"reason": "cancelled"})],
        "open": [(0.2, "token", {"text": "still "}), (0.25, "token", {"text": "going"})],
    }
    lines = []
    ids = {}
    for i, (name, events) in enumerate(cases.items()):
        sid = f"{i + 1:08x}-1111-4111-8111-111111111111"
        ids[name] = sid
        lines.append(dumps(header_record(sid, start.replace(minute=i), attrs={"route": "/chat", "case": name})))
        for seq, (t, ev, data) in enumerate(events, start=1):
            lines.append(dumps(event_record(sid, seq, t, ev, data)))
    path.write_text("".join(lines), encoding="utf-8")
    return {name: {"id": ids[name], "lines": events} for name, events in cases.items()}


def test_v1_recording_end_to_end(tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "v1.jsonl"
    cases = _v1_file(rec)
    # The clock sits right after the file was written: the session without an end is open.
    ingest([rec], IngestOptions(db=db_path, open_window=300.0, now=rec.stat().st_mtime + 1))
    report = cli_json(capsys, "stats", "--db", str(db_path), "--format", "json")
    s = report["summary"]
    assert (s["sessions"], s["done"], s["synthetic_done"], s["open"]) == (4, 1, 2, 1)
    assert s["synthetic_done_rate"] == pytest.approx(2 / 3)  # open is not in the denominator
    assert {r["end_reason"]: r["sessions"] for r in report["synthetic_done_causes"]} == {
        "exception": 1, "cancelled": 1}
    assert report["stalls"]["count"] == 1
    stall = report["stalls"]["longest"][0]
    assert stall["session_id"] == cases["crash"]["id"]
    assert stall["max_gap_s"] == pytest.approx(18.0)
    assert (stall["event_before"], stall["tool_before"], stall["event_after"]) == ("tool_use", "fetch", "_end")

    # velocity by hand: chars / (last token t - first token t); tokens/s from done usage
    done_tokens = [ln for ln in cases["done"]["lines"] if ln[1] == "token"]
    span = done_tokens[-1][0] - done_tokens[0][0]
    cps = sum(len(ln[2]["text"]) for ln in done_tokens) / span
    store = TraceStore(db_path)
    row = store.sessions(attrs={"case": "done"}).row(0, named=True)
    assert row["token_velocity_cps"] == pytest.approx(cps)
    assert row["token_velocity_tps"] == pytest.approx(9 / span)
    single = store.sessions(attrs={"case": "single_token"}).row(0, named=True)
    assert single["token_velocity_cps"] is None and single["ttft_s"] == pytest.approx(1.2)

    tools = {r["tool_name"]: r for r in report["tools"]}
    assert tools["fetch"]["orphaned"] == 1 and tools["fetch"]["p50_ms"] is None
    assert tools["search"]["p50_ms"] == pytest.approx(300.0)

    by_route = cli_json(capsys, "stats", "--db", str(db_path), "--by", "attrs.case", "--format", "json")
    assert {r["attrs.case"]: r["sessions"] for r in by_route["breakdown"]} == {name: 1 for name in cases}


def test_model_from_done_else_from_header_attrs(tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A session that ended without done has the model its header's attrs name, so the
    synthetic-done rate grouped by model counts it under that model (the done's model wins)."""
    start = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
    done = {"message_id": "m", "num_turns": 1, "tool_count": 0, "duration_ms": 500, "model": "served-model"}
    sessions = {  # name: (attrs, events)
        "done": ({"model": "asked-model"}, [(0.2, "token", {"text": "hi"}), (0.5, "done", done)]),
        "crash": ({"model": "asked-model"}, [(0.2, "token", {"text": "hi"}), (0.4, "_end", {"reason": "exception"})]),
        "crash2": ({"model": "asked-model"}, [(0.3, "_end", {"reason": "cancelled"})]),
        "fine": ({"model": "asked-model"}, [(0.2, "token", {"text": "hi"}),
                                            (0.5, "done", {**done, "model": "asked-model"})]),
        "no_model": ({"route": "/chat"}, [(0.3, "_end", {"reason": "cancelled"})]),
        "not_text": ({"model": {"name": "x"}}, [(0.3, "_end", {"reason": "cancelled"})]),
    }
    lines, ids = [], {}
    for i, (name, (attrs, events)) in enumerate(sessions.items()):
        ids[name] = sid = f"{i + 1:08x}-2222-4222-8222-222222222222"
        lines.append(dumps(header_record(sid, start, attrs=attrs)))
        lines.extend(dumps(event_record(sid, seq, t, ev, data)) for seq, (t, ev, data) in enumerate(events, start=1))
    rec = tmp_path / "models.jsonl"
    rec.write_text("".join(lines), encoding="utf-8")
    ingest([rec], IngestOptions(db=db_path, open_window=0.0))

    def models() -> dict[str, str | None]:
        with connect(db_path, read_only=True) as con:
            got = dict(con.execute("SELECT session_id, model FROM sessions").fetchall())
        return {name: got[sid] for name, sid in ids.items()}

    expected = {"done": "served-model", "crash": "asked-model", "crash2": "asked-model", "fine": "asked-model",
                "no_model": None, "not_text": None}
    assert models() == expected
    report = cli_json(capsys, "stats", "--db", str(db_path), "--by", "model", "--format", "json")
    rates = {r["model"]: (r["sessions"], r["synthetic_done_rate"]) for r in report["breakdown"]}
    assert rates["asked-model"] == (3, pytest.approx(2 / 3))
    assert rates["served-model"] == (1, 0.0)

    # A database written before the fallback (migration m017) gets it when next opened: its
    # rows as that version stored them (no model without done), every migration up to m016.
    with duckdb.connect(str(db_path), read_only=True) as con:
        stored = con.sql(
            "SELECT * REPLACE (CASE WHEN event_count > 0 AND end_reason = 'done' THEN model END AS model) FROM sessions"
        ).to_arrow_table()
    db_path.unlink()
    with duckdb.connect(str(db_path)) as con:
        con.register("rows", stored)
        con.execute("CREATE TABLE _schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
        for m in migrations.MIGRATIONS:
            if m.__name__ < "m017":
                m(con)
                con.execute("INSERT INTO _schema_migrations VALUES (?, now())", [m.__name__])
        con.execute("INSERT INTO sessions SELECT * FROM rows")
        assert con.execute("SELECT count(*) FROM sessions WHERE model IS NULL").fetchone() == (4,)
    connect(db_path).close()
    assert models() == expected


def test_show_timeline(tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "v1.jsonl"
    cases = _v1_file(rec)
    ingest([rec], IngestOptions(db=db_path, open_window=300.0, now=rec.stat().st_mtime + 1))
    capsys.readouterr()
    assert main(["show", cases["crash"]["id"][:8], "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "synthetic_done" in out and "exception" in out
    assert "type=TimeoutError" in out and "upstream model timed out" in out
    assert "STALL 18.0 s" in out
    assert "fetch" in out and "no result" in out  # the orphaned tool call
    detail = cli_json(capsys, "show", cases["done"]["id"], "--db", str(db_path), "--format", "json")
    assert [e["event"] for e in detail["events"]] == [ln[1] for ln in cases["done"]["lines"]]
    assert detail["tool_calls"][0]["latency_ms"] == pytest.approx(300.0)
    assert detail["session"]["attrs"] == {"route": "/chat", "case": "done"}

    # a prefix shared by several sessions is an error with a hint, not a guess
    capsys.readouterr()
    assert main(["show", "0000000", "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert "matches 4 sessions" in err and "hint:" in err
    assert main(["show", "ffff", "--db", str(db_path)]) == 2
    assert "no session id starts with" in capsys.readouterr().err
    # an id found, but not on the side asked for: said so, not "no session id starts with"
    assert main(["show", cases["crash"]["id"][:8], "--side", "client", "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert f"session {cases['crash']['id']} has no client side (recorded: server)" in err
    # --side narrows a prefix first: one of the sessions under '0000000' has a client side
    client = "00000009-2222-4222-8222-222222222222"
    start = datetime(2026, 11, 24, 11, 0, tzinfo=timezone.utc)
    (tmp_path / "client.jsonl").write_text(dumps(header_record(client, start, side="client")) + "\n"
                                           + dumps(event_record(client, 0, 0.1, "token", {"text": "hi"})) + "\n")
    ingest([tmp_path / "client.jsonl"], IngestOptions(db=db_path, open_window=0))
    capsys.readouterr()
    assert main(["show", "0000000", "--side", "client", "--db", str(db_path)]) == 0
    assert f"session   {client} (client)" in capsys.readouterr().out
    assert main(["show", "0000000", "--side", "server", "--db", str(db_path)]) == 2
    assert "matches 4 sessions" in capsys.readouterr().err


def test_sessions_newest_first(tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "v1.jsonl"
    cases = _v1_file(rec)
    ingest([rec], IngestOptions(db=db_path, open_window=300.0, now=rec.stat().st_mtime + 1))
    rows = cli_json(capsys, "sessions", "--db", str(db_path), "--format", "json", "--limit", "3")
    assert [r["session_id"] for r in rows] == [cases[n]["id"] for n in ("open", "single_token", "crash")]
    capsys.readouterr()
    assert main(["sessions", "--db", str(db_path), "--outcome", "open"]) == 0
    out = capsys.readouterr().out
    assert cases["open"]["id"] in out and cases["done"]["id"] not in out


def test_database_before_the_metric_views(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A database made by a version that only had the public tables.
    con = duckdb.connect(str(db_path))
    m001_public_tables(con)
    con.execute("CREATE TABLE _schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
    con.execute("INSERT INTO _schema_migrations VALUES ('m001_public_tables', now())")
    con.close()
    with pytest.raises(DatabaseError) as info:
        TraceStore(db_path).summary()
    assert "agent-stream-ingest" in (info.value.hint or "")
    capsys.readouterr()
    assert main(["stats", "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hint: run agent-stream-ingest" in err and "Traceback" not in err
    # one read-write open (what every ingest does) upgrades it
    connect(db_path).close()
    assert TraceStore(db_path).summary()["sessions"] == 0


def test_missing_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--db", str(tmp_path / "nope.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "no database" in err and "hint:" in err
    assert not (tmp_path / "nope.duckdb").exists()


def test_bad_arguments_are_usage_errors(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    connect(db_path).close()
    for argv in (["stats", "--by", "color"], ["stats", "--since", "yesterday"],
                 ["sessions", "--where", "route"]):
        capsys.readouterr()
        assert main([*argv, "--db", str(db_path)]) == 2, argv
        assert "hint:" in capsys.readouterr().err


def test_store_accepts_an_open_connection(db_path: Path) -> None:
    con = connect(db_path)
    con.execute("INSERT INTO _sessions (k, session_id, side, outcome, attribution, started_at) VALUES "
                "(1, 'x', 'server', 'synthetic_done', 'exact', now())")
    store = TraceStore.from_connection(con)
    assert store.summary()["synthetic_done_rate"] == 1.0
    assert store.sql("SELECT count(*) AS n FROM sessions")["n"][0] == 1
    con.close()


def test_relative_since(db_path: Path) -> None:
    con = connect(db_path)
    now = time.time()
    for i, age_h in enumerate((1, 30, 200)):
        con.execute("INSERT INTO _sessions (k, session_id, side, outcome, attribution, started_at) "
                    "VALUES (?, ?, 'server', 'done', 'exact', to_timestamp(?))", [i + 1, f"s{i}", now - age_h * 3600])
    con.close()
    store = TraceStore(db_path)
    assert store.summary(since="24h")["sessions"] == 1
    assert store.summary(since="2d")["sessions"] == 2
    assert store.summary(since="2w")["sessions"] == 3
    assert store.summary(until="24h")["sessions"] == 2
    # longer ago than year 1 (Python's dates end there): every session, not an OverflowError
    assert store.summary(since="3000000d")["sessions"] == store.summary(since="10000000000h")["sessions"] == 3
    assert store.summary(until="3000000d")["sessions"] == 0
