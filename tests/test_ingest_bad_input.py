"""Bad input never crashes the ingester and never vanishes: every line is data or a reject."""

from __future__ import annotations

import gzip
import json
import random

from agent_stream_trace.ingest.pipeline import IngestOptions, ingest
from agent_stream_trace.simulate.generator import seeded_uuid
from ingest_support import event, header, ingest_in_runs, new_sid, rows, v1_session, write


def build_corpus() -> tuple[bytes, dict[int, str]]:
    """A file mixing good sessions with every kind of bad line; returns (bytes, {line: reason prefix})."""
    a, b = new_sid(), new_sid()
    expected: dict[int, str] = {}
    lines: list[bytes] = []

    def add(raw: str | bytes, reason: str | None = None) -> None:
        lines.append(raw.encode() if isinstance(raw, str) else raw)
        if reason:
            expected[len(lines)] = reason

    add("\ufeff" + event(0.0, "token", {"text": "x"}), "event: no session header before it")  # BOM + orphan event
    add(header(a, v1=False))
    add(event(0.1, "token", {"text": "caf\u00e9 \u2028 line sep"}))  # U+2028 never splits a line
    add(event(0.2, "token", {"text": "crlf"}) + "\r")  # CRLF ending
    add("\ufeff" + event(0.25, "token", {"text": "bom"}))  # a BOM inside the file (files concatenated): data
    add("")  # blank: not counted
    add("   \t")  # blank
    add("{not json", "invalid JSON")
    add(b"\xff\xfe\x00garbage\x80", "binary data")
    add(b'{"t": 0.3, "event": "token", "data": {"text": "\xc3\x28"}}', "invalid UTF-8")
    add("[1, 2, 3]", "not a JSON object")
    add('"just a string"', "not a JSON object")
    add("null", "not a JSON object")  # valid JSON, but the struct parse gives NULL as for invalid
    add(" null \t", "not a JSON object")
    add("42", "not a JSON object")
    add(" \t" + event(0.25, "token", {"text": "indented"}))  # white space before the object: still data
    add("  [1]", "not a JSON object")
    add(" " + json.dumps({"t": "soon", "event": "token", "data": {}}), 'event: "t" is not a number')  # an object all the same
    add("nul", "invalid JSON")
    add(json.dumps({"event": "token", "data": {}}), 'event: missing field "t"')
    add(json.dumps({"t": "soon", "event": "token", "data": {}}), 'event: "t" is not a number')
    add(json.dumps({"t": -1, "event": "token", "data": {}}), 'event: "t" is negative')
    # finite but beyond any stream: its session's end timestamp overflowed, failing every run
    add(json.dumps({"t": 1e13, "event": "token", "data": {}}), 'event: "t" is 1e+09 s or more')
    add('{"t": NaN, "event": "token", "data": {}}', 'event: "t" is not a finite number')
    add(json.dumps({"t": 0.4, "data": {}}), 'event: missing field "event"')
    add(json.dumps({"t": 0.4, "event": 7, "data": {}}), 'event: "event" is not a string')
    add(json.dumps({"t": 0.4, "event": "token"}), 'event: missing field "data"')
    add(json.dumps({"t": 0.4, "event": "token", "data": "text"}), 'event: "data" is not an object')
    # A field that is there with the value null is of the wrong type, not missing
    add(json.dumps({"t": None, "event": "token", "data": {}}), 'event: "t" is not a number')
    add(json.dumps({"t": 0.4, "event": None, "data": {}}), 'event: "event" is not a string')
    add(json.dumps({"t": 0.4, "event": "token", "data": None}), 'event: "data" is not an object')
    add(json.dumps({"t": 0.5, "event": "brand_new_type", "data": {"x": 1}}))  # unknown types are data
    add('{"t": 0.6, "event": "token", "data": {"deep": ' + "[" * 5000 + "]" * 5000 + "}}")  # deep nesting
    add(json.dumps({"t": 0.7, "event": "token", "data": {"text": "y" * 5_000_000}}))  # a 5 MB line
    add(json.dumps({"t": 0.8, "event": "done", "data": {"total_cost_usd": 1}}))
    add(json.dumps({"session": "not-a-uuid", "started_at": "2026-11-24T10:00:00Z", "t": 0}), 'header: "session" is not a UUID')
    add(json.dumps({"session": None, "started_at": "2026-11-24T10:00:00Z", "t": 0}), 'header: "session" is not a UUID')
    add(event(0.1, "token", {"text": "lost"}), "event: follows an invalid session header")
    add(json.dumps({"session": new_sid(), "t": 0}), 'header: missing field "started_at"')
    add(json.dumps({"session": new_sid(), "started_at": "yesterday", "t": 0}), 'header: "started_at" is not')
    add(json.dumps({"session": new_sid(), "started_at": "294247-01-09T00:00:00Z", "t": 0}), 'header: "started_at" is not')
    # DuckDB reads these as timestamps, which every command reading the session then failed on
    add(json.dumps({"session": new_sid(), "started_at": "infinity", "t": 0}), 'header: "started_at" is not')
    add(json.dumps({"session": new_sid(), "started_at": "-infinity", "t": 0}), 'header: "started_at" is not')
    for bc in ("0001-01-01T00:00:00+01:00", "0000-01-01", "0001-01-01 (BC)", "-0001-01-01"):  # years before 1 (UTC)
        add(json.dumps({"session": new_sid(), "started_at": bc, "t": 0}), 'header: "started_at" is not')
    add(json.dumps({"session": new_sid(), "started_at": "9999-12-31T23:59:00Z", "t": 0}), 'header: "started_at" is after year 9967')
    add(event(1e6, "token", {"text": "lost"}), "event: follows an invalid session header")
    add(header(b))
    add(event(0.1, "token", {"text": "v1"}, sid=b, seq=1))
    # under a v1 header a line without sid is not taken by position (its seq from the line
    # distance, 2, would be the `_end` record's below, which would then be dropped as a repeat)
    add(event(0.15, "token", {"text": "no sid"}), 'event: missing field "sid" (the session header above it, line ')
    add(json.dumps({"t": 0.2, "event": "token", "data": {}, "sid": b}), 'event: missing field "seq"')
    add(json.dumps({"t": 0.2, "event": "token", "data": {}, "sid": "nope", "seq": 2}), 'event: "sid" is not a UUID')
    add(json.dumps({"t": 0.2, "event": "token", "data": {}, "sid": b, "seq": -3}), 'event: "seq" is not a non-negative')
    add(json.dumps({"t": 0.2, "event": "token", "data": {}, "sid": b, "seq": None}), 'event: "seq" is not a non-negative')
    add(event(0.3, "token", {"text": "?"}, sid=new_sid(), seq=1), 'event: no session header for its "sid"')
    add(event(0.4, "_end", {"reason": "done"}, sid=b, seq=2))
    return b"\n".join(lines) + b"\n", expected


