"""URLs of the databases API."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from controlplane.databases.api.views import DatabaseViewSet

router = SimpleRouter()
router.register("databases", DatabaseViewSet, basename="database")
urlpatterns = router.urls
