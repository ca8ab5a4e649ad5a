"""Encryption at rest of upstream credentials (Fernet, keys from ``SQLPROXY_SECRET_KEY``).

The first key encrypts, every key decrypts, so keys rotate by prepending a new one. A value
that no key decrypts raises: a wrong key must not silently turn into an empty password.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.SQLPROXY_SECRET_KEYS])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()
