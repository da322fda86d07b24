"""Compaction: off while ingesting, done once the events table is fragmented."""

from __future__ import annotations

from agent_stream_trace.db import connect
from agent_stream_trace.ingest import storage


def row_groups(con) -> int:
    return con.execute(
        "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('_events') WHERE column_id = 0"
    ).fetchone()[0]


def test_small_appends_pile_up_until_one_compaction_merges_them(tmp_path):
    con = connect(tmp_path / "db.duckdb")
    storage.prepare(con)
    for run in range(storage.SLACK_ROW_GROUPS + 8):  # each like a cron run: a few rows, a checkpoint
        con.execute(  # the rows under the view `events` (migration m013)
            "INSERT INTO _events (k, seq, t, event, data) SELECT ?, range, 0.1, 'token', '{}' FROM range(50)", [run]
        )
        con.execute("CHECKPOINT")
    assert row_groups(con) > storage.SLACK_ROW_GROUPS  # nothing was compacted along the way
    assert storage.is_fragmented(con)
    con.close()
    storage.compact(tmp_path / "db.duckdb")
    con = connect(tmp_path / "db.duckdb", read_only=True)
    assert row_groups(con) <= 2 and not storage.is_fragmented(con)
    assert con.execute("SELECT count(*) FROM _events").fetchone() == ((storage.SLACK_ROW_GROUPS + 8) * 50,)
    con.close()


def test_ingest_compacts_when_its_runs_have_fragmented_events(tmp_path, db_path):
    from ingest_support import new_sid, v1_session, write

    from agent_stream_trace.ingest.pipeline import IngestOptions, ingest

    path = tmp_path / "cron.jsonl"
    for run in range(storage.SLACK_ROW_GROUPS + 4):  # cron runs, each adding one short session
        write(path, v1_session(new_sid(), [(0.1, "token", {"text": "x"}), (0.2, "done", {})]), mode="a")
        ingest([path], IngestOptions(db=db_path, open_window=0))
    con = connect(db_path, read_only=True)
    assert row_groups(con) < storage.SLACK_ROW_GROUPS  # compacted at least once along the way
    assert con.execute("SELECT count(*) FROM events").fetchone() == ((storage.SLACK_ROW_GROUPS + 4) * 3,)
    con.close()


def test_each_run_keeps_an_upper_bound_on_the_row_groups_of_events(tmp_path, db_path):
    """Whether compaction is due is judged from a bound each run raises, not by counting the row
    groups (which reads every segment's metadata): the bound must never be below the count."""
    from ingest_support import new_sid, v1_session, write

    from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
    from agent_stream_trace.simulate.generator import SimulationOptions, simulate

    corpus = tmp_path / "corpus"
    simulate(SimulationOptions(sessions=2200, seed=3, out=corpus, files=2))  # ~270k events: 3+ row groups

    def bound_and_count() -> tuple[int, int]:
        con = connect(db_path, read_only=True)
        try:
            return con.execute("SELECT bound FROM _events_row_groups").fetchone()[0], row_groups(con)
        finally:
            con.close()

    connect(db_path).close()  # a new database: its events table is empty, and so is the bound
    assert bound_and_count() == (0, 0)
    ingest([corpus], IngestOptions(db=db_path, open_window=0, batch_bytes=8 << 20))  # several batches
    first, count = bound_and_count()
    assert first >= count >= 3  # raised by each batch, never below the count
    for run in range(1, 4):  # cron runs, each appending a little: one row group more at most
        write(corpus / "worker-01.jsonl", v1_session(new_sid(), [(0.1, "token", {"text": "x"})]), mode="a")
        ingest([corpus], IngestOptions(db=db_path, open_window=0))
        bound, count = bound_and_count()
        assert bound == first + run and bound >= count


def test_a_run_with_little_to_read_uses_one_thread_and_a_large_one_keeps_all(tmp_path):
    con = connect(tmp_path / "db.duckdb")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    storage.fit_threads(con, storage.ONE_THREAD_BELOW_BYTES)  # as much as that: not small
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == threads
    storage.fit_threads(con, storage.ONE_THREAD_BELOW_BYTES - 1)
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    con.close()


