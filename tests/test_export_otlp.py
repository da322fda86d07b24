"""`export otlp` against a real OTLP receiver on 127.0.0.1 (HTTP and gRPC)."""

from __future__ import annotations

import json
import logging
import uuid

import grpc
import pytest
from support.otlp_receiver import dead_endpoint, running_receiver
from support.sessions_db import add_session, add_sessions, scenario, simulated_specs

from agent_stream_trace.cli import main
from agent_stream_trace.db import connect
from agent_stream_trace.errors import ExportError
from agent_stream_trace.exporters.otlp import OtlpExportOptions, export_otlp
from agent_stream_trace.session import load_session_traces
from agent_stream_trace.spans import session_spans

PROTOCOLS = ["http/protobuf", "grpc"]


@pytest.fixture
def receiver():
    with running_receiver() as r:
        yield r


@pytest.fixture
def con(db_path):
    con = connect(db_path)
    add_sessions(con, simulated_specs(14))
    yield con
    con.close()


def endpoint(receiver, protocol):
    return receiver.http_endpoint if protocol == "http/protobuf" else receiver.grpc_endpoint


def expected_spans(con, include_content=False):
    return [s for t in load_session_traces(con) for s in session_spans(t, include_content=include_content)]


def marked(con):
    return con.execute("SELECT count(*) FROM _export_otlp_sent").fetchone()[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sends_every_span_once_and_rerun_sends_nothing(con, receiver, protocol):
    options = OtlpExportOptions(endpoint=endpoint(receiver, protocol), protocol=protocol, request_spans=20)
    report = export_otlp(con, options)
    expected = expected_spans(con)
    got = receiver.spans()
    assert report.spans == len(expected) == len(got) and report.sessions == 14
    assert sorted(s.span_id for s in got) == sorted(s.span_id for s in expected)
    assert report.requests > 1  # sessions were split over several requests, none lost
    assert marked(con) == 14

    again = export_otlp(con, options)
    assert (again.spans, again.unchanged) == (0, 14)
    assert len(receiver.spans()) == len(expected)


def test_a_changed_session_is_sent_again_alone(db_path, receiver):
    con = connect(db_path)
    add_sessions(con, simulated_specs(5))
    sid = add_session(con, scenario("crash"), outcome="open")
    options = OtlpExportOptions(endpoint=receiver.http_endpoint)
    assert export_otlp(con, options).sessions == 6
    # The open session completes: same id, new version.
    add_session(con, scenario("tools"), session_id=sid)
    report = export_otlp(con, options)
    assert (report.sessions, report.unchanged) == (1, 5)
    resent = receiver.received[-1].resource_spans[0].scope_spans[0].spans
    assert {bytes(s.trace_id).hex() for s in resent} == {sid.replace("-", "")}


def test_all_resends_with_the_same_ids(con, receiver):
    options = OtlpExportOptions(endpoint=receiver.http_endpoint)
    export_otlp(con, options)
    first = [(s.trace_id, s.span_id, s.name) for s in receiver.spans()]
    receiver.received.clear()
    report = export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint, resend_all=True))
    assert report.sessions == 14
    assert [(s.trace_id, s.span_id, s.name) for s in receiver.spans()] == first


def test_no_token_text_without_include_content(con, receiver):
    export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint))
    plain = b"".join(r.SerializeToString() for r in receiver.received)
    assert b"word0" not in plain and b"query #0" not in plain and b"look this up" not in plain
    assert b"slow down" not in plain and b"searching" not in plain  # error and progress messages
    receiver.received.clear()
    # Content opt-in is a different version of each session: sent again without --all.
    report = export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint, include_content=True))
    assert report.sessions == 14
    rich = b"".join(r.SerializeToString() for r in receiver.received)
    assert b"word0" in rich and b"query #0" in rich and b"slow down" in rich and b"searching" in rich


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dead_endpoint_fails_clearly_and_marks_nothing(con, protocol):
    options = OtlpExportOptions(endpoint=dead_endpoint(), protocol=protocol, timeout_s=1.5)
    with pytest.raises(ExportError, match="could not deliver"):
        export_otlp(con, options)
    assert marked(con) == 0


def test_http_400_is_an_answer_not_retried(con, receiver):
    receiver.script = [400]
    with pytest.raises(ExportError, match="HTTP 400"):
        export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint))
    assert receiver.requests == 1  # no retry storm, and no further request after the refusal
    assert marked(con) == 0


