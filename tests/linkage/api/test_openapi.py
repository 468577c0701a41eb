"""Schemathesis against /openapi.json: no server errors, and every answer is one the schema documents."""

import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from server.app import create_app
from tests.linkage.api.conftest import ADMIN, TestClient, bearer, create_project, make_factory

with warnings.catch_warnings():
    # Schemathesis drives ASGI apps through Starlette's test client, which would rather have httpx2.
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The schema is loaded when the module is collected, so the app must exist then.
ROOT = Path(tempfile.mkdtemp(prefix="pprl-openapi-"))
APP = create_app(make_factory(ROOT, None)[0](run_worker=False))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def credentials():
    with TestClient(APP) as client:
        _, tokens = create_project(client)
        yield tokens
    shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
# Derandomised: the same cases every run, so CI is reproducible; raise max_examples to fuzz harder locally.
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_schema(case, credentials):
    for headers in (ADMIN, bearer(credentials["msd"]), {}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.call_and_validate(headers=headers, checks=CHECKS)
