"""Export sessions as OpenTelemetry traces to any OTLP backend, incrementally and losslessly.

    report = export_otlp(con, OtlpExportOptions(endpoint="http://localhost:4318"))

Pipeline: select the sessions this destination has not acknowledged in their current version
(SQL over `_export_otlp_sent`), read them in batches (session.load_session_traces), map each
to spans (spans.session_spans), encode whole sessions into OTLP requests (otlp_encode) and
send them from a few background threads so encoding overlaps the network (otlp_transport).
A session is marked sent only once the request holding all its spans was acknowledged; on
the first request that fails for good we stop and raise ExportError, with nothing of the
failed request (or of requests not sent yet) marked.
"""

from __future__ import annotations

import gc
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from ..errors import ExportError
from ..session import load_session_traces
from ..spans import MAPPING_VERSION, SpanSpec, data_events, resource_attributes, session_spans
from .otlp_encode import RequestEncoder
from .otlp_transport import OtlpSettings, SendResult, Sender, make_sender, resolve_settings

DEFAULT_REQUEST_SPANS = 2000
DEFAULT_IN_FLIGHT = 2
MARK_EVERY_S = 2.0


@dataclass(frozen=True)
class OtlpExportOptions:
    endpoint: str | None = None  # meaning of OTEL_EXPORTER_OTLP_ENDPOINT; None: env, then default
    protocol: str | None = None  # grpc | http/protobuf; None: env, then http/protobuf
    headers: tuple[str, ...] = ()  # K=V, over OTEL_EXPORTER_OTLP_HEADERS
    timeout_s: float | None = None  # per request, retries included; None: env, then 10 s
    since: datetime | None = None
    session_ids: tuple[str, ...] = ()
    include_content: bool = False
    include_ambiguous: bool = False
    resend_all: bool = False
    service_name: str | None = None
    project: str | None = None
    request_spans: int = DEFAULT_REQUEST_SPANS  # spans per request (whole sessions only)
    in_flight: int = DEFAULT_IN_FLIGHT  # requests sent concurrently


@dataclass
class OtlpExportReport:
    destination: str
    sessions: int = 0  # sessions acknowledged and marked
    spans: int = 0  # spans acknowledged
    requests: int = 0
    unchanged: int = 0  # sessions skipped: this destination already has their current version
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds if self.seconds > 0 else 0.0


def _version_sql() -> str:
    # Everything that changes a session's spans: a re-ingested open session that got more
    # events, an end record or a done changes one of these; the salt covers the mapping
    # version, content opt-in and resource (a new project is a new place to send to).
    return """md5(concat_ws('|', s.outcome, coalesce(s.end_reason, ''), coalesce(s.event_count, 0),
        coalesce(s.duration_s, 0), coalesce(s.tool_calls, 0), coalesce(s.orphaned_tools, 0),
        s.attribution, coalesce(s.lost_lines, 0), coalesce(s.model, ''), coalesce(s.errors, 0), ?))"""


def pending_sessions(
    con: duckdb.DuckDBPyConnection, destination: str, options: OtlpExportOptions, salt: str
) -> tuple[list[tuple[str, str, str]], int]:
    """(session_id, side, version) still to send, oldest first, and how many were unchanged."""
    clauses = ["TRUE"]
    params: list[Any] = [salt, destination]
    if not options.include_ambiguous:
        clauses.append("s.attribution <> 'ambiguous'")
    if options.since is not None:
        clauses.append("s.started_at >= ?")
        params.append(options.since)
    if options.session_ids:
        clauses.append("lower(s.session_id) IN (SELECT unnest(?))")
        params.append([sid.lower() for sid in options.session_ids])
    rows = con.execute(
        f"""
        SELECT s.session_id, s.side, v.version, x.version IS NOT DISTINCT FROM v.version AS unchanged
        FROM sessions s
        CROSS JOIN LATERAL (SELECT {_version_sql()} AS version) v
        LEFT JOIN _export_otlp_sent x
          ON x.destination = ? AND x.session_id = s.session_id AND x.side = s.side
        WHERE {' AND '.join(clauses)}
        ORDER BY s.started_at, s.session_id, s.side
        """,
        params,
    ).fetchall()
    todo = [(r[0], r[1], r[2]) for r in rows if options.resend_all or not r[3]]
    return todo, len(rows) - len(todo)


