"""One batch of blocks into the database, in one transaction with the read positions.

    with staged_batch(con, blocks, states) as staged, transaction(con):
        counts = load_batch(con, staged, states)

Because the new events, headers, rejects, the to-do list of sessions to recompute and the
files' new read offsets commit together, a kill -9 at any moment leaves the database as it
was before the batch or after it, never between: the next run simply goes on. The batch's
lines are parsed into a temporary table before that transaction begins (staged_batch).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from . import classify, stats
from .pieces import pieces_table
from .reader import Block


@dataclass
class FileState:
    """What the database remembers of one input file (table _ingest_files)."""

    path: str
    size: int = 0
    mtime: float = 0.0
    byte_offset: int = 0
    lines: int = 0
    head_hash: str | None = None
    cur_session: str | None = None
    cur_side: str | None = None
    cur_header_line: int | None = None
    cur_v: int | None = None
    # Read to the end of what the file held at `size`/`mtime`; else read it again even if
    # unchanged (a run killed mid-file, or an unfinished end left while the writer was busy).
    complete: bool = False
    # The file's id in `_source_files`, under which `_events` stores its lines (not a column of
    # _ingest_files: a file read from stdin has no state stored); None until known. New: given
    # out by this run, stored with the file's first batch (classify.INSERT_SOURCE_FILES).
    file_id: int | None = None
    file_id_new: bool = False
    # This run reads again what lies past `lines` (not stored; set by pipeline.Ingester._prepare):
    # an unfinished end read as final by an earlier run (a last line without newline, a cut .gz
    # member: load_batch keeps the read position before it, so that a writer who finishes it
    # gets the whole line read in its place), or what a killed run stored of it. Its rejects
    # there go in the transaction that stores what replaces them (forget_tails), else the line
    # would be a reject twice, or a reject and data; a run that reads nothing of it (the end
    # still inside the open window) keeps them. Set only where there can be such an end (not
    # read to its end, or an end left behind), so a cron run over finished files pays nothing.
    tail: bool = False


@dataclass
class BatchCounts:
    """What became of the lines read: lines = headers + events + duplicates + rejects."""

    lines: int = 0  # non-blank lines read
    headers: int = 0
    events: int = 0
    duplicates: int = 0  # events already stored (same session and seq), kept once
    rejects: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    def add(self, other: BatchCounts) -> None:
        self.lines += other.lines
        self.headers += other.headers
        self.events += other.events
        self.duplicates += other.duplicates
        self.rejects.update(other.rejects)


STATE_COLUMNS = (
    "path", "size", "mtime", "byte_offset", "lines", "head_hash",
    "cur_session", "cur_side", "cur_header_line", "cur_v", "complete",
)
# Their Arrow types, read off FileState's annotations, for save_states: an Arrow table built
# from Python lists without types has them inferred, and pyarrow's first inference imports
# pandas and dateutil. That was ~2 ms of every run with new lines (`python -X importtime`),
# which the no-op run does not pay; as a new process's first table, 3-15 ms against ~0.8 typed.
_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
STATE_TYPES = {c: _ARROW_TYPES[FileState.__annotations__[c].removesuffix(" | None")] for c in STATE_COLUMNS}


def load_states(con: duckdb.DuckDBPyConnection) -> dict[str, FileState]:
    # With each file's id: one query (a cron run's cost is mostly its number of statements).
    rows = con.execute(
        f"SELECT {', '.join('f.' + c for c in STATE_COLUMNS)}, s.file_id "
        "FROM _ingest_files f LEFT JOIN _source_files s USING (path)"
    ).fetchall()
    return {row[0]: FileState(*row) for row in rows}


def with_open_sessions(con: duckdb.DuckDBPyConnection, paths: list[str]) -> set[str]:
    """Those of `paths` that hold an open session."""
    rows = con.execute(
        "SELECT DISTINCT source_file FROM sessions WHERE outcome = 'open' AND source_file IN (SELECT unnest(?))",
        [paths],
    ).fetchall()
    return {path for (path,) in rows}


def assign_file_ids(con: duckdb.DuckDBPyConnection, states: list[FileState]) -> dict[str, int]:
    """Give each of `states` without one its file's id in `_source_files`: the stored one, or for
    a file seen for the first time the next free one (`file_id_new`), which the file's first
    batch stores with its lines. Returns every state's id by path. The ingester calls it once
    for all the files a run reads: each query costs a first run's batch ~10 ms."""
    ids = {s.path: s.file_id for s in states if s.file_id is not None}
    missing = [s for s in states if s.file_id is None]
    if not missing:
        return ids
    rows = con.execute(
        "SELECT path, file_id FROM _source_files WHERE list_contains(?, path) "
        "UNION ALL SELECT NULL, coalesce(max(file_id), 0) FROM _source_files",
        [[s.path for s in missing]],
    ).fetchall()
    stored = {path: file_id for path, file_id in rows if path is not None}
    next_id = max(file_id for path, file_id in rows if path is None)
    for state in missing:
        if state.path not in stored:
            next_id += 1
            stored[state.path] = next_id
            state.file_id_new = True
        state.file_id = ids[state.path] = stored[state.path]
    return ids


