"""URLs of the alerts API."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from controlplane.alerts.api.views import AlertViewSet, WebhookEndpointViewSet

router = SimpleRouter()
router.register("webhooks", WebhookEndpointViewSet, basename="webhookendpoint")
router.register("alerts", AlertViewSet, basename="alert")
urlpatterns = router.urls
