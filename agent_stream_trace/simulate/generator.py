"""Seeded, realistic recordings (format v1) for demos, tests and benchmarks.

    report = simulate(SimulationOptions(sessions=200, seed=0, out=Path("traces")))

Sessions arrive in bursts over a period that ends before now, are spread over a few files
(like server workers sharing nothing), and interleave inside each file in wall-clock order,
exactly as a v1 hook writes them. The same options give byte-identical files.

Everything is drawn from one `random.Random(seed)`, in a fixed order: arrival times first,
then each session in start order. Files are written by merging each session's time-stamped
lines into a small per-file buffer that is flushed up to the next session's start time: no
later session can write before its own start, so memory stays bounded by the sessions in flight.
"""

from __future__ import annotations

import gzip
import math
import random
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import Final

from ..errors import UsageError
from .catalog import AGENTS, APP_VERSION_WEIGHTS, APP_VERSIONS, MODELS, USERS
from .session import FAILURE_KINDS, SessionSpec, SimulatedSession, build_session

# Share of each failure among failing sessions. "killed" (no `_end` at all) only when allowed.
FAILURE_WEIGHTS: Final[dict[str, float]] = {
    "exception": 0.35,
    "client_disconnect": 0.30,
    "returned_without_done": 0.15,
    "idle_cut": 0.20,
    "killed": 0.05,
}
# No session lasts longer than this (answers, tool rounds, a stall and an idle cut together
# stay well under it): the period must end this long before now so every session is finished.
MAX_SESSION_S: Final = 900
MAX_DAYS: Final = 36_500  # a century of traffic; more overflows the dates
BURST_WINDOW_MS: Final = 90_000  # the sessions of one burst of traffic start within 90 s
MEAN_BURST: Final = 6
_FLUSH_LINES: Final = 20_000  # merge a file's buffer once it holds this many lines