@dataclass(frozen=True)
class StagedBatch:
    """A batch whose lines are parsed (table _parsed), ready for load_batch."""

    blocks: list[Block]
    names: dict[int, str]  # the batch's files, by file_id
    pyrejects: list[tuple[int, int, str, str]]  # (file_id, line_no, reason, raw): found while reading


# What DuckDB raises for a line that is not JSON in the fast parse (classify.PARSED_JSON). Its
# message quotes the line's start, cut at a byte count: cut inside a UTF-8 character, the
# message itself cannot be decoded, and the binding raises that instead.
_NOT_JSON_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException, UnicodeDecodeError)


@contextmanager
def staged_batch(
    con: duckdb.DuckDBPyConnection, blocks: list[Block], states: dict[str, FileState],
) -> Iterator[StagedBatch]:
    """Register the batch's inputs and parse its lines, outside any transaction (open one after
    this, for load_batch); the inputs are unregistered on leaving.

    Why outside: the fast parse assumes every line is JSON (classify.PARSED_JSON: catching
    the error of one that is not cost 11% of extracting the fields of all of them). A batch
    with a line that is not fails it and is parsed again the safe way, and a failed statement
    would have aborted a transaction around it.
    """
    names = list(dict.fromkeys(b.source.name for b in blocks))
    order = assign_file_ids(con, [states[n] for n in names])
    file_ids = [order[b.source.name] for b in blocks]
    unterminated = {b.source.name: b.unterminated_line for b in blocks if b.unterminated_line}
    files = pa.table({
        "file_id": pa.array([order[n] for n in names], pa.int32()),
        "new": pa.array([states[n].file_id_new for n in names], pa.bool_()),
        "path": pa.array(names, pa.string()),
        "cur_session": pa.array([states[n].cur_session for n in names], pa.string()),
        "cur_side": pa.array([states[n].cur_side for n in names], pa.string()),
        "cur_header_line": pa.array([states[n].cur_header_line for n in names], pa.int64()),
        "cur_v": pa.array([states[n].cur_v for n in names], pa.int64()),
        "unterminated_line": pa.array([unterminated.get(n) for n in names], pa.int64()),
    })
    pyrejects = [(order[b.source.name], r.line_no, r.reason, r.raw) for b in blocks for r in b.rejects]
    pyrejects_table = pa.table({
        "file_id": pa.array([r[0] for r in pyrejects], pa.int32()),
        "line_no": pa.array([r[1] for r in pyrejects], pa.int64()),
        "reason": pa.array([r[2] for r in pyrejects], pa.string()),
        "raw": pa.array([r[3] for r in pyrejects], pa.string()),
    })
    pieces = pieces_table(blocks, file_ids)

    con.register("_pieces", pieces)
    con.register("_files", files)
    con.register("_pyrejects", pyrejects_table)
    try:
        # The parsed lines' order is their (file_id, line_no), not where they are stored; an
        # order-preserving parallel write costs the parse ~15% on two threads (measured).
        con.execute("SET preserve_insertion_order = false")
        try:
            con.execute(classify.PARSED_JSON)
        except _NOT_JSON_ERRORS:
            con.execute(classify.PARSED)
        finally:
            con.execute("RESET preserve_insertion_order")
        if unterminated:
            con.execute(classify.TRUNCATED)
        yield StagedBatch(blocks, {order[n]: n for n in names}, pyrejects)
    finally:
        for name in ("_pieces", "_files", "_pyrejects"):
            con.unregister(name)


