"""Sessions named by a person: a session id, or a unique prefix of one (as `show` and
`export otlp --session` take them), resolved against the `sessions` table."""

from __future__ import annotations

import duckdb

from .errors import UsageError

_MATCHES = """
SELECT session_id, side FROM sessions
WHERE starts_with(lower(session_id), $prefix)
ORDER BY session_id, side
LIMIT 50
"""


def resolve_session_id(con: duckdb.DuckDBPyConnection, prefix: str, side: str | None = None) -> tuple[str, list[str]]:
    """The one session id that starts with `prefix`, and its sides (only `side`, when given).

    Raises UsageError, in words a person can act on, when no id starts with it, when several
    do, and when the id has no such side."""
    wanted = prefix.strip().lower()
    if not wanted:
        raise UsageError("give a session id (or a unique prefix of one)")
    rows = con.execute(_MATCHES, {"prefix": wanted}).fetchall()
    if not rows:
        raise UsageError(f"no session id starts with {prefix!r}", hint="list sessions with: agent-stream-trace sessions")
    if side is not None:
        # The side narrows the prefix first: 'a' may name one session with a client side.
        on_side = [row for row in rows if row[1] == side]
        if not on_side:
            found = sorted({session_id for session_id, _ in rows})
            if len(found) == 1:
                sides = sorted({s for _, s in rows})
                raise UsageError(f"session {found[0]} has no {side} side (recorded: {', '.join(sides)})",
                                 hint=f"drop --side, or use --side {sides[0]}")
            raise UsageError(f"no session id starting with {prefix!r} has a {side} side")
        rows = on_side
    ids = sorted({session_id for session_id, _ in rows})
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        raise UsageError(f"{prefix!r} matches {len(ids)} sessions: {shown}", hint="give more characters of the id")
    return ids[0], [s for _, s in rows]
