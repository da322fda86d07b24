"""Upstream v0 recordings: positional attribution, interleaving marked ambiguous, tool calls paired."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_stream_trace.cli import main
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
from ingest_support import ingest_in_runs, new_sid, rows, v1_session, write


def hand_sessions(path: Path) -> dict[str, list[dict]]:
    """Upstream's own loader rule: each event belongs to the most recent header above it."""
    sessions: dict[str, list[dict]] = {}
    current = None
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "session" in rec:
            current = rec["session"]
            sessions[current] = []
        else:
            sessions[current].append(rec)
    return sessions


def test_sequential_sample_gives_25_sessions_with_outcomes_from_done_events(upstream_sequential, db_path):
    expected = hand_sessions(upstream_sequential)
    report = ingest([upstream_sequential], IngestOptions(db=db_path, open_window=0))
    assert report.headers == 25 and report.rejected == 0
    got = {sid: (outcome, reason, attribution, n) for sid, outcome, reason, attribution, n in rows(
        db_path, "SELECT session_id, outcome, end_reason, attribution, event_count FROM sessions")}
    assert len(got) == 25
    for sid, events in expected.items():
        has_done = any(e["event"] == "done" for e in events)
        outcome = "done" if has_done else "synthetic_done"
        reason = "done" if has_done else "no_end_record"
        assert got[sid] == (outcome, reason, "positional", len(events)), sid
    # README: 3 crashes, 3 orphans (each with a crash) and 1 client hang-up lack a done
    assert sum(1 for v in got.values() if v[0] == "synthetic_done") == 7


def test_sequential_last_session_stays_open_while_the_file_is_fresh(upstream_sequential, db_path, tmp_path):
    copy = tmp_path / "fresh.jsonl"
    copy.write_bytes(upstream_sequential.read_bytes())  # mtime: now
    ingest([copy], IngestOptions(db=db_path))  # default open window: 300 s
    last = list(hand_sessions(copy))[-1]
    assert rows(db_path, "SELECT outcome, end_reason FROM sessions WHERE session_id = ?", [last]) == [("open", None)]
    # Earlier sessions without done are closed by the header that follows them.
    assert rows(db_path, "SELECT count(*) FROM sessions WHERE outcome = 'open'") == [(1,)]


def test_concurrent_sample_marks_every_interleaved_session_ambiguous(upstream_concurrent, db_path):
    report = ingest([upstream_concurrent], IngestOptions(db=db_path, open_window=0))
    assert report.headers == 24 and report.rejected == 0
    assert rows(db_path, "SELECT attribution, count(*) FROM sessions GROUP BY ALL") == [("ambiguous", 24)]


def test_tool_calls_pair_use_and_result_with_latency(upstream_sequential, db_path):
    ingest([upstream_sequential], IngestOptions(db=db_path, open_window=0))
    uses = {}
    expected = {}
    for sid, events in hand_sessions(upstream_sequential).items():
        for e in events:
            d = e["data"]
            if e["event"] == "tool_use":
                uses[(sid, d["tool_use_id"])] = e["t"]
                expected[(sid, d["tool_use_id"])] = ("orphaned", None)
            elif e["event"] == "tool_result":
                latency = round((e["t"] - uses[(sid, d["tool_use_id"])]) * 1000, 6)
                expected[(sid, d["tool_use_id"])] = ("error" if d["status"] == "error" else "done", latency)
    got = {(sid, tid): (status, None if lat is None else round(lat, 6)) for sid, tid, status, lat in rows(
        db_path, "SELECT session_id, tool_use_id, status, latency_ms FROM tool_calls")}
    assert got == expected


@pytest.mark.parametrize("cut", [None, 4])
def test_a_v0_session_that_took_anothers_done_is_ambiguous_too(tmp_path, db_path, cut):
    """Interleaved v0 sessions where one took another's done: A (headed second) gets C's token
    and done and looks finished, before D's header, ahead of its own lines. D shows the
    interleaving (two dones, time backwards), so every session near it in time is ambiguous,
    a finished-looking one too, whether the file is read whole or in two runs."""
    c, a, d = (f"00000000-0000-0000-0000-00000000600{x}" for x in "cad")
    lines = [
        json.dumps({"session": c, "started_at": "2026-12-01T10:00:00.0+00:00", "t": 0}),
        json.dumps({"session": a, "started_at": "2026-12-01T10:00:00.1+00:00", "t": 0}),
        json.dumps({"t": 0.2, "event": "token", "data": {"text": "from C"}}),
        json.dumps({"t": 0.3, "event": "done", "data": {"message_id": "msg_C"}}),
        json.dumps({"session": d, "started_at": "2026-12-01T10:00:00.5+00:00", "t": 0}),
        json.dumps({"t": 0.5, "event": "token", "data": {"text": "from A"}}),
        json.dumps({"t": 0.6, "event": "done", "data": {"message_id": "msg_A"}}),
        json.dumps({"t": 0.1, "event": "token", "data": {"text": "from D"}}),
        json.dumps({"t": 0.2, "event": "done", "data": {"message_id": "msg_D"}}),
    ]
    ingest_in_runs(tmp_path / "v0.jsonl", lines, db_path, cut)
    assert rows(db_path, "SELECT session_id, attribution FROM sessions ORDER BY started_at") == [
        (c, "ambiguous"), (a, "ambiguous"), (d, "ambiguous")]


