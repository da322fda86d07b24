"""`agent-stream-trace simulate`: seeded recordings that are valid v1 and statistically what they claim.

Statistical checks derive their tolerance from the distribution they test (binomial standard
deviation, standard error of a median), at 4-5 sigma: the corpora are seeded, so a test either
always passes or always fails, and a wrong generator misses by far more than that.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent_stream_trace.cli import main
from agent_stream_trace.recording import END_EVENT, END_REASONS, WIRE_EVENTS, dumps
from agent_stream_trace.simulate import (
    FAILURE_KINDS,
    SimulationOptions,
    iter_sessions,
    resolve_period,
    simulate,
)
from agent_stream_trace.simulate.catalog import MODELS, TOOL_TIMEOUT_MS, TOOLS
from agent_stream_trace.simulate.generator import FAILURE_WEIGHTS
from agent_stream_trace.simulate.session import (
    FLUSH_LAG_MS,
    IDLE_CUT_MS,
    STALL_MAX_MS,
    STALL_MIN_MS,
)

START = datetime(2025, 1, 6, tzinfo=timezone.utc)
STALL_S = STALL_MIN_MS / 1000
HEADER_KEYS = {"session", "started_at", "t", "v", "side", "attrs"}
EVENT_KEYS = {"t", "event", "data", "sid", "seq"}
ATTR_KEYS = {"route", "user_id", "agent", "app_version", "model"}


def _is_int(v: Any, lo: int | None = None, hi: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)


# The required fields and types of each payload, as upstream-events.schema.json states them
# (plus done.usage, which this generator adds so tokens/s can be computed).
PAYLOAD_CHECKS: dict[str, Any] = {
    "token": lambda d: isinstance(d["text"], str) and d["text"] != "",
    "thinking": lambda d: isinstance(d["text"], str),
    "tool_use": lambda d: isinstance(d["tool_name"], str) and isinstance(d["tool_use_id"], str)
    and d["status"] == "running" and isinstance(d["input_summary"], str),
    "tool_result": lambda d: isinstance(d["tool_name"], str) and isinstance(d["tool_use_id"], str)
    and d["status"] in ("done", "error") and isinstance(d["output_summary"], str) and _is_int(d["duration_ms"], 0),
    "turn": lambda d: _is_int(d["turn_number"], 1) and _is_int(d["total_tools"], 0),
    "progress": lambda d: isinstance(d["step"], str) and _is_int(d["percentage"], 0, 100)
    and isinstance(d["message"], str)
    and ("sub_progress" not in d or (_is_int(d["sub_progress"]["current"]) and _is_int(d["sub_progress"]["total"])
                                     and isinstance(d["sub_progress"]["item_title"], str))),
    "creation": lambda d: isinstance(d["creation_type"], str) and _is_int(d["count"], 0)
    and isinstance(d["tool_use_id"], str) and all(isinstance(i, dict) for i in d["items"]),
    "error": lambda d: isinstance(d["error_type"], str) and isinstance(d["message"], str) and isinstance(d["details"], dict),
    "done": lambda d: isinstance(d["message_id"], str) and _is_int(d["num_turns"], 0) and _is_int(d["tool_count"], 0)
    and _is_int(d["duration_ms"], 0) and isinstance(d["model"], str)
    and isinstance(d["total_cost_usd"], (int, float)) and d["total_cost_usd"] >= 0
    and _is_int(d["usage"]["input_tokens"], 0) and _is_int(d["usage"]["output_tokens"], 0),
}


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
        text = fh.read()
    assert text.endswith("\n")
    return text[:-1].split("\n")  # \n only: U+2028 inside a string never splits a record


def group_sessions(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """sid -> {"header": ..., "events": [...], "file": ...}, from every line of the files."""
    sessions: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in read_lines(path):
            rec = json.loads(line)
            if "session" in rec:
                assert rec["session"] not in sessions
                sessions[rec["session"]] = {"header": rec, "events": [], "file": path}
            else:
                sessions[rec["sid"]]["events"].append(rec)  # KeyError: an event before its header
    return sessions


def max_gap_s(events: list[dict[str, Any]]) -> float:
    return _max_gap([e["t"] for e in events])


def _max_gap(ts: list[float]) -> float:
    return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)


def line_t(line: str) -> float:
    """t of an event line without a full JSON parse: every event line starts with {"t": ..., """
    return float(line[6:line.index(",")])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, dict[str, Any]]]:
    """A written corpus with a high failure rate, killed sessions allowed, three files."""
    out = tmp_path_factory.mktemp("sim")
    report = simulate(SimulationOptions(
        sessions=600, seed=11, out=out, synthetic_done_rate=0.3, files=3, start=START,
        stall_rate=0.05, allow_killed=True,
    ))
    return report, group_sessions(list(report.files))


@pytest.fixture(scope="module")
def big() -> list[Any]:
    """A larger in-process corpus (no disk) for the statistical checks."""
    return [s for _, s in iter_sessions(SimulationOptions(sessions=4000, seed=3, synthetic_done_rate=0.1, start=START))]


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    def run(seed: int, name: str, gz: bool) -> list[bytes]:
        report = simulate(SimulationOptions(sessions=80, seed=seed, out=tmp_path / name, start=START, gzip=gz))
        return [p.read_bytes() for p in report.files]

    assert run(5, "a", False) == run(5, "b", False)
    assert run(5, "c", True) == run(5, "d", True)  # gzip header carries no time or name
    assert run(5, "e", False) != run(6, "f", False)


def test_every_line_is_a_v1_record(corpus: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    report, sessions = corpus
    assert len(sessions) == report.sessions
    for sid, s in sessions.items():
        header = s["header"]
        assert set(header) == HEADER_KEYS and header["v"] == 1 and header["side"] == "server" and header["t"] == 0
        assert set(header["attrs"]) == ATTR_KEYS
        assert datetime.fromisoformat(header["started_at"]).utcoffset() == timedelta(0)
        events = s["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        for e in events:
            assert set(e) == EVENT_KEYS and e["sid"] == sid
            assert e["event"] in WIRE_EVENTS or e["event"] == END_EVENT
            if e["event"] != END_EVENT:
                assert PAYLOAD_CHECKS[e["event"]](e["data"]), e
        assert [e["t"] for e in events] == sorted(e["t"] for e in events)
        ends = [i for i, e in enumerate(events) if e["event"] == END_EVENT]
        dones = [i for i, e in enumerate(events) if e["event"] == "done"]
        assert len(dones) <= 1 and len(ends) <= 1
        if ends:
            assert ends == [len(events) - 1]
            assert events[-1]["data"]["reason"] in END_REASONS
        else:  # only a killed process leaves no _end record, and then there is no done either
            assert not dones
        if dones:
            assert dones[0] == len(events) - 2 and events[-1]["data"] == {"reason": "done"}


def test_lines_are_exactly_what_recording_dumps_writes(corpus: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    report, _ = corpus
    for path in report.files:
        for line in read_lines(path):
            assert dumps(json.loads(line)) == line + "\n"


def test_files_are_in_wall_clock_order_and_sessions_interleave(corpus: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    report, _ = corpus
    interleaved = 0
    for path in report.files:
        starts: dict[str, datetime] = {}
        open_now: set[str] = set()
        last = None
        for line in read_lines(path):
            rec = json.loads(line)
            if "session" in rec:
                sid = rec["session"]
                starts[sid] = datetime.fromisoformat(rec["started_at"])
                interleaved += bool(open_now)
                open_now.add(sid)
                wall = starts[sid]
            else:
                wall = starts[rec["sid"]] + timedelta(seconds=rec["t"])
                if rec["event"] == END_EVENT:
                    open_now.discard(rec["sid"])
            # started_at keeps microseconds but lines are merged on whole milliseconds
            assert last is None or wall >= last - timedelta(milliseconds=1)
            last = wall
        assert report.start <= min(starts.values()) and max(starts.values()) < report.end
    assert interleaved > report.sessions / 10  # concurrent sessions share a file


def test_report_matches_the_files(corpus: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    report, sessions = corpus
    reasons: Counter[str] = Counter()
    orphans = stalls = tool_errors = 0
    for s in sessions.values():
        events = s["events"]
        end = events[-1] if events and events[-1]["event"] == END_EVENT else None
        reasons[end["data"]["reason"] if end else "no_end_record"] += 1
        if end and end["data"]["reason"] == "exception":
            # as TraceRecorder writes it (hook/writer.py): the same SQL reads both
            assert {"type", "message"} <= set(end["data"]) and "exception_type" not in end["data"]
        used = {e["data"]["tool_use_id"] for e in events if e["event"] == "tool_use"}
        finished = {e["data"]["tool_use_id"] for e in events if e["event"] == "tool_result"}
        assert finished <= used
        orphans += len(used - finished)
        tool_errors += sum(e["event"] == "tool_result" and e["data"]["status"] == "error" for e in events)
        done = any(e["event"] == "done" for e in events)
        stalls += done and max_gap_s(events) >= STALL_S
        if used - finished:
            assert not done  # only failures leave tools orphaned
    assert dict(reasons) == report.end_reasons
    assert report.failures == report.sessions - reasons["done"] == sum(report.failure_kinds.values())
    assert (report.orphaned_tools, report.stalls, report.tool_errors) == (orphans, stalls, tool_errors)
    assert orphans > 0 and stalls > 0 and tool_errors > 0


def test_done_agrees_with_the_session_it_closes(corpus: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    _, sessions = corpus
    models = {m.name for m in MODELS}
    checked = 0
    for s in sessions.values():
        events = s["events"]
        turns = [e["data"] for e in events if e["event"] == "turn"]
        # turn events start at 2 (turn 1 is implicit) and count the tools used before them
        assert [t["turn_number"] for t in turns] == list(range(2, len(turns) + 2))
        for i, e in enumerate(events):
            if e["event"] == "turn":
                assert e["data"]["total_tools"] == sum(x["event"] == "tool_use" for x in events[:i])
        done = next((e for e in events if e["event"] == "done"), None)
        if done is None:
            continue
        checked += 1
        d = done["data"]
        assert d["num_turns"] == len(turns) + 1
        assert d["tool_count"] == sum(e["event"] == "tool_use" for e in events)
        assert d["duration_ms"] == round(done["t"] * 1000)
        assert d["model"] == s["header"]["attrs"]["model"] and d["model"] in models
        tokens = sum(len(re.findall(r"\s*\S+", e["data"]["text"])) for e in events if e["event"] == "token")
        assert d["usage"]["output_tokens"] == tokens > 0
    assert checked > 0


def test_failure_rate_and_mix_are_honoured(big: list[Any]) -> None:
    n, rate = len(big), 0.1
    no_done = [s for s in big if not any('"event": "done"' in line for line in s.lines)]
    assert {s.session_id for s in no_done} == {s.session_id for s in big if s.failure}
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(len(no_done) - n * rate) <= 4.5 * sd
    kinds = Counter(s.failure for s in no_done)
    assert "killed" not in kinds  # not allowed by default
    total_w = sum(w for k, w in FAILURE_WEIGHTS.items() if k != "killed")
    for kind in FAILURE_KINDS:
        if kind == "killed":
            continue
        p = FAILURE_WEIGHTS[kind] / total_w
        assert abs(kinds[kind] - len(no_done) * p) <= 4.5 * math.sqrt(len(no_done) * p * (1 - p)), kind


def test_idle_cuts_stalls_and_ordinary_silences(big: list[Any]) -> None:
    assert json.loads(big[0].lines[1])["t"] == line_t(big[0].lines[1])
    for s in big:
        ts = [line_t(line) for line in s.lines[1:]]
        if s.failure == "idle_cut":
            gap = ts[-1] - (ts[-2] if len(ts) > 1 else 0)
            assert min(IDLE_CUT_MS) / 1000 <= gap <= (max(IDLE_CUT_MS) + 501) / 1000
        elif s.stalled:
            assert STALL_S <= _max_gap(ts) <= STALL_MAX_MS / 1000 + 2
        elif s.failure is None:
            assert _max_gap(ts) < STALL_S
    assert any(s.failure == "idle_cut" for s in big) and any(s.stalled for s in big)


def test_token_speed_is_the_sessions_model_speed(big: list[Any]) -> None:
    """Tokens/s over each run of consecutive token batches is the session's speed, which lies
    inside its model's range (all within 20-120). Batch times follow the cumulative token count
    exactly, up to the flush lag and 1 ms rounding at each end of a run."""
    ranges = {m.name: (m.min_tps, m.max_tps) for m in MODELS}
    by_model: dict[str, list[float]] = defaultdict(list)
    for s in big[:1500]:
        lo, hi = ranges[s.model]
        assert 20 <= lo <= s.tps <= hi <= 120
        tokens = span_ms = runs = 0
        run: list[tuple[int, int]] = []  # (t_ms, tokens) of the current run
        for line in s.lines[1:] + ['{"t": 0, "event": "_flush"}']:
            rec = json.loads(line)
            t_ms = round(rec["t"] * 1000)
            if rec["event"] == "token" and (not run or t_ms - run[-1][0] < 1000):  # a stall splits a run
                run.append((t_ms, len(re.findall(r"\s*\S+", rec["data"]["text"]))))
                continue
            if len(run) > 1:
                tokens += sum(n for _, n in run[1:])
                span_ms += run[-1][0] - run[0][0]
                runs += 1
            run = [(t_ms, len(re.findall(r"\s*\S+", rec["data"]["text"])))] if rec["event"] == "token" else []
        if runs:
            assert abs(span_ms - tokens * 1000 / s.tps) <= runs * 2 * (FLUSH_LAG_MS + 1)
            by_model[s.model].append(tokens * 1000 / span_ms)
    assert set(by_model) == set(ranges)  # several models, each at its own speed
    for model, speeds in by_model.items():
        lo, hi = ranges[model]
        assert lo * 0.95 <= statistics.median(speeds) <= hi * 1.05


def test_tool_latencies_are_lognormal_per_tool(big: list[Any]) -> None:
    """log(duration_ms) is normal(mu, sigma) per tool: its median lies within 4 standard errors
    (1.2533 sigma / sqrt(n)) of log(median_ms); the recorded gap is the duration plus 0-3 ms."""
    durations: dict[str, list[int]] = defaultdict(list)
    for s in big:
        started: dict[str, float] = {}
        for line in s.lines[1:]:
            if '"event": "tool_' not in line:
                continue
            rec = json.loads(line)
            d = rec["data"]
            if rec["event"] == "tool_use":
                started[d["tool_use_id"]] = rec["t"]
                continue
            gap_ms = round((rec["t"] - started[d["tool_use_id"]]) * 1000)
            assert 0 <= gap_ms - d["duration_ms"] <= 3
            assert d["duration_ms"] <= TOOL_TIMEOUT_MS
            durations[d["tool_name"]].append(d["duration_ms"])
    assert set(durations) == set(TOOLS)
    for name, values in durations.items():
        tool = TOOLS[name]
        logs = [math.log(max(v, 1)) for v in values]
        se = 1.2533 * tool.sigma / math.sqrt(len(logs))
        assert abs(statistics.median(logs) - tool.mu) <= 4 * se, name
        # spread: the interquartile range of a normal is 1.349 sigma (SE of a quartile ~1.36 sigma/sqrt n)
        q1, _, q3 = statistics.quantiles(logs, n=4)
        assert abs((q3 - q1) - 1.349 * tool.sigma) <= 4 * 1.93 * tool.sigma / math.sqrt(len(logs)), name


def test_cli_writes_files_and_prints_one_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "traces"
    rc = main(["simulate", "--sessions", "40", "--files", "2", "--out", str(out), "--gzip",
               "--start", "2025-01-06T00:00:00", "--days", "0.5", "--seed", "9"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 40 sessions")
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["worker-01.jsonl.gz", "worker-02.jsonl.gz"]
    sessions = group_sessions(files)
    assert len(sessions) == 40
    assert sum(len(s["events"]) + 1 for s in sessions.values()) == int(re.search(r"\((\d+) lines\)", lines[0])[1])


def test_cli_help_has_examples_and_bad_input_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out
    future = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert main(["simulate", "--start", future, "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and err[1].startswith("hint: ")
    assert not Path("unused").exists()
    # a typo of a size: said, instead of running out of memory drawing the start times
    for n in ("-1", "99999999999999999999999"):
        assert main(["simulate", "--sessions", n, "--out", "unused"]) == 2
        assert capsys.readouterr().err.startswith("error: --sessions must be between 0 and 10,000,000")
    assert not Path("unused").exists()


def test_default_period_ends_an_hour_before_now_on_the_hour(tmp_path: Path) -> None:
    now = datetime(2025, 3, 4, 15, 42, 7, tzinfo=timezone.utc)
    start, end = resolve_period(SimulationOptions(days=2), now)
    assert end == datetime(2025, 3, 4, 14, tzinfo=timezone.utc) and end - start == timedelta(days=2)
    # a rerun within the same hour writes the same bytes
    a = simulate(SimulationOptions(sessions=30, out=tmp_path / "a"), now)
    b = simulate(SimulationOptions(sessions=30, out=tmp_path / "b"), now.replace(minute=59))
    assert [p.read_bytes() for p in a.files] == [p.read_bytes() for p in b.files]


def test_ingesting_a_simulated_corpus_gives_the_generated_outcomes(tmp_path: Path) -> None:
    pipeline = pytest.importorskip("agent_stream_trace.ingest.pipeline")
    from agent_stream_trace.db import connect

    report = simulate(SimulationOptions(sessions=400, seed=2, out=tmp_path / "traces", synthetic_done_rate=0.3,
                                        files=3, start=START, allow_killed=True, stall_rate=0.05))
    assert report.end_reasons.get("no_end_record", 0) > 0
    # An hour later every file has been idle longer than the open window: killed sessions close.
    later = time.time() + 3600
    pipeline.ingest([str(tmp_path / "traces")],
                    pipeline.IngestOptions(db=tmp_path / "t.duckdb", open_window=300.0, now=later))
    con = connect(tmp_path / "t.duckdb")
    outcomes = dict(con.execute("SELECT outcome, count(*) FROM sessions GROUP BY ALL").fetchall())
    reasons = dict(con.execute("SELECT end_reason, count(*) FROM sessions GROUP BY ALL").fetchall())
    attribution = {a for (a,) in con.execute("SELECT DISTINCT attribution FROM sessions").fetchall()}
    orphans, tool_errors, stalls = con.execute(
        "SELECT sum(orphaned_tools), sum(tool_errors), count(*) FILTER (outcome = 'done' AND max_gap_s >= ?) FROM sessions",
        [STALL_S],
    ).fetchone()
    assert outcomes == {"done": report.end_reasons["done"], "synthetic_done": report.failures}
    assert reasons == report.end_reasons
    assert attribution == {"exact"}
    assert (orphans, tool_errors, stalls) == (report.orphaned_tools, report.tool_errors, report.stalls)
