"""Every endpoint x every role: who may call what, and that nobody reads another party's tokens."""

import json
import re
from dataclasses import dataclass

import pytest

from server.app import create_app
from tests.helpers import (
    ADMIN,
    CSV,
    EXAMPLE_PROTOCOL,
    OCTET,
    PARTIES,
    TestClient,
    bearer,
    create_project,
    make_factory,
    read_keymap_tokens,
    upload_all,
)

TOKEN = re.compile(r"\b[0-9a-f]{32}\b")
ROLES = ("admin", "msd", "police", "haven", "analyst", "anonymous", "unknown_token", "other_project")


@dataclass
class World:
    client: TestClient
    project_id: str
    credentials: dict
    other_credentials: dict
    run_id: int
    agencies: dict
    shared_police: list
    pending: dict

    def headers(self, role):
        if role == "admin":
            return ADMIN
        if role == "anonymous":
            return {}
        if role == "unknown_token":
            return bearer("pprl_" + "x" * 43)
        if role == "other_project":
            return bearer(self.other_credentials["msd"])
        return bearer(self.credentials[role])

    def own_file(self, role, name):
        party = role if role in PARTIES else "msd"
        return (self.agencies[party] / name).read_bytes()


@pytest.fixture(scope="module")
def world(tmp_path_factory, agencies):
    make, _ = make_factory(tmp_path_factory.mktemp("matrix"), None)
    app = create_app(make(run_worker=False))
    with TestClient(app) as client:
        project_id, credentials = create_project(client)
        _, other_credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        run_id = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"])).json()["run_id"]
        assert app.state.worker.run_pending() == 1
        store = app.state.linkage_store
        shared = [item.token for item in store.shared_records(store.run(project_id, run_id).id, "police")][:5]
        reason = "imminent danger to a person, case 12345"
        pending = {
            status: store.create_threat_request(project_id, "police", shared, reason, status).id
            for status in ("pending", "approved")
        }
        pending["to_refuse"] = store.create_threat_request(project_id, "police", shared, reason, "pending").id
        yield World(client, project_id, credentials, other_credentials, run_id, agencies, shared, pending)


def call(world, endpoint, role):
    client, pid, headers = world.client, world.project_id, world.headers(role)
    if endpoint == "create project":
        return client.post("/projects", json={"protocol": json.loads(EXAMPLE_PROTOCOL.read_text())}, headers=headers)
    if endpoint == "list projects":
        return client.get("/projects", headers=headers)
    if endpoint == "read project":
        return client.get(f"/projects/{pid}", headers=headers)
    if endpoint == "me":
        return client.get("/me", headers=headers)
    if endpoint == "upload encodings":
        body = world.own_file(role, "encodings.pprl")
        return client.put(f"/projects/{pid}/encodings", content=body, headers={**headers, **OCTET})
    if endpoint == "upload attributes":
        body = world.own_file(role, "attributes.csv")
        return client.put(f"/projects/{pid}/attributes", content=body, headers={**headers, **CSV})
    if endpoint == "start run":
        return client.post(f"/projects/{pid}/runs", headers=headers)
    if endpoint == "read run":
        return client.get(f"/projects/{pid}/runs/{world.run_id}", headers=headers)
    if endpoint == "results":
        return client.get(f"/projects/{pid}/results", headers=headers)
    if endpoint == "serious threat":
        body = {"tokens": world.shared_police, "reason": "imminent danger to a person, case 12345"}
        return client.post(f"/projects/{pid}/results/serious-threat", json=body, headers=headers)
    if endpoint == "list threat requests":
        return client.get(f"/projects/{pid}/serious-threat-requests", headers=headers)
    if endpoint == "approve threat request":
        url = f"/projects/{pid}/serious-threat-requests/{world.pending['pending']}/approve"
        return client.post(url, json={"note": "confirmed with the duty inspector"}, headers=headers)
    if endpoint == "refuse threat request":
        url = f"/projects/{pid}/serious-threat-requests/{world.pending['to_refuse']}/refuse"
        return client.post(url, json={"note": "no threat stated"}, headers=headers)
    if endpoint == "fetch threat results":
        url = f"/projects/{pid}/serious-threat-requests/{world.pending['approved']}/results"
        return client.get(url, headers=headers)
    if endpoint == "add analyst":
        body = {"name": f"ana-{role.replace('_', '-')}", "budget": {"rho": 0.2}}
        return client.post(f"/projects/{pid}/analysts", json=body, headers=headers)
    if endpoint == "audit":
        return client.get("/audit", headers=headers)
    if endpoint == "verify audit":
        return client.get("/audit/verify", headers=headers)
    if endpoint == "withdraw":
        # A well-formed token of nobody's: authorised callers get 400 and nothing is erased.
        return client.post(f"/projects/{pid}/withdrawals", json={"tokens": ["0" * 32]}, headers=headers)
    if endpoint == "remove party":
        # A party the protocol does not have: the administrator gets 404 and nothing is erased.
        return client.delete(f"/projects/{pid}/parties/nobody", headers=headers)
    if endpoint == "expire uploads":
        # The example protocol declares no retention: the administrator gets 409.
        return client.post(f"/projects/{pid}/expire", headers=headers)
    if endpoint == "delete project":
        # Another project's id (a party's credential is for this one): the administrator gets 404.
        return client.delete("/projects/0123456789abcdef", headers=headers)
    if endpoint == "health":
        return client.get("/health", headers=headers)
    raise AssertionError(endpoint)


