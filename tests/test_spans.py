"""The session → span mapping, tested by value (docs/export.md, "Every session as an OpenTelemetry trace")."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from support.sessions_db import (
    BASE_TIME,
    add_session,
    add_sessions,
    insert_events,
    scenario,
    session_trace,
    simulated_specs,
)

from agent_stream_trace.db import connect
from agent_stream_trace.exporters.otlp_encode import RequestEncoder, encode_request_reference
from agent_stream_trace.session import load_session_traces
from agent_stream_trace.spans import data_events, resource_attributes, session_spans, span_id_for

SID = "948ef008-264d-4441-b621-814af4412474"
BASE_NS = int(BASE_TIME.timestamp()) * 1_000_000_000 + BASE_TIME.microsecond * 1000


def by_name(spans, prefix):
    return [s for s in spans if s.name.startswith(prefix)]


def all_values(spans):
    for s in spans:
        yield s.name
        yield s.status_message
        yield from (str(v) for v in s.attributes.values())
        for e in s.events:
            yield from (str(v) for v in e.attributes.values())


def test_trace_id_is_the_session_uuid_and_ids_are_deterministic():
    trace = session_trace(scenario("tools"), session_id=SID)
    first, again = session_spans(trace), session_spans(trace)
    assert first == again
    assert {s.trace_id for s in first} == {uuid.UUID(SID).bytes}
    assert len({s.span_id for s in first}) == len(first)
    root = first[0]
    assert root.parent_span_id is None and root.span_id == span_id_for(SID, "server", "root", 0)
    assert all(s.parent_span_id == root.span_id for s in first[1:])


def test_root_turn_and_tool_spans_of_a_tool_session():
    events = scenario("tools", tools=2)
    trace = session_trace(events, session_id=SID, attrs={"agent_name": "researcher", "route": "/chat"})
    spans = session_spans(trace)
    root = spans[0]
    assert root.name == "invoke_agent researcher"
    assert root.start_ns == BASE_NS
    assert root.end_ns == BASE_NS + round(events[-1][0] * 1e6) * 1000
    a = root.attributes
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.conversation.id"] == a["session.id"] == SID
    assert a["openinference.span.kind"] == "AGENT"
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.model"] == "claude-sonnet-4-6"
    first_token_t = next(t for t, name, _ in events if name == "token")
    assert a["gen_ai.response.time_to_first_chunk"] == a["gen_ai.client.operation.time_to_first_chunk"] == first_token_t
    assert a["agent_stream.outcome"] == "done" and a["agent_stream.synthetic_done"] is False
    assert a["agent_stream.attrs.route"] == "/chat"
    assert root.status == "ok"

    # Turn 1 starts at the first event; each `turn` event starts the next.
    turn_starts = [events[0][0]] + [t for t, name, _ in events if name == "turn"]
    chats = by_name(spans, "chat ")
    assert [c.name for c in chats] == ["chat claude-sonnet-4-6"] * 3
    assert [c.start_ns for c in chats] == [BASE_NS + round(t * 1e6) * 1000 for t in turn_starts]
    assert [c.attributes["agent_stream.turn_number"] for c in chats] == [1, 2, 3]
    assert all(c.attributes["openinference.span.kind"] == "LLM" for c in chats)
    assert chats[0].end_ns == chats[1].start_ns and chats[-1].end_ns == root.end_ns
    assert "langfuse.observation.completion_start_time" in chats[0].attributes
    assert [e.name for e in chats[0].events] == ["thinking"]

    tools = by_name(spans, "execute_tool")
    uses = [(t, d) for t, name, d in events if name == "tool_use"]
    assert [s.name for s in tools] == [f"execute_tool {d['tool_name']}" for _, d in uses]
    assert [s.attributes["gen_ai.tool.call.id"] for s in tools] == [d["tool_use_id"] for _, d in uses]
    assert [s.attributes["gen_ai.tool.name"] for s in tools] == [d["tool_name"] for _, d in uses]
    assert all(s.attributes["openinference.span.kind"] == "TOOL" and s.status == "ok" for s in tools)
    assert [s.start_ns for s in tools] == [BASE_NS + round(t * 1e6) * 1000 for t, _ in uses]


def test_failures_are_error_statuses_with_clear_messages():
    orphan = session_spans(session_trace(scenario("orphan")))
    root = orphan[0]
    assert root.status == "error" and "ended without done" in root.status_message
    assert root.attributes["agent_stream.synthetic_done"] is True
    orphaned = by_name(orphan, "execute_tool")[-1]
    assert orphaned.status == "error" and "orphaned" in orphaned.status_message
    assert orphaned.end_ns == root.end_ns  # an orphaned call lasts until the session ended

    tool_error = by_name(session_spans(session_trace(scenario("tool_error"))), "execute_tool")
    assert tool_error[0].status == "error" and "status=error" in tool_error[0].status_message
    assert tool_error[1].status == "ok"

    errored = session_spans(session_trace(scenario("error_then_done")))
    assert errored[0].status == "error" and "first: rate_limit" in errored[0].status_message
    chat = by_name(errored, "chat")[0]
    error_event = next(e for e in chat.events if e.name == "error")
    assert error_event.attributes["exception.type"] == "rate_limit"
    assert chat.status == "error"
    # The error's message and details may quote the user: only with content opted in.
    assert not any("slow down" in v or "retry" in v for v in all_values(errored))
    rich = session_spans(session_trace(scenario("error_then_done")), include_content=True)
    assert "rate_limit: slow down" in rich[0].status_message
    rich_event = next(e for e in by_name(rich, "chat")[0].events if e.name == "error")
    assert rich_event.attributes["exception.message"] == "slow down"
    assert json.loads(rich_event.attributes["agent_stream.error.details"]) == {"retry": 1}

    still_open = session_spans(session_trace(scenario("crash"), outcome="open"))
    assert still_open[0].status == "unset"


def test_progress_and_creation_become_span_events():
    spans = session_spans(session_trace(scenario("progress")))
    chat = by_name(spans, "chat")[0]
    names = [e.name for e in chat.events]
    assert names == ["thinking", "progress", "creation"]
    progress = chat.events[1]
    assert progress.attributes["agent_stream.progress.percentage"] == 40
    assert progress.attributes["agent_stream.progress.step"] == "search"
    # The progress message is content (hook/redaction.py): only with content opted in.
    assert "agent_stream.progress.message" not in progress.attributes
    rich = by_name(session_spans(session_trace(scenario("progress")), include_content=True), "chat")[0]
    assert rich.events[1].attributes["agent_stream.progress.message"] == "searching"
    assert all(chat.start_ns <= e.time_ns <= chat.end_ns for e in chat.events)


def test_content_only_with_opt_in():
    trace = session_trace(scenario("tools"))
    plain = list(all_values(session_spans(trace)))
    assert not any("word0" in v or "query #0" in v or "look this up" in v or "1 results" in v for v in plain)
    rich = session_spans(trace, include_content=True)
    values = list(all_values(rich))
    assert any("word0" in v for v in values)  # token text
    assert any("look this up" in v for v in values)  # thinking text
    tool = by_name(rich, "execute_tool")[0]
    assert tool.attributes["input.value"] == "query #0" and tool.attributes["output.value"] == "1 results"


def test_encoder_writes_what_the_official_protobuf_classes_write(db_path):
    con = connect(db_path)
    add_sessions(con, simulated_specs(21))
    spans = [s for t in load_session_traces(con) for s in session_spans(t, include_content=True)]
    resource = resource_attributes("svc", "proj")
    payload = RequestEncoder(resource, scope_version="9").encode(spans)
    assert payload == encode_request_reference(spans, resource, scope_version="9").SerializeToString()


def test_encoder_agrees_with_protobuf_on_awkward_values_seen_once_and_again(monkeypatch):
    # Every value kind, first encoded on a cache miss, then from the cache, then (cache size 3)
    # after the caches were emptied: the bytes never differ from the official classes'.
    from agent_stream_trace.exporters import otlp_encode
    from agent_stream_trace.spans import SpanEventSpec, SpanSpec

    monkeypatch.setattr(otlp_encode, "_CACHE_MAX", 3)
    values = {
        "s.ascii": "plain", "s.empty": "", "s.unicode": "héllo ✓ 日本 \U0001f600", "s.long": "x" * 300,
        "i.zero": 0, "i.neg": -5, "i.big": 2**62, "b.true": True, "b.false": False,
        "f.val": 1.5, "f.neg": -0.0, "l.mixed": ["a", 1, 2.5, True], "k.ünïcode" * 20: "key over 127 bytes",
    }
    spans = []
    for i in range(3):
        attrs = dict(values, **{"s.unique": f"id-{i}", "i.unique": 1000 + i})
        spans.append(SpanSpec(bytes(range(16)), bytes([i + 1] * 8), None if i == 0 else bytes([1] * 8),
                              f"span {i}", "client", 10**18 + i, 10**18 + i + 5, attrs,
                              (SpanEventSpec("ev", 10**18 + i, attrs),), "error" if i else "ok", "boom" if i else ""))
    resource = {"service.name": "svc ✓"}
    encoder = RequestEncoder(resource)
    for _ in range(2):  # the second request reuses the first one's caches
        assert encoder.encode(spans) == encode_request_reference(spans, resource).SerializeToString()


def test_loader_reads_every_session_with_its_rows(db_path):
    con = connect(db_path)
    specs = simulated_specs(30)
    add_sessions(con, specs)
    traces = list(load_session_traces(con, batch_size=4))
    assert [t.session_id for t in traces] == [s["session_id"] for s in specs]
    for trace, spec in zip(traces, specs):
        assert [(e.t, e.event, e.data) for e in trace.events] == [tuple(e) for e in spec["events"]]
        assert len(trace.tool_calls) == sum(1 for e in spec["events"] if e[1] == "tool_use")
        assert trace.started_ns == int(spec["started_at"].timestamp()) * 10**9 + spec["started_at"].microsecond * 1000


@pytest.mark.parametrize("kind", ["plain", "tools", "orphan", "crash"])
def test_ambiguous_sessions_are_left_out_unless_asked(db_path, kind):
    con = connect(db_path)
    add_sessions(con, [dict(events=scenario(kind), session_id=SID, attribution="ambiguous")])
    assert list(load_session_traces(con)) == []
    assert [t.session_id for t in load_session_traces(con, include_ambiguous=True)] == [SID]


@pytest.mark.parametrize("include_content", [False, True])
def test_token_runs_collapsed_by_the_loader_map_to_the_same_spans(db_path, include_content):
    con = connect(db_path)
    add_sessions(con, simulated_specs(28))
    raw_traces = list(load_session_traces(con))
    raw = [session_spans(t, include_content=include_content) for t in raw_traces]
    runs = list(load_session_traces(con, token_runs=True, token_text=include_content))
    assert sum(len(t.events) for t in runs) < sum(len(t.events) for t in raw_traces)
    assert [session_spans(t, include_content=include_content) for t in runs] == raw
    lean = list(load_session_traces(con, token_runs=True, token_text=include_content,
                                    data_events=data_events(include_content)))
    assert any(e.data is None for t in lean for e in t.events if e.event == "done")
    assert [session_spans(t, include_content=include_content) for t in lean] == raw


def _read_as_stored(text):
    # What the loader promises for stored `data`: the value orjson reads (integers beyond 64
    # bits become floats), else the one json reads (NaN), else the text itself.
    for loads in (orjson.loads, json.loads):
        try:
            return loads(text)
        except ValueError:
            pass
    return text


@pytest.mark.parametrize("token_runs", [False, True])
def test_loader_reads_stored_data_and_times_exactly_whatever_the_json(db_path, token_runs):
    # The loader reads a session's events as one JSON array built by DuckDB; stored data only
    # DuckDB's JSON reader takes (a trailing comma) must still come back as its text, data only
    # Python's json takes (NaN) as its value, and times as the same floats.
    con = connect(db_path)
    add_session(con, scenario("tools", tools=1), session_id=SID)
    odd = [
        (101, 2.0, "progress", '{"step": "a", "percentage": 1,}'),
        (102, 1e300, "progress", '{"big": 123456789012345678901234567890, "f": 1.0}'),
        (103, None, "thinking", '{"text": "x", "nan": NaN}'),
        (104, 0.1, 'we"ird ✓\n', '"just text"'),
        (105, float("inf"), "creation", '{"items": [1, 2,], "é": "\\u00e9"}'),
        (106, 5e-324, "error", None),
    ]
    con.execute("CREATE TEMP TABLE _odd (session_id VARCHAR, side VARCHAR, seq BIGINT, t DOUBLE, event VARCHAR, data VARCHAR)")
    con.executemany("INSERT INTO _odd VALUES (?, 'server', ?, ?, ?, ?)", [(SID, *row) for row in odd])
    insert_events(con, "SELECT * FROM _odd")
    (trace,) = load_session_traces(con, token_runs=token_runs)
    read = {e.seq: e for e in trace.events}
    for seq, t, name, data in odd:
        event = read[seq]
        assert (event.t, event.event) == (t, name) and type(event.t) is type(t)
        expected = _read_as_stored(data) if data is not None else None
        if seq == 103:
            assert event.data["text"] == "x" and math.isnan(event.data["nan"])
        else:
            assert event.data == expected and type(event.data) is type(expected)
    assert [e.seq for e in trace.events] == sorted(e.seq for e in trace.events)


@pytest.mark.parametrize("include_content", [False, True])
def test_attributes_leave_out_what_is_unknown_and_never_carry_none(include_content):
    # OTLP has no null: a crashed session has no model, response id or cost, a turn without
    # tokens no time to first chunk, an orphaned tool call no latency; those keys are absent.
    crash = session_spans(session_trace(scenario("crash")), include_content=include_content)
    silent = session_spans(session_trace(scenario("tools", tokens=0)), include_content=include_content)
    orphan = session_spans(session_trace(scenario("orphan")), include_content=include_content)
    for spans in (crash, silent, orphan):
        for span in spans:
            assert None not in span.attributes.values(), span.name
            assert all(None not in e.attributes.values() for e in span.events), span.name
    root, turn = crash[0], by_name(crash, "chat")[0]
    assert not {"gen_ai.response.model", "gen_ai.response.id", "agent_stream.total_cost_usd"} & set(root.attributes)
    assert "llm.model_name" not in turn.attributes and turn.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    for turn in by_name(silent, "chat"):
        assert turn.attributes["agent_stream.token_events"] == 0
        assert "gen_ai.response.time_to_first_chunk" not in turn.attributes
        assert "langfuse.observation.completion_start_time" not in turn.attributes
    assert by_name(silent, "chat")[0].attributes["llm.model_name"] == "claude-sonnet-4-6"
    never_returned = by_name(orphan, "execute_tool")[-1]
    assert never_returned.status == "error" and "agent_stream.tool.latency_ms" not in never_returned.attributes


@pytest.mark.parametrize("started_at", [BASE_TIME, datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc),
                                        datetime(2028, 2, 29, 0, 0, 0, 1, tzinfo=timezone.utc)])
def test_time_to_first_token_instants_are_iso_utc_to_the_microsecond(started_at):
    # Langfuse reads time to first token from this instant on the root and on every turn.
    events = scenario("tools", tools=2)
    spans = session_spans(session_trace(events, started_at=started_at))
    firsts = [t for i, (t, name, _) in enumerate(events)
              if name == "token" and (i == 0 or events[i - 1][1] != "token")]
    stamps = [s.attributes["langfuse.observation.completion_start_time"] for s in spans
              if s.name.startswith(("chat", "invoke"))]
    expected = [(started_at + timedelta(microseconds=round(t * 1e6))).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in firsts]
    assert stamps == [expected[0]] + expected


@pytest.mark.parametrize("include_content", [False, True])
def test_token_runs_map_to_the_same_spans_when_lines_were_lost(db_path, include_content):
    # Recordings that lost lines have gaps in seq: between two tokens, between two other events,
    # and between a token and an event. Runs must still end exactly at the events between tokens.
    con = connect(db_path)
    specs = simulated_specs(14)
    add_sessions(con, specs)
    con.execute("UPDATE _events SET seq = seq * 3 + (seq % 2) WHERE k IN "
                "(SELECT k FROM _session_keys WHERE session_id IN (SELECT session_id FROM sessions LIMIT 7))")
    con.execute("DELETE FROM _events WHERE event = 'token' AND seq % 5 = 0")
    # and one token alone between events, lines all there
    add_session(con, [(0.1, "token", {"text": "a"}), (0.2, "turn", {"turn_number": 2}), (0.3, "token", {"text": "b"}),
                      (0.4, "thinking", {"text": "hm"}), (0.5, "token", {"text": "c"}), (0.6, "token", {"text": "d"})])
    raw_traces = list(load_session_traces(con))
    runs = list(load_session_traces(con, token_runs=True, token_text=include_content,
                                    data_events=data_events(include_content)))
    for raw, collapsed in zip(raw_traces, runs):
        assert [(e.seq, e.data["count"]) for e in collapsed.events if e.event == "token"] == _token_runs(raw.events)
    assert ([session_spans(t, include_content=include_content) for t in runs]
            == [session_spans(t, include_content=include_content) for t in raw_traces])


def _token_runs(events):
    """(first seq, tokens) of each run of token events with no other event between them."""
    runs: list[list[int]] = []
    previous = None
    for event in events:
        if event.event == "token":
            if previous != "token":
                runs.append([event.seq, 0])
            runs[-1][1] += 1
        previous = event.event
    return [tuple(run) for run in runs]


def test_a_model_only_the_header_asked_for_is_the_request_model():
    # sessions.model is the done's model, else the header's attrs.model (ingest): a session
    # without a done that named it has the model that was asked for, not one that answered.
    crash = session_trace(scenario("crash"), attrs={"model": "asked-model"})
    crash.session["model"] = "asked-model"  # as the ingester stores it
    root, turn = session_spans(crash)[0], by_name(session_spans(crash), "chat")[0]
    assert root.attributes["gen_ai.request.model"] == turn.attributes["gen_ai.request.model"] == "asked-model"
    assert "gen_ai.response.model" not in root.attributes and "gen_ai.response.model" not in turn.attributes
    assert turn.attributes["llm.model_name"] == "asked-model" and turn.name == "chat asked-model"
    done = session_trace(scenario("tools"), attrs={"model": "asked-model"})
    root = session_spans(done)[0]
    assert root.attributes["gen_ai.response.model"] == done.session["model"] != "asked-model"
    assert "gen_ai.request.model" not in root.attributes
