"""Uploads: idempotent, refused when different or foreign, atomic, and bad requests get clear 4xx."""

import hashlib
import json
import struct

import numpy as np
import pytest

from linkage.encodings import read_encodings, read_header
from server.app import create_app
from tests.helpers import (
    ADMIN,
    EXAMPLE_PROTOCOL,
    OCTET,
    TestClient,
    bearer,
    create_project,
    put_attributes,
    put_encodings,
    upload_all,
    write_encodings,
)


def stored(client, project_id):
    """What the service holds: encodings rows, blob files and leftover incoming files."""
    store = client.app.state.linkage_store
    blobs = sorted(path.name for path in store.blob_dir.iterdir())
    incoming = list(client.app.state.stats_store.incoming_dir.iterdir())
    return store.uploads(project_id), blobs, incoming


def test_same_encodings_again_change_nothing_and_different_ones_need_replace(client, agencies, foreign):
    project_id, credentials = create_project(client)
    msd = credentials["msd"]
    first = (agencies["msd"] / "encodings.pprl").read_bytes()
    created = put_encodings(client, project_id, msd, first)
    assert created.status_code == 201
    assert created.json()["status"] == "created"
    assert created.json()["record_count"] > 100

    again = put_encodings(client, project_id, msd, first)
    assert again.status_code == 200
    assert again.json()["status"] == "unchanged"

    second = (foreign["again"] / "encodings.pprl").read_bytes()
    refused = put_encodings(client, project_id, msd, second)
    assert refused.status_code == 409
    assert refused.json()["code"] == "conflict"
    assert "already uploaded different encodings" in refused.json()["message"]
    assert "--replace" in refused.json()["message"]
    uploads, blobs, _ = stored(client, project_id)
    assert uploads["msd"].body_sha256 == created.json()["sha256"]
    assert blobs == [created.json()["sha256"]]

    replaced = put_encodings(client, project_id, msd, second, replace="true")
    assert replaced.status_code == 200
    assert replaced.json()["status"] == "replaced"
    uploads, blobs, _ = stored(client, project_id)
    assert blobs == [replaced.json()["sha256"]], "the replaced blob is removed"
    assert uploads["msd"].body_sha256 == replaced.json()["sha256"]

    outcomes = [
        (e.action, e.outcome) for e in client.app.state.linkage_store.audit_entries() if e.action == "encodings.upload"
    ]
    assert outcomes == [
        ("encodings.upload", "created"),
        ("encodings.upload", "unchanged"),
        ("encodings.upload", "conflict"),
        ("encodings.upload", "replaced"),
    ]


def test_attributes_are_idempotent_too_and_kept_on_the_statistics_side(client, agencies):
    project_id, credentials = create_project(client)
    body = (agencies["haven"] / "attributes.csv").read_bytes()
    haven = credentials["haven"]
    put_encodings(client, project_id, haven, (agencies["haven"] / "encodings.pprl").read_bytes())
    assert put_attributes(client, project_id, haven, body).status_code == 201
    assert put_attributes(client, project_id, haven, body).json()["status"] == "unchanged"
    changed = body.replace(b",true,", b",false,", 1)
    refused = put_attributes(client, project_id, haven, changed)
    assert refused.status_code == 409
    assert "--replace" in refused.json()["message"]
    assert put_attributes(client, project_id, haven, changed, replace="true").json()["status"] == "replaced"
    stats = client.app.state.stats_store
    assert stats.attribute_counts(project_id) == {"haven": body.count(b"\n") - 1}
    encodings = hashlib.sha256((agencies["haven"] / "encodings.pprl").read_bytes()).hexdigest()
    linkage = client.app.state.linkage_store
    assert [path.name for path in linkage.blob_dir.iterdir()] == [encodings], "attributes never reach the linkage side"


