"""The per-session metric definitions (README, "Metric definitions"), in SQL, from the sessions' summaries.

This is the one place where outcome, end_reason, attribution, ttft_s, token velocity, turns,
max_gap_s and tool latency are defined, over the per-session summaries of stats.py (kept up
to date as events are stored) and the tool events. The ingester recomputes the rows of the
sessions in `_dirty_sessions`; the live hook gets the same numbers by ingesting a session's
lines into an in-memory database (ingest_lines), so there is no second definition anywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb

from ..config import DEFAULT_OPEN_WINDOW_S
from . import stats

INTERLEAVE_HORIZON_S = DEFAULT_OPEN_WINDOW_S

# A file's modification time: the stored one, or the one this run found where it differs
# (pipeline._mtimes_now: files with an open session that the run does not read), passed as
# parameters. Usually there are none, and the statements go without the join (~2 ms of a
# cron run: callgrind, 8M instructions).
def _mtime(file: str, *, found: bool) -> tuple[str, str]:
    """(JOIN clause, expression) of the modification time of the file `file`.path."""
    if not found:
        return "", f"coalesce({file}.mtime, 0)"
    join = (f"LEFT JOIN (SELECT unnest($mtime_paths::VARCHAR[]) AS path, unnest($mtime_values::DOUBLE[]) AS mtime) m"
            f" ON m.path = {file}.path")
    return join, f"coalesce(m.mtime, {file}.mtime, 0)"

# The sessions to recompute: those listed dirty, and open sessions whose files went quiet past
# the open window (their rows change with no new line), with their key `k` (`_session_keys`),
# under which their headers, summaries and tool events are stored (every session with a header
# has one: m015).
def _keys(*, found: bool) -> str:
    join, mtime = _mtime("f", found=found)
    return f"""
CREATE OR REPLACE TEMP TABLE _keys AS
SELECT d.session_id, d.side, sk.k FROM _dirty_sessions d
JOIN _session_keys sk ON sk.uid = try_cast(d.session_id AS UUID) AND sk.side = d.side  -- by UUID: m016
UNION
SELECT s.session_id, s.side, s.k FROM _sessions s
JOIN _ingest_files f ON f.path = s.source_file
{join}
WHERE s.outcome = 'open' AND {mtime} < $idle_before
"""


KEYS, KEYS_FOUND = _keys(found=False), _keys(found=True)

# The session's header: when one session is found in several files (a copied or rotated
# recording), the first file by name is its source_file; the newest file decides idleness.
# By k (m015): DuckDB skips the stored headers outside the keys' min/max. Whether a later
# header follows in the same file matters only for v0 sessions: only their files are read whole.
def _headers(*, found: bool) -> str:
    join, mtime = _mtime("f", found=found)
    return f"""
WITH h AS (SELECT h.* FROM _session_headers h SEMI JOIN _keys k USING (k)),
last_header AS (
    SELECT source_file, max(line_no) AS last_line FROM _session_headers
    WHERE source_file IN (SELECT source_file FROM h WHERE coalesce(v, 0) = 0) GROUP BY source_file
)
SELECT h.k,
    min_by(h.source_file, h.source_file) AS source_file,
    min(h.started_at) AS started_at,
    max(h.v) AS v,
    min_by(h.attrs, h.source_file) AS attrs,
    -- a later header in the same v0 file closes the session (sequential recording)
    bool_or(h.line_no < lh.last_line) AS followed_by_header,
    max({mtime}) AS last_mtime
