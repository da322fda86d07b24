"""The live path agrees: sessions served through the hook (live spans via the app's
TracerProvider) and the same sessions exported later by `export otlp` are the same trace:
ids, names, parents, attributes, statuses, events and timestamps."""

from __future__ import annotations

import uuid

import httpx
from hook_app import make_app, serve
from hook_support import memory_tracer, stream_crash, wait_for
from support.otlp_receiver import running_receiver

from agent_stream_trace import TraceRecorder
from agent_stream_trace.db import connect
from agent_stream_trace.exporters.otlp import OtlpExportOptions, export_otlp
from agent_stream_trace.hook.fastapi import SESSION_HEADER
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest


def proto_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(proto_value(v) for v in value.array_value.values)
    return getattr(value, kind)


def exported_view(span):
    return {
        "name": span.name,
        "parent": bytes(span.parent_span_id).hex() or None,
        "attributes": {kv.key: proto_value(kv.value) for kv in span.attributes},
        "status": (span.status.code, span.status.message),
        "events": [(e.name, e.time_unix_nano, {kv.key: proto_value(kv.value) for kv in e.attributes})
                   for e in span.events],
        "times": (span.start_time_unix_nano, span.end_time_unix_nano),
    }


def live_view(span):
    return {
        "name": span.name,
        "parent": format(span.parent.span_id, "016x") if span.parent else None,
        "attributes": {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in span.attributes.items()},
        "status": (span.status.status_code.value, span.status.description or ""),
        "events": [(e.name, e.timestamp, dict(e.attributes)) for e in span.events],
        "times": (span.start_time, span.end_time),
    }


def test_live_spans_and_exported_spans_are_the_same_trace(tmp_path, db_path):
    provider, memory = memory_tracer()
    path = tmp_path / "rec.jsonl"
    with TraceRecorder(path, tracer_provider=provider) as recorder, serve(make_app(recorder)) as url:
        with httpx.Client(timeout=10) as client:
            sids = {client.get(url + f"/stream/tools?n={n}&seed={n}").headers[SESSION_HEADER] for n in (1, 2, 3)}
            sids.add(stream_crash(client, url))
        wanted = {uuid.UUID(s).hex for s in sids}
        wait_for(lambda: {format(s.context.trace_id, "032x") for s in memory.get_finished_spans()} >= wanted,
                 what="live spans of every session")
        assert recorder.flush()

    ingest([path], IngestOptions(db=db_path))
    con = connect(db_path)
    with running_receiver() as receiver:
        export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint, session_ids=tuple(sids)))
        exported = {bytes(s.span_id).hex(): exported_view(s) for s in receiver.spans()}
        exported_traces = {bytes(s.trace_id).hex() for s in receiver.spans()}
    con.close()

    live = {format(s.context.span_id, "016x"): live_view(s) for s in memory.get_finished_spans()
            if format(s.context.trace_id, "032x") in wanted}
    assert exported_traces == wanted
    assert set(live) == set(exported) and len(live) >= 4 * 2
    for span_id, view in exported.items():
        assert live[span_id] == view, span_id
    assert any(v["status"][0] == 2 for v in exported.values())  # the crash is an ERROR on both paths
