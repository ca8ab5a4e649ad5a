"""schemathesis over the OpenAPI schema at /api/v1/schema/: no generated request, valid or
not, gets a 500. Runs in-process through the WSGI app, authenticated as alice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from controlplane.audit.models import AuditEvent
from controlplane.policies.models import Policy
from controlplane.tenants.models import ApiToken
from tests.controlplane.conftest import World

pytestmark = pytest.mark.django_db


@schemathesis.serializer("application/toml")
def _toml_body(ctx: object, value: object) -> bytes:
    """The policy TOML endpoint takes text; generated values are sent as their text."""
    return value.encode() if isinstance(value, str) else str(value).encode()


@pytest.fixture
def keep_connection() -> Iterator[None]:
    """Like Django's test client: the WSGI app must not close the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_it_never_answers_500(world: World, keep_connection: None) -> None:
    from controlplane.wsgi import application

    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
    headers = {"Authorization": f"Bearer {world.alice.token}"}
    AuditEvent.objects.create(
        event_id="w1-1",
        time=timezone.now(),
        tenant=world.a,
        worker="w1",
        database="a_orders",
        user="a_app",
        client="c",
        decision="allow",
    )
    # Besides random ids (mostly 404), aim at objects that exist, so that updates get validated.
    existing = {
        "/api/v1/databases/": {"id": world.a_db.pk},
        "/api/v1/proxy-users/": {"id": world.a_user.pk},
        "/api/v1/policies/": {"id": Policy.objects.get(database=world.a_db).pk},
        "/api/v1/tokens/": {"id": ApiToken.objects.get(name="bob").pk},
        "/api/v1/audit/events/": {"event_id": "w1-1"},
    }
    seen: set[tuple[str, int]] = set()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        pins = next((v for k, v in existing.items() if operation.path.startswith(k)), None)
        aimed = pins is not None and "{" in operation.path and operation.method != "delete"
        targets = [None, pins] if aimed else [None]
        for mode in GenerationMode:
            for path_parameters in targets:
                strategy = operation.as_strategy(mode, path_parameters=path_parameters)

                @given(case=strategy)
                @settings(
                    max_examples=12,
                    deadline=None,
                    derandomize=True,  # the same examples every run: the asserts below never flake
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: schemathesis.Case) -> None:
                    response = case.call(headers=headers)
                    seen.add((f"{case.method} {case.path}", response.status_code))
                    case.validate_response(response, checks=[not_a_server_error])

                check()
    # the pinned ids reached real objects, and payloads were both accepted and refused
    assert ("GET /api/v1/databases/{id}/policy.toml", 200) in seen
    assert ("PATCH /api/v1/policies/{id}/", 400) in seen
    assert (
        any(op == "PUT /api/v1/databases/{id}/policy.toml" and status == 200 for op, status in seen)
        or ("PUT /api/v1/databases/{id}/policy.toml", 400) in seen
    )


def test_it_serves_the_schema_without_auth(client: object) -> None:
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")  # type: ignore[attr-defined]
    assert response.status_code == 200
    paths = response.json()["paths"]
    for expected in (
        "/api/v1/databases/",
        "/api/v1/databases/{id}/",
        "/api/v1/databases/{id}/policy.toml",
        "/api/v1/proxy-users/",
        "/api/v1/policies/{id}/revert/",
        "/api/v1/policies/{id}/versions/",
        "/api/v1/tokens/",
        "/api/v1/audit/events/",
        "/api/v1/statistics/",
    ):
        assert expected in paths, expected
    assert response.json()["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
