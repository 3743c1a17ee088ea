from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    verbose_name = "Accounts"

    def ready(self):
        from . import (
            schema,  # noqa: F401  (registers the OpenAPI description of API keys)
            signals,  # noqa: F401  (drops cached quotas when they change)
        )
