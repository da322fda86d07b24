"""Ingest: recordings (v0/v1, .jsonl/.jsonl.gz, files/directories/stdin) into DuckDB.

    report = ingest(["traces/"], IngestOptions(db="agent-stream.duckdb"))

Incremental: each file is read from where the last run stopped, unchanged files are not
opened, and only the sessions that got new lines are recomputed. Idempotent and crash-safe:
see load.py. Every non-blank line becomes a header, an event or a reject.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..config import resolve_open_window
from ..db import connect, transaction
from . import storage
from .load import (
    BatchCounts,
    FileState,
    StagedBatch,
    assign_file_ids,
    forget_tails,
    load_batch,
    load_states,
    save_states,
    staged_batch,
    with_open_sessions,
)
from .readahead import read_ahead
from .reader import (
    BLOCK_BYTES,
    HEAD_BYTES,
    Block,
    Cursor,
    ReadOutcome,
    head_hash,
    make_block,
    read_blocks,
)
from .sessions import compute_rows, refresh_sessions, resummarise_stale, write_rows
from .sources import Source, resolve_sources

# 96 MB batches: each batch costs ~15 statements to plan (~31 ms) whatever its size, so bigger
# batches cost less per line. Measured on 2.5M lines: 16 -> 32 MB ~25% less time, 32 -> 64 MB
# ~4% less, 64 -> 96 MB ~3% less (paired runs, 4 of 5). Peak RSS grows with it: two batches of
# bytes are held (one stored, one read ahead) besides DuckDB's capped memory (storage.py):
# 0.5 GB at 32 MB, 0.66 at 64, ~0.8 at 96.
BATCH_BYTES = 96 << 20


@dataclass(frozen=True)
class IngestOptions:
    db: str | os.PathLike[str] | None = None
    open_window: float | None = None  # seconds; None: $AGENT_STREAM_OPEN_WINDOW, else 300
    now: float | None = None  # epoch seconds; tests pin the clock with it
    batch_bytes: int = BATCH_BYTES
    # Called as progress(bytes_stored, bytes_total) as batches are stored, for progress bars
    # (bytes_total 0: not known, for stdin and .gz).
    progress: Callable[[int, int], None] | None = None


@dataclass
class IngestReport(BatchCounts):
    """A run's counts (see BatchCounts) and what it took."""

    files: int = 0
    files_unchanged: int = 0
    bytes_read: int = 0
    sessions_new: int = 0
    sessions_updated: int = 0
    seconds: float = 0.0
    # Files that vanished or became unreadable between listing and reading ("path: why"): the
    # next run reads them (their read positions stay where they were).
    unread: list[str] = field(default_factory=list)

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


def ingest(paths: Iterable[str | os.PathLike[str]], options: IngestOptions = IngestOptions()) -> IngestReport:
    """Load recordings into the database named by options.db (see config.resolve_db_path)."""
    sources = resolve_sources(list(paths))
    resolve_open_window(options.open_window)  # a bad window is bad usage: said before a database is made
    con = connect(options.db)
    storage.prepare(con)
    try:
        report = Ingester(con, options).run(sources)
        fragmented = report.events > 0 and storage.events_fragmented(con)
    finally:
        con.close()
    if fragmented:
        storage.compact(options.db)
    return report


def ingest_lines(
    con: duckdb.DuckDBPyConnection,
    lines: Iterable[str],
    source_file: str = "<memory>",
    *,
    now: float | None = None,
) -> IngestReport:
    """Load recording lines already in memory into an open (migrated) connection.

    Used to summarise one live session with exactly the ingester's SQL (the hook's live spans).
    The lines are taken as a finished recording: nothing is left open for a later run.
    """
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8")
    source = Source(source_file, None)
    options = IngestOptions(open_window=0.0, now=now)
    ingester = Ingester(con, options)
    state = FileState(path=source_file)
    block = make_block(source, data, 1, 0) if data else None
    report = IngestReport()
    started = time.perf_counter()
    states = {source_file: state}
    with ExitStack() as stack:
        staged = stack.enter_context(staged_batch(con, [block], states)) if block is not None else None
        with transaction(con):
            if staged is not None:
                report.add(load_batch(con, staged, states, persist_state=False))
                report.bytes_read = len(data)
            ingester.finish(report)
    report.seconds = time.perf_counter() - started
    return report


