"""Property-based run over the sidecar's own /openapi.json: no generated request may get a 5xx."""

from __future__ import annotations

import schemathesis
from conftest import TOKEN
from hypothesis import HealthCheck, settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


import pytest


@pytest.fixture
def api_schema(shared_sidecar):
    return schemathesis.openapi.from_url(f"{shared_sidecar.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, shared_sidecar):
    for headers in (AUTH, {}):  # with and without the token
        response = case.call(base_url=shared_sidecar.url, headers=headers, timeout=10)
        assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
