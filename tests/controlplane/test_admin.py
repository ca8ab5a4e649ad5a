"""The Django admin: pages render, errors sit next to their field, a policy change is shown
as a diff before it is saved, the fleet page, and charlie sees nothing of tenant A."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.fleet.models import ConfigState, Worker
from controlplane.policies.models import Policy
from controlplane.proxyusers import scram
from controlplane.proxyusers.models import ProxyUser
from tests.controlplane.conftest import PASSWORD, World

pytestmark = pytest.mark.django_db


def login(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def root(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


def policy_form(policy: Policy, **changes: str) -> dict[str, str]:
    data = {
        "table_limits": "[]",
        "honeytoken_tables": "[]",
        "honeytoken_values": "[]",
        "honeytoken_action": "block",
        "signatures_enabled": "on",
        "signatures_disable": "[]",
        "signatures_deny": "[]",
        "ip_rules": "[]",
        "rate_queries_per_second": "",
        "rate_burst": "",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": str(policy.versions.count()),
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    data.update(changes)
    return data


def test_it_renders_the_admin_pages(world: World, root: User) -> None:
    client = login(root)
    policy = Policy.objects.get(database=world.a_db)
    AuditEvent.objects.create(
        event_id="e1",
        time="2030-01-01T00:00:00Z",
        tenant=world.a,
        worker="w",
        database="a_orders",
        user="a_app",
        client="c",
        decision="deny",
        rule="table_limits",
    )
    for url in (
        "/admin/",
        "/admin/tenants/tenant/",
        f"/admin/tenants/tenant/{world.a.pk}/change/",
        f"/admin/tenants/tenant/{world.a.pk}/import-toml/",
        "/admin/tenants/apitoken/",
        "/admin/tenants/apitoken/add/",
        "/admin/databases/database/",
        "/admin/databases/database/add/",
        f"/admin/databases/database/{world.a_db.pk}/change/",
        "/admin/proxyusers/proxyuser/",
        f"/admin/proxyusers/proxyuser/{world.a_user.pk}/change/",
        "/admin/policies/policy/",
        f"/admin/policies/policy/{policy.pk}/change/",
        f"/admin/policies/policy/{policy.pk}/revert/1/",
        "/admin/audit/auditevent/",
        "/admin/audit/auditevent/?decision=deny",
        "/admin/fleet/worker/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url


def test_it_shows_a_diff_before_saving_a_policy(world: World) -> None:
    client = login(world.bob.user)
    policy = Policy.objects.get(database=world.a_db)
    url = f"/admin/policies/policy/{policy.pk}/change/"
    data = policy_form(policy, table_limits='[["users", 10]]')
    response = client.post(url, data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Confirm and save" in page and "+users = 10" in page
    policy.refresh_from_db()
    assert policy.table_limits == [] and policy.versions.count() == 1  # nothing saved yet
    response = client.post(url, {**data, "_confirm_diff": "1"})
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.table_limits == [["users", 10]]
    latest = policy.versions.order_by("-number").first()
    assert latest is not None and latest.number == 2
    assert latest.author == world.bob.user and latest.author_name == "bob (admin)"


def test_it_puts_a_bad_pattern_error_next_to_its_field(world: World) -> None:
    client = login(world.alice.user)
    policy = Policy.objects.get(database=world.a_db)
    response = client.post(
        f"/admin/policies/policy/{policy.pk}/change/",
        policy_form(policy, table_limits='[["re:(", 1]]', ip_rules='[{"allow": ["x"]}]'),
    )
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "invalid regular expression" in form.errors["table_limits"][0]
    assert "ip_rules" in form.errors
    assert "Confirm and save" not in response.content.decode()


def test_it_reverts_a_policy_from_the_history(world: World) -> None:
    client = login(world.alice.user)
    policy = Policy.objects.get(database=world.a_db)
    client.post(
        f"/admin/policies/policy/{policy.pk}/change/",
        {**policy_form(policy, honeytoken_values='["canary-1"]'), "_confirm_diff": "1"},
    )
    page = client.get(f"/admin/policies/policy/{policy.pk}/revert/1/").content.decode()
    assert "-values = [" in page
    assert client.post(f"/admin/policies/policy/{policy.pk}/revert/1/").status_code == 302
    policy.refresh_from_db()
    assert policy.honeytoken_values == [] and policy.versions.count() == 3


def test_it_sets_a_proxy_users_password_as_a_verifier(world: World) -> None:
    client = login(world.alice.user)
    response = client.post(
        "/admin/proxyusers/proxyuser/add/",
        {
            "tenant": world.a.pk,
            "name": "a_admin_made",
            "password1": "pw-9",
            "password2": "pw-9",
            "scram_verifier": "",
            "databases": [world.a_db.pk],
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    user = ProxyUser.objects.get(name="a_admin_made")
    assert scram.verify_password("pw-9", user.scram_verifier)
    response = client.post(
        "/admin/proxyusers/proxyuser/add/",
        {"tenant": world.a.pk, "name": "a_bad", "scram_verifier": "SCRAM-SHA-256$x"},
    )
    assert "scram_verifier" in response.context["adminform"].form.errors


def test_it_imports_and_exports_a_tenants_toml(world: World) -> None:
    client = login(world.alice.user)
    text = (
        '[[databases]]\nname = "a_imported"\nupstream = "postgresql://u:pw@h/d"\n\n'
        "[table_limits]\nusers = 3\n"
    )
    response = client.post(f"/admin/tenants/tenant/{world.a.pk}/import-toml/", {"text": text})
    assert response.status_code == 302
    assert Policy.objects.get(database__name="a_imported").table_limits == [["users", 3]]
    response = client.post(
        f"/admin/tenants/tenant/{world.a.pk}/import-toml/",
        {"text": '[[databases]]\nname = "x"\nupstream = "mysql://h"\n'},
    )
    assert response.status_code == 200
    assert "line 3, key databases[0].upstream" in response.content.decode()
    response = client.post(
        "/admin/tenants/tenant/",
        {"action": "export_toml", "_selected_action": [world.a.pk]},
    )
    assert response["Content-Type"] == "application/toml"
    assert 'name = "a_imported"' in response.content.decode()


def test_it_shows_which_worker_runs_which_version(world: World, root: User) -> None:
    ConfigState.objects.update_or_create(pk=1, defaults={"version": 5, "published_version": 5})
    for name, version in (("w-current", 5), ("w-behind", 4)):
        Worker.objects.create(
            worker_id=name,
            config_version=version,
            started=timezone.now(),
            last_heartbeat=timezone.now(),
        )
    page = login(root).get("/admin/fleet/worker/").content.decode()
    assert "published version <strong>5</strong>" in page
    current = page.index("w-current")
    behind = page.index("w-behind")
    # rows: w-behind shows a "no" icon for current, w-current a "yes" icon
    assert "icon-no" in page[behind : page.index("</tr>", behind)]
    assert "icon-yes" in page[current : page.index("</tr>", current)]
    assert login(world.alice.user).get("/admin/fleet/worker/").status_code == 403


def test_it_shows_charlie_nothing_of_tenant_a(world: World) -> None:
    client = login(world.charlie.user)
    policy = Policy.objects.get(database=world.a_db)
    for url, hidden in (
        ("/admin/databases/database/", "a_orders"),
        ("/admin/proxyusers/proxyuser/", "a_app"),
        ("/admin/policies/policy/", "a_orders"),
        ("/admin/tenants/tenant/", "Tenant A"),
        ("/admin/tenants/apitoken/", "alice"),
    ):
        response = client.get(url)
        assert response.status_code == 200 and hidden not in response.content.decode(), url
    assert "b_billing" in client.get("/admin/databases/database/").content.decode()
    for url in (
        f"/admin/databases/database/{world.a_db.pk}/change/",
        f"/admin/proxyusers/proxyuser/{world.a_user.pk}/change/",
        f"/admin/policies/policy/{policy.pk}/change/",
        f"/admin/tenants/tenant/{world.a.pk}/change/",
    ):
        response = client.get(url, follow=True)
        assert "doesn\u2019t exist" in response.content.decode(), url
        assert "a_orders" not in response.content.decode()
    assert client.get(f"/admin/policies/policy/{policy.pk}/revert/1/").status_code == 404
    assert client.get(f"/admin/tenants/tenant/{world.a.pk}/import-toml/").status_code == 404
    response = client.post(
        f"/admin/policies/policy/{policy.pk}/change/",
        {**policy_form(policy, table_limits='[["x", 1]]'), "_confirm_diff": "1"},
    )
    policy.refresh_from_db()
    assert policy.table_limits == []
    # nor can charlie give his users tenant A's database
    response = client.post(
        "/admin/proxyusers/proxyuser/add/",
        {
            "tenant": world.b.pk,
            "name": "b_x",
            "password1": "p",
            "password2": "p",
            "databases": [world.a_db.pk],
        },
    )
    assert not ProxyUser.objects.filter(name="b_x").exists()


def test_it_serves_the_admins_and_the_dashboards_static_files() -> None:
    """daphne serves no static files: the control plane does (WhiteNoise), so the admin
    has its CSS wherever it runs."""
    client = Client()
    paths = ("/static/admin/css/base.css", "/static/dashboards/dashboard.js")
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"".join(response.streaming_content)  # type: ignore[attr-defined]
