"""Live spans: a session served through the hook reaches the application's TracerProvider when
it ends, as the same spans the bulk mapping makes from its recording; failures stay inside."""

from __future__ import annotations

import uuid

import httpx
from hook_app import make_app, serve
from hook_support import memory_tracer, stream_crash, wait_for
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from agent_stream_trace import TraceRecorder
from agent_stream_trace.db import connect
from agent_stream_trace.hook.fastapi import SESSION_HEADER
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
from agent_stream_trace.session import load_session_traces
from agent_stream_trace.spans import session_spans


def test_each_session_becomes_spans_when_it_ends(tmp_path, db_path):
    provider, exporter = memory_tracer()
    path = tmp_path / "rec.jsonl"
    with TraceRecorder(path, tracer_provider=provider) as recorder, serve(make_app(recorder)) as url:
        with httpx.Client(timeout=10) as client:
            tools = client.get(url + "/stream/tools?n=2&seed=5")
            crash_sid = stream_crash(client, url)
        sids = {tools.headers[SESSION_HEADER], crash_sid}
        wait_for(lambda: {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
                 >= {uuid.UUID(s).hex for s in sids}, what="live spans of both sessions")
        assert recorder.flush()
        assert recorder.stats().live_sessions == 2 and recorder.stats().live_errors == 0

    spans = exporter.get_finished_spans()
    by_trace: dict[str, list] = {}
    for span in spans:
        by_trace.setdefault(format(span.context.trace_id, "032x"), []).append(span)
    tool_trace = by_trace[uuid.UUID(tools.headers[SESSION_HEADER]).hex]
    roots = [s for s in tool_trace if s.parent is None]
    assert len(roots) == 1 and roots[0].name.startswith("invoke_agent")
    tool_spans = [s for s in tool_trace if s.name.startswith("execute_tool")]
    assert len(tool_spans) == 2 and sorted(s.status.status_code == StatusCode.ERROR for s in tool_spans) == [False, True]
    crash_root = [s for s in by_trace[uuid.UUID(crash_sid).hex] if s.parent is None][0]
    assert crash_root.status.status_code == StatusCode.ERROR

    # The same spans the bulk path makes from the recording file: ids, names, parents.
    ingest([path], IngestOptions(db=db_path))
    con = connect(db_path)
    expected = {spec.span_id.hex(): (spec.name, spec.parent_span_id.hex() if spec.parent_span_id else None)
                for trace in load_session_traces(con, [(sid, "server") for sid in sids])
                for spec in session_spans(trace)}
    con.close()
    live = {format(s.context.span_id, "016x"): (s.name, format(s.parent.span_id, "016x") if s.parent else None)
            for s in spans}
    assert live == expected


class BrokenProcessor(SpanProcessor):
    def on_end(self, span) -> None:
        raise RuntimeError("exporter exploded")


def test_a_failing_tracer_never_touches_the_stream_or_the_recording(tmp_path):
    provider = TracerProvider()
    provider.add_span_processor(BrokenProcessor())
    path = tmp_path / "rec.jsonl"
    with TraceRecorder(path, tracer_provider=provider) as recorder, serve(make_app(recorder)) as url:
        with httpx.Client(timeout=10) as client:
            hooked = client.get(url + "/stream/tools?n=2&seed=1")
            bare = client.get(url + "/stream/tools?n=2&seed=1&hook=0")
        wait_for(lambda: recorder.stats().live_errors + recorder.stats().live_sessions >= 1, what="the live attempt")
        assert recorder.flush()
    assert hooked.content == bare.content
    assert hooked.headers[SESSION_HEADER] in path.read_text()
