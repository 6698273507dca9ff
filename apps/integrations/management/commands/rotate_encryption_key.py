from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.integrations.crypto import DecryptionError
from apps.integrations.management.commands._base import OperatorCommand
from apps.integrations.models import IntegrationCredential


class Command(OperatorCommand):
    help = (
        "Re-encrypt every stored credential with the first key of FIELD_ENCRYPTION_KEY. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        # All or nothing: a credential that no key decrypts aborts the whole rotation, so an
        # operator never ends up with some rows on the new key and some lost.
        with transaction.atomic():
            for pk in IntegrationCredential.objects.order_by("pk").values_list("pk", flat=True):
                try:
                    credential = IntegrationCredential.objects.select_for_update().get(pk=pk)
                except DecryptionError:
                    transaction.set_rollback(True)
                    self.fail(
                        f"credential {pk} cannot be decrypted with any key in "
                        "FIELD_ENCRYPTION_KEY; nothing was changed"
                    )
                # Saving encrypts with the first key (decryption accepted any of them).
                credential.save(update_fields=["access_token", "updated_at"])
                count += 1
        self.stdout.write(f"Re-encrypted {count} credential(s) with the first key.")
