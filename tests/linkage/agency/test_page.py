"""The encoder page's app: who may call it, what it never sends back, and the whole flow through its API."""

import logging
import re
import time

import pytest

from linkage.agency.page.app import COOKIE, SECURITY_HEADERS, EncoderSettings, create_encoder_app
from tests.helpers import (
    EXAMPLE_PROTOCOL,
    EXPORT_COLUMNS,
    MSD_HEADER,
    SECRET,
    TestClient,
    agency_export,
    write_xlsx,
)

TOKEN = "launch-token-" + "x" * 30
HEADERS = {"X-PPRL-Encoder": "1"}


@pytest.fixture
def page(tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    settings = EncoderSettings(
        token=TOKEN, hosts=("testserver",), out_root=tmp_path / "encoded", work_dir=work, workers=1
    )
    (tmp_path / "encoded").mkdir()
    with TestClient(create_encoder_app(settings)) as client:
        yield client


def signed_in(page):
    response = page.get(f"/?token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    return page


def wait_for_job(page, deadline=60.0):
    """The job's last state, polled until it is no longer running."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        job = page.get("/api/job").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def test_every_request_needs_the_launch_token(page):
    for path in ("/", "/api/state", "/static/encoder.js", "/?token=wrong"):
        response = page.get(path)
        assert response.status_code == 403, path
        assert "only opens from the link" in response.text
        assert response.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    signed_in(page)
    assert page.get("/api/state").status_code == 200


def test_other_hosts_other_origins_and_plain_form_posts_are_refused(page):
    signed_in(page)
    assert page.get("/api/state", headers={"Host": "evil.example:8000"}).status_code == 400  # DNS rebinding
    refused = page.put("/api/party", json={"party": "msd"}, headers={**HEADERS, "Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert page.put("/api/party", json={"party": "msd"}).status_code == 403  # no page header: not our script


def test_the_page_loads_nothing_from_elsewhere(page):
    signed_in(page)
    html = page.get("/").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == ["/static/encoder.css", "/static/encoder.js"]
    for asset in ("/", *assets):
        body = page.get(asset).text
        assert not re.search(r"(https?:)?//[a-z]", body.replace("http://127.0.0.1", "")), asset
    csp = page.get("/").headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp


def test_the_secret_never_comes_back(page, caplog, tmp_path):
    signed_in(page)
    caplog.set_level(logging.DEBUG)
    response = page.put("/api/secret?name=secret.key", content=SECRET.hex().encode(), headers=HEADERS)
    assert response.status_code == 200
    assert response.json()["secret"] == {"file": "secret.key"}
    bad = page.put("/api/secret?name=other.key", content=b"ab" * 8, headers=HEADERS)
    assert bad.status_code == 400 and "fewer than 256" in bad.json()["error"]
    responses = response.text + bad.text + page.get("/api/state").text + page.get("/api/job").text
    for text in (responses, caplog.text):
        assert SECRET.hex() not in text and SECRET.hex().upper() not in text
    assert list((tmp_path / "work").iterdir()) == []  # never written to disk either


def test_an_uploaded_name_cannot_leave_the_private_folder(page, tmp_path):
    signed_in(page)
    page.put(f"/api/protocol?name={EXAMPLE_PROTOCOL.name}", content=EXAMPLE_PROTOCOL.read_bytes(), headers=HEADERS)
    page.put("/api/party", json={"party": "msd"}, headers=HEADERS)
    response = page.put("/api/client-file?name=../../clients.csv", content=b"client_id,x\n", headers=HEADERS)
    assert response.status_code == 200
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["clients.csv"]
    assert page.put("/api/client-file?name=run.sh", content=b"x", headers=HEADERS).status_code == 400


def test_the_whole_flow_through_the_api(page, agencies, tmp_path):
    signed_in(page)
    protocol = page.put("/api/protocol?name=p.json", content=EXAMPLE_PROTOCOL.read_bytes(), headers=HEADERS)
    assert [p["id"] for p in protocol.json()["protocol"]["parties"]] == ["msd", "police", "haven"]
    assert page.put("/api/party", json={"party": "msd"}, headers=HEADERS).json()["party"] == "msd"
    header, rows = agency_export(agencies["msd"].parent / "data" / "msd.csv", 200)
    path = write_xlsx(tmp_path / "clients.xlsx", {"Clients": [header, *rows], "Notes": [["a", "b"]]})
    columns = page.put("/api/client-file?name=clients.xlsx", content=path.read_bytes(), headers=HEADERS).json()
    assert columns["sheets"] == ["Clients", "Notes"] and columns["sheet"] == "Clients"
    found = {m["column"]: m["header"] for m in columns["proposal"]["matches"]}
    assert found["date_of_birth"] == "DOB" and found["given_name"] == "First Name"
    assert [u[0] for u in columns["proposal"]["undecided"]] == list(EXPORT_COLUMNS)
    choice = {"sheet": "Clients", "columns": {**found, **EXPORT_COLUMNS}}
    assert page.post("/api/encode", json=choice, headers=HEADERS).json()["error"] == "choose the secret file first"
    assert page.post("/api/check", json=choice, headers=HEADERS).status_code == 202
    check = wait_for_job(page)
    assert check["state"] == "done", check
    assert check["result"]["summary"]["rejected"] == 4
    page.put("/api/secret?name=secret.key", content=SECRET.hex().encode(), headers=HEADERS)
    assert page.post("/api/encode", json={**choice, "on_error": "skip"}, headers=HEADERS).status_code == 202
    encoded = wait_for_job(page)
    assert encoded["state"] == "done", encoded
    result = encoded["result"]
    assert result["records"] == 196 and result["rejected"] == 4
    assert sorted(result["files"]) == ["attributes.csv", "encodings.pprl", "keymap.csv", "rejected.csv"]
    assert result["folder"].startswith(str(tmp_path / "encoded" / "msd-"))
    assert encoded["done"] == encoded["total"] > 0


def test_a_failed_encoding_is_shown_with_its_problems(page, tmp_path):
    signed_in(page)
    page.put("/api/protocol?name=p.json", content=EXAMPLE_PROTOCOL.read_bytes(), headers=HEADERS)
    page.put("/api/party", json={"party": "msd"}, headers=HEADERS)
    page.put("/api/secret?name=secret.key", content=SECRET.hex().encode(), headers=HEADERS)
    bad = page.put("/api/protocol?name=notes.txt", content=b"not json", headers=HEADERS)
    assert bad.status_code == 400 and "notes.txt: not a protocol file" in bad.json()["error"]
    header = ",".join(MSD_HEADER)
    body = f"{header}\nA1,Aroha,Te Awa,31/02/1990,f,1 Kauri St,Whangarei,0110,true,Northland,none,1\n".encode()
    page.put("/api/client-file?name=clients.csv", content=body, headers=HEADERS)
    page.post("/api/encode", json={"columns": {}}, headers=HEADERS)
    job = wait_for_job(page)
    assert job["state"] == "failed"
    assert job["error"]["error"].startswith("clients.csv: 1 row(s) cannot be encoded")
    assert job["error"]["problems"] == [
        "clients.csv line 2, column 'date_of_birth': not a real calendar day (day is out of range for month)"
    ]
    assert list((tmp_path / "encoded").iterdir()) == []