def test_a_run_reads_on_one_thread_only_when_it_knows_it_has_little_to_read(tmp_path, monkeypatch):
    import gzip
    import io
    import sys

    from ingest_support import new_sid, v1_session, write

    from agent_stream_trace.ingest.pipeline import Ingester, IngestOptions
    from agent_stream_trace.ingest.sources import resolve_sources

    plain = write(tmp_path / "small.jsonl", v1_session(new_sid(), [(0.1, "token", {"text": "x"})]))
    packed = tmp_path / "small.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(plain.read_bytes())))

    def threads_after_a_run(path: str, db: str) -> int:
        con = connect(tmp_path / db)
        storage.prepare(con)
        con.execute("SET threads = 4")  # a known start, whatever this machine's default
        report = Ingester(con, IngestOptions(open_window=0)).run(resolve_sources([path]))
        assert report.headers == 1  # the run did read the session
        try:
            return con.execute("SELECT current_setting('threads')").fetchone()[0]
        finally:
            con.close()

    assert threads_after_a_run(str(plain), "plain.duckdb") == 1  # size known, and small
    assert threads_after_a_run(str(packed), "packed.duckdb") == 4  # .gz: decompressed size unknown
    assert threads_after_a_run("-", "stdin.duckdb") == 4  # stdin: size unknown


def test_an_unknown_amount_to_read_keeps_every_thread(tmp_path):
    con = connect(tmp_path / "db.duckdb")
    con.execute("SET threads = 4")
    storage.fit_threads(con, None)
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 4
    con.close()


def test_a_checkpoint_alongside_writes_what_is_committed_while_the_block_reads(tmp_path):
    from pathlib import Path

    db = tmp_path / "db.duckdb"
    con = connect(db)
    storage.prepare(con)  # commits stay in the log until a checkpoint
    con.execute("INSERT INTO _events (k, seq, t, event, data) SELECT 1, range, 0.1, 'token', '{}' FROM range(50000)")
    log = Path(f"{db}.wal")
    assert log.stat().st_size > 0
    with storage.checkpoint_alongside(con):
        assert con.execute("SELECT count(*) FROM _events").fetchone() == (50000,)  # reads go on meanwhile
    assert not log.exists() or log.stat().st_size == 0  # the rows are in the database file
    con.close()


def test_closing_a_large_run_alongside_its_checkpoint_gives_the_same_database(tmp_path, monkeypatch):
    """A run with much to read commits its last batch, then computes the session rows while a
    second connection checkpoints (storage.checkpoint_alongside); a small run does both in one
    transaction. Both must give the same database, over a first run and a later one that
    finds appended lines and an open session gone idle."""
    import os
    import shutil

    from ingest_support import dump, new_sid, rows, v1_session, write

    from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
    from agent_stream_trace.simulate.generator import SimulationOptions, simulate

    idle_sid, later_sid = new_sid(), new_sid()
    simulated, corpus = tmp_path / "simulated", tmp_path / "corpus"
    simulate(SimulationOptions(sessions=300, seed=5, out=simulated, files=2, synthetic_done_rate=0.3))

    def two_runs(name: str, threshold: int) -> tuple:
        monkeypatch.setattr(storage, "ONE_THREAD_BELOW_BYTES", threshold)
        db = tmp_path / f"{name}.duckdb"
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.copytree(simulated, corpus)  # the same files at the same paths for both
        grows = write(corpus / "grows.jsonl", v1_session(idle_sid, [(0.1, "token", {"text": "ab"})], end=None))
        ingest([corpus], IngestOptions(db=db, open_window=300, now=os.stat(grows).st_mtime + 1))
        after_first = rows(db, "SELECT outcome FROM sessions WHERE session_id = ?", [idle_sid])
        write(grows, v1_session(later_sid, [(0.2, "token", {"text": "cde"}), (0.3, "done", {})]), mode="a")
        ingest([corpus], IngestOptions(db=db, open_window=300, now=os.stat(grows).st_mtime + 1000))
        return after_first, dump(db)

    alongside, together = two_runs("alongside", 0), two_runs("together", 1 << 40)
    assert alongside == together
    assert alongside[0] == [("open",)]  # the first run left it open; the second found it idle
    outcomes = {row[0]: row[6] for row in alongside[1]["sessions"]}
    assert (outcomes[idle_sid], outcomes[later_sid]) == ("synthetic_done", "done")
