"""`agent-stream-trace show SESSION_ID`: one session's timeline in the terminal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..cli_support import add_db_argument, add_format_argument, frame_to_text
from . import fmt
from .store import SessionDetail, TraceStore
from .timeline import TimelineRow, clip, end_record, timeline

DESCRIPTION = """\
One session's timeline: every recorded line with its time since the session start, the
silences between them (a gap that reaches the stall threshold is marked STALL), the tool
calls with their latency and status, and how the session ended."""

EPILOG = """\
examples:
  agent-stream-trace show 948ef008            (a unique prefix of the id is enough)
  agent-stream-trace show 948ef008 --tokens   (every token event, not runs of them)
  agent-stream-trace show 948ef008 --format json
"""

# Silences shorter than this are not worth a mark; from the threshold on they are stalls.
GAP_MARK_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID", help="a session id or a unique prefix of one")
    add_db_argument(parser)
    parser.add_argument("--side", choices=("server", "client"),
                        help="which recording of the session (default: server when both exist)")
    parser.add_argument("--tokens", action="store_true",
                        help="list every token event instead of folding runs of them into one line")
    parser.add_argument("--stall-threshold", type=float, metavar="SECONDS",
                        help="silence that counts as a stall (default: $AGENT_STREAM_STALL_THRESHOLD, else 15)")
    add_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    store = TraceStore(args.db, stall_threshold_s=args.stall_threshold)
    with store:
        detail = store.session(args.session_id, args.side)
    if args.format == "json":
        print(fmt.to_json({
            "session": _decoded(detail.session, "attrs"),
            "events": [_decoded(r, "data") for r in detail.events.iter_rows(named=True)],
            "tool_calls": detail.tool_calls.to_dicts(),
        }))
    elif args.format == "csv":
        print(frame_to_text(detail.events, "csv"))
    else:
        print(render_text(detail, fold_tokens=not args.tokens))
    return 0


def _decoded(row: dict[str, Any], column: str) -> dict[str, Any]:
    """The row with its JSON text column as an object (for --format json)."""
    value = row.get(column)
    return {**row, column: json.loads(value) if isinstance(value, str) else value}


def _header(detail: SessionDetail) -> list[str]:
    s = detail.session
    lines = [
        f"session   {s['session_id']} ({s['side']})   started {fmt.when(s['started_at'])} UTC",
        f"model     {s['model'] or '-'}   attribution {s['attribution']}   source {s['source_file'] or '-'}",
        f"outcome   {s['outcome']}   end_reason {s['end_reason'] or '-'}   duration {fmt.seconds(s['duration_s'])}",
        f"metrics   ttft {fmt.seconds(s['ttft_s'])} · {fmt.num(s['token_velocity_cps'])} chars/s · "
        f"turns {fmt.num(s['turns'])} · tools {fmt.num(s['tool_calls'])} · longest gap "
        f"{fmt.seconds(s['max_gap_s'])}",
    ]
    if s.get("attrs") not in (None, "{}", {}):
        lines.append(f"attrs     {s['attrs']}")
    return lines


def _fold(rows: list[TimelineRow]) -> list[tuple[TimelineRow, int, float | None, str]]:
    """Runs of token events become one line (first row, run length, last t, their text),
    except where a gap worth marking interrupts the run."""
    out: list[tuple[TimelineRow, int, float | None, str]] = []
    for row in rows:
        marked = row.gap_s is not None and row.gap_s >= GAP_MARK_S
        if out and row.event == "token" and out[-1][0].event == "token" and not marked:
            first, count, _, text = out[-1]
            out[-1] = (first, count + 1, row.t, text + (row.text or ""))
        else:
            out.append((row, 1, row.t, row.text or ""))
    return out


def render_text(detail: SessionDetail, *, fold_tokens: bool = True) -> str:
    lines = _header(detail) + ["", "      t   gap        event         details"]
    rows = timeline(detail)
    entries = _fold(rows) if fold_tokens else [(r, 1, r.t, r.text or "") for r in rows]
    for row, count, last_t, text in entries:
        gap = ""
        if row.gap_s is not None and row.gap_s >= GAP_MARK_S:
            gap = f"+{row.gap_s:.2f}s"
        mark = f"  << STALL {row.gap_s:.1f} s" if row.stalled else ""
        event = row.event if count == 1 else f"token x{count}"
        detail_text = row.summary if count == 1 else f"{clip(text)!r} (until t={last_t:.3f})"
        t = f"{row.t:8.3f}" if row.t is not None else "       -"
        lines.append(f"{t}  {gap:>9}  {event:<13} {detail_text}{mark}")
    if not rows:
        lines.append("  (no recorded lines)")
    if detail.tool_calls.height:
        lines += ["", "tool calls"]
        for c in detail.tool_calls.iter_rows(named=True):
            if c["latency_ms"] is not None:
                latency = fmt.millis(c["latency_ms"])
            else:  # a result with no use before it has no latency either: its use was not recorded
                latency = "no result" if c["started_t"] is not None else "no use"
            reported = f" (reported {fmt.millis(c['reported_ms'])})" if c["reported_ms"] is not None else ""
            start = f"{c['started_t']:.3f}" if c["started_t"] is not None else "-"
            lines.append(f"  {c['tool_name'] or '?':<20} {c['status']:<9} {latency:>10}{reported}"
                         f"  at t={start}  {c['tool_use_id'] or ''}")
    lines += ["", _ending(detail)]
    return "\n".join(lines)


def _ending(detail: SessionDetail) -> str:
    s = detail.session
    if s["outcome"] == "open":
        return "ended     not yet: the session is still open (no done, no end record, file recently written)"
    text = f"ended     {s['outcome']} ({s['end_reason'] or 'unknown'})"
    end = end_record(detail)
    if end:
        extra = {k: v for k, v in end.items() if k != "reason"}
        if extra:
            text += "   " + " ".join(f"{k}={v}" for k, v in extra.items())
    if s["outcome"] == "synthetic_done":
        text += "\n          no done event was sent: the client had to synthesize one"
    return text