class Ingester:
    def __init__(self, con: duckdb.DuckDBPyConnection, options: IngestOptions) -> None:
        self.con = con
        self.options = options
        self.now = options.now if options.now is not None else time.time()
        self.window = resolve_open_window(options.open_window)
        # Modification times found now for files this run does not read (see _mtimes_now).
        self.mtimes: dict[str, float] = {}
        con.execute("SET TimeZone = 'UTC'")

    def run(self, sources: list[Source]) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(files=len(sources))
        states = load_states(self.con)
        listed = {source.name for source in sources}
        unlisted = [path for path in states if path not in listed]  # usually none, or rotated-away files
        if unlisted:
            self.mtimes = _mtimes_now(with_open_sessions(self.con, unlisted), states)
        plans: list[tuple[Source, FileState, bool]] = []
        for source in sources:
            try:
                state, final = self._prepare(source, states)
            except _Unread as exc:
                report.unread.append(f"{source.name}: {exc}")
                continue
            if state is None:
                report.files_unchanged += 1
                continue
            state.complete = False  # until every block read below is committed
            plans.append((source, state, final))
        assign_file_ids(self.con, [state for _, state, _ in plans])  # one query, not one per batch
        # Sizes as _prepare just found them: the files are not stat'ed a second time.
        total, exact = _bytes_to_read(plans)
        parallel = storage.fit_threads(self.con, total if exact else None)  # the connection is the run's own (ingest())
        batch: list[Block] = []
        batch_bytes = 0
        # Files whose final state no pending batch will save (their last block was flushed
        # already, or they had none): saved after the last batch, once all their data is in.
        settled: list[FileState] = []
        # Read ahead by up to a batch of bytes (and any number of small items): the next
        # batch is ready when this one is stored.
        ahead = read_ahead(
            self._read(plans), depth=1024, max_bytes=self.options.batch_bytes,
            size=lambda pair: 0 if isinstance(pair[1], ReadOutcome) else len(pair[1].data),
        )
        # Progress counts the bytes stored, not those read: reading runs a batch ahead, and a
        # bar at 100% while the last batch is still being stored (most of a small run) misleads.
        # Where the total is not known in the bytes counted (stdin; a .gz, whose blocks count
        # decompressed bytes), it is given as 0: a bar then counts without a percentage.
        stored, known_total = 0, total if exact else 0

        def progress(done: int) -> None:
            if self.options.progress:
                self.options.progress(done, known_total)

        progress(0)
        for state, item in ahead:
            if isinstance(item, ReadOutcome):  # the file's last block was handed over
                state.complete = item.reached_end
                if item.unread is not None:
                    report.unread.append(f"{state.path}: {item.unread}")
                if not any(b.source.name == state.path for b in batch):
                    settled.append(state)
                continue
            batch.append(item)
            batch_bytes += len(item.data)
            report.bytes_read += len(item.data)
            if batch_bytes >= self.options.batch_bytes:
                with staged_batch(self.con, batch, states) as staged, transaction(self.con):
                    self._store(staged, states, report)
                stored += _file_bytes(batch)
                progress(stored)
                batch, batch_bytes = [], 0
        with ExitStack() as stack:
            last = stack.enter_context(staged_batch(self.con, batch, states)) if batch else None
            if parallel:  # a run with much to read (a cron run's checkpoint is too small to gain)
                self._close_overlapped(last, settled, states, report)
            else:
                # The last batch, the states of files it does not hold and the session rows
                # commit together: one commit less (a cron run is mostly fixed costs), and a
                # kill between them would only have left the rows to recompute next run.
                storage.checkpoint_at_last_commit(self.con)  # after staging: it commits on its own
                with transaction(self.con):
                    self._store_last(last, settled, states, report)
                    self.finish(report)
        progress(known_total or stored + _file_bytes(batch))
        report.seconds = time.perf_counter() - started
        return report

    def _store_last(
        self, last: StagedBatch | None, settled: list[FileState], states: dict[str, FileState], report: IngestReport,
    ) -> None:
        if last is not None:
            self._store(last, states, report)
        if settled:
            # read to their end with no line left to read again: their old end is gone
            forget_tails(self.con, [state for state in settled if state.complete])
            save_states(self.con, settled)

    def _close_overlapped(
        self, last: StagedBatch | None, settled: list[FileState], states: dict[str, FileState], report: IngestReport,
    ) -> None:
        """The run's last batch, then the session rows, with the closing checkpoint of what the
        batches stored running alongside the computing of the rows (storage.checkpoint_alongside:
        two single-threaded stages on two cores instead of one after the other). A kill between
        the two commits leaves the rows to recompute next run (their sessions stay listed dirty)."""
        with transaction(self.con):
            self._store_last(last, settled, states, report)
            resummarise_stale(self.con)
        with transaction(self.con):
            with storage.checkpoint_alongside(self.con):
                computed = compute_rows(self.con, now=self.now, open_window=self.window, mtimes=self.mtimes)
            storage.checkpoint_at_last_commit(self.con)  # the rows go to the file, not the log
            new, updated = write_rows(self.con, computed)
        report.sessions_new += new
        report.sessions_updated += updated

    def _store(self, staged: StagedBatch, states: dict[str, FileState], report: IngestReport) -> None:
        counts = load_batch(self.con, staged, states)
        storage.raise_row_group_bound(self.con, storage.row_groups_for(counts.events))
        report.add(counts)

    def _read(self, plans: list[tuple[Source, FileState, bool]]) -> Iterator[tuple[FileState, Block | ReadOutcome]]:
        """Every file's blocks, then its ReadOutcome. Runs in the read-ahead thread: it reads
        files and nothing else (states are only read here, as they were before the run)."""
        block_bytes = min(BLOCK_BYTES, self.options.batch_bytes)
        for source, state, final in plans:
            outcome = ReadOutcome()
            cursor = Cursor(state.byte_offset, state.lines)
            try:
                for block in read_blocks(source, cursor, final=final, outcome=outcome, block_bytes=block_bytes):
                    yield state, block
            except OSError as exc:  # vanished or unreadable since it was listed: not complete, so read next run
                outcome.unread = exc.strerror or str(exc)
            yield state, outcome

    def finish(self, report: IngestReport) -> None:
        new, updated = refresh_sessions(self.con, now=self.now, open_window=self.window, mtimes=self.mtimes)
        report.sessions_new += new
        report.sessions_updated += updated

    def _prepare(self, source: Source, states: dict[str, FileState]) -> tuple[FileState | None, bool]:
        """The state to resume `source` from, or None when it has not changed since last run."""
        if source.path is None:  # stdin: read whole, nothing to resume, never left open
            state = states.setdefault(source.name, FileState(path=source.name))
            state.byte_offset, state.lines, state.cur_session = 0, 0, None
            state.cur_side = state.cur_header_line = state.cur_v = None
            return state, True
        try:
            st = source.path.stat()
        except OSError as exc:  # vanished (or became unreadable) since it was listed
            raise _Unread(exc.strerror or str(exc)) from None
        state = states.get(source.name)
        final = st.st_mtime < self.now - self.window
        if state is not None and state.size == st.st_size and state.mtime == st.st_mtime:
            if state.complete:
                return None, False
            state.tail = True  # unchanged, but not read to its end last time (or a run was killed)
            return state, final
        if state is None or st.st_size < state.size or (
            state.head_hash and _read_head(source.path, state.size) != state.head_hash
        ):
            # New file, or truncated/replaced: read from the start (events already stored are
            # recognised by session and seq and kept once).
            state = FileState(path=source.name)
            self.con.execute("DELETE FROM rejects WHERE source_file = ?", [source.name])
        elif not state.complete or state.byte_offset < state.size or source.gzipped:
            state.tail = True  # an end it may have left behind is read again (FileState.tail)
        head = _read_head(source.path, st.st_size)
        state.size, state.mtime, state.head_hash = st.st_size, st.st_mtime, head
        states[source.name] = state
        return state, final


