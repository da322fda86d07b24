"""agent-stream-trace: make every agent-stream SSE session visible.

Public API (names are imported lazily so that `import agent_stream_trace` stays cheap and an
optional extra is only needed by the feature that uses it):

- `TraceRecorder`: the emitter hook that records sessions as `.jsonl` (format v1).
- `ingest`, `IngestOptions`, `IngestReport`: recordings into DuckDB.
- `TraceStore`: metrics and session history as polars DataFrames.
- `connect`: open (and migrate) the DuckDB database.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TraceRecorder": "agent_stream_trace.hook.recorder",
    "ingest": "agent_stream_trace.ingest.pipeline",
    "IngestOptions": "agent_stream_trace.ingest.pipeline",
    "IngestReport": "agent_stream_trace.ingest.pipeline",
    "TraceStore": "agent_stream_trace.query.store",
    "connect": "agent_stream_trace.db",
    "AgentStreamTraceError": "agent_stream_trace.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_stream_trace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
