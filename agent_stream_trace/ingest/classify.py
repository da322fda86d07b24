"""SQL that turns a batch of raw lines into headers, events and rejects.

Inputs (registered by load.py): `_pieces` (file_id, base, n, chunk: whole lines) and
`_files` (file_id: the file's id in `_source_files`, new: not stored there yet, path, the
positional state carried from the previous batch: cur_session, cur_side, cur_header_line,
cur_v, and unterminated_line: see TRUNCATED). Everything runs inside DuckDB over whole
batches; no Python touches a single line.

Attribution: a line with `sid` belongs to that session (exact), provided the session has a
header in the same file; a line without `sid` belongs to the most recent header above it in
its file (positional, as upstream's own loader does).

Written for speed, as measured on 2.5M-line corpora: the lines are parsed once, into
`_parsed`, and that is the only table that holds each event's JSON `data` until it is
inserted into `events`. Attribution, duplicate detection and rejects work on keys only
(`_cand` is a view, re-read rather than copied), so the bulk of every line is copied twice
(parsed, stored) instead of five times.
"""

from __future__ import annotations

import math

from .stats import metric_rows, summarise

REJECT_PREVIEW = 200  # characters of a rejected line kept in rejects.raw
# Seconds after its session's start beyond which an event's "t" is a reject, not data: no
# stream lasts 31 years, and a larger one overflowed the session's end timestamp (a run that
# failed, and every run after it).
MAX_T = 1e9
# The latest year a session may start in: its end (up to MAX_T later) must stay within year
# 9999, the last that ISO-8601 writes in four digits and Python's datetime holds (a later end
# made every command that read the session fail).
MAX_START_YEAR = 9999 - math.ceil(MAX_T / (365.25 * 86400))

WS = "' ' || chr(9) || chr(13)"


def _lines(pieces: str) -> str:
    """SQL: the non-blank lines (file_id, line_no, raw) of the pieces in `pieces`, a leading
    BOM dropped. Blank lines (white space only) are not lines of the recording: skipped.
    Written for the common line, which starts with '{': it is kept on that test alone, and only
    a piece that holds a BOM at all has its lines checked for one (measured: 13% less CPU
    than checking every line for both)."""
    return f"""
    SELECT file_id, base + i - 1 AS line_no,
        CASE WHEN bom AND starts_with(raw, chr(65279)) THEN ltrim(raw, chr(65279)) ELSE raw END AS raw
    FROM (
        SELECT file_id, base, n, bom, unnest(parts) AS raw, generate_subscripts(parts, 1) AS i
        FROM (SELECT file_id, base, n, contains(text, chr(65279)) AS bom, string_split(text, chr(10)) AS parts
              FROM (SELECT file_id, base, n, chunk AS text FROM {pieces}))
    )
    WHERE i <= n AND (starts_with(raw, '{{') OR (raw <> ''
        AND (strpos({WS}, left(raw, 1)) = 0 OR trim(raw, {WS}) <> '')))
    """


def _json_string(fragment: str) -> str:
    """SQL: the text of a JSON string fragment (NULL if it is not a string). Cut out of the
    quotes when it holds no escape; parsed as JSON only when it does (an escape needs decoding).
    A second JSON parse per line per field cost a third of classifying."""
    return (f"(CASE WHEN NOT starts_with({fragment}, '\"') THEN NULL "
            f"WHEN contains({fragment}, '\\') THEN {fragment} ->> '$' "
            f"ELSE substr({fragment}::VARCHAR, 2, length({fragment}::VARCHAR) - 2) END)")


# One JSON parse per line: try() turns the error of invalid JSON into NULL (a separate
# json_valid pass cost a quarter of parsing), and the six paths every line may have are
# read together. Header lines are only recognised here (they have "session") and kept whole:
# MARKS reads and checks their fields, a second parse of those few lines (extracting four more
# paths from every line cost ~15% of parsing, and a column for each header field, NULL on
# every event line, cost another 6%: measured in instructions).
# The common case, a well-formed event, is recognised by cheap first-character tests on the
# extracted fragments; the detailed reason is worked out only for the lines that fail them.
# (A JSON fragment that does not start with " { [ t f n is a number, NaN and Infinity included.)
# Written for DuckDB's planner, as measured: strpos instead of IN lists (an IN list becomes a
# join, repeated wherever its alias is used), and only the columns later steps read. The raw
# line is kept only for header lines and as the preview of a rejected one.
# A line holding a lone UTF-16 surrogate escape ("\ud83d" without its pair) is valid JSON,
# which a JavaScript server writes when it cuts a string inside an emoji, and Python reads;
# DuckDB refuses it. A line that fails to parse is read again with such escapes made U+FFFD
# (pairs kept: first marked with \x01, which no JSON text holds unescaped, then restored).
# Without it, such a done line was a reject and its session a synthetic done. (A literal
# backslash before "ud800" in a line that failed anyway is taken for an escape too.)
_LONE_SURROGATES_REPLACED = (
    r"regexp_replace(regexp_replace(regexp_replace(raw,"
    r" '\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})', chr(1) || '\1\2' || chr(1), 'g'),"
    r" '\\u[dD][89a-fA-F][0-9a-fA-F]{2}', '\\ufffd', 'g'),"
    r" chr(1) || '([0-9a-fA-F]{4})([0-9a-fA-F]{4})' || chr(1), '\\u\1\\u\2', 'g')"
)


