"""The dashboard end to end in real headless Chromium (Debian's, driven by Playwright): alice
logs in, the page goes live over /api/v1/stream, a statement sent through a real worker is
blocked, and its row appears in the audit tail within a second, without any polling. The
screenshot is kept in build/test-artifacts/."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import psycopg
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.controlplane.conftest import PASSWORD, World
from tests.controlplane.e2e import Stack, make_tenant_a_real, running_stack, wait_for_enforcement
from tests.support.pgcluster import PgCluster
from tests.support.redisserver import RedisServer
from tests.support.worker import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts")
WORKER = "w-browser"


@pytest.fixture(scope="module")
def stack(django_db_setup: None, upstream: PgCluster, redis_server: RedisServer) -> Iterator[Stack]:
    if redis_server.process is None:
        redis_server.start()
    with running_stack(upstream, redis_server, WORKER) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.fail("chromium not installed: run `make install` (scripts/system-deps.sh)")
    # Playwright's sync API keeps an event loop in this thread, which Django's ORM takes for an
    # async context; the ORM calls of this module (and the database flush after each test)
    # are plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def test_a_blocked_statement_appears_in_the_live_tail_within_a_second(
    browser: Browser, stack: Stack, world: World, upstream: PgCluster, settings: object
) -> None:
    settings.REDIS_URL = stack.redis.url  # type: ignore[attr-defined]
    make_tenant_a_real(world, upstream)
    # daphne runs the production settings, whose hashers do not include the suite's fast MD5
    settings.PASSWORD_HASHERS = [  # type: ignore[attr-defined]
        "django.contrib.auth.hashers.PBKDF2PasswordHasher"
    ]
    world.alice.user.set_password(PASSWORD)
    world.alice.user.save()
    wait_for_enforcement(stack)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    base = stack.control_plane.http_url
    page.goto(f"{base}/dashboard/")
    assert "/admin/login/" in page.url  # logged-in admins only
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/dashboard/")
    expect(page.get_by_test_id("connection")).to_have_text("live", timeout=10_000)
    # the metrics stream: the worker and the config version it enforces
    expect(page.locator(f'#workers tr[data-worker="{WORKER}"]')).to_contain_text(
        "v", timeout=10_000
    )
    blocked_before = int(page.get_by_test_id("blocked").inner_text())

    with psycopg.connect(stack.dsn(), autocommit=True) as conn:
        refused = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT k AS browser_marker FROM secret_keys")
    row = page.locator("#tail tr", has_text="browser_marker")
    row.wait_for(timeout=5_000)
    seen = time.monotonic() - refused
    assert seen < 1.0, f"the blocked statement took {seen:.2f}s to reach the tail"
    expect(row.locator("td.decision")).to_have_text("deny")
    expect(row).to_contain_text("honeytoken_table")
    expect(row).to_contain_text("a_orders")
    expect(page.get_by_test_id("blocked")).to_have_text(str(blocked_before + 1))

    os.makedirs(ARTIFACTS, exist_ok=True)
    page.wait_for_timeout(1500)  # a few chart points
    page.screenshot(path=os.path.join(ARTIFACTS, "dashboard.png"), full_page=True)
    assert errors == []
    page.close()
