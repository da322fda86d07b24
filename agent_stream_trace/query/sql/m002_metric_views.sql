-- The metric definitions of ARCHITECTURE.md, once, in SQL: table macros with filter
-- parameters, and views that call them with the defaults. The CLI, TraceStore, the dashboard
-- and notebooks all read these; a DuckDB shell user gets the same numbers.
--
-- FROZEN: applied by the migration m002_metric_views. To change a definition, add a new SQL
-- file and a new migration that replaces the objects (CREATE OR REPLACE); never edit this one.
--
-- Conventions shared by every macro:
-- * Filters (all optional, NULL = no filter): since / until (TIMESTAMPTZ, on started_at,
--   until exclusive), model_filter, outcome_filter, side_filter, and attrs equality given as
--   two lists: attr_keys (top-level keys of attrs, e.g. ['route']; a key that does not start
--   with '$' or '/' is taken literally, dots included) and attr_values (compared as text, so
--   42 and "42" both match '42').
-- * Every metric is computed over sessions whose attribution is not 'ambiguous'; ambiguous
--   sessions are counted apart (their events may belong to another session). Open sessions
--   are counted, but never in the synthetic-done denominator.
-- * Parameter names never equal a column name: inside a macro a parameter shadows a column.
-- * Time buckets are in UTC whatever the client's TimeZone setting.

