"""Append-only, idempotent schema migrations, recorded in the database.

Each migration is a named function; `migrate` applies the ones not yet recorded, all in one
transaction together with their records. Never edit a shipped migration: add a new one.
The public tables (sessions, events, tool_calls, rejects) are a contract (README, "Schema").
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from .db import transaction

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_public_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE sessions (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            source_file VARCHAR,
            started_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ,
            duration_s DOUBLE,
            outcome VARCHAR NOT NULL,
            end_reason VARCHAR,
            attribution VARCHAR NOT NULL,
            event_count BIGINT,
            token_events BIGINT,
            token_chars BIGINT,
            ttft_s DOUBLE,
            token_velocity_cps DOUBLE,
            max_gap_s DOUBLE,
            turns INTEGER,
            tool_calls INTEGER,
            tool_errors INTEGER,
            orphaned_tools INTEGER,
            errors INTEGER,
            model VARCHAR,
            message_id VARCHAR,
            total_cost_usd DOUBLE,
            reported_turns INTEGER,
            reported_tool_count INTEGER,
            reported_duration_ms BIGINT,
            attrs JSON,
            output_tokens BIGINT,
            token_velocity_tps DOUBLE,
            max_gap_at_s DOUBLE,
            lost_lines BIGINT,
            PRIMARY KEY (session_id, side)
        );
        CREATE TABLE events (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            t DOUBLE,
            event VARCHAR,
            data JSON,
            source_file VARCHAR,
            line_no BIGINT
        );
        CREATE TABLE tool_calls (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            tool_use_id VARCHAR,
            tool_name VARCHAR,
            started_t DOUBLE,
            ended_t DOUBLE,
            latency_ms DOUBLE,
            reported_ms DOUBLE,
            status VARCHAR
        );
        CREATE TABLE rejects (
            source_file VARCHAR,
            line_no BIGINT,
            reason VARCHAR,
            raw VARCHAR
        );
        -- Private ingest state, kept apart from the public tables.
        CREATE TABLE _session_headers (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            source_file VARCHAR NOT NULL,
            line_no BIGINT,
            started_at TIMESTAMPTZ,
            v INTEGER,
            attrs JSON,
            PRIMARY KEY (session_id, side, source_file)
        );
        CREATE TABLE _ingest_files (
            path VARCHAR PRIMARY KEY,
            size BIGINT,
            mtime DOUBLE,
            byte_offset BIGINT,
            lines BIGINT,
            head_hash VARCHAR,
            cur_session VARCHAR,
            cur_side VARCHAR,
            cur_header_line BIGINT,
            cur_v INTEGER,
            -- read to the end of what it held at size/mtime (else read again, even unchanged)
            complete BOOLEAN,
            updated_at TIMESTAMPTZ
        );
        -- Sessions whose rows must be recomputed; written in the same transaction as their
        -- events, so a killed ingest leaves a to-do list instead of stale rows.
        -- The highest seq stored per session: a new line above it cannot repeat a stored
        -- event, so only the rare lines at or below it are checked against `events`.
        CREATE TABLE _session_seq (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            max_seq BIGINT NOT NULL,
            PRIMARY KEY (session_id, side)
        );
        CREATE TABLE _dirty_sessions (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            PRIMARY KEY (session_id, side)
        );
        """
    )


@migration
def m002_metric_views(con: duckdb.DuckDBPyConnection) -> None:
    # Metric views and table macros (health_by_day, synthetic_done_causes, tool_latency,
    # stalls, token_velocity, health(...), ...). The SQL is a frozen file beside the query code.
    from .query.definitions import read_sql

    con.execute(read_sql("m002_metric_views.sql"))


