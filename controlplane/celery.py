"""The Celery application: Redis as broker, tasks found in each app's ``tasks.py``.

Tasks stay thin (the logic is in ``services.py``); the beat schedule is in the settings.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.runtime")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