def test_every_non_blank_line_is_a_header_an_event_or_a_reject(tmp_path, db_path):
    data, expected = build_corpus()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    report = ingest([path], IngestOptions(db=db_path, open_window=0))

    non_blank = sum(1 for line in data.split(b"\n") if line.strip(b" \t\r"))
    assert report.lines == non_blank
    assert report.headers + report.events + report.duplicates + report.rejected == non_blank
    # The database agrees with the report: `_end` is stored in events but not counted as a wire event.
    (n_events,) = rows(db_path, "SELECT count(*) FROM events")[0]
    (n_rejects,) = rows(db_path, "SELECT count(*) FROM rejects")[0]
    (n_headers,) = rows(db_path, "SELECT count(*) FROM _session_headers")[0]
    assert n_headers + n_events + n_rejects == non_blank
    assert rows(db_path, "SELECT count(*) FROM events WHERE event = '_end'") == [(1,)]
    assert rows(db_path, "SELECT sum(event_count) FROM sessions") == [(n_events - 1,)]

    got = {line: (reason, raw) for _, line, reason, raw in rows(db_path, "SELECT * FROM rejects")}
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for line, prefix in expected.items():
        assert got[line][0].startswith(prefix), (line, got[line][0], prefix)
    assert all(src == str(path.resolve()) for (src,) in rows(db_path, "SELECT source_file FROM rejects"))
    first_invalid = min(line for line, reason in expected.items() if reason == "invalid JSON")
    assert len(got[first_invalid][1]) > 0 and all(len(raw) <= 200 for _, raw in got.values())


