"""`agent-stream-trace demo`: the whole pipeline on generated sample traces, in one command.

Simulates recordings (unless the directory already holds some), ingests them into an embedded
DuckDB file, and prints the health report. Each step is the library call its own command makes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_support import add_db_argument
from .config import resolve_db_path
from .ingest.cli import format_report
from .ingest.pipeline import IngestOptions, ingest
from .ingest.sources import is_recording
from .query.filters import SessionFilter
from .query.report import build_report
from .query.stats_cli import render_text
from .query.store import TraceStore
from .simulate.generator import SimulationOptions, simulate

DESCRIPTION = """\
Run the main job end to end on sample traces: simulate realistic recordings (with crashes,
client disconnects, proxy idle cuts, stalls and failing tools), ingest them into a DuckDB
file, and print the health report (synthetic-done rate and causes, TTFT, velocity, tools).
"""

EPILOG = """\
examples:
  agent-stream-trace demo                              # sample-traces/ -> ./agent-stream.duckdb
  agent-stream-trace demo --sessions 5000 --db /tmp/demo.duckdb
then explore:
  agent-stream-trace sessions --outcome synthetic_done
  agent-stream-trace show <SESSION_ID>
  agent-stream-trace query "SELECT end_reason, count(*) FROM sessions GROUP BY ALL"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=Path, default=Path("sample-traces"),
                        help="where the sample recordings go (default: sample-traces/); reused if it has some")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions to simulate (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_db_argument(parser, creates=True)


def run(args: argparse.Namespace) -> int:
    traces: Path = args.traces
    if not (traces.is_dir() and any(is_recording(p) for p in traces.rglob("*"))):
        sim = simulate(SimulationOptions(sessions=args.sessions, seed=args.seed, out=traces, files=4))
        print(f"1. simulated: {sim.summary()}")
    else:
        print(f"1. using the recordings already in {traces}/")
    report = ingest([traces], IngestOptions(db=args.db))
    print("2. " + format_report(report, str(resolve_db_path(args.db))))
    print("3. health report (agent-stream-trace stats):\n")
    with TraceStore(args.db) as store:
        print(render_text(build_report(store, SessionFilter())))
    return 0
