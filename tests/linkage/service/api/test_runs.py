"""Runs: started only when every party uploaded, never two at once, never lost across restarts."""

from linkage.service.store import MAX_RUN_ATTEMPTS
from server.app import create_app
from tests.helpers import (
    ADMIN,
    PARTIES,
    TestClient,
    bearer,
    create_project,
    entity_groups,
    example_document,
    put_attributes,
    put_encodings,
    read_consent,
    read_keymap_tokens,
    upload_all,
    wait_for_run,
    without_records,
)


def test_a_run_waits_for_every_party_and_is_never_duplicated(client, agencies):
    project_id, credentials = create_project(client)
    msd = bearer(credentials["msd"])
    put_encodings(client, project_id, credentials["msd"], (agencies["msd"] / "encodings.pprl").read_bytes())
    early = client.post(f"/projects/{project_id}/runs", headers=msd)
    assert early.status_code == 409
    assert "waiting for encodings from police, haven" in early.json()["message"]

    upload_all_rest = {party: credentials[party] for party in ("police", "haven")}
    for party, token in upload_all_rest.items():
        assert (
            put_encodings(client, project_id, token, (agencies[party] / "encodings.pprl").read_bytes()).status_code
            == 201
        )
    first = client.post(f"/projects/{project_id}/runs", headers=msd)
    second = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["haven"]))
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["run_id"] == second.json()["run_id"]
    assert first.json()["status"] == "queued"
    assert client.app.state.worker.run_pending() == 1
    done = client.get(f"/projects/{project_id}/runs/{first.json()['run_id']}", headers=msd).json()
    assert done["status"] == "done"
    assert done["progress"] == 1.0
    third = client.post(f"/projects/{project_id}/runs", headers=msd)
    assert third.status_code == 202
    assert third.json()["run_id"] != first.json()["run_id"]


def test_an_unknown_run_or_project_is_404_for_the_administrator(client):
    project_id, _ = create_project(client)
    assert client.get(f"/projects/{project_id}/runs/99", headers=ADMIN).json()["code"] == "not_found"
    assert client.get("/projects/nosuchproject", headers=ADMIN).status_code == 404


def test_data_and_queued_runs_survive_a_restart_and_complete(backend_config, agencies):
    config = backend_config(run_worker=False)
    with TestClient(create_app(config)) as client:
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        run_id = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).json()["run_id"]

    # A new server process on the same data: it has everything, and runs what was queued.
    with TestClient(create_app(backend_config())) as client:
        msd = bearer(credentials["msd"])
        info = client.get(f"/projects/{project_id}", headers=msd).json()
        assert all(p["encodings_uploaded"] and p["attributes_uploaded"] for p in info["parties"])
        run = wait_for_run(client, project_id, run_id, credentials["msd"])
        assert run["status"] == "done", run["message"]
        assert client.get(f"/projects/{project_id}/results", headers=msd).json()["records"]
        again = put_encodings(client, project_id, credentials["msd"], (agencies["msd"] / "encodings.pprl").read_bytes())
        assert again.json()["status"] == "unchanged"


def test_a_run_interrupted_while_running_is_run_again_after_a_restart(backend_config, agencies):
    config = backend_config(run_worker=False)
    with TestClient(create_app(config)) as client:
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        run_id = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).json()["run_id"]
        # The worker claimed it, then the server died before it finished.
        assert client.app.state.linkage_store.claim_next_run().id == run_id
    with TestClient(create_app(config)) as client:
        store = client.app.state.linkage_store
        assert store.run(project_id, run_id).status == "queued"
        assert client.app.state.worker.run_pending() == 1
        run = store.run(project_id, run_id)
        assert (run.status, run.attempts) == ("done", 2)
        assert store.active_run(project_id) is None
        assert client.app.state.stats_store.mapping_run(project_id) == run_id


def test_a_run_interrupted_too_often_fails_with_a_message(config, agencies):
    with TestClient(create_app(config(run_worker=False))) as client:
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        run_id = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).json()["run_id"]
    store = client.app.state.linkage_store
    for _ in range(MAX_RUN_ATTEMPTS):
        assert store.claim_next_run().id == run_id
        store.requeue_interrupted()
    run = store.run(project_id, run_id)
    store.close()  # reopened after the app's lifespan closed it
    assert run.status == "failed"
    assert f"the server stopped during this run {MAX_RUN_ATTEMPTS} times" in run.message


def test_a_failing_run_is_marked_failed_without_server_paths(client, agencies):
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    store = client.app.state.linkage_store
    store.blob_path(store.uploads(project_id)["haven"].body_sha256).unlink()
    run_id = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).json()["run_id"]
    client.app.state.worker.run_pending()
    run = client.get(f"/projects/{project_id}/runs/{run_id}", headers=bearer(credentials["msd"])).json()
    assert run["status"] == "failed"
    assert "the encodings of haven" in run["message"]
    assert str(store.blob_dir) not in run["message"]
    assert client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).status_code == 202


def party_view(client, project_id, run_id, token):
    """Everything a party sees of a run and of the project, minus ids and times."""
    run = client.get(f"/projects/{project_id}/runs/{run_id}", headers=bearer(token)).json()
    project = client.get(f"/projects/{project_id}", headers=bearer(token)).json()
    return {key: run[key] for key in ("status", "progress", "message", "entity_count", "linked_records")}, project