def _fields(line: str) -> str:
    """SQL: the six fields every line may have, as a list of JSON fragments of `line`."""
    return f"json_extract({line}, ['$.t', '$.event', '$.data', '$.sid', '$.seq', '$.session'])"


def _parse(*, guarded: bool) -> str:
    """SQL: PARSED. `guarded`: for any lines (a line that is not JSON gets NULL fields, and
    one that fails is read again without lone surrogate escapes); else for lines that are all
    JSON, failing on one that is not."""
    extract = f"try({_fields('raw')})" if guarded else _fields("raw")
    repaired = f"""
), f AS (
    SELECT file_id, line_no, CASE WHEN f2 IS NOT NULL THEN fixed ELSE raw END AS raw, coalesce(f, f2) AS f
    FROM (SELECT *, try({_fields('fixed')}) AS f2
          FROM (SELECT *, CASE WHEN f IS NULL AND contains(raw, '\\u') THEN {_LONE_SURROGATES_REPLACED} END AS fixed
                FROM f0))""" if guarded else ""
    return f"""
CREATE OR REPLACE TEMP TABLE _parsed AS
WITH lines AS ({_lines("_pieces")}),
{"f0" if guarded else "f"} AS (
    -- A list of fragments, not json_transform's struct: that reads a field whose value is null
    -- as absent, so "t": null would be "missing" instead of "not a number" (and it was not
    -- measurably faster once lines with a null were sent the other way).
    SELECT file_id, line_no, raw,
        {extract} AS f
    FROM lines{repaired}
), fields AS (
    -- Each value below is computed in a layer of its own and read by the next as a column: an
    -- alias used in the same SELECT is copied into every expression that names it, and the
    -- copies were planned and evaluated again each time (measured on a 32 MB batch: planning
    -- 16 ms down to 10, execution about 10% less).
    SELECT file_id, line_no, raw, f IS NOT NULL AS valid,
        f[1] AS j_t, f[2] AS j_event, f[3] AS data, f[4] AS j_sid, f[5] AS j_seq, f[6] AS j_session
    FROM f
), objects AS (
    -- CASE, not AND/OR: a projection evaluates both sides of AND/OR for every row, so the
    -- ltrim ran on every line (measured: 4% of this statement); CASE tries it only when needed.
    SELECT *, CASE WHEN NOT valid THEN false WHEN left(raw, 1) = '{{' THEN true
                   ELSE ltrim(raw, {WS})[1] = '{{' END AS is_obj FROM fields
), values AS (
    SELECT *,
        -- A line that is not JSON but names "session" and "started_at" is taken for a broken
        -- header (one glued to the cut line of a writer killed mid-write, say): MARKS rejects
        -- it, and it stops the lines below it from going by position to the session above.
        -- Both keys: an event whose data holds a "session" key is not a header.
        CASE WHEN valid THEN is_obj AND j_session IS NOT NULL
             ELSE contains(raw, '"session"') AND contains(raw, '"started_at"') END AS is_header,
        -- Numbers as json_extract writes them cast from VARCHAR, which is cheaper than a JSON
        -- cast (another parse); no other JSON value casts (quotes, brackets, true/false/null
        -- fail), and the JSON cast is tried only for numbers the VARCHAR cast cannot read.
        coalesce(TRY_CAST(j_t::VARCHAR AS DOUBLE),
                 CASE WHEN strpos('"{{[tfn', left(j_t::VARCHAR, 1)) = 0 THEN j_t::DOUBLE END) AS t,
        -- nine lines in ten are tokens: one comparison of the fragment instead of decoding it
        CASE j_event::VARCHAR WHEN '"token"' THEN 'token' ELSE {_json_string('j_event')} END AS event,
        -- The sid as spelled (a JSON string fragment): whether it is a UUID, and which, is
        -- worked out once per spelling (SIDS), not per line (a UUID cast cost 10% of this).
        CASE WHEN starts_with(j_sid, '"') THEN j_sid::VARCHAR END AS sid_key
    FROM objects
), numbered AS (
    SELECT *,
        -- A JSON integer casts back to its own text; anything else (1.0, 1e3, beyond BIGINT)
        -- goes the exact way, by JSON type, so 1.0 stays "not an integer".
        CASE WHEN sid_key IS NULL THEN NULL
             WHEN TRY_CAST(j_seq::VARCHAR AS BIGINT)::VARCHAR = j_seq::VARCHAR THEN TRY_CAST(j_seq::VARCHAR AS BIGINT)
             WHEN json_type(j_seq) IN ('BIGINT', 'UBIGINT') THEN try_cast(j_seq AS BIGINT) END AS seq
    FROM values
), checked AS (
    SELECT *,
        NOT is_header AND t >= 0 AND t < {MAX_T} AND event IS NOT NULL AND left(data::VARCHAR, 1) = '{{'
            AND (j_sid IS NULL OR (sid_key IS NOT NULL AND seq >= 0)) AS good_event
    FROM numbered
), classified AS (
    SELECT checked.*,
        CASE WHEN good_event OR is_header THEN NULL  -- a header line's reason: MARKS
        WHEN NOT valid THEN 'invalid JSON'  -- or truncated: TRUNCATED, after this statement
        WHEN NOT is_obj THEN 'not a JSON object'
        ELSE CASE
            WHEN j_t IS NULL THEN 'event: missing field "t"'
            WHEN t IS NULL THEN 'event: "t" is not a number'
            WHEN NOT isfinite(t) THEN 'event: "t" is not a finite number'
            WHEN t < 0 THEN 'event: "t" is negative'
            WHEN t >= {MAX_T} THEN 'event: "t" is {MAX_T:.0e} s or more (over 31 years after the session start)'
            WHEN j_event IS NULL THEN 'event: missing field "event"'
            WHEN event IS NULL THEN 'event: "event" is not a string'
            WHEN data IS NULL THEN 'event: missing field "data"'
            WHEN json_type(data) <> 'OBJECT' THEN 'event: "data" is not an object'
            WHEN json_type(j_sid) <> 'NULL' AND (sid_key IS NULL OR try_cast({_json_string('sid_key')} AS UUID) IS NULL)
                THEN 'event: "sid" is not a UUID string'
            WHEN sid_key IS NOT NULL AND j_seq IS NULL THEN 'event: missing field "seq" (required with "sid")'
            WHEN sid_key IS NOT NULL AND (seq IS NULL OR seq < 0) THEN 'event: "seq" is not a non-negative integer'
        END
        END AS reason
    FROM checked
)
SELECT file_id, line_no, is_header, t, event,
    CASE WHEN reason IS NULL AND NOT is_header THEN data END AS data, sid_key, seq, reason,
    -- measured once here, so metrics and exports add up a column instead of parsing again
    CASE WHEN reason IS NULL AND event = 'token' THEN length(data ->> 'text') END AS text_chars,
    -- a header line whole (for MARKS), the start of a rejected line (its preview)
    CASE WHEN is_header THEN raw WHEN reason IS NOT NULL THEN left(raw, {REJECT_PREVIEW}) END AS raw
FROM classified
"""
# Any lines: a line that is not JSON gets NULL fields (and its reject) instead of an error.
PARSED = _parse(guarded=True)
# Lines that are all JSON, else an error (load.staged_batch then uses PARSED): without try(),
# which copied every line's fields (measured: 11% of extracting them).
PARSED_JSON = _parse(guarded=False)

