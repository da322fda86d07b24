"""How the ingester's connection writes: memory cap, and compaction only when it pays.

DuckDB compacts ("vacuums") a table's partly filled row groups at every checkpoint. Each ingest
run appends a partly filled row group to `_events` (the rows of the view `events`), so every
run's closing checkpoint rewrote the previous one too: measured 0.2 s on a 2.5M-event database
whatever the run added (a cron run adding 1% of lines spent more on that than on the lines).
Compaction is off while ingesting and is done in one go once the table holds far more row
groups than its rows need, so its cost is spread over the runs that fragmented it. Whether it
is due is first judged from an upper bound on the table's row groups that each run raises
(`_events_row_groups`): counting them exactly reads every segment's metadata, which grows with
the table.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from ..db import connect

# DuckDB would cache up to 80% of RAM; a cap keeps a cron job's footprint flat (measured on
# 2.5M lines: peak RSS 1.05 GB -> 0.89 GB, same time). Beyond it, DuckDB spills to disk.
MEMORY_LIMIT = "768MB"
ROW_GROUP_ROWS = 122_880  # DuckDB's row group size
SLACK_ROW_GROUPS = 32  # partly filled row groups tolerated beyond twice what the rows need
# DuckDB checkpoints at a commit once its log passes 16 MB, which a batch of tens of MB does:
# every batch then rewrote the summary tables it had touched (measured on 2.5M lines: commits
# 0.7 s -> 0.3 s with this, the one checkpoint at close +0.2 s, the file 7% smaller). Each
# batch still commits (kill -9 safety is the log's job, replayed at the next open); the log
# is checkpointed once it passes this, and when the run closes its connection.
CHECKPOINT_THRESHOLD = "1GB"


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Settings for an ingest connection."""
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute("SET max_vacuum_tasks = 0")
    con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")


# The run's last transaction (its last batch and the session rows) is checkpointed as it
# commits: with the log over this, DuckDB writes the changes to the database file instead of to
# the log first and to the file again at close (a first run's session rows are 24 MB of log:
# measured ~60 ms less). A kill during that checkpoint loses only that transaction, as a kill
# before its commit would; the next run does it again.
LAST_COMMIT_THRESHOLD = "1MB"


def checkpoint_at_last_commit(con: duckdb.DuckDBPyConnection) -> None:
    """Call before the run's last transaction begins."""
    con.execute(f"SET checkpoint_threshold = '{LAST_COMMIT_THRESHOLD}'")


# A run with little to read (a cron run's appended lines) gains nothing from a second thread:
# its statements are too small to split well, and the second thread's work is spent waking and
# joining. Measured on a 2.5M-line database, CLI runs appending 3 MB (16 each, paired): the
# same time within noise (0.51 against 0.52 s) and ~9% less CPU on one thread; 16 MB: the same
# time either way; 63 MB: two threads 35% faster.
ONE_THREAD_BELOW_BYTES = 8 << 20


def fit_threads(con: duckdb.DuckDBPyConnection, pending_bytes: int | None) -> bool:
    """One DuckDB thread for a run with less than ONE_THREAD_BELOW_BYTES to read; all of them
    when that is not known (None: stdin, .gz). For an ingest connection of its own: the setting
    is the database instance's. Returns whether the run has all of them."""
    if pending_bytes is not None and pending_bytes < ONE_THREAD_BELOW_BYTES:
        con.execute("SET threads = 1")
        return False
    return True


@contextmanager
def checkpoint_alongside(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Write what is committed to the database file (a CHECKPOINT) from a second connection in a
    thread of its own, while the block runs; on leaving, wait for it.

    Why: a run's closing checkpoint writes every table it added to, one after another on one
    core (a first run of 2.5M lines: ~0.3 s, the other core idle), and so do the statements
    that compute the session rows (small tables: one row group each, one thread). DuckDB lets
    reads, and writes to temporary tables, run while another connection checkpoints (writes
    to the database's tables wait for it), so the block may only read the database's tables.
    A checkpoint that fails costs nothing: what it did not write stays in the log, and the
    next one writes it.
    """
    cursor = con.cursor()

    def checkpoint() -> None:
        try:
            cursor.execute("CHECKPOINT")
        except duckdb.Error:
            pass  # nothing is lost (see above); the closing checkpoint does it

    thread = threading.Thread(target=checkpoint, name="agent-stream-checkpoint", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
        cursor.close()


def row_groups_for(rows: int) -> int:
    """How many row groups `rows` rows fill: the fewest a table of them needs, and the most that
    appending them in one transaction adds (its full ones and one partly filled: DuckDB writes a
    large append's row groups as it goes)."""
    return -(-rows // ROW_GROUP_ROWS)


def raise_row_group_bound(con: duckdb.DuckDBPyConnection, added: int) -> None:
    """Inside the transaction that appended the rows: `_events` may now have `added` more."""
    if added:
        con.execute("UPDATE _events_row_groups SET bound = bound + ?", [added])


def _too_many(rows: int, groups: int) -> bool:
    return groups > 2 * row_groups_for(rows) + SLACK_ROW_GROUPS


def _row_groups(con: duckdb.DuckDBPyConnection, table: str) -> int:
    (groups,) = con.execute(
        "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info(?) WHERE column_id = 0", [table]
    ).fetchone()  # type: ignore[misc]
    return int(groups)


def is_fragmented(con: duckdb.DuckDBPyConnection, table: str = "_events") -> bool:
    """Does `table` hold far more row groups than its rows need? Counted exactly."""
    (rows,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
    return _too_many(rows, _row_groups(con, table))


def events_fragmented(con: duckdb.DuckDBPyConnection) -> bool:
    """is_fragmented for `_events` (the rows of the view `events`), after an ingest run (a
    read-write connection): counted exactly only when the bound says it may be, or is not
    known; the exact count then becomes the bound."""
    # max(): one row even if the table lost its row; NULL (not known yet) is counted. One query
    # for both: every run asks, and a cron run's cost is mostly its number of statements.
    rows, bound = con.execute(
        "SELECT (SELECT count(*) FROM _events), (SELECT max(bound) FROM _events_row_groups)"
    ).fetchone()  # type: ignore[misc]
    if bound is not None and not _too_many(rows, bound):
        return False
    return _too_many(rows, _recount_bound(con))


def _recount_bound(con: duckdb.DuckDBPyConnection) -> int:
    """Count the row groups of `_events` exactly and keep the count as the bound."""
    groups = _row_groups(con, "_events")
    con.execute("UPDATE _events_row_groups SET bound = ?", [groups])
    return groups


def compact(db: str | os.PathLike[str] | None) -> None:
    """Compact the database's partly filled row groups. DuckDB vacuums at the first checkpoint
    after opening that has a change to write, so this opens the database afresh (the ingest
    connection must be closed) and makes one: a marker table created and dropped."""
    con = connect(db)
    try:
        con.execute("CREATE TABLE _compacting (started TIMESTAMPTZ)")
        con.execute("DROP TABLE _compacting")
        con.execute("CHECKPOINT")
        _recount_bound(con)
    finally:
        con.close()
