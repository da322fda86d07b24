"""The writer thread: turns what the event loop queued into recording lines, in batches.

The event loop only appends `(session, monotonic time, item)` to a deque (no lock, no
parsing, no I/O). This thread wakes every `flush_interval` seconds, or at once when a session
ends, parses the SSE items, builds the lines and writes each batch with one call, so lines
reach the OS at least every flush interval and at session end. One thread writes, so lines
of concurrent sessions never mix.

Each session's header is written before its first line in every file (see `Sink.generation`):
at session start, again at the top of a new file after rotation, and again when the write
that carried it failed. Sampled-out sessions are held in memory until they end and written
only if they ended without done.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..recording import END_EVENT, dumps, header_record
from .lines import record_line, wire_event_line
from .redaction import Redactor
from .sinks import Sink
from .sse import UNPARSED_EVENT, SSEItem, SSEParser, fast_event
from .stats import Counters

log = logging.getLogger("agent_stream_trace.hook")

# Items per write. It also bounds how long this thread holds the GIL in one go (about a
# millisecond): between batches it yields, so a backlog never delays the event loop by more.
MAX_BATCH: Final = 1024
# Repeated failures of one kind are logged at most this often (they are all counted).
LOG_EVERY_S: Final = 60.0


class _Start:
    __slots__ = ()


START: Final = _Start()


@dataclass(frozen=True, slots=True)
class EndMark:
    """How the session's generator finished, as seen on the event loop."""

    kind: str  # "returned" | "exception" | "cancelled"
    exc_type: str | None = None
    message: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class FlushMark:
    """Set once everything queued before it has been written (or failed)."""

    done: threading.Event


class SessionState:
    """One session. The event loop sets the first group once; the writer owns the rest."""

    __slots__ = (
        "attrs",
        "done_sent",
        "dropped",
        "dropped_seen",
        "header_gen",
        "header_line",
        "held",
        "live_lines",
        "parser",
        "sampled",
        "seq",
        "sid",
        "started_at",
        "t0",
    )

    def __init__(self, sid: str, attrs: dict[str, Any], started_at: datetime, t0: float, sampled: bool) -> None:
        self.sid = sid
        self.attrs = attrs
        self.started_at = started_at
        self.t0 = t0
        self.sampled = sampled
        self.dropped = 0  # incremented on the loop when the queue is full
        self.parser: SSEParser | None = None  # None before START and after the end
        self.seq = 0
        self.done_sent = False
        self.header_line = ""
        self.header_gen = -1  # the sink generation holding this session's header
        self.held: list[str] | None = None  # a sampled-out session's lines, until it ends
        self.live_lines: list[str] | None = None
        self.dropped_seen = 0


LiveCallback = Callable[[str, list[str]], None]


