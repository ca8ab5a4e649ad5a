"""Settings for the test suite: fixed keys, fast password hashing, no real Redis by default.

The database is pointed at the suite's private PostgreSQL cluster by
``tests/controlplane/conftest.py``; Redis tests start their own server and override
``REDIS_URL``. Nothing here reads the environment.
"""

from __future__ import annotations

from controlplane.settings.base import *  # noqa: F403

SECRET_KEY = "test-only-django-secret-key"
SQLPROXY_SECRET_KEYS = ["dGVzdC1vbmx5LWZlcm5ldC1rZXktMzItYnl0ZXMhIT0="]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Port 9 (discard) on loopback: nothing answers, so a test that forgets its Redis fails loudly.
REDIS_URL = "redis://127.0.0.1:9/0"
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "ATOMIC_REQUESTS": True,
    }
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
# Test-only management commands (a flush that survives a deadlock with the background writers
# of the end-to-end tests).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.controlplane.testapp"]  # noqa: F405
