"""The serious-threat exception: a few named tokens, a real reason, hashes in the audit, and a second approver."""

import hashlib

import pytest

from tests.helpers import ADMIN, bearer, create_project, entity_groups, example_document, upload_all

REASON = "credible threat to a child reported by her teacher, file 2231"


def linked(client, agencies, **safeguards):
    document = example_document()
    if safeguards:
        document["releases"]["safeguards"] = safeguards
    project_id, credentials = create_project(client, document)
    upload_all(client, project_id, credentials, agencies)
    run_id = client.post(f"/projects/{project_id}/runs", headers=ADMIN).json()["run_id"]
    assert client.app.state.worker.run_pending() == 1
    groups = entity_groups(client.app.state.linkage_store, project_id, run_id)
    shared = sorted(token for members in groups.values() for party, token in members if party == "police")
    return project_id, bearer(credentials["police"]), shared


def ask(client, project_id, police, tokens, reason=REASON):
    body = {"tokens": tokens, "reason": reason}
    return client.post(f"/projects/{project_id}/results/serious-threat", json=body, headers=police)


def test_a_request_names_a_few_tokens_not_a_whole_client_list(client, agencies):
    project_id, police, shared = linked(client, agencies)
    bulk = ask(client, project_id, police, shared[:6])
    assert bulk.status_code == 400
    assert "6 named, but the protocol allows at most 5 per serious-threat request" in bulk.json()["message"]
    assert ask(client, project_id, police, shared[:5]).status_code == 200
    project_id, police, shared = linked(client, agencies, serious_threat_max_tokens=2)
    assert ask(client, project_id, police, shared[:3]).status_code == 400
    assert ask(client, project_id, police, shared[:2]).status_code == 200


@pytest.mark.parametrize(
    ("reason", "status", "message"),
    [
        ("x" * 20, 400, "20 letters in 1 different word(s)"),
        (" " * 20, 400, "0 letters in 0 different word(s)"),
        ("\u200b" * 20, 400, "0 letters in 0 different word(s)"),
        ("\u200bthreat\u200b " * 5, 400, "30 letters in 1 different word(s)"),
        ("ab cd ef gh ij kl mn op qr st", 200, ""),
        ("threat\n2026-01-01 admin forged line", 422, "reason: a line break (U+000A) at character 7"),
        ("threat to life of a person \u202e", 422, "a control or layout character (U+202E)"),
    ],
    ids=["xs", "spaces", "zero-width", "one-word", "short-words", "line-break", "bidi"],
)
def test_a_reason_must_say_something(client, agencies, reason, status, message):
    project_id, police, shared = linked(client, agencies)
    response = ask(client, project_id, police, shared[:1], reason)
    assert response.status_code == status, response.text
    assert message in response.text


def test_the_audit_names_each_token_by_its_hash_and_the_reason(client, agencies):
    project_id, police, shared = linked(client, agencies)
    assert ask(client, project_id, police, shared[:3]).status_code == 200
    lines = [line for line in client.app.state.linkage_store.audit_entries() if line.action == "results.serious_threat"]
    assert len(lines) == 1
    for token in shared[:3]:
        assert hashlib.sha256(token.encode()).hexdigest() in lines[0].detail
        assert token not in lines[0].detail
    assert REASON in lines[0].detail
    assert "3 token(s) named" in lines[0].detail


