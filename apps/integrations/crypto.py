"""Encryption at rest for credentials: Fernet (AES-128-CBC + HMAC) via ``cryptography``.

``FIELD_ENCRYPTION_KEY`` holds comma-separated keys. ``MultiFernet`` encrypts with the first
and decrypts with any, which is what makes rotation possible without downtime: add the new
key in front, run ``manage.py rotate_encryption_key``, then drop the old key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """No configured key decrypts the stored value (wrong or removed key)."""


class Secret:
    """A decrypted secret that does not print itself.

    ``str()``, ``repr()``, logging and templates show a mask; only ``reveal()`` returns the
    plaintext, so a token cannot leak through an error message or a debug page by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY holds no key")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        # The message names the problem, never the key itself.
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be comma-separated url-safe base64 Fernet keys "
            "(32 bytes each)"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEY))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("no key in FIELD_ENCRYPTION_KEY decrypts this value") from exc
