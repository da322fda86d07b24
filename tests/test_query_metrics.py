"""Each metric computed by hand in Python from small fixture rows, compared with the SQL views,
the TraceStore methods and `agent-stream-trace stats --format json`: all must agree.

The fixture writes rows straight into the public tables (what an ingester would produce for
these recordings, derived here by the README's definitions), so the test pins down the
query side alone: done, synthetic (each end_reason), open and ambiguous sessions, a client-side
recording, an orphaned tool, a failing tool, single-token and token-less sessions, two stalls.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from support.sessions_db import insert_events, session_key

from agent_stream_trace import TraceStore
from agent_stream_trace.cli import main
from agent_stream_trace.db import connect

Line = tuple[float, str, dict[str, Any]]
DAY1 = datetime(2026, 11, 23, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 24, tzinfo=timezone.utc)


@dataclass
class Fixture:
    sid: str
    started_at: datetime
    outcome: str
    end_reason: str | None
    attribution: str
    model: str | None
    attrs: dict[str, Any] | None
    lines: list[Line]
    side: str = "server"
    derived: dict[str, Any] = field(default_factory=dict)


def _tok(t: float, text: str) -> Line:
    return (t, "token", {"text": text})


def _use(t: float, name: str, tid: str) -> Line:
    return (t, "tool_use", {"tool_name": name, "tool_use_id": tid, "input_summary": "q", "status": "running"})


def _result(t: float, name: str, tid: str, status: str = "done", ms: int | None = None) -> Line:
    return (t, "tool_result", {"tool_name": name, "tool_use_id": tid, "output_summary": "ok",
                               "duration_ms": ms, "status": status})


def _done(t: float, model: str | None = None, **extra: Any) -> Line:
    return (t, "done", {"message_id": "m", "num_turns": 1, "tool_count": 0, "duration_ms": 1,
                        "model": model, "total_cost_usd": 0.01, **extra})


def _end(t: float, reason: str, **extra: Any) -> Line:
    return (t, "_end", {"reason": reason, **extra})


def _at(day: datetime, hour: int) -> datetime:
    return day.replace(hour=hour)


FIXTURES = [
    Fixture("aaaaaaaa-0000-4000-8000-000000000001", _at(DAY1, 10), "done", "done", "exact", "m1",
            {"route": "/chat", "tier": "pro"},
            [_tok(0.5, "Hello"), _tok(0.6, " wor"), _tok(0.9, "ld!"), _use(1.0, "search", "t1"),
             _result(1.25, "search", "t1", ms=240), _done(1.5, "m1", usage={"output_tokens": 6}),
             _end(1.51, "done")]),
    Fixture("bbbbbbbb-0000-4000-8000-000000000002", _at(DAY1, 11), "synthetic_done", "exception", "exact",
            "m1", {"route": "/chat"},
            [_tok(0.3, "ab"), _use(0.4, "fetch", "t2"), _tok(0.5, "cd"), _tok(20.5, "ef"),
             _end(20.6, "exception", type="RuntimeError", message="boom")]),
    Fixture("cccccccc-0000-4000-8000-000000000003", _at(DAY1, 12), "synthetic_done", "cancelled", "exact",
            "m2", {"route": "/x"},
            [_tok(1.0, "x"), _use(1.1, "search", "t3"), _result(3.1, "search", "t3", "error", 1990),
             (3.15, "error", {"error_type": "tool", "message": "search failed", "details": {}}),
             _end(3.2, "cancelled")]),
    Fixture("dddddddd-0000-4000-8000-000000000004", _at(DAY1, 13), "open", None, "exact", "m2",
            {"route": "/chat"}, [_tok(0.2, "aa"), _tok(0.25, "bbb")]),
    Fixture("eeeeeeee-0000-4000-8000-000000000005", _at(DAY1, 14), "done", "done", "ambiguous", "m1", {},
            [_tok(0.1, "zz"), _tok(0.2, "zzzz"), _use(0.3, "search", "t5"), _result(0.4, "search", "t5"),
             (30.0, "token", {"text": "late"}), _done(30.1, "m1")]),
    Fixture("ffffffff-0000-4000-8000-000000000006", _at(DAY2, 9), "synthetic_done", "no_end_record",
            "positional", None, None,
            [(0.05, "turn", {"turn_number": 2, "total_tools": 0}), _tok(0.1, "a"), _tok(0.2, "bb"),
             _use(0.4, "search", "t6"), _result(16.4, "search", "t6", ms=15990),
             (16.45, "turn", {"turn_number": 3, "total_tools": 1}), _tok(16.5, "ccc")]),
    Fixture("99999999-0000-4000-8000-000000000007", _at(DAY2, 10), "done", "done", "exact", "m2",
            {"route": "/chat", "user": 42}, [_done(0.7, "m2"), _end(0.71, "done")]),
    Fixture("88888888-0000-4000-8000-000000000008", _at(DAY2, 11), "synthetic_done", "returned_without_done",
            "exact", "m1", {"route": "/chat"},
            [_tok(0.05, "one"), _tok(0.06, "two"), _tok(0.07, "three"), _tok(0.09, "four"),
             _end(0.3, "returned_without_done")], side="client"),
]


def derive(fx: Fixture) -> dict[str, Any]:
    """The sessions-row metrics of one recording, by the README's definitions."""
    wire = [ln for ln in fx.lines if not ln[1].startswith("_")]
    tokens = [ln for ln in wire if ln[1] == "token"]
    chars = sum(len(ln[2]["text"]) for ln in tokens)
    span = tokens[-1][0] - tokens[0][0] if len(tokens) >= 2 else 0.0
    done = next((ln[2] for ln in wire if ln[1] == "done"), None)
    out_tokens = (done or {}).get("usage", {}).get("output_tokens")
    gaps = [(b[0] - a[0], b[0]) for a, b in zip(fx.lines, fx.lines[1:])]
    max_gap = max(gaps, default=None)
    turns = [ln[2]["turn_number"] for ln in wire if ln[1] == "turn"]
    calls = tool_call_rows(fx)
    return {
        "event_count": len(wire),
        "token_events": len(tokens),
        "token_chars": chars,
        "ttft_s": tokens[0][0] if tokens else None,
        "token_velocity_cps": chars / span if span > 0 else None,
        "output_tokens": out_tokens,
        "token_velocity_tps": out_tokens / span if out_tokens and span > 0 else None,
        "max_gap_s": max_gap[0] if max_gap else None,
        "max_gap_at_s": max_gap[1] if max_gap else None,
        "duration_s": fx.lines[-1][0] if fx.lines else 0.0,
        "turns": max(turns) if turns else (1 if wire else 0),
        "tool_calls": len(calls),
        "tool_errors": sum(c["status"] == "error" for c in calls),
        "orphaned_tools": sum(c["status"] == "orphaned" for c in calls),
        "errors": sum(ln[1] == "error" for ln in wire),
    }


