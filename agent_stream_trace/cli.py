"""`agent-stream-trace`: one umbrella command; each subcommand lives beside the library it adapts.

A subcommand module provides DESCRIPTION (its --help text), `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their subcommand runs, so `--help` is fast
and a missing optional extra only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .cli_support import run_guarded

# name -> (module, one-line summary shown by `agent-stream-trace --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("agent_stream_trace.demo", "simulate sample traces, ingest them, print the health report"),
    "ingest": ("agent_stream_trace.ingest.cli", "load .jsonl recordings into the DuckDB database"),
    "query": ("agent_stream_trace.query.sql_cli", "run read-only SQL over session history"),
    "stats": ("agent_stream_trace.query.stats_cli", "health report: synthetic-done rate, TTFT, velocity, tools, stalls"),
    "sessions": ("agent_stream_trace.query.sessions_cli", "list sessions, newest first, with filters"),
    "show": ("agent_stream_trace.query.show_cli", "one session's timeline: events, gaps, tool calls, how it ended"),
    "simulate": ("agent_stream_trace.simulate.cli", "write realistic seeded recordings for demos and tests"),
    "export": ("agent_stream_trace.exporters.cli", "send sessions as OpenTelemetry traces (OTLP) or write Parquet"),
}

EPILOG = """\
typical first run:
  agent-stream-trace simulate --sessions 200 --out traces/
  agent-stream-ingest traces/
  agent-stream-trace query "SELECT outcome, count(*) FROM sessions GROUP BY ALL"

The database is $AGENT_STREAM_DB, else ./agent-stream.duckdb; --db PATH wins.
Run `agent-stream-trace COMMAND --help` for each command's options and examples.
"""


def _umbrella_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-stream-trace",
        description="Observability for agent-stream SSE sessions: record, ingest, query, export.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def build_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"agent-stream-trace {name}",
        description=getattr(module, "DESCRIPTION", summary),
        epilog=getattr(module, "EPILOG", None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _umbrella_parser()
        if not argv or argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0 if argv else 2
        parser.error(f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})")
    name = argv[0]

    def _run() -> int:
        parser, module = build_parser(name)
        args = parser.parse_args(argv[1:])
        return module.run(args)

    return run_guarded(_run)


if __name__ == "__main__":
    sys.exit(main())
