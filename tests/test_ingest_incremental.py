"""Incremental, idempotent and crash-safe: a run's cost follows the new bytes, and kill -9 is harmless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent_stream_trace.ingest.cli import format_report
from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
from ingest_support import dump, event, header, ingest_in_runs, new_sid, rows, v1_session, write


def test_rerun_over_the_same_files_adds_nothing(upstream_sequential, upstream_concurrent, db_path):
    first = ingest([upstream_sequential, upstream_concurrent], IngestOptions(db=db_path, open_window=0))
    before = dump(db_path)
    again = ingest([upstream_sequential, upstream_concurrent], IngestOptions(db=db_path, open_window=0))
    assert first.events > 0
    assert (again.lines, again.events, again.files_unchanged, again.sessions_new) == (0, 0, 2, 0)
    assert dump(db_path) == before


def test_appended_lines_are_picked_up_and_an_open_session_becomes_done(tmp_path, db_path):
    sid = new_sid()
    path = tmp_path / "live.jsonl"
    write(path, [header(sid), event(0.1, "token", {"text": "Hel"}, sid=sid, seq=1)])
    now = time.time()
    ingest([path], IngestOptions(db=db_path, now=now))
    assert rows(db_path, "SELECT outcome, end_reason, event_count FROM sessions") == [("open", None, 1)]

    write(path, [event(0.2, "token", {"text": "lo"}, sid=sid, seq=2), event(0.3, "done", {"model": "m"}, sid=sid, seq=3),
                 event(0.3, "_end", {"reason": "done"}, sid=sid, seq=4)], mode="a")
    report = ingest([path], IngestOptions(db=db_path, now=now))
    assert (report.lines, report.events, report.sessions_updated) == (3, 3, 1)
    assert rows(db_path, "SELECT outcome, end_reason, event_count, token_chars, model FROM sessions") == [
        ("done", "done", 3, 5, "m")]


def test_a_run_counts_new_and_updated_sessions_whichever_key_it_continues(tmp_path, db_path):
    # A run whose sessions all got their keys in it skips looking for their stored rows
    # (sessions.compute_rows): one that continues the session with the highest key must not.
    path, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first, second, third = new_sid(), new_sid(), new_sid()
    write(path, [header(first), event(0.1, "token", {"text": "a"}, sid=first, seq=1)])
    now = time.time()
    report = ingest([path], IngestOptions(db=db_path, now=now))
    assert (report.sessions_new, report.sessions_updated) == (1, 0)

    write(path, [event(0.2, "token", {"text": "b"}, sid=first, seq=2), header(second),
                 event(0.1, "token", {"text": "c"}, sid=second, seq=1)], mode="a")
    report = ingest([path], IngestOptions(db=db_path, now=now))
    assert (report.sessions_new, report.sessions_updated) == (1, 1)

    write(other, [header(third), event(0.1, "token", {"text": "d"}, sid=third, seq=1)])
    report = ingest([path, other], IngestOptions(db=db_path, now=now))
    assert (report.sessions_new, report.sessions_updated, report.files_unchanged) == (1, 0, 1)
    assert rows(db_path, "SELECT session_id, event_count FROM sessions ORDER BY session_id") == sorted(
        [(first, 2), (second, 1), (third, 1)])


def test_a_header_appended_later_closes_the_v0_session_before_it_not_a_v1_one(tmp_path, db_path):
    # In a sequential v0 file a later header ends the session before it, even when the header
    # arrives in a later run; a v1 session is attributed by sid and ends only by its own lines.
    v0, v1 = tmp_path / "v0.jsonl", tmp_path / "v1.jsonl"
    a0, b0, a1, b1 = new_sid(), new_sid(), new_sid(), new_sid()
    write(v0, [header(a0, v1=False), event(0.1, "token", {"text": "x"})])
    write(v1, [header(a1), event(0.1, "token", {"text": "x"}, sid=a1, seq=1)])
    now = time.time()
    ingest([v0, v1], IngestOptions(db=db_path, now=now))
    assert rows(db_path, "SELECT outcome FROM sessions") == [("open",), ("open",)]

    write(v0, [header(b0, v1=False), event(0.1, "token", {"text": "y"})], mode="a")
    write(v1, [header(b1), event(0.1, "token", {"text": "y"}, sid=b1, seq=1)], mode="a")
    ingest([v0, v1], IngestOptions(db=db_path, now=now))
    outcomes = dict(rows(db_path, "SELECT session_id, outcome FROM sessions"))
    assert outcomes == {a0: "synthetic_done", b0: "open", a1: "open", b1: "open"}


def test_a_header_appended_after_an_invalid_one_still_closes_the_v0_session_before_them(tmp_path, db_path):
    # An invalid header ends positional attribution, not the session above it: the valid header
    # after it closes that session, whether it comes in the same run or a later one.
    path = tmp_path / "v0.jsonl"
    a, b = new_sid(), new_sid()
    write(path, [header(a, v1=False), event(0.1, "token", {"text": "x"}), header("not-a-uuid", v1=False)])
    now = time.time()
    ingest([path], IngestOptions(db=db_path, now=now))
    assert rows(db_path, "SELECT outcome FROM sessions") == [("open",)]

    write(path, [header(b, v1=False)], mode="a")
    ingest([path], IngestOptions(db=db_path, now=now))
    assert dict(rows(db_path, "SELECT session_id, outcome FROM sessions")) == {a: "synthetic_done", b: "open"}


def test_open_session_turns_synthetic_once_the_file_is_idle_past_the_window(tmp_path, db_path):
    sid = new_sid()
    path = write(tmp_path / "crashed.jsonl", [header(sid), event(0.1, "token", {"text": "x"}, sid=sid, seq=1)])
    mtime = path.stat().st_mtime
    ingest([path], IngestOptions(db=db_path, open_window=300, now=mtime + 10))
    assert rows(db_path, "SELECT outcome FROM sessions") == [("open",)]
    report = ingest([path], IngestOptions(db=db_path, open_window=300, now=mtime + 301))
    assert report.lines == 0  # no new bytes, yet the row changes
    assert rows(db_path, "SELECT outcome, end_reason FROM sessions") == [("synthetic_done", "no_end_record")]


def test_a_run_over_other_paths_judges_a_quiet_file_by_its_mtime_now(tmp_path, db_path):
    # Two cron jobs into one database: a run over other.jsonl must not close the open session
    # of a file written since the run that read it, nor keep it open once it is quiet.
    sid = new_sid()
    (tmp_path / "live").mkdir()
    live = write(tmp_path / "live" / "s.jsonl", [header(sid), event(0.1, "token", {"text": "a"}, sid=sid, seq=1)])
    other = write(tmp_path / "other.jsonl", v1_session(new_sid(), [(0.1, "done", {})]))
    t0 = live.stat().st_mtime
    ingest([live], IngestOptions(db=db_path, open_window=300, now=t0 + 10))
    os.utime(live, (t0 + 1000, t0 + 1000))  # written again since
    ingest([other], IngestOptions(db=db_path, open_window=300, now=t0 + 1100))
    outcome = "SELECT outcome FROM sessions WHERE session_id = ?"
    assert rows(db_path, outcome, [sid]) == [("open",)]
    ingest([other], IngestOptions(db=db_path, open_window=300, now=t0 + 1400))
    assert rows(db_path, outcome, [sid]) == [("synthetic_done",)]


def test_partial_last_line_waits_inside_the_window_then_becomes_a_reject(tmp_path, db_path):
    sid = new_sid()
    path = tmp_path / "writing.jsonl"
    write(path, [header(sid), event(0.1, "token", {"text": "a"}, sid=sid, seq=1), '{"t": 0.2, "event": "tok'],
          newline_at_end=False)
    mtime = path.stat().st_mtime
    first = ingest([path], IngestOptions(db=db_path, now=mtime + 1))
    assert (first.lines, first.rejected) == (2, 0)  # the partial line is left for later
    second = ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    assert second.lines == 1
    assert rows(db_path, "SELECT line_no, reason FROM rejects") == [
        (3, "truncated: last line has no newline and is not complete JSON")]


@pytest.mark.parametrize("tail", ["cut JSON", "whole JSON"])
def test_a_last_line_read_as_final_is_read_again_if_the_writer_finishes_it(tmp_path, db_path, tail):
    # The file went quiet past the window with a line half written (a reject) or whole but
    # without its newline (an event); then the writer came back. The line is read again in its
    # place, and every line keeps its number: the database a run over the finished file gives.
    a, b = new_sid(), new_sid()
    done = event(0.2, "done", {})
    cut = 10 if tail == "cut JSON" else len(done)
    path = write(tmp_path / "paused.jsonl", [header(a, v1=False), event(0.1, "token", {"text": "x"}), done[:cut]],
                 newline_at_end=False)
    mtime = path.stat().st_mtime
    first = ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    assert (first.rejected, first.events) == ((1, 1) if tail == "cut JSON" else (0, 2))
    write(path, [done[cut:], header(b, v1=False), event(0.1, "done", {})], mode="a")
    ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    clean = tmp_path / "clean.duckdb"
    report = ingest([path], IngestOptions(db=clean, now=mtime + 1000))
    assert (report.lines, report.rejected) == (5, 0)
    assert dump(db_path) == dump(clean)


def test_a_run_killed_after_storing_a_cut_last_line_stores_its_reject_once(tmp_path, db_path, monkeypatch):
    from agent_stream_trace.ingest.pipeline import Ingester

    sid = new_sid()
    path = write(tmp_path / "cut.jsonl", [header(sid), event(0.1, "token", {"text": "x"}, sid=sid, seq=1),
                                           '{"t": 0.2, "ev'], newline_at_end=False)
    store_last = Ingester._store_last

    def killed(*args, **kwargs):  # the batches are committed; the run dies before its last commit
        raise KeyboardInterrupt

    monkeypatch.setattr(Ingester, "_store_last", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest([path], IngestOptions(db=db_path, open_window=0, batch_bytes=1))
    assert rows(db_path, "SELECT count(*) FROM rejects") == [(1,)]  # stored with its batch
    monkeypatch.setattr(Ingester, "_store_last", store_last)
    ingest([path], IngestOptions(db=db_path, open_window=0, batch_bytes=1))
    clean = tmp_path / "clean.duckdb"
    ingest([path], IngestOptions(db=clean, open_window=0))
    assert dump(db_path) == dump(clean)


def test_a_final_last_line_of_invalid_utf8_keeps_every_line_number_and_reject(tmp_path, db_path):
    sid = new_sid()
    path = tmp_path / "bad-end.jsonl"
    path.write_bytes((header(sid, v1=False) + "\nnot json\n").encode() + b"\xff")
    mtime = path.stat().st_mtime
    ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    reasons = "SELECT line_no, reason FROM rejects ORDER BY 1"
    assert [(n, r.split(" at ")[0]) for n, r in rows(db_path, reasons)] == [(2, "invalid JSON"), (3, "invalid UTF-8")]
    os.utime(path, (mtime + 10, mtime + 10))  # touched inside the window: the end is not read again yet
    ingest([path], IngestOptions(db=db_path, now=mtime + 20))
    assert len(rows(db_path, reasons)) == 2  # nothing lost meanwhile
    with open(path, "ab") as f:
        f.write(b"\n" + event(0.1, "done", {}).encode() + b"\n")
    ingest([path], IngestOptions(db=db_path, now=path.stat().st_mtime + 1000))
    clean = tmp_path / "clean.duckdb"
    ingest([path], IngestOptions(db=clean, now=path.stat().st_mtime + 1000))
    assert dump(db_path) == dump(clean)


def test_a_cut_gzip_end_read_as_final_is_read_again_when_the_member_is_finished(tmp_path, db_path):
    import gzip
    import zlib

    a, b = new_sid(), new_sid()
    member1 = gzip.compress(("\n".join(v1_session(a, [(0.1, "done", {})])) + "\n").encode())
    writer = zlib.compressobj(wbits=31)
    flushed = writer.compress(("\n".join(v1_session(b, [(0.1, "done", {})])) + "\n").encode()) + writer.flush(zlib.Z_SYNC_FLUSH)
    path = tmp_path / "paused.jsonl.gz"
    path.write_bytes(member1 + flushed)  # the second member's lines are all there, its end is not
    mtime = path.stat().st_mtime
    ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    assert rows(db_path, "SELECT count(*) FROM rejects WHERE reason LIKE 'corrupt gzip%'") == [(1,)]
    with open(path, "ab") as f:
        f.write(writer.flush())  # the writer closes the member after all
    ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    clean = tmp_path / "clean.duckdb"
    report = ingest([path], IngestOptions(db=clean, now=mtime + 1000))
    assert report.rejected == 0
    assert dump(db_path) == dump(clean)


def test_partial_line_completed_by_the_writer_is_read_as_one_line(tmp_path, db_path):
    sid = new_sid()
    path = tmp_path / "writing.jsonl"
    done = event(0.2, "done", {}, sid=sid, seq=2)
    write(path, [header(sid), event(0.1, "token", {"text": "a"}, sid=sid, seq=1), done[:10]], newline_at_end=False)
    now = path.stat().st_mtime + 1
    ingest([path], IngestOptions(db=db_path, now=now))
    with open(path, "a") as f:
        f.write(done[10:] + "\n")
    ingest([path], IngestOptions(db=db_path, now=now))
    assert rows(db_path, "SELECT count(*) FROM rejects") == [(0,)]
    assert rows(db_path, "SELECT outcome FROM sessions") == [("done",)]


def test_same_session_in_two_files_is_stored_once(tmp_path, db_path):
    sid = new_sid()
    lines = v1_session(sid, [(0.1, "token", {"text": "hi"}), (0.2, "done", {})])
    a = write(tmp_path / "a.jsonl", lines)
    b = write(tmp_path / "b.jsonl", lines)
    write(tmp_path / "c.jsonl", lines[:2])  # a partial copy
    report = ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    assert report.duplicates == 3 + 1  # b repeats a's three events, c its first one
    assert rows(db_path, "SELECT count(*), min(source_file) FROM sessions") == [(1, str(a.resolve()))]
    assert rows(db_path, "SELECT count(*) FROM events") == [(3,)]
    assert b.exists()


def test_a_v1_line_above_its_session_header_is_a_reject_however_the_file_is_read(tmp_path):
    # A run that reads the file only up to such a line cannot know a header follows: so a line
    # is attributed by sid only under its session's header, in every run and every batch size.
    a, b = new_sid(), new_sid()
    early = [event(0.1, "token", {"text": "x"}, sid=a, seq=1), event(0.1, "token", {"text": "y"}, sid=b, seq=1)]
    rest = [header(a), event(0.2, "done", {}, sid=a, seq=2), header(b),
            event(0.2, "token", {"text": "z"}, sid=b, seq=2), event(0.3, "done", {}, sid=b, seq=3)]
    path = tmp_path / "late-header.jsonl"
    dbs = {name: tmp_path / f"{name}.duckdb" for name in ("whole", "runs", "small")}
    write(path, early)
    ingest([path], IngestOptions(db=dbs["runs"], open_window=0))
    write(path, rest, mode="a")
    report = ingest([path], IngestOptions(db=dbs["runs"], open_window=0))
    ingest([path], IngestOptions(db=dbs["small"], open_window=0, batch_bytes=100))
    report = ingest([path], IngestOptions(db=dbs["whole"], open_window=0))
    assert (report.headers, report.events, report.rejected) == (2, 3, 2)
    assert rows(dbs["whole"], "SELECT line_no, reason FROM rejects ORDER BY 1") == [
        (1, 'event: no session header for its "sid" above it in this file'),
        (2, 'event: no session header for its "sid" above it in this file')]
    assert rows(dbs["whole"], "SELECT session_id, outcome, event_count FROM sessions ORDER BY event_count") == [
        (a, "done", 1), (b, "done", 2)]
    assert dump(dbs["runs"]) == dump(dbs["whole"]) == dump(dbs["small"])


def test_a_replaced_file_is_read_again_from_the_start(tmp_path, db_path):
    s1, s2 = new_sid(), new_sid()
    path = write(tmp_path / "rotated.jsonl", v1_session(s1, [(0.1, "done", {})]) + ["{bad"])
    ingest([path], IngestOptions(db=db_path, open_window=0))
    write(path, v1_session(s2, [(0.1, "done", {})]))  # rotated: a new file under the old name
    ingest([path], IngestOptions(db=db_path, open_window=0))
    assert sorted(r[0] for r in rows(db_path, "SELECT session_id FROM sessions")) == sorted([s1, s2])
    assert rows(db_path, "SELECT count(*) FROM rejects") == [(0,)]  # the old file's rejects went with it


def test_a_file_replaced_while_being_written_keeps_the_old_recording_s_events(tmp_path, db_path):
    # A replaced file is read again from its start, and what its old content gave stays. A run
    # that leaves the new content's partial last line for later must not touch the old
    # content's lines past it (a first try at undoing a re-read end deleted them).
    s1, s2 = new_sid(), new_sid()
    path = write(tmp_path / "rotated.jsonl", v1_session(s1, [(0.1 * i, "token", {"text": "x"}) for i in range(1, 8)]))
    ingest([path], IngestOptions(db=db_path, open_window=0))
    new = v1_session(s2, [(0.1, "token", {"text": "y"}), (0.2, "token", {"text": "z"})])
    write(path, new[:-1] + [new[-1][:10]], newline_at_end=False)  # replaced, its writer mid-line
    now = path.stat().st_mtime + 1
    ingest([path], IngestOptions(db=db_path, now=now))
    write(path, new)
    ingest([path], IngestOptions(db=db_path, now=now))
    assert dict(rows(db_path, "SELECT session_id, event_count FROM sessions")) == {s1: 7, s2: 2}
    assert rows(db_path, "SELECT count(*) FROM events WHERE session_id = ?", [s1]) == [(8,)]  # with its `_end`


def test_a_file_read_again_from_its_start_keeps_one_header_per_session(tmp_path, db_path):
    sid = new_sid()
    lines = v1_session(sid, [(0.1, "token", {"text": "hi"}), (0.2, "token", {"text": "!"})], end=None)
    path = write(tmp_path / "cut.jsonl", lines)
    ingest([path], IngestOptions(db=db_path, open_window=0))
    write(path, lines[:2])  # cut back: read again from the start, its header included
    report = ingest([path], IngestOptions(db=db_path, open_window=0))
    assert (report.headers, report.duplicates) == (1, 1)
    assert rows(db_path, "SELECT count(*) FROM _session_headers") == [(1,)]
    assert rows(db_path, "SELECT count(*), sum(event_count) FROM sessions") == [(1, 2)]


def test_a_file_that_vanishes_while_the_run_reads_is_read_next_run(tmp_path, db_path, monkeypatch):
    import agent_stream_trace.ingest.pipeline as pipeline

    traces = tmp_path / "traces"
    traces.mkdir()
    files = {name: v1_session(new_sid(), [(0.1, "token", {"text": name}), (0.2, "done", {})]) for name in ("a", "b")}
    for name, lines in files.items():
        write(traces / f"{name}.jsonl", lines)
    read_blocks = pipeline.read_blocks

    def vanishing(source, *args, **kwargs):  # b.jsonl is rotated away after it was listed
        if source.name.endswith("b.jsonl") and source.path.exists():
            source.path.unlink()
        return read_blocks(source, *args, **kwargs)

    monkeypatch.setattr(pipeline, "read_blocks", vanishing)
    report = ingest([traces], IngestOptions(db=db_path, open_window=0))
    assert [entry.split(": ", 1)[0] for entry in report.unread] == [str((traces / "b.jsonl").resolve())]
    summary = format_report(report, str(db_path))
    assert "unread    1 file(s) vanished or unreadable" in summary and "b.jsonl: No such file" in summary
    assert rows(db_path, "SELECT count(*) FROM sessions") == [(1,)]
    monkeypatch.setattr(pipeline, "read_blocks", read_blocks)
    write(traces / "b.jsonl", files["b"])  # back again
    report = ingest([traces], IngestOptions(db=db_path, open_window=0))
    assert report.unread == [] and report.files_unchanged == 1
    clean = tmp_path / "clean.duckdb"
    ingest([traces], IngestOptions(db=clean, open_window=0))
    assert dump(db_path) == dump(clean)
    # gone even before its size was looked at: unread too, not "unchanged"
    resolve_sources = pipeline.resolve_sources

    def listed_then_gone(paths):
        sources = resolve_sources(paths)
        (traces / "b.jsonl").unlink()
        return sources

    monkeypatch.setattr(pipeline, "resolve_sources", listed_then_gone)
    report = ingest([traces], IngestOptions(db=db_path, open_window=0))
    assert (report.files_unchanged, len(report.unread)) == (1, 1) and "b.jsonl: No such file" in report.unread[0]


def test_stdin_is_read_whole(upstream_sequential, db_path):
    proc = subprocess.run(
        [sys.executable, "-m", "agent_stream_trace.ingest.cli", "-", "--db", str(db_path), "--open-window", "0"],
        input=upstream_sequential.read_bytes(), capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert rows(db_path, "SELECT count(*), min(source_file) FROM sessions") == [(25, "<stdin>")]


def test_a_gzip_stream_on_stdin_is_decompressed(upstream_sequential, tmp_path):
    """`agent-stream-ingest - < old.jsonl.gz` gives what `zcat old.jsonl.gz | ...` gives (read
    as text, its bytes were all rejects); a cut one keeps what came before the cut."""
    import gzip

    packed = gzip.compress(upstream_sequential.read_bytes())
    results = []
    for name, data in (("plain", upstream_sequential.read_bytes()), ("gz", packed), ("cut", packed[: len(packed) // 2])):
        db = tmp_path / f"{name}.duckdb"
        proc = subprocess.run(
            [sys.executable, "-m", "agent_stream_trace.ingest.cli", "-", "--db", str(db), "--open-window", "0"],
            input=data, capture_output=True,
        )
        assert proc.returncode == 0, proc.stderr
        results.append((rows(db, "SELECT session_id, outcome, event_count FROM sessions ORDER BY ALL"),
                        rows(db, "SELECT reason FROM rejects")))
    (plain, plain_rejects), (gz, gz_rejects), (cut, cut_rejects) = results
    assert gz == plain and gz_rejects == plain_rejects == []
    assert 0 < len(cut) < len(plain) and cut_rejects == [("corrupt gzip: compressed stream ends early (truncated file)",)]


def test_the_same_recording_piped_in_twice_adds_nothing(tmp_path, db_path):
    sid = new_sid()
    recording = "\n".join([header(sid), "{oops", event(0.1, "done", {}, sid=sid, seq=1), "[1]"]) + "\n"
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "agent_stream_trace.ingest.cli", "-", "--db", str(db_path), "--open-window", "0"],
            input=recording.encode(), capture_output=True,
        )
        assert proc.returncode == 0, proc.stderr
    clean = tmp_path / "clean.duckdb"
    path = write(tmp_path / "a.jsonl", recording.splitlines())
    ingest([path], IngestOptions(db=clean, open_window=0))
    assert rows(db_path, "SELECT line_no, reason FROM rejects ORDER BY 1") == rows(clean, "SELECT line_no, reason FROM rejects ORDER BY 1")
    assert rows(db_path, "SELECT count(*) FROM events") == rows(clean, "SELECT count(*) FROM events") == [(1,)]


def test_stored_events_keep_their_session_and_file_across_runs(tmp_path, db_path, upstream_sequential):
    """`events` is a view over `_events`, which stores each row's session and file as keys
    (migration m013): over runs that add sessions, files, a second copy of a session, a session
    that grows, a replaced file and stdin, each (session, side) and each path keeps one key, and
    every stored row is seen through the view with its own session and file."""
    s1, s2, s3 = new_sid(), new_sid(), new_sid()
    a = write(tmp_path / "a.jsonl", v1_session(s1, [(0.1, "token", {"text": "hi"})], end=None))
    ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    write(a, [event(0.2, "done", {}, sid=s1, seq=2)], mode="a")  # s1 grows: its key is found again
    b = write(tmp_path / "b.jsonl", v1_session(s1, [(0.1, "token", {"text": "hi"}), (0.2, "done", {})])
              + v1_session(s2, [(0.3, "done", {})]))
    ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    write(a, v1_session(s3, [(0.1, "done", {})]))  # a replaced under the same name
    ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    proc = subprocess.run(
        [sys.executable, "-m", "agent_stream_trace.ingest.cli", "-", "--db", str(db_path), "--open-window", "0"],
        input=upstream_sequential.read_bytes(), capture_output=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr

    assert rows(db_path, "SELECT count(*), count(DISTINCT k), count(DISTINCT (session_id, side)) FROM _session_keys") == [(28, 28, 28)]
    assert rows(db_path, "SELECT count(*), count(DISTINCT file_id), count(DISTINCT path) FROM _source_files") == [(3, 3, 3)]
    assert rows(db_path, "SELECT count(*) FROM _events") == rows(db_path, "SELECT count(*) FROM events")
    got = rows(db_path, "SELECT session_id, seq, event, source_file FROM events WHERE session_id IN (?, ?, ?) ORDER BY ALL",
               [s1, s2, s3])
    a, b = str(a.resolve()), str(b.resolve())
    assert got == sorted([(s1, 1, "token", a), (s1, 2, "done", a), (s1, 3, "_end", b),  # seq 3 only b holds
                          (s2, 1, "done", b), (s2, 2, "_end", b), (s3, 1, "done", a), (s3, 2, "_end", a)])
    assert rows(db_path, "SELECT count(*) FROM events WHERE source_file = '<stdin>'")[0][0] > 0


KILL_CHILD = textwrap.dedent("""
    import sys
    from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
    def progress(done, total):
        print(done, flush=True)
    ingest([sys.argv[1]], IngestOptions(db=sys.argv[2], open_window=0, batch_bytes=int(sys.argv[3]), progress=progress))
    print("finished", flush=True)
