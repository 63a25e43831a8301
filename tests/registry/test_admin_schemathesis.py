"""The admin API against its own OpenAPI document: generated requests, bounded.

Every operation gets a bounded number of generated requests (schemathesis over Hypothesis)
with a token that holds every role; the default checks require no 5xx answer, every status
and content type documented, every body valid against the documented schema, schema-invalid
requests refused with a 4xx, and a 401 without the token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis

from schemas import load_json_schema
from tests.registry.conftest import LiveRegistry

schema = schemathesis.openapi.from_dict(load_json_schema("registry-admin.openapi.json"))


@pytest.fixture(scope="module")
def token(live_registry: LiveRegistry) -> str:
    return live_registry.token()


@schema.parametrize()
@hypothesis.settings(max_examples=10, deadline=timedelta(seconds=5), derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck),
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
def test_admin_api_conforms(case: schemathesis.Case[Any], live_registry: LiveRegistry,
                            token: str) -> None:
    # Excluded: "positive data acceptance" expects every schema-valid body to succeed, but
    # the registry also checks meaning (a certificate must parse and chain to an approved
    # CA, a member class must exist) and answers 400/404/409 -- documented, not errors.
    case.call_and_validate(base_url=live_registry.url,
                           headers={"Authorization": f"Bearer {token}"},
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
