"""Fixtures of the command tests: encoded agencies, a runner, and an in-process service the commands reach."""

import pytest
from click.testing import CliRunner

from cli.main import main
from server.app import create_app
from tests.linkage.api.conftest import ADMIN_SECRET, POSTGRES_URL, TestClient, build_agencies, make_factory

SERVER = "http://pprl.test"


@pytest.fixture(scope="module")
def agencies(tmp_path_factory):
    return build_agencies(tmp_path_factory.mktemp("agencies"))


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service(request, tmp_path, monkeypatch):
    """A running service (SQLite, then PostgreSQL) that the commands reach through their HTTP client."""
    if request.param == "postgres" and not POSTGRES_URL:
        pytest.skip("set PPRL_TEST_DATABASE_URL=postgresql+psycopg://... to run the PostgreSQL variant")
    make, cleanup = make_factory(tmp_path, POSTGRES_URL if request.param == "postgres" else None)
    app = create_app(make())
    with TestClient(app):
        monkeypatch.setattr("linkage.service.client.make_http", lambda url: TestClient(app, base_url=url))
        yield app
    cleanup()


@pytest.fixture
def admin_file(tmp_path):
    path = tmp_path / "admin.secret"
    path.write_text(ADMIN_SECRET + "\n")
    return path


def invoke(runner, *args, env=None):
    return runner.invoke(main, [str(arg) for arg in args], env=env)
