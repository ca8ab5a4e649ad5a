"""A local mail server for what the control plane emails: aiosmtpd, a real SMTP server, on
loopback. It requires AUTH (LOGIN or PLAIN) with one user and password, refuses the recipients
in ``refuse`` as a real server refuses an unknown mailbox (550), and records every message it
accepts with the envelope and whether the session authenticated."""

from __future__ import annotations

import email
import email.message
import email.policy
import warnings
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.net import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    authenticated: bool


@dataclass
class SmtpServer:
    user: str = "reports"
    password: str = "smtp-secret"
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    _controller: Controller | None = None

    def start(self) -> SmtpServer:
        with warnings.catch_warnings():  # (AUTH without TLS: on loopback only, on purpose)
            warnings.simplefilter("ignore")
            self._controller = Controller(
                self,
                hostname="127.0.0.1",
                port=self.port,
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=False,
            )
            self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.user.encode()
            and data.password == self.password.encode()
        )
        return AuthResult(success=ok)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        self.received.append(
            Received(
                str(envelope.mail_from),
                [str(to) for to in envelope.rcpt_tos],
                parsed,
                bool(session.authenticated),
            )
        )
        return "250 OK"