# A file's last line without its newline, once the file is final (reader.py): if it is not
# JSON, it was cut off. A statement of its own, run only for a batch that holds such a line
# (rare): joining every line to `_files` for it in PARSED cost a hash join of the whole batch,
# which a cron run's few lines built on the wrong side (the lines, ~10 ms for 23k of them).
_TRUNCATED_REASON = "truncated: last line has no newline and is not complete JSON"
# Such a line taken for a broken header (it names "session" and "started_at") is a plain
# reject too: it is the file's last line, with nothing below it to stop.
TRUNCATED = f"""
UPDATE _parsed p SET reason = '{_TRUNCATED_REASON}', is_header = false, raw = left(p.raw, {REJECT_PREVIEW})
FROM _files f
WHERE p.file_id = f.file_id AND p.line_no = f.unterminated_line
    AND (p.reason = 'invalid JSON' OR (p.is_header AND NOT json_valid(p.raw)))
"""

# Every header line of the batch, valid or not, with its fields and the reason it is rejected
# (NULL: a valid header): an invalid header ends the previous positional session too, so the
# events under it are rejected instead of misattributed.
MARKS = f"""
CREATE OR REPLACE TEMP TABLE _marks AS
WITH fields AS (
    SELECT file_id, line_no, raw, f, f[1] AS j_session, f[2] AS j_started, f[3] AS j_v, f[4] AS j_side, f[5] AS j_attrs
    FROM (SELECT file_id, line_no, raw, try(json_extract(raw, ['$.session', '$.started_at', '$.v', '$.side', '$.attrs'])) AS f
          FROM _parsed WHERE is_header)
), typed AS (
    SELECT *,
        CASE WHEN json_type(j_session) = 'VARCHAR' THEN try_cast(j_session ->> '$' AS UUID)::VARCHAR END AS session_s,
        CASE WHEN json_type(j_started) = 'VARCHAR' THEN try_cast(j_started ->> '$' AS TIMESTAMPTZ) END AS started_at,
        -- yyjson types non-negative integers UBIGINT; try_cast drops those beyond BIGINT
        CASE WHEN json_type(j_v) IN ('BIGINT', 'UBIGINT') THEN try_cast(j_v AS BIGINT) END AS v
    FROM fields
), checked AS (
    SELECT *, CASE
        WHEN f IS NULL THEN 'invalid JSON'  -- see PARSED's is_header (and TRUNCATED)
        WHEN session_s IS NULL THEN 'header: "session" is not a UUID string'
        WHEN j_started IS NULL THEN 'header: missing field "started_at"'
        -- ISO-8601 years have four digits, from 0001 (UTC); 'infinity' casts too, and year()
        -- reads a year BC as a positive one: compared as timestamps
        WHEN started_at IS NULL OR NOT isfinite(started_at) OR started_at < TIMESTAMPTZ '0001-01-01 00:00:00+00'
                OR started_at >= TIMESTAMPTZ '10000-01-01 00:00:00+00'
            THEN 'header: "started_at" is not an ISO-8601 timestamp'
        WHEN started_at >= TIMESTAMPTZ '{MAX_START_YEAR + 1}-01-01 00:00:00+00'
            THEN 'header: "started_at" is after year {MAX_START_YEAR} (its session could end after year 9999)'
        WHEN j_v IS NOT NULL AND v IS NULL THEN 'header: "v" is not an integer'
        WHEN j_side IS NOT NULL AND json_type(j_side) <> 'VARCHAR' THEN 'header: "side" is not a string'
        WHEN j_attrs IS NOT NULL AND json_type(j_attrs) NOT IN ('OBJECT', 'NULL') THEN 'header: "attrs" is not an object'
    END AS reason
    FROM typed
)
SELECT file_id, line_no, reason,
    CASE WHEN reason IS NULL THEN session_s END AS session_id,
    coalesce(CASE WHEN reason IS NULL THEN j_side ->> '$' END, 'server') AS side,
    coalesce(v, 0) AS v, started_at,
    CASE WHEN json_type(j_attrs) = 'OBJECT' THEN j_attrs ELSE '{{}}'::JSON END AS attrs,
    CASE WHEN reason IS NOT NULL THEN raw END AS raw
FROM checked
"""

