"""Reading back the SSE strings a server yields, the way a client would, without ever raising.

The hook sees the stream as the items the server's generator yields, but a client sees bytes:
an event may be split over two items, or one item may carry several events. So the parser is
per session and incremental, and follows the EventSource rules a browser applies (line ends
`\\n`, `\\r\\n` or `\\r`; `field: value` lines; a blank line dispatches; `:` starts a comment;
several `data:` lines join with `\\n`).

What it yields, for each block the client would see:
- a wire event: `SSEItem(event, data_text)` where `data_text` is the JSON text of `data:`,
  validated (so it can go into a recording line verbatim, without a decode/encode round trip);
- `_comment` for a comment-only block (heartbeats such as `: ping`);
- `_unparsed` for anything a client could not turn into an event with JSON data (no `data:`,
  data that is not strict JSON, a block left unterminated when the session ends), carrying the
  raw text so the recording shows exactly what was sent.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Final, NamedTuple

COMMENT_EVENT: Final = "_comment"
UNPARSED_EVENT: Final = "_unparsed"


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are Python's JSON extensions: no client's JSON.parse accepts them, and
    # neither does the ingester, so such data counts as unparsable.
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
# The C scanner behind the decoder: one call, no whitespace regexes. It parses one value at
# the given index and says where it ended, which must be the end of the text.
_SCAN: Final = _DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__


class SSEItem(NamedTuple):
    """One block as a client would see it.

    For wire events `data_text` is strict JSON text on one line (no raw newline). For
    recorder records (`_comment`, `_unparsed`) `data_text` is None and `record_data` holds the
    JSON-ready payload.
    """

    event: str
    data_text: str | None
    record_data: dict[str, Any] | None = None


def _valid_json(text: str) -> bool:
    try:
        if _SCAN(text, 0)[1] == len(text):
            return True
    except (StopIteration, ValueError, RecursionError):
        pass
    # Leading or trailing whitespace is still JSON; the full decoder allows it.
    try:
        _DECODER.decode(text)
    except (ValueError, RecursionError):
        return False
    return True


def _unparsed(raw: str, why: str) -> SSEItem:
    return SSEItem(UNPARSED_EVENT, None, {"raw": raw, "why": why})


def _parse_block(block: str) -> SSEItem:
    """One block (its lines, without the blank line that ends it) into what it dispatches."""
    event = ""
    data_lines: list[str] = []
    comments: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":"):
            comments.append(line[1:].removeprefix(" "))
            continue
        field, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data_lines.append(value)
        # `id`, `retry` and unknown fields change nothing a recording needs.
    if not data_lines:
        if comments and len(comments) == block.count("\n") + 1:
            return SSEItem(COMMENT_EVENT, None, {"text": "\n".join(comments)})
        return _unparsed(block, "no data line: a client dispatches nothing")
    data = "\n".join(data_lines)
    if not _valid_json(data):
        return _unparsed(block, "data is not JSON")
    if "\n" in data:
        # Valid JSON spread over several data: lines; re-encode so the recording stays one line.
        data = json.dumps(_DECODER.decode(data), ensure_ascii=False)
    # An empty event name is what EventSource dispatches as "message".
    return SSEItem(event or "message", data)


def fast_event(text: str) -> tuple[str, str] | None:
    """(event, data JSON text) for the exact shape upstream's emitter writes,
    `event: X\ndata: {json}\n\n`, else None (the general parser then decides). The hot path:
    a handful of string operations and one C call."""
    if not text.startswith("event: ") or not text.endswith("\n\n") or "\r" in text:
        return None
    nl = text.find("\n", 7)
    if not text.startswith("data: ", nl + 1) or text.find("\n", nl + 7) != len(text) - 2:
        return None
    data = text[nl + 7 : -2]
    try:
        if _SCAN(data, 0)[1] != len(data):
            return None
    except (StopIteration, ValueError, RecursionError):
        return None
    return text[7:nl], data


def carries_done(chunk: object) -> bool:
    """Whether a chunk holds a `done` event: cheap enough for the event loop's drop path,
    where it decides what is never dropped (the session's outcome depends on it)."""
    if isinstance(chunk, str):
        return chunk.startswith("event: done") or "\nevent: done" in chunk or "\revent: done" in chunk
    if isinstance(chunk, (bytes, bytearray)):
        return chunk.startswith(b"event: done") or b"\nevent: done" in chunk or b"\revent: done" in chunk
    return False


class SSEParser:
    """Incremental parser for one session's stream. `feed` and `close` never raise."""

    __slots__ = ("_buf", "_decoder", "_skip_lf", "idle")

    def __init__(self) -> None:
        # True when nothing is buffered: the next chunk starts a block, so `fast_event` may
        # be tried on it alone.
        self.idle = True
        self._buf = ""
        self._skip_lf = False  # the previous chunk ended in "\r": a leading "\n" completes it
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, chunk: object) -> list[SSEItem]:
        """The blocks completed by this chunk (str, bytes or anything a server yielded)."""
        try:
            text = self._as_text(chunk)
            if text is None:
                return [_unparsed(repr(chunk)[:10_000], f"not text: {type(chunk).__name__}")]
            if self.idle:
                fast = fast_event(text)
                if fast is not None:
                    return [SSEItem(fast[0], fast[1])]
            return self._feed_text(text)
        except Exception as exc:  # never let a strange chunk reach the stream
            self._buf = ""
            self._skip_lf = False
            self.idle = True
            return [_unparsed(repr(chunk)[:10_000], f"parser error: {type(exc).__name__}")]

    def close(self) -> list[SSEItem]:
        """What is left when the session ends: an unterminated block the client never saw."""
        rest = self._buf
        self._buf = ""
        self._skip_lf = False
        self.idle = True
        if rest.strip("\n") == "":
            return []
        return [_unparsed(rest, "unterminated block at end of stream")]

    def _as_text(self, chunk: object) -> str | None:
        if isinstance(chunk, str):
            return chunk
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            # Incremental, so a UTF-8 character split across two chunks decodes whole.
            if self._decoder is None:
                self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            return self._decoder.decode(bytes(chunk))
        return None

    def _feed_text(self, text: str) -> list[SSEItem]:
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        buf = self._buf + text
        items: list[SSEItem] = []
        start = 0
        while True:
            end = buf.find("\n\n", start)
            if end < 0:
                break
            # Blank lines between blocks dispatch nothing; a block never holds one inside.
            block = buf[start:end].lstrip("\n")
            start = end + 2
            if block:
                items.append(_parse_block(block))
        self._buf = buf[start:]
        self.idle = not self._buf and not self._skip_lf
        return items
