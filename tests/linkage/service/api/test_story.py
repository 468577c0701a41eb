"""Three agencies through the service: create, upload, run, consent-limited results, serious threat, audit."""

import hashlib
import re
from collections import defaultdict

from server.app import create_app
from tests.helpers import (
    ADMIN,
    PARTIES,
    TestClient,
    bearer,
    create_project,
    read_consent,
    read_keymap_tokens,
    upload_all,
    wait_for_run,
)

TOKEN = re.compile(r"\b[0-9a-f]{32}\b")


def expected_release(entities, consent, party, *, tokens=None):
    """Independent reference: the caller's tokens and the consented other parties of each entity."""
    expected = {}
    for members in entities.values():
        mine = [token for member_party, token in members if member_party == party]
        if not mine or (tokens is not None and mine[0] not in tokens):
            continue
        if tokens is None and not consent[party][mine[0]]:
            continue
        others = sorted({p for p, t in members if p != party and (tokens is not None or consent[p][t])})
        if others:
            expected[mine[0]] = others
    return expected


def test_three_agencies_link_and_get_only_what_the_protocol_allows(backend_config, agencies):
    app = create_app(backend_config())
    with TestClient(app) as client:
        project_id, credentials = create_project(client)
        upload_all(client, project_id, credentials, agencies)
        info = client.get(f"/projects/{project_id}", headers=bearer(credentials["analyst"])).json()
        assert all(p["encodings_uploaded"] and p["attributes_uploaded"] for p in info["parties"])

        started = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"]))
        assert started.status_code == 202
        run = wait_for_run(client, project_id, started.json()["run_id"], credentials["msd"])
        assert run["status"] == "done", run["message"]
        assert run["entity_count"] is None, "a party sees no counts of other parties' data"
        run = client.get(f"/projects/{project_id}/runs/{run['run_id']}", headers=ADMIN).json()
        assert run["entity_count"] > 20
        assert not {"score", "probability", "weight", "threshold"} & set(run)

        entities = defaultdict(list)
        internal = app.state.linkage_store.run(project_id, run["run_id"]).id
        for chunk in app.state.linkage_store.entity_rows(internal):
            for entity_id, party, token in chunk:
                entities[entity_id].append((party, token))
        assert app.state.stats_store.mapping_run(project_id) == internal
        assert len(app.state.stats_store.mapping(project_id)) == run["linked_records"]
        consent = {party: read_consent(agencies[party]) for party in PARTIES}
        assert not all(all(flags.values()) for flags in consent.values()), "the data must exercise consent"

        for party in ("msd", "haven"):
            response = client.get(f"/projects/{project_id}/results", headers=bearer(credentials[party]))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["party"] == party
            released = {item["token"]: item["shared_with"] for item in body["records"]}
            assert released == expected_release(entities, consent, party)
            assert released, f"{party} should share some consented clients"
            assert set(TOKEN.findall(response.text)) <= read_keymap_tokens(agencies[party])
            assert all(party not in others for others in released.values())
            assert set(body["parties"]) == {p for others in released.values() for p in others}

        police = bearer(credentials["police"])
        refused = client.get(f"/projects/{project_id}/results", headers=police)
        assert refused.status_code == 403
        assert "does not allow record-level results for party 'police'" in refused.json()["message"]
        assert "--serious-threat" in refused.json()["message"]

        # Five shared police clients, some with another party's consent unset: the exception names
        # a few people, and releases them regardless of consent.
        consented = expected_release(entities, consent, "police", tokens=None)
        everyone = expected_release(entities, consent, "police", tokens=set(read_keymap_tokens(agencies["police"])))
        named = sorted(set(everyone) - set(consented))[:3] + sorted(set(everyone) & set(consented))[:2]
        reason = "credible threat of harm to a child reported on 3 March, case 4471"
        threat = client.post(
            f"/projects/{project_id}/results/serious-threat",
            json={"tokens": named, "reason": reason},
            headers=police,
        )
        assert threat.status_code == 200, threat.text
        released = {item["token"]: item["shared_with"] for item in threat.json()["records"]}
        assert released == expected_release(entities, consent, "police", tokens=set(named))
        withheld_by_consent = set(released) - set(expected_release(entities, consent, "police"))
        assert withheld_by_consent, "the exception must release records that consent alone would not"

        log = client.get("/audit", headers=ADMIN)
        assert log.status_code == 200
        lines = log.json()["entries"]
        actions = [(line["actor"], line["action"], line["outcome"]) for line in lines]
        assert ("admin", "project.create", "ok") in actions
        assert ("party:msd", "run.start", "queued") in actions
        assert ("service", "run.done", "ok") in actions
        assert ("party:police", "results.download", "forbidden") in actions
        threat_lines = [line for line in lines if line["action"] == "results.serious_threat"]
        assert len(threat_lines) == 1
        assert threat_lines[0]["actor"] == "party:police"
        assert reason in threat_lines[0]["detail"]
        hashes = [hashlib.sha256(token.encode()).hexdigest() for token in named]
        assert all(digest in threat_lines[0]["detail"] for digest in hashes), "the audit names the tokens by hash"
        assert not TOKEN.findall(log.text), "the audit log must never hold a record token"
        assert not any(token in log.text for token in credentials.values())
