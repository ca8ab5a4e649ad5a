"""Settings read from the environment, in a fresh interpreter each (they are read at import):
the outgoing-mail settings, their password from a file, the database and Redis URLs from files
(mounted secrets), and contradictions refused with the names to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PRINT = (
    "import json; from controlplane.settings import base as s; print(json.dumps([s.EMAIL_HOST,"
    " s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_HOST_PASSWORD, s.EMAIL_USE_TLS, s.EMAIL_USE_SSL]))"
)


_PRINT_SOURCES = (
    "import json; from controlplane.settings import base as s; d = s.DATABASES['default'];"
    " print(json.dumps([d['NAME'], d['USER'], d['PASSWORD'], d['HOST'], d['PORT'],"
    " d['OPTIONS'], s.REDIS_URL, s.CELERY_BROKER_URL]))"
)
_READ_HERE = ("DJANGO_EMAIL_", "DATABASE_URL", "REDIS_URL")


def read_settings(print_: str = _PRINT, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_READ_HERE)}
    return subprocess.run(
        [sys.executable, "-c", print_],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_outgoing_mail_is_configured_from_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("from-a-file\n")
    done = read_settings(
        DJANGO_EMAIL_HOST="smtp.example.com",
        DJANGO_EMAIL_PORT="587",
        DJANGO_EMAIL_HOST_USER="reports",
        DJANGO_EMAIL_HOST_PASSWORD_FILE=str(secret),
        DJANGO_EMAIL_USE_TLS="true",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "smtp.example.com", 587, "reports", "from-a-file", True, False,
    ]  # fmt: skip
    defaults = read_settings()
    assert defaults.returncode == 0, defaults.stderr
    assert json.loads(defaults.stdout) == ["localhost", 25, "", "", False, False]


def test_starttls_and_implicit_tls_together_are_refused() -> None:
    done = read_settings(DJANGO_EMAIL_USE_TLS="1", DJANGO_EMAIL_USE_SSL="1")
    assert done.returncode != 0
    assert "DJANGO_EMAIL_USE_TLS and DJANGO_EMAIL_USE_SSL: set one, not both" in done.stderr


def test_the_database_and_redis_urls_can_come_from_files(tmp_path: Path) -> None:
    database = tmp_path / "database-url"
    database.write_text("postgresql://cp:p%40ss@db.internal:5433/sqlproxy?sslmode=verify-full\n")
    redis = tmp_path / "redis-url"
    redis.write_text("redis://:r-secret@redis.internal:6379/2\n")
    done = read_settings(_PRINT_SOURCES, DATABASE_URL_FILE=str(database), REDIS_URL_FILE=str(redis))
    assert done.returncode == 0, done.stderr
    redis_url = "redis://:r-secret@redis.internal:6379/2"
    assert json.loads(done.stdout) == [
        "sqlproxy", "cp", "p@ss", "db.internal", "5433", {"sslmode": "verify-full"},
        redis_url, redis_url,
    ]  # fmt: skip
    both = read_settings(_PRINT_SOURCES, REDIS_URL="redis://other", REDIS_URL_FILE=str(redis))
    assert both.returncode != 0
    assert "give REDIS_URL or REDIS_URL_FILE, not both" in both.stderr
    missing = read_settings(_PRINT_SOURCES, DATABASE_URL_FILE=str(tmp_path / "nowhere"))
    assert missing.returncode != 0
    assert "DATABASE_URL_FILE: cannot read" in missing.stderr