""")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from agent_stream_trace.simulate.generator import SimulationOptions, simulate

    out = tmp_path_factory.mktemp("corpus")
    simulate(SimulationOptions(sessions=400, seed=7, out=out, files=3, synthetic_done_rate=0.2))
    simulate(SimulationOptions(sessions=150, seed=8, out=out / "gz", files=1, gzip=True))  # killed mid-.gz too
    (out / "broken.jsonl").write_bytes(b'{"t": 1}\n\xff\xfe\n' + (Path(__file__).parent / "fixtures/upstream/concurrent.jsonl").read_bytes())
    return out


def test_progress_counts_stored_bytes_from_0_to_the_total(corpus, tmp_path):
    calls = []
    plain = [p for p in corpus.glob("*.jsonl")]  # plain files: their total is exact
    ingest(plain, IngestOptions(db=tmp_path / "p.duckdb", open_window=0, batch_bytes=256 << 10,
                                progress=lambda done, total: calls.append((done, total))))
    total = sum(p.stat().st_size for p in plain)
    dones = [done for done, _ in calls]
    assert {t for _, t in calls} == {total} and dones[0] == 0 and dones[-1] == total
    assert dones == sorted(dones) and len(set(dones)) > 5  # step by step, one a batch
    # a .gz: its blocks count decompressed bytes, so no total is given, and the count only grows
    calls.clear()
    ingest([corpus / "gz"], IngestOptions(db=tmp_path / "gz.duckdb", open_window=0, batch_bytes=256 << 10,
                                          progress=lambda done, total: calls.append((done, total))))
    dones = [done for done, _ in calls]
    assert {t for _, t in calls} == {0} and dones == sorted(dones) and dones[-1] > sum(
        p.stat().st_size for p in (corpus / "gz").glob("*.gz"))


@pytest.mark.parametrize("kill_after_reports", [1, 3, 6])
def test_kill_9_at_any_moment_then_rerun_gives_the_clean_database(corpus, tmp_path, kill_after_reports):
    clean = tmp_path / "clean.duckdb"
    ingest([corpus], IngestOptions(db=clean, open_window=0, batch_bytes=256 << 10))

    killed = tmp_path / "killed.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(corpus), str(killed), str(256 << 10)],
        stdout=subprocess.PIPE, text=True,
    )
    seen = 0
    assert child.stdout is not None
    for line in child.stdout:  # each line: a block was read; the kill lands wherever the child is
        seen += 1
        if seen >= kill_after_reports or line.startswith("finished"):
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    ingest([corpus], IngestOptions(db=killed, open_window=0, batch_bytes=256 << 10))
    got, want = dump(killed), dump(clean)
    for table in want:
        assert set(got[table]) ^ set(want[table]) == set(), table
    assert got == want


def test_gzip_still_being_written_waits_then_its_cut_end_is_a_reject(tmp_path, db_path):
    import gzip

    first, second = new_sid(), new_sid()
    member1 = gzip.compress(("\n".join(v1_session(first, [(0.1, "done", {})])) + "\n").encode())
    member2 = gzip.compress(("\n".join(v1_session(second, [(0.1, "done", {})])) + "\n").encode())
    path = tmp_path / "rotating.jsonl.gz"
    path.write_bytes(member1 + member2[:-6])  # the second member is cut short
    mtime = path.stat().st_mtime
    inside = ingest([path], IngestOptions(db=db_path, now=mtime + 1))
    assert inside.rejected == 0 and inside.headers >= 1  # the writer may still be at it
    after = ingest([path], IngestOptions(db=db_path, now=mtime + 1000))
    assert after.rejected == 1 and after.events == 0  # nothing read twice
    assert rows(db_path, "SELECT count(*) FROM _session_headers") == [(inside.headers,)]
    assert rows(db_path, "SELECT reason FROM rejects")[0][0].startswith("corrupt gzip: compressed stream ends early")


def test_server_and_client_recordings_of_one_session_stay_apart(tmp_path, db_path):
    sid = new_sid()
    server = v1_session(sid, [(0.1, "token", {"text": "abc"}), (0.2, "done", {})])
    client = [header(sid, side="client")] + [event(0.15, "token", {"text": "abc"}, sid=sid, seq=1)]
    write(tmp_path / "server.jsonl", server)
    write(tmp_path / "client.jsonl", client)
    ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    assert rows(db_path, "SELECT side, outcome, event_count, token_chars FROM sessions ORDER BY side") == [
        ("client", "synthetic_done", 1, 3), ("server", "done", 2, 3)]


@pytest.mark.parametrize("runs", [1, 2])
def test_both_sides_of_one_session_in_one_file_go_to_the_first_header_s_side(tmp_path, db_path, runs):
    """Lines carry no side: with both sides' headers of one sid in one file (two recorders
    sharing a file), the first header there decides, the same however the file is read."""
    sid = new_sid()
    lines = [header(sid), event(0.1, "token", {"text": "srv"}, sid=sid, seq=1),
             header(sid, side="client"), event(0.2, "token", {"text": "cli"}, sid=sid, seq=2)]
    ingest_in_runs(tmp_path / "both.jsonl", lines, db_path, cut=2 if runs == 2 else None)
    assert rows(db_path, "SELECT side, seq FROM events ORDER BY seq") == [("server", 1), ("server", 2)]
    assert rows(db_path, "SELECT side, event_count FROM sessions ORDER BY side") == [("client", 0), ("server", 2)]


@pytest.mark.parametrize("runs", [1, 2])
def test_a_line_without_sid_under_a_v1_header_is_a_reject_under_a_v0_one_positional(tmp_path, db_path, runs):
    """A v1 writer puts a sid on every line, so a line without one under a v1 header cannot be
    placed: taken by position it got seq = its distance to the header, the seq of a real line
    (here the done, seq 2), which was then dropped as its repeat; and in an interleaved v1 file
    the header above is often another session's. It is a reject, whether the header above it
    came in the same run or an earlier one. Under a v0 header, position is the rule."""
    sid, other, legacy = new_sid(), new_sid(), new_sid()
    lines = [
        header(sid),
        event(0.1, "token", {"text": "ab"}, sid=sid, seq=1),
        event(0.2, "token", {"text": "cde"}),  # line 3
        event(0.3, "done", {}, sid=sid, seq=2),
        header(other),
        event(0.5, "token", {"text": "f"}),  # line 6
        header(legacy, v1=False),
        event(0.6, "token", {"text": "gh"}),  # line 8: seq 1 of `legacy` by position
    ]
    # two runs: the header above line 3 is stored by the first
    ingest_in_runs(tmp_path / "mixed.jsonl", lines, db_path, cut=2 if runs == 2 else None)
    assert rows(db_path, "SELECT line_no, reason FROM rejects ORDER BY line_no") == [
        (3, 'event: missing field "sid" (the session header above it, line 1, is v1)'),
        (6, 'event: missing field "sid" (the session header above it, line 5, is v1)')]
    assert rows(db_path, "SELECT session_id, seq, event FROM events ORDER BY line_no") == [
        (sid, 1, "token"), (sid, 2, "done"), (legacy, 1, "token")]
    sessions = {r[0]: r[1:] for r in rows(db_path, "SELECT session_id, outcome, attribution, event_count, token_chars FROM sessions")}
    assert sessions[sid] == ("done", "exact", 2, 2)
    assert sessions[legacy] == ("synthetic_done", "positional", 1, 2)


def test_batch_size_never_changes_the_database(corpus, tmp_path):
    # Session summaries are merged batch by batch (ingest/stats.py): with 128 KB batches many
    # sessions are split across batches. Copies of the files come first with every third line
    # missing, so when the whole file follows, its new events fall among stored ones and those
    # sessions are summarised again from `events`; partial copies that come last add only
    # duplicates. The result must be the database one big batch gives.
    copies = tmp_path / "copies"
    copies.mkdir()
    for i, f in enumerate(sorted(corpus.glob("*.jsonl"))):
        lines = f.read_bytes().splitlines(keepends=True)
        sparse = [line for n, line in enumerate(lines) if n % 3 != 1 or b'"session"' in line]
        (copies / f"a-sparse-{i}.jsonl").write_bytes(b"".join(sparse))
        (copies / f"z-partial-{i}.jsonl").write_bytes(b"".join(lines[: len(lines) // 3]))
    whole, small = tmp_path / "whole.duckdb", tmp_path / "small.duckdb"
    ingest([copies, corpus], IngestOptions(db=whole, open_window=0, batch_bytes=64 << 20))
    report = ingest([copies, corpus], IngestOptions(db=small, open_window=0, batch_bytes=128 << 10))
    assert report.duplicates > 0
    assert dump(small) == dump(whole)


def test_both_forms_of_the_batch_summary_give_the_same_database(corpus, tmp_path, monkeypatch):
    # A large batch computes the silences apart from the other aggregates (stats.summarise),
    # a small one in one pass. Every batch is summarised the large way here, over the copies of
    # the test above (repeats dropped and summarised again, stale sessions), and the summaries
    # and the public tables must be those of the one-pass form.
    from agent_stream_trace.ingest import classify

    copies = tmp_path / "copies"
    copies.mkdir()
    for i, f in enumerate(sorted(corpus.glob("*.jsonl"))):
        lines = f.read_bytes().splitlines(keepends=True)
        (copies / f"z-partial-{i}.jsonl").write_bytes(b"".join(lines[: len(lines) // 3]))
    one_pass, apart = tmp_path / "one_pass.duckdb", tmp_path / "apart.duckdb"
    ingest([copies, corpus], IngestOptions(db=one_pass, open_window=0, batch_bytes=128 << 10))
    monkeypatch.setattr(classify, "LARGE_BATCH_BYTES", 0)
    report = ingest([copies, corpus], IngestOptions(db=apart, open_window=0, batch_bytes=128 << 10))
    assert report.duplicates > 0  # BATCH_STATS_LARGE ran too
    # by session: the keys `k` are given out in no set order
    summaries = "SELECT sk.session_id, sk.side, s.* EXCLUDE (k) FROM _session_stats s JOIN _session_keys sk USING (k) ORDER BY 1, 2"
    assert len(rows(apart, summaries)) == rows(apart, "SELECT count(DISTINCT k) FROM _events")[0][0]  # one per session with events
    assert rows(apart, summaries) == rows(one_pass, summaries)
    assert dump(apart) == dump(one_pass)


def test_a_session_summarised_again_later_is_still_checked_for_repeats(tmp_path):
    # New events that land among a session's stored ones make it stale: its summary, max_seq
    # included, is made again from `events` only at the end of the run. Lines of a later batch
    # of the same run that repeat events stored above that old max_seq must still be found.
    sid = new_sid()

    def recording(name: str, seqs: list[int]) -> Path:
        # two-digit seqs and t = seq: every file has the same size, so batches of that size
        # hold exactly one file each
        return write(tmp_path / name, [header(sid)] + [event(float(s), "token", {"text": "x"}, sid=sid, seq=s) for s in seqs])

    a = recording("a.jsonl", [10, 11, 12, 17, 18, 19])
    b = recording("b.jsonl", [13, 14, 15, 16, 20, 21])  # among a's (stale), and above them
    c = recording("c.jsonl", [20, 21, 22, 23, 24, 25])  # 20 and 21 repeat b's
    size = a.stat().st_size
    assert b.stat().st_size == c.stat().st_size == size
    one, per_file = tmp_path / "one.duckdb", tmp_path / "per_file.duckdb"
    ingest([a, b, c], IngestOptions(db=one, open_window=0))
    report = ingest([a, b, c], IngestOptions(db=per_file, open_window=0, batch_bytes=size))
    assert report.duplicates == 2
    assert rows(per_file, "SELECT count(*), count(DISTINCT seq) FROM events") == [(16, 16)]
    assert dump(per_file) == dump(one)


def test_a_database_from_before_session_summaries_goes_on_like_a_clean_one(tmp_path):
    # Databases written before migration m005 have sessions but no per-session summaries; the
    # migration marks every session stale, and the next run summarises them from `events`.
    # m006 then turns the tool events m005 copied from `events` into the fields tool_calls uses.
    sid = new_sid()
    lines = v1_session(sid, [(0.1, "token", {"text": "ab"}), (0.2, "tool_use", {"tool_name": "web", "tool_use_id": "t1"}),
                             (30.0, "tool_result", {"tool_name": "web", "tool_use_id": "t1", "status": "done"}),
                             (30.1, "token", {"text": "cd"}), (30.2, "done", {"model": "m"})])
    old, clean = tmp_path / "old.duckdb", tmp_path / "clean.duckdb"
    path = write(tmp_path / "live.jsonl", lines[:4])  # cut after the tool_use: the seam is the 29.8 s gap
    ingest([path], IngestOptions(db=old, open_window=0))
    import duckdb

    con = duckdb.connect(str(old))
    con.execute("DROP TABLE _session_stats; DROP TABLE _tool_events; DROP TABLE _stale_sessions")
    # ... nor what came after (m006 reshapes m005's tool events, m014 keys all three by session:
    # they run again, after m005)
    con.execute("DELETE FROM _schema_migrations WHERE name IN "
                "('m005_session_stats', 'm006_tool_event_fields', 'm014_summaries_keyed')")
    con.close()
    write(path, lines[4:], mode="a")
    ingest([path], IngestOptions(db=old, open_window=0))
    ingest([path], IngestOptions(db=clean, open_window=0))
    assert dump(old) == dump(clean)
    assert rows(old, "SELECT max_gap_s, tool_calls, orphaned_tools FROM sessions") == [(pytest.approx(29.8), 1, 0)]


# The private tables as they were before m014: keyed by session id and side, not by `k`.
_UNDO_M014 = """
CREATE TABLE _old_stats AS
SELECT k.session_id, k.side, s.* EXCLUDE (k) FROM _session_stats s JOIN _session_keys k USING (k);
DROP TABLE _session_stats;
ALTER TABLE _old_stats RENAME TO _session_stats;
CREATE TABLE _old_tools AS
SELECT k.session_id, k.side, e.* EXCLUDE (k) FROM _tool_events e JOIN _session_keys k USING (k);
DROP TABLE _tool_events;
ALTER TABLE _old_tools RENAME TO _tool_events;
DROP TABLE _stale_sessions;
CREATE TABLE _stale_sessions (session_id VARCHAR NOT NULL, side VARCHAR NOT NULL, PRIMARY KEY (session_id, side));
DELETE FROM _schema_migrations WHERE name = 'm014_summaries_keyed';
"""


def test_a_database_from_before_keyed_summaries_goes_on_like_a_clean_one(tmp_path):
    # m014 moves the summaries, tool events and stale marks under the sessions' keys. A tool
    # call started before it and finished after it pairs up, a session that grows across it
    # merges its summary, and a session left stale is summarised again.
    a, b = new_sid(), new_sid()
    lines_a = v1_session(a, [(0.1, "token", {"text": "ab"}), (0.2, "tool_use", {"tool_name": "web", "tool_use_id": "t1"}),
                             (30.0, "tool_result", {"tool_name": "web", "tool_use_id": "t1", "status": "done"}),
                             (30.1, "token", {"text": "cd"}), (30.2, "done", {"model": "m"})])
    lines_b = v1_session(b, [(0.1, "token", {"text": "xy"}), (0.5, "tool_use", {"tool_name": "sh", "tool_use_id": "t2"}),
                             (1.5, "tool_result", {"tool_name": "sh", "tool_use_id": "t2", "status": "error"}),
                             (2.0, "done", {"model": "m"})])
    old, clean = tmp_path / "old.duckdb", tmp_path / "clean.duckdb"
    path = write(tmp_path / "live.jsonl", lines_b + lines_a[:3])  # a is cut after its tool_use
    ingest([path], IngestOptions(db=old, open_window=0))
    import duckdb

    con = duckdb.connect(str(old))
    con.execute(_UNDO_M014)
    # b's summary is wrong and marked stale: the next run must make it again from b's events
    con.execute("UPDATE _session_stats SET token_chars = 999 WHERE session_id = ?", [b])
    con.execute("INSERT INTO _stale_sessions VALUES (?, 'server')", [b])
    con.close()
    write(path, lines_a[3:], mode="a")
    ingest([path], IngestOptions(db=old, open_window=0))
    ingest([path], IngestOptions(db=clean, open_window=0))
    assert dump(old) == dump(clean)
    assert rows(old, "SELECT session_id, status, latency_ms FROM tool_calls ORDER BY latency_ms") == [
        (b, "error", pytest.approx(1000.0)), (a, "done", pytest.approx(29800.0))]
    assert rows(old, "SELECT max_gap_s FROM sessions WHERE session_id = ?", [a]) == [(pytest.approx(29.8),)]
    summaries = "SELECT k.session_id, s.* EXCLUDE (k) FROM _session_stats s JOIN _session_keys k USING (k) ORDER BY 1"
    assert rows(old, summaries) == rows(clean, summaries)
    assert rows(old, "SELECT count(*) FROM _stale_sessions") == [(0,)]


# The private tables as they were before m015: headers by session id and side, and no key for a
# session without events.
_UNDO_M015 = """
CREATE TABLE _old_headers AS
SELECT k.session_id, k.side, h.* EXCLUDE (k) FROM _session_headers h JOIN _session_keys k USING (k);
DROP TABLE _session_headers;
ALTER TABLE _old_headers RENAME TO _session_headers;
DELETE FROM _session_keys WHERE k NOT IN (SELECT k FROM _events);
DELETE FROM _schema_migrations WHERE name = 'm015_headers_keyed';
-- m016 came after m015: its column goes too, and it runs again
ALTER TABLE _session_keys DROP COLUMN uid;
DELETE FROM _schema_migrations WHERE name = 'm016_session_keys_by_uuid';
"""


def test_a_database_from_before_keyed_headers_goes_on_like_a_clean_one(tmp_path):
    # m015 stores the headers under the sessions' keys and gives a key to every session with a
    # header. Across it: a v0 session is closed by a header appended after it, and a v1 session
    # stored as a header alone (no key before m015) gets its events.
    a, b, c = new_sid(), new_sid(), new_sid()
    v0 = [header(a, v1=False), event(0.1, "token", {"text": "ab"}), event(0.2, "token", {"text": "cd"})]
    v0_later = [header(b, v1=False), event(0.1, "token", {"text": "x"}), event(0.3, "done", {})]
    v1 = v1_session(c, [(0.1, "token", {"text": "hi"}), (0.2, "done", {})])
    old, clean = tmp_path / "old.duckdb", tmp_path / "clean.duckdb"
    v0_path, v1_path = write(tmp_path / "v0.jsonl", v0), write(tmp_path / "v1.jsonl", v1[:1])  # c: its header only
    options = {"open_window": 3600}  # both files are being written: their last sessions stay open
    ingest([tmp_path], IngestOptions(db=old, **options))
    assert rows(old, "SELECT session_id, outcome FROM sessions ORDER BY event_count") == [(c, "open"), (a, "open")]
    import duckdb

    con = duckdb.connect(str(old))
    con.execute(_UNDO_M015)
    assert con.execute("SELECT count(*) FROM _session_keys").fetchall() == [(1,)]  # a's only
    con.close()
    write(v0_path, v0_later, mode="a")
    write(v1_path, v1[1:], mode="a")
    ingest([tmp_path], IngestOptions(db=old, **options))
    ingest([tmp_path], IngestOptions(db=clean, **options))
    assert dump(old) == dump(clean)
    assert rows(old, "SELECT session_id, outcome, event_count FROM sessions ORDER BY session_id = ?, session_id = ?", [c, b]) == [
        (a, "synthetic_done", 2), (b, "done", 2), (c, "done", 2)]
    # every stored header is under a key, one per session
    assert rows(old, "SELECT count(*) FROM _session_headers ANTI JOIN _session_keys USING (k)") == [(0,)]
    assert rows(old, "SELECT count(*), count(DISTINCT k) FROM _session_keys") == [(3, 3)]


def test_a_database_from_before_uuid_keys_goes_on_like_a_clean_one(tmp_path):
    # m016 adds each key's session id as a UUID, which the lookups join on. A session that grows
    # across it must find its key again, not get a second one.
    a, b = new_sid(), new_sid()
    lines_a = v1_session(a, [(0.1, "token", {"text": "ab"}), (0.2, "token", {"text": "cd"}), (0.3, "done", {})])
    old, clean = tmp_path / "old.duckdb", tmp_path / "clean.duckdb"
    path = write(tmp_path / "live.jsonl", lines_a[:2])  # a: its header and first token
    ingest([path], IngestOptions(db=old, open_window=3600))
    import duckdb

    con = duckdb.connect(str(old))
    con.execute("ALTER TABLE _session_keys DROP COLUMN uid;"
                "DELETE FROM _schema_migrations WHERE name = 'm016_session_keys_by_uuid'")
    con.close()
    write(path, lines_a[2:] + v1_session(b, [(0.1, "done", {})]), mode="a")
    ingest([path], IngestOptions(db=old, open_window=3600))
    ingest([path], IngestOptions(db=clean, open_window=3600))
    assert dump(old) == dump(clean)
    assert rows(old, "SELECT count(*), count(DISTINCT k), count(uid) FROM _session_keys") == [(2, 2, 2)]
    assert rows(old, "SELECT session_id, outcome, event_count FROM sessions ORDER BY session_id = ?", [b]) == [
        (a, "done", 3), (b, "done", 1)]  # `_end` records are not events of the stream