def load_batch(
    con: duckdb.DuckDBPyConnection,
    staged: StagedBatch,
    states: dict[str, FileState],
    *,
    persist_state: bool = True,
) -> BatchCounts:
    """Classify and store a staged batch; advance each file's state in the same transaction,
    which the caller opens and commits (db.transaction).

    `states` holds each file's state *before* the batch (positional session carried in) and
    must already carry the new size/mtime/head_hash; offsets and line counts are advanced here.
    """
    blocks, names, pyrejects = staged.blocks, staged.names, staged.pyrejects
    large = sum(len(b.data) for b in blocks) >= classify.LARGE_BATCH_BYTES
    counts = BatchCounts()
    forget_tails(con, [states[name] for name in names.values()])  # what this batch reads again replaces them
    con.execute(classify.MARKS)
    con.execute(classify.SIDS)
    positional, early = con.execute(classify.POSITIONAL_LINES).fetchone()  # type: ignore[misc]
    if early:
        con.execute(classify.EARLY_SIDS)
    con.execute(classify.POSITIONAL if positional else classify.NO_POSITIONAL)
    for sql in classify.SESSIONS:
        con.execute(sql)
    if positional:
        con.execute(classify.POSITIONAL_KEYS)
    con.execute(classify.CANDIDATES if positional else classify.CANDIDATES_BY_SID)
    for sql in classify.SUMMARIES_LARGE if large else classify.SUMMARIES:
        con.execute(sql)
    repeats, maybe_stored, stored, lines, headers, good_events, rejects = con.execute(classify.BATCH_CHECK).fetchone()  # type: ignore[misc]
    con.execute(classify.REPEATS if repeats else classify.NO_REPEATS)
    if maybe_stored:
        con.execute(classify.STORED_REPEATS)
    if repeats or maybe_stored:
        con.execute(classify.BATCH_STATS_LARGE if large else classify.BATCH_STATS)  # again, without the dropped lines
    (events,) = con.execute(classify.INSERT_EVENTS).fetchone()  # type: ignore[misc]
    counts.lines, counts.headers, counts.events = lines, headers, events
    counts.duplicates = good_events - events
    counts.rejects.update({r["reason"]: r["n"] for r in rejects})
    for _, _, reason, _ in pyrejects:
        counts.rejects[reason] += 1
    counts.lines += len(pyrejects)
    for sql in stats.MERGE if maybe_stored else stats.MERGE_GROWN if stored else stats.MERGE_NEW:
        con.execute(sql)
    for sql in classify.WRITES:
        con.execute(sql)
    if any(states[n].cur_session is None and states[n].cur_header_line is not None for n in names.values()):
        con.execute(classify.MARK_DIRTY_AFTER_INVALID_HEADER)
    if any(states[name].file_id_new for name in names.values()):
        con.execute(classify.INSERT_SOURCE_FILES)
        for name in names.values():
            states[name].file_id_new = False  # stored now
    if counts.rejected:
        con.execute(classify.INSERT_REJECTS)
    ends = any(block.unterminated_line is not None for block in blocks)
    for file_id, mark in con.execute(classify.LAST_MARKS_BEFORE_ENDS if ends else classify.LAST_MARKS).fetchall():
        state = states[names[file_id]]
        state.cur_session, state.cur_side = mark["session"], mark["side"]
        state.cur_header_line, state.cur_v = mark["line"], mark["v"]
    for block in blocks:
        state = states[block.source.name]
        if block.unterminated_line is not None:
            # The file's last line, without its newline, read because the file went quiet: stored
            # or rejected now, but the read position stays before it, so that if the writer
            # finishes it after all, the next run reads the whole line in its place (and its
            # reject goes: FileState.tail), as a run over the finished file would.
            state.byte_offset, state.lines = block.start_offset, block.unterminated_line - 1
        else:
            state.byte_offset = block.end_offset
            state.lines = block.first_line - 1 + block.line_count
    if persist_state:
        save_states(con, [states[n] for n in names.values()])
    return counts


def forget_tails(con: duckdb.DuckDBPyConnection, states: list[FileState]) -> None:
    """Delete the rejects past the read position of those of `states` marked `tail`: the batch
    that reads their next lines stores them again, and a file read to its end with nothing new
    (a cut .gz member its writer finished) has none left. In the caller's transaction."""
    for state in states:
        if state.tail:
            con.execute("DELETE FROM rejects WHERE source_file = ? AND line_no > ?", [state.path, state.lines])
            state.tail = False


def save_states(con: duckdb.DuckDBPyConnection, states: list[FileState]) -> None:
    """Store the files' states: an UPDATE of the stored ones, and an INSERT of the others only
    when the UPDATE did not find them all (a cron run's files are all stored). Not one upsert
    (`INSERT OR REPLACE`): its conflict check through the key's index cost a cron run ~6 ms
    against ~2.5 for the UPDATE (medians of 6 on a 20k-session database). Not executemany:
    it runs the statement once per file (3.5 ms each)."""
    # Typed as FileState declares them (STATE_TYPES); the statements cast each to the table's
    # own type, so the table's schema is written down once, in the migration.
    table = pa.table({c: pa.array([getattr(s, c) for s in states], STATE_TYPES[c]) for c in STATE_COLUMNS})
    now = time.time()
    con.register("_states", table)
    try:
        (updated,) = con.execute(
            f"UPDATE _ingest_files f SET {', '.join(f'{c} = s.{c}' for c in STATE_COLUMNS[1:])}, "
            "updated_at = to_timestamp(?) FROM _states s WHERE f.path = s.path",
            [now],
        ).fetchone()  # type: ignore[misc]
        if updated < len(states):
            con.execute(
                f"INSERT INTO _ingest_files ({', '.join(STATE_COLUMNS)}, updated_at) "
                "SELECT *, to_timestamp(?) FROM _states WHERE path NOT IN (SELECT path FROM _ingest_files)",
                [now],
            )
    finally:
        con.unregister("_states")
