"""Fixtures for the linkage service: a fresh store per test, encoded synthetic agencies."""

from __future__ import annotations

import copy
import csv
import json
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from linkage.agency.encode import encode_csv
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import parse_protocol
from linkage.service.store import LinkageStore
from server.app import ServiceConfig, create_app, hash_admin_secret
from stats.store import StatsStore
from tests.conftest import EXAMPLE_PROTOCOL, SECRET

with warnings.catch_warnings():
    # Starlette would rather have httpx2; httpx works, and pprl's client is built on httpx.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]

ADMIN_SECRET = "test-admin-secret-" + "0" * 40
PEOPLE = 300
POSTGRES_URL = os.environ.get("PPRL_TEST_DATABASE_URL")
PARTIES = ("msd", "police", "haven")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_SECRET)
OCTET = {"Content-Type": "application/octet-stream"}
CSV = {"Content-Type": "text/csv"}


def read_keymap_tokens(out_dir: Path) -> set[str]:
    with (out_dir / "keymap.csv").open() as handle:
        return {row["token"] for row in csv.DictReader(handle)}


def read_consent(out_dir: Path) -> dict[str, bool]:
    with (out_dir / "attributes.csv").open() as handle:
        return {row["token"]: row["consent"] == "true" for row in csv.DictReader(handle)}


def build_agencies(root: Path) -> dict[str, Path]:
    """Three agencies' `pprl encode` folders for one synthetic population (~300 people)."""
    protocol = parse_protocol(json.loads(EXAMPLE_PROTOCOL.read_text()))
    synthesise_population(protocol, PEOPLE, 3, root / "data")
    outs = {}
    for party in PARTIES:
        outs[party] = root / party
        encode_csv(protocol, party, SECRET, root / "data" / f"{party}.csv", outs[party], workers=1)
    outs["truth"] = root / "data" / "truth.csv"
    return outs


def build_foreign(root: Path, agencies: dict[str, Path]) -> dict[str, Path]:
    """msd's clients encoded under another fingerprint, under another secret, and again (new tokens)."""
    document = copy.deepcopy(json.loads(EXAMPLE_PROTOCOL.read_text()))
    document["identifiers"]["fields"][0]["clk_bits_per_token"] = 21
    other = parse_protocol(document)
    data = agencies["msd"].parent / "data"
    encode_csv(other, "msd", SECRET, data / "msd.csv", root / "fingerprint", workers=1)
    protocol = parse_protocol(json.loads(EXAMPLE_PROTOCOL.read_text()))
    encode_csv(protocol, "msd", bytes(reversed(SECRET)), data / "msd.csv", root / "secret", workers=1)
    encode_csv(protocol, "msd", SECRET, data / "msd.csv", root / "again", workers=1)
    return {"fingerprint": root / "fingerprint", "secret": root / "secret", "again": root / "again"}


@pytest.fixture(scope="session")
def agencies(tmp_path_factory) -> dict[str, Path]:
    return build_agencies(tmp_path_factory.mktemp("agencies"))


@pytest.fixture(scope="session")
def foreign(tmp_path_factory, agencies) -> dict[str, Path]:
    return build_foreign(tmp_path_factory.mktemp("foreign"), agencies)


def make_factory(root: Path, url: str | None) -> tuple[Callable[..., ServiceConfig], Callable[[], None]]:
    suffix = secrets.token_hex(4)
    base = {
        "database_url": url,
        "admin_secret_sha256": hash_admin_secret(ADMIN_SECRET, "test"),
        "linkage_schema": f"pprl_linkage_t{suffix}",
        "stats_schema": f"pprl_stats_t{suffix}",
    }

    def make(**overrides) -> ServiceConfig:
        return ServiceConfig(**{"data_dir": root / "service", **base, **overrides})

    def cleanup() -> None:
        if url:
            LinkageStore(root / "service", url, schema=base["linkage_schema"]).destroy()
            StatsStore(root / "service", url, schema=base["stats_schema"]).destroy()

    return make, cleanup


@pytest.fixture
def config(tmp_path) -> Callable[..., ServiceConfig]:
    """A config factory on a fresh SQLite data folder."""
    make, _ = make_factory(tmp_path, None)
    return make


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_config(request, tmp_path) -> Iterator[Callable[..., ServiceConfig]]:
    """A config factory on a fresh store, once on SQLite and once on PostgreSQL."""
    if request.param == "postgres" and not POSTGRES_URL:
        pytest.skip("set PPRL_TEST_DATABASE_URL=postgresql+psycopg://... to run the PostgreSQL variant")
    make, cleanup = make_factory(tmp_path, POSTGRES_URL if request.param == "postgres" else None)
    yield make
    cleanup()


@pytest.fixture
def client(config) -> Iterator[TestClient]:
    """A running service (no background run worker: tests run queued runs with `run_pending`)."""
    with TestClient(create_app(config(run_worker=False))) as test_client:
        yield test_client


def create_project(client: TestClient, document: dict | None = None) -> tuple[str, dict[str, str]]:
    response = client.post(
        "/projects", json={"protocol": document or json.loads(EXAMPLE_PROTOCOL.read_text())}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return response.json()["project_id"], response.json()["credentials"]


def put_encodings(client: TestClient, project_id: str, token: str, body: bytes, **params):
    return client.put(
        f"/projects/{project_id}/encodings", content=body, headers={**bearer(token), **OCTET}, params=params
    )


def put_attributes(client: TestClient, project_id: str, token: str, body: bytes, **params):
    return client.put(
        f"/projects/{project_id}/attributes", content=body, headers={**bearer(token), **CSV}, params=params
    )


def upload_all(client: TestClient, project_id: str, credentials: dict[str, str], agencies: dict[str, Path]) -> None:
    for party in PARTIES:
        response = put_encodings(
            client, project_id, credentials[party], (agencies[party] / "encodings.pprl").read_bytes()
        )
        assert response.status_code == 201, response.text
        response = put_attributes(
            client, project_id, credentials[party], (agencies[party] / "attributes.csv").read_bytes()
        )
        assert response.status_code == 201, response.text


def wait_for_run(client: TestClient, project_id: str, run_id: int, token: str, deadline: float = 120.0) -> dict:
    """Poll until the run is done or failed (the deadline only stops a hung test)."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        body = client.get(f"/projects/{project_id}/runs/{run_id}", headers=bearer(token)).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {body}")
