from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.query_utils import DeferredAttribute

from apps.integrations.crypto import Secret, decrypt, encrypt


class _SecretAttribute(DeferredAttribute):
    """Wraps assigned plaintext in a Secret at once, so even an unsaved instance (or one
    returned by ``create``) never holds a bare str that could be printed."""

    def __set__(self, instance: models.Model, value: Any) -> None:
        instance.__dict__[self.field.attname] = self.field.to_python(value)


class EncryptedSecretField(models.TextField):
    """Stores a ``Secret`` encrypted with Fernet; the database only ever sees ciphertext.

    Values are decrypted on load into ``Secret`` objects (masked when printed). Plain ``str``
    values are accepted on assignment and encrypted on save. Each save encrypts with the
    current first key, so re-saving a row is how a key is rotated.
    """

    descriptor_class = _SecretAttribute

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Secret | None:
        if value is None:
            return None
        return Secret(decrypt(value))

    def to_python(self, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        return Secret(str(value))

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, Secret):
            value = value.reveal()
        return encrypt(str(value))

    def value_to_string(self, obj: models.Model) -> str:
        # Serialisers (dumpdata) get the mask, never the plaintext.
        return repr(self.value_from_object(obj))
