-- Revisions of m004's macros for big histories (CREATE OR REPLACE).
--
-- FROZEN: applied by the migration m005_query_speed; change it with a new file and a new
-- migration. Measured on 100k simulated sessions (12M events, 2 cores):
-- 1. Finding a few sessions' events: `session_id IN (subquery)` lets DuckDB filter the events
--    scan, where a SEMI JOIN probed a hash table with every one of the 12M rows. The side is
--    matched afterwards (the join back to the chosen sessions).
-- 2. stalls_for gains max_rows := N (the N longest only): the report shows five, and naming
--    the events around every stall of a big history cost a third of a second.

-- Intervals between consecutive token events of a session (ms), per group (default: model):
-- the raw distribution behind the adaptive flush interval. On a big history the window over
-- every token event is the one expensive query here, so max_sessions := N keeps at most N
-- sessions per group: a fixed pseudo-random choice (hash of the id), so the same database
-- always gives the same answer. NULL (the default) uses every session.
CREATE OR REPLACE MACRO token_intervals_for(
    group_by := 'model', max_sessions := NULL,
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    WITH g AS (
        SELECT session_group(group_by, f.model, f.side, f.outcome, f.attrs) AS grp,
               f.session_id, f.side
        FROM session_filter(since := since, until := until, model_filter := model_filter,
            outcome_filter := outcome_filter, side_filter := side_filter,
            attr_keys := attr_keys, attr_values := attr_values) f
        WHERE f.attribution <> 'ambiguous' AND f.token_events >= 2
    ),
    s AS (
        SELECT * FROM g
        QUALIFY max_sessions IS NULL
             OR row_number() OVER (PARTITION BY g.grp
                                   ORDER BY hash(g.session_id, g.side), g.session_id, g.side)
                <= max_sessions
    ),
    iv AS (
        SELECT e.session_id, e.side,
               (e.t - lag(e.t) OVER (PARTITION BY e.session_id, e.side ORDER BY e.seq)) * 1000
                   AS interval_ms
        FROM events e
        WHERE e.event = 'token' AND e.session_id IN (SELECT session_id FROM s)
    )
    SELECT s.grp, iv.session_id, iv.side, iv.interval_ms
    FROM iv JOIN s ON iv.session_id = s.session_id AND iv.side = s.side
    WHERE iv.interval_ms IS NOT NULL;

-- Token velocity per group (default: per model): chars/s and tokens/s per session (every
-- session), the inter-token interval distribution (over max_sessions per group when given,
-- see token_intervals_for), and the flush interval it suggests for adaptive batching:
-- clamp(2 x median inter-token ms, 16, 100) (the seed post's rule).
CREATE OR REPLACE MACRO token_velocity_for(
    group_by := 'model', max_sessions := NULL,
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    WITH vel AS (
        SELECT session_group(group_by, f.model, f.side, f.outcome, f.attrs) AS grp,
               count(*) AS sessions,
               count(f.token_velocity_cps) AS sessions_with_velocity,
               quantile_cont(f.token_velocity_cps, 0.5) AS cps_p50,
               quantile_cont(f.token_velocity_cps, 0.95) AS cps_p95,
               count(f.token_velocity_tps) AS sessions_with_tps,
               quantile_cont(f.token_velocity_tps, 0.5) AS tps_p50,
               quantile_cont(f.token_velocity_tps, 0.95) AS tps_p95
        FROM session_filter(since := since, until := until, model_filter := model_filter,
            outcome_filter := outcome_filter, side_filter := side_filter,
            attr_keys := attr_keys, attr_values := attr_values) f
        WHERE f.attribution <> 'ambiguous' AND f.token_events >= 1
        GROUP BY grp
    ),
    iv AS (
        SELECT i.grp,
               count(DISTINCT (i.session_id, i.side)) AS interval_sessions,
               count(*) AS intervals,
               quantile_cont(i.interval_ms, 0.1) AS interval_p10_ms,
               quantile_cont(i.interval_ms, 0.5) AS interval_p50_ms,
               quantile_cont(i.interval_ms, 0.9) AS interval_p90_ms,
               quantile_cont(i.interval_ms, 0.99) AS interval_p99_ms
        FROM token_intervals_for(group_by := group_by, max_sessions := max_sessions,
            since := since, until := until, model_filter := model_filter,
            outcome_filter := outcome_filter, side_filter := side_filter,
            attr_keys := attr_keys, attr_values := attr_values) i
        GROUP BY i.grp
    )
    SELECT vel.grp, vel.sessions, vel.sessions_with_velocity, vel.cps_p50, vel.cps_p95,
           vel.sessions_with_tps, vel.tps_p50, vel.tps_p95,
           coalesce(iv.interval_sessions, 0) AS interval_sessions,
           coalesce(iv.intervals, 0) AS intervals,
           iv.interval_p10_ms, iv.interval_p50_ms, iv.interval_p90_ms, iv.interval_p99_ms,
           least(greatest(2 * iv.interval_p50_ms, 16), 100) AS suggested_flush_ms
    FROM vel LEFT JOIN iv ON vel.grp IS NOT DISTINCT FROM iv.grp
    ORDER BY vel.sessions DESC, vel.grp NULLS LAST;

-- Stalls: sessions whose longest silence reached threshold_s (the max_rows longest when
-- given), and where it happened:
-- gap_start_s / gap_end_s (seconds since the session start) and the events on either side.
CREATE OR REPLACE MACRO stalls_for(
    threshold_s := 15.0, max_rows := NULL,
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    WITH st AS (
        SELECT f.session_id, f.side, f.started_at, f.model, f.outcome, f.end_reason,
               f.max_gap_s, f.max_gap_at_s, f.duration_s
        FROM session_filter(since := since, until := until, model_filter := model_filter,
            outcome_filter := outcome_filter, side_filter := side_filter,
            attr_keys := attr_keys, attr_values := attr_values) f
        WHERE f.attribution <> 'ambiguous' AND f.max_gap_s >= threshold_s
        QUALIFY max_rows IS NULL
             OR row_number() OVER (ORDER BY f.max_gap_s DESC, f.started_at DESC, f.session_id) <= max_rows
    ),
    ev AS (
        SELECT e.session_id, e.side, e.t, e.event,
               lag(e.t) OVER w AS prev_t,
               lag(e.event) OVER w AS prev_event,
               lag(json_extract_string(e.data, '$.tool_name')) OVER w AS prev_tool
        FROM events e
        WHERE e.session_id IN (SELECT session_id FROM st)
        WINDOW w AS (PARTITION BY e.session_id, e.side ORDER BY e.seq)
    ),
    around AS (
        -- The longest gap recomputed from the lines, to name the events around it.
        SELECT session_id, side,
               arg_max({'before': prev_event, 'tool': prev_tool, 'after': event}, t - prev_t) AS g
        FROM ev
        WHERE prev_t IS NOT NULL
        GROUP BY session_id, side
    )
    SELECT st.session_id, st.side, st.started_at, st.model, st.outcome, st.end_reason,
           st.max_gap_s,
           st.max_gap_at_s - st.max_gap_s AS gap_start_s,
           st.max_gap_at_s AS gap_end_s,
           st.duration_s,
           around.g.before AS event_before, around.g.tool AS tool_before,
           around.g.after AS event_after
    FROM st LEFT JOIN around ON st.session_id = around.session_id AND st.side = around.side
    ORDER BY st.max_gap_s DESC, st.started_at DESC;