FROM h
LEFT JOIN last_header lh ON lh.source_file = h.source_file
LEFT JOIN _ingest_files f ON f.path = h.source_file
{join}
GROUP BY h.k
"""


# The sessions' summaries (stats.py), under their keys.
AGGREGATES = """
SELECT s.* EXCLUDE (max_gap_end), s.max_gap_end.t AS max_gap_at_s
FROM _session_stats s SEMI JOIN _keys k USING (k)
"""

TOOLS = """
CREATE OR REPLACE TEMP TABLE _tools AS
WITH ev AS (
    -- by k: DuckDB skips the stored rows outside the keys' min/max (a cron run's new sessions)
    SELECT e.* FROM _tool_events e SEMI JOIN _keys k USING (k)
),
uses AS (
    SELECT k, tool_use_id, min_by(tool_name, seq) AS tool_name, min(t) AS started_t, min(seq) AS use_seq
    FROM ev WHERE event = 'tool_use' GROUP BY ALL
), results AS (
    -- A result answers its use only if it comes after it (by seq): one before it is a result
    -- without a use, and the use stays orphaned (paired, the latency came out negative).
    SELECT e.k, e.tool_use_id, coalesce(e.seq > u.use_seq, false) AS after_use,
        min_by({'name': e.tool_name, 't': e.t, 'status': e.status, 'ms': e.duration_ms}, e.seq) AS r
    FROM ev e LEFT JOIN uses u ON u.k = e.k AND u.tool_use_id IS NOT DISTINCT FROM e.tool_use_id
    WHERE e.event = 'tool_result' GROUP BY ALL
)
SELECT coalesce(u.k, r.k) AS k,
    coalesce(u.tool_use_id, r.tool_use_id) AS tool_use_id,
    coalesce(u.tool_name, r.r.name) AS tool_name,
    u.started_t, r.r.t AS ended_t,
    (r.r.t - u.started_t) * 1000 AS latency_ms,
    r.r.ms AS reported_ms,
    CASE WHEN r.k IS NULL THEN 'orphaned' WHEN r.r.status = 'error' THEN 'error' ELSE 'done' END AS status
FROM uses u FULL OUTER JOIN results r
    ON u.k = r.k AND u.tool_use_id IS NOT DISTINCT FROM r.tool_use_id AND r.after_use
"""

# A v0 session whose own lines show interleaving (over its summary's columns): several dones,
# events after the done, or time running backwards.
INTERLEAVED = "coalesce(dones, 0) > 1 OR done_seq < last_wire_seq OR min_gap < 0"


# Headers and summaries are CTEs, not tables of their own: a cron run's few sessions cost
# more to plan and create tables for than to compute.
def _rows(*, found: bool) -> str:
    return f"""