def seeded_uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng`: the same ids for the same seed (uuid4 draws from the OS)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class SimulationOptions:
    """What to generate. `start=None` means the period of `days` that ends an hour before now,
    rounded down to the hour (so a rerun within the hour is byte-identical)."""

    sessions: int = 200
    seed: int = 0
    out: Path = Path("traces")
    synthetic_done_rate: float = 0.05  # share of sessions that end without a done event
    files: int = 2  # recording files, like server workers
    start: datetime | None = None
    days: float = 1.0
    gzip: bool = False
    stall_rate: float = 0.02  # share of completing sessions with one 15-40 s silence
    allow_killed: bool = False  # include sessions cut by a killed process (no `_end` record)


@dataclass(frozen=True)
class SimulationReport:
    """What was written, and what the generator put into it (ground truth for tests)."""

    sessions: int
    lines: int
    files: tuple[Path, ...]
    start: datetime
    end: datetime
    failures: int  # sessions without a done event: the expected synthetic_done count
    failure_kinds: dict[str, int] = field(default_factory=dict)
    end_reasons: dict[str, int] = field(default_factory=dict)  # done, exception, cancelled, ...
    stalls: int = 0
    orphaned_tools: int = 0
    tool_errors: int = 0

    def summary(self) -> str:
        """The one line the CLI prints."""
        kinds = ", ".join(f"{k} {n}" for k, n in self.failure_kinds.items() if n) or "none"
        where = self.files[0].parent if self.files else "-"
        return (
            f"wrote {self.sessions} sessions ({self.lines} lines) to {len(self.files)} files in {where}: "
            f"{self.failures} failures ({kinds}), {self.stalls} stalls, {self.orphaned_tools} orphaned tools"
        )


def resolve_period(options: SimulationOptions, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The [start, end) of session start times; raises UsageError when they could still be running."""
    now = now or datetime.now(timezone.utc)
    span = timedelta(days=options.days)
    if options.start is None:
        end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        return end - span, end
    start = options.start if options.start.tzinfo else options.start.replace(tzinfo=timezone.utc)
    start = start.astimezone(timezone.utc)
    if start + span + timedelta(seconds=MAX_SESSION_S) > now:
        raise UsageError(
            f"the period {start.isoformat()} + {options.days:g} days does not end before now",
            hint=f"pick an earlier --start or fewer --days (sessions must be finished {MAX_SESSION_S // 60} min before now)",
        )
    return start, start + span


# The start times are drawn up front (8 bytes a session); more sessions than this (~1G lines,
# ~150 GB of recordings) are a typo, which ran out of memory instead of saying so.
MAX_SESSIONS = 10_000_000


def validate(options: SimulationOptions) -> None:
    if not 0 <= options.sessions <= MAX_SESSIONS:
        raise UsageError(f"--sessions must be between 0 and {MAX_SESSIONS:,}, not {options.sessions:,}")
    if options.files < 1:
        raise UsageError(f"--files must be >= 1, not {options.files}")
    if not 0.0 <= options.synthetic_done_rate <= 1.0:
        raise UsageError(f"--synthetic-done-rate must be between 0 and 1, not {options.synthetic_done_rate}")
    if not 0.0 <= options.stall_rate <= 1.0:
        raise UsageError(f"stall rate must be between 0 and 1, not {options.stall_rate}")
    if not 0 < options.days <= MAX_DAYS:  # NaN and infinity too: no period could hold them
        raise UsageError(f"--days must be > 0 and at most {MAX_DAYS:,}, not {options.days}")


def _arrivals(rng: random.Random, n: int, start_ms: int, span_ms: int) -> list[int]:
    """Session start times (ms since the epoch), sorted: bursts of traffic whose density follows
    the day (busiest mid-afternoon UTC, a third of the peak at night)."""
    times: list[int] = []
    day_ms = 86_400_000
    while len(times) < n:
        center = start_ms + int(rng.random() * span_ms)
        phase = 2 * math.pi * ((center % day_ms) / day_ms - 0.375)  # peak at 15:00 UTC
        if rng.random() * 2.0 > 1.0 + 0.5 * math.sin(phase):
            continue
        size = min(1 + int(rng.expovariate(1.0 / (MEAN_BURST - 1))), n - len(times))
        window = min(BURST_WINDOW_MS, span_ms)
        times.extend(max(start_ms, min(start_ms + span_ms - 1, center + int(rng.random() * window)))
                     for _ in range(size))
    times.sort()
    return times


def iter_sessions(
    options: SimulationOptions, now: datetime | None = None
) -> Iterator[tuple[int, SimulatedSession]]:
    """Yield (file index, session) in start-time order. Deterministic for given options (and,
    when options.start is None, for the hour of `now`)."""
    validate(options)
    start, end = resolve_period(options, now)
    rng = random.Random(options.seed)
    start_ms = int(start.timestamp() * 1000)
    span_ms = int((end - start).total_seconds() * 1000)
    starts = _arrivals(rng, options.sessions, start_ms, span_ms)

    def cum(weights: list[float]) -> list[float]:
        out, acc = [], 0.0
        for w in weights:
            acc += w
            out.append(acc)
        return out

    model_cw = cum([m.weight for m in MODELS])
    agent_cw = cum([a.weight for a in AGENTS])
    version_cw = cum(list(APP_VERSION_WEIGHTS))
    kinds = tuple(k for k in FAILURE_KINDS if options.allow_killed or k != "killed")
    kind_cw = cum([FAILURE_WEIGHTS[k] for k in kinds])
    rate, stall_rate, files = options.synthetic_done_rate, options.stall_rate, options.files
    for start_ms_i in starts:
        model = rng.choices(MODELS, cum_weights=model_cw)[0]
        agent = rng.choices(AGENTS, cum_weights=agent_cw)[0]
        failure = rng.choices(kinds, cum_weights=kind_cw)[0] if rng.random() < rate else None
        spec = SessionSpec(
            session_id=seeded_uuid(rng),
            start_us=start_ms_i * 1000 + rng.randrange(1000),
            model=model,
            agent=agent,
            tps=round(rng.uniform(model.min_tps, model.max_tps), 1),
            attrs={
                "route": agent.route,
                "user_id": f"u_{rng.randrange(USERS):04d}",
                "agent": agent.name,
                "app_version": rng.choices(APP_VERSIONS, cum_weights=version_cw)[0],
                "model": model.name,
            },
            failure=failure,  # type: ignore[arg-type]
            stall=rng.random() < stall_rate,
        )
        yield rng.randrange(files), build_session(rng, spec)


class _FileMerger:
    """One output file: buffers (time, line) pairs and writes them in wall-clock order."""

    def __init__(self, path: Path, compress: bool) -> None:
        self.path = path
        raw = open(path, "wb")
        # mtime=0 and no file name in the gzip header: the same seed gives the same bytes.
        self._raw = raw
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=5) if compress else None
        self._write: Callable[[bytes], int] = (self._gz or raw).write
        self.pending: list[tuple[int, str]] = []

    def add(self, session: SimulatedSession) -> None:
        self.pending.extend(zip(session.times_ms, session.lines, strict=True))

    def flush_until(self, t_ms: int | None) -> None:
        """Write every buffered line at or before t_ms (all of them when None). A stable sort
        keeps each session's own lines in order when their times tie."""
        pending = self.pending
        pending.sort(key=itemgetter(0))
        cut = len(pending) if t_ms is None else bisect_right(pending, t_ms, key=itemgetter(0))
        if cut:
            text = "".join([line for _, line in pending[:cut]])
            self._write(text.encode("utf-8"))
            del pending[:cut]

    def close(self) -> None:
        self.flush_until(None)
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


def simulate(options: SimulationOptions, now: datetime | None = None) -> SimulationReport:
    """Write the recordings into options.out (created if needed) and report what they hold."""
    validate(options)
    start, end = resolve_period(options, now)
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if options.gzip else ".jsonl"
    width = max(2, len(str(options.files)))
    mergers = [_FileMerger(out / f"worker-{i + 1:0{width}d}{suffix}", options.gzip) for i in range(options.files)]
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    lines = stalls = orphans = tool_errors = sessions = 0
    try:
        for file_index, session in iter_sessions(options, now):
            first = session.times_ms[0]
            merger = mergers[file_index]
            if len(merger.pending) > _FLUSH_LINES:
                merger.flush_until(first)
            merger.add(session)
            sessions += 1
            lines += len(session.lines)
            reasons[session.end_reason] += 1
            if session.failure:
                kinds[session.failure] += 1
            stalls += session.stalled
            orphans += session.orphaned_tools
            tool_errors += session.tool_errors
    finally:
        for merger in mergers:
            merger.close()
    return SimulationReport(
        sessions=sessions,
        lines=lines,
        files=tuple(m.path for m in mergers),
        start=start,
        end=end,
        failures=sum(kinds.values()),
        failure_kinds={k: kinds[k] for k in FAILURE_KINDS if k in kinds},
        end_reasons=dict(sorted(reasons.items())),
        stalls=stalls,
        orphaned_tools=orphans,
        tool_errors=tool_errors,
    )


def session_lines(options: SimulationOptions, now: datetime | None = None) -> Iterator[list[str]]:
    """Each session's recording lines, in start order (not interleaved): handy for feeding
    `ingest_lines` or a benchmark without touching the disk."""
    for _, session in iter_sessions(options, now):
        yield session.lines


__all__ = [
    "SimulationOptions", "SimulationReport", "simulate", "iter_sessions", "session_lines", "resolve_period",
]