def tool_call_rows(fx: Fixture) -> list[dict[str, Any]]:
    results = {ln[2]["tool_use_id"]: ln for ln in fx.lines if ln[1] == "tool_result"}
    rows = []
    for t, name, data in fx.lines:
        if name != "tool_use":
            continue
        res = results.get(data["tool_use_id"])
        rows.append({
            "tool_use_id": data["tool_use_id"], "tool_name": data["tool_name"], "started_t": t,
            "ended_t": res[0] if res else None,
            "latency_ms": (res[0] - t) * 1000 if res else None,
            "reported_ms": res[2]["duration_ms"] if res else None,
            "status": res[2]["status"] if res else "orphaned",
        })
    return rows


def load(con: Any, fixtures: list[Fixture]) -> None:
    for fx in fixtures:
        d = fx.derived = derive(fx)
        k = session_key(con, fx.sid, fx.side)  # `sessions` is a view over `_sessions` (m019)
        con.execute(
            """INSERT INTO _sessions (k, session_id, side, source_file, started_at, ended_at, duration_s,
                   outcome, end_reason, attribution, event_count, token_events, token_chars, ttft_s,
                   token_velocity_cps, max_gap_s, turns, tool_calls, tool_errors, orphaned_tools, errors,
                   model, attrs, output_tokens, token_velocity_tps, max_gap_at_s, lost_lines)
               VALUES (?, ?, ?, 'fixture.jsonl', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)""",
            [k, fx.sid, fx.side, fx.started_at, fx.started_at, d["duration_s"], fx.outcome, fx.end_reason,
             fx.attribution, d["event_count"], d["token_events"], d["token_chars"], d["ttft_s"],
             d["token_velocity_cps"], d["max_gap_s"], d["turns"], d["tool_calls"], d["tool_errors"],
             d["orphaned_tools"], d["errors"], fx.model, json.dumps(fx.attrs) if fx.attrs is not None else None,
             d["output_tokens"], d["token_velocity_tps"], d["max_gap_at_s"]],
        )
        insert_events(con, "SELECT ? AS session_id, ? AS side, unnest(?, recursive := true), 'fixture.jsonl' AS source_file",
                      [fx.sid, fx.side, [{"seq": seq, "t": t, "event": name, "data": json.dumps(data), "line_no": seq + 1}
                                         for seq, (t, name, data) in enumerate(fx.lines, start=1)]])
        for c in tool_call_rows(fx):
            con.execute("INSERT INTO _tool_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [k, fx.sid, fx.side, c["tool_use_id"], c["tool_name"], c["started_t"], c["ended_t"],
                         c["latency_ms"], c["reported_ms"], c["status"]])