def test_bad_lines_do_not_disturb_the_good_sessions(tmp_path, db_path):
    data, _ = build_corpus()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    ingest([path], IngestOptions(db=db_path, open_window=0))
    sessions = rows(db_path, "SELECT attribution, outcome, end_reason, event_count, token_chars FROM sessions ORDER BY attribution")
    # the v1 session: one token, closed by `_end` without a done event
    assert sessions[0] == ("exact", "synthetic_done", "done", 1, 2)
    # the v0 session: 8 good events (U+2028, CRLF, BOM and indented lines intact, unknown type kept)
    attribution, outcome, reason, count, chars = sessions[1]
    assert (attribution, outcome, reason, count) == ("positional", "done", "done", 8)
    assert chars == len("caf\u00e9 \u2028 line sep") + len("crlf") + len("bom") + len("indented") + 5_000_000 + 0
    assert rows(db_path, "SELECT count(*) FROM events WHERE event = 'brand_new_type'") == [(1,)]


def test_corrupt_gzip_is_a_reject_and_the_lines_before_it_are_kept(tmp_path, db_path):
    # Seeded ids, the same bytes every run: what deflate decodes from the damage before it
    # raises is garbage that depends on the bytes, and with random ids it now and then reached
    # into the step before the failing one, so that the cut line itself began with garbage (one
    # CI run of 2026-12-02 in several; none in 30 runs of this test alone).
    rng = random.Random(5)
    good = "".join(
        "\n".join([header(sid, v1=False), event(0.1, "token", {"text": sid * 20}), event(0.2, "done", {})]) + "\n"
        for sid in (seeded_uuid(rng) for _ in range(2000))
    )
    blob = gzip.compress(good.encode())
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2] + b"\x00garbage\xff" * 10)
    report = ingest([path], IngestOptions(db=db_path, open_window=0))
    reasons = [r for (r,) in rows(db_path, "SELECT reason FROM rejects ORDER BY line_no")]
    # the damage is the last thing read: whatever garbage decompressed before it is rejected too
    assert reasons[-1].startswith("corrupt gzip"), reasons
    # the reject's raw is the start of the line the damage cut, not its end
    raw = rows(db_path, "SELECT raw FROM rejects WHERE reason LIKE 'corrupt gzip%'")[0][0]
    assert raw.startswith("{"), raw
    assert all(not r.startswith("corrupt gzip") for r in reasons[:-1])
    assert report.headers > 500 and report.events > 1000 and report.lines == report.headers + report.events + report.duplicates + report.rejected


