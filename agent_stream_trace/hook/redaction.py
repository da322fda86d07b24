"""Redaction: a callable that sees each record's event name and data before it is written.

`Redactor = Callable[[str, Any], Any]`: given (event, data) it returns the data to record.
It runs on the writer thread, never on the event loop. If it raises, the record is written
with empty data `{}` (never unredacted) and counted in `RecorderStats.redaction_errors`.
Recorder records (`_end`, `_unparsed`, `_comment`) pass through it too: an exception message
or an unparsable block can hold content just as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

Redactor = Callable[[str, Any], Any]

MASK: Final = "*"

# Fields that carry model or user content, per event (the upstream schema).
CONTENT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "token": ("text",),
    "thinking": ("text",),
    "tool_use": ("input_summary",),
    "tool_result": ("output_summary",),
    "progress": ("message",),
    "error": ("message",),
    "creation": (),
    "_unparsed": ("raw",),
    "_comment": ("text",),
    "_end": ("message",),
}


def keep_lengths(event: str, data: Any) -> Any:
    """Replace content strings by a mask of the same length.

    Token text becomes "*****": every length-based metric (token_chars, velocity) stays
    exact while no content is written. Other fields (ids, tool names, timings) are kept.
    """
    fields = CONTENT_FIELDS.get(event)
    if not fields or not isinstance(data, dict):
        return data
    out = dict(data)
    for name in fields:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = MASK * len(value)
    # Item lists and error details are free-form content: keep how many, not what.
    if event == "creation" and isinstance(out.get("items"), list):
        out["items"] = [{} for _ in out["items"]]
    if event == "error" and isinstance(out.get("details"), dict):
        out["details"] = {}
    return out
