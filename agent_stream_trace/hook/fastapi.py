"""FastAPI convenience: upstream's `agent_stream_response`, recorded, with the session id sent.

    from agent_stream_trace.hook.fastapi import recorded_stream_response

    @app.post("/api/chat")
    async def chat(req: ChatRequest):
        return recorded_stream_response(generate(req), recorder, route="/api/chat")

The response is exactly what `agent_stream.fastapi.agent_stream_response` builds (media type
`text/event-stream`, `Cache-Control: no-cache`, `X-Accel-Buffering: no`) plus the header
`X-Agent-Stream-Session: <session uuid>`, so a client log line can be joined with the
server's recording of the same session.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any, Final

from ..errors import MissingExtraError
from .recorder import TraceRecorder

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse

SESSION_HEADER: Final = "X-Agent-Stream-Session"


def recorded_stream_response(
    source: AsyncIterable[str], recorder: TraceRecorder, /, **attrs: Any
) -> StreamingResponse:
    """`agent_stream_response(recorder.record(source, **attrs))` plus the session id header."""
    try:
        from agent_stream.fastapi import agent_stream_response  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtraError("recorded_stream_response", "hook") from None
    session_id = attrs.pop("session_id", None) or TraceRecorder.new_session_id()
    response = agent_stream_response(recorder.record(source, session_id=session_id, **attrs))
    response.headers[SESSION_HEADER] = session_id
    return response
