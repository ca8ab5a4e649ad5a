"""ASGI entry point (daphne): HTTP through Django; WebSocket streams (``/api/v1/stream``)
through ``controlplane.streams.routing``."""

from __future__ import annotations

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.runtime")

django_asgi = get_asgi_application()  # sets Django up before the consumers are imported

from controlplane.streams.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi, "websocket": websocket_application()})
