"""Schemathesis against /openapi.json: no server errors, and every answer is one the schema documents."""

import warnings

import pytest
from hypothesis import HealthCheck, given, settings

from server.app import create_app
from tests.helpers import ADMIN, TestClient, bearer, create_project, make_factory

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
# A batch body (`pprl upload --batch`) is bytes, as an encodings upload's is.
schemathesis.serializer.alias("application/vnd.pprl.batch", "application/octet-stream")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    make, _ = make_factory(tmp_path_factory.mktemp("openapi"), None)
    return create_app(make(run_worker=False, api_docs=True, rate_limit=None))


@pytest.fixture(scope="module")
def credentials(app):
    with TestClient(app) as client:
        _, tokens = create_project(client)
        yield tokens


def test_the_api_keeps_its_schema(app, credentials):
    """Every operation, with generated requests as each role: no 500, and every answer documented."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 10

    for operation in operations:
        # Derandomised: the same cases every run, so CI is reproducible; raise max_examples to fuzz harder locally.
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case):
            for headers in (ADMIN, bearer(credentials["msd"]), {}):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    case.call_and_validate(headers=headers, checks=CHECKS)

        check()
