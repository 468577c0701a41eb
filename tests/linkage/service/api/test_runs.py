"""Runs: started only when every party uploaded, never two at once, never lost across restarts."""

from linkage.service.store import MAX_RUN_ATTEMPTS
from server.app import create_app
from tests.helpers import (
    ADMIN,
    TestClient,
    bearer,
    create_project,
    put_encodings,
    upload_all,
    wait_for_run,
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