def test_any_gzip_damage_is_a_reject_and_the_other_files_load(tmp_path, db_path):
    # Not gzip at all, a damaged checksum, junk after the last member: each a zlib error, not the
    # stream simply ending (the test above). Once, each crashed the whole run, every run after.
    sid, crc_sid, gz_sid = new_sid(), new_sid(), new_sid()
    good = write(tmp_path / "good.jsonl", v1_session(sid, [(0.1, "token", {"text": "x"})]))

    def packed(session: str) -> bytes:
        return gzip.compress((header(session, v1=False) + "\n" + event(0.1, "done", {}) + "\n").encode())

    blob, crc_blob = packed(gz_sid), packed(crc_sid)
    damaged = {
        "not-gzip.jsonl.gz": b"x\n",
        "bad-crc.jsonl.gz": crc_blob[:-8] + bytes([crc_blob[-8] ^ 0xFF]) + crc_blob[-7:],
        "junk-after.jsonl.gz": blob + b"junk after the last member",
    }
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
    for _ in range(2):  # and again: nothing added, nothing lost
        report = ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    assert report.files_unchanged == 4
    rejects = dict(rows(db_path, "SELECT regexp_extract(source_file, '[^/]+$'), reason FROM rejects"))
    assert sorted(rejects) == sorted(damaged)
    assert all(reason.startswith("corrupt gzip") for reason in rejects.values()), rejects
    assert rows(db_path, "SELECT session_id FROM sessions WHERE source_file = ?", [str(good)]) == [(sid,)]
    # what decompressed before the damage is kept: the whole member before the junk; but not
    # the lines of a member whose checksum is wrong (any of them may be damaged)
    assert rows(db_path, "SELECT regexp_extract(source_file, '[^/]+$'), outcome FROM sessions WHERE session_id = ?",
                [gz_sid]) == [("junk-after.jsonl.gz", "done")]
    assert rows(db_path, "SELECT count(*) FROM sessions WHERE session_id = ?", [crc_sid]) == [(0,)]


def test_gzip_recordings_read_like_plain_ones(tmp_path, db_path, upstream_sequential):
    path = tmp_path / "seq.jsonl.gz"
    path.write_bytes(gzip.compress(upstream_sequential.read_bytes()))
    report = ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    assert (report.headers, report.rejected) == (25, 0)
    assert rows(db_path, "SELECT count(*) FROM sessions WHERE outcome = 'done'") == [(18,)]


def test_token_text_chars_are_what_the_text_decodes_to(tmp_path, db_path):
    # text_chars is measured at ingest from the JSON literal; whatever the escapes, it must equal
    # length(data->>'text') (characters, not bytes), and be NULL where a token has no text.
    sid = new_sid()
    texts = ["plain", "", "héllo ✓", "日本語", "tab\there", 'quote "x"', "back\\slash", "line\nbreak",
             "\u2028sep", "emoji \U0001f600", "x" * 5000]
    lines = [header(sid)]
    lines += [event(0.1 + i / 100, "token", {"text": t}, sid=sid, seq=i) for i, t in enumerate(texts)]
    raw = [
        '{"t": 1, "event": "token", "data": {"text": "\\u00e9\\ud83d\\ude00"}, "sid": "%s", "seq": 100}' % sid,
        '{"t": 1, "event": "token", "data": {"text": 42}, "sid": "%s", "seq": 101}' % sid,
        '{"t": 1, "event": "token", "data": {}, "sid": "%s", "seq": 102}' % sid,
        '{"t": 1, "event": "token", "data": {"text": "a", "text": "bcd"}, "sid": "%s", "seq": 103}' % sid,
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines + raw) + "\n", encoding="utf-8")
    ingest([path], IngestOptions(db=db_path, open_window=0))
    got = rows(db_path, "SELECT seq, text_chars, length(data ->> 'text') FROM events ORDER BY seq")
    assert len(got) == len(texts) + len(raw)
    assert all(stored == expected for _, stored, expected in got), got
    assert [r[1] for r in got[: len(texts)]] == [len(t) for t in texts]
    assert dict((r[0], r[1]) for r in got)[102] is None
    (chars,) = rows(db_path, "SELECT token_chars FROM sessions")[0]
    assert chars == sum(len(t) for t in texts) + 2 + 2 + 0 + got[-1][2]