# Positional events: the nearest header above, in this batch or carried from the last one. Run
# only for a batch with lines without sid (SIDS counts them); for the others, NO_POSITIONAL.
# Only a v0 header takes lines by position: under a v1 header (whose writer puts a sid on every
# line) a line without sid is a reject (`under_v1`). Taken by position, it got a seq from its
# distance to the header that could be a real line's, which was then dropped as its repeat.
POSITIONAL = """
CREATE OR REPLACE TEMP TABLE _positional AS
SELECT file_id, line_no, CASE WHEN NOT under_v1 THEN session_id END AS session_id, side, header_line,
    under_v1, NULL::BIGINT AS k  -- the session's key, set by POSITIONAL_KEYS once the batch's sessions are known
FROM (
    SELECT *, session_id IS NOT NULL AND v >= 1 AS under_v1 FROM (
        SELECT p.file_id, p.line_no,
            CASE WHEN m.line_no IS NOT NULL THEN m.session_id ELSE fs.cur_session END AS session_id,
            CASE WHEN m.line_no IS NOT NULL THEN m.side ELSE fs.cur_side END AS side,
            coalesce(m.line_no, fs.cur_header_line) AS header_line,
            coalesce(CASE WHEN m.line_no IS NOT NULL THEN m.v ELSE fs.cur_v END, 0) AS v
        FROM (SELECT file_id, line_no FROM _parsed WHERE reason IS NULL AND NOT is_header AND sid_key IS NULL) p
        ASOF LEFT JOIN _marks m ON p.file_id = m.file_id AND p.line_no >= m.line_no
        JOIN _files fs ON fs.file_id = p.file_id
    )
)
"""
NO_POSITIONAL = """
CREATE OR REPLACE TEMP TABLE _positional (file_id INTEGER, line_no BIGINT, session_id VARCHAR, side VARCHAR,
    header_line BIGINT, under_v1 BOOLEAN, k BIGINT)
"""

# Each sid spelling of the batch's events, per file: the session it names (NULL: not a UUID),
# that session's side from its header in the file (this batch or earlier runs; NULL: none), and
# its event lines (n, and the seq range lo..hi they cover). A few thousand spellings for
# millions of lines: validating each spelling once instead of each line saved a UUID cast
# (~80 ns) and a substring per line, 10-15% of parsing (measured), and the batch's sessions and
# rejected candidates are then found from the spellings, without reading the lines again.
# The lines without sid are counted in the same pass, as a row per file with a NULL sid_key
# (and NULL session and side, so no join and no filter takes it for a spelling): POSITIONAL
# runs only if there are any (POSITIONAL_LINES).
SIDS = f"""
CREATE OR REPLACE TEMP TABLE _sids AS
WITH spelled AS (
    SELECT file_id, sid_key, n, lo, hi, first_line, try_cast({_json_string('sid_key')} AS UUID)::VARCHAR AS session_id
    FROM (
        SELECT file_id, sid_key, count(*) AS n, min(seq) AS lo, max(seq) AS hi, min(line_no) AS first_line FROM _parsed
        WHERE reason IS NULL AND NOT is_header GROUP BY ALL
    )
), headers AS (
    -- A sid with headers of both sides in one file (rare) takes the side of its first header
    -- there, stored ones first: the same side however the file is read.
    SELECT file_id, session_id, arg_min(side, {{'batch': batch, 'line': line_no}}) AS side, min(header_line) AS header_line
    FROM (
        SELECT file_id, session_id, side, line_no, line_no AS header_line, true AS batch FROM _marks WHERE session_id IS NOT NULL
        UNION ALL
        -- stored: above every line of the batch. The id as the UUID's text, not the stored
        -- text: reading that column for every stored key cost ~40 ms of a run on 1M sessions.
        SELECT f.file_id, sk.uid::VARCHAR, sk.side, h.line_no, 0, false
        FROM _session_keys sk JOIN _session_headers h USING (k) JOIN _files f ON h.source_file = f.path
        WHERE sk.uid IN (SELECT session_id::UUID FROM spelled)
    ) GROUP BY ALL
)
SELECT s.file_id, s.sid_key, s.session_id, h.side, s.n, s.lo, s.hi,
    -- A line above its session's first header in the file is a reject (EARLY_SIDS), as it would
    -- be in a run that read the file only up to the header: the same database however it is read.
    CASE WHEN s.first_line < h.header_line THEN h.header_line END AS after_line
FROM spelled s LEFT JOIN headers h ON h.file_id = s.file_id AND h.session_id = s.session_id
"""

