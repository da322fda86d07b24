"""What a cron run costs as the database's history grows (the stored sessions, not the new bytes).

    python benchmarks/cron_history.py [--sessions 20000] [--scales 1,10,50] [--keep DIR]

A cron run should cost what it reads, whatever the database already holds. This times the
same cron run (the last ~2% of every file appended after a first run: new sessions, and
sessions that were cut mid-way and now go on, so their stored rows are replaced) against
databases holding the same files' sessions and, beside them, 10x and 50x as many stored
sessions (20k, 200k and 1M by default), and prints each run's time net of a no-op run as a
ratio to the smallest database's. A ratio near 1 means the run's cost follows the new bytes.

The larger histories are made by copying the stored sessions' rows under new ids (their keys,
headers, summaries, tool events, `sessions` and `tool_calls` rows), not by simulating and
ingesting them: months of recordings would take hours here, and a cron run reads those
tables, not the history's events (`_events` is read only by session key, for sessions whose
new lines land among their stored ones).

Each run is timed as a process of its own, best of --repeat, each right after a no-op run
(start-up), as benchmarks/ingest.py times its cron runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import APPENDED_START, cli_ingest  # noqa: E402  (the same timing as the ingest benchmark)

CUT_SHARE = 0.02  # of each file's bytes, appended for the cron run

# Copies of the stored sessions under new ids and keys, above every stored key. Headers keep their
# file and line: nothing a cron run does joins on those for sessions it does not recompute.
INFLATE = [
    """CREATE TEMP TABLE copies AS SELECT k AS old_k, k + i * (SELECT max(k) FROM _session_keys) AS new_k,
           session_id AS old_id, side, gen_random_uuid() AS uid FROM _session_keys, range(1, {copies} + 1) r(i)""",
    "INSERT INTO _session_keys SELECT new_k, uid::VARCHAR, side, uid FROM copies",
    "INSERT INTO _session_headers SELECT c.new_k, h.* EXCLUDE (k) FROM _session_headers h JOIN copies c ON c.old_k = h.k",
    "INSERT INTO _session_stats SELECT c.new_k, s.* EXCLUDE (k) FROM _session_stats s JOIN copies c ON c.old_k = s.k",
    "INSERT INTO _tool_events SELECT c.new_k, t.* EXCLUDE (k) FROM _tool_events t JOIN copies c ON c.old_k = t.k",
    """INSERT INTO _sessions SELECT s.* REPLACE (c.new_k AS k, c.uid::VARCHAR AS session_id)
           FROM _sessions s JOIN copies c ON c.old_k = s.k""",
    """INSERT INTO _tool_calls SELECT t.* REPLACE (c.new_k AS k, c.uid::VARCHAR AS session_id)
           FROM _tool_calls t JOIN copies c ON c.old_k = t.k""",
]


def inflate(db: Path, scale: int) -> int:
    """Add (scale - 1) copies of every stored session; return the sessions stored."""
    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN")
        for sql in INFLATE:
            con.execute(sql.format(copies=scale - 1))
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return con.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        con.close()


def cut_tails(files: list[Path], share: float) -> dict[Path, bytes]:
    """Cut the last `share` of each file's bytes (at a line's end) off; return what was cut."""
    tails = {}
    for f in files:
        data = f.read_bytes()
        cut = data.rindex(b"\n", 0, int(len(data) * (1 - share))) + 1
        tails[f] = data[cut:]
        os.truncate(f, cut)
    return tails


def stored_sessions(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        con.close()


def main() -> None:
    from agent_stream_trace.simulate.generator import SimulationOptions, simulate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20_000, help="sessions simulated (default 20000)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--scales", default="1,10,50", help="stored history as multiples of them (default 1,10,50)")
    parser.add_argument("--repeat", type=int, default=5, metavar="N", help="timed runs per database, best kept (default 5)")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()
    scales = sorted({int(s) for s in args.scales.split(",")})
    if scales[0] < 1:
        parser.error("--scales: multiples of 1 or more")

    work = args.keep or Path(tempfile.mkdtemp(prefix="ast-history-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "history-traces"
    shutil.rmtree(corpus, ignore_errors=True)
    simulate(SimulationOptions(sessions=args.sessions, seed=4, out=corpus, files=args.files, start=APPENDED_START))
    files = sorted(corpus.glob("*.jsonl"))
    tails = cut_tails(files, CUT_SHARE)
    appended = sum(tail.count(b"\n") for tail in tails.values())

    first = work / "history-first.duckdb"
    first.unlink(missing_ok=True)
    cli_ingest([corpus], first)  # untimed: the database the cron runs start from
    for f, tail in tails.items():  # the cron run's lines: its files' last sessions go on, new ones start
        with open(f, "ab") as out:
            out.write(tail)

    databases, stored = {}, {}
    for scale in scales:
        db = work / f"history-{scale}.duckdb"
        shutil.copyfile(first, db)
        stored[scale] = inflate(db, scale) if scale > 1 else stored_sessions(db)
        databases[scale] = db

    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    noop_db = work / "history-noop.duckdb"
    noop_db.unlink(missing_ok=True)
    cli_ingest([empty], noop_db)
    run_db = work / "history-run.duckdb"
    best: dict[int, float] = {}
    noops: list[float] = []
    for _ in range(args.repeat):
        for scale in scales:  # interleaved, so a slow minute does not fall on one scale only
            shutil.copyfile(databases[scale], run_db)
            noops.append(cli_ingest([empty], noop_db))
            best[scale] = min(best.get(scale, float("inf")), cli_ingest([corpus], run_db))
    noop = min(noops)

    print(f"cron run: {appended:,} lines appended to {len(files)} files (the last {CUT_SHARE:.0%} of each)")
    print(f"no-op run (start-up) {noop:6.3f} s; each run best of {args.repeat}, net of start-up")
    base = best[scales[0]] - noop
    for scale in scales:
        net = best[scale] - noop
        print(f"{stored[scale]:>11,} sessions stored  {net:6.3f} s  {net / base:5.2f}x")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