@migration
def m003_export_state(con: duckdb.DuckDBPyConnection) -> None:
    # Private exporter state. OTLP: per destination, the version of each session the backend
    # acknowledged (a changed version, e.g. an open session that completed, is sent again).
    # Parquet: per output directory, the fingerprint of each day partition last written.
    con.execute(
        """
        CREATE TABLE _export_otlp_sent (
            destination VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            spans INTEGER,
            sent_at TIMESTAMPTZ,
            PRIMARY KEY (destination, session_id, side)
        );
        CREATE TABLE _export_parquet_days (
            directory VARCHAR NOT NULL,
            day VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,
            sessions BIGINT,
            written_at TIMESTAMPTZ,
            PRIMARY KEY (directory, day)
        );
        """
    )


@migration
def m004_token_text_chars(con: duckdb.DuckDBPyConnection) -> None:
    # The length of a token event's text, measured once at ingest: per-session token_chars and
    # the exporters' token runs then add up a column instead of parsing every token's JSON
    # again (a third of loading sessions for export, measured). NULL when the event has no
    # text or was written by other means; readers fall back to data->>'text' then.
    con.execute("ALTER TABLE events ADD COLUMN text_chars INTEGER")
    con.execute("UPDATE events SET text_chars = length(data ->> 'text') WHERE event = 'token'")


@migration
def m005_session_stats(con: duckdb.DuckDBPyConnection) -> None:
    # Private ingest state (ingest/stats.py): a running summary per session, merged batch by
    # batch so that session metrics never re-read `events`; the tool events, which tool_calls
    # pairs up; and the sessions whose summary must be made again from `events`. Summaries of
    # sessions stored before this migration are made by the next ingest run: every session
    # is marked stale here.
    con.execute(
        """
        CREATE TABLE _session_stats (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            recorded BIGINT,
            event_count BIGINT,
            token_events BIGINT,
            token_chars BIGINT,
            first_token_t DOUBLE,
            last_token_t DOUBLE,
            first_seq BIGINT,
            first_t DOUBLE,
            max_seq BIGINT,
            last_t DOUBLE,
            max_turn INTEGER,
            tool_calls BIGINT,
            tool_errors BIGINT,
            errors BIGINT,
            dones BIGINT,
            done_seq BIGINT,
            done_data JSON,
            end_seq BIGINT,
            end_data JSON,
            last_wire_seq BIGINT,
            max_gap_s DOUBLE,
            max_gap_end STRUCT(seq BIGINT, t DOUBLE),
            min_gap DOUBLE,
            PRIMARY KEY (session_id, side)
        );
        CREATE TABLE _tool_events (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            t DOUBLE,
            event VARCHAR,
            data JSON
        );
        CREATE TABLE _stale_sessions (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            PRIMARY KEY (session_id, side)
        );
        INSERT INTO _tool_events
        SELECT session_id, side, seq, t, event, data FROM events WHERE event IN ('tool_use', 'tool_result');
        INSERT INTO _stale_sessions SELECT DISTINCT session_id, side FROM events;
        """
    )


@migration
def m006_tool_event_fields(con: duckdb.DuckDBPyConnection) -> None:
    # _tool_events keeps the four fields tool_calls is made of instead of each tool event's
    # whole data: the refresh of a few sessions read and decompressed every tool event's JSON
    # (81k on 20k sessions) to find theirs, and every batch wrote it a second time.
    con.execute(
        """
        CREATE TABLE _tool_fields (
            session_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            t DOUBLE,
            event VARCHAR,
            tool_use_id VARCHAR,
            tool_name VARCHAR,
            status VARCHAR,
            duration_ms DOUBLE
        );
        INSERT INTO _tool_fields
        SELECT session_id, side, seq, t, event, f[1], f[2], f[3], try_cast(f[4] AS DOUBLE)
        FROM (SELECT *, json_extract_string(data, ['$.tool_use_id', '$.tool_name', '$.status', '$.duration_ms']) AS f
              FROM _tool_events);
        DROP TABLE _tool_events;
        ALTER TABLE _tool_fields RENAME TO _tool_events;
        """
    )