CREATE OR REPLACE TEMP TABLE _rows AS
WITH _hdr AS ({_headers(found=found)}), _agg AS ({AGGREGATES}), t AS (
    SELECT k, count(*) FILTER (WHERE status = 'orphaned') AS orphaned_tools
    FROM _tools GROUP BY ALL
), base AS (
    SELECT ks.k, ks.session_id, ks.side, h.source_file, h.started_at, h.v, h.attrs, a.* EXCLUDE (k),
        coalesce(a.dones, 0) > 0 AS has_done,
        a.end_data IS NOT NULL AS has_end,
        (a.end_data IS NOT NULL)
            OR (coalesce(h.v, 0) = 0 AND coalesce(h.followed_by_header, false))
            OR (coalesce(h.last_mtime, 0) < $idle_before) AS closed,
        coalesce(t.orphaned_tools, 0) AS orphaned_tools,
        -- the done record's fields, read with one parse of it (a parse per field was most of
        -- this statement: 20k sessions, ~60 ms of a first run's closing, on one core)
        json_extract_string(a.done_data, ['$.model', '$.message_id', '$.total_cost_usd', '$.num_turns',
            '$.tool_count', '$.duration_ms', '$.usage.output_tokens', '$.output_tokens']) AS done_fields
    FROM _keys ks
    JOIN _hdr h USING (k)
    LEFT JOIN _agg a USING (k)
    LEFT JOIN t USING (k)
)
SELECT
    k, session_id, side, source_file, started_at,
    started_at + to_microseconds(round(coalesce(last_t, 0) * 1e6)::BIGINT) AS ended_at,
    coalesce(last_t, 0) AS duration_s,
    CASE WHEN has_done THEN 'done' WHEN closed THEN 'synthetic_done' ELSE 'open' END AS outcome,
    CASE WHEN has_end THEN coalesce(end_data ->> 'reason', 'no_end_record')
         WHEN has_done THEN 'done'
         WHEN closed THEN 'no_end_record' END AS end_reason,
    CASE WHEN v >= 1 THEN 'exact'
         -- v0 lines carry no session id: interleaving shows as several dones, events after
         -- the done, or time running backwards inside one positional session.
         WHEN {INTERLEAVED} THEN 'ambiguous'
         ELSE 'positional' END AS attribution,
    coalesce(event_count, 0) AS event_count,
    coalesce(token_events, 0) AS token_events,
    coalesce(token_chars, 0) AS token_chars,
    first_token_t AS ttft_s,
    CASE WHEN token_events >= 2 AND last_token_t > first_token_t
         THEN token_chars / (last_token_t - first_token_t) END AS token_velocity_cps,
    max_gap_s,
    CASE WHEN max_turn IS NOT NULL THEN max_turn WHEN coalesce(event_count, 0) > 0 THEN 1 ELSE 0 END AS turns,
    coalesce(tool_calls, 0) AS tool_calls,
    coalesce(tool_errors, 0) AS tool_errors,
    orphaned_tools,
    coalesce(errors, 0) AS errors,
    -- The done event's model, else the one the header's attrs name (a recorder that knows
    -- the model puts it there): a session that ended without done has a model too, so a rate
    -- of sessions without done can be grouped by it.
    coalesce(done_fields[1], CASE WHEN json_type(attrs, '$.model') = 'VARCHAR' THEN attrs ->> '$.model' END) AS model,
    done_fields[2] AS message_id,
    try_cast(done_fields[3] AS DOUBLE) AS total_cost_usd,
    try_cast(done_fields[4] AS INTEGER) AS reported_turns,
    try_cast(done_fields[5] AS INTEGER) AS reported_tool_count,
    try_cast(done_fields[6] AS BIGINT) AS reported_duration_ms,
    attrs,
    coalesce(try_cast(done_fields[7] AS BIGINT), try_cast(done_fields[8] AS BIGINT)) AS output_tokens,
    CASE WHEN output_tokens IS NOT NULL AND token_events >= 2 AND last_token_t > first_token_t
         THEN output_tokens / (last_token_t - first_token_t) END AS token_velocity_tps,
    max_gap_at_s,
    CASE WHEN v >= 1 AND max_seq IS NOT NULL THEN greatest(max_seq - recorded, 0) END AS lost_lines
FROM base
"""


ROWS, ROWS_FOUND = _rows(found=False), _rows(found=True)

# v0 interleaving also hides in sessions that look fine: a session that was running when an
# ambiguous one in the same file was recorded may have lost its events to it, or taken some
# of its events (a done among them: then it looks finished). Mark those ambiguous too; never
# guess. A session may have run on unseen for a while after its last visible line (its own
# done may be among another's lines): we allow it INTERLEAVE_HORIZON_S. A sequential file has
# no ambiguous session, so nothing spreads there: a crash without done is not interleaving.
SPREAD_AMBIGUITY = f"""
UPDATE _sessions s SET attribution = 'ambiguous'
FROM (
    -- from the sessions whose own lines show interleaving only, not from those marked by a
    -- spread: from those, it went on from run to run (one run over the file marks less)
    SELECT a.source_file, a.started_at, a.ended_at
    FROM _sessions a
    WHERE a.attribution = 'ambiguous' AND a.k IN (SELECT k FROM _session_stats WHERE {INTERLEAVED})
      -- files where a session just recomputed is v0: a pair of sessions neither of which was
      -- recomputed is as an earlier run left it, and v1 sessions are never marked. A run that
      -- recomputed only v1 sessions does not run this at all (write_rows).
      AND a.source_file IN (SELECT source_file FROM _rows WHERE attribution <> 'exact')
) a
WHERE s.attribution = 'positional' AND a.source_file = s.source_file
  AND s.started_at <= a.ended_at
  AND a.started_at <= s.ended_at + to_microseconds(($horizon * 1e6)::BIGINT)
