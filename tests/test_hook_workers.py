"""Several processes recording at once: `uvicorn --workers 2` into one directory (per-process
files), and two processes appending to one file (O_APPEND, one write per batch of lines)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from hook_app import ENV_DIR, free_port
from hook_support import (
    client_events,
    ingested_sessions,
    recording_lines,
    sessions_in,
    wait_for,
)

from agent_stream_trace.hook.fastapi import SESSION_HEADER

TESTS = Path(__file__).parent


def test_uvicorn_workers_record_into_one_directory(tmp_path, db_path):
    traces = tmp_path / "traces"
    traces.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hook_app:make_worker_app", "--factory", "--app-dir", str(TESTS),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env={**os.environ, ENV_DIR: str(traces)},
    )
    url = f"http://127.0.0.1:{port}"
    results: list[tuple[str, str, bytes]] = []  # (session id, worker pid, body)

    async def one(client: httpx.AsyncClient, seed: int) -> tuple[str, str, bytes]:
        r = await client.get(f"{url}/stream/{'tools' if seed % 2 else 'plain'}?n=6&delay=0.002&seed={seed}")
        return r.headers[SESSION_HEADER], r.headers["X-Worker-Pid"], r.content

    async def round_of_requests(start: int) -> list[tuple[str, str, bytes]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(*(one(client, seed) for seed in range(start, start + 12)))

    def up() -> bool:
        try:
            return httpx.get(f"{url}/stream/plain?n=0", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def both_workers_served() -> bool:
        results.extend(asyncio.run(round_of_requests(len(results))))
        return len({pid for _, pid, _ in results}) == 2

    try:
        wait_for(up, timeout=30, what="uvicorn workers to start")
        wait_for(both_workers_served, timeout=30, what="requests served by both workers")
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: each worker's recorder writes and closes
        assert server.wait(30) == 0

    files = sorted(traces.iterdir())
    pids = {pid for _, pid, _ in results}
    assert {f.name.split("-")[-2] for f in files} >= pids  # each worker wrote its own file(s)
    recorded = sessions_in(files)  # every line of every file parses
    rows = ingested_sessions([traces], db_path)
    for sid, pid, body in results:
        assert recorded[sid]["events"] == client_events(body)
        assert recorded[sid]["end"] == {"reason": "done"}
        assert (rows[sid]["outcome"], rows[sid]["attribution"]) == ("done", "exact")
        assert any(f"-{pid}-" in f.name and sid in f.read_text() for f in files)


def test_two_processes_appending_to_one_file_never_tear_lines(tmp_path, db_path):
    path = tmp_path / "shared.jsonl"
    code = f"import hook_app; hook_app.append_worker({str(path)!r}, 30, 200)"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=TESTS) for _ in range(2)]
    wait_for(lambda: len(list(tmp_path.glob("shared.jsonl.ready-*"))) == 2, timeout=30, what="both writers ready")
    (tmp_path / "shared.jsonl.go").touch()
    assert [p.wait(120) for p in procs] == [0, 0]

    records = recording_lines([path])  # a torn or interleaved line would not parse
    headers = [r for r in records if "session" in r]
    assert len(headers) == 60 and len({h["attrs"]["pid"] for h in headers}) == 2
    pid_of = {h["session"]: h["attrs"]["pid"] for h in headers}
    writers = [pid_of[r["sid"]] for r in records if "sid" in r]
    switches = sum(a != b for a, b in zip(writers, writers[1:]))
    assert switches >= 2  # the two processes' batches really interleaved in the file
    by_sid = sessions_in([path])
    assert all(len(s["events"]) == 202 and s["end"] == {"reason": "done"} for s in by_sid.values())
    rows = ingested_sessions([path], db_path)
    assert len(rows) == 60 and {r["attribution"] for r in rows.values()} == {"exact"}