@migration
def m007_drop_session_seq(con: duckdb.DuckDBPyConnection) -> None:
    # The highest stored seq per session is the summary's max_seq (m005), merged by every batch;
    # stale sessions, whose summaries wait for the end of a run, are checked against `events`
    # whatever their seq. A second copy cost every batch an upsert and every run a checkpoint of
    # one more table (~13 ms of a cron run).
    con.execute("DROP TABLE _session_seq")


def _drop_primary_key(con: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...]) -> None:
    """Rebuild `table` without its primary key (DuckDB cannot drop one), the same columns and
    rows, its key columns still NOT NULL."""
    con.execute(f"CREATE TABLE _unkeyed AS SELECT * FROM {table}")
    for column in key:
        con.execute(f"ALTER TABLE _unkeyed ALTER COLUMN {column} SET NOT NULL")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE _unkeyed RENAME TO {table}")


@migration
def m008_dirty_sessions_unkeyed(con: duckdb.DuckDBPyConnection) -> None:
    # The to-do list of sessions to recompute is read through SELECT DISTINCT and emptied by
    # every refresh, so a session listed twice costs nothing; its primary key cost every
    # batch an index insert, check and merge at commit (20k sessions: ~0.05 s of a first run).
    _drop_primary_key(con, "_dirty_sessions", ("session_id", "side"))


@migration
def m009_session_headers_unkeyed(con: duckdb.DuckDBPyConnection) -> None:
    # The ingester keeps one header per (session, side, file) itself (an anti-join against the
    # stored ones); the primary key's index cost ~2.4 us per header inserted, twice the insert.
    _drop_primary_key(con, "_session_headers", ("session_id", "side", "source_file"))


@migration
def m010_events_row_group_bound(con: duckdb.DuckDBPyConnection) -> None:
    # An upper bound on the row groups of `events`, kept by the ingester (ingest/storage.py):
    # counting them exactly (pragma_storage_info) read every segment's metadata, ~10 ms of
    # every cron run at 2.5M events and growing with the table. NULL: not known yet.
    con.execute("CREATE TABLE _events_row_groups (bound BIGINT); INSERT INTO _events_row_groups VALUES (NULL)")


@migration
def m011_session_stats_unkeyed(con: duckdb.DuckDBPyConnection) -> None:
    # The ingester replaces a session's summary itself (a DELETE and an INSERT in one
    # transaction, ingest/stats.py); the primary key's index cost ~2 us per summary inserted
    # and was written again at every checkpoint (~3 ms of a cron run).
    _drop_primary_key(con, "_session_stats", ("session_id", "side"))


@migration
def m012_events_row_group_bound_counted(con: duckdb.DuckDBPyConnection) -> None:
    # The bound counted once, here (a new database's is 0), instead of left unknown: a new
    # database's first run then raises it batch by batch instead of counting the row groups at
    # its end (~20 ms of reading segment metadata on a first run of 2.5M lines, on one core,
    # after everything else).
    con.execute(
        "UPDATE _events_row_groups SET bound = (SELECT count(DISTINCT row_group_id) "
        "FROM pragma_storage_info('events') WHERE column_id = 0) WHERE bound IS NULL"
    )