@pytest.mark.parametrize("in_flight", [1, 3])
def test_a_refusal_mid_export_marks_exactly_what_was_acknowledged(con, receiver, in_flight):
    receiver.script = [None, None, 400]  # two requests accepted, the third refused
    options = OtlpExportOptions(endpoint=receiver.http_endpoint, request_spans=12, in_flight=in_flight)
    with pytest.raises(ExportError, match="HTTP 400"):
        export_otlp(con, options)
    acknowledged = {bytes(s.trace_id) for s in receiver.spans()}
    stored = con.execute("SELECT session_id FROM _export_otlp_sent").fetchall()
    assert acknowledged and {uuid.UUID(r[0]).bytes for r in stored} == acknowledged
    # Nothing new is sent once a request was refused: only requests already in flight go out.
    if in_flight == 1:
        assert receiver.requests == 3
    else:
        assert receiver.requests <= 3 + in_flight
    assert len(acknowledged) < 14


def test_503_then_success_is_retried_and_delivered_once(con, receiver):
    receiver.script = [503]
    receiver.retry_after = "0"
    report = export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint))
    spans = receiver.spans()
    assert receiver.requests == 2
    assert report.spans == len(spans) == len({s.span_id for s in spans}) == len(expected_spans(con))
    assert marked(con) == 14


def test_grpc_unavailable_then_success(con, receiver):
    receiver.script = [grpc.StatusCode.UNAVAILABLE]
    report = export_otlp(con, OtlpExportOptions(endpoint=receiver.grpc_endpoint, protocol="grpc"))
    assert receiver.requests == 2 and report.spans == len(receiver.spans()) == len(expected_spans(con))


def test_grpc_invalid_argument_is_not_retried(con, receiver):
    receiver.script = [grpc.StatusCode.INVALID_ARGUMENT]
    with pytest.raises(ExportError, match="INVALID_ARGUMENT"):
        export_otlp(con, OtlpExportOptions(endpoint=receiver.grpc_endpoint, protocol="grpc"))
    assert receiver.requests == 1 and marked(con) == 0


def test_standard_env_vars_decide_without_flags(con, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=secret")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-agent")
    export_otlp(con)
    assert receiver.headers and all(h.get("x-honeycomb-team") == "secret" for h in receiver.headers)
    resource = {kv.key: kv.value.string_value for kv in receiver.resources()[0].attributes}
    assert resource == {"service.name": "my-agent", "openinference.project.name": "my-agent"}


def test_cli_sends_then_reports_nothing_new(db_path, receiver, capsys):
    con = connect(db_path)
    add_sessions(con, simulated_specs(7))
    con.close()
    argv = ["export", "otlp", "--db", str(db_path), "--endpoint", receiver.grpc_endpoint, "--protocol", "grpc",
            "--header", "authorization=Bearer t"]
    assert main(argv) == 0
    assert "sent" in capsys.readouterr().out
    assert receiver.headers[0].get("authorization") == "Bearer t"
    count = len(receiver.spans())
    assert main(argv) == 0
    assert "sent 0 spans" in capsys.readouterr().out and len(receiver.spans()) == count


def test_cli_dry_run_json_sends_nothing(db_path, receiver, capsys):
    con = connect(db_path)
    sid = add_session(con, scenario("tools"))
    con.close()
    add_session(con := connect(db_path), scenario("plain"))  # another session, left out
    con.close()
    dry_run = ["export", "otlp", "--db", str(db_path), "--endpoint", receiver.http_endpoint, "--dry-run", "--format", "json"]
    assert main([*dry_run, "--session", sid]) == 0
    spans = json.loads(capsys.readouterr().out)
    assert spans[0]["trace_id"] == sid.replace("-", "") and spans[0]["name"] == "invoke_agent"
    assert {s["trace_id"] for s in spans} == {sid.replace("-", "")}
    # a unique prefix names the session, as in `show`; one that names none is an error, not []
    assert main([*dry_run, "--session", sid[:8].upper()]) == 0
    assert json.loads(capsys.readouterr().out) == spans
    assert main([*dry_run, "--session", "ffffffff-none"]) == 2
    assert "no session id starts with 'ffffffff-none'" in capsys.readouterr().err
    # an ambiguous session named is said to be left out, unless asked for
    add_session(con := connect(db_path), scenario("plain"), session_id=(unsure := str(uuid.uuid4())), attribution="ambiguous")
    con.close()
    assert main([*dry_run, "--session", unsure]) == 2
    err = capsys.readouterr().err
    assert f"session {unsure} is ambiguous" in err and "--include-ambiguous" in err
    assert main([*dry_run, "--session", unsure, "--include-ambiguous"]) == 0
    assert {s["trace_id"] for s in json.loads(capsys.readouterr().out)} == {unsure.replace("-", "")}
    # an id with one side ambiguous exports its other side
    add_session(con := connect(db_path), scenario("plain"), session_id=unsure, side="client")
    con.close()
    assert main([*dry_run, "--session", unsure]) == 0
    spans = json.loads(capsys.readouterr().out)
    assert spans and {s["trace_id"] for s in spans} == {unsure.replace("-", "")}
    assert receiver.requests == 0
    con = connect(db_path)
    assert marked(con) == 0


