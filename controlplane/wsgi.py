"""WSGI entry point (for WSGI servers and the test suite's schemathesis run)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.runtime")

application = get_wsgi_application()