@migration
def m013_events_keyed(con: duckdb.DuckDBPyConnection) -> None:
    # `events` becomes a view, with the same columns, over `_events`, which stores each row's
    # session and side as a key (`_session_keys`) and its file as an id (`_source_files`).
    # Storing a text column costs DuckDB ~500 instructions a row whatever the text (its
    # dictionary and FSST analysis and string statistics; `side` and `source_file` repeat one
    # value for thousands of rows and cost as much as `session_id`): the three as integers
    # made inserting a batch of events 33% cheaper in instructions, and a first run of 2.5M
    # lines ~7% cheaper in CPU (paired runs; docs/ingest.md). Readers see the same columns and
    # rows; the view cannot be written to (the ingester owns the rows).
    con.execute(
        """
        CREATE TABLE _session_keys (k INTEGER NOT NULL, session_id VARCHAR NOT NULL, side VARCHAR NOT NULL);
        INSERT INTO _session_keys
        SELECT row_number() OVER (ORDER BY session_id, side), session_id, side
        FROM (SELECT DISTINCT session_id, side FROM events);
        CREATE TABLE _source_files (file_id INTEGER NOT NULL, path VARCHAR NOT NULL);
        INSERT INTO _source_files
        SELECT row_number() OVER (ORDER BY path), path
        FROM (SELECT DISTINCT source_file AS path FROM events WHERE source_file IS NOT NULL);
        CREATE TABLE _events (
            k INTEGER NOT NULL,
            seq BIGINT NOT NULL,
            t DOUBLE,
            event VARCHAR,
            data JSON,
            file_id INTEGER,
            line_no BIGINT,
            text_chars INTEGER
        );
        INSERT INTO _events
        SELECT s.k, e.seq, e.t, e.event, e.data, f.file_id, e.line_no, e.text_chars
        FROM events e JOIN _session_keys s USING (session_id, side)
        LEFT JOIN _source_files f ON f.path = e.source_file;
        -- a copy is compact; its row groups are counted by the next run (NULL: not known)
        UPDATE _events_row_groups SET bound = CASE WHEN (SELECT count(*) FROM _events) = 0 THEN 0 END;
        DROP TABLE events;
        CREATE VIEW events AS
        SELECT s.session_id, s.side, e.seq, e.t, e.event, e.data, f.path AS source_file, e.line_no, e.text_chars
        FROM _events e JOIN _session_keys s USING (k) LEFT JOIN _source_files f USING (file_id);
        """
    )


def _keyed_by_session(table: str, *, order: str, not_null: tuple[str, ...] = ()) -> str:
    """SQL: `table` made again with its session's key `k` (m013's `_session_keys`) in place of
    its session id and side, its rows ordered by `order` (so that each row group covers a narrow
    range of keys, which DuckDB skips by), and `k` and the columns `not_null` NOT NULL.

    Shipped migrations call it (m014, m015), so what it does must never change: a migration
    that needs something else gets SQL of its own."""
    new = f"{table}_keyed"
    not_nulls = "".join(f"ALTER TABLE {new} ALTER COLUMN {c} SET NOT NULL; " for c in ("k", *not_null))
    return f"""
        CREATE TABLE {new} AS
        SELECT k.k, t.* EXCLUDE (session_id, side)
        FROM {table} t JOIN _session_keys k USING (session_id, side) ORDER BY {order};
        {not_nulls}
        DROP TABLE {table};
        ALTER TABLE {new} RENAME TO {table};
    """


@migration
def m014_summaries_keyed(con: duckdb.DuckDBPyConnection) -> None:
    # The per-session summaries, the tool events and the stale list are stored under the
    # session's key `k` (m013's `_session_keys`) instead of its id and side. A run reads the
    # rows of the sessions it recomputes by joining on k, and a new session's k is above every
    # stored one, so DuckDB skips the stored rows by their min/max instead of comparing every
    # stored row's 36-character id (a cron run adding 200 sessions to 20k: reading their
    # summaries ~7 -> ~2 ms, their tool events ~9 -> ~2.4 ms). Their cost then follows what
    # the run adds, not what is stored.
    con.execute(
        f"""
        {_keyed_by_session("_session_stats", order="k.k")}
        {_keyed_by_session("_tool_events", order="k.k, t.seq", not_null=("seq",))}
        CREATE TABLE _stale_keys (k INTEGER PRIMARY KEY);
        INSERT INTO _stale_keys SELECT DISTINCT k.k FROM _stale_sessions s JOIN _session_keys k USING (session_id, side);
        DROP TABLE _stale_sessions;
        ALTER TABLE _stale_keys RENAME TO _stale_sessions;
        """
    )


