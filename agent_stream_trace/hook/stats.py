"""Counters a recorder keeps instead of raising: what was written, dropped, lost or refused."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class RecorderStats:
    """A snapshot of `TraceRecorder.stats()`. Every failure the hook swallows shows up here.

    sessions           sessions started through the recorder
    sessions_written   sessions whose lines were written (sampled in, or kept because they failed)
    sessions_sampled_out  sessions discarded by sampling (they ended with done)
    records            records produced (events, `_end`, `_unparsed`, `_comment`)
    lines_written      lines the OS accepted (headers included)
    bytes_written
    batches_written    write calls that succeeded
    rotations          files rotated
    dropped            stream items not recorded because the queue was full (seq shows the gap)
    write_errors       failed opens/writes (disk full, permission, closed file...)
    lines_lost         lines that a failed write did not deliver
    unparsed           SSE blocks recorded as `_unparsed`
    redaction_errors   records whose redactor raised (written with empty data)
    internal_errors    unexpected errors in the hook's own code (a bug: please report)
    live_sessions      sessions emitted as live spans
    live_errors        sessions whose live spans failed
    """

    sessions: int = 0
    sessions_written: int = 0
    sessions_sampled_out: int = 0
    records: int = 0
    lines_written: int = 0
    bytes_written: int = 0
    batches_written: int = 0
    rotations: int = 0
    dropped: int = 0
    write_errors: int = 0
    lines_lost: int = 0
    unparsed: int = 0
    redaction_errors: int = 0
    internal_errors: int = 0
    live_sessions: int = 0
    live_errors: int = 0


STAT_NAMES = tuple(f.name for f in fields(RecorderStats))


class Counters:
    """The mutable side. Each counter has one writing thread (the writer, the live thread,
    or the event loop for `dropped`), so plain increments are enough under the GIL."""

    sessions: int
    sessions_written: int
    sessions_sampled_out: int
    records: int
    lines_written: int
    bytes_written: int
    batches_written: int
    rotations: int
    dropped: int
    write_errors: int
    lines_lost: int
    unparsed: int
    redaction_errors: int
    internal_errors: int
    live_sessions: int
    live_errors: int

    def __init__(self) -> None:
        for name in STAT_NAMES:
            setattr(self, name, 0)

    def snapshot(self) -> RecorderStats:
        return RecorderStats(**{name: getattr(self, name) for name in STAT_NAMES})


# One list of names, spelled twice for the type checker: keep them equal.
assert tuple(Counters.__annotations__) == STAT_NAMES
