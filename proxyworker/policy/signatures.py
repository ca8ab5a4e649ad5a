"""The default signatures: dangerous functions and commands, each with an id and a doc line.

A signature matches on what the analysis layer reports (functions called anywhere in the
statement, nested bodies included; command tags; settings changed), so spelling, quoting,
comments and wrapping in DO blocks or function bodies do not hide a call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from proxyworker.analysis import RelationRef, SettingChange, StatementInfo, StatementKind
from proxyworker.config.policy import CustomSignature


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    doc: str
    functions: tuple[str, ...] = ()
    """Function names (globs) matched on the name without its schema."""
    commands: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    """Parameters whose change (SET, set_config) is the danger."""
    test: Callable[[StatementInfo], bool] | None = None
    message: str = ""


_PG_SETTINGS: frozenset[RelationRef] = frozenset(
    {RelationRef(None, "pg_settings"), RelationRef("pg_catalog", "pg_settings")}
)
# The worker's own per-session switches: a SET of one is answered by the worker itself and
# never reaches the server, so it cannot touch the guard's settings.
_WORKER_SWITCHES = frozenset({"sqlproxy.dry_run", "sqlproxy.preview"})


def _worker_switch(info: StatementInfo, change: SettingChange) -> bool:
    return info.kind is StatementKind.SET and change.name in _WORKER_SWITCHES


DEFAULT_SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "server-file-access",
        "Reading or listing files on the database server: pg_read_file, pg_read_binary_file, "
        "pg_ls_dir, pg_stat_file, and COPY to or from a server file.",
        functions=("pg_read_file", "pg_read_binary_file", "pg_ls_*", "pg_stat_file"),
        test=lambda info: info.copy_server_file,
    ),
    Signature(
        "program-execution",
        "Running a shell command on the database server: COPY ... PROGRAM.",
        test=lambda info: info.copy_program,
    ),
    Signature(
        "large-object-file-io",
        "Moving server files in and out of large objects: lo_import, lo_export.",
        functions=("lo_import", "lo_export"),
    ),
    Signature(
        "alter-system",
        "Changing the server's configuration file: ALTER SYSTEM.",
        commands=("ALTER SYSTEM",),
    ),
    Signature(
        "replication-role",
        "SET session_replication_role, which switches off triggers and foreign keys.",
        settings=("session_replication_role",),
    ),
    Signature(
        "backend-signal",
        "Cancelling or terminating other sessions: pg_terminate_backend, pg_cancel_backend.",
        functions=("pg_terminate_backend", "pg_cancel_backend"),
    ),
    Signature(
        "dblink",
        "Connections to other servers from inside the database: dblink*.",
        functions=("dblink*",),
    ),
    Signature(
        "sleep",
        "Holding a backend and its locks on purpose: pg_sleep, pg_sleep_for, pg_sleep_until.",
        functions=("pg_sleep", "pg_sleep_for", "pg_sleep_until"),
    ),
    Signature(
        "proxy-settings",
        "Changing the proxy's own transaction settings (sqlproxy.*), or a setting whose "
        "name is not a constant: the guard's baseline lives there.",
        test=lambda info: (
            not info.writes.isdisjoint(_PG_SETTINGS)
            or any(
                (c.name is None and not c.exact)
                or ((c.name or "").startswith("sqlproxy.") and not _worker_switch(info, c))
                for c in info.settings
            )
        ),
    ),
    Signature(
        "role-switch",
        "Becoming another role: SET ROLE, SET SESSION AUTHORIZATION, set_config('role').",
        settings=("role", "session_authorization"),
    ),
)


def _base(name: str) -> str:
    return name.rsplit(".", 1)[-1]


# UPDATE pg_settings changes settings through the view's rule: any name, as set_config would.
_ANY_SETTING = SettingChange(None, None, exact=False)


def first_match(signatures: Sequence[Signature], info: StatementInfo) -> Signature | None:
    """The first signature that matches the statement or anything nested in it. What the
    signatures look at is gathered once per statement, not once per signature."""
    nested = tuple(info.statements()) if info.body else (info,)
    commands = {s.command for s in nested}
    # A setting name that is not a constant (set_config(var, ...)) could be any of them.
    changes = [c for s in nested for c in s.settings if not c.reset]
    if not info.writes.isdisjoint(_PG_SETTINGS):
        changes.append(_ANY_SETTING)
    for signature in signatures:
        if (
            signature.functions
            and info.functions
            and any(
                fnmatch.fnmatchcase(f if "." in pattern else _base(f), pattern)
                for f in info.functions
                for pattern in signature.functions
            )
        ):
            return signature
        if signature.commands and not commands.isdisjoint(signature.commands):
            return signature
        if (
            signature.settings
            and changes
            and any(
                c.name in signature.settings or (c.name is None and not c.exact) for c in changes
            )
        ):
            return signature
        if signature.test is not None and any(signature.test(s) for s in nested):
            return signature
    return None


def active_signatures(
    enabled: bool, disabled: Iterable[str], custom: Iterable[CustomSignature], limits: bool
) -> tuple[Signature, ...]:
    off = set(disabled)
    # With table limits, the guard's own settings are never up for disabling: its baseline
    # lives there.
    chosen = [
        s
        for s in DEFAULT_SIGNATURES
        if (enabled and s.id not in off) or (limits and s.id == "proxy-settings")
    ]
    chosen += [
        Signature(
            c.id,
            c.message or f"custom signature {c.id}",
            functions=tuple(c.functions),
            commands=tuple(x.upper() for x in c.commands),
            message=c.message,
        )
        for c in custom
    ]
    return tuple(chosen)