@migration
def m015_headers_keyed(con: duckdb.DuckDBPyConnection) -> None:
    # The sessions' headers are stored under their keys `k`, as m014 did for the summaries,
    # and every session with a header gets a key, with events or without. A run reads the
    # headers of the sessions it recomputes by joining on k, which DuckDB prunes by the stored
    # row groups' min/max (a cron run's new sessions have the highest keys), instead of
    # comparing every stored header's 36-character id: their cost follows what the run adds.
    con.execute(
        f"""
        INSERT INTO _session_keys (k, session_id, side)
        SELECT (SELECT coalesce(max(k), 0) FROM _session_keys) + row_number() OVER (ORDER BY session_id, side),
            session_id, side
        FROM (SELECT DISTINCT session_id, side FROM _session_headers) ANTI JOIN _session_keys USING (session_id, side);
        {_keyed_by_session("_session_headers", order="k.k, t.source_file", not_null=("source_file",))}
        """
    )


@migration
def m016_session_keys_by_uuid(con: duckdb.DuckDBPyConnection) -> None:
    # Every batch and every refresh looks up its sessions' keys by id, which read and hashed
    # every stored id as text: ~2.4M instructions per 1k stored sessions in each cron run. The
    # ingester stores only UUIDs (headers and sids are checked), so the lookups join on the id
    # as a UUID, a 16-byte value: 400 sessions among 100k took 2.3 ms instead of 7.6. NULL for
    # an id that is not a UUID (a database filled by hand); the ingester never finds those.
    con.execute(
        """
        ALTER TABLE _session_keys ADD COLUMN uid UUID;
        UPDATE _session_keys SET uid = try_cast(session_id AS UUID);
        """
    )


@migration
def m017_session_model_from_attrs(con: duckdb.DuckDBPyConnection) -> None:
    # `sessions.model` came from the done event only, so every session that ended without one
    # had none, and a synthetic-done rate grouped by model put all of them in a group of their
    # own. It now falls back to the header's attrs.model (ingest/sessions.py); the sessions
    # stored before get the same.
    con.execute(
        """
        UPDATE sessions SET model = attrs ->> '$.model'
        WHERE model IS NULL AND json_type(attrs, '$.model') = 'VARCHAR'
        """
    )


@migration
def m018_export_destinations_without_passwords(con: duckdb.DuckDBPyConnection) -> None:
    # The OTLP destination key held the endpoint URL as given, with any `user:password` in it,
    # where `query` could read it. Keys now hide the password (otlp_transport.hidden_password);
    # the stored ones are rewritten the same way, so that nothing is sent again after upgrading.
    # Keys that differed only by password (one changed under an older version) become one: per
    # session, the row most recently sent is kept.
    from .exporters.otlp_transport import destination_key

    rows = con.execute("SELECT DISTINCT destination FROM _export_otlp_sent WHERE contains(destination, '@')").fetchall()
    renamed = [(old, new) for (old,) in rows if (new := destination_key(*old.split(" ", 1))) != old]
    if not renamed:
        return
    con.execute("CREATE TEMP TABLE _m018_keys (old VARCHAR, new VARCHAR)")
    con.executemany("INSERT INTO _m018_keys VALUES (?, ?)", renamed)
    con.execute(
        """
        CREATE TEMP TABLE _m018_rows AS
        SELECT coalesce(k.new, s.destination) AS destination, s.session_id, s.side,
            arg_max(s.version, coalesce(s.sent_at, TIMESTAMPTZ '1970-01-01')) AS version,
            arg_max(s.spans, coalesce(s.sent_at, TIMESTAMPTZ '1970-01-01')) AS spans,
            max(s.sent_at) AS sent_at
        FROM _export_otlp_sent s LEFT JOIN _m018_keys k ON k.old = s.destination
        WHERE s.destination IN (SELECT old FROM _m018_keys UNION SELECT new FROM _m018_keys)
        GROUP BY 1, 2, 3;
        DELETE FROM _export_otlp_sent WHERE destination IN (SELECT old FROM _m018_keys UNION SELECT new FROM _m018_keys);
        INSERT INTO _export_otlp_sent (destination, session_id, side, version, spans, sent_at)
        SELECT destination, session_id, side, version, spans, sent_at FROM _m018_rows;
        DROP TABLE _m018_rows;
        DROP TABLE _m018_keys;
        """
    )


