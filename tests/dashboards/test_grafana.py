"""The Grafana dashboard and the Prometheus alert rules in dashboards/grafana/ refer only to
metrics that exist: every ``sqlproxy_*`` series name must be one the worker exports (read
from the worker's own Prometheus registry, suffixes included: a counter is ``_total``, a
histogram ``_bucket``/``_sum``/``_count``), and every ``django_http_*`` one django-prometheus'."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, Metric

import proxyworker.audit.spool
import proxyworker.audit.stream
import proxyworker.fleet
import proxyworker.metrics  # noqa: F401 - each registers its metrics

GRAFANA = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
SERIES = re.compile(r"\b((?:sqlproxy|django_http)_[a-z0-9_]+)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def exported(family: Metric) -> set[str]:
    return {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}


def worker_series() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("sqlproxy_"):
            names |= exported(family)
    return names


def controlplane_series() -> set[str]:
    from django_prometheus.middleware import Metrics

    Metrics.get_instance()  # registers the middleware's metrics in the default registry
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("django_http_"):
            names |= exported(family)
    return names


def expressions() -> dict[str, list[str]]:
    dashboard = json.loads((GRAFANA / "sqlproxy.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    exprs_rules = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {"sqlproxy.json": exprs, "alerts.yml": exprs_rules}


def test_every_sqlproxy_metric_in_the_files_exists_in_the_worker() -> None:
    known = worker_series()
    assert "sqlproxy_queries_total" in known and "sqlproxy_query_duration_seconds_bucket" in known
    used = set()
    for name, exprs in expressions().items():
        assert exprs, f"{name} has no expressions"
        for expr in exprs:
            for series in SERIES.findall(expr):
                if series.startswith("sqlproxy_"):
                    used.add(series)
                    assert series in known, f"{name}: {series} is not exported by the worker"
    assert len(used) >= 10


def test_every_control_plane_metric_in_the_files_exists() -> None:
    known = controlplane_series()
    used = [
        series
        for exprs in expressions().values()
        for expr in exprs
        for series in SERIES.findall(expr)
        if series.startswith("django_http_")
    ]
    assert used
    for series in used:
        assert series in known, f"{series} is not exported by django-prometheus"


def test_the_alert_rules_are_well_formed() -> None:
    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert rule["alert"].startswith("Sqlproxy") and rule["annotations"]["summary"]
            assert rule["labels"]["severity"] in ("warning", "critical")
