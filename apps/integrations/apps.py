from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "apps.integrations"
    label = "integrations"
    verbose_name = "GitHub integrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.integrations import checks  # noqa: F401  (registers the system checks)