def test_encodings_of_another_protocol_or_party_or_secret_are_refused(client, agencies, foreign):
    project_id, credentials = create_project(client)
    wrong_fingerprint = put_encodings(
        client, project_id, credentials["msd"], (foreign["fingerprint"] / "encodings.pprl").read_bytes()
    )
    assert wrong_fingerprint.status_code == 409
    assert wrong_fingerprint.json()["code"] == "mismatch"
    assert "was encoded under protocol fingerprint" in wrong_fingerprint.json()["message"]
    assert "encode it again with the agreed protocol" in wrong_fingerprint.json()["message"]

    wrong_party = put_encodings(
        client, project_id, credentials["police"], (agencies["msd"] / "encodings.pprl").read_bytes()
    )
    assert wrong_party.status_code == 409
    assert "encoded for party 'msd', but your token is for party 'police'" in wrong_party.json()["message"]

    police = (agencies["police"] / "encodings.pprl").read_bytes()
    assert put_encodings(client, project_id, credentials["police"], police).status_code == 201
    wrong_secret = put_encodings(
        client, project_id, credentials["msd"], (foreign["secret"] / "encodings.pprl").read_bytes()
    )
    assert wrong_secret.status_code == 409
    assert "different shared secret than the encodings party 'police' uploaded" in wrong_secret.json()["message"]
    uploads, blobs, _ = stored(client, project_id)
    assert set(uploads) == {"police"}
    assert len(blobs) == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda body: body[:-1000], "bytes where the header promises"),
        (lambda body: body[:40], "encodings header is damaged or truncated"),
        (lambda body: body[:-1] + bytes([body[-1] ^ 1]), "do not match the header's checksum"),
        (lambda _: b"client_id,given_name\n1,Aroha\n", "not a pprl encodings file"),
    ],
    ids=["truncated", "header cut", "corrupted", "not encodings"],
)
def test_damaged_encodings_are_refused_and_nothing_is_stored(client, agencies, damage, message):
    project_id, credentials = create_project(client)
    body = damage((agencies["msd"] / "encodings.pprl").read_bytes())
    response = put_encodings(client, project_id, credentials["msd"], body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    assert message in response.json()["message"]
    assert "the uploaded encodings" in response.json()["message"]
    assert str(client.app.state.linkage_store.blob_dir) not in response.text, "no server path in messages"
    assert stored(client, project_id) == ({}, [], [])


def test_bad_attributes_are_refused_listing_every_problem(client, agencies):
    project_id, credentials = create_project(client)
    lines = (agencies["msd"] / "attributes.csv").read_text().splitlines()
    lines[3] = lines[3].replace(",true,", ",maybe,").replace(",false,", ",maybe,")
    lines[5] = "nothex," + lines[5].split(",", 1)[1]
    response = put_attributes(client, project_id, credentials["msd"], ("\n".join(lines) + "\n").encode())
    assert response.status_code == 400
    assert "2 problem(s); nothing was stored" in response.json()["message"]
    assert response.json()["problems"] == [
        "line 4, column 'consent': not true or false",
        "line 6, column 'token': not a record token (32 lowercase hex digits)",
    ]
    police = put_attributes(
        client, project_id, credentials["police"], (agencies["msd"] / "attributes.csv").read_bytes()
    )
    assert police.status_code == 400
    assert "party 'police' must send token,consent,region,offence_category,police_contacts" in police.json()["message"]
    assert client.app.state.stats_store.attribute_counts(project_id) == {}


def test_wrong_content_types_get_415(client, agencies):
    project_id, credentials = create_project(client)
    msd = bearer(credentials["msd"])
    body = (agencies["msd"] / "encodings.pprl").read_bytes()
    encodings = client.put(
        f"/projects/{project_id}/encodings", content=body, headers={**msd, "Content-Type": "text/csv"}
    )
    assert encodings.status_code == 415
    assert "application/octet-stream" in encodings.json()["message"]
    attributes = client.put(f"/projects/{project_id}/attributes", content=b"token", headers={**msd, **OCTET})
    assert attributes.status_code == 415
    document = EXAMPLE_PROTOCOL.read_text()
    project = client.post("/projects", content=document, headers={**ADMIN, "Content-Type": "text/plain"})
    assert project.status_code == 415
    assert project.json()["code"] == "unsupported_media_type"


def test_malformed_json_and_invalid_protocols_get_clear_errors(client):
    malformed = client.post(
        "/projects", content=b'{"protocol": {', headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["code"] == "invalid_request"
    assert "JSON decode error" in malformed.json()["message"]
    unknown_key = client.post("/projects", json={"protocol": {}, "extra": 1}, headers=ADMIN)
    assert unknown_key.status_code == 422
    assert "extra" in unknown_key.json()["message"]
    document = json.loads(EXAMPLE_PROTOCOL.read_text())
    del document["purpose"]
    invalid = client.post("/projects", json={"protocol": document}, headers=ADMIN)
    assert invalid.status_code == 400
    assert invalid.json()["code"] == "invalid_protocol"
    assert "'purpose' is a required property" in "\n".join(invalid.json()["problems"])
    assert client.app.state.linkage_store.projects() == []


def test_oversized_bodies_get_413_and_nothing_is_stored(config, agencies):
    with TestClient(create_app(config(max_upload_bytes=4096, max_json_bytes=8192, run_worker=False))) as client:
        project_id, credentials = create_project(client, json.loads(EXAMPLE_PROTOCOL.read_text()))
        body = (agencies["msd"] / "encodings.pprl").read_bytes()
        declared = put_encodings(client, project_id, credentials["msd"], body)
        assert declared.status_code == 413
        assert declared.json()["code"] == "too_large"
        assert "--max-upload-mb" in declared.json()["message"]
        chunked = client.put(
            f"/projects/{project_id}/encodings",
            content=iter([body[:3000], body[3000:6000], body[6000:]]),
            headers={**bearer(credentials["msd"]), **OCTET},
        )
        assert chunked.status_code == 413
        assert stored(client, project_id) == ({}, [], [])
        big = {"protocol": json.loads(EXAMPLE_PROTOCOL.read_text()), "padding": "x" * 10_000}
        assert client.post("/projects", json=big, headers=ADMIN).status_code == 413


def test_replacing_encodings_while_a_run_is_queued_is_refused(client, agencies, foreign):
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    run = client.post(f"/projects/{project_id}/runs", headers=bearer(credentials["msd"]))
    assert run.status_code == 202
    body = (foreign["again"] / "encodings.pprl").read_bytes()
    refused = put_encodings(client, project_id, credentials["msd"], body, replace="true")
    assert refused.status_code == 409
    assert f"run {run.json()['run_id']} of this project is queued" in refused.json()["message"]


def test_attributes_must_carry_the_tokens_of_the_partys_encodings(client, agencies):
    """Issue 15 row 4: other tokens made every query a 500; appended tokens moved the DP counts."""
    project_id, credentials = create_project(client)
    police = credentials["police"]
    own = (agencies["police"] / "attributes.csv").read_text()
    early = put_attributes(client, project_id, police, own.encode())
    assert early.status_code == 409 and "upload encodings.pprl first" in early.json()["message"]
    upload_all(client, project_id, credentials, agencies)
    lines = own.splitlines()
    padded = "\n".join([*lines, *(f"{i:032x},true,Auckland,property,{i % 30}" for i in range(1000))]) + "\n"
    appended = put_attributes(client, project_id, police, padded.encode(), replace="true")
    assert appended.status_code == 409, appended.text
    count = len(lines) - 1
    expected = f"holds {count + 1000} tokens that are not the {count} tokens of the encodings party 'police' uploaded"
    assert expected in appended.json()["message"]
    foreign_tokens = "\n".join([lines[0], *(f"{i:032x}," + line.split(",", 1)[1] for i, line in enumerate(lines[1:]))])
    other = put_attributes(client, project_id, police, (foreign_tokens + "\n").encode(), replace="true")
    assert other.status_code == 409
    assert client.app.state.stats_store.attribute_counts(project_id)["police"] == len(lines) - 1, "nothing stored"


def test_queries_never_fail_with_a_500_when_encodings_and_attributes_drift_apart(client, agencies, foreign):
    project_id, credentials = create_project(client)
    upload_all(client, project_id, credentials, agencies)
    msd, analyst = credentials["msd"], bearer(credentials["analyst"])

    def query():
        return client.post(f"/projects/{project_id}/queries", json={"query": "count --rho 0.01"}, headers=analyst)

    def run():
        client.post(f"/projects/{project_id}/runs", headers=ADMIN)
        client.app.state.worker.run_pending()

    run()
    assert query().status_code == 200
    again = foreign["again"]  # msd's clients with new tokens
    put_encodings(client, project_id, msd, (again / "encodings.pprl").read_bytes(), replace="true")
    assert query().status_code == 200, "the latest run and the attributes still describe the same records"
    run()
    stale = query()
    assert stale.status_code == 409, stale.text
    assert "attributes of msd are not those of the encodings uploaded since" in stale.json()["message"]
    put_attributes(client, project_id, msd, (again / "attributes.csv").read_bytes(), replace="true")
    assert query().status_code == 200
    put_encodings(client, project_id, msd, (agencies["msd"] / "encodings.pprl").read_bytes(), replace="true")
    put_attributes(client, project_id, msd, (agencies["msd"] / "attributes.csv").read_bytes(), replace="true")
    unrun = query()
    assert unrun.status_code == 409
    assert "start a new run" in unrun.json()["message"]
    run()
    assert query().status_code == 200


def header_of(fields):
    text = json.dumps(fields).encode()
    return b"PPRLENC1" + struct.pack("<I", len(text)) + text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: {**h, "fingerprint": 12345}, "'fingerprint' is a int, not a str"),
        (lambda h: {**h, "fingerprint": None}, "'fingerprint' is a NoneType, not a str"),
        (lambda h: {**h, "record_count": "198"}, "'record_count' is a str, not a int"),
        (lambda h: {**h, "record_count": 198.0}, "'record_count' is a float, not a int"),
        (lambda h: {**h, "record_count": -1}, "'record_count' is negative"),
        (lambda h: {**h, "layout": [["token", "u1"]]}, "'layout' is not a list of [name, type, count]"),
        (lambda h: {**h, "extra": 1}, "unknown key 'extra'"),
    ],
    ids=["fingerprint-number", "fingerprint-null", "count-string", "count-float", "count-negative", "layout", "extra"],
)
def test_encodings_headers_of_the_wrong_types_get_a_400(client, agencies, change, message):
    project_id, credentials = create_project(client)
    header = json.loads(read_header(agencies["msd"]).to_json())
    response = put_encodings(client, project_id, credentials["msd"], header_of(change(header)))
    assert response.status_code == 400, response.text
    assert message in response.text


