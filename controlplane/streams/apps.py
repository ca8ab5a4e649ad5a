"""App configuration of ``streams``."""

from __future__ import annotations

from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "controlplane.streams"
    label = "streams"
    verbose_name = "Streams"
