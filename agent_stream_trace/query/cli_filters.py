"""The session filter options shared by `stats` and `sessions`."""

from __future__ import annotations

import argparse

from .filters import OUTCOMES, SessionFilter, parse_attr_condition


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--since", metavar="WHEN",
                       help="sessions started at or after WHEN: 30m, 24h, 7d, 2w, or an ISO date/time (UTC)")
    group.add_argument("--until", metavar="WHEN", help="sessions started before WHEN (same forms)")
    group.add_argument("--model", help="only this model")
    group.add_argument("--outcome", choices=OUTCOMES, help="only this outcome")
    group.add_argument("--side", choices=("server", "client"), help="only this side's recordings")
    group.add_argument("--where", metavar="attrs.KEY=VALUE", action="append", default=[],
                       help="only sessions whose attrs KEY equals VALUE (repeatable; all must hold)")


def filter_from_args(args: argparse.Namespace) -> SessionFilter:
    attrs = dict(parse_attr_condition(text) for text in args.where)
    return SessionFilter.of(since=args.since, until=args.until, model=args.model,
                            outcome=args.outcome, side=args.side, attrs=attrs)
