"""Number formatting for terminal reports (None shows as a dash, never as 'None')."""

from __future__ import annotations

from datetime import datetime

DASH = "-"


def pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    if abs(value) < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def millis(value: float | None) -> str:
    return DASH if value is None else seconds(value / 1000)


def num(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def when(value: datetime | None) -> str:
    return DASH if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def table(frame: object) -> str:
    """A plain aligned text table of a polars DataFrame whose cells are already strings or
    numbers: numbers right-aligned, missing values as a dash, never wrapped."""
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    headers = list(frame.columns)
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    cells = [[_cell(v) for v in row] for row in frame.iter_rows()]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join(["  " + line(headers)] + ["  " + line(r) for r in cells])


def _cell(value: object) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_json(value: object) -> str:
    """JSON for reports: datetimes as ISO-8601, anything else unknown as its text."""
    import json
    from datetime import date

    def default(v: object) -> object:
        return v.isoformat() if isinstance(v, (datetime, date)) else str(v)

    return json.dumps(value, default=default, indent=2, ensure_ascii=False)
