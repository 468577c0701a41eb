"""Analysts through the service: DP answers and the budget, and nothing else."""

import json
from concurrent.futures import ThreadPoolExecutor

from server.app import create_app
from tests.helpers import ADMIN, TestClient, bearer, create_project, upload_all, wait_for_run


def ask(client, project_id, token, **body):
    return client.post(f"/projects/{project_id}/queries", json=body, headers=bearer(token))


def linked_project(client, agencies):
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    started = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"]))
    assert client.app.state.worker.run_pending() == 1, "the `client` fixture runs queued runs in the test"
    run = wait_for_run(client, project_id, started.json()["run_id"], credentials["msd"])
    assert run["status"] == "done", run
    return project_id, credentials


def test_an_analyst_gets_dp_answers_and_the_ledger_records_each(backend_config, agencies):
    with TestClient(create_app(backend_config())) as client:
        project_id, credentials = create_project(client)
        analyst = credentials["analyst"]
        early = ask(client, project_id, analyst, query="count --rho 0.1")
        assert early.status_code == 409 and "no linkage run has finished" in early.json()["message"]
        upload_all(client, project_id, credentials, agencies)
        started = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"]))
        assert wait_for_run(client, project_id, started.json()["run_id"], credentials["msd"])["status"] == "done"

        overlap = ask(client, project_id, analyst, query="overlap --rho 0.2")
        assert overlap.status_code == 200, overlap.text
        body = overlap.json()
        assert body["released"] and body["kind"] == "overlap" and len(body["cells"]) == 7
        assert all(cell["half_width"] > 0 and cell["value"] >= 0 for cell in body["cells"])
        assert "OpenDP discrete Gaussian" in body["mechanism"]
        spec = {"kind": "mean", "attribute": "housed_within_90_days", "by": ["member:police"], "cost": {"rho": 0.1}}
        mean = ask(client, project_id, analyst, spec=spec)
        assert mean.status_code == 200, mean.text
        assert [cell["key"] for cell in mean.json()["cells"]] == [[True], [False]]
        preview = ask(client, project_id, analyst, query="sum weeks_supported --rho 0.5", dry_run=True)
        assert preview.status_code == 200 and preview.json()["released"] is False
        assert preview.json()["cells"][0]["value"] is None

        budget = client.get(f"/projects/{project_id}/budget", headers=bearer(analyst)).json()
        assert [entry["query"] for entry in budget["releases"]] == [
            "overlap --rho 0.2",
            "mean housed_within_90_days --by member:police --rho 0.1",
        ]
        assert budget["remaining"] == {"rho": 0.7}
        refused = ask(client, project_id, analyst, query="count --rho 0.8")
        assert refused.status_code == 409
        assert "only ρ=0.7 of the project's ρ=1 is left" in refused.json()["message"]
        assert client.get(f"/projects/{project_id}/budget", headers=bearer(analyst)).json() == budget
        audit = client.get("/audit", params={"project_id": project_id}, headers=ADMIN).json()["entries"]
        released = [line for line in audit if line["action"] == "statistics.query" and line["outcome"] == "released"]
        assert len(released) == 2
        assert any(line["outcome"] == "budget_exceeded" for line in audit)