def test_migration_fills_text_chars_of_events_stored_before_it(tmp_path):
    import duckdb

    from agent_stream_trace import migrations

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    old = [m for m in migrations.MIGRATIONS if m.__name__ < "m004"]
    con.execute("CREATE TABLE _schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for m in old:
        m(con)
        con.execute("INSERT INTO _schema_migrations VALUES (?, now())", [m.__name__])
    con.execute("INSERT INTO events VALUES ('s', 'server', 1, 0.1, 'token', '{\"text\": \"héllo\"}', 'f', 2),"
                " ('s', 'server', 2, 0.2, 'turn', '{\"turn_number\": 2}', 'f', 3),"
                " ('s', 'client', 1, 0.3, 'token', '{\"text\": \"hi\"}', 'g', 4),"
                " ('u', 'server', 1, 0.4, 'error', '{}', NULL, NULL)")
    # session rows, one of a session without events (a database filled by hand): m019 keys them
    con.execute("INSERT INTO sessions (session_id, side, outcome, attribution, model) VALUES"
                " ('s', 'server', 'done', 'exact', 'm1'), ('s', 'client', 'open', 'exact', NULL),"
                " ('x', 'server', 'synthetic_done', 'positional', NULL)")
    con.execute("INSERT INTO tool_calls (session_id, side, tool_use_id, tool_name, status) VALUES"
                " ('s', 'server', 'tu1', 'grep', 'done'), ('x', 'server', 'tu2', 'ls', 'orphaned')")
    before = con.execute("SELECT session_id, side, seq, t, event, data, source_file, line_no FROM events ORDER BY ALL").fetchall()
    sessions_before = con.execute("SELECT * FROM sessions ORDER BY ALL").fetchall()
    tools_before = con.execute("SELECT * FROM tool_calls ORDER BY ALL").fetchall()
    assert migrations.migrate(con) == ["m004_token_text_chars", "m005_session_stats", "m006_tool_event_fields",
                                       "m007_drop_session_seq", "m008_dirty_sessions_unkeyed",
                                       "m009_session_headers_unkeyed", "m010_events_row_group_bound",
                                       "m011_session_stats_unkeyed", "m012_events_row_group_bound_counted",
                                       "m013_events_keyed", "m014_summaries_keyed", "m015_headers_keyed",
                                       "m016_session_keys_by_uuid", "m017_session_model_from_attrs",
                                       "m018_export_destinations_without_passwords", "m019_session_rows_keyed"]
    assert con.execute("SELECT session_id, seq, text_chars FROM events WHERE event = 'token' OR seq = 2 ORDER BY ALL").fetchall() == [
        ("s", 1, 2), ("s", 1, 5), ("s", 2, None)]
    # m013 keeps every row, with its session, side and file, behind the view of the same columns
    after = con.execute("SELECT session_id, side, seq, t, event, data, source_file, line_no FROM events ORDER BY ALL").fetchall()
    assert after == before
    assert con.execute("SELECT count(*), count(DISTINCT k), count(DISTINCT file_id) FROM _events").fetchall() == [(4, 3, 2)]
    # m005 marked every session stale; m014 keeps that list, under the sessions' keys
    assert con.execute("SELECT k.session_id, k.side FROM _stale_sessions JOIN _session_keys k USING (k) ORDER BY ALL").fetchall() == [
        ("s", "client"), ("s", "server"), ("u", "server")]
    # the copy's row groups are left for the next run to count (ingest/storage.py)
    assert con.execute("SELECT bound FROM _events_row_groups").fetchall() == [(None,)]
    # m019: the same session rows and tool calls behind views of the same columns, each under
    # its session's key, and the session without events given one
    assert con.execute("SELECT * FROM sessions ORDER BY ALL").fetchall() == sessions_before
    assert con.execute("SELECT * FROM tool_calls ORDER BY ALL").fetchall() == tools_before
    assert [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'sessions'"
                                      " ORDER BY ordinal_position").fetchall()][:3] == ["session_id", "side", "source_file"]
    keyed = "SELECT count(*) FROM {} t JOIN _session_keys k USING (k, session_id, side)"
    assert [con.execute(keyed.format(t)).fetchone()[0] for t in ("_sessions", "_tool_calls")] == [3, 2]


