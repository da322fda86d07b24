"""Live spans: each recorded session, when it ends, through the application's TracerProvider.

The same spans the bulk exporter sends for that session (same ids, names, attributes), because
both go through the same steps: the session's recording lines are loaded by the ingester
(`ingest_lines`, into a private in-memory DuckDB), read back as a `SessionTrace`, mapped by
`spans.session_spans` and emitted by `exporters.sdk_bridge`. All of it runs on this module's
own thread, fed by the writer thread through a bounded queue: a slow or failing tracer never
touches the stream or the recording, it only counts `live_errors`.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Final

from .stats import Counters

log = logging.getLogger("agent_stream_trace.hook")

# Sessions waiting for their spans at most; beyond it they are skipped and counted.
MAX_PENDING: Final = 1000
# Sessions loaded into DuckDB together when several are waiting.
MAX_GROUP: Final = 64
_STOP: Final = object()


class LiveSpans:
    def __init__(self, tracer_provider: Any, counters: Counters, *, include_content: bool = False) -> None:
        # Import now, so a missing `otlp` extra is a configuration error at startup (raised
        # as MissingExtraError), not a stream of live_errors later.
        from ..exporters.sdk_bridge import emit_session

        self._emit_session = emit_session
        self.provider = tracer_provider
        self.counters = counters
        self.include_content = include_content
        self._queue: queue.Queue[Any] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._run, name="agent-stream-trace-live", daemon=True)
        self._thread.start()

    def submit(self, session_id: str, lines: list[str]) -> None:
        """Called by the writer thread when a recorded session ends; never blocks."""
        try:
            self._queue.put_nowait((session_id, lines))
        except queue.Full:
            self.counters.live_errors += 1
            log.warning("agent-stream-trace live spans: %d sessions waiting, session %s skipped", MAX_PENDING, session_id)

    def close(self, timeout: float | None) -> None:
        """Emit what is waiting, then stop."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        con = None
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            stop = any(item is _STOP for item in group)
            sessions = [item for item in group if item is not _STOP]
            if sessions:
                try:
                    if con is None:
                        from ..db import connect

                        con = connect(":memory:")
                    self._emit(con, sessions)
                except Exception as exc:
                    self.counters.live_errors += len(sessions)
                    log.warning("agent-stream-trace live spans failed for %d sessions: %s: %s",
                                len(sessions), type(exc).__name__, exc, exc_info=True)
                    con = self._reset(con)
            if stop:
                break
        if con is not None:
            con.close()

    def _emit(self, con: Any, sessions: list[tuple[str, list[str]]]) -> None:
        from ..ingest.pipeline import ingest_lines
        from ..session import load_session_traces

        try:
            ingest_lines(con, [line for _, lines in sessions for line in lines], "<live>")
            for trace in load_session_traces(con, [(sid, "server") for sid, _ in sessions]):
                try:
                    self._emit_session(trace, self.provider, include_content=self.include_content)
                    self.counters.live_sessions += 1
                except Exception as exc:
                    self.counters.live_errors += 1
                    log.warning("agent-stream-trace live spans: session %s: %s: %s",
                                trace.session_id, type(exc).__name__, exc)
        finally:
            _clear(con)

    @staticmethod
    def _reset(con: Any) -> Any:
        if con is not None:
            try:
                con.close()
            except Exception:
                pass
        return None


def _clear(con: Any) -> None:
    """Empty every table (the ingester's private ones too) so memory stays flat; the schema
    and its migrations record stay."""
    tables = con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_name <> '_schema_migrations'"
    ).fetchall()
    for (name,) in tables:
        con.execute(f'DELETE FROM "{name}"')
