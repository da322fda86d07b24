"""SpanSpecs through an OpenTelemetry SDK TracerProvider: the live hook's path.

The hook sends a session's spans through the application's own `TracerProvider` (its
processors, exporters and sampler), and they must be the very spans the bulk exporter sends:
same trace id (the session UUID), same deterministic span ids, names, parents, attributes,
events, statuses and timestamps. The SDK takes start/end/event times as arguments; ids come
from its IdGenerator, so our tracer gets a generator that hands out the ids we set just before
each `start_span` (thread-local, falling back to the provider's generator for anything else).
Also the "SDK tracer path" baseline of benchmarks/export.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..errors import MissingExtraError
from ..session import SessionTrace
from ..spans import SpanSpec, session_spans

try:
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("live spans through an OpenTelemetry SDK", "otlp") from exc

TRACER_NAME = "agent_stream_trace"

_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER}
_STATUS = {"unset": StatusCode.UNSET, "ok": StatusCode.OK, "error": StatusCode.ERROR}


class _PresetIds(IdGenerator):
    """Returns the ids set for the next span on this thread, else the wrapped generator's."""

    def __init__(self, fallback: IdGenerator) -> None:
        self._fallback = fallback
        self._next = threading.local()

    def preset(self, trace_id: int, span_id: int) -> None:
        self._next.trace_id = trace_id
        self._next.span_id = span_id

    def generate_trace_id(self) -> int:
        value = getattr(self._next, "trace_id", None)
        if value is None:
            return self._fallback.generate_trace_id()
        self._next.trace_id = None
        return value

    def generate_span_id(self) -> int:
        value = getattr(self._next, "span_id", None)
        if value is None:
            return self._fallback.generate_span_id()
        self._next.span_id = None
        return value


_install_lock = threading.Lock()


def _tracer(provider: TracerProvider) -> tuple[Any, _PresetIds]:
    from .. import __version__

    tracer = provider.get_tracer(TRACER_NAME, __version__)
    if isinstance(tracer, trace_api.NoOpTracer):
        return tracer, _PresetIds(provider.id_generator)
    with _install_lock:
        # Our scope's tracer is cached by the provider: install the generator once on it.
        if not isinstance(tracer.id_generator, _PresetIds):
            tracer.id_generator = _PresetIds(tracer.id_generator)
    return tracer, tracer.id_generator


def emit_spans(specs: Iterable[SpanSpec], provider: TracerProvider) -> int:
    """Start and end one SDK span per SpanSpec (parents before children, as session_spans
    orders them); returns how many were emitted. Spans go to the provider's processors."""
    tracer, ids = _tracer(provider)
    by_id: dict[bytes, Any] = {}
    opened: list[tuple[Any, SpanSpec]] = []
    for spec in specs:
        parent = by_id.get(spec.parent_span_id) if spec.parent_span_id else None
        # An explicitly invalid parent makes a root span whatever the caller's current context.
        context = trace_api.set_span_in_context(parent if parent is not None else trace_api.INVALID_SPAN)
        ids.preset(int.from_bytes(spec.trace_id, "big"), int.from_bytes(spec.span_id, "big"))
        span = tracer.start_span(
            spec.name, context=context, kind=_KINDS[spec.kind], attributes=dict(spec.attributes),
            start_time=spec.start_ns,
        )
        for event in spec.events:
            span.add_event(event.name, dict(event.attributes), timestamp=event.time_ns)
        if spec.status != "unset":
            span.set_status(Status(_STATUS[spec.status], spec.status_message or None))
        by_id[spec.span_id] = span
        opened.append((span, spec))
    # Children end before their parent, each at its recorded time.
    for span, spec in reversed(opened):
        span.end(end_time=spec.end_ns)
    return len(opened)


def emit_session(trace: SessionTrace, provider: TracerProvider, *, include_content: bool = False) -> int:
    """The spans of one session through `provider` (what the hook calls, from its own
    background thread, which logs and counts whatever this raises)."""
    return emit_spans(session_spans(trace, include_content=include_content), provider)