# -- the hand computations ------------------------------------------------------------------

def quantile_cont(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as DuckDB's quantile_cont."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def hand_health(fixtures: list[Fixture], threshold: float = 15.0) -> dict[str, Any]:
    counted = [f for f in fixtures if f.attribution != "ambiguous"]
    done = sum(f.outcome == "done" for f in counted)
    synth = sum(f.outcome == "synthetic_done" for f in counted)

    def vals(key: str) -> list[Any]:
        return [f.derived[key] for f in counted if f.derived[key] is not None]

    return {
        "sessions": len(fixtures),
        "done": done,
        "synthetic_done": synth,
        "open": sum(f.outcome == "open" for f in counted),
        "ambiguous": len(fixtures) - len(counted),
        "synthetic_done_rate": synth / (done + synth) if done + synth else None,
        "ttft_p50_s": quantile_cont(vals("ttft_s"), 0.5),
        "ttft_p95_s": quantile_cont(vals("ttft_s"), 0.95),
        "velocity_p50_cps": quantile_cont(vals("token_velocity_cps"), 0.5),
        "velocity_p50_tps": quantile_cont(vals("token_velocity_tps"), 0.5),
        "turns_mean": sum(vals("turns")) / len(counted) if counted else None,
        "stalls": sum(1 for f in counted if (f.derived["max_gap_s"] or 0) >= threshold),
        "tool_calls": sum(vals("tool_calls")),
        "tool_errors": sum(vals("tool_errors")),
        "orphaned_tools": sum(vals("orphaned_tools")),
    }


def hand_causes(fixtures: list[Fixture]) -> dict[str, tuple[int, float]]:
    synth = [f for f in fixtures if f.attribution != "ambiguous" and f.outcome == "synthetic_done"]
    reasons = {f.end_reason for f in synth}
    return {r: (sum(f.end_reason == r for f in synth), sum(f.end_reason == r for f in synth) / len(synth))
            for r in reasons}


def hand_tools(fixtures: list[Fixture]) -> dict[str, dict[str, Any]]:
    calls: dict[str, list[dict[str, Any]]] = {}
    for f in fixtures:
        if f.attribution == "ambiguous":
            continue
        for c in tool_call_rows(f):
            calls.setdefault(c["tool_name"], []).append(c)
    out = {}
    for name, cs in calls.items():
        lat = [c["latency_ms"] for c in cs if c["latency_ms"] is not None]
        errors = sum(c["status"] == "error" for c in cs)
        out[name] = {
            "calls": len(cs), "errors": errors, "orphaned": sum(c["status"] == "orphaned" for c in cs),
            "error_rate": errors / len(cs),
            "p50_ms": quantile_cont(lat, 0.5), "p95_ms": quantile_cont(lat, 0.95),
            "p99_ms": quantile_cont(lat, 0.99), "mean_ms": sum(lat) / len(lat) if lat else None,
        }
    return out


def hand_intervals(fixtures: list[Fixture]) -> dict[str | None, list[float]]:
    by_model: dict[str | None, list[float]] = {}
    for f in fixtures:
        if f.attribution == "ambiguous":
            continue
        ts = [ln[0] for ln in f.lines if ln[1] == "token"]
        if len(ts) >= 2:
            by_model.setdefault(f.model, []).extend((b - a) * 1000 for a, b in zip(ts, ts[1:]))
    return by_model


def assert_close(actual: dict[str, Any], expected: dict[str, Any], context: str = "") -> None:
    for key, want in expected.items():
        got = actual[key]
        if want is None or got is None:
            assert got == want, f"{context}{key}: {got!r} != {want!r}"
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), f"{context}{key}: {got!r} != {want!r}"


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Every test only reads: one database for the module keeps the suite fast.
    db_path = tmp_path_factory.mktemp("query") / "trace.duckdb"
    con = connect(db_path)
    load(con, FIXTURES)
    con.close()
    return db_path


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _select(fixtures: list[Fixture], **conds: Any) -> list[Fixture]:
    return [f for f in fixtures if all(getattr(f, k) == v for k, v in conds.items())]