def test_event_fields_read_exactly_whatever_their_json_spelling(tmp_path, db_path):
    """t, event, sid and seq are read from their JSON text by cheap casts where that is exact,
    and by JSON type otherwise: escapes, exponents, 1.0 and upper-case UUIDs included."""
    sid = new_sid()
    upper = sid.upper()
    lines = [
        header(sid),
        # escaped event name: decoded, not cut out of its quotes
        '{"t": 0.1, "event": "tok\\u0065n", "data": {"text": "a"}, "sid": "%s", "seq": 1}' % sid,
        '{"t": 1e-1, "event": "tool_\\"x\\"", "data": {}, "sid": "%s", "seq": 2}' % upper,  # exponent t, upper-case sid
        '{"t": 0.3, "event": "caf\u00e9", "data": {}, "sid": "%s", "seq": 3}' % sid,  # non-ASCII name
        '{"t": 0.4, "event": "token", "data": {}, "sid": "%s", "seq": 1.0}' % sid,
        '{"t": 0.4, "event": "token", "data": {}, "sid": "%s", "seq": 1e1}' % sid,
        '{"t": 0.4, "event": "token", "data": {}, "sid": "%s", "seq": "4"}' % sid,
        '{"t": "0.4", "event": "token", "data": {}, "sid": "%s", "seq": 5}' % sid,
        '{"t": true, "event": "token", "data": {}, "sid": "%s", "seq": 6}' % sid,
        '{"t": 0.5, "event": "done", "data": {}, "sid": "%s", "seq": 18446744073709551615}' % sid,
        # sid spellings: each spelling is validated once, not each line (classify.SIDS)
        '{"t": 0.6, "event": "token", "data": {}, "sid": "\\u00%x%s", "seq": 4}' % (ord(sid[0]), sid[1:]),  # escaped
        '{"t": 0.7, "event": "token", "data": {}, "sid": "{%s}", "seq": 5}' % sid,  # braced
        '{"t": 0.8, "event": "token", "data": {}, "sid": 7, "seq": 6}',
        '{"t": 0.8, "event": "token", "data": {}, "sid": "nope", "seq": -1}',  # the sid's reason comes first
        '{"t": 0.8, "event": "token", "data": {}, "sid": "%s", "seq": 6}' % sid.replace("-", "_"),
    ]
    path = tmp_path / "spellings.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest([path], IngestOptions(db=db_path, open_window=0))
    events = rows(db_path, "SELECT seq, t, event, session_id FROM events ORDER BY seq")
    assert events == [(1, 0.1, "token", sid), (2, 0.1, 'tool_"x"', sid), (3, 0.3, "caf\u00e9", sid),
                      (4, 0.6, "token", sid), (5, 0.7, "token", sid)]
    rejects = rows(db_path, "SELECT line_no, reason FROM rejects ORDER BY line_no")
    assert rejects == [
        (5, 'event: "seq" is not a non-negative integer'),
        (6, 'event: "seq" is not a non-negative integer'),
        (7, 'event: "seq" is not a non-negative integer'),
        (8, 'event: "t" is not a number'),
        (9, 'event: "t" is not a number'),
        (10, 'event: "seq" is not a non-negative integer'),
        (13, 'event: "sid" is not a UUID string'),
        (14, 'event: "sid" is not a UUID string'),
        (15, 'event: "sid" is not a UUID string'),
    ]