CREATE MACRO session_filter(
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    SELECT *
    FROM sessions s
    WHERE (since IS NULL OR s.started_at >= since)
      AND (until IS NULL OR s.started_at < until)
      AND (model_filter IS NULL OR s.model = model_filter)
      AND (outcome_filter IS NULL OR s.outcome = outcome_filter)
      AND (side_filter IS NULL OR s.side = side_filter)
      AND (attr_keys IS NULL OR json_extract_string(s.attrs, attr_keys) = attr_values);

-- The grouping key of a session: NULL (no grouping), 'model', 'side', 'outcome' or 'attrs.KEY'.
CREATE MACRO session_group(group_by, g_model, g_side, g_outcome, g_attrs) AS
    CASE
        WHEN group_by IS NULL THEN NULL
        WHEN group_by = 'model' THEN g_model
        WHEN group_by = 'side' THEN g_side
        WHEN group_by = 'outcome' THEN g_outcome
        WHEN starts_with(group_by, 'attrs.') THEN
            json_extract_string(g_attrs, substr(group_by, 7))
        ELSE error('group_by must be model, side, outcome or attrs.KEY, got ' || group_by)
    END;

-- Health: counts by outcome, synthetic-done rate, TTFT, velocity, turns, stalls; per time
-- bucket (bucket := 'hour' | 'day' | 'week' | 'month', NULL = one bucket) and per group.
CREATE MACRO health(
    bucket := NULL, group_by := NULL, threshold_s := 15.0,
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    WITH s AS (
        SELECT
            CASE WHEN bucket IS NULL THEN NULL
                 ELSE date_trunc(bucket, timezone('UTC', f.started_at)) END AS period,
            session_group(group_by, f.model, f.side, f.outcome, f.attrs) AS grp,
            f.attribution <> 'ambiguous' AS counted,
            f.*
        FROM session_filter(since := since, until := until, model_filter := model_filter,
            outcome_filter := outcome_filter, side_filter := side_filter,
            attr_keys := attr_keys, attr_values := attr_values) f
    )
    SELECT
        period,
        grp,
        count(*) AS sessions,
        min(started_at) AS first_started_at,
        max(started_at) AS last_started_at,
        count(*) FILTER (counted AND outcome = 'done') AS done,
        count(*) FILTER (counted AND outcome = 'synthetic_done') AS synthetic_done,
        count(*) FILTER (counted AND outcome = 'open') AS open,
        count(*) FILTER (NOT counted) AS ambiguous,
        count(*) FILTER (counted AND outcome = 'synthetic_done')
            / nullif(count(*) FILTER (counted AND outcome IN ('done', 'synthetic_done')), 0)
            AS synthetic_done_rate,
        quantile_cont(ttft_s, 0.5) FILTER (counted) AS ttft_p50_s,
        quantile_cont(ttft_s, 0.95) FILTER (counted) AS ttft_p95_s,
        quantile_cont(token_velocity_cps, 0.5) FILTER (counted) AS velocity_p50_cps,
        quantile_cont(token_velocity_tps, 0.5) FILTER (counted) AS velocity_p50_tps,
        avg(turns) FILTER (counted) AS turns_mean,
        max(turns) FILTER (counted) AS turns_max,
        count(*) FILTER (counted AND max_gap_s >= threshold_s) AS stalls,
        CAST(coalesce(sum(tool_calls) FILTER (counted), 0) AS BIGINT) AS tool_calls,
        CAST(coalesce(sum(tool_errors) FILTER (counted), 0) AS BIGINT) AS tool_errors,
        CAST(coalesce(sum(orphaned_tools) FILTER (counted), 0) AS BIGINT) AS orphaned_tools,
        count(*) FILTER (counted AND errors > 0) AS sessions_with_errors
    FROM s
    GROUP BY period, grp
    ORDER BY period NULLS FIRST, grp NULLS FIRST;

-- Why sessions ended without done: end_reason, sessions, share of the synthetic-done sessions.
CREATE MACRO synthetic_done_causes_for(
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    SELECT
        f.end_reason,
        count(*) AS sessions,
        count(*) / sum(count(*)) OVER () AS share
    FROM session_filter(since := since, until := until, model_filter := model_filter,
        outcome_filter := outcome_filter, side_filter := side_filter,
        attr_keys := attr_keys, attr_values := attr_values) f
    WHERE f.attribution <> 'ambiguous' AND f.outcome = 'synthetic_done'
    GROUP BY f.end_reason
    ORDER BY sessions DESC, f.end_reason NULLS LAST;

-- Tool latency as observed (tool_use to tool_result), per tool_name. Orphaned calls (no
-- result) have no latency: they count in calls and orphaned, never in the percentiles.
-- error_rate = errors / calls; failure_rate = (errors + orphaned) / calls.
CREATE MACRO tool_latency_for(
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    SELECT
        tc.tool_name,
        count(*) AS calls,
        count(*) FILTER (tc.status = 'error') AS errors,
        count(*) FILTER (tc.status = 'orphaned') AS orphaned,
        count(*) FILTER (tc.status = 'error') / count(*) AS error_rate,
        quantile_cont(tc.latency_ms, 0.5) AS p50_ms,
        quantile_cont(tc.latency_ms, 0.95) AS p95_ms,
        quantile_cont(tc.latency_ms, 0.99) AS p99_ms,
        avg(tc.latency_ms) AS mean_ms,
        count(*) FILTER (tc.status IN ('error', 'orphaned')) / count(*) AS failure_rate,
        quantile_cont(tc.reported_ms, 0.5) AS reported_p50_ms
    FROM tool_calls tc
    SEMI JOIN (
        SELECT f.session_id, f.side
        FROM session_filter(since := since, until := until, model_filter := model_filter,
            outcome_filter := outcome_filter, side_filter := side_filter,
            attr_keys := attr_keys, attr_values := attr_values) f
        WHERE f.attribution <> 'ambiguous'
    ) s ON tc.session_id = s.session_id AND tc.side = s.side
    GROUP BY tc.tool_name
    ORDER BY p95_ms DESC NULLS LAST, tc.tool_name;

-- Intervals between consecutive token events of a session (ms), per group (default: model):
-- the raw distribution behind the adaptive flush interval. On a big history the window over
-- every token event is the one expensive query here, so max_sessions := N keeps at most N
-- sessions per group: a fixed pseudo-random choice (hash of the id), so the same database
-- always gives the same answer. NULL (the default) uses every session.
CREATE MACRO token_intervals_for(
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
CREATE MACRO token_velocity_for(
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
CREATE MACRO stalls_for(
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

-- Time to first token per group (default: per model).
CREATE MACRO ttft_for(
    group_by := 'model',
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    SELECT session_group(group_by, f.model, f.side, f.outcome, f.attrs) AS grp,
           count(f.ttft_s) AS sessions,
           quantile_cont(f.ttft_s, 0.5) AS p50_s,
           quantile_cont(f.ttft_s, 0.9) AS p90_s,
           quantile_cont(f.ttft_s, 0.95) AS p95_s,
           quantile_cont(f.ttft_s, 0.99) AS p99_s,
           avg(f.ttft_s) AS mean_s,
           max(f.ttft_s) AS max_s
    FROM session_filter(since := since, until := until, model_filter := model_filter,
        outcome_filter := outcome_filter, side_filter := side_filter,
        attr_keys := attr_keys, attr_values := attr_values) f
    WHERE f.attribution <> 'ambiguous' AND f.ttft_s IS NOT NULL
    GROUP BY grp
    ORDER BY sessions DESC, grp NULLS LAST;

-- Turns: how many sessions ran N turns, and how often each of those ended without done.
CREATE MACRO turns_for(
    since := NULL, until := NULL, model_filter := NULL, outcome_filter := NULL,
    side_filter := NULL, attr_keys := NULL, attr_values := NULL
) AS TABLE
    SELECT f.turns,
           count(*) AS sessions,
           count(*) / sum(count(*)) OVER () AS share,
           count(*) FILTER (f.outcome = 'synthetic_done')
               / nullif(count(*) FILTER (f.outcome IN ('done', 'synthetic_done')), 0)
               AS synthetic_done_rate,
           quantile_cont(f.duration_s, 0.5) AS duration_p50_s,
           avg(f.tool_calls) AS tool_calls_mean
    FROM session_filter(since := since, until := until, model_filter := model_filter,
        outcome_filter := outcome_filter, side_filter := side_filter,
        attr_keys := attr_keys, attr_values := attr_values) f
    WHERE f.attribution <> 'ambiguous'
    GROUP BY f.turns
    ORDER BY f.turns;

CREATE VIEW health_by_day AS
    SELECT CAST(period AS DATE) AS day, sessions, done, synthetic_done, open, ambiguous,
           synthetic_done_rate, ttft_p50_s, ttft_p95_s, velocity_p50_cps, turns_mean, stalls
    FROM health(bucket := 'day');

CREATE VIEW synthetic_done_causes AS
    SELECT end_reason, sessions, share FROM synthetic_done_causes_for();

CREATE VIEW tool_latency AS
    SELECT tool_name, calls, errors, orphaned, error_rate, p50_ms, p95_ms, p99_ms, mean_ms
    FROM tool_latency_for();

CREATE VIEW stalls AS SELECT * FROM stalls_for();

CREATE VIEW token_velocity AS
    SELECT grp AS model, * EXCLUDE (grp) FROM token_velocity_for();
