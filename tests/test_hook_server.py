"""End to end: a real uvicorn server streaming with the upstream emitter through TraceRecorder,
a real HTTP client, and the recording loaded by the real ingester."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from hook_app import make_app, serve
from hook_support import client_events, ingested_sessions, sessions_in, wait_for

from agent_stream_trace import TraceRecorder
from agent_stream_trace.hook.fastapi import SESSION_HEADER


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    return tmp_path / "rec.jsonl"


@pytest.fixture
def recorder(recording: Path):
    rec = TraceRecorder(recording)
    yield rec
    rec.close()


@pytest.fixture
def url(recorder: TraceRecorder):
    with serve(make_app(recorder)) as base:
        yield base


def fetch(url: str, path: str) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.get(url + path)


def test_plain_session_is_recorded_as_the_client_saw_it(url, recorder, recording, db_path):
    response = fetch(url, "/stream/plain?n=6&seed=1")
    sid = response.headers[SESSION_HEADER]
    assert str(uuid.UUID(sid)) == sid

    assert recorder.flush()
    session = sessions_in([recording])[sid]
    assert session["events"] == client_events(response.content)
    assert session["end"] == {"reason": "done"}
    assert session["header"]["v"] == 1 and session["header"]["side"] == "server"
    assert session["header"]["attrs"] == {"route": "/stream/plain", "seed": 1}
    assert [r["seq"] for r in session["records"]] == list(range(1, len(session["records"]) + 1))

    row = ingested_sessions([recording], db_path)[sid]
    assert (row["outcome"], row["end_reason"], row["attribution"]) == ("done", "done", "exact")
    assert row["event_count"] == len(client_events(response.content))


def test_tool_calls_are_recorded_and_ingest_with_their_status(url, recorder, recording, db_path):
    response = fetch(url, "/stream/tools?n=3&seed=2")
    sid = response.headers[SESSION_HEADER]
    received = client_events(response.content)

    assert recorder.flush()
    assert sessions_in([recording])[sid]["events"] == received

    row = ingested_sessions([recording], db_path)[sid]
    assert (row["outcome"], row["end_reason"], row["attribution"]) == ("done", "done", "exact")
    assert row["tool_calls"] == 2 and row["tool_errors"] == 1 and row["turns"] == 2


def test_server_exception_mid_stream_is_recorded_and_still_reaches_the_server(url, recorder, recording, db_path):
    body = b""
    with httpx.Client(timeout=10) as client, client.stream("GET", url + "/stream/crash?n=4&seed=3") as response:
        sid = response.headers[SESSION_HEADER]
        with pytest.raises(httpx.RemoteProtocolError):  # uvicorn cut the response: the exception propagated
            for chunk in response.iter_raw():
                body += chunk

    assert recorder.flush()
    session = sessions_in([recording])[sid]
    assert session["events"] == client_events(body)
    assert len(session["events"]) == 4
    assert session["end"] == {"reason": "exception", "type": "RuntimeError", "message": "model backend went away (3)"}

    row = ingested_sessions([recording], db_path)[sid]
    assert (row["outcome"], row["end_reason"], row["attribution"]) == ("synthetic_done", "exception", "exact")


def test_generator_returning_without_done(url, recorder, recording, db_path):
    response = fetch(url, "/stream/nodone?n=3")
    sid = response.headers[SESSION_HEADER]

    assert recorder.flush()
    session = sessions_in([recording])[sid]
    assert session["events"] == client_events(response.content)
    assert session["end"] == {"reason": "returned_without_done"}

    row = ingested_sessions([recording], db_path)[sid]
    assert (row["outcome"], row["end_reason"], row["attribution"]) == ("synthetic_done", "returned_without_done", "exact")


def test_client_disconnect_mid_stream_is_recorded_as_cancelled(url, recorder, recording, db_path):
    received = b""
    with httpx.Client(timeout=10) as client, client.stream("GET", url + "/stream/slow?n=5000&delay=0.002") as response:
        sid = response.headers[SESSION_HEADER]
        for chunk in response.iter_raw():
            received += chunk
            if received.count(b"\n\n") >= 3:
                break  # hang up mid-stream
    got = client_events(received[: received.rindex(b"\n\n") + 2])

    def ended():
        recorder.flush()
        return sessions_in([recording]).get(sid, {}).get("end")

    assert wait_for(ended, what="the _end record of the cancelled session") == {"reason": "cancelled"}
    recorded = sessions_in([recording])[sid]["events"]
    # The server sent what the client read, and maybe a little more before it noticed.
    assert recorded[: len(got)] == got
    assert len(recorded) < 5000 and ("done", {"message_id": "msg_0"}) not in recorded

    row = ingested_sessions([recording], db_path)[sid]
    assert (row["outcome"], row["end_reason"], row["attribution"]) == ("synthetic_done", "cancelled", "exact")


def test_twenty_concurrent_sessions_into_one_file(url, recorder, recording, db_path):
    plan = [("plain", "done", "done"), ("tools", "done", "done"),
            ("nodone", "synthetic_done", "returned_without_done"), ("crash", "synthetic_done", "exception")]
    cases = [(i, *plan[i % len(plan)]) for i in range(20)]

    async def one(client: httpx.AsyncClient, seed: int, name: str) -> tuple[str, bytes]:
        body = b""
        async with client.stream("GET", f"{url}/stream/{name}?n=8&delay=0.003&seed={seed}") as response:
            try:
                async for chunk in response.aiter_raw():
                    body += chunk
            except httpx.RemoteProtocolError:
                assert name == "crash"
            return response.headers[SESSION_HEADER], body

    async def all_of_them():
        async with httpx.AsyncClient(timeout=20) as client:
            return await asyncio.gather(*(one(client, seed, name) for seed, name, _, _ in cases))

    results = asyncio.run(all_of_them())
    assert recorder.flush()

    recorded = sessions_in([recording])  # every line parses: nothing torn or mixed
    lines = recording.read_text().splitlines()
    sids_in_order = [line.split('"sid": "')[1][:36] for line in lines if '"sid": "' in line]
    assert any(a != b for a, b in zip(sids_in_order, sids_in_order[1:]))  # they did interleave
    rows = ingested_sessions([recording], db_path)
    assert len(rows) == 20
    for (sid, body), (seed, name, outcome, end_reason) in zip(results, cases):
        assert recorded[sid]["events"] == client_events(body), name
        assert recorded[sid]["header"]["attrs"]["seed"] == seed
        row = rows[sid]
        assert (row["outcome"], row["end_reason"], row["attribution"]) == (outcome, end_reason, "exact"), name
