"""Withdrawal and erasure on the service: nothing erased remains, exactly what was named goes, a crash finishes it."""

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest

from linkage.encodings import read_encodings
from linkage.service.erasure import STEPS, expire_uploads, token_sha256
from linkage.service.store import LinkageStore
from server.app import create_app
from stats.store import StatsStore
from tests.helpers import (
    ADMIN,
    ROOT,
    TestClient,
    bearer,
    create_project,
    dump_tables,
    example_document,
    found_in_folder,
    found_in_postgres_pages,
    put_attributes,
    put_encodings,
    record_bytes,
    store_urls,
    upload_all,
)


def link(client, project_id):
    """Queue a run as the administrator and run it here; its status."""
    run = client.post(f"/projects/{project_id}/runs", headers=ADMIN).json()
    assert client.app.state.worker.run_pending() == 1
    return client.get(f"/projects/{project_id}/runs/{run['run_id']}", headers=ADMIN).json()


def linked_project(client, agencies):
    """A project with every party's uploads and one done run: (project id, credentials)."""
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    assert link(client, project_id)["status"] == "done"
    return project_id, credentials


def all_tables(config):
    return "\n".join(dump_tables(url, schema) for url, schema in store_urls(config))


def stored_pages(config, tokens):
    """On PostgreSQL, which relations of both sides' schemas hold a token in their pages (dead rows too)."""
    if config.database_url is None:
        return []
    return found_in_postgres_pages(config.database_url, [config.linkage_schema, config.stats_schema], tokens)


def mapping_tokens(client, project_id, party):
    """The party's tokens in the statistics side's mapping and in the linkage side's latest entities."""
    stats = client.app.state.stats_store
    store = client.app.state.linkage_store
    mapped = {token for _, p, token in stats.mapping(project_id) if p == party}
    latest = store.latest_done_run(project_id)
    linked = {token for chunk in store.entity_rows(latest.id) for _, p, token in chunk if p == party}
    return mapped, linked


def test_remove_party_leaves_no_byte_of_its_encodings_tokens_or_attributes(backend_config, agencies):
    config = backend_config(run_worker=False)
    haven_tokens, haven_bytes = record_bytes(agencies["haven"], [agencies["msd"], agencies["police"]])
    msd_tokens, _ = record_bytes(agencies["msd"])
    with TestClient(create_app(config)) as client:
        project_id, credentials = linked_project(client, agencies)
        before = all_tables(config)
        assert sum(token in before for token in haven_tokens) > len(haven_tokens) / 2, "the search finds them"
        assert found_in_folder(config.data_dir, haven_tokens, haven_bytes), "the search finds them"
        if config.database_url is not None:
            assert stored_pages(config, haven_tokens), "the search finds them"

        response = client.delete(f"/projects/{project_id}/parties/haven", headers=ADMIN)
        assert response.status_code == 200, response.text
        erasure = response.json()
        assert (erasure["kind"], erasure["party"], erasure["status"]) == ("party", "haven", "done")
        assert f"removed party haven: {len(haven_tokens)} encodings record(s)" in erasure["summary"]

        # Grepped while the server runs: the SQLite files and their write-ahead logs as they are.
        assert found_in_folder(config.data_dir, haven_tokens, haven_bytes) == []
        # PostgreSQL keeps deleted rows' bytes in its pages until they are rewritten: none may be left.
        assert stored_pages(config, haven_tokens) == []
        after = all_tables(config)
        assert [token for token in haven_tokens if token in after] == []
        assert all(token in after for token in msd_tokens), "the other parties' data is kept"

        # Its credential is gone on both sides; the others link without it.
        haven = credentials["haven"]
        assert client.get(f"/projects/{project_id}", headers=bearer(haven)).status_code == 401
        assert put_attributes(client, project_id, haven, b"token,consent\n").status_code == 401
        parties = client.get(f"/projects/{project_id}", headers=ADMIN).json()["parties"]
        assert {p["id"]: p["removed"] for p in parties} == {"msd": False, "police": False, "haven": True}
        assert link(client, project_id)["status"] == "done"
        shared = client.get(f"/projects/{project_id}/results", headers=bearer(credentials["msd"])).json()
        assert shared["records"] and all(r["shared_with"] == ["police"] for r in shared["records"])
        again = client.delete(f"/projects/{project_id}/parties/haven", headers=ADMIN)
        assert again.status_code == 409 and "removed from project" in again.json()["message"]

        lines = client.get("/audit", params={"project_id": project_id}, headers=ADMIN).json()["entries"]
        erasures = [(line["action"], line["outcome"]) for line in lines if line["action"].startswith("erasure")]
        assert erasures == [("erasure.party", "started"), ("erasure.party", "done")]
        assert client.get("/audit/verify", headers=ADMIN).json()["ok"]
    assert [token for token in haven_tokens if token in all_tables(config)] == []