# Spellings with lines above their session's header (rare: SIDS sets `after_line`): their
# counts and seq range, of the lines below it only.
EARLY_SIDS = """
UPDATE _sids s SET n = coalesce(l.n, 0), lo = l.lo, hi = l.hi
FROM (
    SELECT e.file_id, e.sid_key, count(p.line_no) AS n, min(p.seq) AS lo, max(p.seq) AS hi
    FROM _sids e LEFT JOIN _parsed p ON p.file_id = e.file_id AND p.sid_key = e.sid_key
        AND p.reason IS NULL AND NOT p.is_header AND p.line_no > e.after_line
    WHERE e.after_line IS NOT NULL
    GROUP BY ALL
) l
WHERE s.file_id = l.file_id AND s.sid_key = l.sid_key
"""

# The batch's good event lines (valid events attributed to a session) with their session, side,
# its key `k` (BATCH_SESSIONS) and seq: lines whose sid names a session with a header in their
# file, and lines without sid under a valid header (positional). A view: the joins are against
# small tables, so reading it again is cheaper than copying the lines. In two parts, so that
# reading it joins each line once and tests no reason; the second part only for a batch with
# positional lines (SIDS counts them): reading it found no line in a batch without any,
# but still scanned every line's reason, is_header and sid_key, ~30 ms of each 96 MB batch in
# each of the three statements that read the candidates (measured with DuckDB 2.0: header
# lines, without sid, are in every row group, so their statistics skip none).
def _candidates(positional: bool) -> str:
    by_position = """
UNION ALL
SELECT p.file_id, p.line_no, pos.session_id, pos.side, pos.k, p.line_no - pos.header_line AS seq,
    p.t, p.event, p.data, p.text_chars
FROM _parsed p JOIN _positional pos ON pos.file_id = p.file_id AND pos.line_no = p.line_no
WHERE p.reason IS NULL AND NOT p.is_header AND p.sid_key IS NULL AND pos.session_id IS NOT NULL
"""
    return f"""
CREATE OR REPLACE TEMP VIEW _cand AS
SELECT p.file_id, p.line_no, s.session_id, s.side, s.k, p.seq, p.t, p.event, p.data, p.text_chars
FROM _parsed p JOIN _sid_keys s ON s.file_id = p.file_id AND s.sid_key = p.sid_key
WHERE p.reason IS NULL AND NOT p.is_header AND p.line_no > s.after_line
{by_position if positional else ""}"""


CANDIDATES = _candidates(positional=True)
CANDIDATES_BY_SID = _candidates(positional=False)  # a batch without positional lines

# The valid event lines that cannot be attributed: from the spellings that name no session with
# a header (usually none: then the lines are not read at all) and the positional lines without
# a valid header above them.
CANDIDATE_REJECTS = """
CREATE OR REPLACE TEMP TABLE _cand_rejects AS
SELECT p.file_id, p.line_no,
    -- one reason whether the header is further down or nowhere: a run that read the file only
    -- up to this line could not tell them apart, and the database must not depend on that
    CASE WHEN s.session_id IS NULL THEN 'event: "sid" is not a UUID string'
         ELSE 'event: no session header for its "sid" above it in this file' END AS reason
FROM _parsed p JOIN _sids s ON s.file_id = p.file_id AND s.sid_key = p.sid_key
-- the first test is on the spellings alone: with none to reject, the lines are not read at all
WHERE (s.side IS NULL OR s.after_line IS NOT NULL) AND p.reason IS NULL AND NOT p.is_header
    AND (s.side IS NULL OR p.line_no < s.after_line)
UNION ALL
SELECT file_id, line_no,
    CASE WHEN header_line IS NULL THEN 'event: no session header before it'
         WHEN under_v1 THEN 'event: missing field "sid" (the session header above it, line ' || header_line || ', is v1)'
         ELSE 'event: follows an invalid session header (line ' || header_line || ')' END
FROM _positional WHERE session_id IS NULL
"""

# Per session of the batch: its good event lines, the seq range they cover, and its key `k` in
# `_session_keys` (the key its events and headers are stored under; a session seen for the
# first time gets the next free one, stored with the batch: INSERT_SESSION_KEYS). The summaries
# (stats.py) window and group by it too. From the spellings, the positional lines and the
# headers (a session with a header and no event in the batch: n = 0), not from the candidates:
# the lines are not read again.
BATCH_SESSIONS = """
CREATE OR REPLACE TEMP TABLE _batch_sessions AS
SELECT b.session_id, b.side, b.n, b.lo, b.hi,
    coalesce(s.k, (SELECT coalesce(max(k), 0) FROM _session_keys)
                  + row_number() OVER (PARTITION BY s.k IS NULL))::INTEGER AS k,
    s.k IS NULL AS new_key
FROM (
    SELECT session_id, side, sum(n)::BIGINT AS n, min(lo) AS lo, max(hi) AS hi FROM (
        SELECT session_id, side, n, lo, hi FROM _sids WHERE side IS NOT NULL
        UNION ALL
        SELECT session_id, side, count(*), min(line_no - header_line), max(line_no - header_line)
        FROM _positional WHERE session_id IS NOT NULL GROUP BY ALL
        UNION ALL
        SELECT session_id, side, 0, NULL, NULL FROM _marks WHERE reason IS NULL
    ) GROUP BY ALL
) b LEFT JOIN _session_keys s ON s.uid = b.session_id::UUID AND s.side = b.side  -- by UUID: m016
"""