def test_with_a_second_approver_nothing_is_released_until_the_administrator_approves(client, agencies):
    project_id, police, shared = linked(client, agencies, serious_threat_approval=True)
    pending = ask(client, project_id, police, shared[:2])
    assert pending.status_code == 202, pending.text
    assert "records" not in pending.json()
    request_id = pending.json()["request_id"]
    assert pending.json()["status"] == "pending"
    assert pending.json()["token_sha256"] == [hashlib.sha256(t.encode()).hexdigest() for t in shared[:2]]
    fetch = f"/projects/{project_id}/serious-threat-requests/{request_id}/results"
    early = client.get(fetch, headers=police)
    assert early.status_code == 409 and "waits for the administrator" in early.json()["message"]
    listed = client.get(f"/projects/{project_id}/serious-threat-requests", headers=ADMIN).json()["requests"]
    assert [(item["request_id"], item["status"], item["token_count"]) for item in listed] == [
        (request_id, "pending", 2)
    ]
    assert shared[0] not in str(listed), "the administrator never sees the tokens"

    decide = f"/projects/{project_id}/serious-threat-requests/{request_id}"
    assert client.post(f"{decide}/approve", json={"note": "ok"}, headers=police).status_code == 403
    approved = client.post(f"{decide}/approve", json={"note": "confirmed with the duty inspector"}, headers=ADMIN)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert client.post(f"{decide}/approve", json={}, headers=ADMIN).status_code == 409, "decided once"
    released = client.get(fetch, headers=police)
    assert released.status_code == 200, released.text
    assert {item["token"] for item in released.json()["records"]} <= set(shared[:2])
    assert released.json()["records"]
    again = client.get(fetch, headers=police)
    assert again.status_code == 409 and "fetched already" in again.json()["message"]

    refused_id = ask(client, project_id, police, shared[2:3]).json()["request_id"]
    refused = client.post(
        f"/projects/{project_id}/serious-threat-requests/{refused_id}/refuse",
        json={"note": "no threat described"},
        headers=ADMIN,
    )
    assert refused.json()["status"] == "refused"
    denied = client.get(f"/projects/{project_id}/serious-threat-requests/{refused_id}/results", headers=police)
    assert denied.status_code == 403 and "no threat described" in denied.json()["message"]

    steps = [
        (line.actor, line.action, line.outcome)
        for line in client.app.state.linkage_store.audit_entries(project_id=project_id)
        if "serious_threat" in line.action
    ]
    assert steps == [
        ("party:police", "results.serious_threat", "pending"),
        ("party:police", "serious_threat.fetch", "conflict"),
        ("party:police", "serious_threat.approve", "forbidden"),
        ("admin", "serious_threat.approve", "approved"),
        ("admin", "serious_threat.approve", "conflict"),
        ("party:police", "serious_threat.fetch", "released"),
        ("party:police", "serious_threat.fetch", "conflict"),
        ("party:police", "results.serious_threat", "pending"),
        ("admin", "serious_threat.refuse", "refused"),
        ("party:police", "serious_threat.fetch", "forbidden"),
    ]


def test_requests_of_five_cannot_add_up_to_a_bulk_download(client, agencies):
    # The red team's attack: police, refused record-level results, named its whole list five
    # tokens at a time with one reason, and every request was released at once.
    project_id, police, shared = linked(client, agencies)
    mine = client.app.state.linkage_store
    answers = [ask(client, project_id, police, shared[i : i + 5]) for i in range(0, 20, 5)]
    assert [answer.status_code for answer in answers] == [200, 200, 202, 202]
    assert "records" not in answers[2].json() and answers[2].json()["status"] == "pending"
    # A token named again counts once: asking about the same people again is not more of the list.
    assert ask(client, project_id, police, shared[3:8]).status_code == 200
    lines = [line for line in mine.audit_entries(project_id=project_id) if line.action == "results.serious_threat"]
    assert [line.outcome for line in lines] == ["ok", "ok", "pending", "pending", "ok"]
    assert "10 token(s) released without approval in the last 30 days" in lines[2].detail
    assert "serious_threat_tokens_per_30_days" in lines[2].detail
    # What waits is released only once the administrator approves it, and approving does not use the allowance.
    request_id = answers[2].json()["request_id"]
    decide = f"/projects/{project_id}/serious-threat-requests/{request_id}/approve"
    assert client.post(decide, json={"note": "confirmed"}, headers=ADMIN).status_code == 200
    fetched = client.get(f"/projects/{project_id}/serious-threat-requests/{request_id}/results", headers=police)
    assert fetched.status_code == 200
    assert ask(client, project_id, police, shared[:2]).status_code == 200


def test_the_allowance_is_the_protocols(client, agencies):
    project_id, police, shared = linked(client, agencies, serious_threat_tokens_per_30_days=3)
    assert ask(client, project_id, police, shared[:3]).status_code == 200
    assert ask(client, project_id, police, shared[3:4]).status_code == 202
