"""`agent-stream-ingest` (also `agent-stream-trace ingest`): recordings into DuckDB."""

from __future__ import annotations

import argparse
import sys

from ..cli_support import add_db_argument, run_guarded
from ..config import resolve_db_path
from .pipeline import IngestOptions, IngestReport, ingest

DESCRIPTION = """\
Load agent-stream recordings (.jsonl or .jsonl.gz, upstream v0 or our v1) into a DuckDB
file. Runs are incremental: only new bytes are read, so it is cheap to run from cron every
minute over a directory that only grows. Every line ends up as a session header, an event,
or a row in the `rejects` table with file, line number and reason.
"""

EPILOG = """\
examples:
  agent-stream-ingest traces/                      # every *.jsonl[.gz] below traces/
  agent-stream-ingest traces/*.jsonl --db /var/lib/agent-stream.duckdb
  zcat old.jsonl.gz | agent-stream-ingest -        # standard input
  agent-stream-ingest traces/ --strict             # exit 1 if any line was rejected

exit status: 0 every named path was read (rejects are reported), 1 with --strict and
rejects, 2 a missing or unreadable path, bad usage, or a database that cannot be opened.
A missing or unreadable named path stops the run before anything is read: from cron, name
the directory (traces/), not a shell glob of its files, which can name a file that is gone.
Then: agent-stream-trace query "SELECT * FROM rejects LIMIT 20"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="recording files, directories (searched recursively), or - for stdin")
    add_db_argument(parser, creates=True)
    parser.add_argument(
        "--open-window", type=float, metavar="SECONDS",
        help="a session without done stays 'open' while its file was written within this many "
             "seconds; after that it is a synthetic done (default: $AGENT_STREAM_OPEN_WINDOW, else 300)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any line was rejected")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    show_bar = args.progress if args.progress is not None else (sys.stderr.isatty() and not args.quiet)
    bar = _progress_bar() if show_bar else None
    try:
        report = ingest(
            args.paths,
            IngestOptions(db=args.db, open_window=args.open_window, progress=bar.update if bar else None),
        )
    finally:
        if bar:
            bar.close()
    if not args.quiet:
        print(format_report(report, str(resolve_db_path(args.db))))
    return 1 if args.strict and report.rejected else 0


class _progress_bar:
    """A byte-counting tqdm bar on stderr, created lazily once the total is known."""

    def __init__(self) -> None:
        self._bar = None
        self._done = 0

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, unit="B", unit_scale=True, desc="ingest", file=sys.stderr, leave=False)
        self._bar.update(done - self._done)
        self._bar.refresh()  # updates come once a batch (seconds apart): show each one
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_report(r: IngestReport, db: str) -> str:
    lines = [
        f"ingested into {db}",
        f"  files     {r.files} ({r.files_unchanged} unchanged)",
        f"  lines     {r.lines:,} = {r.headers:,} headers + {r.events:,} new events"
        + (f" + {r.duplicates:,} already stored" if r.duplicates else "")
        + f" + {r.rejected:,} rejects",
        f"  sessions  {r.sessions_new:,} new, {r.sessions_updated:,} updated",
        f"  time      {r.seconds:.2f} s ({r.lines_per_s:,.0f} lines/s, {r.bytes_read / 1e6:,.1f} MB)",
    ]
    if r.files == 0:
        lines.append("  note      no recordings (*.jsonl, *.jsonl.gz) in the named paths")
    if r.unread:
        lines.append(f"  unread    {len(r.unread)} file(s) vanished or unreadable while reading (the next run tries again):")
        lines.extend(f"    {entry}" for entry in r.unread[:10])
        if len(r.unread) > 10:
            lines.append(f"    ... and {len(r.unread) - 10} more")
    if r.rejects:
        lines.append("  rejects by reason (details: SELECT * FROM rejects):")
        for reason, n in r.rejects.most_common():
            lines.append(f"    {n:>8,}  {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agent-stream-ingest", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