@pytest.mark.parametrize("cut", [None, 7])
def test_ambiguity_spreads_only_from_sessions_whose_own_lines_interleave(tmp_path, db_path, cut):
    """A shows interleaving (two dones); S1, running beside it, is marked for that. S2 ran
    beside S1 but not beside A: it stays positional, whether S1 was marked in this run or
    an earlier one (from a mark stored by an earlier run, ambiguity went on spreading)."""
    a, s1, x, s2 = (f"00000000-0000-4000-8000-00000000000{n}" for n in "ab12")
    lines = [
        json.dumps({"session": a, "started_at": "2026-11-24T10:00:00Z", "t": 0}),
        json.dumps({"t": 0.5, "event": "done", "data": {}}),
        json.dumps({"t": 0.6, "event": "done", "data": {}}),
        json.dumps({"session": s1, "started_at": "2026-11-24T10:00:00.2Z", "t": 0}),
        json.dumps({"t": 400, "event": "token", "data": {"text": "late"}}),
        json.dumps({"session": x, "started_at": "2026-11-24T10:20:00Z", "t": 0}),
        json.dumps({"t": 1, "event": "done", "data": {}}),
        json.dumps({"session": s2, "started_at": "2026-11-24T10:06:00Z", "t": 0}),
        json.dumps({"t": 1, "event": "token", "data": {"text": "x"}}),
    ]
    ingest_in_runs(tmp_path / "v0.jsonl", lines, db_path, cut)
    assert dict(rows(db_path, "SELECT session_id, attribution FROM sessions")) == {
        a: "ambiguous", s1: "ambiguous", x: "positional", s2: "positional"}


def test_a_tool_result_before_its_use_answers_nothing(tmp_path, db_path, capsys):
    """Pairing follows seq: a result that comes before its use is a result without a use, and
    the use with no result after it is orphaned (paired, the latency came out negative)."""
    sid = new_sid()
    lines = v1_session(sid, [
        (0.1, "tool_result", {"tool_use_id": "a", "status": "ok"}),
        (0.3, "tool_use", {"tool_use_id": "a", "tool_name": "search"}),
        (0.4, "tool_use", {"tool_use_id": "b", "tool_name": "fetch"}),
        (0.6, "tool_result", {"tool_use_id": "b", "status": "ok"}),
        (0.7, "tool_result", {"tool_use_id": "b", "status": "error"}),  # a second answer: the first counts
    ])
    write(tmp_path / "tools.jsonl", lines)
    ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    got = rows(db_path, "SELECT tool_use_id, tool_name, started_t, ended_t, round(latency_ms, 6), status FROM tool_calls"
                        " ORDER BY tool_use_id, started_t NULLS FIRST")
    assert got == [("a", None, None, 0.1, None, "done"), ("a", "search", 0.3, None, None, "orphaned"),
                   ("b", "fetch", 0.4, 0.6, 200.0, "done")]
    assert rows(db_path, "SELECT orphaned_tools FROM sessions") == [(1,)]
    # The timeline tells a use without its result from a result without its use, and shows no
    # tool name where a result gives none.
    assert main(["show", sid[:8], "--db", str(db_path)]) == 0
    timeline, calls = capsys.readouterr().out.split("\ntool calls\n")
    assert "None" not in timeline
    assert [line.split()[:3] for line in calls.splitlines()[:3]] == [
        ["search", "orphaned", "no"], ["fetch", "done", "200"], ["?", "done", "no"]]
    assert "no result" in calls.splitlines()[0] and "no use" in calls.splitlines()[2]


def test_ambiguity_found_across_runs_is_the_same_as_in_one(upstream_concurrent, tmp_path):
    """A v0 recording read in pieces (a cron run every few lines, appended files marked later)
    ends with the same attribution as one read whole: a session marked ambiguous in a later run
    spreads to the unfinished sessions of earlier runs in the same file."""
    lines = upstream_concurrent.read_text().splitlines(keepends=True)
    whole = tmp_path / "whole.duckdb"
    ingest([upstream_concurrent], IngestOptions(db=whole, open_window=0))
    growing, pieces = tmp_path / "concurrent.jsonl", tmp_path / "pieces.duckdb"
    step = len(lines) // 5 + 1
    for start in range(0, len(lines), step):
        with open(growing, "a") as f:
            f.writelines(lines[start:start + step])
        ingest([growing], IngestOptions(db=pieces, open_window=0))
    query = "SELECT session_id, outcome, attribution FROM sessions ORDER BY session_id"
    assert rows(pieces, query) == rows(whole, query)
    assert {a for _, _, a in rows(pieces, query)} == {"ambiguous"}