# The key of each spelling's session, and of each positional line's (only when a batch has any:
# POSITIONAL sets them NULL), so that the candidates carry it: the summaries then group them
# without joining every line to _batch_sessions by its session's text (a hash join on
# 36-character keys, ~55 ms of each 96 MB batch's summary: measured with DuckDB 2.0).
SID_KEYS = """
CREATE OR REPLACE TEMP TABLE _sid_keys AS
SELECT s.file_id, s.sid_key, s.session_id, s.side, b.k, coalesce(s.after_line, 0) AS after_line
FROM _sids s JOIN _batch_sessions b USING (session_id, side)
"""
POSITIONAL_KEYS = """
CREATE OR REPLACE TEMP TABLE _positional AS
SELECT p.* EXCLUDE (k), b.k FROM _positional p LEFT JOIN _batch_sessions b USING (session_id, side)
"""

# The batch's good event lines summarised per session, before any repeated line is dropped: the
# summary counts the lines that repeat a seq of their session (`repeats`), which is how repeats
# are found without a pass of their own (REPEATS, a hash of every line's key, cost as much as
# the summary's window, which sorts by seq anyway). Repeats are rare (a file read twice, a
# session in two files); when there are any, the repeated lines are dropped and the batch's
# new events summarised again (BATCH_STATS). Each in two forms: a batch of LARGE_BATCH_BYTES
# or more computes the silences apart from the other aggregates (cheaper per line, dearer to
# start), a smaller one in one pass over its rows sorted (stats.summarise).
def _batch_stats(source: str, *, large: bool) -> str:
    return f"""
CREATE OR REPLACE TEMP TABLE _batch_stats AS
{summarise(f"SELECT c.k, {metric_rows('c')} {source}", size="large" if large else "small")}
"""


LARGE_BATCH_BYTES = 8 << 20
ALL_BATCH_STATS = _batch_stats("FROM _cand c", large=False)
ALL_BATCH_STATS_LARGE = _batch_stats("FROM _cand c", large=True)

# The batch drops nothing (no repeats, no session that may repeat stored events).
NO_REPEATS = """
CREATE OR REPLACE TEMP TABLE _drop (file_id INTEGER, line_no BIGINT, session_id VARCHAR, side VARCHAR)
"""

# Lines that repeat an event earlier in this batch (the first copy is kept). Grouped by a
# hash of the key (one BIGINT, cheaper to group than three columns); a hash collision only
# makes a key a candidate, the window below compares the keys themselves. `c` is not
# materialized: reading the view again is cheaper than copying it (measured: the copy was
# half of this statement).
REPEATS = """
CREATE OR REPLACE TEMP TABLE _drop AS
WITH c AS NOT MATERIALIZED (SELECT file_id, line_no, session_id, side, seq FROM _cand),
repeated_hash AS (SELECT hash(session_id, side, seq) AS h FROM c GROUP BY ALL HAVING count(*) > 1),
repeated AS (SELECT * FROM c SEMI JOIN repeated_hash r ON hash(c.session_id, c.side, c.seq) = r.h)
SELECT file_id, line_no, session_id, side FROM repeated
QUALIFY row_number() OVER (PARTITION BY session_id, side, seq ORDER BY file_id, line_no) > 1
"""

# Only sessions whose lowest seq in the batch is not above their highest stored seq can repeat
# a stored event (a re-read file, the same session in two files): usually none, and then
# `events` is not read at all. The highest stored seq is the summary's max_seq, which every
# batch merges, except for stale sessions (new events among stored ones), whose summaries wait
# for the end of the run (stats.py): they may repeat anything, so they are always candidates.
# Both are found in one pass over the batch's sessions (b), with their stored summary (s) and
# stale mark (t) if any: a union of two joins cost ~5 ms more to plan, most of BATCH_CHECK in
# a cron run (DuckDB 2.0).
_KNOWN = """
FROM _batch_sessions b
LEFT JOIN _session_stats s ON s.k = b.k
LEFT JOIN _stale_sessions t ON t.k = b.k
"""
_MAY_REPEAT_STORED = "b.lo <= s.max_seq OR t.k IS NOT NULL"
_MAYBE_STORED = f"SELECT b.k {_KNOWN} WHERE {_MAY_REPEAT_STORED}"
STORED_REPEATS = f"""
INSERT INTO _drop
WITH maybe_stored AS ({_MAYBE_STORED}),
known AS (SELECT e.k, e.seq FROM _events e SEMI JOIN maybe_stored m USING (k))
SELECT c.file_id, c.line_no, c.session_id, c.side FROM _cand c
SEMI JOIN known k ON c.k = k.k AND c.seq = k.seq
ANTI JOIN _drop d ON d.file_id = c.file_id AND d.line_no = c.line_no
"""

