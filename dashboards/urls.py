"""URLs of the dashboard: the page and its own static files."""

from __future__ import annotations

from django.urls import path

from dashboards import views

app_name = "dashboards"
urlpatterns = [
    path("", views.dashboard, name="index"),
    path("assets/<path:name>", views.asset, name="asset"),
]
