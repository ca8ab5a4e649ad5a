"""Settings of the control plane. Every environment variable is read here, through the typed
helpers of ``env`` (docs/controlplane.md lists them); nothing else reads ``os.environ``.

Defaults suit a laptop: SQLite next to the checkout, the local Redis. With ``SQLPROXY_DEBUG``
off (production), the two secrets must be given: ``controlplane.settings`` refuses to start
without them (``controlplane.settings.test`` sets its own).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from controlplane.settings.env import (
    env_bool,
    env_database,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

DEBUG = env_bool("SQLPROXY_DEBUG", False)

_DEV_DJANGO_KEY = "insecure-development-key-do-not-use-in-production"
# A fixed Fernet key for development only (DEBUG): never protects real credentials.
_DEV_FERNET_KEY = "ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZHVjdGk="

SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or (_DEV_DJANGO_KEY if DEBUG else "")


def _fernet_keys(raw: str | None) -> list[str]:
    if raw is None:
        return [_DEV_FERNET_KEY] if DEBUG else []
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                "SQLPROXY_SECRET_KEY: each comma-separated key must be a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    return keys


SQLPROXY_SECRET_KEYS = _fernet_keys(env_secret("SQLPROXY_SECRET_KEY"))
"""The first key encrypts; all of them decrypt (rotation: prepend a new key, re-save)."""

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "controlplane.tenants",
    "controlplane.databases",
    "controlplane.proxyusers",
    "controlplane.policies",
    "controlplane.audit",
    "controlplane.fleet",
    "controlplane.streams",
    "controlplane.alerts",
    "controlplane.reports",
    "dashboards",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, dashboard) from the process itself: daphne serves none.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "controlplane" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'controlplane.db'}")}
# One transaction per request: a request's changes are published once, after they commit.
DATABASES["default"]["ATOMIC_REQUESTS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT", "") or None  # for collectstatic, if wanted
# Served straight from the apps' static directories (found once, at start): no collectstatic
# step between a checkout and a running control plane.
WHITENOISE_USE_FINDERS = True

REDIS_URL = env_secret("REDIS_URL") or "redis://127.0.0.1:6379/0"  # (or REDIS_URL_FILE)

# Celery: Redis is the broker; the retry and purge tasks run on beat.
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "publish-pending-snapshot": {
        "task": "controlplane.fleet.tasks.publish_pending",
        "schedule": env_float("SQLPROXY_PUBLISH_RETRY_SECONDS", 10.0, minimum=1.0),
    },
    "purge-expired-audit-events": {
        "task": "controlplane.audit.tasks.purge_expired_events",
        "schedule": 3600.0,
    },
    "send-due-reports": {
        "task": "controlplane.reports.tasks.send_due_reports",
        "schedule": 300.0,
    },
    "sweep-stalled-webhook-deliveries": {
        "task": "controlplane.alerts.tasks.sweep_stalled_deliveries",
        "schedule": 60.0,
    },
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # channels-redis waits for a socket's messages with a 5 s blocking pop; redis-py 8
        # reads with a 5 s socket timeout by default, which lost that race and closed every
        # socket idle for 5 s (1011). The timeout stays, above the pop, for a dead Redis.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15.0}]},
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["controlplane.tenants.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.tenants.api.auth.IsTenantMember"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "controlplane.api_pagination.Pages",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "SQL Proxy control plane API",
    "DESCRIPTION": "Tenants' databases, proxy users, policies, tokens and audit history.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# SQL Proxy
SQLPROXY_AUDIT_RETENTION_DAYS = env_int("SQLPROXY_AUDIT_RETENTION_DAYS", 30, minimum=1)
SQLPROXY_HEARTBEAT_HISTORY = env_int("SQLPROXY_HEARTBEAT_HISTORY", 100, minimum=1)
"""Heartbeats kept per worker (older ones are trimmed at ingest)."""
SQLPROXY_WORKER_STALE_SECONDS = env_int("SQLPROXY_WORKER_STALE_SECONDS", 30, minimum=1)
"""A worker silent for longer is shown as down on the fleet page."""
SQLPROXY_FLEET = {
    # Process-level sections of the compiled snapshot (not owned by any tenant).
    "listen_host": env_str("SQLPROXY_FLEET_LISTEN_HOST", "0.0.0.0"),
    "listen_port": env_int("SQLPROXY_FLEET_LISTEN_PORT", 6432, minimum=0),
    "admin_host": env_str("SQLPROXY_FLEET_ADMIN_HOST", "127.0.0.1"),
    "admin_port": env_int("SQLPROXY_FLEET_ADMIN_PORT", 9187, minimum=-1),
    "audit_sample_allowed": env_float("SQLPROXY_FLEET_AUDIT_SAMPLE_ALLOWED", 0.0, minimum=0.0),
}
# Streams, alerts and reports (docs/stream.md)
SQLPROXY_STREAM_WORKER = env_str("SQLPROXY_STREAM_WORKER", "127.0.0.1:6432")
"""host:port of the worker that ``query`` streams connect through."""
SQLPROXY_STREAM_WORKER_SSLMODE = env_str("SQLPROXY_STREAM_WORKER_SSLMODE", "prefer")
SQLPROXY_ALERT_THROTTLE_SECONDS = env_int("SQLPROXY_ALERT_THROTTLE_SECONDS", 300, minimum=0)
"""One alert per rule and key (database, rule, client) within this many seconds; repeats
are counted on it instead of sent."""
SQLPROXY_REPORT_EMAIL_FROM = env_str("SQLPROXY_REPORT_EMAIL_FROM", "sqlproxy@localhost")
# Outgoing email (scheduled reports), through Django's SMTP backend.
EMAIL_HOST = env_str("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("DJANGO_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("DJANGO_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("DJANGO_EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("DJANGO_EMAIL_USE_TLS", False)
"""STARTTLS on a plain connection (port 587)."""
EMAIL_USE_SSL = env_bool("DJANGO_EMAIL_USE_SSL", False)
"""TLS from the first byte (port 465)."""
EMAIL_TIMEOUT = env_int("DJANGO_EMAIL_TIMEOUT", 10, minimum=1)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("DJANGO_EMAIL_USE_TLS and DJANGO_EMAIL_USE_SSL: set one, not both")
SQLPROXY_WEBHOOK_RETRY_BASE_SECONDS = env_float(
    "SQLPROXY_WEBHOOK_RETRY_BASE_SECONDS", 30.0, minimum=0.0
)
"""First retry of a failed webhook after this long, then doubling (capped at 10 minutes)."""
SQLPROXY_WEBHOOK_MAX_ATTEMPTS = env_int("SQLPROXY_WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("SQLPROXY_LOG_LEVEL", "INFO").upper()},
}
