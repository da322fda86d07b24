"""`TraceRecorder`: wrap an agent-stream SSE generator and record the session, stream untouched.

    recorder = TraceRecorder("traces/")              # a directory: per-process files
    async def generate():
        async for sse in recorder.record(source(), route="/chat", user_id=uid):
            yield sse

The stream is sacred: every item is yielded unchanged, at once. On the event loop the hook
only reads the clock and appends to a queue; parsing, serialising and writing happen on the
recorder's writer thread (see writer.py). When the queue is full (the disk is far slower
than the stream) items are dropped from the recording and counted, never waited for; the
session's start, its `done` and its end are never dropped.
Recording errors are logged and counted in `stats()`, never raised into the stream.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from typing import IO, Any, Final

from ..errors import UsageError
from .redaction import Redactor
from .sampling import check_rate, sampled_in
from .sinks import Rotation, make_sink
from .sse import carries_done
from .stats import Counters, RecorderStats
from .writer import START, EndMark, SessionState, Writer

log = logging.getLogger("agent_stream_trace.hook")

DEFAULT_FLUSH_INTERVAL_S: Final = 0.05
DEFAULT_MAX_QUEUE: Final = 100_000
DEFAULT_PREFIX: Final = "agent-stream"

_LIVE_RECORDERS: weakref.WeakSet[TraceRecorder] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    # A graceful shutdown writes everything buffered, whoever forgot to call close().
    for recorder in list(_LIVE_RECORDERS):
        recorder.close()


atexit.register(_close_all_at_exit)


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not turn into a recording failure
        return "<unprintable>"


class TraceRecorder:
    """Records every session it wraps as recording format v1.

    target        a directory (existing, or ending in "/"): per-process files named
                  `<prefix>-<UTC stamp>-<pid>-<n>.jsonl`, safe for several workers;
                  a file path: appended to (upstream's behaviour);
                  or a writable file object (text or binary).
    max_bytes, rotate_every_s
                  rotate to a new file by size and/or age; sessions still open continue in
                  the new file under a repeated header, so every file stands alone.
    redact        `(event, data) -> data`, applied before writing (see redaction.keep_lengths).
    sample        fraction of sessions to record (0..1); sessions that end without done are
                  always recorded.
    flush_interval_s  longest time a line waits before reaching the OS (default 50 ms).
    max_queue     items held for the writer at most; beyond it items are dropped and counted.
    tracer_provider   an OpenTelemetry TracerProvider: each recorded session is also emitted
                  as spans when it ends (needs the `otlp` extra).
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[Any],
        *,
        max_bytes: int | None = None,
        rotate_every_s: float | None = None,
        redact: Redactor | None = None,
        sample: float = 1.0,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
        prefix: str = DEFAULT_PREFIX,
        tracer_provider: Any = None,
        include_content: bool = False,
    ) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise UsageError(f"max_bytes must be positive, got {max_bytes}")
        if rotate_every_s is not None and rotate_every_s <= 0:
            raise UsageError(f"rotate_every_s must be positive, got {rotate_every_s}")
        if not 0 < flush_interval_s <= 1.0:
            raise UsageError(f"flush_interval_s must be in (0, 1], got {flush_interval_s}")
        if max_queue < 1:
            raise UsageError(f"max_queue must be at least 1, got {max_queue}")
        if redact is not None and not callable(redact):
            raise UsageError("redact must be a callable (event, data) -> data")
        self.sample = check_rate(sample)
        self.max_queue = max_queue
        self._counters = Counters()
        self._closed = False
        self._live = None
        if tracer_provider is not None:
            from .live import LiveSpans  # imports OpenTelemetry only when asked for

            self._live = LiveSpans(tracer_provider, self._counters, include_content=include_content)
        self._writer = Writer(
            make_sink(target, prefix=prefix, rotation=Rotation(max_bytes, rotate_every_s)),
            self._counters,
            flush_interval=flush_interval_s,
            redactor=redact,
            on_session_end=self._live.submit if self._live is not None else None,
        )
        _LIVE_RECORDERS.add(self)

    # -- the hook -----------------------------------------------------------------------

    @staticmethod
    def new_session_id() -> str:
        """A session id to pass to `record(..., session_id=)` when it is needed up front."""
        return str(uuid.uuid4())

    async def record(
        self, source: AsyncIterable[Any], /, *, session_id: str | None = None, **attrs: Any
    ) -> AsyncIterator[Any]:
        """Yield every item of `source` unchanged while recording it as one session.

        `attrs` (route, user id, agent name, app version...) go into the session header.
        `session_id` (a UUID string) defaults to a fresh uuid4. An exception from `source`
        propagates unchanged after the `_end` record notes it.
        """
        sess = self._begin(session_id, attrs)
        if sess is None:
            async for item in source:
                yield item
            return
        queue = self._writer.queue
        cap = self.max_queue
        clock = time.monotonic
        end = EndMark("returned")
        try:
            async for item in source:
                # The whole per-item cost on the event loop: a clock read and an append.
                if len(queue) < cap or carries_done(item):
                    # (a done is never dropped: the session's outcome depends on it)
                    queue.append((sess, clock(), item))
                else:
                    sess.dropped += 1
                    self._counters.dropped += 1
                yield item
        except Exception as exc:
            end = EndMark("exception", _type_name(exc), _message(exc))
            raise
        except BaseException:
            # GeneratorExit (the response was closed: client gone), CancelledError
            # (cancellation, server shutdown), KeyboardInterrupt/SystemExit.
            end = EndMark("cancelled")
            raise
        finally:
            # Control records bypass the queue bound: a session's end is never dropped.
            queue.append((sess, clock(), end))
            self._writer.wake.set()

    def _begin(self, session_id: str | None, attrs: dict[str, Any]) -> SessionState | None:
        if self._closed:
            return None
        try:
            sid = str(uuid.UUID(session_id)) if session_id is not None else str(uuid.uuid4())
            sess = SessionState(
                sid, attrs, datetime.now(UTC), time.monotonic(), sampled_in(sid, self.sample)
            )
        except Exception as exc:  # a bad session_id must not break the stream either
            self._counters.internal_errors += 1
            log.warning("agent-stream-trace recorder: session not recorded: %s", exc)
            return None
        self._writer.queue.append((sess, sess.t0, START))
        return sess

    # -- control ------------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        """Counters of what was recorded and of every failure swallowed."""
        return self._counters.snapshot()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Block until everything recorded so far has been handed to the OS (or failed to be).

        Do not call it on the event loop; `await recorder.aflush()` there."""
        return self._writer.flush(timeout)

    async def aflush(self, timeout: float | None = 5.0) -> bool:
        return await asyncio.to_thread(self._writer.flush, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Write everything queued, end still-open sessions as `cancelled`, close the file.
        Streams still running afterwards pass through unrecorded. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._writer.stop(timeout)
        if self._live is not None:
            self._live.close(timeout)
        _LIVE_RECORDERS.discard(self)

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