def _mark_sent(con: duckdb.DuckDBPyConnection, destination: str, rows: Sequence[tuple[str, str, str, int]]) -> None:
    import pyarrow as pa

    table = pa.table({
        "session_id": [r[0] for r in rows], "side": [r[1] for r in rows],
        "version": [r[2] for r in rows], "spans": pa.array([r[3] for r in rows], pa.int32()),
    })
    con.register("_ast_acked", table)
    try:
        con.execute(
            """
            INSERT OR REPLACE INTO _export_otlp_sent
            SELECT ?, session_id, side, version, spans, now() FROM _ast_acked
            """,
            [destination],
        )
    finally:
        con.unregister("_ast_acked")


def _salt(options: OtlpExportOptions, resource: dict[str, str]) -> str:
    return f"m{MAPPING_VERSION}|content={int(options.include_content)}|{sorted(resource.items())}"


def iter_session_spans(
    con: duckdb.DuckDBPyConnection, keys: Sequence[tuple[str, str]], include_content: bool
) -> Iterator[tuple[tuple[str, str], tuple[SpanSpec, ...]]]:
    """((session_id, side), spans) for each key, in order."""
    # Token runs collapsed in SQL, and their text only when it is exported: same spans, far
    # fewer Python objects (tokens are ~90% of events).
    traces = load_session_traces(con, keys, token_runs=True, token_text=include_content,
                                 data_events=data_events(include_content))
    for trace in traces:
        yield (trace.session_id, trace.side), session_spans(trace, include_content=include_content)


_Batch = tuple[bytes, int, list[tuple[str, str, str, int]]]


def _requests(
    con: duckdb.DuckDBPyConnection, todo: Sequence[tuple[str, str, str]], options: OtlpExportOptions,
    encoder: RequestEncoder,
) -> Iterator[_Batch]:
    """Encoded requests of whole sessions: (payload, span count, sessions it completes)."""
    versions = {(sid, side): version for sid, side, version in todo}
    spans: list[SpanSpec] = []
    sessions: list[tuple[str, str, str, int]] = []
    for key, session in iter_session_spans(con, [(r[0], r[1]) for r in todo], options.include_content):
        if spans and len(spans) + len(session) > options.request_spans:
            yield encoder.encode(spans), len(spans), sessions
            spans, sessions = [], []
        spans.extend(session)
        sessions.append((key[0], key[1], versions[key], len(session)))
    if spans:
        yield encoder.encode(spans), len(spans), sessions


def _failure_message(settings: OtlpSettings, result: SendResult) -> ExportError:
    where, status, detail = settings.shown_endpoint, settings.redact(result.status), settings.redact(result.detail)
    if result.retryable:
        return ExportError(
            f"could not deliver to {where}: {status} {detail}".rstrip()
            + f" (gave up retrying after {settings.timeout_s:g}s); nothing more was marked as sent",
            hint="is the collector running and reachable? re-run the export to resume",
        )
    return ExportError(
        f"{where} refused the spans: {status} {detail}".rstrip() + " (not retried)",
        hint="check --endpoint (HTTP posts to <endpoint>/v1/traces), --protocol and auth headers (--header K=V)",
    )