class Writer:
    def __init__(
        self,
        sink: Sink,
        counters: Counters,
        *,
        flush_interval: float,
        redactor: Redactor | None = None,
        on_session_end: LiveCallback | None = None,
    ) -> None:
        self.sink = sink
        self.counters = counters
        self.flush_interval = flush_interval
        self.redactor = redactor
        self.on_session_end = on_session_end
        self.queue: deque[tuple[Any, float, Any]] = deque()
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._open: dict[str, SessionState] = {}
        self._last_log: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="agent-stream-trace-writer", daemon=True)
        self._thread.start()

    # -- called from other threads ------------------------------------------------------

    def flush(self, timeout: float | None) -> bool:
        """Block until everything queued so far is written; False on timeout or when stopped."""
        if not self._thread.is_alive():
            return False
        mark = FlushMark(threading.Event())
        self.queue.append((None, 0.0, mark))
        self.wake.set()
        return mark.done.wait(timeout)

    def stop(self, timeout: float | None) -> bool:
        """Write everything queued, end still-open sessions as cancelled, close the sink."""
        self._stop.set()
        self.wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self._guarded(self._drain)
            self._guarded(self._maybe_rotate)  # time rotation happens when idle too
            if stopping:
                break
            self.wake.wait(self.flush_interval)
            self.wake.clear()
        self._guarded(self._shutdown)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # a bug here must not kill the thread that drains the queue
            self.counters.internal_errors += 1
            log.exception("agent-stream-trace recorder: internal error (%s); recording goes on", exc)

    def _drain(self) -> None:
        queue = self.queue
        while queue:
            out: list[str] = []
            touched: dict[str, SessionState] = {}
            flushes: list[FlushMark] = []
            # With size rotation, a batch ends where the file would be full, so files stay
            # close to max_bytes (over by at most one line) however fast the stream is.
            room = self.sink.room()
            chars = counted = 0
            for _ in range(min(len(queue), MAX_BATCH)):
                sess, t, payload = queue.popleft()
                if sess is None:
                    flushes.append(payload)
                else:
                    self._process(sess, t, payload, out, touched)
                if room is not None:
                    while counted < len(out):
                        chars += len(out[counted])
                        counted += 1
                    if chars >= room:
                        break
            self._write(out, touched)
            self._maybe_rotate()
            for mark in flushes:
                mark.done.set()
            if queue:
                time.sleep(0)  # let the event loop have the GIL before the next batch

    def _maybe_rotate(self) -> None:
        try:
            rotated = self.sink.rotate_if_due()
        except Exception as exc:
            self._failed("rotate", exc, 0)
            return
        if rotated:
            self.counters.rotations += 1
            # Continuation headers: the new file names every session still open.
            self._write([], {sid: s for sid, s in self._open.items() if s.sampled})

    def _shutdown(self) -> None:
        out: list[str] = []
        touched: dict[str, SessionState] = {}
        now = time.monotonic()
        for sess in list(self._open.values()):
            self._end(sess, now, EndMark("cancelled", detail="recorder closed"), out, touched)
        self._write(out, touched)
        try:
            self.sink.close()
        except Exception as exc:
            self._failed("close", exc, 0)

    # -- records ------------------------------------------------------------------------

    def _process(self, sess: SessionState, t: float, payload: Any, out: list[str], touched: dict[str, SessionState]) -> None:
        if payload is START:
            self._start(sess, touched)
            return
        if sess.parser is None:
            return  # the session was ended by close(): later items are not recorded
        if isinstance(payload, EndMark):
            self._end(sess, t, payload, out, touched)
            return
        if sess.dropped != sess.dropped_seen:
            # Items the loop could not queue: skip their seq numbers so the gap is visible.
            sess.seq += sess.dropped - sess.dropped_seen
            sess.dropped_seen = sess.dropped
        if payload.__class__ is str and sess.parser.idle and self.redactor is None:
            # The hot path: one emitter-shaped event, its JSON spliced in verbatim.
            fast = fast_event(payload)
            if fast is not None:
                event, data_text = fast
                sess.seq += 1
                self.counters.records += 1
                if event == "done":
                    sess.done_sent = True
                self._route(sess, wire_event_line(sess.sid, sess.seq, t - sess.t0, event, data_text), out, touched)
                return
        for item in sess.parser.feed(payload):
            self._emit(sess, t - sess.t0, item, out, touched)

    def _start(self, sess: SessionState, touched: dict[str, SessionState]) -> None:
        self.counters.sessions += 1
        sess.parser = SSEParser()
        sess.header_line = dumps(header_record(sess.sid, sess.started_at, side="server", attrs=sess.attrs))
        self._open[sess.sid] = sess
        if self.on_session_end is not None:
            sess.live_lines = [sess.header_line]
        if sess.sampled:
            touched[sess.sid] = sess  # the header goes out now, even before any event
        else:
            sess.held = []

    def _emit(self, sess: SessionState, t: float, item: SSEItem, out: list[str], touched: dict[str, SessionState]) -> None:
        sess.seq += 1
        self.counters.records += 1
        if item.data_text is not None:
            if item.event == "done":
                sess.done_sent = True
            if self.redactor is None:
                line = wire_event_line(sess.sid, sess.seq, t, item.event, item.data_text)
            else:
                data = self._redact(item.event, json.loads(item.data_text))
                line = record_line(sess.sid, sess.seq, t, item.event, data)
        else:
            if item.event == UNPARSED_EVENT:
                self.counters.unparsed += 1
            data = item.record_data if self.redactor is None else self._redact(item.event, item.record_data)
            line = record_line(sess.sid, sess.seq, t, item.event, data)
        self._route(sess, line, out, touched)

    def _end(self, sess: SessionState, now: float, mark: EndMark, out: list[str], touched: dict[str, SessionState]) -> None:
        t = now - sess.t0
        for item in sess.parser.close() if sess.parser is not None else ():
            self._emit(sess, t, item, out, touched)
        if mark.kind == "returned":
            reason = "done" if sess.done_sent else "returned_without_done"
        else:
            reason = mark.kind
        data: dict[str, Any] = {"reason": reason}
        if mark.exc_type is not None:
            data["type"] = mark.exc_type
            data["message"] = mark.message
        if mark.detail is not None:
            data["detail"] = mark.detail
        if sess.dropped:
            data["dropped"] = sess.dropped
            sess.seq += sess.dropped - sess.dropped_seen
            sess.dropped_seen = sess.dropped
        sess.seq += 1
        self.counters.records += 1
        if self.redactor is not None:
            data = self._redact(END_EVENT, data)
        line = record_line(sess.sid, sess.seq, t, END_EVENT, data)
        keep = sess.sampled or reason != "done"
        if sess.sampled:
            self._route(sess, line, out, touched)
        elif keep:
            # Sampling never drops a failure: write what was held, header first.
            out.extend(sess.held or ())
            out.append(line)
            touched[sess.sid] = sess
            if sess.live_lines is not None:
                sess.live_lines.append(line)
        if keep:
            self.counters.sessions_written += 1
        else:
            self.counters.sessions_sampled_out += 1
        self._open.pop(sess.sid, None)
        sess.parser = None
        sess.held = None
        if keep and self.on_session_end is not None and sess.live_lines is not None:
            self.on_session_end(sess.sid, sess.live_lines)
        sess.live_lines = None

    def _route(self, sess: SessionState, line: str, out: list[str], touched: dict[str, SessionState]) -> None:
        if sess.sampled:
            out.append(line)
            touched[sess.sid] = sess
        elif sess.held is not None:
            sess.held.append(line)
        if sess.live_lines is not None:
            sess.live_lines.append(line)

    def _redact(self, event: str, data: Any) -> Any:
        try:
            return self.redactor(event, data)  # type: ignore[misc]
        except Exception as exc:
            self.counters.redaction_errors += 1
            self._log_once("redact", f"redactor raised {type(exc).__name__}: {exc}; record written with empty data")
            return {}

    # -- output -------------------------------------------------------------------------

    def _write(self, out: list[str], touched: dict[str, SessionState]) -> None:
        if not out and not touched:
            return
        heads: list[SessionState] = []
        try:
            gen = self.sink.prepare()
            heads = [s for s in touched.values() if s.header_gen != gen]
            lines = [s.header_line for s in heads]
            lines.extend(out)
            if not lines:
                return
            data = "".join(lines).encode("utf-8", "replace")
            self.sink.write(data)
        except Exception as exc:
            self._failed("write", exc, len(heads) + len(out))
            return
        for s in heads:
            s.header_gen = gen
        self.counters.lines_written += len(lines)
        self.counters.bytes_written += len(data)
        self.counters.batches_written += 1

    def _failed(self, what: str, exc: Exception, lines: int) -> None:
        self.counters.write_errors += 1
        self.counters.lines_lost += lines
        self._log_once(
            what,
            f"cannot {what} {self.sink.describe()}: {type(exc).__name__}: {exc} "
            f"({self.counters.write_errors} errors, {self.counters.lines_lost} lines lost so far)",
        )

    def _log_once(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last_log.get(kind)
        if last is None or now - last >= LOG_EVERY_S:
            self._last_log[kind] = now
            log.warning("agent-stream-trace recorder: %s", message)
