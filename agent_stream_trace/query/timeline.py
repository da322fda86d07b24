"""One session's lines as a readable timeline: what each event says, in a few words.

Pure functions over a SessionDetail; the `show` command prints them, a dashboard can too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .store import SessionDetail

TEXT_CHARS = 60


@dataclass(frozen=True)
class TimelineRow:
    seq: int
    t: float | None
    gap_s: float | None
    stalled: bool  # the silence before this line reached the stall threshold
    event: str
    summary: str
    text: str | None = None  # the streamed text of a token event (to fold runs of them)


def clip(text: Any, limit: int = TEXT_CHARS) -> str:
    value = str(text) if text is not None else ""
    value = value.replace("\n", "⏎")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def describe(event: str, data: Any) -> str:
    """A few words for one event's payload (by the wire protocol's field names)."""
    if not isinstance(data, dict):
        return clip(data) if data is not None else ""
    get = data.get
    if event in ("token", "thinking"):
        return repr(clip(get("text", "")))
    # A field the event lacks is left out, not shown as None (a result need not name its tool).
    name = f"{get('tool_name')} " if get("tool_name") is not None else ""
    if event == "tool_use":
        return f"{name}({get('tool_use_id')}) {clip(get('input_summary') or '', 40)}".rstrip()
    if event == "tool_result":
        reported = f", reported {get('duration_ms')} ms" if get("duration_ms") is not None else ""
        return f"{name}({get('tool_use_id')}) {get('status')}{reported}"
    if event == "turn":
        return f"turn {get('turn_number')} (tools so far: {get('total_tools')})"
    if event == "progress":
        return f"{get('step')} {get('percentage')}% {clip(get('message') or '', 40)}".rstrip()
    if event == "creation":
        return f"{get('creation_type')} x{get('count')}"
    if event == "error":
        return f"{get('error_type')}: {clip(get('message'))}"
    if event == "done":
        return ", ".join(f"{k}={get(k)}" for k in ("model", "num_turns", "tool_count", "duration_ms")
                         if get(k) is not None)
    if event == "_end":
        rest = {k: v for k, v in data.items() if k != "reason"}
        return f"reason={get('reason')}" + (f" {clip(json.dumps(rest, ensure_ascii=False), 80)}" if rest else "")
    return clip(json.dumps(data, ensure_ascii=False))


def timeline(detail: SessionDetail) -> list[TimelineRow]:
    rows = []
    for r in detail.events.iter_rows(named=True):
        data = r["data"]
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                pass
        gap = r["gap_s"]
        rows.append(TimelineRow(
            seq=r["seq"], t=r["t"], gap_s=gap,
            stalled=gap is not None and gap >= detail.stall_threshold_s,
            event=r["event"], summary=describe(r["event"], data),
            text=data.get("text") if r["event"] == "token" and isinstance(data, dict) else None,
        ))
    return rows


def end_record(detail: SessionDetail) -> dict[str, Any] | None:
    """The data of the session's `_end` record, when it has one."""
    for r in detail.events.filter(detail.events["event"] == "_end").iter_rows(named=True):
        data = r["data"]
        return json.loads(data) if isinstance(data, str) else data
    return None
