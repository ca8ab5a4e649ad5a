"""The REST API, endpoint by endpoint, with the tenant isolation personas."""

from __future__ import annotations

import tomllib

import pytest
from rest_framework.test import APIClient

from controlplane.databases.models import Database
from controlplane.policies.models import Policy
from controlplane.proxyusers import scram
from controlplane.proxyusers.models import ProxyUser
from controlplane.tenants.models import ApiToken
from tests.controlplane.conftest import World

pytestmark = pytest.mark.django_db


def test_it_requires_a_bearer_token(world: World) -> None:
    assert APIClient().get("/api/v1/databases/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer sqlp_not-a-token")
    assert client.get("/api/v1/databases/").status_code == 401


def test_it_stores_tokens_hashed(world: World) -> None:
    token = ApiToken.objects.get(name="alice")
    assert world.alice.token not in {token.digest, token.prefix}
    assert world.alice.token.startswith(token.prefix)


def test_it_lists_only_the_callers_databases(world: World) -> None:
    names = [d["name"] for d in world.alice.api().get("/api/v1/databases/").json()["results"]]
    assert names == ["a_orders"]
    names = [d["name"] for d in world.charlie.api().get("/api/v1/databases/").json()["results"]]
    assert names == ["b_billing"]


def test_it_hides_other_tenants_objects_with_404(world: World) -> None:
    charlie = world.charlie.api()
    policy = Policy.objects.get(database=world.a_db)
    for url in (
        f"/api/v1/databases/{world.a_db.pk}/",
        f"/api/v1/proxy-users/{world.a_user.pk}/",
        f"/api/v1/policies/{policy.pk}/",
        f"/api/v1/policies/{policy.pk}/versions/",
        f"/api/v1/databases/{world.a_db.pk}/policy.toml",
    ):
        assert charlie.get(url).status_code == 404, url
    assert charlie.delete(f"/api/v1/databases/{world.a_db.pk}/").status_code == 404
    assert (
        charlie.patch(
            f"/api/v1/policies/{policy.pk}/", {"table_limits": {"x": 1}}, format="json"
        ).status_code
        == 404
    )
    assert Database.objects.filter(pk=world.a_db.pk).exists()


def test_it_lets_a_member_edit_but_not_manage_tokens(world: World) -> None:
    bob = world.bob.api()
    response = bob.patch(f"/api/v1/databases/{world.a_db.pk}/", {"pool_size": 7}, format="json")
    assert response.status_code == 200, response.json()
    assert bob.get("/api/v1/tokens/").status_code == 403
    assert world.alice.api().get("/api/v1/tokens/").status_code == 200


