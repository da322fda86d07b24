"""Query speed over a big history, beside a plain `SELECT count(*) FROM events` in the same run.

    python benchmarks/query.py [--sessions 100000] [--db PATH] [--repeat 3]

Simulates the sessions (agent_stream_trace.simulate) and ingests them, unless --db names a
database that already holds them (then it is reused as is). Then times, on one read-only
connection: the baseline count(*), every TraceStore method, and the whole `stats` report
(every query it runs plus rendering); and once, `agent-stream-trace stats` as a user runs it
(a new process: start-up and imports included). Prints the median of --repeat runs of each,
and its ratio to the baseline. Target: the stats report over 100k sessions well under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
from agent_stream_trace.query.filters import SessionFilter
from agent_stream_trace.query.report import build_report
from agent_stream_trace.query.stats_cli import render_text
from agent_stream_trace.query.store import TraceStore
from agent_stream_trace.simulate.generator import SimulationOptions, simulate


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(db: Path, sessions: int, work: Path) -> None:
    t0 = time.perf_counter()
    report = simulate(SimulationOptions(sessions=sessions, out=work / "traces", files=4, days=7.0,
                                        start=datetime(2026, 11, 1, tzinfo=timezone.utc)))
    t1 = time.perf_counter()
    result = ingest([work / "traces"], IngestOptions(db=db, open_window=0.0))
    t2 = time.perf_counter()
    print(f"simulated {report.sessions:,} sessions ({report.lines:,} lines) in {t1 - t0:.1f} s; "
          f"ingested {result.lines:,} lines in {t2 - t1:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--db", type=Path, help="reuse (or create and keep) this database")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ast-query-bench-") as tmp:
        work = Path(tmp)
        db = args.db or work / "bench.duckdb"
        if not db.exists():
            build(db, args.sessions, work)
        else:
            print(f"reusing {db}")

        store = TraceStore(db)
        some_model = "claude-sonnet-4"
        week = SessionFilter.of(since="2026-11-03", until="2026-11-05")
        with store:
            counts = store.sql("SELECT (SELECT count(*) FROM sessions) AS sessions, "
                               "(SELECT count(*) FROM events) AS events, "
                               "(SELECT count(*) FROM tool_calls) AS tool_calls").row(0, named=True)
            print(f"database: {counts['sessions']:,} sessions, {counts['events']:,} events, "
                  f"{counts['tool_calls']:,} tool calls\n")
            one_id = store.sql("SELECT session_id FROM sessions LIMIT 1")["session_id"][0]
            cases: list[tuple[str, Callable[[], Any]]] = [
                ("SELECT count(*) FROM events (baseline)", lambda: store.sql("SELECT count(*) FROM events")),
                # count(*) alone is answered from metadata; this one reads a column of every row.
                ("SELECT count(*) FROM events WHERE event = 'token'",
                 lambda: store.sql("SELECT count(*) FROM events WHERE event = 'token'")),
                ("summary()", store.summary),
                ("health('day')", lambda: store.health("day")),
                ("health('hour', group_by='model')", lambda: store.health("hour", "model")),
                ("health(None, 'attrs.route')", lambda: store.health(None, "attrs.route")),
                ("health('day', model=..., 2 days)", lambda: store.health(
                    "day", since=week.since, until=week.until, model=some_model)),
                ("synthetic_done_causes()", store.synthetic_done_causes),
                ("tool_latency()", store.tool_latency),
                ("stalls()", store.stalls),
                ("stalls(limit=5)", lambda: store.stalls(limit=5)),
                ("token_velocity(max_sessions=500)", lambda: store.token_velocity(max_sessions=500)),
                ("token_velocity() (every session)", store.token_velocity),
                ("token_intervals(max_sessions=500)", lambda: store.token_intervals(max_sessions=500)),
                ("ttft()", store.ttft),
                ("turns()", store.turns),
                ("sessions(limit=100)", store.sessions),
                ("sessions(outcome=synthetic_done)", lambda: store.sessions(outcome="synthetic_done")),
                ("session(id) (show)", lambda: store.session(one_id)),
                ("stats report (all queries + text)", lambda: render_text(build_report(store, SessionFilter()))),
            ]
            results = [(name, median_time(fn, args.repeat)) for name, fn in cases]
        # A fresh connection per call (the default outside `with store:`): the open costs.
        results.append(("summary() with its own connection", median_time(store.summary, args.repeat)))

        cli = [sys.executable, "-m", "agent_stream_trace.cli", "stats", "--db", str(db)]
        start = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        results.append(("agent-stream-trace stats (new process)", time.perf_counter() - start))

    base = results[0][1]
    width = max(len(name) for name, _ in results)
    print(f"{'query':<{width}}  {'median s':>9}  {'x count(*)':>10}")
    for name, seconds in results:
        print(f"{name:<{width}}  {seconds:9.4f}  {seconds / base:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
