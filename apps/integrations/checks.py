"""Django system checks for configuration the sync depends on."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register


@register()
def sync_outcome_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    import dramatiq

    from apps.integrations.middleware import SyncOutcomeMiddleware

    if SyncOutcomeMiddleware.ordered_before_retries(dramatiq.get_broker()):
        return []
    return [
        Error(
            "SyncOutcomeMiddleware must be listed before dramatiq.middleware.Retries in "
            "DRAMATIQ_BROKER['MIDDLEWARE'], so that it records what Retries decided.",
            id="integrations.E001",
        )
    ]
