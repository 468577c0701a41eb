"""The service at the HTTP level: audit floods, rate limits, docs, headers, slow clients, free text, 500s."""

import logging
import socket
import threading

import pytest
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from linkage.service.store import LinkageStore
from linkage.web import RefusalTally
from server.app import create_app
from server.middleware import RateLimit, uvicorn_settings
from tests.helpers import ADMIN, TestClient, bearer, create_project, upload_all


def database_bytes(data_dir):
    return sum(path.stat().st_size for path in data_dir.glob("linkage.db*"))


def test_an_anonymous_flood_with_huge_project_ids_adds_a_few_bounded_audit_lines(config):
    """Issue 15 row 6: 1,009 anonymous requests with 15,000-character ids grew linkage.db by 17.3 MB."""
    made = config(run_worker=False, rate_limit=None)
    app = create_app(made)
    with TestClient(app) as client:
        before = len(app.state.linkage_store.audit_entries(limit=10_000))
        size = database_bytes(made.data_dir)
        for _ in range(1009):
            assert client.get(f"/projects/{'x' * 15_000}/runs/1").status_code == 401
    lines = app.state.linkage_store.audit_entries(limit=10_000)[before:]
    assert len(lines) == 1, [line.detail for line in lines]
    assert lines[0].actor == "anonymous" and lines[0].project_id is None
    assert lines[0].detail.startswith("1009 unauthenticated request(s) refused, from 1 address(es)")
    assert database_bytes(made.data_dir) - size < 200_000
    assert app.state.linkage_store.verify_audit().ok
    app.state.linkage_store.close()  # read after shutdown (the refusals are flushed then): close again


def test_refusals_are_written_per_kind_once_a_window_has_passed():
    now = [0.0]
    written = []
    tally = RefusalTally(60, clock=lambda: now[0])
    for _ in range(3):
        tally.note("run.read", "unauthorized", "10.0.0.1")
    tally.note("audit.read", "unauthorized", "10.0.0.2")
    assert tally.flush(lambda *line: written.append(line)) == 0, "not before the window ends"
    now[0] = 61.0
    assert tally.flush(lambda *line: written.append(line)) == 2
    assert [(line[1], line[4]) for line in written] == [
        ("audit.read", "1 unauthenticated request(s) refused, from 1 address(es), in 61 s"),
        ("run.read", "3 unauthenticated request(s) refused, from 1 address(es), in 61 s"),
    ]
    assert tally.flush(lambda *line: written.append(line), force=True) == 0, "counted once"


def test_each_client_gets_a_token_bucket():
    now = [0.0]
    limit = RateLimit(None, rate=2, burst=3, clock=lambda: now[0])
    assert [limit.take("a") for _ in range(4)] == [0, 0, 0, 0.5]
    assert limit.take("b") == 0, "another client has its own bucket"
    now[0] = 1.0
    assert [limit.take("a") for _ in range(3)] == [0, 0, 0.5]


