"""The service fixtures of the linkage side serve the statistics side's routes too (one app)."""

from tests.linkage.api.conftest import agencies, backend_config, client, config  # noqa: F401 - fixtures