def test_the_done_record_fills_the_reported_columns_whatever_its_field_types(tmp_path, db_path):
    """model, message_id, cost, turns, tool count, duration and output tokens come from the
    session's done record: a field of another JSON type is its JSON text, cast where a number is
    wanted (NULL when it is not one); output tokens are usage.output_tokens, else output_tokens."""
    from ingest_support import v1_session, write

    full, flat, odd, none = new_sid(), new_sid(), new_sid(), new_sid()
    write(tmp_path / "a.jsonl", v1_session(full, [(0.1, "token", {"text": "ab"}), (0.3, "token", {"text": "cd"}), (
        0.4, "done", {"model": "m-1", "message_id": "msg", "total_cost_usd": 0.25, "num_turns": 2,
                      "tool_count": 3, "duration_ms": 400, "usage": {"output_tokens": 9}})]))
    write(tmp_path / "b.jsonl", v1_session(flat, [(0.1, "token", {"text": "ab"}), (0.3, "token", {"text": "cd"}), (
        0.4, "done", {"output_tokens": 4, "usage": {"input_tokens": 1}, "total_cost_usd": "0.5"})]))
    write(tmp_path / "c.jsonl", v1_session(odd, [(0.4, "done", {
        "model": 5, "message_id": {"a": 1}, "total_cost_usd": "lots", "num_turns": "two", "tool_count": None,
        "duration_ms": [1], "usage": {"output_tokens": "many"}, "output_tokens": 7})]))
    write(tmp_path / "d.jsonl", v1_session(none, [(0.2, "token", {"text": "x"})]))
    ingest([tmp_path], IngestOptions(db=db_path, open_window=0))
    got = {r[0]: r[1:] for r in rows(db_path, (
        "SELECT session_id, model, message_id, total_cost_usd, reported_turns, reported_tool_count, "
        "reported_duration_ms, output_tokens, round(token_velocity_tps, 6) FROM sessions"))}
    assert got[full] == ("m-1", "msg", 0.25, 2, 3, 400, 9, round(9 / 0.2, 6))
    assert got[flat] == (None, None, 0.5, None, None, None, 4, round(4 / 0.2, 6))
    assert got[odd] == ("5", '{"a":1}', None, None, None, None, 7, None)
    assert got[none] == (None,) * 8


def test_a_line_that_is_not_json_with_text_cut_inside_a_character_is_a_reject(tmp_path, db_path):
    """DuckDB's error for a line that is not JSON quotes the line's first ~47 bytes, and cut
    inside a UTF-8 character the message could not be decoded: the run failed, every time."""
    sid = new_sid()
    lines = [header(sid, v1=False), event(0.1, "token", {"text": "\u4f60\u597d"}),
             '{"t": 1, "event": "token", "data": {"text": "\u4f60\u597d\uff0c\u4e16\u754c']
    path = write(tmp_path / "cut.jsonl", lines, newline_at_end=False)
    report = ingest([path], IngestOptions(db=db_path, open_window=0))
    assert (report.headers, report.events, report.rejected) == (1, 1, 1)
    assert rows(db_path, "SELECT line_no, reason FROM rejects") == [
        (3, "truncated: last line has no newline and is not complete JSON")]


def test_lone_surrogate_escapes_are_data_not_rejects(tmp_path, db_path):
    # Valid JSON that a JavaScript server writes when it cuts a string inside an emoji (json.dumps
    # writes the same escapes): DuckDB refuses it, and such a done line made its session a
    # synthetic done. Read with U+FFFD in place of each lone half; a pair stays its character.
    sid = new_sid()
    lines = v1_session(sid, [(0.1, "token", {"text": "cut \ud83d"}), (0.2, "token", {"text": "\U0001f600 and \udc00"}),
                             (0.3, "done", {"summary": "ok \ud83d"})])
    lines.append("{not json \\ud83d")  # still not JSON: a reject, shown as it was
    path = write(tmp_path / "surrogates.jsonl", lines)
    report = ingest([path], IngestOptions(db=db_path, open_window=0))
    assert (report.headers, report.events, report.rejected) == (1, 4, 1)
    assert rows(db_path, "SELECT data->>'text' FROM events WHERE event = 'token' ORDER BY seq") == [
        ("cut \ufffd",), ("\U0001f600 and \ufffd",)]
    assert rows(db_path, "SELECT outcome, end_reason, token_chars FROM sessions") == [("done", "done", 5 + 7)]
    assert rows(db_path, "SELECT reason, raw FROM rejects") == [("invalid JSON", "{not json \\ud83d")]


