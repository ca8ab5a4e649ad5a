"""Who is on the other end of a stream socket, and what they may see.

A socket authenticates once, at the handshake, in this order:

1. ``Authorization: Bearer <token>`` — an API token, as for the REST API;
2. the subprotocol form browsers can send: ``new WebSocket(url, ["sqlproxy", "bearer.<token>"])``
   (the server answers ``sqlproxy``, never echoing the token);
3. the logged-in admin session (cookie), only when the ``Origin`` is one of ``ALLOWED_HOSTS``
   (a page elsewhere cannot ride the cookie: cross-site WebSocket hijacking).

A token sees its own tenant only; a session user sees every tenant they belong to (a superuser
sees all of them, and events of databases no tenant owns). ``?tenant=<slug>`` narrows a socket
to one tenant and is refused (4403) for a tenant the caller is not in. :meth:`Principal.refresh`
re-reads all of it, so a revoked token, a removed membership or a logout stops the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.http.request import validate_host

from controlplane.tenants.models import ApiToken, Membership, Tenant, token_digest

SUBPROTOCOL = "sqlproxy"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
REFRESH_SECONDS = 2.0
"""How stale a permission check may be: membership changes take effect within this."""

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    via: Literal["token", "session"]
    tenant_ids: frozenset[int]
    all_tenants: bool = False
    """A superuser's session without ?tenant=: sees every tenant and unowned databases."""
    superuser: bool = False
    token_digest: str | None = None
    session_key: str | None = None
    only_tenant: str | None = None
    checked: float = field(default_factory=time.monotonic)

    def sees(self, tenant_id: int | None) -> bool:
        return self.all_tenants or (tenant_id is not None and tenant_id in self.tenant_ids)

    @property
    def fleet_traffic(self) -> bool:
        """Traffic numbers of the whole fleet (every tenant's): superusers' sessions only."""
        return self.via == "session" and self.superuser

    def refresh(self) -> Principal | None:
        """The same principal re-read from the database, or None when it lost its access.
        Cheap when called often: the database is asked at most every REFRESH_SECONDS."""
        if time.monotonic() - self.checked < REFRESH_SECONDS:
            return self
        try:
            if self.via == "token":
                assert self.token_digest is not None
                return principal_for_token_digest(self.token_digest, self.only_tenant)
            user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
            if user is None or not _session_alive(self.session_key, self.user_id):
                return None
            return principal_for_user(user, self.session_key, self.only_tenant)
        except Refused:
            return None


def _session_alive(session_key: str | None, user_id: int) -> bool:
    if not session_key:
        return False
    from importlib import import_module

    engine = import_module(settings.SESSION_ENGINE)
    session: SessionBase = engine.SessionStore(session_key)
    return str(session.get("_auth_user_id")) == str(user_id)


def principal_for_token_digest(digest: str, only_tenant: str | None) -> Principal:
    token = ApiToken.objects.select_related("user", "tenant").filter(digest=digest).first()
    if token is None or not token.user.is_active:
        raise Refused(CLOSE_UNAUTHENTICATED, "invalid token")
    if not Membership.objects.filter(tenant=token.tenant, user=token.user).exists():
        raise Refused(CLOSE_UNAUTHENTICATED, "invalid token")
    if only_tenant is not None and only_tenant != token.tenant.slug:
        raise Refused(CLOSE_FORBIDDEN, "the token is not valid for this tenant")
    return Principal(
        user_id=token.user.pk,
        username=token.user.get_username(),
        via="token",
        tenant_ids=frozenset({token.tenant.pk}),
        superuser=False,
        token_digest=digest,
        only_tenant=only_tenant,
    )


def principal_for_user(user: Any, session_key: str | None, only_tenant: str | None) -> Principal:
    superuser = bool(user.is_superuser)
    tenants = Tenant.objects.all() if superuser else Tenant.objects.filter(memberships__user=user)
    if only_tenant is not None:
        tenants = tenants.filter(slug=only_tenant)
    ids = frozenset(tenants.values_list("pk", flat=True))
    if only_tenant is not None and not ids:
        raise Refused(CLOSE_FORBIDDEN, "not a member of this tenant")
    if not ids and not superuser:
        raise Refused(CLOSE_FORBIDDEN, "not a member of any tenant")
    if not user.is_staff:
        raise Refused(CLOSE_FORBIDDEN, "the dashboard is for staff users")
    return Principal(
        user_id=user.pk,
        username=user.get_username(),
        via="session",
        tenant_ids=ids,
        all_tenants=superuser and only_tenant is None,
        superuser=superuser,
        session_key=session_key,
        only_tenant=only_tenant,
    )


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def offered_subprotocol(scope: dict[str, Any]) -> str | None:
    """``sqlproxy`` when the client offered it (it must be answered, or browsers fail)."""
    return SUBPROTOCOL if SUBPROTOCOL in scope.get("subprotocols", []) else None


def _origin_allowed(headers: dict[str, str]) -> bool:
    origin = headers.get("origin")
    if not origin:
        return False
    host = urlsplit(origin).netloc.rsplit("@", 1)[-1]
    if not host:
        return False
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return validate_host(host.rsplit(":", 1)[0] if not host.endswith("]") else host, allowed)


def authenticate(scope: dict[str, Any]) -> Principal:
    """The principal of a handshake (synchronous: call through database_sync_to_async).
    Raises Refused with the close code and reason."""
    headers = _headers(scope)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    only_tenant = query.get("tenant", [None])[-1] or None
    plaintext: str | None = None
    authorization = headers.get("authorization", "").split()
    if authorization and authorization[0].lower() == "bearer":
        if len(authorization) != 2:
            raise Refused(CLOSE_UNAUTHENTICATED, "invalid Authorization header")
        plaintext = authorization[1]
    else:
        for offered in scope.get("subprotocols", []):
            if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                plaintext = offered[len(TOKEN_SUBPROTOCOL_PREFIX) :]
                break
    if plaintext is not None:
        return principal_for_token_digest(token_digest(plaintext), only_tenant)
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active:
        if not _origin_allowed(headers):
            raise Refused(CLOSE_FORBIDDEN, "session login from a foreign origin")
        session = scope.get("session")
        key = session.session_key if session is not None else None
        return principal_for_user(user, key, only_tenant)
    raise Refused(CLOSE_UNAUTHENTICATED, "authentication required (Bearer token or admin login)")