def test_delete_project_erases_every_party_and_keeps_the_ledger_and_audit(backend_config, agencies):
    config = backend_config(run_worker=False)
    tokens, pieces = [], []
    for party in ("msd", "police", "haven"):
        party_tokens, party_bytes = record_bytes(agencies[party])
        tokens += party_tokens
        pieces += party_bytes
    with TestClient(create_app(config)) as client:
        project_id, credentials = linked_project(client, agencies)
        analyst = bearer(credentials["analyst"])
        asked = client.post(f"/projects/{project_id}/queries", json={"query": "count --rho 0.01"}, headers=analyst)
        assert asked.status_code == 200, asked.text
        spent = client.get(f"/projects/{project_id}/budget", headers=ADMIN).json()

        response = client.delete(f"/projects/{project_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert "encodings of 3 party(ies)" in response.json()["summary"]

        assert found_in_folder(config.data_dir, tokens, pieces) == []
        assert stored_pages(config, tokens) == []
        assert [token for token in tokens if token in all_tables(config)] == []
        assert list((config.data_dir / "blobs").iterdir()) == []
        gone = client.get(f"/projects/{project_id}", headers=ADMIN)
        assert gone.status_code == 404 and "was deleted by admin" in gone.json()["message"]
        assert client.get(f"/projects/{project_id}/budget", headers=analyst).status_code == 401
        # What was released, and when, is kept; and the chains still hold.
        kept = client.get(f"/projects/{project_id}/budget", headers=ADMIN).json()
        assert kept["spent"] == spent["spent"] and kept["releases"] == spent["releases"]
        assert client.get("/audit/verify", headers=ADMIN).json()["ok"]
        actions = [line["action"] for line in client.get("/audit", headers=ADMIN).json()["entries"]]
        assert "statistics.query" in actions and actions.count("erasure.project") == 2


def test_withdraw_removes_exactly_the_named_tokens(backend_config, agencies):
    config = backend_config(run_worker=False)
    with TestClient(create_app(config)) as client:
        project_id, credentials = linked_project(client, agencies)
        msd = credentials["msd"]
        mapped, linked = mapping_tokens(client, project_id, "msd")
        held = [token.tobytes().hex() for token in read_encodings(agencies["msd"]).records["token"]]
        # Some withdrawn records are linked to others, some are not.
        named = sorted(linked)[:4] + sorted(set(held) - linked)[:3]
        blob_before = client.app.state.linkage_store.uploads(project_id)["msd"].body_sha256

        response = client.post(f"/projects/{project_id}/withdrawals", json={"tokens": named}, headers=bearer(msd))
        assert response.status_code == 200, response.text
        assert f"withdrew 7 record(s) of party msd, {len(held) - 7} left" in response.json()["summary"]

        store, stats = client.app.state.linkage_store, client.app.state.stats_store
        upload = store.uploads(project_id)["msd"]
        stored = read_encodings(store.blob_path(upload.body_sha256)).records["token"]
        assert sorted(token.tobytes().hex() for token in stored) == sorted(set(held) - set(named))
        assert upload.record_count == len(held) - 7
        assert not store.blob_path(blob_before).exists()
        assert set(stats.attribute_values(project_id, "msd")) == set(held) - set(named)
        assert mapping_tokens(client, project_id, "msd") == (mapped - set(named), linked - set(named))
        for party in ("police", "haven"):
            assert len(stats.attribute_values(project_id, party)) == len(read_encodings(agencies[party]).records)

        # The audit log names them by SHA-256 only; the journal forgot the tokens.
        text = json.dumps(client.get("/audit", headers=ADMIN).json())
        assert all(token_sha256(token) in text for token in named)
        assert not any(token in text for token in named)
        assert store.erasures(project_id)[0].tokens == ()
        assert [token for token in named if token in all_tables(config)] == []
        # Not in the files either: the journal held them while it ran, the entities before.
        assert found_in_folder(config.data_dir, named, []) == []
        assert stored_pages(config, named) == []

        # The next run links only what is left, and the statistics agree with it.
        assert link(client, project_id)["status"] == "done"
        mapped_after, linked_after = mapping_tokens(client, project_id, "msd")
        assert not (mapped_after | linked_after) & set(named)
        assert mapped_after and linked_after


def test_a_withdrawal_leaves_no_byte_of_the_withdrawn_records_on_disk(config, agencies):
    # The journal line keeps the tokens until the erasure is done; it was rewritten without
    # them after the databases were compacted, so the write-ahead log held the new line and
    # linkage.db the old one, tokens in clear, until some later checkpoint.
    made = config(run_worker=False)
    with TestClient(create_app(made)) as client:
        project_id, credentials = linked_project(client, agencies)
        tokens, pieces = record_bytes(agencies["haven"], [agencies["msd"], agencies["police"]])
        named = sorted(tokens)[:3]
        chosen = [piece for piece in pieces if piece in {bytes.fromhex(token) for token in named}]
        response = client.post(
            f"/projects/{project_id}/withdrawals", json={"tokens": named}, headers=bearer(credentials["haven"])
        )
        assert response.status_code == 200, response.text
        assert found_in_folder(made.data_dir, named, chosen) == []


def test_withdraw_refuses_tokens_that_are_not_the_partys_and_changes_nothing(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    police = [token.tobytes().hex() for token in read_encodings(agencies["police"]).records["token"]][:2]
    msd = [token.tobytes().hex() for token in read_encodings(agencies["msd"]).records["token"]][:3]
    before = client.app.state.linkage_store.uploads(project_id)["msd"]
    response = client.post(
        f"/projects/{project_id}/withdrawals", json={"tokens": [*msd, *police]}, headers=bearer(credentials["msd"])
    )
    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("2 of the 5 tokens sent are not records of the encodings party 'msd'")
    assert "number 4, 5 of those sent" in body["message"] and "nothing was withdrawn" in body["message"]
    assert "keymap.csv written with the encodings you uploaded last" in body["problems"][0]
    assert client.app.state.linkage_store.uploads(project_id)["msd"] == before
    every = [token.tobytes().hex() for token in read_encodings(agencies["haven"]).records["token"]]
    response = client.post(
        f"/projects/{project_id}/withdrawals", json={"tokens": every}, headers=bearer(credentials["haven"])
    )
    assert response.status_code == 409 and "remove-party" in response.json()["message"]


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("msd", "DELETE", "/projects/{project}/parties/police"),
        ("msd", "DELETE", "/projects/{project}/parties/msd"),
        ("msd", "DELETE", "/projects/{project}"),
        ("analyst", "DELETE", "/projects/{project}/parties/police"),
        ("analyst", "DELETE", "/projects/{project}"),
        ("analyst", "POST", "/projects/{project}/withdrawals"),
        ("other", "POST", "/projects/{project}/withdrawals"),
        ("admin", "POST", "/projects/{project}/withdrawals"),
        ("msd", "POST", "/projects/{project}/expire"),
        ("analyst", "POST", "/projects/{project}/expire"),
    ],
)
def test_wrong_callers_are_refused_with_403(client, agencies, role, method, path):
    project_id, credentials = create_project(client)
    _, other = create_project(client)
    token = {"admin": ADMIN["Authorization"][7:], "other": other["msd"]}.get(role) or credentials[role]
    msd_token = read_encodings(agencies["msd"]).records["token"][0].tobytes().hex()
    response = client.request(
        method, path.format(project=project_id), json={"tokens": [msd_token]}, headers=bearer(token)
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"


# -- kill -9 during an erasure ------------------------------------------------------------

ERASER = """
import json
import sys
from pathlib import Path
from linkage.service.erasure import remove_party, withdraw_records
from linkage.service.store import LinkageStore
from stats.store import StatsStore

data_dir, url, linkage_schema, stats_schema, project_id, stop_at, tokens = sys.argv[1:]
url = url or None
store = LinkageStore(Path(data_dir), url, schema=linkage_schema)
stats = StatsStore(Path(data_dir), url, schema=stats_schema)


def on_progress(done, total):
    if done == int(stop_at):
        print(f"at {done}/{total}", flush=True)
        sys.stdin.readline()  # wait here until killed


if tokens:
    withdraw_records(store, stats, project_id, "msd", json.loads(tokens), actor="party:msd", on_progress=on_progress)
else:
    remove_party(store, stats, project_id, "haven", actor="admin", on_progress=on_progress)
print("finished", flush=True)
"""


def erase_and_kill(config, database_url, project_id, stop_at, tokens=()):
    """Run an erasure in a subprocess and kill -9 it when it reaches step ``stop_at`` (it waits there)."""
    arguments = [str(config.data_dir), database_url or "", config.linkage_schema, config.stats_schema, project_id]
    eraser = subprocess.Popen(  # noqa: S603 - the test's own script
        [sys.executable, "-c", ERASER, *arguments, str(stop_at), json.dumps(list(tokens)) if tokens else ""],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert eraser.stdout.readline().strip() == f"at {stop_at}/{STEPS}"
        os.kill(eraser.pid, signal.SIGKILL)
        assert eraser.wait(30) == -signal.SIGKILL
    finally:
        if eraser.poll() is None:
            eraser.kill()
        eraser.stdin.close()
        eraser.stdout.close()


# Every step on SQLite; on PostgreSQL before the journal line, between the two sides' transactions,
# and between the journal's "done" and the rewrite of the databases (the deleted rows' bytes still there).
KILL_POINTS = [
    *(("sqlite", step) for step in range(STEPS)),
    *(pytest.param("postgres", step, marks=pytest.mark.postgres) for step in (0, 2, STEPS - 1)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("database_url", "stop_at"), KILL_POINTS, indirect=["database_url"])
def test_a_kill_during_remove_party_leaves_it_done_or_not_started(backend_config, database_url, agencies, stop_at):
    config = backend_config(run_worker=False)
    haven_tokens, haven_bytes = record_bytes(agencies["haven"], [agencies["msd"], agencies["police"]])
    with TestClient(create_app(config)) as client:
        project_id, _ = linked_project(client, agencies)
    erase_and_kill(config, database_url, project_id, stop_at)

    store = LinkageStore(config.data_dir, database_url, schema=config.linkage_schema)
    stats = StatsStore(config.data_dir, database_url, schema=config.stats_schema)
    try:
        pending = store.pending_erasures(project_id)
        if stop_at == 0:
            # Killed before the journal line: not started, nothing erased.
            assert pending == [] and store.erasures(project_id) == []
            assert "haven" in store.uploads(project_id) and stats.attribute_counts(project_id)["haven"]
        elif stop_at == STEPS - 1:
            # Killed after the journal's "done": the rewrite of the databases is still owed.
            assert pending == [] and [e.compaction for e in store.erasures(project_id)] == ["pending"]
            if database_url is not None:
                assert stored_pages(config, haven_tokens), "the deleted rows' bytes are still in the pages"
        else:
            assert [(e.kind, e.party) for e in pending] == [("party", "haven")]
    finally:
        store.close()
        stats.close()

    # The next start finishes what was begun, and only that.
    with TestClient(create_app(config)) as client:
        store = client.app.state.linkage_store
        assert store.pending_erasures(project_id) == []
        tables = all_tables(config)
        if stop_at == 0:
            assert "haven" in store.uploads(project_id)
            assert all(token in tables for token in haven_tokens[:5])
            return
        assert [(e.status, e.compaction) for e in store.erasures(project_id)] == [("done", "done")]
        assert found_in_folder(config.data_dir, haven_tokens, haven_bytes) == []
        assert stored_pages(config, haven_tokens) == []
        assert [token for token in haven_tokens if token in tables] == []
        assert link(client, project_id)["status"] == "done"
        assert client.get("/audit/verify", headers=ADMIN).json()["ok"]


@pytest.mark.slow
def test_a_withdrawal_killed_between_the_two_sides_is_finished_at_the_next_start(config, agencies):
    config = config(run_worker=False)
    with TestClient(create_app(config)) as client:
        project_id, _ = linked_project(client, agencies)
        _, linked = mapping_tokens(client, project_id, "msd")
        attributes = set(client.app.state.stats_store.attribute_values(project_id, "msd"))
    named = sorted(linked)[:3]
    erase_and_kill(config, None, project_id, 2, named)  # the linkage side is done, the statistics side not

    with TestClient(create_app(config)) as client:
        store, stats = client.app.state.linkage_store, client.app.state.stats_store
        assert [(e.kind, e.status, e.tokens) for e in store.erasures(project_id)] == [("withdraw", "done", ())]
        assert set(stats.attribute_values(project_id, "msd")) == attributes - set(named)
        mapped, linked_after = mapping_tokens(client, project_id, "msd")  # the sides agree again
        assert not (mapped | linked_after) & set(named) and linked_after == linked - set(named)
        assert [token for token in named if token in all_tables(config)] == []
        assert len(list((config.data_dir / "blobs").iterdir())) == 3, "the old blob is shredded, the new one kept"
        assert link(client, project_id)["status"] == "done"


def test_statistics_answer_from_the_latest_state_and_the_ledger_is_not_reset(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    analyst = bearer(credentials["analyst"])

    def ask():
        response = client.post(f"/projects/{project_id}/queries", json={"query": "count --rho 0.01"}, headers=analyst)
        assert response.status_code == 200, response.text
        return response.json()

    def budget():
        return client.get(f"/projects/{project_id}/budget", headers=ADMIN).json()

    # The entity table the answers are computed on (the service caches it per data version).
    def people():
        return client.app.state.query_service._table(project_id)[1]

    ask()
    before, spent = people(), budget()
    _, linked = mapping_tokens(client, project_id, "msd")
    held = [token.tobytes().hex() for token in read_encodings(agencies["msd"]).records["token"]]
    alone = sorted(set(held) - linked)[:5]  # each is a row of its own
    response = client.post(
        f"/projects/{project_id}/withdrawals", json={"tokens": alone}, headers=bearer(credentials["msd"])
    )
    assert response.status_code == 200, response.text
    assert people().height == before.height - 5
    assert budget()["spent"] == spent["spent"] and len(budget()["releases"]) == 1

    ask()
    assert client.delete(f"/projects/{project_id}/parties/haven", headers=ADMIN).status_code == 200
    after = people()
    assert not after["member:haven"].any() and after.height < before.height - 5
    answer = ask()
    assert any("haven was removed from the project on" in note for note in answer["notes"])
    assert not any("no attributes from haven" in note for note in answer["notes"])
    ledger = budget()
    assert len(ledger["releases"]) == 3, "the budget is the project's, across withdrawals and removals"
    assert ledger["spent"]["rho"] == pytest.approx(0.03)


def test_an_upload_older_than_the_retention_expires_and_the_party_may_upload_again(client, agencies):
    document = example_document()
    document["releases"].setdefault("safeguards", {})["upload_retention_days"] = 30
    project_id, credentials = create_project(client, document)

    def upload(party):
        out = agencies[party]
        assert put_encodings(client, project_id, credentials[party], (out / "encodings.pprl").read_bytes()).is_success
        assert put_attributes(client, project_id, credentials[party], (out / "attributes.csv").read_bytes()).is_success

    for party in ("haven", "msd", "police"):  # haven's upload is the oldest
        upload(party)
    assert link(client, project_id)["status"] == "done"
    fresh = client.post(f"/projects/{project_id}/expire", headers=ADMIN)
    assert fresh.status_code == 200 and fresh.json() == {"erasures": []}

    store, stats = client.app.state.linkage_store, client.app.state.stats_store
    uploads = store.uploads(project_id)
    oldest, next_oldest = uploads["haven"].uploaded_at, uploads["msd"].uploaded_at
    assert oldest < next_oldest
    at = oldest + timedelta(days=30) + (next_oldest - oldest) / 2
    expired = expire_uploads(store, stats, project_id, actor="admin", at=at)
    assert [(e.kind, e.party, e.status) for e in expired] == [("expire", "haven", "done")]
    assert "older than the protocol's 30 days" in expired[0].summary
    tokens, pieces = record_bytes(agencies["haven"], [agencies["msd"], agencies["police"]])
    assert found_in_folder(client.app.state.config.data_dir, tokens, pieces) == []
    assert [token for token in tokens if token in all_tables(client.app.state.config)] == []

    # Runs wait for haven again; its credential still works, and it uploads afresh.
    waiting = client.post(f"/projects/{project_id}/runs", headers=ADMIN)
    assert waiting.status_code == 409 and "waiting for encodings from haven" in waiting.json()["message"]
    upload("haven")
    assert link(client, project_id)["status"] == "done"
    parties = client.get(f"/projects/{project_id}", headers=ADMIN).json()["parties"]
    assert not any(p["removed"] for p in parties)


def test_expiry_needs_a_retention_in_the_protocol(client):
    project_id, _ = create_project(client)
    response = client.post(f"/projects/{project_id}/expire", headers=ADMIN)
    assert response.status_code == 409
    assert "declares no releases.safeguards.upload_retention_days, so no upload expires" in response.json()["message"]


def test_no_erasure_while_a_run_is_queued_and_no_run_while_erasing(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    blobs = sorted((client.app.state.config.data_dir / "blobs").iterdir())
    assert client.post(f"/projects/{project_id}/runs", headers=ADMIN).status_code == 202
    msd_token = read_encodings(agencies["msd"]).records["token"][0].tobytes().hex()
    refused = client.post(
        f"/projects/{project_id}/withdrawals", json={"tokens": [msd_token]}, headers=bearer(credentials["msd"])
    )
    assert refused.status_code == 409 and "is queued; erase when it is done" in refused.json()["message"]
    assert sorted((client.app.state.config.data_dir / "blobs").iterdir()) == blobs, "the new blob was shredded"
    assert client.delete(f"/projects/{project_id}/parties/haven", headers=ADMIN).status_code == 409
    assert client.app.state.worker.run_pending() == 1

    store = client.app.state.linkage_store
    store.begin_erasure(project_id, "party", "admin", party="haven", summary="test: left pending")
    waiting = client.post(f"/projects/{project_id}/runs", headers=ADMIN)
    assert waiting.status_code == 409 and "an erasure (party) of this project is under way" in waiting.json()["message"]