def test_a_client_over_its_rate_gets_429_and_the_refusals_are_audited_in_bulk(config):
    app = create_app(config(run_worker=False, rate_limit=0.001, rate_burst=3))
    with TestClient(app) as client:
        codes = [client.get("/health").status_code for _ in range(6)]
        refused = client.get("/health")
    assert codes == [200, 200, 200, 429, 429, 429]
    assert refused.json()["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    lines = [line for line in app.state.linkage_store.audit_entries() if line.outcome == "rate_limited"]
    assert len(lines) == 1 and lines[0].detail.startswith("4 unauthenticated request(s) refused")


def test_the_api_description_is_served_only_when_asked_for(config):
    with TestClient(create_app(config(run_worker=False))) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/docs").status_code == 404
        assert client.get("/health").json() == {"status": "ok"}
    with TestClient(create_app(config(run_worker=False, api_docs=True))) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


def test_every_answer_carries_security_headers(config):
    with TestClient(create_app(config(run_worker=False, behind_tls_proxy=True))) as client:
        for response in (client.get("/health"), client.get("/me"), client.get("/nowhere")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
            assert response.headers["strict-transport-security"].startswith("max-age=")
    with TestClient(create_app(config(run_worker=False))) as client:
        assert "strict-transport-security" not in client.get("/health").headers


@pytest.mark.slow
def test_connections_whose_headers_trickle_in_are_closed(config):
    """Issue 15 row 12: 800 slow-header connections stayed open."""
    app = create_app(config(run_worker=False))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = uvicorn_settings(header_timeout=0.5)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started), "the server did not start"
        slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
        for connection in slow:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        closed = [connection.recv(1024) == b"" for connection in slow]
        assert all(closed), f"{closed.count(False)} slow connections were left open"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fine:
            fine.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert fine.recv(1024).startswith(b"HTTP/1.1 200")
        for connection in slow:
            connection.close()
    finally:
        server.should_exit = True
        thread.join(30)


def wait_until(condition, seconds=30.0):
    event = threading.Event()
    for _ in range(int(seconds * 20)):
        if condition():
            return True
        event.wait(0.05)
    return False


def test_a_batch_label_with_a_line_break_is_refused_naming_the_field(client, agencies):
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    client.post(f"/projects/{project_id}/runs", headers=ADMIN)
    client.app.state.worker.run_pending()
    body = {"label": "Q3\n2026-01-01 00:00:00  analyst  forged", "specs": [{"kind": "count", "cost": {"rho": 0.1}}]}
    response = client.post(f"/projects/{project_id}/query-batches", json=body, headers=bearer(credentials["analyst"]))
    assert response.status_code == 422
    assert "label: a line break (U+000A) at character 3" in response.json()["message"]
    assert client.app.state.stats_store.budget(project_id).entries == ()
    line = client.app.state.linkage_store.audit_entries()[-1]
    assert (line.actor, line.action, line.outcome) == ("analyst", "statistics.query_batch", "invalid_request")
    assert "\n" not in line.detail


def test_audit_lines_carry_the_callers_own_project_and_500s_are_audited(client, monkeypatch):
    """Issue 15 row 10."""
    own_project, own = create_project(client)
    other_project, _ = create_project(client)
    refused = client.get(f"/projects/{other_project}/runs/1", headers=bearer(own["msd"]))
    assert refused.status_code == 403
    line = client.app.state.linkage_store.audit_entries()[-1]
    assert (line.actor, line.project_id, line.outcome) == ("party:msd", own_project, "forbidden")
    assert line.detail.startswith(f"asked about project {other_project}")

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(client.app.state.linkage_store, "uploads", broken)
    failing = TestClient(client.app, raise_server_exceptions=False)  # the app is running already
    assert failing.get(f"/projects/{own_project}", headers=bearer(own["haven"])).status_code == 500
    line = client.app.state.linkage_store.audit_entries()[-1]
    assert (line.actor, line.project_id, line.outcome) == ("party:haven", own_project, "internal_error")
    assert line.detail == "RuntimeError"
    assert "disk on fire" not in line.detail


@pytest.mark.parametrize(
    "url",
    [
        "/projects/%00",
        "/projects/{project_id}/serious-threat-requests/%00/results",
        "/audit?project_id=%00",
        "/projects/{project_id}%00/runs/1",
    ],
)
def test_a_nul_character_in_the_url_gets_a_400_before_it_reaches_a_database(backend_config, url):
    # PostgreSQL refuses NUL in text: each of these was a 500, and the server log got the
    # SQL statement with its parameters.
    with TestClient(create_app(backend_config(run_worker=False)), raise_server_exceptions=False) as client:
        project_id, credentials = create_project(client)
        for headers in (ADMIN, bearer(credentials["police"]), {}):
            response = client.get(url.format(project_id=project_id), headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "bad_request"
            assert "NUL character" in response.json()["message"]


def test_database_errors_carry_no_stored_values(backend_config, protocol):
    # A database error's text (logged with the 500's traceback) listed the statement's
    # parameters: tokens, credential hashes, attribute values, protocol text.
    made = backend_config()
    store = LinkageStore(made.data_dir, made.database_url, schema=made.linkage_schema)
    try:
        store.create_project("0123456789abcdef", protocol, {"msd": "f" * 64})
        with pytest.raises(SQLAlchemyError) as raised:
            store.create_project("0123456789abcdef", protocol, {"msd": "e" * 64})
        # (PostgreSQL's own detail still names the duplicate key; the parameters are gone.)
        assert protocol.purpose[:40] not in str(raised.value)
        assert protocol.fingerprint not in str(raised.value)
    finally:
        store.close()


def test_a_500_logs_its_frames_but_not_what_the_database_quoted(backend_config, protocol, monkeypatch, caplog):
    # PostgreSQL's DETAIL quotes the value of a duplicate key ("Key (id)=(...) already
    # exists"), and the 500's traceback carried it into the server log.
    with TestClient(create_app(backend_config(run_worker=False)), raise_server_exceptions=False) as client:
        project_id, credentials = create_project(client)
        store = client.app.state.linkage_store
        taken = "feedfacecafebeef"
        store.create_project(taken, protocol, {"msd": "e" * 64})

        def clash(*_args, **_kwargs):
            store.create_project(taken, protocol, {"msd": "d" * 64})

        monkeypatch.setattr(store, "uploads", clash)
        with caplog.at_level(logging.ERROR, logger="pprl"):
            assert client.get(f"/projects/{project_id}", headers=bearer(credentials["haven"])).status_code == 500
    logged = caplog.text  # with any exc_info the records carry
    assert f"internal error on GET /projects/{project_id}" in logged
    assert "IntegrityError: message withheld" in logged
    assert ", in clash\n" in logged  # the frames are kept
    assert taken not in logged