def _new_events(join: str = "", where: str = "") -> str:
    """SQL FROM clause of the batch's new events (`c`): good candidates not dropped as repeats,
    with `join` added (a JOIN clause) and `where` (a condition), if given."""
    return f"""
FROM _cand c ANTI JOIN _drop d ON d.file_id = c.file_id AND d.line_no = c.line_no
{join}
{f"WHERE {where}" if where else ""}
"""


# No ORDER BY: every reader orders by (session, side, seq) itself, and sorting 2.5M rows with
# their JSON cost 40% of this insert (measured). Rows arrive in file order. Into `_events`, the
# table under the public view `events` (migration m013): session and file as integers.
INSERT_EVENTS = f"""
INSERT INTO _events (k, seq, t, event, data, file_id, line_no, text_chars)
SELECT c.k, c.seq, c.t, c.event, c.data, c.file_id, c.line_no, c.text_chars
{_new_events()}
"""

# The keys of the batch's new sessions, and the ids of its new files, under which `_events`
# stores their rows (BATCH_SESSIONS, load.staged_batch).
INSERT_SESSION_KEYS = """
INSERT INTO _session_keys (k, session_id, side, uid)
SELECT k, session_id, side, session_id::UUID FROM _batch_sessions WHERE new_key
"""
INSERT_SOURCE_FILES = """
INSERT INTO _source_files SELECT file_id, path FROM _files WHERE new
"""

# The batch's new events summarised again, once repeated lines were dropped.
BATCH_STATS = _batch_stats(_new_events(), large=False)
BATCH_STATS_LARGE = _batch_stats(_new_events(), large=True)

# The tool events, which tool_calls pairs up at the end of the run (sessions.py): the fields
# it needs, read with one parse of each event's data. The range test says the same as the IN
# list, but DuckDB applies a range while scanning and fetches the other columns only for the
# lines in it (an IN list it applies afterwards, to every line: 12% more instructions).
INSERT_TOOL_EVENTS = f"""
INSERT INTO _tool_events
SELECT k, seq, t, event, f[1], f[2], f[3], try_cast(f[4] AS DOUBLE) FROM (
    SELECT c.k, c.seq, c.t, c.event,
        json_extract_string(c.data, ['$.tool_use_id', '$.tool_name', '$.status', '$.duration_ms']) AS f
    {_new_events(where="c.event BETWEEN 'tool_result' AND 'tool_use' AND c.event IN ('tool_use', 'tool_result')")}
)
"""

# The first header of each session per file, under the session's key (m015); one already
# stored (a file read again from its start) is kept. An anti-join, not a primary key: the key's
# index cost ~2.4 us per header inserted, more than finding them (measured on 2.5k headers: 12
# ms against 6). By k, so that DuckDB skips the stored headers outside the batch's keys.
INSERT_HEADERS = """
INSERT INTO _session_headers (k, source_file, line_no, started_at, v, attrs)
SELECT n.* FROM (
    SELECT b.k, f.path AS source_file, m.line_no, m.started_at, m.v, m.attrs
    FROM _marks m JOIN _files f USING (file_id) JOIN _batch_sessions b USING (session_id, side)
    WHERE m.reason IS NULL
    QUALIFY row_number() OVER (PARTITION BY b.k, f.path ORDER BY m.line_no) = 1
) n
ANTI JOIN _session_headers o USING (k, source_file)
"""

# Rejected candidates are rare: their raw lines are cut again out of just their pieces.
INSERT_REJECTS = f"""
INSERT INTO rejects (source_file, line_no, reason, raw)
WITH hit AS (
    SELECT * FROM _pieces p SEMI JOIN _cand_rejects c
        ON c.file_id = p.file_id AND c.line_no >= p.base AND c.line_no < p.base + p.n
), raw_lines AS ({_lines("hit")})
SELECT f.path, r.line_no, r.reason, left(r.raw, {REJECT_PREVIEW}) FROM (
    SELECT file_id, line_no, reason, raw FROM _parsed WHERE reason IS NOT NULL
    UNION ALL
    SELECT file_id, line_no, reason, raw FROM _marks WHERE reason IS NOT NULL
    UNION ALL
    SELECT c.file_id, c.line_no, c.reason, l.raw FROM _cand_rejects c JOIN raw_lines l USING (file_id, line_no)
    UNION ALL
    SELECT file_id, line_no, reason, raw FROM _pyrejects
) r JOIN _files f USING (file_id)
-- Standard input is read whole every time (it has no read position to resume from), so the same
-- recording piped in again must not store its rejects twice. A file's lines are never read
-- twice: a file read again from its start has its rejects deleted first (pipeline.py).
ANTI JOIN (SELECT * FROM rejects WHERE source_file = '<stdin>') o
    ON o.source_file = f.path AND o.line_no = r.line_no AND o.reason = r.reason
    AND o.raw IS NOT DISTINCT FROM left(r.raw, {REJECT_PREVIEW})
ORDER BY f.path, r.line_no
"""

