"""The emitter hook: record every session an agent-stream server sends, never touching the stream.

    from agent_stream_trace import TraceRecorder
    from agent_stream_trace.hook.fastapi import recorded_stream_response   # FastAPI servers
    from agent_stream_trace.hook.redaction import keep_lengths             # drop content, keep sizes

Modules: recorder (the public class), writer (the background thread), sse (reading SSE the
way a client does), lines (v1 lines), sinks (files, rotation), sampling, redaction, stats,
fastapi, live (spans when a session ends).
"""

from __future__ import annotations

from .recorder import TraceRecorder
from .redaction import keep_lengths
from .stats import RecorderStats

__all__ = ["RecorderStats", "TraceRecorder", "keep_lengths"]