def test_session_prefixes_are_narrowed_by_side_and_counted_whole(db_path, capsys):
    """`show` resolves the ids a person types with the same rules as `export otlp --session`."""
    con = connect(db_path)
    for i in range(60):
        add_session(con, scenario("plain"), session_id=f"f{i:07x}-0000-4000-8000-000000000000")
    add_session(con, scenario("plain"), session_id="fffffff0-0000-4000-8000-000000000000", side="client")
    con.close()
    assert main(["show", "f", "--db", str(db_path)]) == 2
    assert "'f' matches 61 sessions" in capsys.readouterr().err
    assert main(["show", "f", "--side", "client", "--db", str(db_path)]) == 0
    assert "fffffff0-0000-4000-8000-000000000000 (client)" in capsys.readouterr().out


def test_cli_unreachable_is_one_line_and_exit_1(db_path, capsys):
    con = connect(db_path)
    add_session(con, scenario("plain"))
    con.close()
    code = main(["export", "otlp", "--db", str(db_path), "--endpoint", dead_endpoint(), "--timeout", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[0].startswith("error: could not deliver") and err[1].startswith("hint:") and len(err) == 2


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_credentials_are_never_printed_or_stored(db_path, receiver, capsys, protocol):
    """A password in the endpoint URL, or a --header given the wrong way (likely a token), is
    never echoed, nor stored in the database where `query` could read it."""
    con = connect(db_path)
    add_session(con, scenario("plain"))
    con.close()
    dead = dead_endpoint().replace("http://", "http://bob:hunter2@")
    assert main(["export", "otlp", "--db", str(db_path), "--endpoint", dead, "--protocol", protocol, "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "could not deliver to http://bob:***@127.0.0.1" in err and "hunter2" not in err
    # a URL without scheme, and one that does not parse, are no exception
    bare = dead.replace("http://", "")
    assert main(["export", "otlp", "--db", str(db_path), "--endpoint", bare, "--protocol", protocol, "--timeout", "1"]) in (1, 2)
    err = capsys.readouterr().err
    assert "hunter2" not in err and "Traceback" not in err
    assert main(["export", "otlp", "--db", str(db_path), "--endpoint", "http://bob:hunter2@[::1:4318",
                 "--protocol", protocol, "--timeout", "1"]) in (1, 2)
    err = capsys.readouterr().err
    assert "hunter2" not in err and "Traceback" not in err
    # a password with an unencoded '?' breaks the URL where it stands: refused, nothing of it shown
    assert main(["export", "otlp", "--db", str(db_path), "--endpoint", "http://bob:hun?ter2@127.0.0.1:9",
                 "--protocol", protocol, "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert "is not a valid URL" in err and "hun" not in err and "ter2" not in err
    live = (receiver.http_endpoint if protocol == "http/protobuf" else receiver.grpc_endpoint).replace("://", "://bob:hunter2@")
    if protocol == "http/protobuf":  # gRPC has no user info in its target: only the failure above
        assert main(["export", "otlp", "--db", str(db_path), "--endpoint", live, "--protocol", protocol]) == 0
        out = capsys.readouterr().out
        assert "sent" in out and "hunter2" not in out and "bob:***@" in out
        con = connect(db_path)
        stored = [d for (d,) in con.execute("SELECT DISTINCT destination FROM _export_otlp_sent").fetchall()]
        # the password is neither stored nor anything derived from it (a hash could be guessed back)
        assert stored == [f"{protocol} {live.replace('hunter2', '***')}/v1/traces"]
        # A database that stored the key with its password (before m018) has it hidden, under
        # the key this version uses: nothing is sent again.
        con.execute("UPDATE _export_otlp_sent SET destination = ?", [f"{protocol} {live}/v1/traces"])
        con.execute("DELETE FROM _schema_migrations WHERE name = 'm018_export_destinations_without_passwords'")
        con.close()
        con = connect(db_path)
        assert [d for (d,) in con.execute("SELECT DISTINCT destination FROM _export_otlp_sent").fetchall()] == stored
        con.close()
        assert main(["export", "otlp", "--db", str(db_path), "--endpoint", live, "--protocol", protocol]) == 0
        assert "sent 0 spans" in capsys.readouterr().out
        # a new password is the same destination; two users of one collector stay two
        assert main(["export", "otlp", "--db", str(db_path), "--endpoint", live.replace("hunter2", "n3w-pass"),
                     "--protocol", protocol]) == 0
        assert "sent 0 spans" in capsys.readouterr().out
        other = live.replace("bob:hunter2", "eve:hunter3")
        assert main(["export", "otlp", "--db", str(db_path), "--endpoint", other, "--protocol", protocol]) == 0
        assert "sent 0 spans" not in capsys.readouterr().out
    assert main(["export", "otlp", "--db", str(db_path), "--header", "Authorization: Bearer s3cr3t", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--header wants KEY=VALUE" in err and "s3cr3t" not in err


def test_a_malformed_headers_variable_is_refused_without_quoting_it(db_path, capfd, monkeypatch):
    con = connect(db_path)
    add_session(con, scenario("plain"))
    con.close()
    # OpenTelemetry's own rules decide: no '=', or a key with ':' (a base64 token ends in '=')
    for value in ("x-team=a,Authorization Bearer s3cr3t", "Authorization: Bearer s3cr3t=="):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", value)
        assert main(["export", "otlp", "--db", str(db_path), "--endpoint", dead_endpoint(), "--dry-run"]) == 2
        out, err = capfd.readouterr()  # the file descriptors: a logging warning would land there too
        assert "$OTEL_EXPORTER_OTLP_HEADERS holds an entry that is not KEY=VALUE" in err
        assert "s3cr3t" not in out + err
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", " a = b , ,c=d%3De")  # valid, spaces and all
    assert main(["export", "otlp", "--db", str(db_path), "--endpoint", dead_endpoint(), "--dry-run"]) == 0
    # refused even where OpenTelemetry's warnings were turned off (the entry would vanish)
    quiet = logging.getLogger("opentelemetry")
    monkeypatch.setattr(quiet, "level", logging.ERROR)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer s3cr3t,x=1")
    assert main(["export", "otlp", "--db", str(db_path), "--endpoint", dead_endpoint(), "--dry-run"]) == 2
    assert "s3cr3t" not in "".join(capfd.readouterr())


def test_export_leaves_the_garbage_collector_as_it_found_it(con, receiver):
    import gc

    if gc.get_freeze_count():
        pytest.skip("this process froze objects before the test")
    export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint))
    assert gc.get_freeze_count() == 0  # what the export froze was handed back
    gc.freeze()  # as a pre-fork server would: the export must not undo it
    try:
        report = export_otlp(con, OtlpExportOptions(endpoint=receiver.http_endpoint, resend_all=True))
        assert report.sessions == 14
        assert gc.get_freeze_count() > 0  # an unfreeze() by the export would have emptied it
    finally:
        gc.unfreeze()


def test_upgrade_merges_destinations_that_differed_only_by_password(db_path):
    """Before m018 the key held the password: one changed meant a second key, for the same
    collector and user. Both become `user:***@`, one row per session, the latest sent kept."""
    new = "http/protobuf http://u:***@h:4318/v1/traces"
    plain = "http/protobuf http://h:4318/v1/traces"
    con = connect(db_path)
    con.executemany("INSERT INTO _export_otlp_sent VALUES (?, ?, ?, ?, ?, ?)", [
        ("http/protobuf http://u:old@h:4318/v1/traces", "s1", "client", "v1", 3, "2026-11-01 00:00:00+00"),
        ("http/protobuf http://u:new@h:4318/v1/traces", "s1", "client", "v2", 4, "2026-11-02 00:00:00+00"),
        ("http/protobuf http://u:old@h:4318/v1/traces", "s2", "server", "v3", 5, "2026-11-01 00:00:00+00"),
        (new, "s3", "server", "v4", 6, "2026-11-03 00:00:00+00"),  # already under the new key
        (plain, "s1", "client", "v5", 7, "2026-11-01 00:00:00+00"),  # no password: left as it is
    ])
    con.execute("DELETE FROM _schema_migrations WHERE name = 'm018_export_destinations_without_passwords'")
    con.close()
    con = connect(db_path)  # the upgrade runs here: it must not fail on the merged keys
    rows = con.execute("SELECT destination, session_id, side, version, spans FROM _export_otlp_sent ORDER BY ALL").fetchall()
    con.close()
    assert rows == [(plain, "s1", "client", "v5", 7), (new, "s1", "client", "v2", 4),
                    (new, "s2", "server", "v3", 5), (new, "s3", "server", "v4", 6)]