def test_it_creates_a_database_with_an_encrypted_password_and_a_policy(world: World) -> None:
    response = world.alice.api().post(
        "/api/v1/databases/",
        {
            "name": "a_new",
            "host": "db.internal",
            "dbname": "shop",
            "user": "shop",
            "password": "s3cret pw",
            "pool_mode": "transaction",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "password" not in body and body["has_password"] is True
    db = Database.objects.get(name="a_new")
    assert db.tenant == world.a
    assert "s3cret" not in db.password_encrypted and db.password == "s3cret pw"
    assert body["policy"] == db.policy.pk
    assert db.policy.versions.count() == 1


def test_it_reports_field_errors(world: World) -> None:
    api = world.alice.api()
    response = api.post(
        "/api/v1/databases/",
        {"name": "x", "host": "h", "dbname": "d", "user": "u", "port": 70000, "pool_size": 0},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()) >= {"port", "pool_size"}
    response = api.post(
        "/api/v1/databases/",
        {"name": "b_billing", "host": "h", "dbname": "d", "user": "u"},
        format="json",
    )
    assert response.status_code == 400 and "name" in response.json()


def test_it_creates_proxy_users_with_a_verifier(world: World) -> None:
    api = world.alice.api()
    response = api.post(
        "/api/v1/proxy-users/",
        {"name": "a_reporting", "password": "pw-1234", "databases": [world.a_db.pk]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert "password" not in response.json() and "scram_verifier" not in response.json()
    user = ProxyUser.objects.get(name="a_reporting")
    assert scram.verify_password("pw-1234", user.scram_verifier)
    # another tenant's database cannot be granted
    response = api.post(
        "/api/v1/proxy-users/",
        {"name": "a_sneaky", "password": "pw", "databases": [world.b_db.pk]},
        format="json",
    )
    assert response.status_code == 400 and "databases" in response.json()
    response = api.post(
        "/api/v1/proxy-users/",
        {"name": "a_bad", "scram_verifier": "SCRAM-SHA-256$nonsense"},
        format="json",
    )
    assert response.status_code == 400 and "scram_verifier" in response.json()


def test_it_updates_a_policy_and_versions_it(world: World) -> None:
    api = world.bob.api()
    policy = Policy.objects.get(database=world.a_db)
    response = api.put(
        f"/api/v1/policies/{policy.pk}/",
        {
            "table_limits": {"users": 10, "re:^audit_": 0},
            "honeytokens": {"tables": ["secret_keys"], "values": ["canary-1"], "action": "alert"},
            "ip_rules": [{"allow": ["10.0.0.0/8"]}],
            "rate_limits": {"queries_per_second": 50},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["table_limits"] == {"users": 10, "re:^audit_": 0}
    assert body["honeytokens"]["action"] == "alert"
    assert body["version"] == 2
    versions = api.get(f"/api/v1/policies/{policy.pk}/versions/").json()
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[0]["author_name"] == "bob (API token bob)"
    assert "users = 10" in versions[0]["document"]
    # revert to 1: a new version equal to version 1
    response = api.post(f"/api/v1/policies/{policy.pk}/revert/", {"version": 1}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["table_limits"] == {} and response.json()["version"] == 3
    assert (
        api.post(
            f"/api/v1/policies/{policy.pk}/revert/", {"version": 99}, format="json"
        ).status_code
        == 400
    )


def test_it_rejects_a_bad_policy_on_its_section(world: World) -> None:
    policy = Policy.objects.get(database=world.a_db)
    api = world.alice.api()
    response = api.patch(
        f"/api/v1/policies/{policy.pk}/", {"table_limits": {"re:(": 1}}, format="json"
    )
    assert response.status_code == 400
    assert "table_limits" in response.json()
    assert "invalid regular expression" in response.json()["table_limits"][0]
    response = api.patch(
        f"/api/v1/policies/{policy.pk}/", {"ip_rules": [{"allow": ["not-a-net"]}]}, format="json"
    )
    assert response.status_code == 400 and "ip_rules" in response.json()
    assert policy.versions.count() == 1


def test_it_serves_and_accepts_the_policy_as_toml(world: World) -> None:
    api = world.alice.api()
    url = f"/api/v1/databases/{world.a_db.pk}/policy.toml"
    text = '[table_limits]\nusers = 100\n"sensitive_*" = 5\n\n[honeytokens]\ntables = ["canary"]\n'
    response = api.put(url, text, content_type="application/toml")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/toml")
    response = api.get(url, HTTP_ACCEPT="application/toml")
    assert response.status_code == 200
    assert tomllib.loads(response.content.decode()) == tomllib.loads(text)
    bad = '[table_limits]\nusers = 100\n"re:(" = 5\n'
    response = api.put(url, bad, content_type="application/toml", HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    body = response.json()
    assert (body["line"], body["key"]) == (1, "table_limits")
    assert body["detail"].startswith("invalid regular expression '(': missing ),")
    response = api.put(
        url, "[listen]\nport = 1\n", content_type="application/toml", HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400 and response.json()["key"] == "listen"


def test_it_creates_tokens_shown_once(world: World) -> None:
    api = world.alice.api()
    response = api.post("/api/v1/tokens/", {"name": "ci", "user": "bob"}, format="json")
    assert response.status_code == 201, response.json()
    plaintext = response.json()["token"]
    listed = api.get("/api/v1/tokens/").json()["results"]
    assert all(t["token"] is None for t in listed)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get("/api/v1/databases/").status_code == 200
    # charlie cannot be made a token holder of tenant A
    response = api.post("/api/v1/tokens/", {"name": "x", "user": "charlie"}, format="json")
    assert response.status_code == 400
    token_id = next(t["id"] for t in listed if t["name"] == "ci")
    assert world.charlie.api().delete(f"/api/v1/tokens/{token_id}/").status_code == 404
    assert api.delete(f"/api/v1/tokens/{token_id}/").status_code == 204
    assert client.get("/api/v1/databases/").status_code == 401
