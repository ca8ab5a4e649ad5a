"""Tenant membership, API tokens, and the worker TOML of a whole tenant.

``import_worker_toml`` reads the file a standalone worker reads (``proxyworker.config.loads``,
so errors carry file, line and key) and creates or updates the tenant's databases, users and
policies; ``export_worker_toml`` writes them back in that format. Process-level sections
(``[listen]``, ``[admin]``, ``[logging]``, ``[audit]``, ``[guard]``) belong to a worker, not to
a tenant: an import reports them as ignored and an export leaves them out. Top-level policy
sections apply to every database without ``[databases.policy]``, as in the worker.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

import msgspec
import tomli_w
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import QuerySet

from controlplane.databases.models import POOL_FIELDS, Database
from controlplane.policies.services import ensure_policy, policy_sections, update_policy
from controlplane.proxyusers import scram
from controlplane.proxyusers.models import ProxyUser
from controlplane.tenants.models import ApiToken, Membership, Tenant
from proxyworker.config.loader import ConfigError, loads
from proxyworker.config.schema import Database as DatabaseConfig
from proxyworker.config.schema import WorkerConfig

PROCESS_SECTIONS = ("listen", "admin", "logging", "audit", "guard")

# -- membership ------------------------------------------------------------------------------


def tenants_of(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Tenant]:
    """The tenants whose objects ``user`` may see (all of them for a superuser)."""
    if not user.is_authenticated:
        return Tenant.objects.none()
    if getattr(user, "is_superuser", False):
        return Tenant.objects.all()
    return Tenant.objects.filter(memberships__user=user)


def role_in(user: AbstractBaseUser | AnonymousUser, tenant: Tenant) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(tenant=tenant, user=user).values_list("role", flat=True).first()
    )


def create_token(tenant: Tenant, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token; the plaintext is returned here and never again."""
    token = ApiToken(tenant=tenant, user=user, name=name)
    plaintext = token.generate()
    token.save()
    return token, plaintext


# -- worker TOML -----------------------------------------------------------------------------


@dataclass
class ImportReport:
    databases_created: list[str] = field(default_factory=list)
    databases_updated: list[str] = field(default_factory=list)
    users_created: list[str] = field(default_factory=list)
    users_updated: list[str] = field(default_factory=list)
    ignored_sections: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{len(self.databases_created)} database(s) created",
            f"{len(self.databases_updated)} updated",
            f"{len(self.users_created)} user(s) created",
            f"{len(self.users_updated)} updated",
        ]
        if self.ignored_sections:
            parts.append("ignored (worker settings): " + ", ".join(self.ignored_sections))
        return "; ".join(parts)