@migration
def m019_session_rows_keyed(con: duckdb.DuckDBPyConnection) -> None:
    # `sessions` and `tool_calls` become views, with the same columns, over `_sessions` and
    # `_tool_calls`, which also store each row's session key `k`, and `sessions` loses its
    # primary key. A cron run replaces the rows of the sessions it recomputes: deleting them by
    # id and side read and compared every stored row's 36-character id, and the key's index
    # was checked at every insert and written again at every commit. On a database of 1M
    # sessions a cron run that continued sessions took 3.45x its time on 20k, and 1.61x without
    # them (benchmarks/cron_history.py; docs/ingest.md). By key, DuckDB skips the stored rows by their
    # min/max. The ingester keeps one row per session itself (it deletes a session's rows
    # before inserting them, in one transaction); the tests check it. Rows of a session
    # without a key (a database filled by hand) get one, as m015 gave them to headers.
    con.execute(
        """
        INSERT INTO _session_keys (k, session_id, side, uid)
        SELECT (SELECT coalesce(max(k), 0) FROM _session_keys) + row_number() OVER (ORDER BY session_id, side),
            session_id, side, try_cast(session_id AS UUID)
        FROM (SELECT session_id, side FROM sessions UNION SELECT session_id, side FROM tool_calls)
        ANTI JOIN _session_keys USING (session_id, side);
        CREATE TABLE _sessions AS
        SELECT k.k, s.* FROM sessions s JOIN _session_keys k USING (session_id, side) ORDER BY k.k;
        CREATE TABLE _tool_calls AS
        SELECT k.k, t.* FROM tool_calls t JOIN _session_keys k USING (session_id, side) ORDER BY k.k, t.started_t;
        ALTER TABLE _sessions ALTER COLUMN k SET NOT NULL;
        ALTER TABLE _sessions ALTER COLUMN session_id SET NOT NULL;
        ALTER TABLE _sessions ALTER COLUMN side SET NOT NULL;
        ALTER TABLE _sessions ALTER COLUMN outcome SET NOT NULL;
        ALTER TABLE _sessions ALTER COLUMN attribution SET NOT NULL;
        ALTER TABLE _tool_calls ALTER COLUMN k SET NOT NULL;
        ALTER TABLE _tool_calls ALTER COLUMN session_id SET NOT NULL;
        ALTER TABLE _tool_calls ALTER COLUMN side SET NOT NULL;
        DROP TABLE sessions;
        DROP TABLE tool_calls;
        CREATE VIEW sessions AS SELECT * EXCLUDE (k) FROM _sessions;
        CREATE VIEW tool_calls AS SELECT * EXCLUDE (k) FROM _tool_calls;
        """
    )


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to call from every entry point.

    All of them in one transaction: a new database gets every migration at once, and one
    commit instead of one per migration made creating a database ~10 ms faster (medians of 10
    processes: 82 against 71.5 ms). A failure or a kill leaves none applied."""
    with transaction(con):
        con.execute(
            "CREATE TABLE IF NOT EXISTS _schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        done = {row[0] for row in con.execute("SELECT name FROM _schema_migrations").fetchall()}
        applied: list[str] = []
        for fn in MIGRATIONS:
            name = fn.__name__
            if name in done:
                continue
            fn(con)
            con.execute("INSERT INTO _schema_migrations VALUES (?, now())", [name])
            applied.append(name)
    return applied
