"""The management API keeps its OpenAPI schema: Schemathesis generates requests from
/api/schema/ for every operation (valid ones and invalid ones) and checks each answer.

In process, against the WSGI app, as a staff user with a DRF token (a superuser, so the test
holds whatever roles the API grows). Bounded: SCHEMATHESIS_EXAMPLES examples per operation in
the fuzzing phase (default 10) plus the schema's own examples and the coverage phase's edge
cases, derandomized so a CI failure reproduces. A longer run:
`SCHEMATHESIS_EXAMPLES=200 pytest tests/api/test_schemathesis.py`.

Checks: no 5xx (not_a_server_error); only documented status codes, content types and bodies
(status_code_conformance, content_type_conformance, response_schema_conformance); requests
the schema refuses are refused (negative_data_rejection); no answer without credentials
(ignored_auth). Not checked: positive_data_acceptance, since a request can be valid by the
schema and still name an object that does not exist (a balancer, an instance) or one that
does (a duplicate name): the API refuses those with a 400 and the schema cannot say so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import make_group, make_instance

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
PHASES = os.environ.get("SCHEMATHESIS_PHASES", "examples,coverage,fuzzing").split(",")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture
def staff_token(django_user_model) -> str:
    user = django_user_model.objects.create_superuser(
        "schemathesis", "st@example.com", "a-long-test-password"
    )
    # Something for the generated names to find now and then.
    make_group(name="g", instances=[make_instance(instance_id="i")])
    return Token.objects.create(user=user).key


@pytest.fixture
def _requests_inside_the_test_transaction() -> Iterator[None]:
    """What Django's test client does around each request: the WSGI handler would otherwise close
    the test's connection at the end of every request, and the test's transaction with it."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(staff_token: str, _requests_inside_the_test_transaction: None):
    loaded = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())
    loaded.config.phases.update(phases=PHASES)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_schema_says(case, staff_token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Token {staff_token}"}, checks=CHECKS)
