"""A database as clients see it (``name``) and the upstream server it forwards to.

``name`` is unique across the fleet: every worker serves every tenant's databases, and the
startup packet's dbname picks one. The upstream password is stored encrypted (``crypto``);
``clean()`` validates the whole entry through the worker's own ``Database`` struct.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import msgspec
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from controlplane.databases import crypto
from controlplane.tenants.models import Tenant
from proxyworker.config.schema import Database as DatabaseConfig

POOL_FIELDS = (
    "pool_mode",
    "pool_size",
    "connect_timeout",
    "pool_timeout",
    "server_idle_timeout",
    "server_reset_query",
    "max_prepared_statements",
)
"""Pool settings: the same name and meaning here as in the worker's ``[[databases]]``."""


class Database(models.Model):
    class SslMode(models.TextChoices):
        DISABLE = "disable"
        PREFER = "prefer"
        REQUIRE = "require"
        VERIFY_CA = "verify-ca"
        VERIFY_FULL = "verify-full"

    class PoolMode(models.TextChoices):
        SESSION = "session"
        TRANSACTION = "transaction"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="databases")
    name = models.CharField(
        max_length=63, unique=True, help_text="What clients put in dbname (unique fleet-wide)."
    )
    host = models.CharField(max_length=255, help_text="Upstream server host.")
    port = models.PositiveIntegerField(
        default=5432, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    dbname = models.CharField(max_length=63, help_text="Database name on the upstream server.")
    user = models.CharField(max_length=63, help_text="Role the worker logs in as upstream.")
    password_encrypted = models.TextField(blank=True, default="", editable=False)
    sslmode = models.CharField(max_length=12, choices=SslMode.choices, default=SslMode.PREFER)
    sslrootcert = models.CharField(
        max_length=500, blank=True, default="", help_text="CA file on the worker (verify-*)."
    )
    pool_mode = models.CharField(max_length=12, choices=PoolMode.choices, default="session")
    pool_size = models.PositiveIntegerField(default=20, validators=[MinValueValidator(1)])
    connect_timeout = models.FloatField(default=5.0)
    pool_timeout = models.FloatField(default=30.0)
    server_idle_timeout = models.FloatField(default=600.0)
    server_reset_query = models.CharField(max_length=500, blank=True, default="DISCARD ALL")
    max_prepared_statements = models.PositiveIntegerField(default=500)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def password(self) -> str | None:
        return crypto.decrypt(self.password_encrypted) if self.password_encrypted else None

    def set_password(self, password: str | None) -> None:
        self.password_encrypted = crypto.encrypt(password) if password else ""

    def upstream_url(self) -> str:
        """The worker's ``upstream`` URL, with the decrypted password."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = {"sslmode": self.sslmode}
        if self.sslrootcert:
            query["sslrootcert"] = self.sslrootcert
        return (
            f"postgresql://{auth}@{host}:{self.port}/{quote(self.dbname, safe='')}"
            f"?{urlencode(query)}"
        )

    def to_config(self) -> DatabaseConfig:
        """This database as the worker's struct, without its policy (see policies)."""
        pool = {key: getattr(self, key) for key in POOL_FIELDS}
        return DatabaseConfig(name=self.name, upstream=self.upstream_url(), **pool)

    def clean(self) -> None:
        super().clean()
        errors: dict[str, str] = {}
        for key in ("connect_timeout", "pool_timeout", "server_idle_timeout"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                errors[key] = "Must be positive."
        if "\x00" in (self.name or "") + (self.dbname or "") + (self.user or ""):
            errors["name"] = "Null characters are not allowed."
        if errors:
            raise ValidationError(errors)
        if not (self.host and self.user and self.dbname and self.name):
            return  # the required-field errors are reported on their fields
        try:
            msgspec.convert(msgspec.to_builtins(self.to_config()), DatabaseConfig)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValidationError({"host": f"Not a valid upstream: {exc}"}) from None
