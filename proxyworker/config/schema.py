"""Schema of the worker configuration (the snapshot the control plane compiles).

Every field has a documented default; validation beyond types lives in ``__post_init__`` so
that msgspec reports it with the path of the offending key. Nothing here does I/O except
checking that referenced files exist.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import msgspec

from proxyworker.config.policy import (
    Audit,
    DatabasePolicy,
    Guard,
    Honeytokens,
    IpRule,
    RateLimits,
    Signatures,
)
from proxyworker.protocol.scram import ScramVerifier, make_verifier, parse_verifier


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Listen(_Section):
    host: str = "127.0.0.1"
    port: int = 6432
    tls_cert: str | None = None
    """PEM certificate; with it (and ``tls_key``) SSLRequest is accepted."""
    tls_key: str | None = None
    max_client_conn: int = 10000
    max_message_size: int = 64 * 1024 * 1024
    """Largest frontend message accepted (bytes); larger ones are a protocol violation."""
    allow_function_call: bool = False
    """The FunctionCall message carries no SQL text the guard could check."""
    shutdown_timeout: float = 30.0
    """Seconds SIGTERM waits for transactions in flight before closing clients."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("`port`: must be between 0 and 65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("`tls_key`: tls_cert and tls_key must be given together")
        if self.max_message_size < 1024:
            raise ValueError("`max_message_size`: must be at least 1024")


class Admin(_Section):
    host: str = "127.0.0.1"
    port: int = 9187
    """HTTP port for /metrics, /healthz and /readyz; 0 picks a free port, -1 disables it."""


class Logging(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class User(_Section):
    name: str
    password: str | None = None
    scram_verifier: str | None = None
    """``SCRAM-SHA-256$...`` as stored in pg_authid; preferred over ``password``."""
    databases: list[str] = msgspec.field(default_factory=list)
    """Databases this user may connect to; empty: every database."""
    upstream_user: str | None = None
    """The role this user's server connections log in as, instead of the database's upstream
    user (each role gets its own server connections within the database's pool)."""
    upstream_password: str | None = None
    """That role's password (none: the server must not ask for one)."""

    def __post_init__(self) -> None:
        if (self.password is None) == (self.scram_verifier is None):
            raise ValueError("give exactly one of password or scram_verifier")
        if self.scram_verifier is not None:
            try:
                parse_verifier(self.scram_verifier)
            except ValueError as exc:
                raise ValueError(f"`scram_verifier`: {exc}") from None
        if self.upstream_password is not None and self.upstream_user is None:
            raise ValueError("`upstream_password`: give upstream_user with it")

    def verifier(self) -> ScramVerifier:
        if self.scram_verifier is not None:
            return parse_verifier(self.scram_verifier)
        assert self.password is not None
        return make_verifier(self.password)


SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]


class Upstream(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    user: str
    password: str | None
    dbname: str
    sslmode: SslMode
    sslrootcert: str | None


def parse_upstream(url: str) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql://user:password@host:port/dbname URL")
    if not parts.username:
        raise ValueError("upstream URL has no user name")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"sslmode", "sslrootcert", "connect_timeout"}
    if unknown:
        raise ValueError(f"unsupported upstream URL parameter(s): {', '.join(sorted(unknown))}")
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in ("disable", "prefer", "require", "verify-ca", "verify-full"):
        raise ValueError(f"unsupported sslmode {sslmode!r}")
    try:
        port = parts.port or 5432
    except ValueError:
        raise ValueError("upstream URL has an invalid port") from None
    return Upstream(
        host=unquote(parts.hostname or "127.0.0.1"),
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password) if parts.password is not None else None,
        dbname=unquote(parts.path.lstrip("/")) or unquote(parts.username),
        sslmode=sslmode,  # type: ignore[arg-type]
        sslrootcert=query.get("sslrootcert"),
    )


