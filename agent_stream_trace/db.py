"""Opening the DuckDB database: read-write (migrated) or read-only (for SQL endpoints)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from .config import resolve_db_path
from .errors import DatabaseError


def connect(db: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the database (`--db`, else $AGENT_STREAM_DB, else ./agent-stream.duckdb).

    Read-write connections are migrated to the current schema first. Read-only connections
    require the file to exist: a query must never create an empty database by accident.
    """
    path = resolve_db_path(db)
    if read_only and str(path) != ":memory:" and not path.exists():
        raise DatabaseError(
            f"no database at {path}",
            hint="ingest recordings first: agent-stream-ingest traces/ (or pass --db PATH)",
        )
    if str(path) != ":memory:" and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise DatabaseError(f"cannot open {path}: {exc}", hint="is another process writing it?") from None
    except duckdb.Error as exc:
        raise DatabaseError(f"cannot open {path}: {exc}") from None
    if not read_only:
        from .migrations import migrate

        migrate(con)
    return con


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
