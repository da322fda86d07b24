"""Per-session running summaries of events (table `_session_stats`), kept up to date per batch.

Every per-session metric (sessions.py) is computed from one summary row per session: counts,
first/last times, the done and `_end` records, the longest silence. Recomputing those from
`events` at the end of a run read and windowed the whole table (2.5M rows: about 1 s), and a
cron run that added 1% of lines paid for all of it again. Instead each batch's new events are
summarised per session (`summarise`), and the summary is merged into the stored one (`MERGE`):
counts add up, minima and maxima combine, and the silence across the seam is the first new
event's t minus the last stored one's. The merge is exact when every new event comes after
every stored one (seq above the stored max_seq), which is how recordings grow. A session whose
new events fall among its stored ones (a partial copy of a file read before the whole, say) is
marked stale and summarised again from all its events in `events`, with the same SQL.
"""

from __future__ import annotations

from typing import Literal

# The events whose `data` a summary reads (and tokens stored without text_chars). A new metric
# that reads the data of another event type must add the type here.
_DATA_EVENTS = "('turn', 'tool_use', 'tool_result', 'done', '_end')"


def metric_rows(alias: str) -> str:
    """SQL select-list of the columns `summarise` reads, from event rows aliased `alias`."""
    return (f"{alias}.seq, {alias}.t, {alias}.event, "
            f"CASE WHEN {alias}.event IN {_DATA_EVENTS} OR ({alias}.event = 'token' AND {alias}.text_chars IS NULL) "
            f"THEN {alias}.data END AS data, {alias}.text_chars")


# The aggregates of a session's rows in any order (all but the silences), and those of its
# silences, which need each row's predecessor by seq (a window): `gap` and `prev_seq`.
_ROW_AGGREGATES = """
        count(*) AS recorded,
        count(CASE WHEN NOT starts_with(event, '_') THEN 1 END) AS event_count,
        count(CASE WHEN event = 'token' THEN 1 END) AS token_events,
        -- text_chars is length(data->>'text') measured at ingest; computed here for rows without it
        coalesce(sum(CASE WHEN event = 'token' THEN coalesce(text_chars, length(data ->> 'text')) END), 0) AS token_chars,
        min(CASE WHEN event = 'token' THEN t END) AS first_token_t,
        max(CASE WHEN event = 'token' THEN t END) AS last_token_t,
        min(seq) AS first_seq,
        min_by(t, seq) AS first_t,
        max(seq) AS max_seq,
        max_by(t, seq) AS last_t,
        max(CASE WHEN event = 'turn' THEN try_cast(data ->> 'turn_number' AS INTEGER) END) AS max_turn,
        count(CASE WHEN event = 'tool_use' THEN 1 END) AS tool_calls,
        count(CASE WHEN event = 'tool_result' AND (data ->> 'status') = 'error' THEN 1 END) AS tool_errors,
        count(CASE WHEN event = 'error' THEN 1 END) AS errors,
        count(CASE WHEN event = 'done' THEN 1 END) AS dones,
        max(CASE WHEN event = 'done' THEN seq END) AS done_seq,
        max_by(data, CASE WHEN event = 'done' THEN seq END) AS done_data,
        max(CASE WHEN event = '_end' THEN seq END) AS end_seq,
        max_by(data, CASE WHEN event = '_end' THEN seq END) AS end_data,
        max(CASE WHEN NOT starts_with(event, '_') THEN seq END) AS last_wire_seq"""
_GAP_AGGREGATES = """
        max(gap) AS max_gap_s,
        -- where the longest silence ended; the first of equally long ones (t is rounded to 1 ms)
        max_by({'seq': seq, 't': t}, CASE WHEN gap IS NOT NULL THEN {'gap': gap, 'first': -seq} END) AS max_gap_end,
        min(gap) AS min_gap,
        -- rows that repeat the seq before them: none where each (k, seq) appears once; the
        -- ingester summarises a batch before it drops repeated lines, and drops (and
        -- summarises again) only when this says there are some (classify.py)
        count(CASE WHEN seq = prev_seq THEN 1 END) AS repeats"""