class Database(_Section):
    name: str
    """What clients put in dbname."""
    upstream: str
    """postgresql://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=ca.pem"""
    pool_mode: Literal["session", "transaction"] = "session"
    pool_size: int = 20
    """Server connections at most, across all startup-parameter variants."""
    connect_timeout: float = 5.0
    pool_timeout: float = 30.0
    """Seconds a client waits for a server connection before 53300 is returned."""
    server_idle_timeout: float = 600.0
    server_reset_query: str = "DISCARD ALL"
    """Run when a session-mode client leaves; transaction mode resets nothing (see docs)."""
    max_prepared_statements: int = 500
    """Per server connection in transaction mode; the least recently used are closed."""
    policy: DatabasePolicy | None = None
    """This database's own policy; none: the top-level policy sections apply."""

    def __post_init__(self) -> None:
        try:
            parse_upstream(self.upstream)
        except ValueError as exc:
            raise ValueError(f"`upstream`: {exc}") from None
        if self.pool_size < 1:
            raise ValueError("`pool_size`: must be at least 1")
        for key in ("connect_timeout", "pool_timeout", "server_idle_timeout"):
            if getattr(self, key) <= 0:
                raise ValueError(f"`{key}`: must be positive")

    def target(self) -> Upstream:
        return parse_upstream(self.upstream)


class WorkerConfig(_Section):
    listen: Listen = msgspec.field(default_factory=Listen)
    admin: Admin = msgspec.field(default_factory=Admin)
    logging: Logging = msgspec.field(default_factory=Logging)
    users: list[User] = msgspec.field(default_factory=list)
    databases: list[Database] = msgspec.field(default_factory=list)
    # Policy (docs/policy.md)
    table_limits: dict[str, int] = msgspec.field(default_factory=dict)
    """Max rows changed (updated + deleted) per table per transaction, by table pattern."""
    honeytokens: Honeytokens = msgspec.field(default_factory=Honeytokens)
    signatures: Signatures = msgspec.field(default_factory=Signatures)
    ip_rules: list[IpRule] = msgspec.field(default_factory=list)
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    audit: Audit = msgspec.field(default_factory=Audit)
    guard: Guard = msgspec.field(default_factory=Guard)

    def __post_init__(self) -> None:
        DatabasePolicy(table_limits=self.table_limits)  # validates the patterns
        roles: dict[str, str | None] = {}
        for user in self.users:
            if user.upstream_user is None:
                continue
            known = roles.setdefault(user.upstream_user, user.upstream_password)
            if known != user.upstream_password:
                raise ValueError(
                    f"users: upstream role {user.upstream_user!r} is given two passwords"
                )
        for kind, names in (
            ("user", [u.name for u in self.users]),
            ("database", [d.name for d in self.databases]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{kind} {name!r} is defined twice")
                seen.add(name)

    def default_policy(self) -> DatabasePolicy:
        """The top-level policy sections: what a database without its own enforces."""
        return DatabasePolicy(
            table_limits=self.table_limits,
            honeytokens=self.honeytokens,
            signatures=self.signatures,
            ip_rules=self.ip_rules,
            rate_limits=self.rate_limits,
        )

    def policy_for(self, database: str) -> DatabasePolicy:
        for db in self.databases:
            if db.name == database and db.policy is not None:
                return db.policy
        return self.default_policy()

    def resolve_paths(self, base: str) -> WorkerConfig:
        """Make file references relative to the config file's directory absolute."""

        def fix(path: str | None) -> str | None:
            return None if path is None else os.path.join(base, os.path.expanduser(path))

        def fix_url(url: str) -> str:
            parts = urlsplit(url)
            query = parse_qs(parts.query)
            if "sslrootcert" not in query:
                return url
            query["sslrootcert"] = [fix(query["sslrootcert"][-1]) or ""]
            return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))

        listen = msgspec.structs.replace(
            self.listen, tls_cert=fix(self.listen.tls_cert), tls_key=fix(self.listen.tls_key)
        )
        databases = [
            msgspec.structs.replace(db, upstream=fix_url(db.upstream)) for db in self.databases
        ]
        return msgspec.structs.replace(self, listen=listen, databases=databases)
