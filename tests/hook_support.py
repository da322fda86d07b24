"""Checks shared by the hook tests: what a client received, what was recorded, what ingests.

The client side is parsed here independently of agent_stream_trace.hook.sse, so a bug in the
hook's parser cannot hide itself by being used to check its own output.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent_stream_trace.db import connect
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest


def client_events(body: bytes) -> list[tuple[str, Any]]:
    """(event, data) for each well-formed block a client received."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        events.append((lines[0][len("event: "):], json.loads(lines[1][len("data: "):])))
    return events


def recording_lines(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every line of the given files as JSON (a torn or mixed line fails here)."""
    records = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            records.append(json.loads(line))
    return records


def sessions_in(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """sid -> {"header": first header, "events": [(event, data)] wire events, "end": _end data, "records": all}."""
    out: dict[str, dict[str, Any]] = {}
    for rec in recording_lines(paths):
        if "session" in rec:
            out.setdefault(rec["session"], {"header": rec, "events": [], "end": None, "records": []})
            continue
        sess = out[rec["sid"]]
        sess["records"].append(rec)
        if rec["event"] == "_end":
            sess["end"] = rec["data"]
        elif not rec["event"].startswith("_"):
            sess["events"].append((rec["event"], rec["data"]))
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def ingested_sessions(paths: Iterable[Path | str], db: Path) -> dict[str, dict[str, Any]]:
    """Ingest with the real ingester; session_id -> sessions row as a dict."""
    ingest([os.fspath(p) for p in paths], IngestOptions(db=db))
    con = connect(db)
    try:
        cur = con.execute("SELECT * FROM sessions")
        names = [d[0] for d in cur.description]
        return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}
    finally:
        con.close()


def memory_tracer() -> tuple[Any, Any]:
    """A TracerProvider that keeps every finished span in memory: (provider, exporter)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def stream_crash(client: Any, url: str, n: int = 2) -> str:
    """Stream /stream/crash to its end (the server cuts it: that is the scenario); its session id."""
    import httpx

    from agent_stream_trace.hook.fastapi import SESSION_HEADER

    with client.stream("GET", f"{url}/stream/crash?n={n}") as response:
        try:
            response.read()
        except httpx.RemoteProtocolError:
            pass
        return response.headers[SESSION_HEADER]