"""

# The rows of sessions seen before are deleted first (by key: DuckDB skips the stored rows by
# their min/max, m019); a run of only new sessions (a first run) skips that.
DELETE_OLD = """
DELETE FROM _sessions WHERE k IN (SELECT k FROM _keys);
DELETE FROM _tool_calls WHERE k IN (SELECT k FROM _keys);
"""
INSERT_NEW = """
INSERT INTO _sessions BY NAME SELECT * FROM _rows;
INSERT INTO _tool_calls BY NAME SELECT k.session_id, k.side, t.* FROM _tools t JOIN _keys k USING (k);
DELETE FROM _dirty_sessions;
"""


def refresh_sessions(
    con: duckdb.DuckDBPyConnection, *, now: float, open_window: float, mtimes: dict[str, float] | None = None,
) -> tuple[int, int]:
    """Recompute every dirty session's rows, inside the caller's transaction (db.transaction);
    return (new, updated). `mtimes`: see compute_rows."""
    resummarise_stale(con)
    computed = compute_rows(con, now=now, open_window=open_window, mtimes=mtimes)
    return write_rows(con, computed)


def resummarise_stale(con: duckdb.DuckDBPyConnection) -> None:
    """Summarise the stale sessions again from their stored events (stats.py)."""
    if con.execute("SELECT count(*) FROM _stale_sessions").fetchone() != (0,):
        for sql in stats.RESUMMARISE:
            con.execute(sql)


class ComputedRows(NamedTuple):
    total: int  # sessions recomputed
    existing: int  # of which rows are stored already
    not_exact: int  # of which attribution is positional or ambiguous (v0)


# Asked once the rows are computed, in one query (a cron run's cost is mostly its statements).
# By key (m019): DuckDB skips the stored rows outside the keys' min/max.
_COUNTS = """
SELECT (SELECT count(*) FROM _sessions WHERE k IN (SELECT k FROM _keys)),
    (SELECT count(*) FROM _rows WHERE attribution <> 'exact')
"""


def compute_rows(
    con: duckdb.DuckDBPyConnection, *, now: float, open_window: float, mtimes: dict[str, float] | None = None,
) -> ComputedRows:
    """The rows of the sessions to recompute, into temporary tables (_keys, _tools, _rows), after
    resummarise_stale. It only reads the database's own tables, so it may run while another
    connection checkpoints (DuckDB blocks writes then). `mtimes`: files' modification times
    found by this run where they differ from the stored ones (pipeline._mtimes_now)."""
    params: dict[str, object] = {"idle_before": now - open_window}
    if mtimes:
        params.update(mtime_paths=list(mtimes), mtime_values=list(mtimes.values()))
    (total,) = con.execute(KEYS_FOUND if mtimes else KEYS, params).fetchone()  # type: ignore[misc]  # CREATE TABLE AS: its row count
    if total == 0:
        return ComputedRows(0, 0, 0)
    con.execute(TOOLS)
    con.execute(ROWS_FOUND if mtimes else ROWS, params)
    existing, not_exact = con.execute(_COUNTS).fetchone()  # type: ignore[misc]
    return ComputedRows(total, existing, not_exact)


def write_rows(con: duckdb.DuckDBPyConnection, computed: ComputedRows) -> tuple[int, int]:
    """Store the rows compute_rows computed; return (new, updated)."""
    if computed.total == 0:
        return 0, 0
    if computed.existing:
        con.execute(DELETE_OLD)
    con.execute(INSERT_NEW)
    if computed.not_exact:  # only v0 sessions are ever marked ambiguous
        con.execute(SPREAD_AMBIGUITY, {"horizon": INTERLEAVE_HORIZON_S})
    return computed.total - computed.existing, computed.existing