def test_an_encodings_header_nested_200k_deep_gets_a_400(client):
    project_id, credentials = create_project(client)
    deep = b"PPRLENC1" + struct.pack("<I", 400_000) + b"[" * 200_000 + b"]" * 200_000
    response = put_encodings(client, project_id, credentials["msd"], deep)
    assert response.status_code == 400, response.text
    assert "the encodings header is damaged or truncated" in response.json()["message"]


def test_encodings_holding_a_token_twice_are_refused_at_upload_not_at_the_run(client, agencies, tmp_path):
    # Accepted before: the run then failed for every party ("the same record token appears
    # twice in the inputs"), one party's bad file stopping the project's linkage.
    project_id, credentials = create_project(client)
    encodings = read_encodings(agencies["msd"] / "encodings.pprl")
    records = np.asarray(encodings.records)
    folder = write_encodings(
        client.app.state.linkage_store.protocol(project_id),
        "msd",
        encodings.header.secret_check,
        np.concatenate([records, records[3:5]]),
        tmp_path / "twice",
    )
    response = put_encodings(client, project_id, credentials["msd"], (folder / "encodings.pprl").read_bytes())
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_input"
    assert "holds 2 record token(s) more than once" in response.json()["message"]
    assert "the uploaded encodings file" in response.json()["message"]
    assert stored(client, project_id) == ({}, [], [])