# Sessions whose metrics must be recomputed: those with new events or headers, and the
# previous session of a file that got a new header if it is a v0 one (a later header closes a
# v0 session; a v1 one ends only by its own lines, so a cron run does not redo it).
# A session may be listed by several batches: the list is read with DISTINCT (sessions.py).
MARK_DIRTY = """
INSERT INTO _dirty_sessions
SELECT DISTINCT session_id, side FROM (
    SELECT b.session_id, b.side FROM _batch_sessions b
        LEFT JOIN (SELECT session_id, side, count(*) AS dropped FROM _drop GROUP BY ALL) d USING (session_id, side)
        WHERE b.n > coalesce(d.dropped, 0)
    UNION ALL SELECT session_id, side FROM _marks WHERE session_id IS NOT NULL
    UNION ALL SELECT f.cur_session, f.cur_side FROM _files f
        WHERE f.cur_session IS NOT NULL AND coalesce(f.cur_v, 0) = 0 AND f.file_id IN (SELECT file_id FROM _marks)
)
"""
# The same, for a file whose last header before this batch was invalid (rare: run only then):
# the session to close is the one of the file's last stored valid header above it, if v0. An
# invalid header ends positional attribution (the file carries no session past it), but not
# the session before it: a valid header later still closes that, as it does in one run.
MARK_DIRTY_AFTER_INVALID_HEADER = """
INSERT INTO _dirty_sessions
SELECT ks.session_id, ks.side FROM (
    SELECT max_by(h.k, h.line_no) AS k, max_by(coalesce(h.v, 0), h.line_no) AS v
    FROM _files f JOIN _session_headers h ON h.source_file = f.path AND h.line_no < f.cur_header_line
    WHERE f.cur_session IS NULL AND f.cur_header_line IS NOT NULL
        AND f.file_id IN (SELECT file_id FROM _marks WHERE reason IS NULL)
    GROUP BY f.path
) last JOIN _session_keys ks USING (k) WHERE last.v = 0
"""

# Where positional attribution stands at the end of the batch, per file.
# Each file's last header line of the batch, valid or not: its positional state for the next.
# `before_ends` (for a batch holding a file's last line without newline): not that line. The
# read position stays before it (load.py), and the next run reads it again, whole by then (a
# header cut there would otherwise stand as the file's state, beside its re-read).
def _last_marks(*, before_ends: bool) -> str:
    skip = ("JOIN _files f USING (file_id) WHERE m.line_no IS DISTINCT FROM f.unterminated_line"
            if before_ends else "")
    return f"""
SELECT m.file_id, max_by({{'session': m.session_id, 'side': m.side, 'line': m.line_no, 'v': m.v}}, m.line_no) AS m
FROM _marks m {skip}
GROUP BY m.file_id
"""


LAST_MARKS, LAST_MARKS_BEFORE_ENDS = _last_marks(before_ends=False), _last_marks(before_ends=True)

# What became of the batch's lines, and whether any of its events may repeat (in the batch,
# or stored): one query, as a cron run's cost is mostly the number of statements.
BATCH_CHECK = f"""
WITH known AS (
    -- the sessions that may repeat stored events, and those with a stored summary (with none,
    -- nothing needs merging)
    SELECT count(CASE WHEN {_MAY_REPEAT_STORED} THEN 1 END) AS maybe_stored, count(s.k) AS stored
    {_KNOWN}
)
SELECT
    (SELECT coalesce(sum(repeats), 0) FROM _batch_stats) AS repeats,
    known.maybe_stored,
    known.stored,
    (SELECT count(*) FROM _parsed) AS lines,
    (SELECT count(*) FROM _marks WHERE reason IS NULL) AS headers,
    (SELECT coalesce(sum(n), 0) FROM _batch_sessions) AS good_events,
    (SELECT coalesce(list({{'reason': reason, 'n': n}}), []) FROM (
        SELECT reason, count(*) AS n FROM (
            SELECT reason FROM _parsed WHERE reason IS NOT NULL
            UNION ALL SELECT reason FROM _marks WHERE reason IS NOT NULL
            UNION ALL SELECT reason FROM _cand_rejects
        ) GROUP BY reason
    )) AS rejects
FROM known
"""

# In this order (load.py): MARKS, SIDS, EARLY_SIDS (when SIDS found lines above their header),
# then (when SIDS found lines without sid) POSITIONAL, SESSIONS, POSITIONAL_KEYS and CANDIDATES,
# else NO_POSITIONAL, SESSIONS and CANDIDATES_BY_SID; then SUMMARIES. This query says which.
POSITIONAL_LINES = "SELECT count(*) FILTER (WHERE sid_key IS NULL), count(after_line) FROM _sids"
SESSIONS = (BATCH_SESSIONS, SID_KEYS)
SUMMARIES = (CANDIDATE_REJECTS, ALL_BATCH_STATS)  # after CANDIDATES or CANDIDATES_BY_SID
SUMMARIES_LARGE = (CANDIDATE_REJECTS, ALL_BATCH_STATS_LARGE)  # the same, for a large batch
# and INSERT_REJECTS, when there are any
WRITES = (INSERT_SESSION_KEYS, INSERT_TOOL_EVENTS, INSERT_HEADERS, MARK_DIRTY)
# and INSERT_SOURCE_FILES, when the batch holds a file seen for the first time
