"""Sessions named by a person: a session id, or a unique prefix of one (as `show` and
`export otlp --session` take them), resolved against the `sessions` table."""

from __future__ import annotations

import duckdb

from .errors import UsageError

# The ids that start with the prefix, with their sides (only `side`, when given): the side
# narrows the prefix before anything is counted, so 'a' may name the one session with a client
# side among many. Six at most: five are shown when the prefix names several.
_NAMED = "starts_with(lower(session_id), $prefix) AND ($side IS NULL OR side = $side)"
_MATCHES = f"""
SELECT session_id, list(side ORDER BY side) FROM sessions WHERE {_NAMED}
GROUP BY session_id ORDER BY session_id LIMIT 6
"""
_COUNT = f"SELECT count(DISTINCT session_id) FROM sessions WHERE {_NAMED}"


def resolve_session_id(con: duckdb.DuckDBPyConnection, prefix: str, side: str | None = None) -> tuple[str, list[str]]:
    """The one session id that starts with `prefix`, and its sides (only `side`, when given).

    Raises UsageError, in words a person can act on, when no id starts with it, when several
    do, and when the id has no such side."""
    wanted = prefix.strip().lower()
    if not wanted:
        raise UsageError("give a session id (or a unique prefix of one)")
    rows = con.execute(_MATCHES, {"prefix": wanted, "side": side}).fetchall()
    if not rows and side is not None:
        anyside = con.execute(_MATCHES, {"prefix": wanted, "side": None}).fetchall()
        if len(anyside) == 1:
            session_id, sides = anyside[0]
            raise UsageError(f"session {session_id} has no {side} side (recorded: {', '.join(sides)})",
                             hint=f"drop --side, or use --side {sides[0]}")
        if anyside:
            raise UsageError(f"no session id starting with {prefix!r} has a {side} side")
    if not rows:
        raise UsageError(f"no session id starts with {prefix!r}", hint="list sessions with: agent-stream-trace sessions")
    if len(rows) > 1:
        (n,) = con.execute(_COUNT, {"prefix": wanted, "side": side}).fetchone()  # type: ignore[misc]
        shown = ", ".join(session_id for session_id, _ in rows[:5]) + (" ..." if n > 5 else "")
        raise UsageError(f"{prefix!r} matches {n} sessions: {shown}", hint="give more characters of the id")
    session_id, sides = rows[0]
    return session_id, sides
