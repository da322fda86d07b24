"""Settings resolved in one fixed order: argument, then environment variable, then default.

Environment variable names are public (the README documents them); keep them here only.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

ENV_DB = "AGENT_STREAM_DB"
ENV_OPEN_WINDOW = "AGENT_STREAM_OPEN_WINDOW"
ENV_STALL_THRESHOLD = "AGENT_STREAM_STALL_THRESHOLD"

DEFAULT_DB = "agent-stream.duckdb"
# A session without done stays "open" while its file was written within this many seconds.
DEFAULT_OPEN_WINDOW_S = 300.0
# The usual heartbeat interval: a silence this long is a stall.
DEFAULT_STALL_THRESHOLD_S = 15.0


def resolve_db_path(arg: str | os.PathLike[str] | None = None) -> Path:
    """`--db` wins, then $AGENT_STREAM_DB, then ./agent-stream.duckdb."""
    if arg:
        return Path(arg)
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env)
    return Path(DEFAULT_DB)


def _resolve_seconds(arg: float | None, env_name: str, default: float, option: str) -> float:
    if arg is not None:
        value, named = float(arg), option
    else:
        named = f"${env_name}"
        raw = os.environ.get(env_name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"${env_name} must be a number of seconds, got {raw!r}") from None
    if not value >= 0:  # NaN too: it compares false with everything, so nothing would ever be idle or final
        raise UsageError(f"{named} must be a number of seconds, 0 or more, got {value}")
    return value


def resolve_open_window(arg: float | None = None) -> float:
    """Seconds a file may stay quiet before its unfinished sessions count as synthetic done."""
    return _resolve_seconds(arg, ENV_OPEN_WINDOW, DEFAULT_OPEN_WINDOW_S, "--open-window")


def resolve_stall_threshold(arg: float | None = None) -> float:
    """Seconds of silence that make a stall."""
    return _resolve_seconds(arg, ENV_STALL_THRESHOLD, DEFAULT_STALL_THRESHOLD_S, "--stall-threshold")