@contextmanager
def _caller_heap_frozen() -> Iterator[None]:
    """Keep the collector off the objects that existed before the export while it runs.

    A bulk export allocates hundreds of thousands of short-lived objects (rows, attribute
    dicts, spans), which triggers full collections, and each one rescans the caller's whole
    heap: measured 10-15% of an export from a process holding a few thousand sessions in
    memory. gc.freeze() parks those objects (new garbage is still collected) and unfreeze()
    hands them back. If the application froze objects itself (pre-fork servers do), its
    freeze is left alone: unfreeze() would undo it."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _SendPool:
    """Up to `size` requests in flight, each worker thread with its own Sender (its own HTTP
    session or gRPC channel). Results arrive on `results` as backends answer; after the first
    request that failed for good, queued requests are dropped unsent (and so stay unmarked)."""

    def __init__(self, factory: Callable[[OtlpSettings], Sender], settings: OtlpSettings, size: int) -> None:
        self.results: queue.Queue[tuple[_Batch, SendResult]] = queue.Queue()
        self.failed = threading.Event()
        self._outbox: queue.Queue[_Batch | None] = queue.Queue(maxsize=size)
        self._senders: list[Sender] = []
        try:
            for _ in range(size):
                self._senders.append(factory(settings))
        except BaseException:
            self._close_senders()
            raise
        self._threads = [
            threading.Thread(target=self._loop, args=(sender,), name=f"agent-stream-otlp-send-{i}", daemon=True)
            for i, sender in enumerate(self._senders)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, batch: _Batch) -> None:
        """Queue a request; blocks while every worker is busy and one request already waits."""
        self._outbox.put(batch)

    def _loop(self, sender: Sender) -> None:
        while (batch := self._outbox.get()) is not None:
            if self.failed.is_set():
                continue  # drain without sending once a request failed for good
            try:
                result = sender.send(batch[0], batch[1])
            except Exception as exc:  # never let the thread die silently
                result = SendResult(False, type(exc).__name__, str(exc))
            if not result.ok:
                self.failed.set()
            self.results.put((batch, result))

    def _close_senders(self) -> None:
        for sender in self._senders:
            sender.close()

    def close(self) -> None:
        """Wait for the requests in flight, then stop the workers and close the senders."""
        for _ in self._threads:
            self._outbox.put(None)
        for thread in self._threads:
            thread.join()
        self._close_senders()


def export_otlp(
    con: duckdb.DuckDBPyConnection,
    options: OtlpExportOptions = OtlpExportOptions(),
    *,
    sender_factory: Callable[[OtlpSettings], Sender] = make_sender,
) -> OtlpExportReport:
    """Send every session this destination has not acknowledged (all of them with resend_all).

    Raises ExportError when the backend refuses a request (4xx) or stays unreachable past the
    retries; sessions acknowledged before that are marked, the rest are sent next time.
    """
    import time

    settings = resolve_settings(options.endpoint, options.protocol, options.headers, options.timeout_s)
    resource = resource_attributes(options.service_name, options.project)
    report = OtlpExportReport(settings.destination)
    started = time.perf_counter()
    todo, report.unchanged = pending_sessions(con, settings.destination, options, _salt(options, resource))
    if not todo:
        return report
    from .. import __version__

    encoder = RequestEncoder(resource, scope_version=__version__)
    # Requests in flight while the next ones are encoded: encoding overlaps the network wait,
    # and a backend far away (tens of ms per request) is not waited for one request at a time.
    pool = _SendPool(sender_factory, settings, max(1, options.in_flight))
    failure: SendResult | None = None
    acked: list[tuple[str, str, str, int]] = []
    last_mark = time.monotonic()

    def mark() -> None:
        # Marked in bulk (one transaction per MARK_EVERY_S): a write per request cost more
        # than encoding it. Only acknowledged sessions are ever in `acked`.
        nonlocal last_mark
        if acked:
            _mark_sent(con, settings.destination, acked)
            acked.clear()
        last_mark = time.monotonic()

    def drain() -> None:
        nonlocal failure
        while True:
            try:
                (_, spans, sessions), result = pool.results.get_nowait()
            except queue.Empty:
                break
            if result.ok:
                acked.extend(sessions)
                report.sessions += len(sessions)
                report.spans += spans
                report.requests += 1
            elif failure is None:
                failure = result
        if time.monotonic() - last_mark >= MARK_EVERY_S:
            mark()

    try:
        with _caller_heap_frozen():
            for batch in _requests(con, todo, options, encoder):
                if pool.failed.is_set():
                    break
                pool.submit(batch)
                drain()
    finally:
        pool.close()
        drain()
        mark()  # also when interrupted: what was acknowledged is marked
    report.seconds = time.perf_counter() - started
    if failure is not None:
        raise _failure_message(settings, failure)
    return report


def dry_run_spans(con: duckdb.DuckDBPyConnection, options: OtlpExportOptions) -> Iterator[SpanSpec]:
    """The spans an export with these options would send now; nothing is sent or marked."""
    settings = resolve_settings(options.endpoint, options.protocol, options.headers, options.timeout_s)
    resource = resource_attributes(options.service_name, options.project)
    todo, _ = pending_sessions(con, settings.destination, options, _salt(options, resource))
    for _, spans in iter_session_spans(con, [(r[0], r[1]) for r in todo], options.include_content):
        yield from spans
