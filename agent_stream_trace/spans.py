"""The session → span mapping: one pure function, two callers (the OTLP exporter, the live hook).

    invoke_agent {agent}            root, openinference AGENT, trace id = the session UUID
     ├── chat {model}               one per turn (turn 1 starts at the first event, each
     │                              `turn` event starts the next), openinference LLM
     └── execute_tool {tool_name}   one per tool call, openinference TOOL

thinking, progress, creation and error events become span events of the turn they happen in.
Span ids are derived from (session, side, role, index), so exporting a session twice, or
exporting what the hook already sent live, yields the same ids. Token text, thinking text,
tool summaries, creation items and the messages (and details) of error and progress events are
content: present only with `include_content=True` (GenAI conventions).
The output is plain data (`SpanSpec`); `exporters.otlp_encode` turns it into OTLP protobuf and
`exporters.sdk_bridge` replays it through an OpenTelemetry SDK tracer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from .session import SessionTrace

# Bump when the mapping changes what a session looks like, so incremental exports resend.
MAPPING_VERSION = 1

ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_PROJECT_NAME = "PHOENIX_PROJECT_NAME"
DEFAULT_SERVICE_NAME = "agent-stream"

AttributeValue = str | bool | int | float | Sequence[str]
SpanKind = Literal["internal", "client"]
StatusCode = Literal["unset", "ok", "error"]

# Attribute names (OTel GenAI semantic conventions, OpenInference, Langfuse, ours).
OPERATION = "gen_ai.operation.name"
CONVERSATION_ID = "gen_ai.conversation.id"
SESSION_ID = "session.id"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_ID = "gen_ai.response.id"
AGENT_NAME = "gen_ai.agent.name"
TTFC = "gen_ai.response.time_to_first_chunk"
CLIENT_TTFC = "gen_ai.client.operation.time_to_first_chunk"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
OUTPUT_MESSAGES = "gen_ai.output.messages"
OI_KIND = "openinference.span.kind"
OI_PROJECT = "openinference.project.name"
OI_MODEL = "llm.model_name"
OI_TOOL_NAME = "tool.name"
OI_INPUT = "input.value"
OI_OUTPUT = "output.value"
OI_OUTPUT_MIME = "output.mime_type"
LANGFUSE_COMPLETION_START = "langfuse.observation.completion_start_time"

_AGENT_NAME_KEYS = ("gen_ai.agent.name", "agent_name", "agent")
# Root attributes read straight from a `sessions` column, in the order they are written.
_ROOT_COLUMNS = tuple((f"agent_stream.{column}", column) for column in (
    "attribution", "token_chars", "max_gap_s", "event_count", "turns", "tool_calls", "tool_errors",
    "orphaned_tools", "errors", "lost_lines", "total_cost_usd",
))


# NamedTuples rather than frozen dataclasses: as immutable, and built 4x faster (a frozen
# dataclass sets each field through object.__setattr__), which counts at 16k spans per export.
class SpanEventSpec(NamedTuple):
    name: str
    time_ns: int
    attributes: Mapping[str, AttributeValue] = MappingProxyType({})


class SpanSpec(NamedTuple):
    """One span as plain data. Ids are big-endian bytes (16 for the trace, 8 for spans)."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: SpanKind
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    events: tuple[SpanEventSpec, ...] = ()
    status: StatusCode = "unset"
    status_message: str = ""


# SpanSpec(...) and SpanEventSpec(...) without the NamedTuple's Python-level __new__ (every
# field is always given here): 0.18 instead of 0.32 us a span, 20k times per 3000 sessions.
_new_span = functools.partial(tuple.__new__, SpanSpec)
_new_span_event = functools.partial(tuple.__new__, SpanEventSpec)


def resource_attributes(service_name: str | None = None, project: str | None = None) -> dict[str, str]:
    """`service.name` (argument, then $OTEL_SERVICE_NAME, then "agent-stream") and the Phoenix
    project (argument, then $PHOENIX_PROJECT_NAME, then the service name)."""
    service = service_name or os.environ.get(ENV_SERVICE_NAME) or DEFAULT_SERVICE_NAME
    return {"service.name": service, OI_PROJECT: project or os.environ.get(ENV_PROJECT_NAME) or service}


