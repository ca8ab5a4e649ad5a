"""Typed readers for environment variables: the only way settings read the environment.

Each helper fails fast with ``ImproperlyConfigured`` naming the variable when its value cannot be
used, so a typo stops the process at start instead of surfacing as a wrong behaviour later.
``env_secret`` (and ``env_database``, whose URL may hold a password) also reads ``NAME_FILE`` (a
path, as Docker and Kubernetes secrets are mounted).
Nothing here reads a variable at import time.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str) -> str | None:
    """``NAME`` or the contents of the file named by ``NAME_FILE`` (not both)."""
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value is not None and path is not None:
        raise ImproperlyConfigured(f"give {name} or {name}_FILE, not both")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path!r}: {exc}") from None
    if value is not None and not value.strip():
        raise ImproperlyConfigured(f"{name}: is empty")
    return value


def parse_database_url(name: str, url: str) -> dict[str, Any]:
    """``postgresql://user:password@host:port/dbname?sslmode=...`` or ``sqlite:///path``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        elif path.startswith("/"):
            path = path[1:]
        if not path:
            raise ImproperlyConfigured(f"{name}: sqlite URL needs a path (sqlite:///file.db)")
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    if parts.scheme not in ("postgresql", "postgres"):
        raise ImproperlyConfigured(
            f"{name}: expected postgresql://user:password@host:port/dbname or sqlite:///path"
        )
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name}: invalid port") from None
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ImproperlyConfigured(f"{name}: no database name in the URL")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": dbname,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def env_database(name: str, default: str) -> dict[str, Any]:
    """A database URL (it may hold a password): ``NAME`` or ``NAME_FILE``, as ``env_secret``."""
    return parse_database_url(name, env_secret(name) or default)