def test_only_the_analyst_may_ask_and_parties_see_no_statistics(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    refused = ask(client, project_id, credentials["msd"], query="count --rho 0.1")
    assert refused.status_code == 403 and "only an analyst may ask statistical queries" in refused.json()["message"]
    assert client.get(f"/projects/{project_id}/budget", headers=bearer(credentials["police"])).status_code == 403
    other_id, other = create_project(client)
    assert ask(client, project_id, other["analyst"], query="count --rho 0.1").status_code == 403
    assert client.get(f"/projects/{other_id}/budget", headers=bearer(other["analyst"])).status_code == 200


def test_bad_queries_are_refused_and_spend_nothing(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    analyst = credentials["analyst"]
    cases = [
        ({"query": "count --by city --rho 0.1"}, "unknown attribute 'city'"),
        ({"query": "count --where region=Mars --rho 0.1"}, "category 'Mars' is not declared"),
        ({"query": "sum region --rho 0.1"}, "no bounds to sum over"),
        ({"query": "count --epsilon 0.1"}, "budget is in rho"),
        ({"spec": {"kind": "count"}}, "say what the query may spend"),
        ({"query": "count --rho 0.1", "spec": {"kind": "count"}}, "not both"),
    ]
    for body, message in cases:
        response = client.post(f"/projects/{project_id}/queries", json=body, headers=bearer(analyst))
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["message"]
    malformed = client.post(
        f"/projects/{project_id}/queries", content=b"{", headers={**bearer(analyst), "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    assert client.get(f"/projects/{project_id}/budget", headers=bearer(analyst)).json()["releases"] == []


def test_concurrent_analyst_queries_never_overspend(client, agencies):
    project_id, credentials = linked_project(client, agencies)

    def one(_):
        return ask(client, project_id, credentials["analyst"], query="count --by region --rho 0.15").status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(one, range(10)))
    assert sorted(codes) == [200] * 6 + [409] * 4
    budget = client.get(f"/projects/{project_id}/budget", headers=bearer(credentials["analyst"])).json()
    assert len(budget["releases"]) == 6 and budget["spent"]["rho"] <= 1
    assert json.dumps(budget).count("count --by region") == 6


def test_analysts_see_a_run_finish_but_not_its_exact_counts(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    as_admin = client.get(f"/projects/{project_id}/runs/1", headers=ADMIN).json()
    as_analyst = client.get(f"/projects/{project_id}/runs/1", headers=bearer(credentials["analyst"])).json()
    assert as_admin["entity_count"] > 0 and as_admin["linked_records"] > 0
    assert as_analyst["status"] == "done"
    assert as_analyst["entity_count"] is None and as_analyst["linked_records"] is None
    assert str(as_admin["entity_count"]) in as_admin["message"]
    assert not any(ch.isdigit() for ch in as_analyst["message"])


def test_a_batch_is_released_as_one_spend_or_not_at_all(client, agencies):
    project_id, credentials = linked_project(client, agencies)
    analyst = credentials["analyst"]
    specs = [
        {"kind": "overlap", "cost": {"rho": 0.2}},
        {"kind": "count", "by": ["region"], "cost": {"rho": 0.1}},
    ]
    url = f"/projects/{project_id}/query-batches"
    answered = client.post(url, json={"label": "report 'Q3'", "specs": specs}, headers=bearer(analyst))
    assert answered.status_code == 200, answered.text
    assert [answer["kind"] for answer in answered.json()["answers"]] == ["overlap", "count"]
    budget = client.get(f"/projects/{project_id}/budget", headers=bearer(analyst)).json()
    released = [entry["query"] for entry in budget["releases"]]
    assert released == ["report 'Q3': overlap --rho 0.2; count --by region --rho 0.1"]
    assert budget["remaining"] == {"rho": 0.7}

    too_much = [*specs, {"kind": "count", "cost": {"rho": 0.5}}]
    refused = client.post(url, json={"label": "report 'Q4'", "specs": too_much}, headers=bearer(analyst))
    assert refused.status_code == 409 and "only ρ=0.7" in refused.json()["message"]
    bad = [specs[0], {"kind": "count", "by": ["city"], "cost": {"rho": 0.1}}]
    assert client.post(url, json={"label": "x", "specs": bad}, headers=bearer(analyst)).status_code == 400
    assert client.post(url, json={"label": "x", "specs": []}, headers=bearer(analyst)).status_code == 422
    party = client.post(url, json={"label": "x", "specs": specs}, headers=bearer(credentials["msd"]))
    assert party.status_code == 403
    assert client.get(f"/projects/{project_id}/budget", headers=bearer(analyst)).json() == budget