def _line_of(text: str, name: str) -> int | None:
    pattern = re.compile(rf"""^\s*name\s*=\s*["']{re.escape(name)}["']""")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def import_worker_toml(
    tenant: Tenant,
    text: str,
    *,
    path: str = "sqlproxy.toml",
    author: AbstractBaseUser | AnonymousUser | None = None,
    via: str = "TOML import",
) -> ImportReport:
    """Create or update the tenant's databases, users and policies from a worker TOML.

    Raises ``ConfigError`` (path, line, key, message); nothing is changed then.
    """
    config = loads(text, path)  # validation with located errors
    # The same file without resolve_paths(): relative file names are kept as written.
    raw = tomllib.loads(text)
    unresolved = msgspec.convert(raw, WorkerConfig)
    report = ImportReport(ignored_sections=[k for k in PROCESS_SECTIONS if k in raw])
    default_policy = config.default_policy()
    with transaction.atomic():
        for index, entry in enumerate(unresolved.databases):
            taken = Database.objects.filter(name=entry.name).exclude(tenant=tenant).exists()
            if taken:
                raise ConfigError(
                    path,
                    _line_of(text, entry.name),
                    f"databases[{index}].name",
                    f"database name {entry.name!r} is already taken",
                )
            target = entry.target()
            db = Database.objects.filter(name=entry.name, tenant=tenant).first()
            created = db is None
            db = db or Database(tenant=tenant, name=entry.name)
            db.host, db.port, db.dbname, db.user = (
                target.host,
                target.port,
                target.dbname,
                target.user,
            )
            db.set_password(target.password)
            db.sslmode, db.sslrootcert = target.sslmode, target.sslrootcert or ""
            for key in POOL_FIELDS:
                setattr(db, key, getattr(entry, key))
            db.save()
            (report.databases_created if created else report.databases_updated).append(db.name)
            update_policy(
                ensure_policy(db),
                entry.policy if entry.policy is not None else default_policy,
                author=author,
                via=via,
                note=f"imported from {path}",
            )
        tenant_dbs = {db.name: db for db in tenant.databases.all()}
        for index, entry in enumerate(unresolved.users):
            if ProxyUser.objects.filter(name=entry.name).exclude(tenant=tenant).exists():
                raise ConfigError(
                    path,
                    _line_of(text, entry.name),
                    f"users[{index}].name",
                    f"user name {entry.name!r} is already taken",
                )
            missing = [name for name in entry.databases if name not in tenant_dbs]
            if missing:
                raise ConfigError(
                    path,
                    _line_of(text, entry.name),
                    f"users[{index}].databases",
                    f"unknown database(s) of this tenant: {', '.join(missing)}",
                )
            user = ProxyUser.objects.filter(name=entry.name, tenant=tenant).first()
            created = user is None
            user = user or ProxyUser(tenant=tenant, name=entry.name)
            if entry.scram_verifier is not None:
                user.scram_verifier = entry.scram_verifier
            elif not (
                user.scram_verifier
                and scram.verify_password(entry.password or "", user.scram_verifier)
            ):
                user.set_password(entry.password or "")
            user.all_databases = not entry.databases
            user.upstream_user = entry.upstream_user or ""
            user.set_upstream_password(entry.upstream_password)
            user.save()
            user.databases.set([tenant_dbs[name] for name in entry.databases])
            (report.users_created if created else report.users_updated).append(user.name)
    return report


def _pruned_database(entry: DatabaseConfig) -> dict[str, Any]:
    data = msgspec.to_builtins(entry)
    default = msgspec.to_builtins(DatabaseConfig(name="-", upstream="postgresql://u@h/d"))
    return {k: v for k, v in data.items() if k in ("name", "upstream") or v != default.get(k, v)}


def export_worker_toml(tenant: Tenant) -> str:
    """The tenant's databases, users and policies as a standalone worker TOML."""
    databases = list(tenant.databases.select_related("policy").order_by("name"))
    policies = {db.name: ensure_policy(db).to_contract() for db in databases}
    distinct = {msgspec.json.encode(p) for p in policies.values()}
    shared = len(distinct) == 1
    doc: dict[str, Any] = {}
    users, skipped = [], []
    for user in tenant.proxy_users.prefetch_related("databases").order_by("name"):
        names = sorted(db.name for db in user.databases.all())
        if not user.all_databases and not names:
            skipped.append(user.name)  # the file's [] would mean every database
            continue
        entry: dict[str, Any] = {"name": user.name, "scram_verifier": user.scram_verifier}
        if not user.all_databases:
            entry["databases"] = names
        if user.upstream_user:
            entry["upstream_user"] = user.upstream_user
            if user.upstream_password is not None:
                entry["upstream_password"] = user.upstream_password
        users.append(entry)
    if users:
        doc["users"] = users
    entries = []
    for db in databases:
        entry = _pruned_database(db.to_config())
        if not shared:
            sections = policy_sections(policies[db.name])
            entry["policy"] = sections
        entries.append(entry)
    if entries:
        doc["databases"] = entries
    if shared:
        doc.update(policy_sections(next(iter(policies.values()))))
    header = f"# SQL Proxy worker configuration exported from tenant {tenant.name!r}.\n"
    if skipped:
        header += "# Left out (no database assigned): " + ", ".join(skipped) + "\n"
    return header + tomli_w.dumps(doc)