def _with_gaps(rows: str, *, sort: bool = False) -> str:
    """`rows` with each row's silence since its session's previous row by seq (`gap`), and
    that row's seq (`prev_seq`): by a window partitioned by k, or, with `sort`, from the rows
    sorted by (k, seq), each row's predecessor in that order (an empty OVER () keeps its
    input's order: DuckDB's "order preservation", which holds with `preserve_insertion_order`
    on, its default; load.staged_batch turns it off for the parse alone)."""
    if sort:
        same = "lag(k) OVER () = k"
        return f"""(SELECT *, CASE WHEN {same} THEN t - lag(t) OVER () END AS gap,
            CASE WHEN {same} THEN lag(seq) OVER () END AS prev_seq
          FROM ({rows} ORDER BY k, seq))"""
    return f"""(SELECT *, t - lag(t) OVER w AS gap, lag(seq) OVER w AS prev_seq FROM ({rows})
          WINDOW w AS (PARTITION BY k ORDER BY seq))"""


def summarise(rows: str, *, size: Literal["any", "small", "large"] = "any") -> str:
    """SQL: one summary per `k` of the event rows in `rows` (k, seq, t, event, data, text_chars).
    Exact when each (k, seq) appears once (the ingester stores every (session, side, seq)
    once); `repeats` counts the rows that break that.

    Each aggregate of some rows only takes the others as NULL (a CASE), which aggregates skip:
    DuckDB evaluates a FILTER clause per aggregate, and 17 of them cost ~15% more CPU than the
    same aggregates of CASEs (measured on a 76 MB batch, medians of 15 runs, same results).
    max_by skips a row whose `by` is NULL, so the CASE goes there.

    `size`, how many rows `rows` holds, picks one of three forms that give the same summary:
    - "any" (not known: stale sessions summarised again): one pass, the silences by a window
      partitioned by k.
    - "large" (a batch of classify.LARGE_BATCH_BYTES or more): the silences computed from the
      rows' k, seq and t alone and joined to the other aggregates by k. `rows` is then read
      twice, but the window sorts three narrow columns instead of every row with its JSON
      `data`: on a 96 MB batch ~15% less CPU (median of 9 runs, one thread and two, same
      results); on a cron run's 3 MB ~1.5 ms more (a second read, aggregate and join to start).
    - "small" (a smaller batch: a cron run's): one pass over the rows sorted (_with_gaps
      `sort`). The partitioned window cost ~10 ms of the 1% append's 24k rows, most of its
      summary; sorted, the statement took ~3 ms less (in-process, best of 10: 15.5 -> 12.6 ms,
      same rows). On a first run's 2.5M rows it was ~0.1 s slower (its lag runs on one thread).
    """
    if size != "large":
        return f"""
    SELECT k,{_ROW_AGGREGATES},{_GAP_AGGREGATES}
    FROM {_with_gaps(rows, sort=size == "small")}
    GROUP BY k
    """
    return f"""
    SELECT a.*, g.* EXCLUDE (k) FROM (
        SELECT k,{_ROW_AGGREGATES}
        FROM ({rows}) GROUP BY k
    ) a JOIN (
        SELECT k,{_GAP_AGGREGATES}
        FROM {_with_gaps(f"SELECT k, seq, t FROM ({rows})")}
        GROUP BY k
    ) g USING (k)
    """


# The batch's summary `n` of one session merged into the stored one `o` (NULL for a session seen
# for the first time), every event of n after every one of o.
_GAP_CANDIDATE = "CASE WHEN {gap} IS NOT NULL THEN {{'gap': {gap}, 'first': -({seq}), 'seq': {seq}, 't': {t}}} END"
_MERGED = f"""
    coalesce(o.recorded, 0) + n.recorded AS recorded,
    coalesce(o.event_count, 0) + n.event_count AS event_count,
    coalesce(o.token_events, 0) + n.token_events AS token_events,
    coalesce(o.token_chars, 0) + n.token_chars AS token_chars,
    least(o.first_token_t, n.first_token_t) AS first_token_t,
    greatest(o.last_token_t, n.last_token_t) AS last_token_t,
    coalesce(o.first_seq, n.first_seq) AS first_seq,
    coalesce(o.first_t, n.first_t) AS first_t,
    n.max_seq AS max_seq,
    n.last_t AS last_t,
    greatest(o.max_turn, n.max_turn) AS max_turn,
    coalesce(o.tool_calls, 0) + n.tool_calls AS tool_calls,
    coalesce(o.tool_errors, 0) + n.tool_errors AS tool_errors,
    coalesce(o.errors, 0) + n.errors AS errors,
    coalesce(o.dones, 0) + n.dones AS dones,
    coalesce(n.done_seq, o.done_seq) AS done_seq,
    CASE WHEN n.done_seq IS NOT NULL THEN n.done_data ELSE o.done_data END AS done_data,
    coalesce(n.end_seq, o.end_seq) AS end_seq,
    CASE WHEN n.end_seq IS NOT NULL THEN n.end_data ELSE o.end_data END AS end_data,
    coalesce(n.last_wire_seq, o.last_wire_seq) AS last_wire_seq,
    greatest(o.max_gap_s, n.first_t - o.last_t, n.max_gap_s) AS max_gap_s,
    greatest(
        {_GAP_CANDIDATE.format(gap='o.max_gap_s', seq='o.max_gap_end.seq', t='o.max_gap_end.t')},
        {_GAP_CANDIDATE.format(gap='n.first_t - o.last_t', seq='n.first_seq', t='n.first_t')},
        {_GAP_CANDIDATE.format(gap='n.max_gap_s', seq='n.max_gap_end.seq', t='n.max_gap_end.t')}
    ) AS best_gap,
    least(o.min_gap, n.first_t - o.last_t, n.min_gap) AS min_gap
"""

