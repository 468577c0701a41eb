"""The run worker: a project's first run freezes its model, and the statistics side gets the stable mapping."""

from linkage.service.worker import sync_mappings
from server.app import create_app
from tests.helpers import TestClient, bearer, create_project, upload_all


def test_the_first_run_freezes_the_model_and_every_run_hands_on_the_stable_mapping(backend_config, agencies):
    with TestClient(create_app(backend_config(run_worker=False))) as client:
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        store, stats, worker = client.app.state.linkage_store, client.app.state.stats_store, client.app.state.worker
        msd = bearer(credentials["msd"])
        assert store.frozen_model(project_id) is None
        first = client.post(f"/projects/{project_id}/runs", headers=msd).json()["run_id"]
        assert worker.run_pending() == 1
        model = store.frozen_model(project_id)
        assert model is not None and model["fingerprint"] == store.project(project_id).fingerprint
        stable = [row for chunk in store.entity_rows(first, stable=True) for row in chunk]
        assert stable and sorted(stats.mapping(project_id)) == sorted(stable)
        # Two or three parties: the stable mapping is the greedy solver's entities.
        assert stable == [row for chunk in store.entity_rows(first) for row in chunk]

        second = client.post(f"/projects/{project_id}/runs", headers=msd).json()["run_id"]
        assert worker.run_pending() == 1
        assert store.frozen_model(project_id) == model, "later runs reuse the frozen model"
        assert [row for chunk in store.entity_rows(second, stable=True) for row in chunk] == stable
        assert list(store.entity_rows(first, stable=True)) == [], "a done run replaces the earlier mappings"
        done = [e for e in store.audit_entries(project_id=project_id) if e.action == "run.done"]
        assert "stable mapping of" in done[-1].detail and "model frozen at threshold" in done[-1].detail

        stats.replace_mapping(project_id, first, [[(1, "msd", "0" * 32)]])
        assert sync_mappings(store, stats) == [project_id]
        assert stats.mapping_run(project_id) == second and sorted(stats.mapping(project_id)) == sorted(stable)
