"""Settings read from the environment, in a fresh interpreter each (they are read at import):
the outgoing-mail settings, their password from a file, and a contradiction refused with the
names to fix."""

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


def read_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_EMAIL_")}
    return subprocess.run(
        [sys.executable, "-c", _PRINT],
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
