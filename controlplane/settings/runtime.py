"""Settings of a running control plane (manage.py, daphne, Celery): everything from ``base``,
plus the check that the secrets are present, so a production process refuses to start without
them. ``test`` is the test suite's variant."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from controlplane.settings.base import *  # noqa: F403
from controlplane.settings.base import SECRET_KEY, SQLPROXY_SECRET_KEYS

if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required (or SQLPROXY_DEBUG=1)"
    )
if not SQLPROXY_SECRET_KEYS:
    raise ImproperlyConfigured(
        "SQLPROXY_SECRET_KEY (or SQLPROXY_SECRET_KEY_FILE) is required (or SQLPROXY_DEBUG=1): "
        "the Fernet key that encrypts upstream credentials; make one with python -c "
        "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
    )
