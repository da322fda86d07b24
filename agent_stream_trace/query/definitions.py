"""Where the metric SQL lives, and the check that a database carries it.

The definitions are SQL files beside this module (query/sql/*.sql), applied by migrations so
that every DuckDB client sees the same views and table macros. Each file is frozen once a
migration ships it; a changed definition is a new file applied by a new migration.
"""

from __future__ import annotations

from importlib import resources

import duckdb

from ..errors import DatabaseError

# The latest migration that creates or changes the views and macros this package queries.
METRICS_MIGRATION = "m002_metric_views"


def read_sql(name: str) -> str:
    """The text of a packaged SQL file, e.g. read_sql("m002_metric_views.sql")."""
    return resources.files(__package__).joinpath("sql", name).read_text(encoding="utf-8")


def require_metrics(con: duckdb.DuckDBPyConnection) -> None:
    """Fail with a clear hint when the database predates the metric views.

    The read side opens databases read-only (it must never write, and may run beside an
    ingester), so it cannot run migrations itself. Creating the definitions inline as temporary
    objects would work, but would also let two copies of the definitions drift apart; instead
    a read-write open of the database upgrades it once, for every client.
    """
    try:
        # fetchall, not fetchone: DuckDB 2 keeps a half-read result open on the connection.
        rows = con.execute(
            "SELECT count(*) FROM _schema_migrations WHERE name = ?", [METRICS_MIGRATION]
        ).fetchall()
    except duckdb.CatalogException:
        rows = []
    if not rows or rows[0][0] == 0:
        raise DatabaseError(
            f"this database predates the current metric views (migration {METRICS_MIGRATION})",
            hint="run agent-stream-ingest once (any path, e.g. an empty directory) to upgrade it",
        )
