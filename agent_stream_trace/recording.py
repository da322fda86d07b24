"""Recording format v0 (upstream) and v1 (ours): the names every part of the project shares.

v0, written by upstream's AgentStreamRecorder, one file shared by all sessions:
    {"session": "<uuid4>", "started_at": "<ISO-8601 UTC>", "t": 0}
    {"t": 0.052, "event": "token", "data": {...}}
v1, a strict superset that upstream's loader still reads:
    header  {"session": ..., "started_at": ..., "t": 0, "v": 1, "side": "server", "attrs": {...}}
    event   {"t": 0.052, "event": "token", "data": {...}, "sid": "<uuid4>", "seq": 1}
    end     {"t": 1.3, "event": "_end", "data": {"reason": "...", ...}, "sid": ..., "seq": N}
Event names starting with "_" are recorder records, never wire events.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Final, Literal

FORMAT_VERSION: Final = 1

# The nine wire event types of the agent-stream protocol (unknown types are still data).
WIRE_EVENTS: Final = (
    "token", "thinking", "tool_use", "tool_result", "turn", "progress", "creation", "error", "done",
)
END_EVENT: Final = "_end"
RECORDER_PREFIX: Final = "_"

EndReason = Literal["done", "returned_without_done", "exception", "cancelled"]
END_REASONS: Final[tuple[str, ...]] = ("done", "returned_without_done", "exception", "cancelled")
# end_reason of a session closed without an `_end` record (v0 files, or a killed process).
NO_END_RECORD: Final = "no_end_record"

Outcome = Literal["done", "synthetic_done", "open"]
Attribution = Literal["exact", "positional", "ambiguous"]
Side = Literal["server", "client"]


def header_record(
    session_id: str, started_at: datetime, *, side: str = "server", attrs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A v1 header record (as a dict, ready for json.dumps)."""
    return {
        "session": session_id,
        "started_at": started_at.astimezone(timezone.utc).isoformat(),
        "t": 0,
        "v": FORMAT_VERSION,
        "side": side,
        "attrs": attrs or {},
    }


def event_record(session_id: str, seq: int, t: float, event: str, data: Any) -> dict[str, Any]:
    """A v1 event (or recorder) record; `t` is rounded to 1 ms as upstream does."""
    return {"t": round(t, 3), "event": event, "data": data, "sid": session_id, "seq": seq}


def dumps(record: dict[str, Any]) -> str:
    """One recording line, newline included. Non-ASCII stays as is; U+2028 never splits a line
    because readers split on b"\\n" only."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"
