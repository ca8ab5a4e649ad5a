"""URLs of the policies API (and the policy TOML under each database)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from controlplane.policies.api.views import PolicyTomlView, PolicyViewSet

router = SimpleRouter()
router.register("policies", PolicyViewSet, basename="policy")
urlpatterns = [
    path("databases/<int:pk>/policy.toml", PolicyTomlView.as_view(), name="policy-toml"),
    *router.urls,
]
