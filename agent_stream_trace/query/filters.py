"""Which sessions a query covers: time range, model, outcome, side, attrs equality.

A SessionFilter becomes the named arguments of the metric macros (query/sql/*.sql), always as
bound parameters: user input never becomes SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, get_args

from ..errors import UsageError

Bucket = Literal["hour", "day", "week", "month"]
BUCKETS: tuple[str, ...] = get_args(Bucket)
OUTCOMES = ("done", "synthetic_done", "open")
# Plain grouping keys; "attrs.KEY" groups by one key of the session's attrs.
GROUP_KEYS = ("model", "side", "outcome")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

TimeArg = datetime | date | str | None


def parse_time(value: TimeArg, *, now: datetime | None = None) -> datetime | None:
    """A point in time from `24h` / `7d` / `30m` (that long before now), an ISO date
    (`2026-11-24`, midnight UTC) or an ISO datetime (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        try:
            return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
        except OverflowError:  # before year 1: every session
            return datetime.min.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"cannot read {value!r} as a time",
            hint="use a duration before now (30m, 24h, 7d, 2w) or an ISO date/time (2026-11-24)",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def check_group_by(group_by: str | None) -> str | None:
    """Validate a grouping key: model, side, outcome or attrs.KEY (None: no grouping)."""
    if group_by is None or group_by in GROUP_KEYS:
        return group_by
    if group_by.startswith("attrs.") and len(group_by) > len("attrs."):
        return group_by
    raise UsageError(
        f"cannot group by {group_by!r}",
        hint=f"use one of {', '.join(GROUP_KEYS)} or attrs.KEY (a key of the session attrs)",
    )


def check_bucket(bucket: str | None) -> str | None:
    if bucket is None or bucket in BUCKETS:
        return bucket
    raise UsageError(f"unknown time bucket {bucket!r}", hint=f"use one of {', '.join(BUCKETS)}")


def parse_attr_condition(text: str) -> tuple[str, str]:
    """`attrs.route=/chat` (or `route=/chat`) as (key, value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if key.startswith("attrs."):
        key = key[len("attrs."):]
    if not sep or not key:
        raise UsageError(f"cannot read the condition {text!r}", hint="write it as attrs.KEY=VALUE")
    return key, value


@dataclass(frozen=True)
class SessionFilter:
    """Sessions started in [since, until), of one model / outcome / side, whose attrs hold
    every (key, value) pair of `attrs` (values compared as text)."""

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    outcome: str | None = None
    side: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        *,
        since: TimeArg = None,
        until: TimeArg = None,
        model: str | None = None,
        outcome: str | None = None,
        side: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> SessionFilter:
        """Build a filter from friendly values (`since="24h"`, `attrs={"route": "/chat"}`)."""
        if outcome is not None and outcome not in OUTCOMES:
            raise UsageError(f"unknown outcome {outcome!r}", hint=f"use one of {', '.join(OUTCOMES)}")
        pairs = tuple((str(k), _as_text(v)) for k, v in (attrs or {}).items())
        return cls(
            since=parse_time(since, now=now),
            until=parse_time(until, now=now),
            model=model,
            outcome=outcome,
            side=side,
            attrs=pairs,
        )

    def macro_args(self) -> tuple[str, dict[str, Any]]:
        """The named-argument list for a metric macro, and its bound parameters."""
        params: dict[str, Any] = {
            "since": self.since,
            "until": self.until,
            "model_filter": self.model,
            "outcome_filter": self.outcome,
            "side_filter": self.side,
            "attr_keys": [k for k, _ in self.attrs] if self.attrs else None,
            "attr_values": [v for _, v in self.attrs] if self.attrs else None,
        }
        # Typed casts: a NULL parameter alone would leave DuckDB guessing its type.
        casts = {"since": "TIMESTAMPTZ", "until": "TIMESTAMPTZ", "attr_keys": "VARCHAR[]",
                 "attr_values": "VARCHAR[]"}
        text = ", ".join(
            f"{name} := CAST(${name} AS {casts.get(name, 'VARCHAR')})" for name in params
        )
        return text, params


def _as_text(value: Any) -> str:
    # attrs values are compared as text (json_extract_string): True is "true" in JSON.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
