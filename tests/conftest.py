"""Every fixture of the suite, in one place: protocols, secrets, agencies, stores, the service, the CLI.

Helpers that are not fixtures live in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from linkage.protocol import Hardening, Protocol, load_protocol, with_hardening
from server.app import ServiceConfig, create_app
from tests.helpers import (
    ADMIN_SECRET,
    EXAMPLE_PROTOCOL,
    MSD_HEADER,
    POSTGRES_URL,
    SECRET,
    TestClient,
    build_agencies,
    build_foreign,
    make_factory,
    people_table,
    write_rows,
)


@pytest.fixture(scope="session")
def protocol() -> Protocol:
    return load_protocol(EXAMPLE_PROTOCOL)


@pytest.fixture(scope="session")
def plain_protocol(protocol: Protocol) -> Protocol:
    """The example protocol without its hardening: CLKs are clkhash's."""
    return with_hardening(protocol, Hardening())


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_text(SECRET.hex() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def write(rows: Sequence[Sequence[str]], header: Sequence[str] = MSD_HEADER, name: str = "clients.csv") -> Path:
        return write_rows(tmp_path / name, rows, header)

    return write


@pytest.fixture(scope="session")
def agencies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three agencies' encode folders for ~300 synthetic people (never modify them)."""
    return build_agencies(tmp_path_factory.mktemp("agencies"))


@pytest.fixture(scope="session")
def foreign(tmp_path_factory: pytest.TempPathFactory, agencies: dict[str, Path]) -> dict[str, Path]:
    """msd's clients under another fingerprint, another secret, and again with new tokens."""
    return build_foreign(tmp_path_factory.mktemp("foreign"), agencies)


@pytest.fixture(scope="session")
def table(protocol: Protocol) -> pl.DataFrame:
    """An entity table of 3,000 people across the three parties of the example protocol."""
    return people_table(protocol, 3000)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The backend under test: ``None`` for SQLite files, then PostgreSQL's URL (skipped without one)."""
    if request.param == "postgres":
        if not POSTGRES_URL:
            pytest.skip("set PPRL_TEST_DATABASE_URL=postgresql+psycopg://... to run the PostgreSQL variant")
        return POSTGRES_URL
    return None


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., ServiceConfig]:
    """A service config factory on a fresh SQLite data folder."""
    make, _ = make_factory(tmp_path, None)
    return make


@pytest.fixture
def backend_config(database_url: str | None, tmp_path: Path) -> Iterator[Callable[..., ServiceConfig]]:
    """A service config factory on a fresh store, once on SQLite and once on PostgreSQL."""
    make, cleanup = make_factory(tmp_path, database_url)
    yield make
    cleanup()


@pytest.fixture
def client(config: Callable[..., ServiceConfig]) -> Iterator[TestClient]:
    """A running service (no background run worker: tests run queued runs with `run_pending`)."""
    with TestClient(create_app(config(run_worker=False))) as test_client:
        yield test_client


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def service(backend_config: Callable[..., ServiceConfig], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A running service (SQLite, then PostgreSQL) that the commands reach through their HTTP client."""
    app = create_app(backend_config())
    with TestClient(app):
        monkeypatch.setattr("linkage.service.client.make_http", lambda url: TestClient(app, base_url=url))
        yield app


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[object]:
    """A local Dask cluster of two single-threaded worker processes, shared by the suite."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


@pytest.fixture
def admin_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin.secret"
    path.write_text(ADMIN_SECRET + "\n")
    return path