class _Unread(Exception):
    """A listed file that could not be looked at: the next run reads it."""


def _mtimes_now(paths: set[str], states: dict[str, FileState]) -> dict[str, float]:
    """The modification times of `paths` (files with an open session that this run does not
    read) as they are now, where they differ from the stored ones.

    Why: whether an open session's file went quiet is judged from its modification time, and
    the stored one is the time an earlier run saw. A run over other paths (another cron job
    into the same database) would otherwise close the sessions of a file written since. A file
    that is gone keeps its stored time: it will not be written again."""
    found: dict[str, float] = {}
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except (OSError, ValueError):  # gone, or not a path (<stdin>)
            continue
        if mtime != states[path].mtime:
            found[path] = mtime
    return found


def _read_head(path: Path, limit: int) -> str | None:
    """Hash of the file's first bytes (up to `limit`), to recognise a replaced file."""
    n = min(HEAD_BYTES, limit)
    if n <= 0:
        return None
    try:
        with open(path, "rb") as f:
            return head_hash(f.read(n))
    except OSError:
        return None


def _file_bytes(blocks: list[Block]) -> int:
    """The bytes `blocks` took in their files (as the progress total counts them; a block's data
    may be shorter: a BOM dropped, bad lines blanked)."""
    return sum(b.end_offset - b.start_offset for b in blocks)


def _bytes_to_read(plans: list[tuple[Source, FileState, bool]]) -> tuple[int, bool]:
    """About how many bytes the planned reads take (a progress bar's total), and whether that
    is exact. It is not for standard input (counted 0: its size is not known) or a .gz file
    (counted by its compressed size: its offset counts decompressed bytes)."""
    total, exact = 0, True
    for source, state, _ in plans:
        if source.path is None or source.gzipped:
            exact = False
            total += state.size if source.gzipped else 0
        else:
            total += max(state.size - state.byte_offset, 0)
    return total, exact