def trace_id_for(session_id: str) -> bytes:
    """The session UUID's 128 bits; a non-UUID id (never written by our hook) is hashed."""
    if len(session_id) == 36 and session_id[8] == session_id[13] == session_id[18] == session_id[23] == "-":
        # The canonical form (what the hook writes): the same bytes as uuid.UUID, parsed faster.
        try:
            raw = bytes.fromhex(session_id.replace("-", ""))
        except ValueError:
            raw = b""
        if len(raw) == 16:
            return raw
    try:
        return uuid.UUID(session_id).bytes
    except ValueError:
        return hashlib.blake2b(session_id.encode(), digest_size=16).digest()


def span_id_for(session_id: str, side: str, role: str, index: int) -> bytes:
    """Deterministic, non-zero 64-bit span id of (session, side, role, index)."""
    return _SpanIds(session_id, side)(role, index)


class _SpanIds:
    """span_id_for of one session: the hash state after the session's prefix is kept and copied
    for each span (the same digest as hashing the whole string, for less work)."""

    __slots__ = ("_prefix",)

    def __init__(self, session_id: str, side: str) -> None:
        self._prefix = hashlib.blake2b(f"{session_id.lower()}\x1f{side}\x1f".encode(), digest_size=8)

    def __call__(self, role: str, index: int) -> bytes:
        h = self._prefix.copy()
        suffix = _ID_SUFFIXES.get((role, index))
        if suffix is None:
            suffix = f"{role}\x1f{index}".encode()
            if len(_ID_SUFFIXES) < 4096:
                _ID_SUFFIXES[(role, index)] = suffix
        h.update(suffix)
        digest = h.digest()
        return digest if digest != _ZERO_ID else b"\x00" * 7 + b"\x01"


# The "role\x1findex" bytes of span ids, the same few for every session (16k span ids per
# 3000 sessions: building them each time was a third of an id's cost).
_ID_SUFFIXES: dict[tuple[str, int], bytes] = {}
_ATTRS_KEYS: dict[Any, str] = {}  # recording attr key -> "agent_stream.attrs.<key>"
_ZERO_ID = bytes(8)


@functools.lru_cache(maxsize=64)
def _iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


