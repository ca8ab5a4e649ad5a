"""Proxy users: the names clients log in to a worker with, and which databases they may use.

Only a SCRAM-SHA-256 verifier is stored. ``name`` is unique fleet-wide, since every worker
serves every tenant. A user reaches only databases of its own tenant: the ones listed, or all
of them with ``all_databases``; a user with neither is left out of the snapshot (the worker
reads an empty list as "every database", which would cross tenants).
"""

from __future__ import annotations

import msgspec
from django.core.exceptions import ValidationError
from django.db import models

from controlplane.databases import crypto
from controlplane.databases.models import Database
from controlplane.proxyusers import scram
from controlplane.tenants.models import Tenant
from proxyworker.config.schema import User as UserConfig


class ProxyUser(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="proxy_users")
    name = models.CharField(
        max_length=63, unique=True, help_text="What clients send as user (unique fleet-wide)."
    )
    scram_verifier = models.CharField(
        max_length=300,
        help_text="SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
    )
    databases = models.ManyToManyField(Database, blank=True, related_name="proxy_users")
    all_databases = models.BooleanField(
        default=False, help_text="May use every database of its tenant, present and future."
    )
    upstream_user = models.CharField(
        max_length=63,
        blank=True,
        default="",
        help_text="Upstream role this user's connections log in as; empty: each database's "
        "own upstream user.",
    )
    upstream_password_encrypted = models.TextField(blank=True, default="", editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "proxy user"

    def __str__(self) -> str:
        return self.name

    def set_password(self, password: str) -> None:
        self.scram_verifier = scram.make_verifier(password)

    @property
    def upstream_password(self) -> str | None:
        if not self.upstream_password_encrypted:
            return None
        return crypto.decrypt(self.upstream_password_encrypted)

    def set_upstream_password(self, password: str | None) -> None:
        """Encrypted at rest, like a database's upstream password."""
        self.upstream_password_encrypted = crypto.encrypt(password) if password else ""

    def clean(self) -> None:
        super().clean()
        if not self.name or not self.scram_verifier:
            return
        try:
            msgspec.convert({"name": self.name, "scram_verifier": self.scram_verifier}, UserConfig)
        except msgspec.ValidationError as exc:
            raise ValidationError({"scram_verifier": str(exc).split(" - at ")[0]}) from None

    def database_names(self) -> list[str]:
        """The databases this user may use, as the snapshot lists them."""
        if self.all_databases:
            return sorted(db.name for db in self.tenant.databases.all())
        return sorted(db.name for db in self.databases.all())

    def to_config(self) -> UserConfig | None:
        names = self.database_names()
        if not names:
            return None
        return UserConfig(
            name=self.name,
            scram_verifier=self.scram_verifier,
            databases=names,
            upstream_user=self.upstream_user or None,
            upstream_password=self.upstream_password if self.upstream_user else None,
        )