STATS_COLUMNS = (
    "recorded, event_count, token_events, token_chars, first_token_t, last_token_t, first_seq, first_t, "
    "max_seq, last_t, max_turn, tool_calls, tool_errors, errors, dones, done_seq, done_data, end_seq, "
    "end_data, last_wire_seq, max_gap_s, max_gap_end, min_gap"
)

_MERGED_COLUMNS = STATS_COLUMNS.replace(
    "max_gap_end", "CASE WHEN best_gap IS NOT NULL THEN {'seq': best_gap.seq, 't': best_gap.t} END AS max_gap_end")

# `_batch_stats` (k, the summary columns): the batch's new events, summarised per session key
# (`_session_keys`, under which `_session_stats` stores them too: m014). New and grown sessions
# get the merged summary; the others are marked stale (refresh_sessions summarises them again
# from their events). `_session_stats` has no primary key (m011): its index cost ~2 us per
# summary inserted (~40 ms of a first run) and was written again at every checkpoint, so a
# merged summary replaces the stored one by a DELETE and an INSERT, in the batch's transaction.
_REPLACE_MERGED = (
    """
    DELETE FROM _session_stats s USING _merged m WHERE s.k = m.k AND m.stale IS NOT TRUE
    """,
    f"""
    INSERT INTO _session_stats (k, {STATS_COLUMNS})
    SELECT k, {_MERGED_COLUMNS}
    FROM _merged WHERE stale IS NOT TRUE
    """,
)
MERGE = (
    f"""
    CREATE OR REPLACE TEMP TABLE _merged AS
    SELECT n.k, n.first_seq <= o.max_seq AS stale, {_MERGED}
    FROM _batch_stats n LEFT JOIN _session_stats o USING (k)
    """,
    *_REPLACE_MERGED,
    """
    INSERT INTO _stale_sessions SELECT k FROM _merged WHERE stale
    ON CONFLICT DO NOTHING
    """,
)

# The same merge for a batch in which no session can be stale: every session's new events all
# come after its stored ones (classify.py's _MAYBE_STORED finds none at or below a summary's
# max_seq, and none of them is stale), so `stale` is false or NULL for all of them and there
# is nothing to add to `_stale_sessions`. A new session's merged summary is its batch summary
# (least/greatest skip NULLs); only the sessions with a stored one are deleted.
MERGE_GROWN = MERGE[:-1]

# A batch none of whose sessions has a stored summary yet (new sessions appended to the
# recordings, a first run's first batch): every summary is inserted as it is, with nothing to
# read or delete (planning the merge alone cost ~10 ms, a few percent of a cron run).
MERGE_NEW = (
    f"""
    INSERT INTO _session_stats (k, {STATS_COLUMNS})
    SELECT k, {STATS_COLUMNS} FROM _batch_stats n
    """,
)


# Stale sessions, summarised again from every stored event (the same summary SQL).
RESUMMARISE = (
    f"""
    CREATE OR REPLACE TEMP TABLE _resummarised AS
    {summarise(f"SELECT e.k, {metric_rows('e')} FROM _events e SEMI JOIN _stale_sessions USING (k)")}
    """,
    "DELETE FROM _session_stats s USING _stale_sessions t WHERE s.k = t.k",
    f"INSERT INTO _session_stats (k, {STATS_COLUMNS}) SELECT k, {STATS_COLUMNS} FROM _resummarised",
    "DELETE FROM _stale_sessions",
)