# -- the tests ------------------------------------------------------------------------------

def test_fixture_covers_every_case() -> None:
    for f in FIXTURES:
        f.derived = derive(f)
    kinds = {(f.outcome, f.attribution) for f in FIXTURES}
    assert ("open", "exact") in kinds and ("done", "ambiguous") in kinds
    assert {f.end_reason for f in FIXTURES if f.outcome == "synthetic_done"} == {
        "exception", "cancelled", "no_end_record", "returned_without_done"}
    assert any(f.derived["token_events"] == 1 for f in FIXTURES)
    assert any(f.derived["token_events"] == 0 for f in FIXTURES)
    assert any(f.derived["orphaned_tools"] for f in FIXTURES)


def test_empty_database_views_and_store(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    connect(db_path).close()
    store = TraceStore(db_path)
    for view in ("health_by_day", "synthetic_done_causes", "tool_latency", "stalls", "token_velocity"):
        assert store.sql(f"SELECT * FROM {view}").height == 0
    summary = store.summary()
    assert summary["sessions"] == 0 and summary["synthetic_done_rate"] is None
    report = cli_json(capsys, "stats", "--db", str(db_path), "--format", "json")
    assert report["summary"]["sessions"] == 0 and report["tools"] == []
    assert main(["stats", "--db", str(db_path)]) == 0
    assert "no sessions" in capsys.readouterr().out


def test_overall_health_agrees(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = hand_health(FIXTURES)
    assert expected["synthetic_done_rate"] == 4 / 6  # the fixture's design: 2 done, 4 synthetic, 1 open
    store = TraceStore(loaded_db)
    assert_close(store.summary(), expected, "store: ")
    view_row = store.sql("SELECT * FROM health()").row(0, named=True)
    assert_close(view_row, expected, "macro: ")
    report = cli_json(capsys, "stats", "--db", str(loaded_db), "--format", "json")
    assert_close(report["summary"], expected, "cli: ")
    assert report["stalls"]["count"] == expected["stalls"] == 2


def test_health_by_day_view_store_and_cli(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = TraceStore(loaded_db)
    view = {r["day"].isoformat(): r for r in store.sql("SELECT * FROM health_by_day").to_dicts()}
    api = {r["period"].date().isoformat(): r for r in store.health("day").to_dicts()}
    cli = {r["day"][:10]: r for r in cli_json(capsys, "stats", "--db", str(loaded_db), "--by", "day",
                                                 "--format", "json")["breakdown"]}
    assert set(view) == set(api) == set(cli) == {"2026-11-23", "2026-11-24"}
    for day in view:
        expected = hand_health([f for f in FIXTURES if f.started_at.date().isoformat() == day])
        spec = {k: v for k, v in expected.items() if k in view[day]}
        assert_close(view[day], spec, f"view {day}: ")
        assert_close(api[day], expected, f"store {day}: ")
        assert_close(cli[day], expected, f"cli {day}: ")


@pytest.mark.parametrize("group_by, key", [("model", "model"), ("attrs.route", "attrs")])
def test_health_grouped(loaded_db: Path, capsys: pytest.CaptureFixture[str], group_by: str, key: str) -> None:
    def group_of(f: Fixture) -> str | None:
        return f.model if key == "model" else (f.attrs or {}).get("route")

    store = TraceStore(loaded_db)
    api = {r["grp"]: r for r in store.health(None, group_by).to_dicts()}
    cli = {r[group_by]: r for r in cli_json(capsys, "stats", "--db", str(loaded_db), "--by", group_by,
                                             "--format", "json")["breakdown"]}
    groups = {group_of(f) for f in FIXTURES}
    assert set(api) == set(cli) == groups
    for g in groups:
        expected = hand_health([f for f in FIXTURES if group_of(f) == g])
        assert_close(api[g], expected, f"store {g}: ")
        assert_close(cli[g], expected, f"cli {g}: ")


@pytest.mark.parametrize("filters, argv, pick", [
    ({"model": "m1"}, ["--model", "m1"], lambda f: f.model == "m1"),
    ({"attrs": {"route": "/chat"}}, ["--where", "attrs.route=/chat"], lambda f: (f.attrs or {}).get("route") == "/chat"),
    ({"attrs": {"route": "/chat", "user": 42}}, ["--where", "attrs.route=/chat", "--where", "attrs.user=42"],
     lambda f: (f.attrs or {}).get("user") == 42),
    ({"since": "2026-11-24"}, ["--since", "2026-11-24"], lambda f: f.started_at >= DAY2),
    ({"until": "2026-11-24T00:00:00Z"}, ["--until", "2026-11-24T00:00:00+00:00"], lambda f: f.started_at < DAY2),
    ({"outcome": "synthetic_done"}, ["--outcome", "synthetic_done"], lambda f: f.outcome == "synthetic_done"),
    ({"side": "client"}, ["--side", "client"], lambda f: f.side == "client"),
])
def test_filters(loaded_db: Path, capsys: pytest.CaptureFixture[str], filters: dict[str, Any],
                 argv: list[str], pick: Any) -> None:
    chosen = [f for f in FIXTURES if pick(f)]
    assert chosen and len(chosen) < len(FIXTURES)
    expected = hand_health(chosen)
    store = TraceStore(loaded_db)
    assert_close(store.summary(**filters), expected, "store: ")
    report = cli_json(capsys, "stats", "--db", str(loaded_db), "--format", "json", *argv)
    assert_close(report["summary"], expected, "cli: ")
    listed = cli_json(capsys, "sessions", "--db", str(loaded_db), "--all", "--format", "json", *argv)
    assert [r["session_id"] for r in listed] == [
        f.sid for f in sorted(chosen, key=lambda f: f.started_at, reverse=True)]
    assert store.sessions(limit=None, **filters)["session_id"].to_list() == [r["session_id"] for r in listed]


def test_synthetic_done_causes(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = hand_causes(FIXTURES)
    store = TraceStore(loaded_db)
    view = {r["end_reason"]: (r["sessions"], r["share"]) for r in store.sql("SELECT * FROM synthetic_done_causes").to_dicts()}
    api = {r["end_reason"]: (r["sessions"], r["share"]) for r in store.synthetic_done_causes().to_dicts()}
    cli = {r["end_reason"]: (r["sessions"], r["share"]) for r in
           cli_json(capsys, "stats", "--db", str(loaded_db), "--format", "json")["synthetic_done_causes"]}
    for name, got in (("view", view), ("store", api), ("cli", cli)):
        assert set(got) == set(expected), name
        for reason, (count, share) in expected.items():
            assert got[reason][0] == count and got[reason][1] == pytest.approx(share), (name, reason)


def test_tool_latency(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = hand_tools(FIXTURES)
    assert expected["fetch"]["orphaned"] == 1 and expected["fetch"]["p50_ms"] is None
    assert expected["search"]["calls"] == 3  # the ambiguous session's call is not counted
    store = TraceStore(loaded_db)
    sources = {
        "view": store.sql("SELECT * FROM tool_latency").to_dicts(),
        "store": store.tool_latency().to_dicts(),
        "cli": cli_json(capsys, "stats", "--db", str(loaded_db), "--format", "json")["tools"],
        "cli --by tool": cli_json(capsys, "stats", "--db", str(loaded_db), "--by", "tool",
                                  "--format", "json")["breakdown"],
    }
    for name, rows in sources.items():
        got = {r["tool_name"]: r for r in rows}
        assert set(got) == set(expected), name
        for tool, want in expected.items():
            assert_close(got[tool], want, f"{name} {tool}: ")


def test_stalls_with_where_they_happened(loaded_db: Path) -> None:
    store = TraceStore(loaded_db)
    for threshold in (15.0, 17.0, 25.0):
        expected = {f.sid: f.derived for f in FIXTURES if f.attribution != "ambiguous"
                    and (f.derived["max_gap_s"] or 0) >= threshold}
        got = {r["session_id"]: r for r in store.stalls(threshold).to_dicts()}
        assert set(got) == set(expected)
    view = {r["session_id"]: r for r in store.sql("SELECT * FROM stalls").to_dicts()}
    b, f = FIXTURES[1], FIXTURES[5]
    assert set(view) == {b.sid, f.sid}
    assert view[b.sid]["max_gap_s"] == pytest.approx(20.0)
    assert view[b.sid]["gap_start_s"] == pytest.approx(0.5) and view[b.sid]["gap_end_s"] == pytest.approx(20.5)
    # the silence follows a token: the earlier tool_use must not leak into tool_before
    assert (view[b.sid]["event_before"], view[b.sid]["tool_before"], view[b.sid]["event_after"]) == (
        "token", None, "token")
    assert (view[f.sid]["event_before"], view[f.sid]["tool_before"], view[f.sid]["event_after"]) == (
        "tool_use", "search", "tool_result")
    assert store.summary(threshold_s=17.0)["stalls"] == 1
    longest = store.stalls(limit=1).to_dicts()
    assert longest == [view[b.sid]]  # the 20 s gap beats the 16 s one, same columns and values


def test_stall_threshold_from_environment(loaded_db: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENT_STREAM_STALL_THRESHOLD", "17")
    assert TraceStore(loaded_db).summary()["stalls"] == 1
    report = cli_json(capsys, "stats", "--db", str(loaded_db), "--format", "json")
    assert report["stall_threshold_s"] == 17.0 and report["stalls"]["count"] == 1
    report = cli_json(capsys, "stats", "--db", str(loaded_db), "--format", "json", "--stall-threshold", "25")
    assert report["stalls"]["count"] == 0


def test_token_velocity_and_flush_interval(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    intervals = hand_intervals(FIXTURES)
    store = TraceStore(loaded_db)
    sources = {
        "view": {r["model"]: r for r in store.sql("SELECT * FROM token_velocity").to_dicts()},
        "store": {r["grp"]: r for r in store.token_velocity().to_dicts()},
        "cli": {r["model"]: r for r in cli_json(capsys, "stats", "--db", str(loaded_db),
                                                 "--format", "json")["velocity"]},
    }
    counted = [f for f in FIXTURES if f.attribution != "ambiguous" and f.derived["token_events"] >= 1]
    models = {f.model for f in counted}
    for name, got in sources.items():
        assert set(got) == models, name
        for model in models:
            mine = [f for f in counted if f.model == model]
            ivs = intervals.get(model, [])
            p50 = quantile_cont(ivs, 0.5)
            assert_close(got[model], {
                "sessions": len(mine),
                "cps_p50": quantile_cont([f.derived["token_velocity_cps"] for f in mine], 0.5),
                "tps_p50": quantile_cont([f.derived["token_velocity_tps"] for f in mine], 0.5),
                "intervals": len(ivs),
                "interval_p50_ms": p50,
                "interval_p90_ms": quantile_cont(ivs, 0.9),
                "suggested_flush_ms": None if p50 is None else min(max(2 * p50, 16), 100),
            }, f"{name} {model}: ")
    raw = store.token_intervals()
    assert sorted(raw["interval_ms"].to_list()) == pytest.approx(sorted(sum(intervals.values(), [])))
    # The flush rule clamp(2 x median, 16, 100): the client session streams every 10-20 ms
    # (median 10 ms -> 20 ms, inside the clamp); m1 on the server has intervals of 100, 300,
    # 200 and 20000 ms (median 250 ms -> clamped to 100).
    fast = store.token_velocity(side="client").row(0, named=True)
    assert fast["interval_p50_ms"] == pytest.approx(10.0)
    assert fast["suggested_flush_ms"] == pytest.approx(20.0)
    slow = store.token_velocity(model="m1", side="server").row(0, named=True)
    assert slow["interval_p50_ms"] == pytest.approx(250.0)
    assert slow["suggested_flush_ms"] == pytest.approx(100.0)


def test_interval_sample_keeps_whole_sessions(loaded_db: Path) -> None:
    store = TraceStore(loaded_db)
    sample = store.token_intervals(max_sessions=1)
    by_id = {f.sid: f for f in FIXTURES}
    per_model = sample.group_by("grp").agg(sessions=pl.col("session_id").n_unique())
    assert per_model["sessions"].to_list() == [1] * per_model.height
    for sid in set(sample["session_id"].to_list()):
        ts = [ln[0] for ln in by_id[sid].lines if ln[1] == "token"]
        want = [(b - a) * 1000 for a, b in zip(ts, ts[1:])]
        got = sample.filter(sample["session_id"] == sid)["interval_ms"].to_list()
        assert sorted(got) == pytest.approx(sorted(want))
    velocity = store.token_velocity(max_sessions=1)
    full = store.token_velocity()
    assert velocity["interval_sessions"].to_list() == [min(1, n) for n in full["interval_sessions"].to_list()]
    assert velocity["cps_p50"].to_list() == full["cps_p50"].to_list()  # velocity uses every session


def test_ttft_and_turns(loaded_db: Path) -> None:
    store = TraceStore(loaded_db)
    counted = [f for f in FIXTURES if f.attribution != "ambiguous"]
    ttft = {r["grp"]: r for r in store.ttft().to_dicts()}
    for model in {f.model for f in counted if f.derived["ttft_s"] is not None}:
        vals = [f.derived["ttft_s"] for f in counted if f.model == model and f.derived["ttft_s"] is not None]
        assert_close(ttft[model], {"sessions": len(vals), "p50_s": quantile_cont(vals, 0.5),
                                   "p95_s": quantile_cont(vals, 0.95), "max_s": max(vals)})
    turns = {r["turns"]: r for r in store.turns().to_dicts()}
    assert set(turns) == {f.derived["turns"] for f in counted}
    for n, row in turns.items():
        mine = [f for f in counted if f.derived["turns"] == n]
        finished = [f for f in mine if f.outcome != "open"]
        assert row["sessions"] == len(mine)
        assert row["share"] == pytest.approx(len(mine) / len(counted))
        want = (sum(f.outcome == "synthetic_done" for f in finished) / len(finished)) if finished else None
        assert row["synthetic_done_rate"] == (pytest.approx(want) if want is not None else None)


def test_text_report_fits_one_screen(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["stats", "--db", str(loaded_db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 50
    assert "66.7% of 6 finished" in out  # 4 synthetic of 2 done + 4 synthetic
    assert "ambiguous 1" in out and "open 1" in out
    assert "2 sessions with a silence >= 15 s" in out
    assert "longest 20.00 s in bbbbbbbb after token" in out


def test_csv_breakdown(loaded_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["stats", "--db", str(loaded_db), "--by", "day", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("day,sessions,")
    assert len(lines) == 3  # header + two days
