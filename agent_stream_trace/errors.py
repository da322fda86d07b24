"""The exceptions the library raises, under one base class.

    AgentStreamTraceError
     ├── UsageError          a bad argument or option value (CLI exit 2)
     ├── InputPathError      a named path is missing or unreadable (CLI exit 2)
     ├── DatabaseError       the DuckDB file cannot be opened or is locked
     ├── MissingExtraError   an optional feature whose extra is not installed
     └── ExportError         an exporter could not deliver (backend down, 4xx)

CLIs turn these into one clear line with a hint; background work (recording, live spans)
never raises into its caller, it logs and counts instead.
"""

from __future__ import annotations


class AgentStreamTraceError(Exception):
    """Base class of every error this library raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UsageError(AgentStreamTraceError):
    """An argument or option has a value the library cannot use."""


class InputPathError(AgentStreamTraceError):
    """A path named as input does not exist or cannot be read."""


class DatabaseError(AgentStreamTraceError):
    """The DuckDB database cannot be opened (missing, locked, not a DuckDB file)."""


class MissingExtraError(AgentStreamTraceError):
    """An optional feature was used without its extra installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra",
            hint=f"pip install 'agent-stream-trace[{extra}]'",
        )
        self.extra = extra


class ExportError(AgentStreamTraceError):
    """An exporter gave up: the backend was unreachable or refused the data."""


# The message of the RuntimeError DuckDB raises when it notices Ctrl-C itself (instead of
# Python raising KeyboardInterrupt): both mean the person pressed Ctrl-C.
DUCKDB_INTERRUPTED = "Query interrupted"
