"""Opening the DuckDB database: read-write (migrated) or read-only (for SQL endpoints)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from .config import resolve_db_path
from .errors import DUCKDB_INTERRUPTED, DatabaseError
from .private_files import no_access_for_others

# What a connection for SQL a person typed (agent-stream-trace query) may not do. Read-only
# alone still let such SQL write files (COPY ... TO, EXPORT DATABASE), read any file the user
# can (read_csv, read_text, glob), install extensions, or ATTACH another database read-write
# and change it. With these off and the configuration then locked, it reads this database only.
_SANDBOX = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}


@functools.cache
def _sandbox_temp_dir() -> str:
    """A private directory (mode 700, removed at exit) where sandboxed connections spill, or ''
    (no spilling) where none can be made (a read-only file system).

    Why: DuckDB lets SQL write into its temporary directory even with external access off (it
    stays on the allowed list), and that is `<db>.tmp/` beside the database by default, where
    `COPY ... TO` then wrote files. Without any temporary directory a large query could not
    spill and failed out of memory instead; here it spills where nothing else reads."""
    try:
        path = tempfile.mkdtemp(prefix="agent-stream-sql-")
    except OSError:
        return ""
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def connect(
    db: str | os.PathLike[str] | None = None, *, read_only: bool = False, sandboxed: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open the database (`--db`, else $AGENT_STREAM_DB, else ./agent-stream.duckdb).

    Read-write connections are migrated to the current schema first. Read-only connections
    require the file to exist: a query must never create an empty database by accident.
    `sandboxed` (read-only only): for SQL from a person, which may then touch nothing but this
    database (no files, no other databases, no extensions, no settings); times are shown in UTC.
    """
    assert read_only or not sandboxed, "a sandboxed connection is read-only"
    path = resolve_db_path(db)
    try:
        if read_only and str(path) != ":memory:" and not path.exists():
            raise DatabaseError(
                f"no database at {path}",
                hint="ingest recordings first: agent-stream-ingest traces/ (or pass --db PATH)",
            )
        if str(path) != ":memory:" and path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        if str(path) != ":memory:" and path.is_file() and not _is_duckdb_file(path):
            raise DatabaseError(f"cannot open {path}: it is not a DuckDB database file "
                                "(--db names the database; name the recordings to read without --db)")
        new = not read_only and str(path) != ":memory:" and not path.exists()
    except OSError as exc:  # a directory on the way cannot be entered or made
        raise DatabaseError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        config = {**_SANDBOX, "temp_directory": _sandbox_temp_dir()} if sandboxed else {}
        con = duckdb.connect(str(path), read_only=read_only, config=config)
        if new:
            # The database holds prompts and model output (events.data): like recordings, not
            # readable by other users, whatever the umask allows (DuckDB 2 will not take a file
            # created beforehand with the mode: an empty file is not a database to it).
            no_access_for_others(path)
        if sandboxed and not con.execute("SELECT current_setting('lock_configuration')").fetchone()[0]:  # type: ignore[index]
            # Once per database instance: a second sandboxed connection in the process shares
            # the first's (locked) configuration, UTC included.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        # DuckDB lets one process write a database file, and none other open it meanwhile; and
        # in one process, every connection to a file must share one configuration.
        if "different configuration" in str(exc):
            hint = ("this process has the database open already, with other settings (a sandboxed connection "
                    "beside a plain one): close the other, or run the query in a process of its own")
        elif "lock" in str(exc).lower():
            hint = "another process has it open (an ingest, or a query while it runs): try again when it ends"
        else:
            hint = None
        raise DatabaseError(f"cannot open {path}: {exc}", hint=hint) from None
    if not read_only:
        from .migrations import migrate

        migrate(con)
    return con


def _is_duckdb_file(path: os.PathLike[str]) -> bool:
    """Whether the file is empty (left to DuckDB, which refuses it with its own message) or
    starts as a DuckDB database does. Why check: DuckDB 2 opens an existing .jsonl or .csv given as the database
    as an in-memory database with a view of that file, so an ingest into it reported success
    and kept nothing."""
    with open(path, "rb") as f:
        head = f.read(12)
    return not head or head[8:12] == b"DUCK"


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Everything in the block commits together, or not at all (rolled back on any exception,
    KeyboardInterrupt included)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def interruptible(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Ctrl-C stops the statement `con` runs in the block, which then raises KeyboardInterrupt.

    Why by hand: DuckDB (2.0.1) notices Ctrl-C only if it checks Python's signals while it
    runs, and in a long query it often did not (9 of 12 tries ran on). Python's own signal
    handler writes each signal to a wakeup fd as it arrives, from any thread; a thread waiting
    on that fd interrupts the connection, which DuckDB always honours. Outside the main thread
    (where signals cannot be watched) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watch_end, signal_end = socket.socketpair()
    signal_end.setblocking(False)
    previous = signal.set_wakeup_fd(signal_end.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while data := watch_end.recv(64):  # b"" once signal_end is closed
            if signal.SIGINT in data:
                con.interrupt()

    watcher = threading.Thread(target=watch, name="agent-stream-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except RuntimeError as exc:  # DuckDB noticed the signal itself first
        if str(exc) == DUCKDB_INTERRUPTED:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.set_wakeup_fd(previous)
        signal_end.close()
        watcher.join()
        watch_end.close()
