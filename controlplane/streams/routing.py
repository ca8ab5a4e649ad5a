"""WebSocket routes: ``/api/v1/stream``. The session middleware is there for the dashboard's
logged-in admins; token callers need no cookie (see ``principal``)."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import path

from controlplane.streams.consumers import StreamConsumer

websocket_urlpatterns = [path("api/v1/stream", StreamConsumer.as_asgi())]


def websocket_application() -> Any:
    return AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
