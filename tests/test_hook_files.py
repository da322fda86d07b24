"""Recording files: durability without flush(), rotation with continuation headers, per-process
directory files, redaction, sampling that never drops a failure, close() at shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from agent_stream import AgentStreamEmitter
from hook_support import ingested_sessions, recording_lines, sessions_in, wait_for

from agent_stream_trace import TraceRecorder
from agent_stream_trace.errors import UsageError
from agent_stream_trace.hook.redaction import keep_lengths
from agent_stream_trace.hook.sampling import sampled_in

E = AgentStreamEmitter()


def session_items(seed: int, n: int, done: bool = True) -> list[str]:
    items = [E.turn(1), E.tool_use("search", f"tu_{seed}", "secret query"), E.tool_result("search", f"tu_{seed}", "secret result", 5)]
    items += [E.token(f"secret words {seed}-{i}") for i in range(n)]
    if done:
        items.append(E.done(message_id=f"m{seed}", num_turns=1, tool_count=1))
    return items


async def source(items: list[str], fail: bool = False):
    for item in items:
        await asyncio.sleep(0)  # interleave concurrent sessions item by item
        yield item
    if fail:
        raise ValueError("boom")


async def run(recorder: TraceRecorder, items: list[str], fail: bool = False, **attrs) -> str:
    sid = TraceRecorder.new_session_id()
    got = []
    try:
        async for item in recorder.record(source(items, fail), session_id=sid, **attrs):
            got.append(item)
    except ValueError:
        assert fail
    assert got == items
    return sid


def parsed(items: list[str]) -> list[tuple[str, dict]]:
    return [(i.split("\n")[0][7:], json.loads(i.split("\n")[1][6:])) for i in items]


def test_lines_reach_the_os_while_the_session_is_still_open(tmp_path):
    path = tmp_path / "rec.jsonl"
    # left readable by all (by an older version, say): appending to it takes that away
    path.touch()
    path.chmod(0o644)
    recorder = TraceRecorder(path, flush_interval_s=0.02)
    release = asyncio.Event()

    async def paused():
        yield E.token("first")
        await release.wait()
        yield E.done()

    async def main():
        agen = recorder.record(paused(), route="/x")
        assert await agen.__anext__() == E.token("first")
        # No flush() call: the writer thread hands lines to the OS on its own.
        lines = await asyncio.to_thread(
            wait_for, lambda: path.exists() and len(path.read_text().splitlines()) == 2, 5, "the first lines"
        )
        release.set()
        rest = [item async for item in agen]
        assert rest == [E.done()]
        return lines

    assert asyncio.run(main())
    recorder.close()
    assert [r.get("event") for r in recording_lines([path])] == [None, "token", "done", "_end"]
    assert path.stat().st_mode & 0o777 == 0o640


def test_size_rotation_repeats_open_sessions_headers_so_each_file_stands_alone(tmp_path, db_path):
    path = tmp_path / "rec.jsonl"
    plans = {seed: session_items(seed, 40) for seed in range(3)}

    async def main(recorder):
        return await asyncio.gather(*(run(recorder, items, app="a", seed=seed) for seed, items in plans.items()))

    with TraceRecorder(path, max_bytes=3000, flush_interval_s=0.001) as recorder:
        sids = asyncio.run(main(recorder))
        assert recorder.flush()
        assert recorder.stats().rotations >= 2
    files = sorted(tmp_path.glob("rec*.jsonl"))
    assert len(files) >= 3 and path in files
    headers: dict[str, dict] = {}
    for f in files:
        seen: set[str] = set()
        for rec in recording_lines([f]):
            if "session" in rec:
                if rec["session"] in headers:
                    assert rec == headers[rec["session"]]  # a continuation header is the same header
                headers.setdefault(rec["session"], rec)
                seen.add(rec["session"])
            else:
                assert rec["sid"] in seen, f"{f.name}: an event before its session's header"
    everything = sorted((r for r in recording_lines(files) if "sid" in r), key=lambda r: (r["sid"], r["seq"]))
    for sid, (seed, items) in zip(sids, plans.items()):
        mine = [r for r in everything if r["sid"] == sid]
        assert [r["seq"] for r in mine] == list(range(1, len(items) + 2))
        assert [(r["event"], r["data"]) for r in mine[:-1]] == parsed(items)
        assert headers[sid]["attrs"] == {"app": "a", "seed": seed}
    rows = ingested_sessions(files, db_path)
    for sid in sids:
        assert (rows[sid]["outcome"], rows[sid]["end_reason"], rows[sid]["attribution"]) == ("done", "done", "exact")
        assert rows[sid]["event_count"] == len(plans[list(plans)[sids.index(sid)]])


def test_time_rotation_in_a_directory_gives_per_process_files(tmp_path):
    directory = tmp_path / "traces"
    directory.mkdir()
    recorder = TraceRecorder(directory, rotate_every_s=0.05, flush_interval_s=0.01, prefix="api")
    release = asyncio.Event()

    async def long_session():
        yield E.token("a")
        await release.wait()
        yield E.done()

    async def main():
        agen = recorder.record(long_session())
        await agen.__anext__()
        await asyncio.to_thread(wait_for, lambda: len(list(directory.iterdir())) >= 2, 10, "a time rotation")
        release.set()
        return [item async for item in agen]

    asyncio.run(main())
    recorder.close()
    files = sorted(directory.iterdir())
    assert all(f.name.startswith("api-") and f"-{os.getpid()}-" in f.name and f.suffix == ".jsonl" for f in files)
    # They hold prompts and tokens: no access for other users, whatever the umask allows.
    assert all(f.stat().st_mode & 0o007 == 0 for f in files)
    # The second file opens with the continuation header of the session still running.
    first, second = recording_lines([files[0]]), recording_lines([files[1]])
    assert "session" in second[0] and second[0] == first[0]
    sid = first[0]["session"]
    assert [r["event"] for r in recording_lines(files) if r.get("sid") == sid] == ["token", "done", "_end"]


def test_redaction_keeps_lengths_and_drops_content(tmp_path, db_path):
    path = tmp_path / "rec.jsonl"
    items = session_items(1, 5)
    with TraceRecorder(path, redact=keep_lengths) as recorder:
        sid = asyncio.run(run(recorder, items))
        sid_fail = asyncio.run(run(recorder, session_items(2, 2, done=False), fail=True))
    text = path.read_text()
    assert "secret" not in text and "boom" not in text
    recorded = sessions_in([path])
    tokens = [d["text"] for e, d in recorded[sid]["events"] if e == "token"]
    assert tokens == ["*" * len(f"secret words 1-{i}") for i in range(5)]
    assert recorded[sid_fail]["end"] == {"reason": "exception", "type": "ValueError", "message": "****"}
    rows = ingested_sessions([path], db_path)
    assert rows[sid]["token_chars"] == sum(len(f"secret words 1-{i}") for i in range(5))


def test_a_redactor_that_raises_never_writes_unredacted_content(tmp_path):
    def broken(event, data):
        raise KeyError("oops")

    path = tmp_path / "rec.jsonl"
    with TraceRecorder(path, redact=broken) as recorder:
        asyncio.run(run(recorder, session_items(1, 3)))
        assert recorder.flush()
        assert recorder.stats().redaction_errors == 3 + 3 + 1 + 1  # tool calls + tokens + done + _end
    assert "secret" not in path.read_text()


def test_sampling_drops_successes_but_never_failures(tmp_path, db_path):
    path = tmp_path / "rec.jsonl"
    with TraceRecorder(path, sample=0.0) as recorder:
        ok = asyncio.run(run(recorder, session_items(1, 3)))
        no_done = asyncio.run(run(recorder, session_items(2, 3, done=False)))
        crashed = asyncio.run(run(recorder, session_items(3, 3, done=False), fail=True))
        assert recorder.flush()
        stats = recorder.stats()
    recorded = sessions_in([path])
    assert ok not in recorded
    assert recorded[no_done]["events"] == parsed(session_items(2, 3, done=False))
    assert recorded[crashed]["end"]["reason"] == "exception"
    assert (stats.sessions, stats.sessions_written, stats.sessions_sampled_out) == (3, 2, 1)
    rows = ingested_sessions([path], db_path)
    assert {rows[no_done]["end_reason"], rows[crashed]["end_reason"]} == {"returned_without_done", "exception"}


def test_sampling_decision_is_deterministic_and_monotonic():
    ids = [str(uuid.uuid4()) for _ in range(2000)]
    kept = {rate: {i for i in ids if sampled_in(i, rate)} for rate in (0.0, 0.1, 0.5, 1.0)}
    assert kept[0.0] == set() and kept[1.0] == set(ids)
    assert kept[0.1] <= kept[0.5]
    assert 0 < len(kept[0.1]) < len(kept[0.5]) < len(ids)
    assert all(sampled_in(i, 0.5) == (i in kept[0.5]) for i in ids)
    with pytest.raises(UsageError):
        TraceRecorder(os.devnull, sample=1.5)


def test_close_writes_open_sessions_as_cancelled(tmp_path, db_path):
    path = tmp_path / "rec.jsonl"
    recorder = TraceRecorder(path)
    never = asyncio.Event()

    async def hanging():
        yield E.token("still thinking")
        await never.wait()

    async def main():
        agen = recorder.record(hanging())
        await agen.__anext__()
        recorder.close()  # the server shuts down with the session in flight
        await agen.aclose()

    asyncio.run(main())
    sid = next(iter(sessions_in([path])))
    assert sessions_in([path])[sid]["end"] == {"reason": "cancelled", "detail": "recorder closed"}
    row = ingested_sessions([path], db_path)[sid]
    assert (row["outcome"], row["end_reason"]) == ("synthetic_done", "cancelled")
