"""The stream is sacred: identical bytes with and without the hook, and a failing or stalled
disk neither breaks nor delays it. Real uvicorn server, real HTTP client."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from hook_app import make_app, serve
from hook_support import client_events, ingested_sessions, sessions_in, wait_for

from agent_stream_trace import TraceRecorder
from agent_stream_trace.hook.fastapi import SESSION_HEADER

SCENARIOS = ["/stream/plain?n=5", "/stream/tools?n=2&seed=4", "/stream/weird"]


def get(client: httpx.Client, url: str) -> httpx.Response:
    return client.get(url)


class GateFile:
    """A file object whose write blocks until the test opens the gate: a disk that stalls."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.entered.set()
        self.gate.wait()
        self.chunks.append(data)
        return len(data)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("path", SCENARIOS)
def test_client_bytes_are_identical_with_and_without_the_hook(tmp_path, path):
    with TraceRecorder(tmp_path / "rec.jsonl") as recorder, serve(make_app(recorder)) as url:
        with httpx.Client(timeout=10) as client:
            hooked = client.get(url + path + "&hook=1" if "?" in path else url + path + "?hook=1")
            bare = client.get(url + path + "&hook=0" if "?" in path else url + path + "?hook=0")
        assert recorder.flush()
    assert hooked.content == bare.content
    for name in ("content-type", "cache-control", "x-accel-buffering"):
        assert hooked.headers[name] == bare.headers[name]
    assert hooked.headers["content-type"].startswith("text/event-stream")
    assert SESSION_HEADER.lower() not in bare.headers
    assert hooked.headers[SESSION_HEADER] in sessions_in([tmp_path / "rec.jsonl"])


def test_what_cannot_be_parsed_passes_through_and_is_recorded_as_it_is(tmp_path, db_path):
    recording = tmp_path / "rec.jsonl"
    with TraceRecorder(recording) as recorder, serve(make_app(recorder)) as url:
        response = httpx.get(url + "/stream/weird", timeout=10)
        assert recorder.flush()
        assert recorder.stats().unparsed == 2
    sid = response.headers[SESSION_HEADER]
    records = [(r["event"], r["data"]) for r in sessions_in([recording])[sid]["records"]]
    assert records == [
        ("token", {"text": "before"}),
        ("_unparsed", {"raw": "event: token\ndata: {not json}", "why": "data is not JSON"}),
        ("_comment", {"text": "ping"}),
        ("tool_use", {"tool_name": "search", "tool_use_id": "tu_split", "input_summary": "split across items", "status": "running"}),
        ("token", {"text": "two"}),
        ("token", {"text": "in one"}),
        ("token", {"text": "as bytes ünïcode"}),
        ("done", {"message_id": "msg_weird", "num_turns": 0, "tool_count": 0, "duration_ms": 0, "model": "", "total_cost_usd": 0.0}),
        ("_unparsed", {"raw": 'event: token\ndata: {"text": "never terminated"}', "why": "unterminated block at end of stream"}),
        ("_end", {"reason": "done"}),
    ]
    row = ingested_sessions([recording], db_path)[sid]
    assert (row["outcome"], row["end_reason"], row["attribution"]) == ("done", "done", "exact")
    assert row["event_count"] == 6  # the wire events: recorder records are not counted


def _failing_targets(tmp_path: Path):
    closed = open(tmp_path / "closed.jsonl", "w")
    closed.close()
    (tmp_path / "a-file").write_text("not a directory")
    return {
        "disk full (/dev/full)": Path("/dev/full"),
        "parent is not a directory": tmp_path / "a-file" / "rec.jsonl",
        "closed file object": closed,
    }


@pytest.mark.parametrize("case", ["disk full (/dev/full)", "parent is not a directory", "closed file object"])
def test_a_failing_disk_never_breaks_the_stream(tmp_path, case, caplog):
    target = _failing_targets(tmp_path)[case]
    with TraceRecorder(target) as recorder, serve(make_app(recorder)) as url:
        with httpx.Client(timeout=10) as client:
            hooked = [client.get(url + p + "?hook=1&seed=7") for p in ("/stream/plain", "/stream/tools", "/stream/nodone")]
            bare = [client.get(url + p + "?hook=0&seed=7") for p in ("/stream/plain", "/stream/tools", "/stream/nodone")]
        assert recorder.flush()
        stats = recorder.stats()
    assert [r.content for r in hooked] == [r.content for r in bare]
    assert all(r.status_code == 200 for r in hooked)
    assert stats.write_errors >= 1 and stats.lines_lost >= 1 and stats.lines_written == 0
    assert any("cannot" in m for m in caplog.messages)  # logged, not raised


def test_a_stalled_disk_does_not_delay_the_stream(tmp_path):
    disk = GateFile()
    recorder = TraceRecorder(disk, flush_interval_s=0.01)
    try:
        with serve(make_app(recorder)) as url, httpx.Client(timeout=10) as client:
            first = client.get(url + "/stream/plain?n=2&seed=1")
            wait_for(disk.entered.is_set, what="the writer to be stuck in write()")
            # The writer thread is now blocked inside write() until the gate opens. Whole
            # sessions still stream, byte for byte.
            hooked = [client.get(url + "/stream/tools?n=20&seed=2&hook=1") for _ in range(3)]
            assert not disk.gate.is_set() and disk.chunks == []
            bare = client.get(url + "/stream/tools?n=20&seed=2&hook=0")
            assert all(r.content == bare.content for r in hooked)
            disk.gate.set()
            assert recorder.flush()
    finally:
        disk.gate.set()
        recorder.close()
    written = b"".join(disk.chunks).decode()
    path = tmp_path / "rec.jsonl"
    path.write_text(written)
    recorded = sessions_in([path])
    for response in [first, *hooked]:
        sid = response.headers[SESSION_HEADER]
        assert recorded[sid]["events"] == client_events(response.content)
        assert recorded[sid]["end"] == {"reason": "done"}


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path, db_path):
    disk = GateFile()
    recorder = TraceRecorder(disk, flush_interval_s=0.01, max_queue=5)
    try:
        with serve(make_app(recorder)) as url, httpx.Client(timeout=10) as client:
            client.get(url + "/stream/plain?n=1&seed=1")
            wait_for(disk.entered.is_set, what="the writer to be stuck in write()")
            response = client.get(url + "/stream/plain?n=40&seed=2")
            assert response.content == client.get(url + "/stream/plain?n=40&seed=2&hook=0").content
            dropped = recorder.stats().dropped
            assert dropped > 0
            disk.gate.set()
            assert recorder.flush()
    finally:
        disk.gate.set()
        recorder.close()
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"".join(disk.chunks))
    sid = response.headers[SESSION_HEADER]
    session = sessions_in([path])[sid]
    sent = client_events(response.content)
    assert len(session["events"]) + dropped == len(sent)
    assert session["end"] == {"reason": "done", "dropped": dropped}
    # seq still counts what was dropped: the gap shows in the recording and in lost_lines
    assert session["records"][-1]["seq"] == len(sent) + 1
    row = ingested_sessions([path], db_path)[sid]
    assert row["lost_lines"] == dropped