def test_a_header_that_is_not_json_stops_lines_going_to_the_session_above(tmp_path, db_path):
    # A v0 writer killed mid-line, restarted: its next header is glued to the cut line. The
    # lines below it are B's, not A's: they are rejects, never A's events (B's done made A
    # look done). A line that is not JSON and names no "session" is an event line gone bad.
    a, b, c = new_sid(), new_sid(), new_sid()
    lines = [header(a, v1=False), event(0.1, "token", {"text": "A"}),
             '{"t": 0.2, "event": "token", "data": {"text": "cu' + header(b, v1=False),  # line 3
             event(0.1, "token", {"text": "B"}), event(0.2, "done", {}),
             '{"t": 0.3, "event": "tok',  # an event line cut off: the lines below stay A's... here C's header follows
             header(c, v1=False), event(0.1, "done", {}),
             header(new_sid(), v1=False)[:40]]  # the last line, cut and without newline: truncated
    path = tmp_path / "glued.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    report = ingest([path], IngestOptions(db=db_path, open_window=0))
    assert report.lines == 9 and report.lines == report.headers + report.events + report.rejected
    assert rows(db_path, "SELECT line_no, reason FROM rejects ORDER BY line_no") == [
        (3, "invalid JSON"),
        (4, "event: follows an invalid session header (line 3)"),
        (5, "event: follows an invalid session header (line 3)"),
        (6, "invalid JSON"),
        (9, "truncated: last line has no newline and is not complete JSON")]
    assert rows(db_path, "SELECT session_id, outcome, end_reason, event_count FROM sessions ORDER BY started_at, session_id") == sorted(
        [(a, "synthetic_done", "no_end_record", 1), (c, "done", "done", 1)])


def test_a_broken_event_line_naming_session_is_not_a_header(tmp_path, db_path):
    # Only a line naming both "session" and "started_at" is taken for a broken header: an event
    # whose data holds a "session" key, cut, is one reject, and the lines below stay its session's.
    a = new_sid()
    lines = [header(a, v1=False), event(0.1, "token", {"text": "A"}),
             event(0.2, "tool_use", {"tool_use_id": "u", "tool_name": "x", "input": {"session": "abc"}})[:-1],
             event(0.3, "token", {"text": "B"}), event(0.4, "done", {"model": "m1"})]
    ingest([write(tmp_path / "cut-event.jsonl", lines)], IngestOptions(db=db_path, open_window=0))
    assert rows(db_path, "SELECT line_no, reason FROM rejects") == [(3, "invalid JSON")]
    assert rows(db_path, "SELECT outcome, event_count, model FROM sessions") == [("done", 3, "m1")]


def test_a_line_cut_mid_write_naming_session_then_finished_reads_as_in_one_run(tmp_path):
    # Cut mid-write (after `"session": "abc",`) and read as final, the last line looked like a
    # broken header; the file's carried state must not keep it (the read position stays before
    # it), or the finished line and those after it were rejected as following it.
    a = new_sid()
    lines = [header(a, v1=False), event(0.1, "token", {"text": "A"}),
             event(0.2, "tool_use", {"tool_use_id": "u", "tool_name": "x", "input": {"session": "abc", "started_at": "x"}}),
             event(0.3, "tool_result", {"tool_use_id": "u", "tool_name": "x", "status": "done"}),
             event(0.4, "done", {"model": "m1"})]
    whole, grown = tmp_path / "whole.duckdb", tmp_path / "grown.duckdb"
    ingest_in_runs(tmp_path / "whole.jsonl", lines, whole)
    path = tmp_path / "grown.jsonl"
    cut = lines[2].index('"session": "abc",') + len('"session": "abc",')
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:cut], encoding="utf-8")
    ingest([path], IngestOptions(db=grown, open_window=0))  # the cut line, final (the file is quiet)
    assert rows(grown, "SELECT reason FROM rejects") == [("truncated: last line has no newline and is not complete JSON",)]
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines[2][cut:] + "\n" + "\n".join(lines[3:]) + "\n")
    ingest([path], IngestOptions(db=grown, open_window=0))
    assert rows(grown, "SELECT count(*) FROM rejects") == rows(whole, "SELECT count(*) FROM rejects") == [(0,)]
    assert rows(grown, "SELECT outcome, event_count, model FROM sessions") == rows(
        whole, "SELECT outcome, event_count, model FROM sessions") == [("done", 4, "m1")]
