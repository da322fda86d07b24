"""`agent-stream-trace simulate`: write seeded, realistic recordings (format v1)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from ..errors import UsageError
from .generator import SimulationOptions, simulate

DESCRIPTION = """\
Write realistic agent-stream recordings (format v1) for demos, tests and benchmarks.

Sessions of several agents and models (20-120 tokens/s) stream tokens in ~50 ms batches,
call tools with lognormal latencies, and arrive in bursts over a period that ends before now,
interleaved inside each file the way concurrent requests of one server worker are. A share
of them fail (server exception, client disconnect, returned without done, proxy idle cut
after 60-90 s of silence, sometimes with an orphaned tool) and a few stall for 15-40 s. The
same --seed and --start write byte-identical files (without --start, the period moves with
the clock, hour by hour, and with it the sessions)."""

EPILOG = """\
examples:
  agent-stream-trace simulate                                   # 200 sessions into traces/
  agent-stream-trace simulate --sessions 20000 --files 4 --out bench/ --gzip
  agent-stream-trace simulate --synthetic-done-rate 0.2 --seed 7 --out flaky/
  agent-stream-trace simulate --start 2025-01-01 --days 7       # a fixed week: same bytes every run
  agent-stream-ingest traces/                                   # then load them
"""


def _iso(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date or time: {value!r}") from None


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value}")
    return rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulationOptions()
    parser.add_argument("--sessions", type=int, default=defaults.sessions, metavar="N",
                        help=f"number of sessions (default: {defaults.sessions})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"random seed; the same seed and --start write the same bytes (default: {defaults.seed})")
    parser.add_argument("--out", type=Path, default=defaults.out, metavar="DIR",
                        help=f"directory to write into, created if missing (default: {defaults.out}/)")
    parser.add_argument("--files", type=int, default=defaults.files, metavar="K",
                        help=f"recording files to spread sessions over, like K server workers (default: {defaults.files})")
    parser.add_argument("--synthetic-done-rate", type=_rate, default=defaults.synthetic_done_rate, metavar="RATE",
                        help=f"share of sessions that end without a done event (default: {defaults.synthetic_done_rate})")
    parser.add_argument("--stall-rate", type=_rate, default=defaults.stall_rate, metavar="RATE",
                        help=f"share of completing sessions with one 15-40 s silence (default: {defaults.stall_rate})")
    parser.add_argument("--allow-killed", action="store_true",
                        help="let some failures be a killed server process: no _end record at all")
    parser.add_argument("--start", type=_iso, metavar="ISO",
                        help="start of the period, UTC unless it has an offset "
                             "(default: DAYS ending an hour before now, on the hour)")
    parser.add_argument("--days", type=float, default=defaults.days, metavar="D",
                        help=f"length of the period in days (default: {defaults.days:g})")
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz files")


def run(args: argparse.Namespace) -> int:
    options = SimulationOptions(
        sessions=args.sessions,
        seed=args.seed,
        out=args.out,
        synthetic_done_rate=args.synthetic_done_rate,
        files=args.files,
        start=args.start,
        days=args.days,
        gzip=args.gzip,
        stall_rate=args.stall_rate,
        allow_killed=args.allow_killed,
    )
    try:
        report = simulate(options)
    except OSError as exc:  # --out not writable, not a directory on the way, disk full, ...
        raise UsageError(f"cannot write the recordings to {args.out}: {exc.strerror or exc}") from None
    print(report.summary())
    return 0