def test_removing_a_client_and_running_again_tells_a_party_nothing_of_other_parties(
    client, agencies, protocol, tmp_path
):
    """The differencing attack of issue 15: msd removes one client police knows (police's consent is
    false), replaces its encodings and runs again; then one client nobody else knows. What msd and
    police can see must not tell the two apart: no counts that depend on other parties' data."""
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    msd = credentials["msd"]
    first = client.post(f"/projects/{project_id}/runs", headers=bearer(msd)).json()["run_id"]
    assert client.app.state.worker.run_pending() == 1
    groups = entity_groups(client.app.state.linkage_store, project_id, first)
    consent = {party: read_consent(agencies[party]) for party in PARTIES}
    police_only = [
        dict(members)["msd"]
        for members in groups.values()
        if sorted(p for p, _ in members) == ["msd", "police"] and not consent["police"][dict(members)["police"]]
    ]
    linked = {token for members in groups.values() for party, token in members if party == "msd"}
    msd_only = sorted(read_keymap_tokens(agencies["msd"]) - linked)
    assert police_only and msd_only, "the data must hold both kinds of client"
    known_to_police, unknown = police_only[0], msd_only[0]
    released = client.get(f"/projects/{project_id}/results", headers=bearer(msd)).json()["records"]
    assert known_to_police not in {item["token"] for item in released}, "no release without police's consent"

    views = {}
    for removed in (known_to_police, unknown):
        folder = without_records(protocol, agencies["msd"], {removed}, tmp_path / removed)
        assert put_encodings(
            client, project_id, msd, (folder / "encodings.pprl").read_bytes(), replace="true"
        ).is_success
        assert put_attributes(
            client, project_id, msd, (folder / "attributes.csv").read_bytes(), replace="true"
        ).is_success
        run_id = client.post(f"/projects/{project_id}/runs", headers=bearer(msd)).json()["run_id"]
        assert client.app.state.worker.run_pending() == 1
        views[removed] = {
            party: party_view(client, project_id, run_id, credentials[party]) for party in ("msd", "police")
        }
        admin = client.get(f"/projects/{project_id}/runs/{run_id}", headers=ADMIN).json()
        assert admin["entity_count"] > 0, "the administrator still sees the counts"
    assert views[known_to_police] == views[unknown]
    for party in ("msd", "police"):
        run, _ = views[unknown][party]
        assert (run["entity_count"], run["linked_records"]) == (None, None)
        assert not any(char.isdigit() for char in run["message"])


def test_a_party_may_run_only_as_often_as_the_protocol_allows_and_reruns_are_flagged(client, agencies, foreign):
    document = example_document()
    document["releases"]["safeguards"] = {"max_runs_per_party": 2}
    project_id, credentials = create_project(client, document)
    upload_all(client, project_id, credentials, agencies)
    msd = bearer(credentials["msd"])
    assert client.post(f"/projects/{project_id}/runs", headers=msd).status_code == 202
    client.app.state.worker.run_pending()
    again = (foreign["again"] / "encodings.pprl").read_bytes()
    assert put_encodings(client, project_id, credentials["msd"], again, replace="true").status_code == 200
    assert client.post(f"/projects/{project_id}/runs", headers=msd).status_code == 202
    client.app.state.worker.run_pending()
    refused = client.post(f"/projects/{project_id}/runs", headers=msd)
    assert refused.status_code == 409
    assert "party:msd has started 2 runs in this project" in refused.json()["message"]
    assert "max_runs_per_party = 2" in refused.json()["message"]
    other = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["haven"]))
    assert other.status_code == 202, "the limit is per party"
    client.app.state.worker.run_pending()
    assert client.post(f"/projects/{project_id}/runs", headers=ADMIN).status_code == 202, "the administrator may"
    lines = [
        (line.actor, line.outcome, line.detail)
        for line in client.app.state.linkage_store.audit_entries(project_id=project_id)
        if line.action == "run.start"
    ]
    assert lines == [
        ("party:msd", "queued", "run 1"),
        ("party:msd", "queued_after_replace", "run 2; encodings replaced since the previous run by msd"),
        ("party:msd", "conflict", lines[2][2]),
        ("party:haven", "queued", "run 3"),
        ("admin", "queued", "run 4"),
    ]


def test_run_ids_are_numbered_per_project(client, agencies):
    first_project, first = create_project(client)
    second_project, second = create_project(client)
    upload_all(client, first_project, first, agencies)
    upload_all(client, second_project, second, agencies)
    one = client.post(f"/projects/{first_project}/runs", headers=bearer(first["msd"])).json()
    two = client.post(f"/projects/{second_project}/runs", headers=bearer(second["msd"])).json()
    assert (one["run_id"], two["run_id"]) == (1, 1), "project B's first run is its run 1"
    client.app.state.worker.run_pending()
    assert client.get(f"/projects/{second_project}/runs/1", headers=bearer(second["haven"])).json()["status"] == "done"
    results = client.get(f"/projects/{second_project}/results", headers=bearer(second["msd"])).json()
    assert results["run_id"] == 1
