"""URLs of the proxy users API."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from controlplane.proxyusers.api.views import ProxyUserViewSet

router = SimpleRouter()
router.register("proxy-users", ProxyUserViewSet, basename="proxyuser")
urlpatterns = router.urls