OK = {200}
ALLOWED = {
    "create project": {"admin": {201}},
    "list projects": {"admin": OK},
    "read project": dict.fromkeys(("admin", *PARTIES, "analyst"), OK),
    "me": dict.fromkeys(("admin", *PARTIES, "analyst", "other_project"), OK),
    "upload encodings": dict.fromkeys(PARTIES, OK),
    "upload attributes": dict.fromkeys(PARTIES, OK),
    # The first call queues a run (202); later calls get that run back (200).
    "start run": {role: {200, 202} for role in ("admin", *PARTIES)},
    "read run": dict.fromkeys(("admin", *PARTIES, "analyst"), OK),
    "results": {"msd": OK, "haven": OK},
    "serious threat": {"police": OK},
    # Parties list their own requests (msd and haven have none), the administrator all of them.
    "list threat requests": dict.fromkeys(("admin", *PARTIES), OK),
    "approve threat request": {"admin": OK},
    "refuse threat request": {"admin": OK},
    "fetch threat results": {"police": OK},
    "add analyst": {"admin": {201}},
    "audit": {"admin": OK},
    "verify audit": {"admin": OK},
    "health": dict.fromkeys(ROLES, OK),
    # Erasures for real are in tests/linkage/service/test_erasure.py; here only who may ask.
    "withdraw": dict.fromkeys(PARTIES, {400}),
    "remove party": {"admin": {404}},
    "expire uploads": {"admin": {409}},
    "delete project": {"admin": {404}},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", list(ALLOWED))
def test_endpoint_by_role(world, endpoint, role):
    response = call(world, endpoint, role)
    if role in ("anonymous", "unknown_token") and endpoint != "health":
        expected = {401}
    else:
        expected = ALLOWED[endpoint].get(role, {403})
    assert response.status_code in expected, response.text
    body = response.json()
    if response.status_code >= 400:
        expected_code = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}
        assert body["code"] == expected_code[response.status_code]
        assert body["message"]
    # Nobody ever sees a record token that is not their own: not another party's, not an
    # analyst, not the administrator; and no similarity score is ever released.
    own = read_keymap_tokens(world.agencies[role]) if role in PARTIES else set()
    assert set(TOKEN.findall(response.text)) <= own
    assert not re.search(r'"(score|probability|weight|similarity)', response.text)
    if endpoint in ("results", "serious threat", "fetch threat results") and response.status_code == 200:
        assert body["records"], "the permitted party must get its shared records"
        assert all(role not in item["shared_with"] for item in body["records"])
    if endpoint == "list threat requests" and response.status_code == 200:
        assert all(item["party"] == role for item in body["requests"]) or role == "admin"