def _iso_utc(ns: int) -> str:
    # Called for every turn: the date is cached per day, the time of day is arithmetic and
    # one %-format (4x cheaper than strftime, checked against it on 200k instants).
    seconds, sub = divmod(ns, 1_000_000_000)
    day, of_day = divmod(seconds, 86_400)
    hours, rest = divmod(of_day, 3600)
    minutes, secs = divmod(rest, 60)
    return "%sT%02d:%02d:%02d.%06dZ" % (_iso_day(day), hours, minutes, secs, sub // 1000)


def _clean(attrs: dict[str, Any]) -> dict[str, AttributeValue]:
    """Drop None values: OTLP has no null attribute."""
    if None not in attrs.values():  # most turn and tool spans: no copy
        return attrs
    return {k: v for k, v in attrs.items() if v is not None}


def _text(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


class _Turn:
    __slots__ = ("number", "start_t", "end_t", "first_token_t", "token_chars", "token_events", "text",
                 "events", "error")

    def __init__(self, number: int, start_t: float) -> None:
        self.number = number
        self.start_t = start_t
        self.end_t = start_t
        self.first_token_t: float | None = None
        self.token_chars = 0
        self.token_events = 0
        self.text: list[str] = []
        self.events: list[SpanEventSpec] = []
        self.error: str | None = None


def _span_event(name: str, data: Any, time_ns: int, include_content: bool) -> tuple[SpanEventSpec, str | None]:
    """The span event of a thinking/progress/creation/error line, and an error message if any."""
    d = data if isinstance(data, dict) else {}
    error: str | None = None
    if name == "thinking":
        text = _text(d, "text")
        attrs: dict[str, Any] = {"agent_stream.thinking.chars": len(text)}
        if include_content:
            attrs["agent_stream.thinking.text"] = text
    elif name == "progress":
        # Only the values of the expected types, None (OTLP has no null) and others left out.
        # The message is content (hook/redaction.py CONTENT_FIELDS): sent only when opted in.
        attrs = {}
        for key, field, types in _PROGRESS_FIELDS if include_content else _PROGRESS_FIELDS_NO_CONTENT:
            value = d.get(field)
            if isinstance(value, types):
                attrs[key] = value
        sub = d.get("sub_progress")
        if isinstance(sub, dict):
            for key, field, types in _SUB_PROGRESS_FIELDS:
                value = sub.get(field)
                if isinstance(value, types):
                    attrs[key] = value
    elif name == "creation":
        attrs = {}
        for key, field, types in _CREATION_FIELDS:
            value = d.get(field)
            if isinstance(value, types):
                attrs[key] = value
        if include_content and d.get("items") is not None:
            attrs["agent_stream.creation.items"] = _json_text(d.get("items"))
    else:  # error
        # The message and details may quote what the user or the model wrote: content, sent
        # (and quoted in span statuses) only when opted in; the type is a label, always sent.
        error_type = _text(d, "error_type") or "error"
        message = _text(d, "message") if include_content else ""
        attrs = {"exception.type": error_type}
        if include_content:
            attrs["exception.message"] = message
            attrs["agent_stream.error.details"] = _json_text(d["details"]) if d.get("details") is not None else None
        error = f"{error_type}: {message}" if message else error_type
    return _new_span_event((name, time_ns, _clean(attrs))), error


# (attribute, data field, accepted types) of progress and creation span events, in order.
_Fields = tuple[tuple[str, str, "type | tuple[type, ...]"], ...]
_PROGRESS_FIELDS: _Fields = (
    ("agent_stream.progress.step", "step", (str, int)),
    ("agent_stream.progress.percentage", "percentage", (int, float)),
    ("agent_stream.progress.message", "message", str),
)
_PROGRESS_FIELDS_NO_CONTENT: _Fields = tuple(f for f in _PROGRESS_FIELDS if f[1] != "message")
_SUB_PROGRESS_FIELDS: _Fields = (
    ("agent_stream.progress.current", "current", int),
    ("agent_stream.progress.total", "total", int),
)
_CREATION_FIELDS: _Fields = (
    ("agent_stream.creation.type", "creation_type", str),
    ("agent_stream.creation.count", "count", int),
    (TOOL_CALL_ID, "tool_use_id", str),
)

_SPAN_EVENTS = frozenset(("thinking", "progress", "creation", "error"))
_DATA_EVENTS = _SPAN_EVENTS | {"turn", "tool_use"}
_CONTENT_DATA_EVENTS = _DATA_EVENTS | {"tool_result"}


def data_events(include_content: bool = False) -> frozenset[str]:
    """The events whose `data` session_spans reads (tokens aside, see load_session_traces):
    the loader leaves the data of the others (done, tool_result, recorder records) unparsed."""
    return _CONTENT_DATA_EVENTS if include_content else _DATA_EVENTS


def session_spans(trace: SessionTrace, *, include_content: bool = False) -> tuple[SpanSpec, ...]:
    """The spans of one session, root first, then turns, then tool calls."""
    s = trace.session
    sid = trace.session_id
    side = trace.side
    trace_id = trace_id_for(sid)
    base = trace.started_ns

    # Times in Unix nanoseconds, exact to the microsecond (round() of a float is an int). The
    # turn and tool loops write the same expression inline: one call fewer per time, 40k times.
    def ns(t: float | None) -> int:
        return base + round((t or 0.0) * 1_000_000) * 1000

    # --- walk the events once: turns, their span events, tool summaries -------------------
    turns: list[_Turn] = []
    turn: _Turn | None = None
    last_t = 0.0
    tool_inputs: dict[str, str] = {}
    tool_outputs: dict[str, str] = {}
    tool_turn: dict[str, int] = {}
    error_messages: list[str] = []
    for _seq, ev_t, name, data in trace.events:
        t = ev_t if ev_t is not None else last_t
        if t > last_t:  # not max(): this runs once per event row
            last_t = t
        if not name:
            name = ""
        elif name[0] == "_":
            continue  # recorder records: they end the session, they are not wire events
        if turn is None:
            turn = _Turn(1, t)
            turns.append(turn)
        if name == "token":
            # A token event, or a run of them collapsed by the loader (count/chars/t_last).
            if not isinstance(data, dict):
                data = {}
            text = data.get("text")
            if not isinstance(text, str):
                text = ""
            if turn.first_token_t is None:
                turn.first_token_t = t
            turn.token_chars += data.get("chars", len(text))
            turn.token_events += data.get("count", 1)
            if include_content:
                turn.text.append(text)
            run_last = data.get("t_last")
            if isinstance(run_last, (int, float)) and run_last > t:
                t = run_last
                if t > last_t:
                    last_t = t
        elif name == "tool_use" or name == "tool_result":
            if isinstance(data, dict):
                tool_id = data.get("tool_use_id")
                if isinstance(tool_id, str):
                    if name == "tool_use":
                        if include_content:  # summaries are content
                            tool_inputs[tool_id] = _text(data, "input_summary")
                        tool_turn.setdefault(tool_id, turn.number)
                    elif include_content:
                        tool_outputs[tool_id] = _text(data, "output_summary")
        elif name == "turn":
            number = data.get("turn_number") if isinstance(data, dict) else None
            # An explicit "turn 1" at the very start continues the implicit first turn.
            if not (number == turn.number and turn.token_events == 0 and not turn.events):
                number = number if isinstance(number, int) and number > turn.number else turn.number + 1
                turn.end_t = t
                turn = _Turn(number, t)
                turns.append(turn)
        elif name in _SPAN_EVENTS:
            span_event, error = _span_event(name, data, ns(t), include_content)
            turn.events.append(span_event)
            if error is not None:
                error_messages.append(error)
                turn.error = turn.error or error
        turn.end_t = t

    duration = s.get("duration_s")
    end_t = max(float(duration) if duration is not None else 0.0, last_t)
    if turns:
        turns[-1].end_t = end_t

    get = s.get
    outcome = get("outcome")
    end_reason = get("end_reason")
    closed = outcome in ("done", "synthetic_done")
    model = get("model")
    if not (isinstance(model, str) and model):
        model = None
    attrs_in = get("attrs")
    if not isinstance(attrs_in, dict):
        attrs_in = {}
    agent = None
    for key in _AGENT_NAME_KEYS:
        value = attrs_in.get(key)
        if isinstance(value, str):
            agent = value
            break

    # --- root --------------------------------------------------------------------------------
    # Attribute maps are built without the None values OTLP cannot carry (rather than built
    # whole, then copied without them), and the keys every turn or tool span of the session
    # shares are built once per session and copied: 4x cheaper per turn span, measured.
    span_id = _SpanIds(sid, side)
    root_id = span_id("root", 0)
    first_token_t = None
    for tn in turns:
        if tn.first_token_t is not None:
            first_token_t = tn.first_token_t
            break
    root_attrs: dict[str, Any] = {
        OPERATION: "invoke_agent", CONVERSATION_ID: sid, SESSION_ID: sid, OI_KIND: "AGENT", REQUEST_STREAM: True,
    }
    if agent is not None:
        root_attrs[AGENT_NAME] = agent
    # The session's model is the done's, else the one its header's attrs asked for (ingest
    # sessions.py): without a done that named it, it is the requested model, not the response's.
    model_key = RESPONSE_MODEL if outcome == "done" or attrs_in.get("model") != model else REQUEST_MODEL
    if model is not None:
        root_attrs[model_key] = model
    value = get("message_id")
    if value is not None:
        root_attrs[RESPONSE_ID] = value
    ttft = get("ttft_s")
    if ttft is not None:
        root_attrs[TTFC] = root_attrs[CLIENT_TTFC] = ttft
    if first_token_t is not None:
        root_attrs[LANGFUSE_COMPLETION_START] = _iso_utc(ns(first_token_t))
    value = get("output_tokens")
    if value is not None:
        root_attrs[OUTPUT_TOKENS] = value
    root_attrs["agent_stream.side"] = side
    if outcome is not None:
        root_attrs["agent_stream.outcome"] = outcome
    if end_reason is not None:
        root_attrs["agent_stream.end_reason"] = end_reason
    root_attrs["agent_stream.synthetic_done"] = outcome == "synthetic_done"
    for key, column in _ROOT_COLUMNS:
        value = get(column)
        if value is not None:
            root_attrs[key] = value
    for key, value in attrs_in.items():
        if isinstance(value, (str, bool, int, float)):
            name = _ATTRS_KEYS.get(key)
            if name is None:
                name = f"agent_stream.attrs.{key}"
                if len(_ATTRS_KEYS) < 4096:  # the same few recording attrs in every session
                    _ATTRS_KEYS[key] = name
            root_attrs[name] = value
    if include_content and turns:
        root_attrs[OI_OUTPUT] = "".join("".join(tn.text) for tn in turns)
        root_attrs[OI_OUTPUT_MIME] = "text/plain"
    problems: list[str] = []
    if outcome == "synthetic_done":
        problems.append(f"session ended without done ({end_reason or 'unknown cause'})")
    if error_messages:
        problems.append(f"{len(error_messages)} error event(s), first: {error_messages[0]}")
    root_status: StatusCode = "error" if problems else ("ok" if outcome == "done" else "unset")
    spans: list[SpanSpec] = [
        SpanSpec(
            trace_id, root_id, None, f"invoke_agent {agent}" if agent else "invoke_agent", "internal",
            base, ns(end_t), root_attrs, (), root_status, "; ".join(problems),
        )
    ]

    # --- one chat span per turn --------------------------------------------------------------
    chat_name = f"chat {model}" if model else "chat"
    turn_common: dict[str, Any] = {
        OPERATION: "chat", CONVERSATION_ID: sid, SESSION_ID: sid, OI_KIND: "LLM", REQUEST_STREAM: True,
    }
    if model is not None:
        turn_common[model_key] = turn_common[OI_MODEL] = model
    for index, tn in enumerate(turns, start=1):
        turn_attrs = turn_common.copy()
        if tn.first_token_t is not None:
            turn_attrs[TTFC] = turn_attrs[CLIENT_TTFC] = tn.first_token_t - tn.start_t
            turn_attrs[LANGFUSE_COMPLETION_START] = _iso_utc(base + round(tn.first_token_t * 1_000_000) * 1000)
        turn_attrs["agent_stream.turn_number"] = tn.number
        turn_attrs["agent_stream.token_chars"] = tn.token_chars
        turn_attrs["agent_stream.token_events"] = tn.token_events
        if include_content:
            text = "".join(tn.text)
            turn_attrs[OI_OUTPUT] = text
            turn_attrs[OI_OUTPUT_MIME] = "text/plain"
            turn_attrs[OUTPUT_MESSAGES] = json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": text}]}], ensure_ascii=False
            )
        status: StatusCode = "ok" if closed else "unset"
        message = ""
        if tn.error is not None:
            status, message = "error", tn.error
        elif outcome == "synthetic_done" and index == len(turns):
            status, message = "error", f"stream ended without done ({end_reason or 'unknown cause'})"
        spans.append(_new_span((
            trace_id, span_id("turn", index), root_id, chat_name, "client",
            base + round(tn.start_t * 1_000_000) * 1000, base + round(max(tn.end_t, tn.start_t) * 1_000_000) * 1000,
            turn_attrs, tuple(tn.events), status, message,
        )))

    # --- one execute_tool span per tool call -----------------------------------------------------
    tool_common: dict[str, Any] = {OPERATION: "execute_tool", CONVERSATION_ID: sid, SESSION_ID: sid, OI_KIND: "TOOL"}
    for index, call in enumerate(trace.tool_calls, start=1):
        start_t = call.started_t if call.started_t is not None else (call.ended_t or 0.0)
        stop_t = call.ended_t if call.ended_t is not None else end_t
        tool_id = call.tool_use_id
        tool_attrs = tool_common.copy()
        tool_attrs[TOOL_NAME] = tool_attrs[OI_TOOL_NAME] = call.tool_name
        tool_attrs[TOOL_CALL_ID] = tool_id
        tool_attrs["agent_stream.tool.status"] = call.status
        tool_attrs["agent_stream.tool.latency_ms"] = call.latency_ms
        tool_attrs["agent_stream.tool.reported_ms"] = call.reported_ms
        tool_attrs["agent_stream.turn_number"] = tool_turn.get(tool_id) if tool_id else None
        if include_content and tool_id:
            tool_attrs[OI_INPUT] = tool_inputs.get(tool_id)
            tool_attrs[TOOL_ARGUMENTS] = tool_inputs.get(tool_id)
            tool_attrs[OI_OUTPUT] = tool_outputs.get(tool_id)
            tool_attrs[TOOL_RESULT] = tool_outputs.get(tool_id)
        if call.status == "error":
            tstatus: StatusCode = "error"
            tmessage = f"tool {call.tool_name} returned status=error"
        elif call.status == "orphaned":
            tstatus = "error"
            tmessage = f"tool {call.tool_name} never returned a result (orphaned)"
        else:
            tstatus, tmessage = ("ok" if call.status == "done" else "unset"), ""
        spans.append(_new_span((
            trace_id, span_id("tool", index), root_id,
            f"execute_tool {call.tool_name}" if call.tool_name else "execute_tool", "internal",
            base + round(start_t * 1_000_000) * 1000, base + round(max(stop_t, start_t) * 1_000_000) * 1000,
            _clean(tool_attrs), (), tstatus, tmessage,
        )))
    return tuple(spans)
