"""Recording lines (format v1) for the hook, with a fast path for wire events.

Headers and recorder records go through `recording.dumps`. A wire event whose data needs no
change (no redaction) is written by splicing its already-validated JSON text into the line:
that skips a decode and an encode per event, the largest cost of recording. Both produce the
same JSON value; only insignificant whitespace and escaping may differ.
"""

from __future__ import annotations

import json
from typing import Any

from ..recording import dumps, event_record

_NAMES: dict[str, str] = {}


def _json_name(event: str) -> str:
    # Event names are few; their JSON spelling is computed once each (bounded, in case a
    # server invents names).
    name = _NAMES.get(event)
    if name is None:
        name = json.dumps(event, ensure_ascii=False)
        if len(_NAMES) < 1024:
            _NAMES[event] = name
    return name


def wire_event_line(sid: str, seq: int, t: float, event: str, data_text: str) -> str:
    """An event line from data that is already one line of strict JSON text."""
    return (
        f'{{"t": {round(t, 3)!r}, "event": {_json_name(event)}, "data": {data_text}, '
        f'"sid": "{sid}", "seq": {seq}}}\n'
    )


def record_line(sid: str, seq: int, t: float, event: str, data: Any) -> str:
    """An event or recorder record line from a JSON-ready value."""
    return dumps(event_record(sid, seq, t, event, data))
